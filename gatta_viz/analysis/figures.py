"""Matplotlib figures: the paper's Fig. 3 layout and an alpha-per-layer bar chart; saving to PNG/SVG."""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Union

import matplotlib.pyplot as plt  # matplotlib picks Agg by itself on machines without a display
import numpy as np
import torch
from matplotlib.figure import Figure

from .heatmaps import normalize
from .overlays import to_rgb_array
from ..core.trace import GAttATrace

__all__ = ["fig3", "alpha_bars", "save_figure", "image_for_display"]

PRED_COLOR, TRUE_COLOR, BAR_COLOR = "#d62728", "#2ca02c", "#7f7f7f"


def image_for_display(image: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """An image to show: (C, H, W) tensors (e.g. normalised inputs) are min-max scaled; arrays in [0, 1] kept."""
    if torch.is_tensor(image):
        a = image.detach().cpu().float()
        if a.dim() == 4:
            a = a[0]
        a = a.numpy()
        a = (a - a.min()) / (a.max() - a.min()) if a.max() > a.min() else np.zeros_like(a)
        return to_rgb_array(np.transpose(a, (1, 2, 0)))
    return to_rgb_array(image)


def fig3(
    image,
    trace: GAttATrace,
    index: int = 0,
    classes: Optional[Sequence[str]] = None,
    true_label: Optional[int] = None,
    signed: bool = True,
    joint: bool = False,
    cmap: str = "RdBu_r",
    gain: bool = False,
) -> Figure:
    """The paper's Fig. 3 layout for one image.

    Panels: the input; one agreement map per conv layer at its own resolution (red = agreement with the
    global query, blue = disagreement, centred at 0); one bar chart per dense layer. On the class layer
    (units == len(classes)) the predicted class (pass 2) is red, the true class green.

    Args:
        image: the input as the model saw it ((C, H, W) tensor or (H, W[, C]) array in [0, 1]).
        trace: trace holding this image.
        index: which image of the trace.
        classes: class names.
        true_label: the true class, if known.
        signed, joint: see ``heatmaps.normalize``.
        cmap: colormap of the maps.
        gain: show alpha x agreement (what each layer boosts, red; or damps, blue) instead of raw agreement,
            and the dense layers' gains 1 + alpha x agreement. The sign of a raw map is a convention of
            training (negating a layer's keys and alpha gives the same network); this view is not.
    Returns:
        The figure (save it with :func:`save_figure`).
    """
    conv = [n for n, lt in trace.layers.items() if lt.kind == "conv"]
    dense = [n for n, lt in trace.layers.items() if lt.kind == "dense"]
    maps = normalize({n: trace.layers[n].map(gain)[index].detach().cpu().numpy() for n in conv}, signed, joint)
    ncols = 1 + len(conv) + len(dense)
    widths = [1] * (1 + len(conv)) + [2] * len(dense)
    fig, axes = plt.subplots(1, ncols, figsize=(2.3 * sum(widths) + 0.8, 3.1), gridspec_kw={"width_ratios": widths},
                             squeeze=False, layout="constrained")
    axes = axes[0]
    axes[0].imshow(image_for_display(image), interpolation="nearest")
    pred = int(trace.logits_pass2[index].argmax())
    pred1 = int(trace.logits_pass1[index].argmax())
    name = lambda c: classes[c] if classes is not None else str(c)  # noqa: E731
    title = f"pred: {name(pred)}"
    if pred1 != pred:
        title += f"\n(pass 1: {name(pred1)})"
    if true_label is not None:
        title += f"\ntrue: {name(true_label)}"
    axes[0].set_title(title, fontsize=8)
    axes[0].axis("off")
    vmin = -1 if signed else 0
    im = None
    for ax, n in zip(axes[1 : 1 + len(conv)], conv):
        m = maps[n]
        im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=1, interpolation="nearest")
        ax.set_title(f"{n} {m.shape[0]}x{m.shape[1]}\nalpha={trace.layers[n].alpha:+.3f}", fontsize=8)
        ax.axis("off")
    if im is not None:
        cb = fig.colorbar(im, ax=list(axes[1 : 1 + len(conv)]), shrink=0.8, pad=0.01)
        cb.set_label("alpha x agreement (scaled)" if gain else "agreement (scaled)", fontsize=7)
        cb.ax.tick_params(labelsize=6)
    for ax, n in zip(axes[1 + len(conv) :], dense):
        lt = trace.layers[n]
        g = (lt.gain if gain else lt.agreement)[index].detach().cpu().numpy()
        colors = [BAR_COLOR] * len(g)
        is_class_layer = classes is not None and len(g) == len(classes)
        if is_class_layer:
            if true_label is not None:
                colors[true_label] = TRUE_COLOR
            colors[pred] = PRED_COLOR
        ax.bar(np.arange(len(g)), g, color=colors, width=0.8)
        ax.axhline(1 if gain else 0, color="black", lw=0.6)
        what = "gain = 1 + alpha x agreement" if gain else "agreement (gain = 1 + alpha x agreement)"
        ax.set_title(f"{n} ({len(g)} units)  alpha={trace.layers[n].alpha:+.3f}\n{what}", fontsize=8)
        if is_class_layer:
            ax.set_xticks(np.arange(len(g)))
            ax.set_xticklabels(classes, rotation=60, ha="right", fontsize=6)
        else:
            ax.set_xlabel("unit", fontsize=7)
        ax.tick_params(labelsize=6)
    return fig


def alpha_bars(alphas: Dict[str, float]) -> Figure:
    """Bar chart of alpha per layer (sign kept: alpha < 0 inverts the sense of the agreement)."""
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(alphas), 2.8))
    names, vals = list(alphas), [float(v) for v in alphas.values()]
    ax.bar(names, vals, color=[PRED_COLOR if v < 0 else "#1f77b4" for v in vals])
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("alpha")
    ax.set_title("modulation strength per layer", fontsize=9)
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str, dpi: int = 130) -> str:
    """Save as PNG or SVG (by extension), creating the directory; closes the figure. Returns the path."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".png", ".svg", ".pdf"):
        raise ValueError(f"figure path must end in .png, .svg or .pdf, got {path!r}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
