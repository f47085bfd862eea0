"""What the Streamlit page computes, without Streamlit: models, uploads, two-garment scenes composed from the
sample garments, top-down cues, and one image's full render data.

Kept apart from ``streamlit_app.py`` so it can be tested and timed directly (see benchmarks/load_app.py).

Many sessions, one server: Streamlit runs each browser session in its own thread. A render registers hooks
on the model it runs (GAttA's two passes, captum's Grad-CAM), so one model must never serve two renders at
once. Each model therefore comes as a :class:`ModelPool` of replicas (deep copies), one per CPU core by
default; a render takes a replica for its whole duration, decoding included, so at most that many
uploads are decoded and rendered at the same time and the cores all work.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import math
import os
import queue
import re
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

import gatta_viz as gv
from gatta_viz.analysis.overlays import OUTLINE_COLOURS, Outline, as_outlines, draw_outlines
from gatta_viz.data.preprocess import IMAGE_EXTENSIONS, ImageLimits, image_limits
from gatta_viz.data.scenes import ITEM_THRESHOLD

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------- options and words shown on the page
MAP_GAIN = "alpha x agreement (what pass 2 boosts or suppresses)"
MAP_RAW = "raw agreement (sign set by training)"
MAP_OPTIONS = [MAP_GAIN, MAP_RAW]
SIGN_SIGNED = "signed (both directions)"
SIGN_RECTIFIED = "rectified (positive values only)"
NORM_LAYER = "per layer"
NORM_JOINT = "joint across layers"
PREDICTED = "predicted class (pass 2)"
DIVERGING = ["RdBu_r", "coolwarm", "seismic", "PiYG"]  # red (or green) = positive: boosted
SEQUENTIAL = ["viridis", "magma"]  # for rectified maps only: no negative side to show
CMAPS = DIVERGING + SEQUENTIAL
_ENDS = {"RdBu_r": ("blue", "red"), "coolwarm": ("blue", "red"), "seismic": ("blue", "red"),
         "PiYG": ("pink", "green"), "viridis": ("purple", "yellow"), "magma": ("black", "pale yellow")}
CLASS_AGNOSTIC_NOTE = (
    "Agreement maps are **class-agnostic**: the global query q_avg pools the whole image, so a map shows where the "
    "network's attention agreed, not evidence for one class. **Grad-CAM is class-specific**: it follows the gradient "
    "of one class's score (the predicted class unless you choose another in the sidebar).")
TABLE_CAPTION = (
    "One row per GAttA layer. **alpha**: the layer's learned modulation strength. **mean**, **std**: of its raw "
    "agreement key . q_avg over positions (units for a dense layer). **frac_up** / **frac_down**: share of positions "
    "whose gain 1 + alpha x agreement is above / below 1, i.e. boosted / suppressed by pass 2. **mean_gain**: mean of "
    "1 + alpha x agreement over positions (1 = no net change). **dprob_pred** = p(full model) - p(this layer's "
    "modulation off), for the predicted class: positive means the layer's modulation raised the predicted class's "
    "probability, negative that it lowered it.")

# ---------------------------------------------------------------- limits of what one session may ask for
MAX_IMAGES = 24  # images rendered per page; more are listed as skipped
MODEL_CACHE_ENTRIES = 4  # models (with their replicas) kept loaded
RENDER_CACHE_ENTRIES = 64  # rendered images kept (a 28x28 render is about 100 KB)...
RENDER_CACHE_BYTES = 64 * 2**20  # ...and at most this many bytes of them
ENV_MODEL_DIR = "GATTA_VIZ_MODEL_DIR"
ENV_WORKERS = "GATTA_VIZ_RENDER_WORKERS"
ENV_MAX_CHECKPOINT_MB = "GATTA_VIZ_MAX_CHECKPOINT_MB"
MAX_CHECKPOINT_MB = 100
MAX_INPUT_SIDE = 512  # an uploaded checkpoint may not ask for inputs larger than this
MAX_PARAMETERS = 100_000_000
ACQUIRE_TIMEOUT = 120.0  # seconds a render waits for a free replica before saying the server is busy

# ---------------------------------------------------------------- top-down cues and composed scenes
NO_CUE = "None (the query pooled from the image)"
CUE_HELP = ("A top-down cue replaces the global query that pass 1 pools from the image by the model's stored query "
            "of one class (the mean pooled query of training images holding that class alone): \"what would the "
            "network attend to if it were looking for this class?\" The maps without and under the cue are shown "
            "side by side, each layer's two maps on one colour scale.")
CUE_ROWS_NOTE = ("Two rows: without the cue and under it; **each layer's two maps share one colour scale** (the larger "
                 "of their largest values), so a colour means the same value in both rows.")
GARMENT_FOLDER = "fashion-mnist"  # sample images of single 28x28 garments, the composer's pieces
GARMENT_SIDE = 28


def samples_dir() -> str:
    """Folder of sample images: ``$GATTA_VIZ_SAMPLES`` or the repo's sample_images/."""
    return os.environ.get("GATTA_VIZ_SAMPLES") or os.path.join(REPO, "sample_images")


def list_samples(folder: Optional[str] = None) -> List[str]:
    """Sample image paths relative to ``folder`` (recursive, sorted; item masks such as ``*_mask.png`` left out);
    [] if the folder is missing."""
    folder = folder or samples_dir()
    if not os.path.isdir(folder):
        return []
    out = []
    for root, _, names in os.walk(folder):
        for n in names:
            if n.lower().endswith(IMAGE_EXTENSIONS) and not os.path.splitext(n)[0].endswith("_mask"):
                out.append(os.path.relpath(os.path.join(root, n), folder))
    return sorted(out)


def preloaded_files() -> List[str]:
    """Files given to ``gatta-viz app FILE...`` (passed in ``$GATTA_VIZ_FILES``, separated by os.pathsep)."""
    raw = os.environ.get("GATTA_VIZ_FILES", "")
    return [p for p in raw.split(os.pathsep) if p]


def limits() -> ImageLimits:
    """The image limits in force (shared with the CLI: gatta_viz.data.preprocess.image_limits)."""
    return image_limits()


def upload_limit_mb() -> int:
    """The file uploader's size limit in whole MB (Streamlit's unit), rounded up from the image limit."""
    return max(1, math.ceil(limits().max_bytes / 2**20))


def checkpoint_limit_bytes() -> int:
    """Largest checkpoint upload: ``$GATTA_VIZ_MAX_CHECKPOINT_MB`` (default 100 MB)."""
    raw = os.environ.get(ENV_MAX_CHECKPOINT_MB, "").strip()
    try:
        mb = float(raw) if raw else MAX_CHECKPOINT_MB
    except ValueError:
        raise ValueError(f"environment variable {ENV_MAX_CHECKPOINT_MB} must be a positive number, got {raw!r}") from None
    if not mb > 0:
        raise ValueError(f"environment variable {ENV_MAX_CHECKPOINT_MB} must be a positive number, got {raw!r}")
    return int(mb * 2**20)


def content_key(position: int, data: bytes) -> str:
    """A widget key unique per upload: its position on the page and a hash of its bytes (names may repeat)."""
    return f"{position}-{hashlib.sha256(data).hexdigest()[:16]}"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~$])")


def md_escape(text: str, limit: int = 120) -> str:
    """A user-supplied string (a file name) made safe to show inside Markdown: special characters escaped,
    control characters dropped, at most ``limit`` characters."""
    text = "".join(c for c in str(text) if c.isprintable())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return _MD_SPECIAL.sub(r"\\\1", text)


def file_stem(name: str) -> str:
    """A safe file-name stem for downloads (letters, digits, ``._-``)."""
    stem = os.path.splitext(os.path.basename(str(name)))[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80] or "image"


# ---------------------------------------------------------------- models: bundled, the operator's folder, uploads
def model_dir() -> Optional[str]:
    """The operator's model folder (``$GATTA_VIZ_MODEL_DIR``), if set and present."""
    d = os.environ.get(ENV_MODEL_DIR, "").strip()
    return d if d and os.path.isdir(d) else None


def list_model_files(folder: Optional[str] = None) -> List[str]:
    """Names (never paths) of the ``.pt`` files directly in the model folder, sorted."""
    folder = folder or model_dir()
    if not folder:
        return []
    return sorted(n for n in os.listdir(folder) if n.endswith(".pt") and os.path.isfile(os.path.join(folder, n)))


def _public_error(e: Exception, path: str, label: str) -> ValueError:
    """A loading error with the server-side path replaced by the name the user knows."""
    text = str(e).replace(os.path.abspath(path), label).replace(path, label)
    return ValueError(text)


def load_model(name: str) -> gv.LoadedModel:
    """A bundled model, or a ``.pt`` file of the model folder, by name only (never a path).

    Raises:
        ValueError: an unknown name (paths included), or a file that cannot be loaded.
    """
    name = str(name).strip()
    if not name:
        raise ValueError("no model chosen")
    if name in gv.BUNDLED:
        return gv.load_model(name)
    if name in list_model_files():
        path = os.path.join(model_dir(), name)
        try:
            return check_loadable(path, name)
        except (ValueError, FileNotFoundError) as e:
            raise _public_error(e, path, name) from None
    raise ValueError(f"unknown model {name!r}: choose a bundled model ({', '.join(gv.BUNDLED)})"
                     + (f" or a file of the model folder ({', '.join(list_model_files())})" if list_model_files() else ""))


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)


def check_loadable(path: str, label: str) -> gv.LoadedModel:
    """Load a checkpoint that did not come with the package, after checking that rebuilding it is affordable.

    A checkpoint names a builder and its arguments; hostile ones could ask for a model of billions of
    parameters or for huge inputs. The model is first built on PyTorch's "meta" device (no memory), and must
    hold as many numbers as the file's weights and at most MAX_PARAMETERS.

    Raises:
        ValueError: naming the problem.
    """
    obj = gv.read_checkpoint(path)  # torch.load(weights_only=True): no code runs
    kwargs = {k: v for k, v in dict(obj["kwargs"]).items() if k != "weights"}
    if any(not math.isfinite(v) or abs(v) > 65536 for v in _numbers(kwargs)):
        raise ValueError(f"{label}: the checkpoint's model settings hold numbers out of range")
    if any(isinstance(v, (list, tuple)) and len(v) > 16 for v in kwargs.values()) or sum(
            v for v in _numbers(kwargs.get("blocks", [])) if v > 0) > 64:
        raise ValueError(f"{label}: the checkpoint asks for a model deeper than this app builds")
    pre = obj["preprocess"]
    size = pre.get("size") if isinstance(pre, dict) else None
    sizes = list(_numbers(size)) + list(_numbers(kwargs.get("input_size", [])))
    if not sizes or any(s < 1 or s > MAX_INPUT_SIDE for s in sizes):
        raise ValueError(f"{label}: the checkpoint's input size {size} is outside 1..{MAX_INPUT_SIDE} pixels")
    if not isinstance(pre, dict) or pre.get("channels") not in (1, 3):
        raise ValueError(f"{label}: the checkpoint's input must have 1 or 3 channels")
    held = sum(t.numel() for t in obj["state_dict"].values() if torch.is_tensor(t))
    try:
        with torch.device("meta"):
            shape = gv.build_model(obj["builder"], **kwargs)
    except Exception as e:  # noqa: BLE001 - any failure to build means unusable settings
        raise ValueError(f"{label}: the checkpoint's model settings do not build a model ({type(e).__name__})") from None
    wanted = sum(t.numel() for t in shape.state_dict().values())
    if wanted > MAX_PARAMETERS or wanted > 1.01 * held + 1024:
        raise ValueError(f"{label}: the checkpoint's settings build a model of {wanted:,} numbers but it holds "
                         f"{held:,}: refused")
    del obj, shape
    return gv.load_checkpoint(path)


def load_uploaded(name: str, data: bytes) -> gv.LoadedModel:
    """Load a checkpoint uploaded through the page: written to a private temp file, read with
    ``torch.load(weights_only=True)`` (no code runs), checked (:func:`check_loadable`) and deleted.

    Raises:
        ValueError: naming the upload (never the temp file) and the problem.
    """
    label = os.path.basename(str(name)) or "checkpoint"
    limit = checkpoint_limit_bytes()
    if len(data) > limit:
        raise ValueError(f"{label}: file is {len(data) / 2**20:.3g} MB, over the {limit / 2**20:.3g} MB checkpoint limit")
    if not data:
        raise ValueError(f"{label}: file is empty (0 bytes)")
    fd, path = tempfile.mkstemp(suffix=".pt", prefix="gatta-viz-upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            lm = check_loadable(path, label)
        except (ValueError, FileNotFoundError) as e:
            raise _public_error(e, path, label) from None
        lm.path = label  # the model is named after the upload, not the temp file
        return lm
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


# ---------------------------------------------------------------- replicas: renders in parallel, never sharing a model
def render_workers() -> int:
    """Renders that may run at once: ``$GATTA_VIZ_RENDER_WORKERS`` or the CPU cores this process may use."""
    raw = os.environ.get(ENV_WORKERS, "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            raise ValueError(f"environment variable {ENV_WORKERS} must be a whole number, got {raw!r}") from None
        if n < 1:
            raise ValueError(f"environment variable {ENV_WORKERS} must be at least 1, got {raw!r}")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def torch_threads_per_render(workers: Optional[int] = None) -> int:
    """Intra-op threads each render should use so that parallel renders do not oversubscribe the cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers or render_workers()))


class ModelPool:
    """A model and its replicas (deep copies), each used by one render at a time.

    Args:
        lm: the loaded model (itself the first replica).
        size: how many renders may run at once (default :func:`render_workers`).
    """

    def __init__(self, lm: gv.LoadedModel, size: Optional[int] = None) -> None:
        self.lm = lm
        self.size = max(1, int(size or render_workers()))
        self._free: "queue.Queue[gv.LoadedModel]" = queue.Queue()
        self._free.put(lm)
        for _ in range(self.size - 1):
            self._free.put(copy.deepcopy(lm))

    @contextlib.contextmanager
    def replica(self, timeout: Optional[float] = ACQUIRE_TIMEOUT) -> Iterator[gv.LoadedModel]:
        """Take a replica for the duration of the block (waiting for one if all are busy).

        Raises:
            TimeoutError: none became free within ``timeout`` seconds.
        """
        try:
            lm = self._free.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the server is busy (all {self.size} render slots in use for {timeout:.0f} s); "
                               "try again in a moment") from None
        try:
            yield lm
        finally:
            self._free.put(lm)

    def idle(self) -> int:
        """Replicas free right now."""
        return self._free.qsize()

    def warm_up(self) -> None:
        """Render a blank image once on every replica, and import what the first page needs (captum, plotly,
        pyarrow), so that the first visitors after a start do not all wait for that at once."""
        import importlib

        for module in ("plotly.graph_objects", "pyarrow"):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
        h, w = (int(v) for v in self.lm.preprocess["size"])
        blank = Image.new("L" if int(self.lm.preprocess["channels"]) == 1 else "RGB", (w, h))
        held = []
        try:
            for _ in range(self.size):  # each replica once: hold them all, then render on each
                held.append(self._free.get(timeout=ACQUIRE_TIMEOUT))
            for lm in held:
                _render(lm, "warm-up.png", gv.prepare_image(blank, lm.preprocess), None, "RdBu_r", 0.5, True, False,
                        True, 3, True, None)
        finally:
            for lm in held:
                self._free.put(lm)


_POOLS_LOCK = threading.Lock()


def pool_for(model: Union[gv.LoadedModel, ModelPool]) -> ModelPool:
    """The pool serving ``model`` (made once per LoadedModel, on first use)."""
    if isinstance(model, ModelPool):
        return model
    with _POOLS_LOCK:
        pool = model.__dict__.get("_render_pool")
        if pool is None:
            pool = ModelPool(model)
            model.__dict__["_render_pool"] = pool
        return pool


# ---------------------------------------------------------------- uploads
def decode(name: str, data: bytes, max_bytes: Optional[int] = None) -> Image.Image:
    """Decode one upload (limits: :func:`limits`); raises gv.ImageError naming the file and the problem."""
    return gv.load_image(data, name=name, max_bytes=max_bytes)


def decode_all(files: Sequence[Tuple[str, bytes]], max_bytes: Optional[int] = None
               ) -> Tuple[List[Tuple[str, Image.Image]], List[str]]:
    """Decode many uploads. Returns (good (name, image) list, error messages), never raising for a bad file."""
    good, errors = [], []
    for name, data in files:
        try:
            good.append((name, decode(name, data, max_bytes)))
        except gv.ImageError as e:
            errors.append(str(e))
    return good, errors


# ---------------------------------------------------------------- one image's page content
@dataclass
class Render:
    """Everything the page shows for one image."""

    name: str
    shown: np.ndarray
    inverted: bool
    top_pass1: List[Dict[str, Any]]
    top_pass2: List[Dict[str, Any]]
    overlays: Dict[str, Image.Image] = field(default_factory=dict)
    gradcam_overlays: Dict[str, Image.Image] = field(default_factory=dict)
    alphas: Dict[str, float] = field(default_factory=dict)
    dense: Dict[str, np.ndarray] = field(default_factory=dict)
    table: List[Dict[str, Any]] = field(default_factory=list)
    npz: bytes = b""
    is_gatta: bool = True
    gain: bool = True
    signed: bool = True
    joint: bool = False
    scales: Dict[str, float] = field(default_factory=dict)
    gradcam_target: Optional[Dict[str, Any]] = None  # {"label", "index", "predicted": bool}
    explanation: Any = field(default=None, repr=False)  # kept to draw the figure when it is asked for
    cmap: str = "RdBu_r"
    cue: Optional[str] = None  # the top-down cue of the second row of maps, or None
    cued_top_pass2: List[Dict[str, Any]] = field(default_factory=list)
    cued_overlays: Dict[str, Image.Image] = field(default_factory=dict)  # same colour scale per layer as overlays
    cued_dense: Dict[str, np.ndarray] = field(default_factory=dict)
    cued_table: List[Dict[str, Any]] = field(default_factory=list)
    outlines: List[Outline] = field(default_factory=list)
    shown_outlined: Optional[Image.Image] = None  # the input, enlarged, with the items outlined

    def figure_png(self) -> bytes:
        """The Fig. 3 layout as PNG bytes, drawn on first request (about 3/4 of a render's time, so the page
        hands this method to its download button, which calls it only when clicked). Under a cue: two rows of
        maps, without and with the cue."""
        if self.explanation is None:
            return b""
        if not self.__dict__.get("_figure_png"):
            self.__dict__["_figure_png"] = _png(lambda: self.explanation.figure(self.cmap, outlines=self.outlines or None))
        return self.__dict__["_figure_png"]

    def outline_caption(self) -> str:
        """``"outlines: Trouser (green), Bag (yellow)"``, or "" without outlines."""
        if not self.outlines:
            return ""
        return "outlines: " + ", ".join(f"{md_escape(o.label)} ({o.colour_name})" for o in self.outlines)


def conv_layers(lm: gv.LoadedModel) -> List[str]:
    """Layers one can pick: GAttA conv layers, or for a plain model its top-level conv stages (for Grad-CAM)."""
    if lm.is_gatta:
        return [n for n, k in lm.model.layer_kinds.items() if k == "conv"]
    names = []
    for n, m in lm.model.named_children():
        if any(isinstance(s, torch.nn.Conv2d) for s in m.modules()):
            names.append(n)
    return [n for n in names if n.startswith(("layer", "conv"))] or names


# pyplot keeps global state (figure numbers, the current figure): figures are made one at a time
PLOT_LOCK = threading.Lock()


def _png(make_figure) -> bytes:
    from gatta_viz.analysis.figures import plt

    with PLOT_LOCK:
        fig = make_figure()
        try:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        finally:
            plt.close(fig)
    return buf.getvalue()


def _gradcam_maps(model, x: torch.Tensor, layers: Sequence[str], target: int, signed: bool, joint: bool
                  ) -> Dict[str, np.ndarray]:
    size = tuple(x.shape[2:])
    with torch.enable_grad():
        return gv.normalize({n: gv.upsample(gv.gradcam(model, x, n, target)[0], size) for n in layers}, signed, joint)


def _target(target: Optional[int], predicted: int, classes: Sequence[str]) -> Dict[str, Any]:
    t = predicted if target is None else int(target)
    if not 0 <= t < len(classes):
        raise ValueError(f"Grad-CAM target {t} is not a class of this model (0..{len(classes) - 1})")
    return {"label": classes[t], "index": t, "predicted": t == predicted}


def render(model: Union[gv.LoadedModel, ModelPool], name: str, img: Image.Image, layers: Optional[Sequence[str]] = None,
           cmap: str = "RdBu_r", opacity: float = 0.5, signed: bool = True, joint: bool = False, gradcam: bool = True,
           k: int = 3, gain: bool = True, target: Optional[int] = None, cue: Optional[str] = None,
           outlines: Optional[Sequence] = None) -> Render:
    """Compute one image's page content on a free replica of the model.

    Args:
        model: the model (its :class:`ModelPool` is made on first use) or a pool.
        name: file name (for the downloads).
        img: decoded image.
        layers: conv layers to show (default all).
        cmap, opacity, signed, joint: display options.
        gradcam: also compute captum Grad-CAM at the same layers.
        k: top-k predictions.
        gain: maps of alpha x agreement (default: > 0 boosted by pass 2, < 0 suppressed) and dense bars of
            gains 1 + alpha x agreement, instead of raw agreement (whose sign is set by training).
        target: Grad-CAM's class (default: the predicted class).
        cue: a class name: also explain the image under the model's stored query of that class (its maps on
            the same colour scale per layer as those without the cue); None or :data:`NO_CUE`: no cue.
        outlines: items to outline on the input and the maps, ``[(box_xyxy, label, colour), ...]`` in model-input
            pixels (e.g. :meth:`Scene.outlines`).
    Returns:
        A :class:`Render`. Renders from several threads run in parallel, each on its own replica.
    Raises:
        ValueError: a cue the model cannot take (a plain CNN, no stored class queries, unknown class).
    """
    pool = pool_for(model)
    with pool.replica() as lm:
        prep = gv.prepare_image(img, lm.preprocess)
        return _render(lm, name, prep, layers, cmap, opacity, signed, joint, gradcam, k, gain, target, cue, outlines)


def render_upload(model: Union[gv.LoadedModel, ModelPool], name: str, data: bytes, **options: Any) -> Render:
    """Decode and render one upload inside the same concurrency limit (a replica is held while decoding).

    Args:
        model, name: as :func:`render`.
        data: the file's bytes.
        **options: :func:`render`'s keyword options.
    Raises:
        gv.ImageError: the file cannot be used; ValueError: the model cannot take it; TimeoutError: server busy.
    """
    pool = pool_for(model)
    with pool.replica() as lm:
        prep = gv.prepare_image(decode(name, data), lm.preprocess)
        return _render(lm, name, prep, options.get("layers"), options.get("cmap", "RdBu_r"),
                       options.get("opacity", 0.5), options.get("signed", True), options.get("joint", False),
                       options.get("gradcam", True), options.get("k", 3), options.get("gain", True),
                       options.get("target"), options.get("cue"), options.get("outlines"))


def _render(lm: gv.LoadedModel, name: str, prep, layers, cmap, opacity, signed, joint, gradcam, k, gain, target,
            cue=None, outlines=None) -> Render:
    layers = list(layers) if layers is not None else conv_layers(lm)
    cue = None if cue in (None, "", NO_CUE) else cue
    items = as_outlines(outlines, prep.shown.shape[:2])
    shown_outlined = draw_outlines(prep.shown, items, scale=outline_scale(prep.shown)) if items else None
    if cue is not None and not lm.is_gatta:
        raise ValueError(f"a top-down cue needs a GAttA model: {lm.name} has no GAttA layers")
    if not lm.is_gatta:
        with torch.no_grad():
            logits = lm.model(prep.tensor)[0]
        top = gv.topk(logits, lm.classes, k)
        tgt = _target(target, top[0]["index"], lm.classes)
        cams = _gradcam_maps(lm.model, prep.tensor, layers, tgt["index"], signed, joint) if gradcam and layers else {}
        over = {n: gv.overlay(prep.shown, h, cmap, opacity, signed) for n, h in cams.items()}
        buf = io.BytesIO()
        np.savez_compressed(buf, image=prep.shown, logits=logits.detach().numpy(), **{f"gradcam/{n}": v for n, v in cams.items()})
        return Render(name, prep.shown, prep.inverted, top, top,
                      gradcam_overlays=_outlined(over, items), npz=buf.getvalue(), is_gatta=False,
                      gain=gain, signed=signed, joint=joint, gradcam_target=tgt if cams else None, outlines=items,
                      shown_outlined=shown_outlined)
    cued = gv.explain(lm, prep, layers=layers, signed=signed, joint=joint, k=k, gradcam=False, gain=gain, cue=cue)
    ex = cued.uncued if cued.uncued is not None else cued  # the image's own query; the cue's row is extra
    tgt = _target(target, ex.top_pass2[0]["index"], lm.classes)
    if gradcam and ex.heatmaps:
        ex.gradcam = _gradcam_maps(lm.model, prep.tensor, list(ex.heatmaps), tgt["index"], signed, joint)
    for e in (ex, cued):
        e.original = None  # the decoded upload (up to 1024x1024) is not needed for the figure: keep renders small

    def dense_of(e):
        return {n: e.trace.layers[n].gain[0].numpy() if gain else e.raw[n] for n in e.dense_layers}

    is_cued = cued is not ex
    return Render(
        name=name, shown=prep.shown, inverted=prep.inverted, top_pass1=ex.top_pass1, top_pass2=ex.top_pass2,
        overlays=ex.overlays(cmap, opacity, outlines=items or None),
        gradcam_overlays=ex.gradcam_overlays(cmap, opacity, outlines=items or None), alphas=ex.alphas,
        dense=dense_of(ex), table=ex.table, npz=cued.to_npz(), is_gatta=True, gain=gain, signed=signed, joint=joint,
        scales=dict(getattr(ex, "scales", {}) or {}), gradcam_target=tgt if ex.gradcam else None, explanation=cued,
        cmap=cmap, cue=cued.cue if is_cued else None, cued_top_pass2=cued.top_pass2 if is_cued else [],
        cued_overlays=cued.overlays(cmap, opacity, outlines=items or None) if is_cued else {},
        cued_dense=dense_of(cued) if is_cued else {}, cued_table=cued.table if is_cued else [], outlines=items,
        shown_outlined=shown_outlined,
    )


def outline_scale(image: Union[np.ndarray, Image.Image]) -> int:
    """How much an outlined image is enlarged: to about 192 pixels on its longer side (as gv.Explanation does)."""
    side = max(image.size) if isinstance(image, Image.Image) else max(np.asarray(image).shape[:2])
    return max(1, math.ceil(192 / side))


def _outlined(images: Dict[str, Image.Image], items: List[Outline]) -> Dict[str, Image.Image]:
    if not items:
        return images
    return {n: draw_outlines(img, items, scale=outline_scale(img)) for n, img in images.items()}


# ---------------------------------------------------------------- top-down cues
def cue_options(lm: gv.LoadedModel) -> List[str]:
    """What the cue selector offers: :data:`NO_CUE` and the class names, for a GAttA model with stored class
    queries; [] otherwise (the page then shows no cue selector)."""
    if not lm.is_gatta or getattr(lm, "class_queries", None) is None:
        return []
    return [NO_CUE] + list(lm.classes)


def cue_of(choice: Optional[str]) -> Optional[str]:
    """The cue a selector value stands for (None for :data:`NO_CUE`)."""
    return None if choice in (None, "", NO_CUE) else str(choice)


# ---------------------------------------------------------------- two-garment scenes from the sample garments
def composer_canvas(lm: gv.LoadedModel) -> Optional[Tuple[int, int]]:
    """(H, W) of the canvas the composer fills for this model: its own greyscale input when that has room for
    garments at different places (both sides larger than a 28x28 garment); None otherwise (28x28 models)."""
    h, w = (int(v) for v in lm.preprocess["size"])
    if int(lm.preprocess.get("channels", 1)) != 1 or h <= GARMENT_SIDE or w <= GARMENT_SIDE:
        return None
    return h, w


def garment_files(folder: Optional[str] = None) -> List[str]:
    """The garment images the composer may place (file names in the samples' fashion-mnist folder, sorted)."""
    folder = folder or os.path.join(samples_dir(), GARMENT_FOLDER)
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, n)))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def garment_label(file_name: str, classes: Sequence[str]) -> str:
    """The class of a sample garment from its file name (``t-shirt-top_test00019.png`` -> ``T-shirt/top``), as
    the model spells it; the file's stem when no class matches."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    prefix = stem.rsplit("_", 1)[0] if "_" in stem else stem
    for c in classes:
        if _slug(c) == _slug(prefix):
            return c
    return stem


def load_garment(file_name: str, folder: Optional[str] = None) -> np.ndarray:
    """One sample garment as uint8 (H, W) greyscale pixels. Only files that :func:`garment_files` lists.

    Raises:
        ValueError: a name that is not one of those files; gv.ImageError: a file that cannot be decoded.
    """
    folder = folder or os.path.join(samples_dir(), GARMENT_FOLDER)
    if file_name not in garment_files(folder):
        raise ValueError(f"unknown garment {file_name!r}: choose one of the sample garments")
    img = gv.load_image(os.path.join(folder, file_name), name=file_name)
    return np.asarray(img.convert("L"), dtype=np.uint8)


@dataclass
class Scene:
    """Garments composited on a black canvas by pixel-wise max, as ``gv.make_scenes`` composites its scenes.

    Attributes:
        image: uint8 (H, W), the composite.
        layers: uint8 (k, H, W), each garment alone at its place.
        boxes: int64 (k, 4) (x0, y0, x1, y1), x1/y1 exclusive, of each garment's pixels > 16 (``SceneData.boxes``).
        labels: each garment's class name.
        positions: each garment's (x, y) top-left corner.
    """

    image: np.ndarray
    layers: np.ndarray
    boxes: np.ndarray
    labels: List[str]
    positions: List[Tuple[int, int]]

    @property
    def name(self) -> str:
        return "scene: " + " + ".join(f"{lb} at ({x}, {y})" for lb, (x, y) in zip(self.labels, self.positions))

    def png(self) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(self.image, "L").save(buf, "PNG")
        return buf.getvalue()

    def outlines(self) -> List[Outline]:
        """Each garment's box, in its own colour, labelled with its class (empty garments are left out)."""
        return [Outline(tuple(int(v) for v in b), lb, OUTLINE_COLOURS[k % len(OUTLINE_COLOURS)])
                for k, (b, lb) in enumerate(zip(self.boxes, self.labels)) if b[2] > b[0]]


def compose_scene(tiles: Sequence[np.ndarray], positions: Sequence[Tuple[int, int]], canvas: Tuple[int, int],
                  labels: Optional[Sequence[str]] = None) -> Scene:
    """Place garments on a black ``canvas`` (H, W) and composite them by pixel-wise max.

    Args:
        tiles: uint8 (h, w) garments.
        positions: each garment's (x, y) top-left corner on the canvas.
        canvas: (H, W).
        labels: each garment's name (default "garment 1", ...).
    Returns:
        A :class:`Scene` (boxes of each garment's pixels > 16, like ``SceneData.boxes``).
    Raises:
        ValueError: naming the garment that does not fit, or a malformed input.
    """
    h0, w0 = (int(v) for v in canvas)
    if len(tiles) != len(positions) or not tiles:
        raise ValueError(f"{len(tiles)} garments for {len(positions)} positions")
    labels = list(labels) if labels is not None else [f"garment {k + 1}" for k in range(len(tiles))]
    layers = np.zeros((len(tiles), h0, w0), dtype=np.uint8)
    boxes = np.zeros((len(tiles), 4), dtype=np.int64)
    for k, (tile, pos) in enumerate(zip(tiles, positions)):
        tile = np.asarray(tile)
        if tile.ndim != 2 or tile.dtype != np.uint8:
            raise ValueError(f"garment {k + 1} must be uint8 (h, w) pixels, got {tile.dtype} {tile.shape}")
        th, tw = tile.shape
        try:
            x, y = (int(v) for v in pos)
        except (TypeError, ValueError):
            raise ValueError(f"garment {k + 1}: position must be (x, y) whole numbers, got {pos!r}") from None
        if not (0 <= x <= w0 - tw and 0 <= y <= h0 - th):
            raise ValueError(f"garment {k + 1} ({tw}x{th}) at x={x}, y={y} does not fit the {w0}x{h0} canvas: x must "
                             f"be in 0..{w0 - tw} and y in 0..{h0 - th}")
        layers[k, y : y + th, x : x + tw] = tile
        rows, cols = np.nonzero(layers[k] > ITEM_THRESHOLD)
        if rows.size:
            boxes[k] = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    return Scene(layers.max(axis=0), layers, boxes, labels, [tuple(int(v) for v in p) for p in positions])


def compose_from_samples(files: Sequence[str], positions: Sequence[Tuple[int, int]], canvas: Tuple[int, int],
                         classes: Sequence[str], folder: Optional[str] = None) -> Scene:
    """A scene of sample garments (:func:`garment_files`), labelled with their classes (:func:`garment_label`).

    Raises:
        ValueError, gv.ImageError: an unknown or unreadable garment, or one that does not fit the canvas.
    """
    tiles = [load_garment(f, folder) for f in files]
    return compose_scene(tiles, positions, canvas, [garment_label(f, classes) for f in files])


def default_composition(canvas: Tuple[int, int], garments: Sequence[str]) -> List[Tuple[str, int, int]]:
    """The composer's starting point: two garments of different classes in opposite corners (overlapping on a
    48x48 canvas, as most fmnist-pairs scenes do)."""
    h, w = canvas
    first = "trouser_test00002.png" if "trouser_test00002.png" in garments else garments[0]
    second = "bag_test00018.png" if "bag_test00018.png" in garments else garments[-1]
    return [(first, 0, 0), (second, max(0, w - GARMENT_SIDE), max(0, h - GARMENT_SIDE))]


# ---------------------------------------------------------------- legends that follow the controls
def cmaps_for(signed: bool) -> List[str]:
    """Colormaps offered: diverging ones for signed maps (0 in the middle), sequential ones too when rectified."""
    return list(DIVERGING) if signed else list(CMAPS)


def map_label(gain: bool) -> str:
    """The name of the map kind in captions."""
    return "alpha x agreement" if gain else "raw agreement"


def maps_legend(gain: bool, signed: bool, joint: bool, cmap: str = "RdBu_r") -> str:
    """The legend above a set of maps, in words that follow every display control."""
    low, high = _ENDS.get(cmap, ("the low end", "the high end"))
    if gain:
        what = ("**alpha x agreement** (gain - 1): what pass 2 does to each position")
        sign = (f"{high}: boosted (gain > 1), {low}: suppressed (gain < 1), middle: unchanged" if signed
                else f"boosted positions only, up to {high} (suppressed ones are shown as 0)")
    else:
        what = ("**raw agreement** key . q_avg (sign set by training: read it with the layer's alpha, shown under each "
                "map; with alpha < 0 the layer boosts where agreement is negative)")
        sign = (f"{high}: agrees with the global query, {low}: disagrees" if signed
                else f"positive agreement only, up to {high}")
    scale = ("one colour scale for all layers: colours compare across layers" if joint
             else "each layer scaled to its own largest value: compare patterns, not strengths, across layers")
    return f"{what}. {sign}; {scale}."


def gradcam_legend(target: Dict[str, Any], signed: bool, joint: bool, cmap: str = "RdBu_r") -> str:
    """The legend above the Grad-CAM maps: class, sign, scale."""
    low, high = _ENDS.get(cmap, ("the low end", "the high end"))
    who = f"class **{md_escape(target['label'])}**" + (" (the predicted class)" if target.get("predicted") else "")
    sign = (f"{high}: raises that class's score, {low}: lowers it" if signed else f"positive evidence only, up to {high}")
    scale = "one scale for all layers" if joint else "each layer scaled to its own largest value"
    return f"**Grad-CAM** (captum LayerGradCam at the same layers) for {who}: class-specific. {sign}; {scale}."


def colorbar(cmap: str, signed: bool, width: int = 256, height: int = 12) -> Image.Image:
    """A horizontal colour strip of ``cmap`` from the map's lowest to its highest value."""
    lo = -1.0 if signed else 0.0
    strip = np.tile(np.linspace(lo, 1.0, width, dtype=np.float32), (height, 1))
    rgb = gv.colorize(strip, cmap, signed)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def colorbar_caption(gain: bool, signed: bool) -> str:
    """Words under the colour strip."""
    if gain:
        return "suppressed <- 0 (unchanged) -> boosted" if signed else "0 -> most boosted"
    return "disagrees <- 0 -> agrees" if signed else "0 -> most agreement"


def dense_figure(layer: str, g: np.ndarray, classes: Sequence[str], predicted: int, what: str = "gain"):
    """Plotly bars of a dense layer, in unit order.

    ``what="gain"``: bars of the gain 1 + alpha x agreement drawn from 1 (no change), red above (boosted) and
    blue below (suppressed). ``what="agreement"``: raw agreement from 0 in one neutral colour (its sign is set
    by training). On the class layer the predicted class is outlined and labelled, never coloured.
    """
    import plotly.graph_objects as go

    g = np.asarray(g, dtype=float)
    is_class = len(g) == len(classes)
    labels = list(classes) if is_class else [str(i) for i in range(len(g))]
    if is_class:
        labels[predicted] = f"<b>{labels[predicted]}</b> (predicted)"
    gain = what == "gain"
    base = 1.0 if gain else 0.0
    colors = (["#b2182b" if v > 1 else "#2166ac" for v in g] if gain else ["#5f6b73"] * len(g))
    widths = [3 if (is_class and i == predicted) else 0 for i in range(len(g))]
    fig = go.Figure(go.Bar(x=labels, y=g - base, base=base, marker_color=colors,
                           marker_line_color="black", marker_line_width=widths,
                           hovertemplate="%{x}: %{customdata:.4f}<extra></extra>", customdata=g))
    title = (f"{layer}: gain 1 + alpha x agreement per {'class' if is_class else 'unit'} (red: boosted, blue: suppressed)"
             if gain else f"{layer}: raw agreement per {'class' if is_class else 'unit'} (sign set by training)")
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10}, title=title,
                      yaxis_title="gain" if gain else "raw agreement")
    fig.update_xaxes(type="category")
    return fig


def enlarge(arr: np.ndarray, size: int = 196) -> Image.Image:
    """A small model input shown big, without smoothing (what the model saw, pixel by pixel)."""
    a = np.clip(np.asarray(arr, dtype=np.float32), 0, 1)
    a = (a[:, :, 0] if a.shape[2] == 1 else a) * 255
    img = Image.fromarray(a.astype(np.uint8))
    scale = max(1, size // max(img.size))
    return img.resize((img.size[0] * scale, img.size[1] * scale), Image.Resampling.NEAREST)


def domain_text(lm: gv.LoadedModel) -> str:
    """One sentence telling what inputs the model was trained on and what an upload becomes."""
    pre = lm.preprocess
    h, w = pre["size"]
    colour = "greyscale" if pre["channels"] == 1 else "RGB"
    data = lm.meta.get("dataset", "its training data")
    kind = {"fmnist-pairs": " (two garments per image, composited by pixel-wise max)",
            "fmnist-pairs-multimnist": " (two garments per image, composited by pixel-wise max)",
            "fmnist-clutter": " (one garment over a crop of a natural photo, with clutter)"}.get(str(data), "")
    text = (f"**{md_escape(lm.name)}** was trained on **{md_escape(data)}**{kind}: {w}x{h} {colour} images of "
            f"{len(lm.classes)} classes ({md_escape(', '.join(lm.classes), 400)}). Every upload is "
            f"{'greyscaled, ' if pre['channels'] == 1 else ''}padded to the model's aspect ratio and resized to "
            f"{w}x{h} (an image of exactly {w}x{h} goes in as it is)")
    if pre.get("background") == "dark":
        text += "; the training images are light garments on a black background, so pictures with a bright border are inverted"
    return text + ". Photos of other things are out of domain: the model will still pick one of its classes."
