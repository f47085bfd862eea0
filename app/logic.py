"""What the Streamlit page computes, without Streamlit: models, uploads, and one image's full render data.

Kept apart from ``streamlit_app.py`` so it can be tested and timed directly (see benchmarks/app_render.py).
"""
from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

import gatta_viz as gv
from gatta_viz.data.preprocess import IMAGE_EXTENSIONS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_UPLOAD_MB = 10
MAX_PIXELS = 40_000_000
CMAPS = ["RdBu_r", "coolwarm", "seismic", "PiYG", "viridis", "magma", "jet"]
# Streamlit serves each browser session in its own thread and shares the cached model between them. A trace
# registers hooks on that shared model (and Grad-CAM its own), and pyplot keeps global state: renders must
# not interleave, so they take turns.
RENDER_LOCK = threading.Lock()


def samples_dir() -> str:
    """Folder of sample images: ``$GATTA_VIZ_SAMPLES`` or the repo's sample_images/."""
    return os.environ.get("GATTA_VIZ_SAMPLES") or os.path.join(REPO, "sample_images")


def list_samples(folder: Optional[str] = None) -> List[str]:
    """Sample image paths relative to ``folder`` (recursive, sorted); [] if the folder is missing."""
    folder = folder or samples_dir()
    if not os.path.isdir(folder):
        return []
    out = []
    for root, _, names in os.walk(folder):
        for n in names:
            if n.lower().endswith(IMAGE_EXTENSIONS):
                out.append(os.path.relpath(os.path.join(root, n), folder))
    return sorted(out)


def preloaded_files() -> List[str]:
    """Files given to ``gatta-viz app FILE...`` (passed in ``$GATTA_VIZ_FILES``, separated by os.pathsep)."""
    raw = os.environ.get("GATTA_VIZ_FILES", "")
    return [p for p in raw.split(os.pathsep) if p]


def load_model(name_or_path: str) -> gv.LoadedModel:
    """A bundled model by name or a checkpoint by path; raises ValueError/FileNotFoundError with a clear message."""
    name_or_path = name_or_path.strip()
    if not name_or_path:
        raise ValueError("no model chosen")
    return gv.load_model(name_or_path)


def domain_text(lm: gv.LoadedModel) -> str:
    """One sentence telling what inputs the model was trained on and what an upload becomes."""
    pre = lm.preprocess
    h, w = pre["size"]
    colour = "greyscale" if pre["channels"] == 1 else "RGB"
    data = lm.meta.get("dataset", "its training data")
    text = (f"**{lm.name}** was trained on **{data}**: {w}x{h} {colour} images of {len(lm.classes)} classes "
            f"({', '.join(lm.classes)}). Every upload is {'greyscaled, ' if pre['channels'] == 1 else ''}padded to "
            f"the model's aspect ratio and shrunk to {w}x{h}")
    if pre.get("background") == "dark":
        text += "; the training images are light garments on a black background, so pictures with a bright border are inverted"
    return text + ". Photos of other things are out of domain: the model will still pick one of its classes."


def decode(name: str, data: bytes, max_bytes: int = MAX_UPLOAD_MB * 1024 * 1024) -> Image.Image:
    """Decode one upload; raises gv.ImageError naming the file and the problem."""
    return gv.load_image(data, name=name, max_pixels=MAX_PIXELS, max_bytes=max_bytes)


def decode_all(files: Sequence[Tuple[str, bytes]], max_bytes: int = MAX_UPLOAD_MB * 1024 * 1024) -> Tuple[List[Tuple[str, Image.Image]], List[str]]:
    """Decode many uploads. Returns (good (name, image) list, error messages) — never raises for a bad file."""
    good, errors = [], []
    for name, data in files:
        try:
            good.append((name, decode(name, data, max_bytes)))
        except gv.ImageError as e:
            errors.append(str(e))
    return good, errors


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
    figure_png: bytes = b""
    npz: bytes = b""
    is_gatta: bool = True


def conv_layers(lm: gv.LoadedModel) -> List[str]:
    """Layers one can pick: GAttA conv layers, or for a plain model its top-level conv stages (for Grad-CAM)."""
    if lm.is_gatta:
        return [n for n, k in lm.model.layer_kinds.items() if k == "conv"]
    names = []
    for n, m in lm.model.named_children():
        if any(isinstance(s, torch.nn.Conv2d) for s in m.modules()):
            names.append(n)
    return [n for n in names if n.startswith(("layer", "conv"))] or names


def _png(fig) -> bytes:
    from gatta_viz.analysis.figures import plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def render(lm: gv.LoadedModel, name: str, img: Image.Image, layers: Optional[Sequence[str]] = None, cmap: str = "RdBu_r",
           opacity: float = 0.5, signed: bool = True, joint: bool = False, gradcam: bool = True, k: int = 3,
           gain: bool = False) -> Render:
    """Compute one image's page content.

    Args:
        lm: the model.
        name: file name (for the downloads).
        img: decoded image.
        layers: conv layers to show (default all).
        cmap, opacity, signed, joint: display options.
        gradcam: also compute captum Grad-CAM at the same layers.
        k: top-k predictions.
        gain: maps of alpha x agreement and dense bars of gains 1 + alpha x agreement (what each layer
            boosts) instead of raw agreement.
    Returns:
        A :class:`Render`. Calls from several threads (Streamlit sessions) run one at a time.
    """
    prep = gv.prepare_image(img, lm.preprocess)
    with RENDER_LOCK:
        return _render(lm, name, prep, layers, cmap, opacity, signed, joint, gradcam, k, gain)


def _render(lm: gv.LoadedModel, name: str, prep, layers, cmap, opacity, signed, joint, gradcam, k, gain) -> Render:
    layers = list(layers) if layers is not None else conv_layers(lm)
    if not lm.is_gatta:
        with torch.no_grad():
            logits = lm.model(prep.tensor)[0]
        top = gv.topk(logits, lm.classes, k)
        size = tuple(prep.tensor.shape[2:])
        cams = {}
        if gradcam and layers:
            pred = int(logits.argmax())
            cams = gv.normalize({n: gv.upsample(gv.gradcam(lm.model, prep.tensor, n, pred)[0], size) for n in layers}, signed, joint)
        over = {n: gv.overlay(prep.shown, h, cmap, opacity, signed) for n, h in cams.items()}
        buf = io.BytesIO()
        np.savez_compressed(buf, image=prep.shown, logits=logits.detach().numpy(), **{f"gradcam/{n}": v for n, v in cams.items()})
        return Render(name, prep.shown, prep.inverted, top, top, gradcam_overlays=over, npz=buf.getvalue(), is_gatta=False)
    ex = gv.explain(lm, prep, layers=layers, signed=signed, joint=joint, k=k, gradcam=gradcam, gain=gain)
    dense = {n: ex.trace.layers[n].gain[0].numpy() if gain else ex.raw[n] for n in ex.dense_layers}
    return Render(
        name=name, shown=prep.shown, inverted=prep.inverted, top_pass1=ex.top_pass1, top_pass2=ex.top_pass2,
        overlays=ex.overlays(cmap, opacity), gradcam_overlays=ex.gradcam_overlays(cmap, opacity), alphas=ex.alphas,
        dense=dense, table=ex.table, figure_png=_png(ex.figure(cmap)), npz=ex.to_npz(), is_gatta=True,
    )


def dense_figure(layer: str, g: np.ndarray, classes: Sequence[str], predicted: int, what: str = "agreement"):
    """Plotly bars of a dense layer's agreement (or gain: ``what="gain"``) in unit order; on the class layer the
    predicted class is red."""
    import plotly.graph_objects as go

    is_class = len(g) == len(classes)
    labels = list(classes) if is_class else [str(i) for i in range(len(g))]
    colors = ["#7f7f7f"] * len(g)
    if is_class:
        colors[predicted] = "#d62728"
    fig = go.Figure(go.Bar(x=labels, y=np.asarray(g, dtype=float), marker_color=colors))
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10}, yaxis_title=what,
                      title=f"{layer}: {what} per {'class (red = predicted)' if is_class else 'unit'}")
    fig.update_xaxes(type="category")
    return fig


def enlarge(arr: np.ndarray, size: int = 196) -> Image.Image:
    """A small model input shown big, without smoothing (what the model saw, pixel by pixel)."""
    a = np.clip(np.asarray(arr, dtype=np.float32), 0, 1)
    a = (a[:, :, 0] if a.shape[2] == 1 else a) * 255
    img = Image.fromarray(a.astype(np.uint8))
    scale = max(1, size // max(img.size))
    return img.resize((img.size[0] * scale, img.size[1] * scale), Image.Resampling.NEAREST)
