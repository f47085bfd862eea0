"""Figures for two-garment scenes: cue success by overlap, and uncued vs cued gain maps with item outlines."""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..render.outlines import OUTLINE_COLOURS
from ..render.save import save_figure

__all__ = ["plot_cue_success", "plot_cue_examples", "contour_items"]

BINS = ("none", "low", "mid", "high")


def contour_items(ax, masks: np.ndarray, names: Sequence[str] = (), colours: Sequence[str] = OUTLINE_COLOURS,
                  linewidth: float = 1.0) -> None:
    """Contour each item's mask (K, H, W) on ``ax`` in its colour, with its name in the legend if given."""
    for k, m in enumerate(masks):
        if m.any():
            ax.contour(m.astype(float), levels=[0.5], colors=[colours[k % len(colours)]], linewidths=linewidth)
        if k < len(names):
            ax.plot([], [], color=colours[k % len(colours)], label=names[k])


def plot_cue_success(report: Dict[str, Any], path: str) -> str:
    """Bars per overlap bin: how often the cued item gets more gain-map energy than the other, for the steering
    cue, the class-mean cue and a random query, beside class-specific Grad-CAM, per seed.

    Args:
        report: the dict written by ``docs/scenes_report.py`` (``seeds[i]["maps_and_cues"]``).
        path: output file.
    Returns:
        The path written.
    """
    seeds = report["seeds"]
    fig = Figure(figsize=(7.2, 2.9), layout="constrained")
    axes = fig.subplots(1, len(seeds), sharey=True, squeeze=False)[0]
    series = (("steering cue", lambda s: s["steering"]["cue"]["gain"]["success"], "#b2182b"),
              ("class-mean cue", lambda s: s["maps_and_cues"]["cue"]["gain"]["success"], "#f4a582"),
              ("Grad-CAM of the class", lambda s: s["maps_and_cues"]["cue"]["gradcam"]["success"], "#555555"),
              ("random query", lambda s: s["maps_and_cues"]["cue"]["gain"]["random_query_success"], "#9ecae1"))
    x = np.arange(len(BINS))
    w = 0.2
    for ax, s in zip(axes, seeds):
        rep = s["maps_and_cues"]
        for j, (label, get, colour) in enumerate(series):
            d = get(s)
            mean = [100 * d[b]["mean"] for b in BINS]
            se = [100 * (d[b]["se"] if np.isfinite(d[b]["se"]) else 0) for b in BINS]
            ax.bar(x + (j - 1.5) * w, mean, w, yerr=se, color=colour, label=label, capsize=1.5)
        ax.axhline(90, color="k", lw=0.8, ls="--")
        ax.axhline(50, color="k", lw=0.6, ls=":")
        ax.set_xticks(x, [f"{b}\n(n={rep['bins'][b]})" for b in BINS], fontsize=7)
        ax.set_title(f"seed {seeds.index(s)}: cued item gets more energy", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(0, 100)
        ax.set_xlabel("overlap of the two garments (dashed: 90% target, dotted: chance)", fontsize=7)
    axes[0].set_ylabel("% of (scene, item) cases", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncol=4, frameon=False)

    return save_figure(fig, path, dpi=200)


def plot_cue_examples(ex: Dict[str, Any], path: str) -> str:
    """Rows of scenes: the scene with its items outlined, the uncued gain map, and the gain map with each item's
    class cued (one colour scale per row), titled with each item's share of the positive energy.

    Args:
        ex: :func:`gatta_viz.metrics.cueing.cue_examples` output.
        path: output file.
    Returns:
        The path written.
    """
    images, masks, names, maps, shares = ex["images"], ex["masks"], ex["names"], ex["maps"], ex["shares"]
    n = len(images)
    fig = Figure(figsize=(7.2, 1.95 * n), layout="constrained")
    axes = fig.subplots(n, 4, squeeze=False)
    for r in range(n):
        ax = axes[r, 0]
        ax.imshow(images[r], cmap="gray", vmin=0, vmax=255)
        contour_items(ax, masks[r], names[r])
        ax.legend(fontsize=6, loc="lower left", framealpha=0.6, handlelength=1)
        ax.set_title("scene" if r == 0 else "", fontsize=8)
        lim = max(float(np.abs(m[r]).max()) for m in maps) or 1.0
        titles = ["uncued (pooled query)", f"cue: {names[r][0]}", f"cue: {names[r][1]}"]
        for c, m in enumerate(maps):
            ax = axes[r, c + 1]
            ax.imshow(m[r], cmap="RdBu_r", vmin=-lim, vmax=lim)
            contour_items(ax, masks[r])
            e = shares[c][r]
            energy = (f"energy on items {e[0]:.2f} / {e[1]:.2f}" if np.isfinite(e).all()
                      else "no positive gain anywhere")
            ax.set_title(f"{titles[c]}\n{energy}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("gain map (alpha x agreement; red = boosted), positive energy share on item 1 / item 2", fontsize=8)
    return save_figure(fig, path, dpi=200)
