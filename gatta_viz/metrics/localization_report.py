"""The localization report: every map of a model (gain maps, each layer's, Grad-CAM, integrated gradients...)
and the reference maps (random, centre prior, the priors fitted on training masks) scored per image on a data set
with garment masks, with paired differences over the same images and the verdict rule of docs/RESULTS.md.

The per-image measures and the priors are in :mod:`gatta_viz.metrics.localization`.
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from ..core.hooks import temporarily_eval
from .faithfulness import explain_func, layer_saliencies, parse_method
from .localization import (GATTA_METHODS, PRIORS, REFERENCES, Prior, _centre_sq_distance, average_precision_in_mask,
                           centre_prior, energy_in_mask, mask_share, pointing_hit, random_maps, region_gain,
                           roc_auc_in_mask, topk_in_mask)
from .stats import mean_se

__all__ = ["localization_report", "report_text"]


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
