"""Figures of a map store's views (:mod:`gatta_viz.compute.dataset_views`): the q_avg embedding coloured by class
and by "pass 2 changed the prediction", the grid of per-class mean gain maps, one stored image's maps as
pictures, and a helper that writes the figures as PNG files. Nothing here reads a store or computes a map.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from ..compute.dataset_views import ClassMeans, StoreEmbedding, StoredImage
from ..compute.maps import normalize_with_scales
from .images import colorize
from .save import save_figure
from .style import DEFAULT_CMAP, NEUTRAL, map_name

__all__ = ["class_colours", "class_scatter", "dataset_embedding_figure", "class_means_figure", "enlarge", "map_tiles",
           "save_dataset_figures"]

CHANGED = "#d95f02"  # the images pass 2 changed: one colour that is neither "boosted" red nor "suppressed" blue
DISPLAY_SIDE = 160  # map tiles are enlarged (by whole pixels) to about this many pixels a side


def class_colours(k: int) -> List[tuple]:
    """``k`` distinguishable RGBA colours (tab10 up to 10 classes, tab20 up to 20, then a cycle of tab20)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(c % cmap.N) for c in range(k)]


def class_scatter(ax, coords: np.ndarray, labels: np.ndarray, classes: Sequence[str], size: float = 5) -> None:
    """Points coloured by class with a legend; unknown labels (-1) in grey as "unlabelled".

    Args:
        ax: a matplotlib Axes.
        coords: (N, 2) points.
        labels: (N,) classes (-1: unknown).
        classes: class names, indexed by label.
        size: marker size.
    """
    labels = np.asarray(labels)
    for c, (name, colour) in enumerate(zip(classes, class_colours(len(classes)))):
        m = labels == c
        if m.any():
            ax.scatter(coords[m, 0], coords[m, 1], s=size, alpha=0.6, color=colour, label=name, linewidths=0)
    unknown = (labels < 0) | (labels >= len(classes))
    if unknown.any():
        ax.scatter(coords[unknown, 0], coords[unknown, 1], s=size, alpha=0.6, color=NEUTRAL, label="unlabelled",
                   linewidths=0)
    ax.legend(markerscale=3, fontsize=7, loc="best")


def dataset_embedding_figure(emb: StoreEmbedding, title: Optional[str] = None) -> Figure:
    """Two panels of the same 2-D q_avg embedding: coloured by class, and by whether pass 2 changed the prediction.

    Args:
        emb: from :func:`gatta_viz.q_avg_embedding_from_store`.
        title: the figure's title (default: method and number of images).
    Returns:
        a matplotlib Figure.
    """
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2, sharex=True, sharey=True)
    xlabel, ylabel = emb.axis_labels()
    size = float(np.clip(4000 / max(len(emb.rows), 1), 1, 16))  # fewer images, larger points
    class_scatter(left, emb.coords, emb.labels, emb.classes, size)
    left.set_title("coloured by true class", fontsize=9)
    ch = np.asarray(emb.changed, dtype=bool)
    right.scatter(emb.coords[~ch, 0], emb.coords[~ch, 1], s=size, color="#c8cdd0", linewidths=0,
                  label=f"same prediction ({int((~ch).sum())})")
    right.scatter(emb.coords[ch, 0], emb.coords[ch, 1], s=3 * size, color=CHANGED, linewidths=0,
                  label=f"pass 2 changed it ({int(ch.sum())})")
    right.legend(markerscale=2, fontsize=7, loc="best")
    right.set_title("did pass 2 change the prediction?", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    left.set_ylabel(ylabel, fontsize=8)
    method = "UMAP" if emb.method == "umap" else "PCA"
    fig.suptitle(title or f"global query q_avg of {len(emb.rows)} images, {method}", fontsize=10)
    return fig


def class_means_figure(cm: ClassMeans, cmap: str = DEFAULT_CMAP, title: Optional[str] = None,
                       classes: Optional[Sequence[str]] = None) -> Figure:
    """A grid of mean gain maps: a row per class, a column per layer, each at the layer's resolution. Colours are
    diverging and centred at 0 (red: boosted by pass 2 on average, blue: suppressed), one scale per layer shared
    by its classes, with that layer's colour bar under its column.

    Args:
        cm: from :func:`gatta_viz.class_mean_maps`.
        cmap: a diverging matplotlib colormap.
        title: the figure's title.
        classes: the rows to draw (names; None: every class), e.g. a few of CIFAR-100's hundred.
    Returns:
        a matplotlib Figure.
    Raises:
        ValueError: an unknown class name.
    """
    layers = list(cm.maps)
    unknown = [c for c in classes or () if c not in cm.classes]
    if unknown:
        raise ValueError(f"unknown class(es) {unknown}: the class means are of {cm.classes}")
    rows = [cm.classes.index(c) for c in classes] if classes else list(range(len(cm.classes)))
    k = len(rows)
    # inches, fixed margins: a constrained layout of (classes x layers) axes takes seconds to solve
    w, h = max(3.4, 1.45 * len(layers) + 1.0), 1.2 * k + 1.4
    fig = Figure(figsize=(w, h))
    axes = fig.subplots(k, len(layers), squeeze=False, gridspec_kw=dict(
        left=0.9 / w, right=1 - 0.1 / w, top=1 - 0.75 / h, bottom=0.65 / h, wspace=0.15, hspace=0.12))
    by = {"label": "true class", "pred_pass2": "pass-2 prediction", "pred_pass1": "pass-1 prediction"}[cm.by]
    for j, layer in enumerate(layers):
        m = cm.maps[layer]
        s = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0
        s = s or 1.0
        for i, c in enumerate(rows):
            ax = axes[i, j]
            im = ax.imshow(m[c], cmap=cmap, vmin=-s, vmax=s, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                alpha = cm.alphas.get(layer)
                ax.set_title(layer + (f"\nα = {alpha:+.2f}" if alpha is not None else ""), fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{cm.classes[c]}\n({int(cm.counts[c])})", fontsize=7)
        box = axes[-1, j].get_position()
        cax = fig.add_axes((box.x0 + 0.1 * box.width, 0.3 / h, 0.8 * box.width, 0.08 / h))
        cb = fig.colorbar(im, cax=cax, orientation="horizontal")
        cb.ax.tick_params(labelsize=6)
    fig.suptitle(title or f"mean {map_name(True)} per {by}\n(red: boosted by pass 2, blue: suppressed; "
                 "one scale per layer)", fontsize=8, y=1 - 0.08 / h, va="top")
    return fig


def enlarge(pixels: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """Repeat each pixel (or map cell) by a whole number of pixels so the larger side is about ``side``: a layer's
    resolution stays visible, no smoothing.

    Args:
        pixels: (H, W) or (H, W, C) array.
        side: about how many pixels the larger side gets (never shrunk).
    Returns:
        the enlarged array.
    """
    f = max(1, int(round(side / max(pixels.shape[:2]))))
    return np.repeat(np.repeat(pixels, f, axis=0), f, axis=1)


def map_tiles(img: StoredImage, cmap: str = DEFAULT_CMAP, joint: bool = False,
              side: int = DISPLAY_SIDE) -> Dict[str, tuple]:
    """One stored image's gain maps as pictures, each at its layer's resolution enlarged by whole pixels.

    Args:
        img: from :func:`gatta_viz.stored_image`.
        cmap: a diverging colormap (centred at 0).
        joint: one colour scale for every layer (else each layer is scaled to its own largest |value|).
        side: about how many pixels a side each picture gets.
    Returns:
        layer -> (RGB PIL image, the scale: the |alpha x agreement| shown as full colour).
    """
    scaled, scales = normalize_with_scales(img.maps, signed=True, joint=joint)
    out = {}
    for layer, m in scaled.items():
        rgb = enlarge(colorize(m, cmap, signed=True), side)
        out[layer] = (Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB"), scales[layer])
    return out


def save_dataset_figures(folder: str, embedding: Optional[StoreEmbedding] = None,
                         class_means: Optional[ClassMeans] = None, dpi: int = 120) -> List[str]:
    """Write the figures of a store's views as PNG files (``q_avg_embedding.png``, ``class_mean_maps.png``).

    Args:
        folder: where (created if needed).
        embedding: from :func:`gatta_viz.q_avg_embedding_from_store`, or None.
        class_means: from :func:`gatta_viz.class_mean_maps`, or None.
        dpi: pixels per inch.
    Returns:
        the paths written.
    Raises:
        ValueError: nothing to write.
    """
    figs = {}
    if embedding is not None:
        figs["q_avg_embedding.png"] = dataset_embedding_figure(embedding)
    if class_means is not None:
        figs["class_mean_maps.png"] = class_means_figure(class_means)
    if not figs:
        raise ValueError("nothing to save: give an embedding, class means or both")
    return [save_figure(fig, os.path.join(folder, name), dpi=dpi) for name, fig in figs.items()]
