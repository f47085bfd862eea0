"""Localization examples: images with their object's outline beside maps drawn with the same outline, the
map's maximum (the pointing game's point) and a per-image score (pixel ROC-AUC by default)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

import matplotlib.pyplot as plt

from ..render.style import DEFAULT_CMAP

__all__ = ["localization_examples"]

OUTLINE = "#1b9e3a"  # the mask's outline on images and maps


def _outline(ax, mask: np.ndarray) -> None:
    """Draw the boundary of a bool (H, W) mask on ``ax`` (pixel-centred coordinates, as imshow uses)."""
    if mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors=OUTLINE, linewidths=0.9)


def _draw_map(ax, sal: np.ndarray, mask: np.ndarray, title: str) -> None:
    """A signed map on a diverging scale centred at 0 (its own max |value|), the outline and its maximum."""
    lim = float(np.abs(sal).max()) or 1.0
    ax.imshow(sal, cmap=DEFAULT_CMAP, vmin=-lim, vmax=lim)
    _outline(ax, mask)
    r, c = np.unravel_index(int(np.argmax(sal)), sal.shape)
    ax.plot(c, r, marker="+", color="black", markersize=7, markeredgewidth=1.4)
    ax.set_title(title, fontsize=7)


def localization_examples(images: np.ndarray, masks: np.ndarray, maps: Dict[str, np.ndarray],
                          scores: Optional[Dict[str, Sequence[float]]] = None,
                          row_labels: Optional[Sequence[str]] = None, score_label: str = "AUC"):
    """One row per image: the image with its mask outline, then each map with the outline and its maximum (+).

    Args:
        images: (K, H, W) greyscale images in [0, 1].
        masks: (K, H, W) bool object masks.
        maps: column name -> (K, H, W) maps (signed; shown on a diverging scale, each panel its own max |value|).
        scores: column name -> (K,) per-image scores shown in the panel titles as ``score_label=value``
            (None/NaN: "-"), e.g. the pixel ROC-AUC of the map, mask against background.
        row_labels: text under each row's image (e.g. true and predicted class).
        score_label: the score's short name in the titles; ``"AUC"`` (default) also sets the figure's legend.
    Returns:
        A matplotlib Figure (save with :func:`gatta_viz.analysis.figures.save_figure`).
    """
    k = len(images)
    ncols = 1 + len(maps)
    fig, axes = plt.subplots(k, ncols, figsize=(1.3 * ncols, 1.4 * k + 0.3), squeeze=False)
    for i in range(k):
        ax = axes[i, 0]
        ax.imshow(np.clip(images[i], 0, 1), cmap="gray", vmin=0, vmax=1)
        _outline(ax, masks[i])
        ax.set_title("image + mask" if i == 0 else "", fontsize=7)
        if row_labels is not None:
            ax.set_xlabel(row_labels[i], fontsize=6)
        for j, (name, m) in enumerate(maps.items(), start=1):
            v = None if scores is None else scores[name][i]
            score = "-" if v is None or not np.isfinite(v) else f"{score_label}={v:.2f}"
            _draw_map(axes[i, j], np.asarray(m[i], dtype=np.float64), masks[i], f"{name}\n{score}")
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    what = ("AUC: pixel ROC-AUC of the map, garment vs background (0.5 = chance; ranks only)" if score_label == "AUC"
            else score_label)
    fig.suptitle(f"green: garment mask; +: map maximum; {what}", fontsize=7)
    fig.tight_layout()
    return fig
