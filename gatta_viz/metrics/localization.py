"""Localization of saliency maps against object masks: energy-based pointing game and pointing game.

Energy in mask (the energy-based pointing game of Wang et al. 2020, "Score-CAM"): the share of a map's
positive energy that falls inside the object's mask, ``sum(max(s, 0) * mask) / sum(max(s, 0))``. Only the
positive part counts (for a gain map: where pass 2 boosts; for signed Grad-CAM: the ReLU'd map of the
Grad-CAM paper; for integrated gradients: the evidence for the class). A uniform random map scores the mask's
share of the image on average (:func:`mask_share`), so report energy beside it.

Pointing game (Zhang et al. 2018): a hit when the map's maximum lies in the mask, optionally dilated by a
tolerance. Ties follow Quantus 0.6.0's ``PointingGame``: every pixel equal to the maximum is checked, and any
one in the mask is a hit (so a constant map hits whenever the mask is not empty).

Energy rewards a map that is positive on few pixels, whether or not it ranks the object's pixels well, so
three measures that depend only on a map's *ranking* of pixels come first (none can be won by being sparse):

- :func:`roc_auc_in_mask`: pixel ROC-AUC of mask against background, by ranks (Mann-Whitney U with mid-ranks:
  a tie between a mask and a background pixel counts one half; the same as scikit-learn's ``roc_auc_score``
  and Quantus 0.6.0's ``AUC``);
- :func:`average_precision_in_mask`: average precision of the same ranking (tied values enter together at
  one threshold, as scikit-learn's ``average_precision_score`` does);
- :func:`topk_in_mask`: the share of the map's k highest pixels that lie in the mask, k = the mask's area by
  default (sparsity-matched energy: every map spends exactly k pixels; Quantus 0.6.0's
  ``RelevanceRankAccuracy``, and ``TopKIntersection`` for a fixed k). Pixels tied at the k-th value share the
  places left pro rata (the expected value over random tie-breaks; Quantus breaks ties by sort order).

Reference maps: :func:`random_maps` (plain uniform noise), :func:`centre_prior` (a Gaussian at the image
centre, the "objects tend to be central" guess) and the strongest image-independent guesses fitted on
training masks (:func:`fit_priors`: the mean training mask, and the centre prior with its width chosen per
measure). :func:`gatta_viz.metrics.localization_report.localization_report` scores model maps (gain maps,
Grad-CAM, integrated gradients, ... via :func:`gatta_viz.metrics.faithfulness.explain_func`) and the reference
maps on a data set with masks (``fmnist-clutter``, or the two-garment scenes, where the mask is the union of
both garments), with paired differences over the same images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["energy_in_mask", "pointing_hit", "roc_auc_in_mask", "average_precision_in_mask", "topk_in_mask",
           "centre_prior", "random_maps", "mask_share", "Prior", "fit_priors", "region_gain", "REFERENCES",
           "GATTA_METHODS", "MEASURES", "SIGMA_GRID"]

REFERENCES = ("random", "centre", "mean_mask", "gradcam")  # maps every other map is compared with (paired)
PRIORS = ("centre", "mean_mask")  # image-independent maps (the same for every image)
GATTA_METHODS = ("gain", "agreement", "total_gain")  # maps only a GAttA model has
MEASURES = ("auc", "topk", "ap", "energy", "pointing")  # in the order reports show them; the first three rank
SIGMA_GRID = (0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 48)  # centre-prior widths (px) the fit chooses from


def _as_maps(a, name: str, dtype=np.float64) -> np.ndarray:
    """``a`` as an (N, H, W) array; an (N, 1, H, W) array loses its channel axis.

    Raises:
        ValueError: any other number of dimensions.
    """
    a = np.asarray(a.detach().cpu() if torch.is_tensor(a) else a)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W) or (N, 1, H, W), got shape {a.shape}")
    return a.astype(dtype, copy=False)


def _check_pair(sal, mask) -> Tuple[np.ndarray, np.ndarray]:
    """Maps as float64 (N, H, W) and masks as bool (N, H, W), same shape, maps finite.

    Raises:
        ValueError: shapes differ, or a map holds NaN or infinity.
    """
    s, m = _as_maps(sal, "sal"), _as_maps(mask, "mask", bool)
    if s.shape != m.shape:
        raise ValueError(f"sal {s.shape} and mask {m.shape} must have the same shape")
    if not np.all(np.isfinite(s)):
        raise ValueError("sal contains NaN or infinite values")
    return s, m


def energy_in_mask(sal: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Share of each map's positive energy inside the mask (energy-based pointing game, Wang et al. 2020).

    Args:
        sal: (N, H, W) (or (N, 1, H, W)) maps, finite.
        mask: (N, H, W) bool, the object's pixels.
    Returns:
        (N,) float64 ``sum(max(sal, 0) * mask) / sum(max(sal, 0))`` in [0, 1]; NaN where a map has no
        positive value at all (all zero or all negative: it points nowhere). Invariant to scaling a map by a
        positive constant.
    """
    s, m = _check_pair(sal, mask)
    pos = np.maximum(s, 0).reshape(len(s), -1)
    total = pos.sum(1)
    inside = (pos * m.reshape(len(m), -1)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def _sorted_runs(s: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row of (N, P) ``s`` sorted ascending, with the order and, per sorted position, the first and last
    position of its run of equal values."""
    order = np.argsort(s, axis=1, kind="stable")
    v = np.take_along_axis(s, order, 1)
    p = v.shape[1]
    idx = np.broadcast_to(np.arange(p), v.shape)
    new = np.ones(v.shape, dtype=bool)
    new[:, 1:] = v[:, 1:] != v[:, :-1]
    first = np.maximum.accumulate(np.where(new, idx, 0), axis=1)
    last_flag = np.ones(v.shape, dtype=bool)
    last_flag[:, :-1] = new[:, 1:]
    last = np.minimum.accumulate(np.where(last_flag, idx, p - 1)[:, ::-1], axis=1)[:, ::-1]
    return order, first, last


def roc_auc_in_mask(sal: np.ndarray, mask: np.ndarray, within: Optional[np.ndarray] = None) -> np.ndarray:
    """Pixel ROC-AUC of each map: the chance that a random mask pixel outranks a random background pixel.

    Computed from ranks (Mann-Whitney U): ``(R - n1 (n1 + 1) / 2) / (n1 n0)`` with R the sum of the mask
    pixels' mid-ranks, so a mask pixel tied with a background pixel counts one half (a constant map scores
    0.5). Depends only on the ordering of the map's values (any increasing transform gives the same AUC), so a
    sparse or peaked map has no advantage.

    Args:
        sal: (N, H, W) (or (N, 1, H, W)) maps, finite.
        mask: (N, H, W) bool.
        within: optional (N, H, W) bool: only these pixels take part (the mask's pixels among them against the
            rest of them), e.g. one item's pixels against another item's in a scene.
    Returns:
        (N,) float64 in [0, 1]; NaN where the mask (within ``within``) is empty or covers every pixel taking part.
    Raises:
        ValueError: see :func:`energy_in_mask`.
    """
    s, m = _check_pair(sal, mask)
    s, m = s.reshape(len(s), -1), m.reshape(len(m), -1)
    n_out = np.zeros(len(s))
    if within is not None:
        v = _as_maps(within, "within", bool)
        if v.shape != (len(s),) + tuple(_as_maps(mask, "mask", bool).shape[1:]):
            raise ValueError(f"within {v.shape} must have the mask's shape")
        v = v.reshape(len(v), -1)
        m = m & v
        # pixels left out go below every pixel taking part: each mask pixel then outranks all of them, which
        # is taken off U below
        low = np.where(v, s, np.inf).min(1, keepdims=True)
        s = np.where(v, s, np.where(np.isfinite(low), low, 0.0) - 1.0)
        n_out = (~v).sum(1).astype(np.float64)
    order, first, last = _sorted_runs(s)
    midrank = (first + last) / 2.0 + 1.0  # 1-based mid-rank of every sorted position
    inside = np.take_along_axis(m, order, 1)
    n1 = m.sum(1).astype(np.float64)
    n0 = m.shape[1] - n1 - n_out
    u = (midrank * inside).sum(1) - n1 * (n1 + 1) / 2 - n1 * n_out
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n1 > 0) & (n0 > 0), u / (n1 * n0), np.nan)


def average_precision_in_mask(sal: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average precision of each map's ranking of mask pixels above background pixels.

    ``AP = sum_t (TP_t - TP_{t-1}) / n1 * precision_t`` over the map's distinct values t, highest first (pixels
    with the same value enter together, as in scikit-learn's ``average_precision_score``). A random ranking
    scores about the mask's share of the image.

    Args:
        sal: (N, H, W) (or (N, 1, H, W)) maps, finite.
        mask: (N, H, W) bool.
    Returns:
        (N,) float64 in [0, 1]; NaN where the mask is empty.
    Raises:
        ValueError: see :func:`energy_in_mask`.
    """
    s, m = _check_pair(sal, mask)
    s, m = -s.reshape(len(s), -1), m.reshape(len(m), -1)  # ascending order of -s = descending order of s
    order, first, last = _sorted_runs(s)
    tp = np.cumsum(np.take_along_axis(m, order, 1), axis=1).astype(np.float64)
    pos = np.arange(tp.shape[1])
    is_last = last == pos
    before = np.where(first > 0, np.take_along_axis(tp, np.maximum(first - 1, 0), 1), 0.0)
    gain = np.where(is_last, (tp - before) * tp / (pos + 1), 0.0).sum(1)
    n1 = m.sum(1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n1 > 0, gain / n1, np.nan)


def topk_in_mask(sal: np.ndarray, mask: np.ndarray, k: Optional[int] = None) -> np.ndarray:
    """Share of each map's k highest pixels that lie in the mask (sparsity-matched energy).

    With ``k`` = the mask's area (default) this is the R-precision of the ranking (Quantus 0.6.0's
    ``RelevanceRankAccuracy``): every map spends exactly as many pixels as the object has, so being positive
    on few pixels earns nothing. Pixels tied with the k-th highest value fill the places left pro rata: a
    tie group of t pixels, i of them in the mask, competing for r places adds ``r * i / t`` (the expected
    value over random tie-breaks; a constant map scores the mask's share of the image).

    Args:
        sal: (N, H, W) (or (N, 1, H, W)) maps, finite.
        mask: (N, H, W) bool.
        k: how many pixels (default: each mask's own area; Quantus's ``TopKIntersection`` uses a fixed k).
    Returns:
        (N,) float64 in [0, 1]; NaN where the mask is empty (k = its area) or k is 0.
    Raises:
        ValueError: k not in 1..H*W, or see :func:`energy_in_mask`.
    """
    s, m = _check_pair(sal, mask)
    s, m = s.reshape(len(s), -1), m.reshape(len(m), -1)
    p = s.shape[1]
    if k is None:
        kk = m.sum(1)
    else:
        if isinstance(k, bool) or int(k) != k or not 1 <= k <= p:
            raise ValueError(f"k must be an integer in 1..{p} (pixels per map), got {k!r}")
        kk = np.full(len(s), int(k))
    desc = -np.sort(-s, axis=1)
    t = desc[np.arange(len(s)), np.maximum(kk - 1, 0)][:, None]  # the k-th highest value
    above, tied = s > t, s == t
    n_above = above.sum(1)
    in_above = (above & m).sum(1)
    in_tied, n_tied = (tied & m).sum(1), tied.sum(1)
    hits = in_above + (kk - n_above) * in_tied / np.maximum(n_tied, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(kk > 0, hits / np.maximum(kk, 1), np.nan)


def _dilate(mask: np.ndarray, tolerance: int) -> np.ndarray:
    """Masks grown by ``tolerance`` pixels in the Chebyshev sense (a (2t+1) x (2t+1) square)."""
    if tolerance == 0:
        return mask
    t = torch.from_numpy(mask.astype(np.float32))[:, None]
    return F.max_pool2d(t, 2 * tolerance + 1, stride=1, padding=tolerance)[:, 0].numpy() > 0


def pointing_hit(sal: np.ndarray, mask: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """Pointing game: does each map's maximum lie in the mask?

    Ties as in Quantus 0.6.0's ``PointingGame``: every pixel equal to the map's maximum is checked and the map
    hits if any of them is in the (dilated) mask; so a constant map hits whenever its mask is not empty.

    Args:
        sal: (N, H, W) (or (N, 1, H, W)) maps, finite.
        mask: (N, H, W) bool.
        tolerance: grow the mask by this many pixels first (Chebyshev distance: a maximum at most
            ``tolerance`` pixels away from the mask along rows and columns counts).
    Returns:
        (N,) bool; False for an empty mask (Quantus gives NaN there).
    Raises:
        ValueError: negative tolerance, or see :func:`energy_in_mask`.
    """
    if isinstance(tolerance, bool) or int(tolerance) != tolerance or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative integer, got {tolerance!r}")
    s, m = _check_pair(sal, mask)
    flat = s.reshape(len(s), -1)
    top = flat == flat.max(1, keepdims=True)
    return (top & _dilate(m, int(tolerance)).reshape(len(m), -1)).any(1)


def centre_prior(n: int, h: int, w: int, sigma: Optional[float] = None) -> np.ndarray:
    """A Gaussian centred on the image centre ((h - 1) / 2, (w - 1) / 2), the same for every image.

    Args:
        n, h, w: number of maps and their size.
        sigma: standard deviation in pixels (default ``min(h, w) / 4``: 12 px on a 48x48 canvas).
    Returns:
        (n, h, w) float32, peak 1 at the centre (the 4 central pixels tie when h and w are even).
    """
    sigma = min(h, w) / 4 if sigma is None else float(sigma)
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    yy = (np.arange(h) - (h - 1) / 2)[:, None]
    xx = (np.arange(w) - (w - 1) / 2)[None, :]
    g = np.exp(-(yy ** 2 + xx ** 2) / (2 * sigma ** 2)).astype(np.float32)
    return np.broadcast_to(g, (n, h, w)).copy()


@dataclass
class Prior:
    """An image-independent reference map (the same for every image), fitted on training masks.

    Attributes:
        name: ``"centre"`` or ``"mean_mask"``.
        rank_map: (H, W) float64 map whose *ranking* the rank measures (ROC-AUC, AP, top-k, pointing) score.
        energy_map: (H, W) non-negative float64 map whose energy in the mask is scored.
        note: how it was made (for reports), e.g. the fitted width.
        fit: the fit's training scores, JSON-able.
    """

    name: str
    rank_map: np.ndarray
    energy_map: np.ndarray
    note: str = ""
    fit: Dict[str, Any] = field(default_factory=dict)


def _centre_sq_distance(h: int, w: int) -> np.ndarray:
    """(h, w) float64 squared distance of each pixel centre to the image centre."""
    yy = (np.arange(h) - (h - 1) / 2)[:, None]
    xx = (np.arange(w) - (w - 1) / 2)[None, :]
    return yy ** 2 + xx ** 2


def fit_priors(masks: np.ndarray, sigmas: Sequence[float] = SIGMA_GRID) -> Dict[str, Prior]:
    """The strongest image-independent guesses, fitted on training masks only.

    ``mean_mask``: the mean of the training masks (where objects usually are), for every measure.
    ``centre``: a Gaussian at the image centre. Every rank measure (ROC-AUC, AP, top-k share, pointing) ranks the
    pixels by their distance to the centre whatever the width, so its rank map is minus the squared distance
    (exact, no underflow far from the centre); the energy measure is the only one that depends on the width,
    which is chosen from ``sigmas`` to maximise the mean energy in the training masks (the first of equal
    maxima). The training means of every measure, per width for energy, are kept in ``fit``.

    Args:
        masks: (N, H, W) bool training masks.
        sigmas: candidate widths in pixels (positive).
    Returns:
        ``{"centre": Prior, "mean_mask": Prior}``.
    Raises:
        ValueError: no masks, or a width <= 0.
    """
    m = _as_maps(masks, "masks", bool)
    if len(m) == 0:
        raise ValueError("fit_priors needs at least one training mask")
    if not sigmas or min(sigmas) <= 0:
        raise ValueError(f"sigmas must be positive widths in pixels, got {list(sigmas)}")
    n, h, w = m.shape
    flat = m.reshape(n, -1).astype(np.float64)
    d2 = _centre_sq_distance(h, w)
    energy = {}
    for sg in sigmas:
        g = np.exp(-d2 / (2.0 * float(sg) ** 2)).ravel()
        energy[float(sg)] = float((flat @ g).mean() / g.sum())
    best = max(energy, key=lambda k: (energy[k], -k))
    mean_mask = m.mean(0, dtype=np.float64)
    centre = Prior("centre", -d2, np.exp(-d2 / (2.0 * best ** 2)),
                   f"Gaussian at the centre, sigma {best:g} px for energy (fitted on {n} training masks); "
                   "rank measures: distance to the centre (any width)",
                   {"sigma_energy": best, "energy_by_sigma": energy, "n_train": n, "sigmas": [float(v) for v in sigmas]})
    prior_mean = Prior("mean_mask", mean_mask, mean_mask, f"mean of {n} training masks", {"n_train": n})
    for pr in (centre, prior_mean):
        rank, en = np.broadcast_to(pr.rank_map, m.shape), np.broadcast_to(pr.energy_map, m.shape)
        pr.fit["train"] = {"auc": float(np.nanmean(roc_auc_in_mask(rank, m))),
                           "ap": float(np.nanmean(average_precision_in_mask(rank, m))),
                           "topk": float(np.nanmean(topk_in_mask(rank, m))),
                           "pointing": float(pointing_hit(rank, m).mean()),
                           "energy": float(np.nanmean(energy_in_mask(en, m)))}
    return {"centre": centre, "mean_mask": prior_mean}


def region_gain(sal: np.ndarray, mask: np.ndarray) -> Dict[str, np.ndarray]:
    """Where a signed map (e.g. one layer's gain alpha x agreement) is positive or negative, on and off the object.

    Args:
        sal: (N, H, W) (or (N, 1, H, W)) signed maps, finite.
        mask: (N, H, W) bool.
    Returns:
        per image (N,) float64 arrays: ``"mean_in"`` / ``"mean_out"`` (mean value on mask / background pixels),
        ``"pos_in"`` / ``"pos_out"`` (share of mask / background pixels with a value > 0); NaN where the region
        is empty.
    """
    s, m = _check_pair(sal, mask)
    s, m = s.reshape(len(s), -1), m.reshape(len(m), -1)
    n_in, n_out = m.sum(1), (~m).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        div = lambda a, b: np.where(b > 0, a / np.maximum(b, 1), np.nan)  # noqa: E731
        return {"mean_in": div((s * m).sum(1), n_in), "mean_out": div((s * ~m).sum(1), n_out),
                "pos_in": div(((s > 0) & m).sum(1), n_in), "pos_out": div(((s > 0) & ~m).sum(1), n_out)}


def random_maps(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Plain (unsmoothed) uniform noise in [0, 1), independent per pixel: its expected energy in a mask is
    the mask's share of the image.

    Returns:
        (n, h, w) float32, the same for the same ``seed``.
    """
    return np.random.default_rng(seed).random((n, h, w)).astype(np.float32)


def mask_share(mask: np.ndarray) -> np.ndarray:
    """(N,) fraction of the image each mask covers (= the expected energy in mask of a uniform random map)."""
    m = _as_maps(mask, "mask", bool)
    return m.reshape(len(m), -1).mean(1)
