"""The app's settings: the operator's environment variables, read at every call, and the page's fixed limits.

Image limits are shared with the CLI (:func:`gatta_viz.data.limits.image_limits`); the others concern the
server alone: a folder of checkpoints and one of map stores offered by name, the largest checkpoint upload, how
many renders run at once, where sample images are.
"""
from __future__ import annotations

import math
import os
from typing import List, Optional

from ..data.limits import MB, env_number, image_limits

__all__ = [
    "MAX_IMAGES", "MODEL_CACHE_ENTRIES", "RENDER_CACHE_ENTRIES", "RENDER_CACHE_BYTES", "ACQUIRE_TIMEOUT",
    "MAX_CHECKPOINT_MB", "MAX_INPUT_SIDE", "MAX_PARAMETERS", "ENV_MODEL_DIR", "ENV_STORE_DIR", "ENV_WORKERS",
    "ENV_MAX_CHECKPOINT_MB", "ENV_SAMPLES", "ENV_FILES", "checkpoint_limit_bytes", "upload_limit_mb",
    "server_upload_limit_mb", "model_dir", "store_dir", "render_workers", "torch_threads_per_render", "samples_dir",
    "preloaded_files", "check",
]

MAX_IMAGES = 24  # images rendered per page; more are listed as skipped
MODEL_CACHE_ENTRIES = 4  # models (with their replicas) kept loaded
RENDER_CACHE_ENTRIES = 64  # rendered images kept (a 28x28 render is about 100 KB)...
RENDER_CACHE_BYTES = 64 * MB  # ...and at most this many bytes of them
ACQUIRE_TIMEOUT = 120.0  # seconds a render waits for a free replica before saying the server is busy
MAX_CHECKPOINT_MB = 100
MAX_INPUT_SIDE = 512  # an uploaded checkpoint may not ask for inputs larger than this
MAX_PARAMETERS = 100_000_000
ENV_MODEL_DIR = "GATTA_VIZ_MODEL_DIR"
ENV_STORE_DIR = "GATTA_VIZ_STORE_DIR"  # a folder of map stores (`gatta-viz maps --out`), offered by name
ENV_WORKERS = "GATTA_VIZ_RENDER_WORKERS"
ENV_MAX_CHECKPOINT_MB = "GATTA_VIZ_MAX_CHECKPOINT_MB"
ENV_SAMPLES = "GATTA_VIZ_SAMPLES"
ENV_FILES = "GATTA_VIZ_FILES"  # set by `gatta-viz app FILE...`
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a clone's root
_PACKAGED_SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")


def checkpoint_limit_bytes() -> int:
    """Largest checkpoint upload: ``$GATTA_VIZ_MAX_CHECKPOINT_MB`` (default 100 MB).

    Raises:
        ValueError: the variable is not a positive number.
    """
    return int(env_number(ENV_MAX_CHECKPOINT_MB, MAX_CHECKPOINT_MB) * MB)


def upload_limit_mb() -> int:
    """The image uploader's size limit in whole MB (Streamlit's unit), rounded up from the image limit."""
    return max(1, math.ceil(image_limits().max_bytes / MB))


def server_upload_limit_mb() -> int:
    """Streamlit's own cap on any upload (``--server.maxUploadSize``): the larger of the image and checkpoint
    limits, in whole MB.

    Raises:
        ValueError: a limit variable that is not a positive number.
    """
    return max(1, math.ceil(max(image_limits().max_bytes, checkpoint_limit_bytes()) / MB))


def model_dir() -> Optional[str]:
    """The operator's model folder (``$GATTA_VIZ_MODEL_DIR``), if set and present."""
    d = os.environ.get(ENV_MODEL_DIR, "").strip()
    return d if d and os.path.isdir(d) else None


def store_dir() -> Optional[str]:
    """The operator's folder of map stores (``$GATTA_VIZ_STORE_DIR``), if set and present."""
    d = os.environ.get(ENV_STORE_DIR, "").strip()
    return d if d and os.path.isdir(d) else None


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def render_workers() -> int:
    """Renders that may run at once: ``$GATTA_VIZ_RENDER_WORKERS`` or the CPU cores this process may use.

    Raises:
        ValueError: the variable is not a whole number of at least 1.
    """
    raw = os.environ.get(ENV_WORKERS, "").strip()
    if not raw:
        return _cores()
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {ENV_WORKERS} must be a whole number, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"environment variable {ENV_WORKERS} must be at least 1, got {raw!r}")
    return n


def torch_threads_per_render(workers: Optional[int] = None) -> int:
    """Intra-op threads each render should use so that parallel renders do not oversubscribe the cores."""
    return max(1, _cores() // max(1, workers or render_workers()))


def samples_dir() -> str:
    """Folder of sample images: ``$GATTA_VIZ_SAMPLES``, else a clone's sample_images/, else the Fashion-MNIST
    samples shipped in the package (``gatta_viz/app/samples``: an installed wheel's samples and garments)."""
    clone = os.path.join(_REPO, "sample_images")
    return os.environ.get(ENV_SAMPLES) or (clone if os.path.isdir(clone) else _PACKAGED_SAMPLES)


def preloaded_files() -> List[str]:
    """Files given to ``gatta-viz app FILE...`` (passed in ``$GATTA_VIZ_FILES``, separated by os.pathsep)."""
    return [p for p in os.environ.get(ENV_FILES, "").split(os.pathsep) if p]


def check() -> None:
    """Read every setting once, so a misconfigured server says so before its first page.

    Raises:
        ValueError: naming the variable and its bad value.
    """
    image_limits()
    checkpoint_limit_bytes()
    render_workers()
