"""2-D embedding of the global query q_avg over a dataset (the paper's Fig. 2b)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..data.datasets import ImageData
from ..core.hooks import temporarily_eval
from ..compute.dataset_views import pca_2d  # the same PCA the map store's embedding uses

__all__ = ["QEmbedding", "collect_q_avg", "pca_2d", "q_avg_embedding", "embedding_figure"]


@dataclass
class QEmbedding:
    """q_avg projected to 2-D.

    Attributes:
        coords: (N, 2) PCA coordinates.
        labels: (N,) classes.
        explained: fraction of q_avg's variance on each of the 2 axes.
        q_avg: (N, d) the vectors themselves.
    """

    coords: np.ndarray
    labels: np.ndarray
    explained: np.ndarray
    q_avg: np.ndarray


@torch.no_grad()
def collect_q_avg(model, data: ImageData, n: Optional[int] = None, batch_size: int = 500, progress: bool = True) -> np.ndarray:
    """q_avg (N, d) for the first ``n`` images of ``data`` (model's current train/eval mode is kept).

    Args:
        model: a GAttA model.
        data: an in-memory data set (``gv.load_fashion_mnist("test")``...).
        n: how many images (None: all).
        batch_size: images per trace.
        progress: show a tqdm bar.
    Returns:
        (N, d) float32 array, one pooled query per image.
    Raises:
        ValueError: a model that is not GAttA.
    """
    if not hasattr(model, "trace"):
        raise ValueError("q_avg needs a GAttA model (one with .trace)")
    d = data if n is None else data.subset(n)
    out = []
    with temporarily_eval(model):
        for i in tqdm(range(0, len(d), batch_size), desc="q_avg", disable=not progress, leave=False):
            out.append(model.trace(d.normalize(d.images[i : i + batch_size])).q_avg.cpu())
    return torch.cat(out).numpy()


def q_avg_embedding(model, data: ImageData, n: Optional[int] = 2000, batch_size: int = 500) -> QEmbedding:
    """q_avg of ``n`` images projected on its first two principal components (the paper's Fig. 2b).

    Args:
        model: a GAttA model.
        data: an in-memory data set.
        n: how many images (None: all).
        batch_size: images per trace.
    Returns:
        a :class:`QEmbedding` (coordinates, labels, explained variance, the vectors).
    Raises:
        ValueError: a model that is not GAttA.
    """
    q = collect_q_avg(model, data, n, batch_size)
    coords, explained = pca_2d(q)
    labels = (data.labels if n is None else data.labels[:n]).numpy()
    return QEmbedding(coords, labels, explained, q)


def embedding_figure(emb: QEmbedding, classes: Sequence[str]):
    """Scatter plot of the embedding coloured by class.

    Args:
        emb: from :func:`q_avg_embedding`.
        classes: class names, indexed by label.
    Returns:
        a matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for c, name in enumerate(classes):
        m = emb.labels == c
        ax.scatter(emb.coords[m, 0], emb.coords[m, 1], s=5, alpha=0.6, color=cmap(c % cmap.N), label=name)
    ax.set_xlabel(f"PC1 ({100 * emb.explained[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * emb.explained[1]:.0f}%)")
    ax.set_title(f"global query q_avg, {len(emb.labels)} images")
    ax.legend(markerscale=3, fontsize=7, loc="best")
    fig.tight_layout()
    return fig
