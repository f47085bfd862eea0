"""Behaviour kept across the compute/render split: the demo and explain write the same numbers (.npz), the same
JSON and the same pixels (figures and overlays) as before it, for a plain sample, a cued scene with outlines, a
clutter image with outlines, and a resized photo with --raw --joint --rectified --gradcam. The recorded outputs are
in tests/data/explain_baseline (see its README); the commands are rerun here exactly as they were recorded. On a
CPU whose float path differs from the recording machine's in the last bits, numbers are compared to 1e-5 and
figures by size only (a colour can round the other way)."""
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from gatta_viz.cli import main

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BASE = os.path.join(HERE, "data", "explain_baseline")
S = os.path.join(REPO, "sample_images")

RUNS = {
    "demo": ("bag_test00018", ["demo"]),
    "scene": ("scene_00000", ["explain", f"{S}/scenes/scene_00000.png", "--model", "fmnist-pairs-gatta-resnet",
                              "--cue", "Trouser", "--boxes", f"{S}/scenes/index.json"]),
    "clutter": ("clutter_00001", ["explain", f"{S}/clutter/clutter_00001.png", f"{S}/clutter/clutter_00003.png",
                                  "--model", "fmnist-clutter-gatta-resnet", "--boxes", f"{S}/clutter/index.json"]),
    "options": ("cameraman", ["explain", f"{S}/fashion-mnist/bag_test00018.png", f"{S}/fashion-mnist/coat_test00006.png",
                              f"{S}/photos/cameraman.jpg", "--raw", "--joint", "--rectified", "--gradcam"]),
}


def _pixels(path):
    a = np.asarray(Image.open(path).convert("RGB"))
    return {"shape": list(a.shape), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}


def _assert_close(got, want, where):
    """JSON values equal, floats to 1e-5 relative (another CPU's float path differs in the last bits)."""
    if isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, (int, float)) and isinstance(want, (int, float)), where
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), where
        for k in want:
            _assert_close(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_close(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


@pytest.mark.parametrize("run", sorted(RUNS))
def test_outputs_equal_the_recorded_baseline(run, tmp_path, capsys):
    stem, argv = RUNS[run]
    out = tmp_path / run
    assert main(argv + ["--out", str(out)]) == 0
    capsys.readouterr()
    want_dir = os.path.join(BASE, run)
    bit_equal = True  # False where this CPU's float path differs from the recording machine's in the last bits
    for f in sorted(os.listdir(want_dir)):
        got_path = out / f
        assert got_path.exists(), f
        if f.endswith(".npz"):
            want, got = np.load(os.path.join(want_dir, f)), np.load(got_path)
            assert sorted(got.files) == sorted(want.files)
            for k in want.files:
                assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, (f, k)
                if not np.array_equal(got[k], want[k]):
                    bit_equal = False
                    assert np.allclose(got[k], want[k], rtol=1e-4, atol=1e-5, equal_nan=True), (f, k)
        else:
            want = json.load(open(os.path.join(want_dir, f)))
            got = json.load(open(got_path))
            # the source is the path as given on the command line: the same file, wherever the clone is
            assert os.path.basename(got.pop("source")) == os.path.basename(want.pop("source"))
            if got != want:
                bit_equal = False
                _assert_close(got, want, f)
    pixels = json.load(open(os.path.join(BASE, "pixels.json")))["pixels"]
    recorded = {k.split("/", 1)[1]: v for k, v in pixels.items() if k.startswith(run + "/")}
    written = sorted(f for f in os.listdir(out) if f.startswith(stem) and f.endswith(".png"))
    assert written == sorted(recorded)  # the same figure and overlays, no more, no fewer
    for f in written:
        got = _pixels(out / f)
        assert got["shape"] == recorded[f]["shape"], f
        if bit_equal:  # the same numbers give the same pixels; numbers 1e-7 apart may round a colour differently
            assert got == recorded[f], f
    index = json.load(open(out / "index.json"))
    assert [r["name"] for r in index["written"]] and index["failed"] == []
