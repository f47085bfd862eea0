"""Two-garment scenes: which item one global query picks, and what a top-down cue does.

Measurements on a :class:`~gatta_viz.data.scenes.SceneData` (protocol fixed in docs/RESULTS.md before any
number was taken):

- accuracy: both-items accuracy (the top-2 classes of the output are the pair) and per-item recall, pass 1
  and pass 2, by overlap bin;
- where uncued attention goes: the share of the gain map's positive energy on each item's visible-pixel mask
  (energy-based pointing game, Wang et al. 2020) and the pointing hit, for the default gain map and each
  GAttA conv layer alone;
- cues: every class's stored query in turn (``model.trace(x, query=...)``): the cued item's energy share
  against the other's, how far the cued class's probability and rank move; read-out by cueing pass 1's top
  classes; controls: a class absent from the scene and a random query of the cue's norm.

Maps are :func:`~gatta_viz.metrics.faithfulness.trace_saliency` (gain by default), upsampled to the scene.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from ..compute.attributions import gradcam
from ..compute.maps import upsample
from ..core.hooks import temporarily_eval
from .faithfulness import layer_saliencies, trace_saliency
from .localization import energy_in_mask, pointing_hit, roc_auc_in_mask
from .stats import mean_se

__all__ = ["calibrate_cue_sign", "cue_examples", "OVERLAP_BINS", "overlap_bins", "both_items_correct", "item_recall", "scene_logits", "CueMeasurements",
           "measure_cues", "readout_by_cueing", "scene_report"]

# (name, low, high): none = no shared pixel; low <= 0.1 < mid < 0.5 <= high (overlap of the smaller item)
OVERLAP_BINS = (("none", 0.0, 0.0), ("low", 0.0, 0.1), ("mid", 0.1, 0.5), ("high", 0.5, 1.0))


def overlap_bins(overlap: np.ndarray) -> np.ndarray:
    """Bin name per scene: ``none`` (0), ``low`` (0 < o <= 0.1), ``mid`` (0.1 < o < 0.5), ``high`` (>= 0.5)."""
    o = np.asarray(overlap, dtype=np.float64)
    return np.where(o <= 0, "none", np.where(o <= 0.1, "low", np.where(o < 0.5, "mid", "high")))


def both_items_correct(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) bool: the top-2 classes of ``logits`` (N, C) are exactly the pair ``labels`` (N, 2)."""
    top2 = np.argsort(-np.asarray(logits), axis=1)[:, :2]
    lab = np.asarray(labels)
    return (np.sort(top2, 1) == np.sort(lab, 1)).all(1)


def item_recall(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, 2) bool: each item's class is among the top-2 classes."""
    top2 = np.argsort(-np.asarray(logits), axis=1)[:, :2]
    return (np.asarray(labels)[:, :, None] == top2[:, None, :]).any(2)


@torch.no_grad()
def scene_logits(model: torch.nn.Module, scenes, batch_size: int = 500, progress: bool = True) -> Dict[str, np.ndarray]:
    """Logits of every scene: ``{"pass1", "pass2"}`` for a GAttA model, ``{"output"}`` for a plain one.

    Args:
        model: a GAttA model or a plain CNN (eval mode is used; the model's flags are restored).
        scenes: a SceneData (or any ImageData).
        batch_size: images per forward.
        progress: show a tqdm bar.
    Returns:
        name -> (N, C) float32 arrays.
    """
    out: Dict[str, List[np.ndarray]] = {}
    with temporarily_eval(model):
        for i in tqdm(range(0, len(scenes), batch_size), desc="scene logits", disable=not progress):
            x = scenes.normalize(scenes.images[i : i + batch_size])
            if hasattr(model, "trace"):
                t = model.trace(x)
                out.setdefault("pass1", []).append(t.logits_pass1.float().numpy())
                out.setdefault("pass2", []).append(t.logits_pass2.float().numpy())
            else:
                out.setdefault("output", []).append(model(x).float().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


@dataclass
class CueMeasurements:
    """Per-scene numbers of :func:`measure_cues` (N scenes, C classes, M maps = default + each conv layer).

    Attributes:
        maps: map names, ``"gain"`` then ``"gain:<layer>"``.
        uncued_share: (N, M, 2) energy share of each item under the pooled query.
        uncued_hit: (N, M, 2) pointing hit per item.
        cued_share: (N, C, M, 2) energy share of each item when class c is cued.
        cued_probs: (N, C, C) pass-2 softmax when class c is cued (row c).
        random_share: (N, 2, M, 2) item shares under a random query with the norm of item k's cue.
        random_probs: (N, 2, C) pass-2 softmax under those random queries.
        gradcam_share: (N, 2, 2) Grad-CAM (target = item k's class, uncued model) energy shares.
        probs_pass1, probs_pass2: (N, C) softmax of the uncued passes.
        absent: (N,) the absent class cued as a control (random among the 8 not in the scene).
        uncued_auc, cued_auc (N, C, M), random_auc (N, 2, M), gradcam_auc (N, 2): the ranked version of the
            shares: ROC-AUC of the map's values on item 0's pixels against item 1's (pixels of both items left
            out; item 1's against item 0's is 1 minus it), shaped like the shares without their item axis.
    """

    maps: List[str]
    uncued_share: np.ndarray
    uncued_hit: np.ndarray
    cued_share: np.ndarray
    cued_probs: np.ndarray
    random_share: np.ndarray
    random_probs: np.ndarray
    gradcam_share: np.ndarray
    probs_pass1: np.ndarray
    probs_pass2: np.ndarray
    absent: np.ndarray
    meta: Dict[str, Any] = field(default_factory=dict)
    uncued_auc: Optional[np.ndarray] = None
    cued_auc: Optional[np.ndarray] = None
    random_auc: Optional[np.ndarray] = None
    gradcam_auc: Optional[np.ndarray] = None


def _maps(t, size, convs: Sequence[str]) -> List[np.ndarray]:
    """Default gain map (the mean of the scaled layer maps) then each conv layer's gain map alone, each (B, H, W)."""
    per_layer = layer_saliencies(t, size, convs)
    return [np.mean(list(per_layer.values()), axis=0)] + [per_layer[n] for n in convs]


def _shares(maps: List[np.ndarray], masks: np.ndarray) -> np.ndarray:
    """(B, M, 2) energy share of each map on each item's mask."""
    return np.stack([np.stack([energy_in_mask(m, masks[:, k]) for k in range(2)], 1) for m in maps], 1)


def _item_aucs(maps: List[np.ndarray], masks: np.ndarray) -> np.ndarray:
    """(B, M) ROC-AUC of each map on item 0's own pixels against item 1's own pixels (shared pixels left out)."""
    only0, only1 = masks[:, 0] & ~masks[:, 1], masks[:, 1] & ~masks[:, 0]
    return np.stack([roc_auc_in_mask(m, only0, within=only0 | only1) for m in maps], 1)


def _gradcam_shares(model, x: torch.Tensor, labels: torch.Tensor, masks: np.ndarray, layer: str) -> Tuple[np.ndarray, np.ndarray]:
    """(B, 2, 2) Grad-CAM energy shares: target item k's class (axis 1), share on item j's mask (axis 2); and
    (B, 2) the ranked version (:func:`_item_aucs`) per target."""
    with torch.enable_grad():
        cams = [upsample(gradcam(model, x, layer, labels[:, k]), tuple(x.shape[2:])) for k in range(2)]
    shares = np.stack([np.stack([energy_in_mask(c, masks[:, j]) for j in range(2)], 1) for c in cams], 1)
    return shares, _item_aucs(cams, masks)


@torch.no_grad()
def measure_cues(model, scenes, queries: torch.Tensor, n: Optional[int] = 2000, batch_size: int = 100,
                 seed: int = 0, gradcam_layer: Optional[str] = None, progress: bool = True) -> CueMeasurements:
    """Run the uncued model, every class cue, two random queries and class-specific Grad-CAM on each scene.

    Args:
        model: a GAttA model trained on scenes (eval mode is used; flags restored).
        scenes: a SceneData (the first ``n`` scenes are measured).
        queries: (C, d) class queries (``LoadedModel.class_queries``).
        n: scenes to measure (None: all).
        batch_size: scenes per forward.
        seed: seeds the random queries and the absent-class choice.
        gradcam_layer: layer for Grad-CAM (default: the last GAttA conv layer).
        progress: show a tqdm bar.
    Returns:
        A :class:`CueMeasurements`.
    """
    if not hasattr(model, "trace"):
        raise ValueError(f"cue measurements need a GAttA model, got {type(model).__name__}")
    data = scenes if n is None else scenes.subset(min(n, len(scenes)))
    C = len(data.classes)
    if queries.shape[0] != C:
        raise ValueError(f"need one query per class ({C}), got {tuple(queries.shape)}")
    convs = [name for name, k in model.layer_kinds.items() if k == "conv"]
    layer = gradcam_layer or convs[-1]
    rng = np.random.default_rng(seed)
    N = len(data)
    labels = data.labels.numpy()
    absent = np.array([rng.choice(np.setdiff1d(np.arange(C), labels[i])) for i in range(N)])
    directions = rng.standard_normal((N, 2, queries.shape[1])).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=2, keepdims=True)
    qn = queries.norm(dim=1).numpy()
    rand_q = torch.from_numpy(directions * qn[labels][:, :, None])  # (N, 2, d): norm of item k's cue
    out: Dict[str, List[np.ndarray]] = {k: [] for k in ("us", "uh", "cs", "cp", "rs", "rp", "gs", "p1", "p2",
                                                        "ua", "ca", "ra", "ga")}
    with temporarily_eval(model):
        for i in tqdm(range(0, N, batch_size), desc="cues", disable=not progress):
            sl = slice(i, min(N, i + batch_size))
            x = data.normalize(data.images[sl])
            size = tuple(x.shape[2:])
            masks = data.masks[sl].numpy()
            t = model.trace(x)
            maps = _maps(t, size, convs)
            out["us"].append(_shares(maps, masks))
            out["ua"].append(_item_aucs(maps, masks))
            out["uh"].append(np.stack([np.stack([pointing_hit(m, masks[:, k]) for k in range(2)], 1) for m in maps], 1))
            out["p1"].append(torch.softmax(t.logits_pass1, 1).numpy())
            out["p2"].append(torch.softmax(t.logits_pass2, 1).numpy())
            cs, cp, ca = [], [], []
            for c in range(C):
                tc = model.trace(x, query=queries[c])
                mc = _maps(tc, size, convs)
                cs.append(_shares(mc, masks))
                ca.append(_item_aucs(mc, masks))
                cp.append(torch.softmax(tc.logits_pass2, 1).numpy())
            out["cs"].append(np.stack(cs, 1))
            out["ca"].append(np.stack(ca, 1))
            out["cp"].append(np.stack(cp, 1))
            rs, rp, ra = [], [], []
            for k in range(2):
                tr = model.trace(x, query=rand_q[sl, k])
                mr = _maps(tr, size, convs)
                rs.append(_shares(mr, masks))
                ra.append(_item_aucs(mr, masks))
                rp.append(torch.softmax(tr.logits_pass2, 1).numpy())
            out["rs"].append(np.stack(rs, 1))
            out["ra"].append(np.stack(ra, 1))
            out["rp"].append(np.stack(rp, 1))
            gs, ga = _gradcam_shares(model, x, data.labels[sl], masks, layer)
            out["gs"].append(gs)
            out["ga"].append(ga)
    cat = {k: np.concatenate(v) for k, v in out.items()}
    return CueMeasurements(
        maps=["gain"] + [f"gain:{c}" for c in convs], uncued_share=cat["us"], uncued_hit=cat["uh"],
        cued_share=cat["cs"], cued_probs=cat["cp"], random_share=cat["rs"], random_probs=cat["rp"],
        gradcam_share=cat["gs"], probs_pass1=cat["p1"], probs_pass2=cat["p2"], absent=absent,
        meta={"n": N, "seed": seed, "gradcam_layer": layer}, uncued_auc=cat["ua"], cued_auc=cat["ca"],
        random_auc=cat["ra"], gradcam_auc=cat["ga"],
    )


def readout_by_cueing(m: CueMeasurements, candidates: int = 3) -> np.ndarray:
    """(N, 2) the pair read by cueing: cue each of pass 1's top ``candidates`` classes in turn and keep the two
    whose own cue gives them the highest pass-2 probability.
    """
    top = np.argsort(-m.probs_pass1, axis=1)[:, :candidates]
    own = np.take_along_axis(m.cued_probs[np.arange(len(top))[:, None], top], top[:, :, None], 2)[:, :, 0]
    best = np.argsort(-own, axis=1)[:, :2]
    return np.take_along_axis(top, best, 1)


def _mean_se(v: np.ndarray) -> Dict[str, float]:
    """``{"mean", "se", "n"}`` of the finite values (see :func:`~gatta_viz.metrics.stats.mean_se`)."""
    m, se, n = mean_se(v)
    return {"mean": m, "se": se if n > 1 else float("nan"), "n": n}


def _by_bin(v: np.ndarray, bins: np.ndarray) -> Dict[str, Dict[str, float]]:
    """Mean ± se of per-scene values ``v`` (N,) or (N, 2) (both items pooled) overall and per overlap bin."""
    v = np.asarray(v, dtype=np.float64)
    res = {"all": _mean_se(v.ravel())}
    for name, _, _ in OVERLAP_BINS:
        sel = bins == name
        res[name] = _mean_se(v[sel].ravel())
    lowsel = (bins == "none") | (bins == "low")
    res["none+low"] = _mean_se(v[lowsel].ravel())
    return res


def _rank(probs: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """1-based rank of class ``cls[i]`` in ``probs[i]``."""
    p = np.take_along_axis(probs, cls[:, None], 1)
    return (probs > p).sum(1) + 1


def _add_ranked_cue_success(cue: Dict[str, Any], m: CueMeasurements, labels: np.ndarray, bins: np.ndarray) -> None:
    """Add the ranked cue success to ``cue`` (per map, Grad-CAM): the ROC-AUC of the cued item's own pixels against
    the other item's (> 0.5: success), by overlap bin, and the same for a random query."""
    rows = np.arange(len(labels))

    def own_auc(a: np.ndarray) -> np.ndarray:  # stored as item 0 against item 1, so item 1's is 1 minus it
        return np.stack([a[:, 0], 1 - a[:, 1]], 1)

    for j, name in enumerate(m.maps):
        a = own_auc(np.stack([m.cued_auc[rows, labels[:, k], j] for k in range(2)], 1))
        r = own_auc(m.random_auc[:, :, j])
        ok = np.isfinite(a)
        cue[name].update({"ranked_auc": _by_bin(a, bins), "ranked_success": _by_bin(np.where(ok, a > 0.5, np.nan), bins),
                          "random_query_ranked_success": _by_bin(np.where(np.isfinite(r), r > 0.5, np.nan), bins)})
    g = own_auc(m.gradcam_auc)
    cue["gradcam"].update({"ranked_auc": _by_bin(g, bins), "ranked_success": _by_bin(np.where(np.isfinite(g), g > 0.5, np.nan), bins)})


def scene_report(m: CueMeasurements, scenes) -> Dict[str, Any]:
    """Summaries of :func:`measure_cues` by overlap bin (see the module docstring and docs/RESULTS.md).

    Args:
        m: the measurements.
        scenes: the SceneData they were taken on (its first ``m.meta["n"]`` scenes).
    Returns:
        A JSON-able dict.
    """
    N = m.meta["n"]
    labels = scenes.labels[:N].numpy()
    bins = overlap_bins(scenes.overlap[:N].numpy())
    masks = scenes.masks[:N].numpy()
    images = scenes.images[:N, 0].numpy().astype(np.float64)
    area = masks.sum(axis=(2, 3)).astype(np.float64)  # (N, 2) visible pixels
    bright = (images[:, None] * masks).sum(axis=(2, 3)) / np.maximum(area, 1)
    rows = np.arange(N)
    rep: Dict[str, Any] = {"n": N, "maps": m.maps, "bins": {b: int((bins == b).sum()) for b, _, _ in OVERLAP_BINS}}
    readout_ok = (np.sort(readout_by_cueing(m), 1) == np.sort(labels, 1)).all(1)
    pass2_ok = both_items_correct(m.probs_pass2, labels)
    rep["accuracy"] = {
        "pass1": _by_bin(both_items_correct(m.probs_pass1, labels), bins),
        "pass2": _by_bin(pass2_ok, bins),
        "readout_top3": _by_bin(readout_ok, bins),
    }
    rep["readout_minus_pass2"] = _by_bin(readout_ok.astype(float) - pass2_ok, bins)
    # where uncued attention goes (default map and each layer)
    logit_hi = np.argmax(np.take_along_axis(m.probs_pass2, labels, 1), 1)  # item whose class scores higher
    bigger = np.argmax(area, 1)
    brighter = np.argmax(bright, 1)
    uncued: Dict[str, Any] = {}
    for j, name in enumerate(m.maps):
        share = m.uncued_share[:, j]
        density = share / np.maximum(area / (masks.shape[2] * masks.shape[3]), 1e-9)
        # a map with no positive value anywhere picks nothing: those scenes are left out (NaN) of picks and split
        valid = np.isfinite(density).all(1) & (density.max(1) > 0)
        d = np.where(valid[:, None], density, 0.0)
        picked = np.argmax(d, 1)
        hi, lo = d.max(1), d.min(1)

        def only_valid(v: np.ndarray) -> np.ndarray:
            return np.where(valid, v.astype(float), np.nan)

        uncued[name] = {
            "share_items_total": _by_bin(share.sum(1), bins),
            "pointing_hit_either": _by_bin(m.uncued_hit[:, j].any(1), bins),
            "picks_higher_scoring": _by_bin(only_valid(picked == logit_hi), bins),
            "picks_bigger": _by_bin(only_valid(picked == bigger), bins),
            "picks_brighter": _by_bin(only_valid(picked == brighter), bins),
            "split": _by_bin(only_valid((hi - lo) / np.maximum(hi, 1e-12) < 0.2), bins),
            "no_positive_energy": _by_bin(~valid, bins),
        }
    rep["uncued"] = uncued
    # cue success: cued item's share > other's, per item (pooled over both items of a scene)
    cue: Dict[str, Any] = {}
    own = np.stack([m.cued_share[rows, labels[:, k]][:, :, k] for k in range(2)], 1)  # (N, 2, M)
    other = np.stack([m.cued_share[rows, labels[:, k]][:, :, 1 - k] for k in range(2)], 1)
    uncued_own = np.stack([m.uncued_share[:, :, k] for k in range(2)], 1)
    uncued_other = np.stack([m.uncued_share[:, :, 1 - k] for k in range(2)], 1)
    rnd_own = np.stack([m.random_share[:, k, :, k] for k in range(2)], 1)
    rnd_other = np.stack([m.random_share[:, k, :, 1 - k] for k in range(2)], 1)
    for j, name in enumerate(m.maps):
        cue[name] = {
            "success": _by_bin(own[:, :, j] > other[:, :, j], bins),
            "share_shift": _by_bin((own[:, :, j] - other[:, :, j]) - (uncued_own[:, :, j] - uncued_other[:, :, j]), bins),
            "random_query_success": _by_bin(rnd_own[:, :, j] > rnd_other[:, :, j], bins),
        }
    cue["gradcam"] = {"success": _by_bin(m.gradcam_share[:, [0, 1], [0, 1]] > m.gradcam_share[:, [0, 1], [1, 0]], bins)}
    if m.cued_auc is not None:
        _add_ranked_cue_success(cue, m, labels, bins)
    rep["cue"] = cue
    # how far the cued class's probability and rank move (pass 2 cued vs uncued)
    p_cued = np.stack([m.cued_probs[rows, labels[:, k], labels[:, k]] for k in range(2)], 1)
    p_unc = np.take_along_axis(m.probs_pass2, labels, 1)
    r_cued = np.stack([_rank(m.cued_probs[rows, labels[:, k]], labels[:, k]) for k in range(2)], 1)
    r_unc = np.stack([_rank(m.probs_pass2, labels[:, k]) for k in range(2)], 1)
    rep["cued_class"] = {
        "prob_change": _by_bin(p_cued - p_unc, bins),
        "rank_change": _by_bin(r_cued - r_unc, bins),
        "becomes_top1": _by_bin(r_cued == 1, bins),
        "was_top1": _by_bin(r_unc == 1, bins),
    }
    # controls: an absent class cued; a random query of the cue's norm
    pa = m.cued_probs[rows, m.absent]
    rep["controls"] = {
        "absent_prob_change": _by_bin(pa[rows, m.absent] - m.probs_pass2[rows, m.absent], bins),
        "absent_enters_top2": _by_bin(_rank(pa, m.absent) <= 2, bins),
        "absent_pair_still_top2": _by_bin(both_items_correct(pa, labels), bins),
        "absent_items_share_change": _by_bin(m.cued_share[rows, m.absent][:, 0].sum(1) - m.uncued_share[:, 0].sum(1), bins),
        "random_prob_change": _by_bin(
            np.stack([m.random_probs[rows, k, labels[:, k]] for k in range(2)], 1) - p_unc, bins),
    }
    return rep


@torch.no_grad()
def cue_examples(model, scenes, queries: torch.Tensor, n: int = 4, max_overlap: float = 0.1) -> Dict[str, Any]:
    """The first ``n`` scenes whose items overlap at most ``max_overlap``: uncued and per-item cued gain maps.

    Args:
        model: a GAttA model trained on scenes.
        scenes: a SceneData.
        queries: (C, d) class queries.
        n: scenes.
        max_overlap: overlap limit.
    Returns:
        ``{"index", "images" (n, H, W) uint8, "masks" (n, 2, H, W), "names" [[item 1, item 2], ...],
        "maps" [uncued, cue item 1, cue item 2] each (n, H, W), "shares" same order, each (n, 2)}``.
    """
    idx = [i for i in range(len(scenes)) if float(scenes.overlap[i]) <= max_overlap][:n]
    sub = scenes.subset(indices=idx)
    x = sub.normalize(sub.images)
    size = tuple(x.shape[2:])
    masks = sub.masks.numpy()
    with temporarily_eval(model):
        maps = [trace_saliency(model.trace(x), size)]
        for k in range(2):
            maps.append(trace_saliency(model.trace(x, query=queries[sub.labels[:, k]]), size))
    shares = [np.stack([energy_in_mask(m, masks[:, k]) for k in range(2)], 1) for m in maps]
    names = [[scenes.classes[int(c)] for c in pair] for pair in sub.labels]
    return {"index": idx, "images": sub.images[:, 0].numpy(), "masks": masks, "names": names, "maps": maps,
            "shares": shares}


def calibrate_cue_sign(model, means: torch.Tensor, scenes, n: int = 300) -> Dict[str, Any]:
    """Which sign of the centred class queries moves gain energy onto the cued garment, on training scenes.

    Cues each item's class with ``+1`` and ``-1`` times :func:`~gatta_viz.models.checkpoint.steering_queries`
    and counts the (scene, item) cases where the cued item gets the larger share of the default gain map's
    positive energy.

    Args:
        model: a GAttA model trained on scenes.
        means: (C, d) mean pass-1 q_avg per class (``class_queries``).
        scenes: scenes with masks, from the training split (never the test set).
        n: scenes to use.
    Returns:
        ``{"sign": +1 or -1, "success_plus", "success_minus", "scenes": n}`` (success = fraction of cases).
    """
    from ..models.checkpoint import steering_queries

    sub = scenes.subset(min(n, len(scenes)))
    labels = sub.labels.numpy()
    rates = {}
    for sign in (1, -1):
        m = measure_cues(model, sub, steering_queries(means, sign), n=None, progress=False)
        rows = np.arange(len(sub))
        own = np.stack([m.cued_share[rows, labels[:, k], 0, k] for k in range(2)], 1)
        other = np.stack([m.cued_share[rows, labels[:, k], 0, 1 - k] for k in range(2)], 1)
        rates[sign] = float((own > other).mean())
    return {"sign": 1 if rates[1] >= rates[-1] else -1, "success_plus": rates[1], "success_minus": rates[-1],
            "scenes": len(sub)}
