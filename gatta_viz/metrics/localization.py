"""Localization of saliency maps against object masks: energy-based pointing game and pointing game.

Energy in mask (the energy-based pointing game of Wang et al. 2020, "Score-CAM"): the share of a map's
positive energy that falls inside the object's mask, ``sum(max(s, 0) * mask) / sum(max(s, 0))``. Only the
positive part counts (for a gain map: where pass 2 boosts; for signed Grad-CAM: the ReLU'd map of the
Grad-CAM paper; for integrated gradients: the evidence for the class). A uniform random map scores the mask's
share of the image on average (:func:`mask_share`), so report energy beside it.

Pointing game (Zhang et al. 2018): a hit when the map's maximum lies in the mask, optionally dilated by a
tolerance. Ties follow Quantus 0.6.0's ``PointingGame``: every pixel equal to the maximum is checked, and any
one in the mask is a hit (so a constant map hits whenever the mask is not empty).

Reference maps: :func:`random_maps` (plain uniform noise) and :func:`centre_prior` (a Gaussian at the image
centre, the "objects tend to be central" guess). :func:`localization_report` scores model maps (gain maps,
Grad-CAM, integrated gradients, ... via :func:`gatta_viz.metrics.faithfulness.explain_func`) and the reference
maps on a data set with masks (``fmnist-clutter``, or the two-garment scenes, where the mask is the union of
both garments), with paired differences over the same images.
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..core.hooks import temporarily_eval
from .faithfulness import explain_func, parse_method
from .stats import mean_se

__all__ = ["energy_in_mask", "pointing_hit", "centre_prior", "random_maps", "mask_share", "localization_report",
           "report_text", "REFERENCES", "GATTA_METHODS"]

REFERENCES = ("random", "centre", "gradcam")  # maps every other map is compared with (paired differences)
GATTA_METHODS = ("gain", "agreement", "total_gain")  # maps only a GAttA model has


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
        if m not in ("random", "centre"):
            method, _ = parse_method(m)
            if method in GATTA_METHODS and not gatta:
                skipped.append(m)
                continue
        keep.append(m)
    return keep, skipped


def _maps(net: torch.nn.Module, name: str, x: torch.Tensor, pred: torch.Tensor, batch_size: int,
          seed: int) -> np.ndarray:
    """(N, H, W) maps of one method over all of ``x``, computed in batches (``centre``/``random`` at once)."""
    n, h, w = x.shape[0], x.shape[2], x.shape[3]
    if name == "centre":
        return centre_prior(n, h, w)
    if name == "random":
        return random_maps(n, h, w, seed)
    method, layer = parse_method(name)
    if method == "gradcam" and layer is None:
        layer = _last_conv_stage(net)
    out = []
    for i in tqdm(range(0, n, batch_size), desc=f"localization {name}", leave=False):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Internal batch size cannot be less")
            out.append(explain_func(net, x[i: i + batch_size], pred[i: i + batch_size], method=method,
                                    layer=layer, seed=seed + i)[:, 0])
    return np.concatenate(out)


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


def _verdict(rep: Dict[str, Any], margin: float = 0.10) -> Optional[Dict[str, Any]]:
    """The fixed rule on energy in mask for the "gain" map, when gain, random, centre and gradcam were all run."""
    ms = rep["methods"]
    if not all(k in ms for k in ("gain", "random", "centre", "gradcam")):
        return None
    d = ms["gain"]["energy_minus"]
    beats = {r: d[r]["ci95"][0] > margin for r in ("random", "centre")}
    as_good = d["gradcam"]["ci95"][1] >= 0
    return {"rule": f"gain passes if (gain - random) and (gain - centre) energy have mean - 1.96 se > {margin:.2f} "
                    "and (gain - gradcam) energy has mean + 1.96 se >= 0 (paired over the same images)",
            "gain_minus_random_lower95": d["random"]["ci95"][0], "gain_minus_centre_lower95": d["centre"]["ci95"][0],
            "gain_minus_gradcam_upper95": d["gradcam"]["ci95"][1], "beats_random": beats["random"],
            "beats_centre": beats["centre"], "as_good_as_gradcam": as_good,
            "passes": bool(beats["random"] and beats["centre"] and as_good)}


def _method_entry(e: np.ndarray, hit: np.ndarray, seconds: float) -> Dict[str, Any]:
    """Summary and per-image values of one map's scores."""
    em, ese, ek = mean_se(e)
    pm, pse, _ = mean_se(hit.astype(np.float64))
    return {"energy": em, "energy_se": ese, "energy_n": ek, "n_no_positive": int(np.sum(~np.isfinite(e))),
            "pointing": pm, "pointing_se": pse, "seconds": seconds,
            "energy_per_image": _json_list(e), "hit_per_image": [bool(v) for v in hit]}


@torch.no_grad()
def _predict(net: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Predicted class (the model's output, pass 2 for GAttA) per image."""
    with temporarily_eval(net):
        return torch.cat([net(x[i: i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def localization_report(model, data, methods: Sequence[str] = ("gain", "gradcam", "integrated_gradients", "total_gain",
                                                               "random", "centre"),
                        n: int = 500, per_layer: bool = True, batch_size: int = 100, seed: int = 0,
                        tolerance: int = 0) -> Dict[str, Any]:
    """Energy in mask and pointing game of several maps on the first ``n`` images of a data set with masks.

    Class-specific maps (Grad-CAM, integrated gradients, saliency) explain the model's predicted class (pass 2
    for GAttA), right or wrong; Grad-CAM without a layer uses the last conv stage (the last GAttA conv layer,
    or ``layerK`` of a plain ResNet). GAttA maps (gain, agreement, total_gain) are skipped for a plain model.
    A map without any positive value on an image scores energy 0 there (counted in ``n_no_positive``).

    Args:
        model: a GAttA or plain model returning logits, or a ``LoadedModel``.
        data: ``ClutterData`` (masks (N, H, W)) or ``SceneData`` (masks (N, K, H, W): their union is used),
            normalised by its own ``tensors``.
        methods: map names: ``"random"`` (:func:`random_maps`, seed ``seed``), ``"centre"``
            (:func:`centre_prior`, default sigma), or any ``method[:layer]`` of
            :func:`gatta_viz.metrics.faithfulness.parse_method`.
        n: how many images (the first ``n``).
        per_layer: with ``"gain"`` and a GAttA model, also each conv layer's gain map alone (``"gain:layerK"``).
        batch_size: images per call of the map function.
        seed: random-map seed.
        tolerance: pointing-game tolerance in pixels (see :func:`pointing_hit`).
    Returns:
        JSON-able ``{"dataset", "n", "accuracy", "target" (what class-specific maps explain), "mask",
        "mask_share", "mask_share_se", "tolerance", "gradcam_layer", "centre_sigma", "skipped", "predicted",
        "labels", "methods": {name: {"energy", "energy_se", "energy_n", "n_no_positive", "pointing",
        "pointing_se", "seconds", "energy_per_image", "hit_per_image", "energy_minus": {ref: {"mean", "se", "n",
        "ci95"}}}}, "verdict"}``. ``energy`` is the mean over all ``energy_n`` images, a map without
        positive energy scoring 0 there (``n_no_positive`` of them; stored per image as None);
        ``energy_minus`` holds paired differences from the reference maps ``random``, ``centre`` and
        ``gradcam`` that were run, over the same images; ``verdict`` applies the fixed rule to the ``gain`` map
        (None unless gain, random, centre and gradcam were run).
    """
    net = model if isinstance(model, torch.nn.Module) else model.model
    d = data.subset(n)
    x, _ = d.tensors()
    pred = _predict(net, x, batch_size)
    masks, correct, mask_kind = _masks_and_correct(d, pred.numpy())
    names, skipped = _expand_methods(methods, net, per_layer)
    share = mask_share(masks)
    sm, sse, _ = mean_se(share)
    rep: Dict[str, Any] = {
        "dataset": d.name, "n": int(len(x)), "accuracy": float(correct.mean()),
        "target": "predicted class" + (" (pass 2)" if hasattr(net, "trace") else ""), "mask": mask_kind,
        "mask_share": sm, "mask_share_se": sse, "tolerance": int(tolerance),
        "gradcam_layer": _gradcam_layer(net), "centre_sigma": min(x.shape[2:]) / 4, "skipped": skipped,
        "predicted": pred.tolist(), "labels": np.asarray(d.labels).tolist(), "methods": {}}
    energies: Dict[str, np.ndarray] = {}
    for name in tqdm(names, desc="localization maps"):
        t0 = time.perf_counter()
        sal = _maps(net, name, x, pred, batch_size, seed)
        e = energy_in_mask(sal, masks)
        rep["methods"][name] = _method_entry(e, pointing_hit(sal, masks, tolerance), time.perf_counter() - t0)
        # a map with no positive value puts no energy on the object: it scores 0 in the summaries and the paired
        # differences (dropping it would favour the map that fails; its count stays in "n_no_positive")
        energies[name] = np.where(np.isfinite(e), e, 0.0)
        em, ese, ek = mean_se(energies[name])
        rep["methods"][name].update({"energy": em, "energy_se": ese, "energy_n": ek})
    for name, entry in rep["methods"].items():
        entry["energy_minus"] = {r: _paired(energies[name], energies[r]) for r in REFERENCES
                                 if r in energies and r != name}
    rep["verdict"] = _verdict(rep)
    return rep


def _fmt(m: float, se: float, sign: bool = False) -> str:
    """``m ± se`` with 3 decimals, or ``-`` for NaN."""
    if not np.isfinite(m):
        return "-"
    return f"{m:+.3f} ± {se:.3f}" if sign else f"{m:.3f} ± {se:.3f}"


def report_text(rep: Dict[str, Any]) -> str:
    """A plain-text table of a :func:`localization_report`: energy in mask, pointing game, paired differences."""
    refs = [r for r in REFERENCES if r in rep["methods"]]
    head = f"{'map':<22}{'energy in mask':>18}{'pointing':>16}" + "".join(f"{'energy - ' + r:>20}" for r in refs)
    lines = [f"{rep.get('checkpoint', 'model')}: {rep['dataset']}, first {rep['n']} images, accuracy {rep['accuracy']:.3f}",
             f"mask: {rep['mask']}, covers {_fmt(rep['mask_share'], rep['mask_share_se'])} of the image "
             f"(= expected energy of a uniform map); pointing tolerance {rep['tolerance']} px",
             f"class-specific maps explain the {rep['target']}; gradcam at {rep['gradcam_layer']}; centre prior "
             f"sigma {rep['centre_sigma']:g} px; a map without positive energy scores 0 (counted "
             "per map), paired differences over the same images",
             head, "-" * len(head)]
    for name, r in rep["methods"].items():
        row = f"{name:<22}{_fmt(r['energy'], r['energy_se']):>18}{_fmt(r['pointing'], r['pointing_se']):>16}"
        for ref in refs:
            p = r["energy_minus"].get(ref)
            row += f"{_fmt(p['mean'], p['se'], True) if p else '':>20}"
        if r["n_no_positive"]:
            row += f"  ({r['n_no_positive']} map(s) without positive energy, scored 0)"
        lines.append(row)
    if rep.get("skipped"):
        lines.append(f"skipped (GAttA maps, plain model): {', '.join(rep['skipped'])}")
    v = rep.get("verdict")
    if v:
        lines += [f"verdict rule: {v['rule']}",
                  f"  gain - random lower 95%: {v['gain_minus_random_lower95']:+.3f}; gain - centre lower 95%: "
                  f"{v['gain_minus_centre_lower95']:+.3f}; gain - gradcam upper 95%: {v['gain_minus_gradcam_upper95']:+.3f}"
                  f" -> {'PASS' if v['passes'] else 'FAIL'}"]
    return "\n".join(lines)
