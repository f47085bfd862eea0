"""Plots of measurements: noise-robustness curves, deletion/insertion curves, grids of perturbed images."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

import matplotlib.pyplot as plt

from ..render.save import save_figure

__all__ = ["plot_noise", "plot_curves", "plot_image_grid"]


def plot_noise(results: List[Dict[str, Any]], path: str) -> str:
    """Accuracy vs noise sigma, one line per model; saved to ``path`` (PNG/SVG)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in results:
        s = [float(k) for k in r["accuracy"]]
        ax.plot(s, [100 * v for v in r["accuracy"].values()], marker="o", label=r["model"])
    ax.set_xlabel("additive Gaussian noise sigma (pixels in [0, 1])")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Noise robustness ({results[0]['n']} test images)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(rep: Dict[str, Any], path: str) -> str:
    """Mean deletion and insertion curves of every method, saved to ``path``."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    xs = np.linspace(0, 1, rep["steps"] + 1)
    patch = rep.get("patch", 1)
    unit = "pixels" if patch == 1 else f"{patch}x{patch} regions"
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for m, r in rep["methods"].items():
            ax.plot(xs, r[f"{kind}_curve"], label=f"{m} (AUC {r[f'{kind}_auc']:.3f})")
        ax.set_xlabel(f"fraction of {unit} {'deleted' if kind == 'deletion' else 'inserted'}")
        ax.set_ylabel("p(predicted class)")
        ax.set_title(f"{kind} ({rep['n']} images)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_image_grid(rows: Dict[str, Sequence[Tuple[str, np.ndarray]]], path: str) -> str:
    """A grid of greyscale or RGB images in [0, 1]: one row per key, each cell ``(title, image)``; saved to ``path``.

    Args:
        rows: row label -> list of (title, (H, W) or (H, W, 3) image in [0, 1]); every row equally long.
        path: .png/.svg/.pdf.
    Returns:
        ``path``.
    """
    ncols = max(len(r) for r in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.45 * ncols, 1.55 * len(rows)), squeeze=False)
    for r, (label, cells) in enumerate(rows.items()):
        for c, (title, img) in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(title, fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
