"""Shared test settings and fixtures.

- One torch thread (the models under test are small, and results stay deterministic).
- Under CI (``CI=true``), a test whose optional library is missing FAILS instead of skipping: ``pytest.importorskip``
  becomes a hard requirement naming the library and the ``test`` extra, so a green CI run has checked everything.
- The 10,000-image test sets of garments in clutter and of two-garment scenes are built once per session
  (``clutter_test_set``, ``pairs_test_set``; use ``.subset(n)`` or indexing, never modify them in place).
"""
import os

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
_importorskip = pytest.importorskip


def _required_under_ci(modname, *args, **kwargs):
    """``pytest.importorskip`` that fails (not skips) under CI."""
    try:
        return _importorskip(modname, *args, **kwargs)
    except pytest.skip.Exception as e:
        pytest.fail(f"optional library {modname!r} is missing and CI is set, so this is a failure, not a skip "
                    f"({e.msg}); install the test extra: pip install -e .[test]", pytrace=False)


if IN_CI:
    pytest.importorskip = _required_under_ci


@pytest.fixture(scope="session")
def clutter_test_set():
    """The 10,000 ``fmnist-clutter`` test images (built once per session; do not modify)."""
    import gatta_viz as gv

    return gv.load_dataset("fmnist-clutter", "test")


@pytest.fixture(scope="session")
def pairs_test_set():
    """The 10,000 ``fmnist-pairs`` test scenes (built once per session; do not modify)."""
    import gatta_viz as gv

    return gv.load_scenes("fmnist-pairs", "test")
