"""Figures of the model-parameter randomisation checks (:mod:`gatta_viz.metrics.sanity`): the maps of the trained
and of every randomised model side by side, and mean rank correlation with the trained map per step."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

import matplotlib.pyplot as plt

from ..render.save import save_figure
from ..render.style import DEFAULT_CMAP

__all__ = ["step_label", "plot_randomization_maps", "plot_randomization_curves"]


def step_label(step: str) -> str:
    """Short column / tick label of a step: ``"cascade:layer3"`` -> ``"rand. ≥ layer3"`` (layer3 and every block above
    it re-initialised), ``"independent:layer2"`` -> ``"only layer2"``, others unchanged."""
    if step.startswith("independent:"):
        return f"only {step.split(':', 1)[1]}"
    return f"rand. ≥ {step.split(':', 1)[1]}" if step.startswith("cascade:") else step


def plot_randomization_maps(images: np.ndarray, maps: Mapping[str, Mapping[str, np.ndarray]], path: str,
                            steps: Optional[Sequence[str]] = None,
                            similarity: Optional[Mapping[str, Mapping[str, Sequence[Optional[float]]]]] = None,
                            cmap: str = DEFAULT_CMAP, title: str = "") -> str:
    """One row per (method, image), one column per step; each map on a diverging scale of its own max |value|.

    Args:
        images: (K, H, W) inputs for display, in [0, 1] (first column).
        maps: method -> step -> (K, H, W) maps (e.g. ``randomization_report(..., keep_maps=K)["maps"]``).
        path: .png/.svg/.pdf.
        steps: columns in order (default: the first method's steps).
        similarity: method -> step -> per-image Spearman with the trained map, written under each panel.
        cmap: diverging colormap centred at 0.
        title: figure title.
    Returns:
        ``path``.
    """
    methods = list(maps)
    steps = list(steps) if steps is not None else list(maps[methods[0]])
    k = int(np.asarray(images).shape[0])
    fig, axes = plt.subplots(len(methods) * k, len(steps) + 1, figsize=(1.25 * (len(steps) + 1), 1.3 * len(methods) * k),
                             squeeze=False)
    for mi, meth in enumerate(methods):
        for i in range(k):
            r = mi * k + i
            ax = axes[r, 0]
            ax.imshow(np.clip(images[i], 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_ylabel(f"{meth}\nimage {i}", fontsize=7)
            for c, step in enumerate(steps, start=1):
                ax = axes[r, c]
                m = np.asarray(maps[meth][step][i], dtype=np.float32)
                s = float(np.abs(m).max()) or 1.0
                ax.imshow(m, cmap=cmap, vmin=-s, vmax=s)
                if r == 0:
                    ax.set_title(step_label(step), fontsize=7)
                if similarity is not None and step != "trained":
                    rho = similarity[meth][step][i]
                    ax.set_xlabel("ρ = n/a" if rho is None else f"ρ = {rho:.2f}", fontsize=6, labelpad=1)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_title("input", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_randomization_curves(rep: Dict[str, Any], path: str, key: str = "spearman") -> str:
    """Mean rank correlation with the trained map (± s.e.) vs cascade step, one line per method; the one-step
    randomisations (``gatta``, ``backbone``, ``untrained``, ``independent:*``) as separate points to the right.

    Args:
        rep: a :func:`gatta_viz.metrics.sanity.randomization_report`.
        path: .png/.svg/.pdf.
        key: ``"spearman"``, ``"spearman_abs"`` or ``"pearson_abs"``.
    Returns:
        ``path``.
    """
    names = [s["name"] for s in rep["steps"]]
    cascade = [n for n in names if n == "trained" or n.startswith("cascade:")]
    single = [n for n in names if n not in cascade]
    xs = list(range(len(cascade))) + [len(cascade) + 0.5 + j for j in range(len(single))]
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(xs), 3.4))
    for j, meth in enumerate(rep["methods"]):
        res = rep["results"][meth]

        def pts(steps):
            m = np.array([np.nan if res[s][key] is None else res[s][key] for s in steps], dtype=float)
            e = np.array([np.nan if res[s][f"{key}_se"] is None else res[s][f"{key}_se"] for s in steps], dtype=float)
            return m, e

        m, e = pts(cascade)
        line = ax.errorbar(xs[: len(cascade)], m, yerr=e, marker="o", ms=4, capsize=2, label=meth)
        if single:
            m, e = pts(single)
            ax.errorbar(np.array(xs[len(cascade):]) + 0.08 * (j - (len(rep["methods"]) - 1) / 2), m, yerr=e,
                        marker="s", ms=4, capsize=2, ls="none", color=line[0].get_color())
    ax.axhline(0, color="0.5", lw=0.8)
    if single:
        ax.axvline(len(cascade) - 0.25, color="0.7", lw=0.8, ls=":")
    ax.set_xticks(xs)
    ax.set_xticklabels([step_label(n) for n in cascade + single], rotation=35, ha="right", fontsize=8)
    ax.set_ylim(min(-0.25, ax.get_ylim()[0]), 1.05)
    label = {"spearman": "Spearman ρ", "spearman_abs": "Spearman ρ of |map|", "pearson_abs": "Pearson r of |map|"}[key]
    ax.set_ylabel(f"{label} with trained map")
    ax.set_title(f"Model-parameter randomisation ({rep['n']} images; cascade from the top)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
