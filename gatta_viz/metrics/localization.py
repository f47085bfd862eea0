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
measure). :func:`localization_report` scores model maps (gain maps,
Grad-CAM, integrated gradients, ... via :func:`gatta_viz.metrics.faithfulness.explain_func`) and the reference
maps on a data set with masks (``fmnist-clutter``, or the two-garment scenes, where the mask is the union of
both garments), with paired differences over the same images.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..core.hooks import temporarily_eval
from .faithfulness import explain_func, layer_saliencies, parse_method
from .stats import mean_se

__all__ = ["energy_in_mask", "pointing_hit", "roc_auc_in_mask", "average_precision_in_mask", "topk_in_mask",
           "centre_prior", "random_maps", "mask_share", "Prior", "fit_priors", "region_gain", "localization_report",
           "report_text", "REFERENCES", "GATTA_METHODS", "MEASURES", "SIGMA_GRID"]

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


def _json_list(v: np.ndarray) -> List[Optional[float]]:
    """A float array as a list with NaN as None (valid JSON)."""
    return [None if not np.isfinite(x) else float(x) for x in np.asarray(v, dtype=np.float64)]


def _last_conv_stage(net: torch.nn.Module) -> str:
    """The module Grad-CAM uses: the last GAttA conv layer, or for a plain ResNet-like model its last ``layerK``.

    Raises:
        ValueError: neither is found.
    """
    kinds = getattr(net, "layer_kinds", None)
    if kinds:
        return [n for n, k in kinds.items() if k == "conv"][-1]
    stages = sorted((int(n[5:]), n) for n, _ in net.named_children() if n.startswith("layer") and n[5:].isdigit())
    if not stages:
        raise ValueError(f"cannot find the last conv stage of {type(net).__name__}: no layer1..layerN modules")
    return stages[-1][1]


def _gradcam_layer(net: torch.nn.Module) -> Optional[str]:
    """:func:`_last_conv_stage`, or None when the model has none (then only ``gradcam:LAYER`` works)."""
    try:
        return _last_conv_stage(net)
    except ValueError:
        return None


def _expand_methods(methods: Sequence[str], net: torch.nn.Module, per_layer: bool) -> Tuple[List[str], List[str]]:
    """Map names to compute and those skipped (GAttA maps of a plain model); ``gain:layerK`` per conv layer
    follow ``gain`` when ``per_layer`` and the model is GAttA."""
    gatta = hasattr(net, "trace")
    convs = [n for n, k in getattr(net, "layer_kinds", {}).items() if k == "conv"]
    names: List[str] = []
    for m in methods:
        names.append(m)
        if m == "gain" and per_layer and gatta:
            names += [f"gain:{c}" for c in convs if f"gain:{c}" not in methods]
    keep, skipped = [], []
    for m in dict.fromkeys(names):
        if m not in ("random",) + PRIORS:
            method, _ = parse_method(m)
            if method in GATTA_METHODS and not gatta:
                skipped.append(m)
                continue
        keep.append(m)
    return keep, skipped


def _default_centre(h: int, w: int) -> Prior:
    """The unfitted centre prior (sigma = min(h, w) / 4), used when no fitted priors are given."""
    g = centre_prior(1, h, w)[0].astype(np.float64)
    return Prior("centre", -_centre_sq_distance(h, w), g, f"Gaussian at the centre, sigma {min(h, w) / 4:g} px (not fitted)",
                 {"sigma_energy": min(h, w) / 4})


def _maps(net: torch.nn.Module, name: str, x: torch.Tensor, pred: torch.Tensor, batch_size: int,
          seed: int, priors: Dict[str, Prior]) -> Tuple[np.ndarray, np.ndarray]:
    """(N, H, W) maps of one method over all of ``x`` for the rank measures and for energy (the same array
    except for the centre prior), computed in batches (references at once)."""
    n, h, w = x.shape[0], x.shape[2], x.shape[3]
    if name in PRIORS:
        pr = priors[name]
        if pr.rank_map.shape != (h, w):
            raise ValueError(f"prior {name!r} is {pr.rank_map.shape}, the images are {(h, w)}")
        return np.broadcast_to(pr.rank_map, (n, h, w)), np.broadcast_to(pr.energy_map, (n, h, w))
    if name == "random":
        r = random_maps(n, h, w, seed)
        return r, r
    method, layer = parse_method(name)
    if method == "gradcam" and layer is None:
        layer = _last_conv_stage(net)
    out = []
    for i in tqdm(range(0, n, batch_size), desc=f"localization {name}", leave=False):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Internal batch size cannot be less")
            out.append(explain_func(net, x[i: i + batch_size], pred[i: i + batch_size], method=method,
                                    layer=layer, seed=seed + i)[:, 0])
    m = np.concatenate(out)
    return m, m


def _masks_and_correct(data, pred: np.ndarray) -> Tuple[np.ndarray, np.ndarray, str]:
    """Bool (N, H, W) masks, whether each prediction is right, and what the mask is.

    A one-object set (``ClutterData``: masks (N, H, W), labels (N,)) uses its masks; a scene set (``SceneData``:
    masks (N, K, H, W), labels (N, K)) uses the union of the items' masks, and a prediction is right when it
    is one of the items' classes.
    """
    masks = np.asarray(data.masks, dtype=bool)
    labels = np.asarray(data.labels)
    if masks.ndim == 4:
        return masks.any(1), (labels == pred[:, None]).any(1), "union of the items' masks"
    return masks, labels == pred, "the object's mask"


def _paired(a: np.ndarray, b: np.ndarray) -> Dict[str, Any]:
    """Paired difference a - b over images where both are finite: mean, se, n and the 95% interval."""
    m, se, k = mean_se(a - b)
    return {"mean": m, "se": se, "n": k, "ci95": [m - 1.96 * se, m + 1.96 * se]}


def _tests(entry: Dict[str, Any]) -> Dict[str, Any]:
    """The fixed rule's tests for one map (see :func:`localization_report`), from its paired differences."""
    d = entry["minus"]
    out: Dict[str, Any] = {}
    for measure in ("auc", "topk"):
        for ref in ("random", "mean_mask", "centre"):
            p = d[measure].get(ref)
            out[f"{measure}_beats_{ref}"] = None if p is None else bool(p["ci95"][0] > 0)
    beats = list(out.values())
    # fails as soon as one test fails; passes only when every reference was run and beaten; else unknown
    out["beyond_priors"] = False if False in beats else (True if None not in beats else None)
    g = d["auc"].get("gradcam")
    out["auc_as_good_as_gradcam"] = None if g is None else bool(g["ci95"][1] >= 0)
    return out


def _verdict(rep: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The fixed rule applied to the "gain" map (None unless gain, random, both priors and gradcam were run)."""
    ms = rep["methods"]
    if not all(k in ms for k in ("gain", "random", "centre", "mean_mask", "gradcam")):
        return None
    d, t = ms["gain"]["minus"], ms["gain"]["tests"]
    return {"rule": "gain localizes beyond the image-independent guesses if its ROC-AUC and its top-k share both "
                    "beat random, the mean training mask and the centre prior (paired mean - 1.96 se > 0); it is "
                    "as good as Grad-CAM if its ROC-AUC difference from Grad-CAM has mean + 1.96 se >= 0",
            "lower95": {f"{m}_minus_{r}": d[m][r]["ci95"][0] for m in ("auc", "topk") for r in ("random", "mean_mask", "centre")},
            "auc_minus_gradcam_upper95": d["auc"]["gradcam"]["ci95"][1],
            "beyond_priors": bool(t["beyond_priors"]), "as_good_as_gradcam": bool(t["auc_as_good_as_gradcam"]),
            "passes": bool(t["beyond_priors"] and t["auc_as_good_as_gradcam"])}


def _energy_rule(rep: Dict[str, Any], margin: float = 0.10) -> Optional[Dict[str, Any]]:
    """The first rule, on energy of the positive part (kept for comparison; no longer the verdict): the gain
    map's energy beats random and the centre prior by > ``margin`` (lower 95% bounds) and Grad-CAM's upper 95%
    bound of the difference is >= 0."""
    ms = rep["methods"]
    if not all(k in ms for k in ("gain", "random", "centre", "gradcam")):
        return None
    d = ms["gain"]["minus"]["energy"]
    beats = {r: d[r]["ci95"][0] > margin for r in ("random", "centre")}
    as_good = d["gradcam"]["ci95"][1] >= 0
    return {"rule": f"energy: (gain - random) and (gain - centre) have mean - 1.96 se > {margin:.2f} and "
                    "(gain - gradcam) has mean + 1.96 se >= 0",
            "gain_minus_random_lower95": d["random"]["ci95"][0], "gain_minus_centre_lower95": d["centre"]["ci95"][0],
            "gain_minus_gradcam_upper95": d["gradcam"]["ci95"][1], "passes": bool(beats["random"] and beats["centre"] and as_good)}


def _method_entry(scores: Dict[str, np.ndarray], n_no_positive: int, share_positive: float,
                  seconds: float) -> Dict[str, Any]:
    """Summary (mean, se) and per-image values of one map's scores."""
    out: Dict[str, Any] = {"n_no_positive": n_no_positive, "share_positive": share_positive, "seconds": seconds}
    for k, v in scores.items():
        m, se, n = mean_se(v.astype(np.float64))
        out.update({k: m, f"{k}_se": se, f"{k}_n": n})
        out[f"{k}_per_image"] = [bool(b) for b in v] if k == "pointing" else _json_list(v)
    out["hit_per_image"] = out.pop("pointing_per_image")
    return out


@torch.no_grad()
def _predict(net: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Predicted class (the model's output, pass 2 for GAttA) per image."""
    with temporarily_eval(net):
        return torch.cat([net(x[i: i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def _layer_regions(net: torch.nn.Module, x: torch.Tensor, masks: np.ndarray, batch_size: int) -> Dict[str, Any]:
    """Per conv GAttA layer: the unscaled gain alpha x agreement (upsampled) on and off the mask (see
    :func:`region_gain`), mean and se over images, and the layer's alpha."""
    per: Dict[str, Dict[str, List[np.ndarray]]] = {}
    with temporarily_eval(net):
        for i in range(0, len(x), batch_size):
            t = net.trace(x[i: i + batch_size])
            for name, m in layer_saliencies(t, tuple(x.shape[2:]), gain=True, scale_layers=False).items():
                for k, v in region_gain(m, masks[i: i + batch_size]).items():
                    per.setdefault(name, {}).setdefault(k, []).append(v)
    alphas = dict(net.alphas)
    out: Dict[str, Any] = {}
    for name, d in per.items():
        out[name] = {"alpha": alphas.get(name)}
        for k, parts in d.items():
            m, se, _ = mean_se(np.concatenate(parts))
            out[name][k], out[name][f"{k}_se"] = m, se
    return out


def localization_report(model, data, methods: Sequence[str] = ("gain", "gradcam", "integrated_gradients", "total_gain",
                                                               "random", "centre"),
                        n: int = 500, per_layer: bool = True, batch_size: int = 100, seed: int = 0,
                        tolerance: int = 0, priors: Optional[Dict[str, Prior]] = None) -> Dict[str, Any]:
    """Rank-based localization (ROC-AUC, average precision, top-k share), pointing game and energy in mask of
    several maps on the first ``n`` images of a data set with masks, with paired differences and the fixed rule.

    Class-specific maps (Grad-CAM, integrated gradients, saliency) explain the model's predicted class (pass 2
    for GAttA), right or wrong; Grad-CAM without a layer uses the last conv stage (the last GAttA conv layer,
    or ``layerK`` of a plain ResNet). GAttA maps (gain, agreement, total_gain) are skipped for a plain model.
    A map without any positive value on an image scores energy 0 there (counted in ``n_no_positive``); the
    rank measures do not look at the sign.

    The rule (``verdict``, for the ``gain`` map; ``tests`` for every map): a map localizes beyond the
    image-independent guesses if its ROC-AUC and its top-k share both beat ``random``, ``mean_mask`` and
    ``centre`` (paired lower 95% bound > 0); it is as good as Grad-CAM if the upper 95% bound of its ROC-AUC
    difference from ``gradcam`` is >= 0. ``energy_rule`` keeps the first, energy-based rule for comparison.

    Args:
        model: a GAttA or plain model returning logits, or a ``LoadedModel``.
        data: ``ClutterData`` (masks (N, H, W)) or ``SceneData`` (masks (N, K, H, W): their union is used),
            normalised by its own ``tensors``.
        methods: map names: ``"random"`` (:func:`random_maps`, seed ``seed``), ``"centre"`` and ``"mean_mask"``
            (image-independent priors from ``priors``; ``centre`` falls back to the unfitted Gaussian of
            :func:`centre_prior`), or any ``method[:layer]`` of :func:`gatta_viz.metrics.faithfulness.parse_method`.
        n: how many images (the first ``n``).
        per_layer: with ``"gain"`` and a GAttA model, also each conv layer's gain map alone (``"gain:layerK"``)
            and each layer's unscaled gain on and off the mask (``layer_regions``).
        batch_size: images per call of the map function.
        seed: random-map seed.
        tolerance: pointing-game tolerance in pixels (see :func:`pointing_hit`).
        priors: fitted image-independent maps (:func:`fit_priors` on training masks).
    Returns:
        JSON-able ``{"dataset", "n", "accuracy", "target", "mask", "mask_share", "mask_share_se", "tolerance",
        "gradcam_layer", "centre_sigma", "priors" (how each was made), "skipped", "predicted", "labels",
        "methods": {name: {M, "M_se", "M_n", "M_per_image" for M in auc, topk, ap, energy, pointing (per image:
        "hit_per_image"), "n_no_positive", "share_positive", "seconds", "minus": {M: {ref: {"mean", "se", "n",
        "ci95"}}}, "energy_minus" (= minus["energy"]), "tests"}}, "layer_regions", "verdict", "energy_rule"}``.
    Raises:
        ValueError: ``mean_mask`` asked for without ``priors``, or a prior of another size than the images.
    """
    net = model if isinstance(model, torch.nn.Module) else model.model
    d = data.subset(n)
    x, _ = d.tensors()
    h, w = x.shape[2], x.shape[3]
    priors = dict(priors or {})
    priors.setdefault("centre", _default_centre(h, w))
    if "mean_mask" in methods and "mean_mask" not in priors:
        raise ValueError("the mean_mask reference needs priors= (fit_priors on training masks)")
    pred = _predict(net, x, batch_size)
    masks, correct, mask_kind = _masks_and_correct(d, pred.numpy())
    names, skipped = _expand_methods(methods, net, per_layer)
    share = mask_share(masks)
    sm, sse, _ = mean_se(share)
    rep: Dict[str, Any] = {
        "dataset": d.name, "n": int(len(x)), "accuracy": float(correct.mean()),
        "target": "predicted class" + (" (pass 2)" if hasattr(net, "trace") else ""), "mask": mask_kind,
        "mask_share": sm, "mask_share_se": sse, "tolerance": int(tolerance),
        "gradcam_layer": _gradcam_layer(net), "centre_sigma": priors["centre"].fit.get("sigma_energy"),
        "priors": {k: {"note": p.note, "fit": p.fit} for k, p in priors.items() if k in names},
        "skipped": skipped, "predicted": pred.tolist(), "labels": np.asarray(d.labels).tolist(), "methods": {}}
    scores: Dict[str, Dict[str, np.ndarray]] = {}
    for name in tqdm(names, desc="localization maps"):
        t0 = time.perf_counter()
        rank, en = _maps(net, name, x, pred, batch_size, seed, priors)
        e = energy_in_mask(en, masks)
        # a map with no positive value puts no energy on the object: it scores 0 in the summaries and the paired
        # differences (dropping it would favour the map that fails; its count stays in "n_no_positive")
        sc = {"auc": roc_auc_in_mask(rank, masks), "topk": topk_in_mask(rank, masks),
              "ap": average_precision_in_mask(rank, masks), "energy": np.where(np.isfinite(e), e, 0.0),
              "pointing": pointing_hit(rank, masks, tolerance)}
        scores[name] = sc
        rep["methods"][name] = _method_entry(sc, int(np.sum(~np.isfinite(e))), float((en > 0).mean()),
                                             time.perf_counter() - t0)
    for name, entry in rep["methods"].items():
        entry["minus"] = {k: {r: _paired(scores[name][k], scores[r][k]) for r in REFERENCES
                              if r in scores and r != name} for k in ("auc", "topk", "ap", "energy")}
        entry["energy_minus"] = entry["minus"]["energy"]
        entry["tests"] = _tests(entry)
    rep["layer_regions"] = (_layer_regions(net, x, masks, batch_size)
                            if per_layer and "gain" in names and hasattr(net, "trace") else {})
    rep["verdict"] = _verdict(rep)
    rep["energy_rule"] = _energy_rule(rep)
    return rep


def _fmt(m: float, se: float, sign: bool = False) -> str:
    """``m ± se`` with 3 decimals, or ``-`` for NaN."""
    if not np.isfinite(m):
        return "-"
    return f"{m:+.3f} ± {se:.3f}" if sign else f"{m:.3f} ± {se:.3f}"


def report_text(rep: Dict[str, Any]) -> str:
    """A plain-text report of a :func:`localization_report`: every measure of every map, paired differences
    from the references on ROC-AUC and top-k share, each layer's gain on and off the mask, and the rules."""
    refs = [r for r in REFERENCES if r in rep["methods"]]
    lines = [f"{rep.get('checkpoint', 'model')}: {rep['dataset']}, first {rep['n']} images, accuracy {rep['accuracy']:.3f}",
             f"mask: {rep['mask']}, covers {_fmt(rep['mask_share'], rep['mask_share_se'])} of the image "
             f"(= expected energy and top-k share of a uniform map); pointing tolerance {rep['tolerance']} px",
             f"class-specific maps explain the {rep['target']}; gradcam at {rep['gradcam_layer']}; a map without "
             "positive energy scores energy 0 (counted per map); paired differences over the same images"]
    lines += [f"prior {k}: {v['note']}" for k, v in rep.get("priors", {}).items()]
    head = (f"{'map':<22}" + "".join(f"{h:>16}" for h in ("ROC-AUC", "top-k share", "avg precision", "pointing",
                                                           "energy (+ part)")) + f"{'> 0':>7}")
    lines += ["", head, "-" * len(head)]
    for name, r in rep["methods"].items():
        row = f"{name:<22}" + "".join(f"{_fmt(r[k], r[k + '_se']):>16}" for k in ("auc", "topk", "ap", "pointing", "energy"))
        row += f"{100 * r['share_positive']:>6.0f}%"
        if r["n_no_positive"]:
            row += f"  ({r['n_no_positive']} map(s) without positive energy)"
        lines.append(row)
    for measure, title in (("auc", "ROC-AUC"), ("topk", "top-k share"), ("energy", "energy")):
        head = f"{title + ' minus':<22}" + "".join(f"{r:>18}" for r in refs)
        lines += ["", head, "-" * len(head)]
        for name, r in rep["methods"].items():
            row = f"{name:<22}"
            for ref in refs:
                p = r["minus"][measure].get(ref)
                row += f"{_fmt(p['mean'], p['se'], True) if p else '':>18}"
            if measure == "auc":
                t = r["tests"]
                row += "  beyond priors: " + {True: "yes", False: "no", None: "-"}[t["beyond_priors"]]
            lines.append(row)
    if rep.get("layer_regions"):
        head = f"{'layer (unscaled gain)':<22}{'alpha':>8}{'mean on mask':>18}{'mean off mask':>18}{'> 0 on mask':>14}{'> 0 off mask':>14}"
        lines += ["", head, "-" * len(head)]
        for name, g in rep["layer_regions"].items():
            a = g.get("alpha")
            lines.append(f"{name:<22}{(f'{a:+.3f}' if a is not None else '-'):>8}{_fmt(g['mean_in'], g['mean_in_se'], True):>18}"
                         f"{_fmt(g['mean_out'], g['mean_out_se'], True):>18}{100 * g['pos_in']:>13.1f}%{100 * g['pos_out']:>13.1f}%")
    if rep.get("skipped"):
        lines.append(f"skipped (GAttA maps, plain model): {', '.join(rep['skipped'])}")
    v = rep.get("verdict")
    if v:
        lows = ", ".join(f"{k} {val:+.3f}" for k, val in v["lower95"].items())
        lines += ["", f"verdict rule: {v['rule']}", f"  lower 95% bounds: {lows}",
                  f"  gain - gradcam ROC-AUC upper 95%: {v['auc_minus_gradcam_upper95']:+.3f}",
                  f"  -> beyond priors: {'yes' if v['beyond_priors'] else 'no'}; as good as Grad-CAM: "
                  f"{'yes' if v['as_good_as_gradcam'] else 'no'}; {'PASS' if v['passes'] else 'FAIL'}"]
    e = rep.get("energy_rule")
    if e:
        lines += [f"first rule ({e['rule']}; not the verdict): lower 95% vs random {e['gain_minus_random_lower95']:+.3f}, "
                  f"vs centre {e['gain_minus_centre_lower95']:+.3f}; upper 95% vs gradcam {e['gain_minus_gradcam_upper95']:+.3f}"
                  f" -> {'PASS' if e['passes'] else 'FAIL'}"]
    return "\n".join(lines)
