"""Faithfulness of saliency maps: deletion and insertion curves and their AUC.

Deletion: pixels are replaced, most salient first, by a baseline value (default 0 in normalised space,
= the dataset's mean intensity; ``--baseline black`` uses raw 0, Fashion-MNIST's background); a faithful
map makes the target probability fall fast (low AUC).
Insertion: start from the baseline image and reveal pixels, most salient first; a faithful map makes
the probability rise fast (high AUC). The target is the model's predicted class (pass 2) on the clean
image. Curves have ``steps + 1`` points at fractions 0, 1/steps, ..., 1 of the pixels.

Region perturbation (``patch > 1``, ``--patch``; Samek et al. 2017, "Evaluating the visualization of what a
deep neural network has learned"): the image is split into non-overlapping ``patch x patch`` cells (edge
cells are smaller when H or W is not a multiple of ``patch``), cells are ranked by the mean saliency of
their pixels, and whole cells are deleted or inserted; the curve fractions are then fractions of cells.
Deleting scattered single pixels (e.g. for a random map) destroys the image faster than any contiguous
ordering (an off-manifold artefact), and agreement maps are only 7x7..28x28 anyway.

ROAD (``baseline="road"``, ``--baseline road``; Rong et al. 2022): deleted pixels are not set to a value but
filled by noisy linear imputation from the pixels that remain (:mod:`gatta_viz.metrics.imputation`), so the shape
of the deletion mask leaks little into the image; insertion keeps the most salient pixels and fills the rest
the same way (its first point, with nothing kept, is the mean image: 0 after normalisation).

Maps are named ``method`` or ``method:layer`` (e.g. ``gain:layer3``: that conv layer's map alone;
``--per-layer`` adds one per GAttA conv layer). ``gain`` is alpha x agreement (> 0 where pass 2 boosts; the
same in every trained model); ``agreement`` is the raw map, whose sign is a convention of training (the name
published result tables use). With ``random`` among the methods the report also holds,
for every other map, the paired difference of its AUCs from the random map's on the same images.

``gatta-viz faithfulness --n 200 --out results/faithfulness`` (:mod:`gatta_viz.cli.faithfulness`) compares
gain maps, raw agreement maps, Grad-CAM and a random map on the first N Fashion-MNIST test images.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from ..compute.attributions import gradcam, integrated_gradients, saliency
from ..compute.checks import check_model_input
from ..compute.maps import normalize, upsample
from .imputation import noisy_linear_impute
from ..core.hooks import temporarily_eval

__all__ = ["METHODS", "agreement_saliency", "layer_saliencies", "trace_saliency", "explain_func", "perturbation_curve", "perturbed_images", "auc", "faithfulness_report",
           "parse_method", "report_table", "example_panels"]

# "gain" = alpha x agreement (the default map everywhere); "agreement" = raw agreement (sign set by training)
METHODS = ("gain", "agreement", "total_gain", "gradcam", "random", "integrated_gradients", "saliency")


@torch.no_grad()
def agreement_saliency(model, x: torch.Tensor, layer: Optional[str] = None, gain: bool = True,
                       scale_layers: bool = True) -> np.ndarray:
    """A pixel-level map from a GAttA model's conv-layer maps.

    Default (``layer=None``): the mean over conv layers of each layer's signed map, upsampled to the input
    size and scaled by its own max |value| per image, so every layer has an equal vote. With ``layer``: that
    layer's upsampled map alone. ``gain=True`` (default) uses the gain map alpha x agreement (= gain - 1):
    positive where the layer is up-regulated, whatever the sign of alpha (with alpha < 0 the network boosts
    the positions that *disagree* with q_avg). ``gain=False`` uses raw agreement, whose sign is a convention
    of training. ``scale_layers=False`` skips the per-layer scaling: with ``gain=True`` that is the mean over
    layers of gain - 1 ("total_gain": each layer weighs by how strongly it actually modulates).

    Returns:
        (B, H, W) float32.
    """
    x = check_model_input(x, "agreement_saliency input")
    with temporarily_eval(model):
        t = model.trace(x)
    return trace_saliency(t, tuple(x.shape[2:]), layer, gain, scale_layers)


def layer_saliencies(t, size: Tuple[int, int], layers: Optional[Sequence[str]] = None, gain: bool = True,
                     scale_layers: bool = True) -> Dict[str, np.ndarray]:
    """Each conv GAttA layer's map of a trace, upsampled to ``size`` and (by default) divided per image by its
    own max |value| (all-zero maps stay zero).

    Args:
        t: a :class:`~gatta_viz.core.trace.GAttATrace`.
        size: (H, W) of the input.
        layers: conv layers to return (default: all, in forward order).
        gain, scale_layers: as :func:`agreement_saliency`.
    Returns:
        layer name -> (B, H, W) float32.
    Raises:
        ValueError: a name that is not a conv GAttA layer.
    """
    convs = [n for n, lt in t.layers.items() if lt.kind == "conv"]
    for n in layers or ():
        if n not in convs:
            raise ValueError(f"{n!r} is not a conv GAttA layer; conv layers: {convs}")
    out: Dict[str, np.ndarray] = {}
    for n in layers or convs:
        m = torch.as_tensor(upsample(t.layers[n].map(gain), size))  # (B, H, W)
        if scale_layers:
            s = m.abs().flatten(1).max(1).values.view(-1, 1, 1)
            m = torch.where(s > 0, m / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(m))
        out[n] = m.numpy().astype(np.float32)
    return out


def trace_saliency(t, size: Tuple[int, int], layer: Optional[str] = None, gain: bool = True,
                   scale_layers: bool = True) -> np.ndarray:
    """:func:`agreement_saliency` of a trace already computed (e.g. one run under a top-down cue).

    Args:
        t: a :class:`~gatta_viz.core.trace.GAttATrace`.
        size: (H, W) of the input.
        layer, gain, scale_layers: as :func:`agreement_saliency`.
    Returns:
        (B, H, W) float32: the mean of :func:`layer_saliencies` (or that one layer's).
    """
    maps = layer_saliencies(t, size, [layer] if layer is not None else None, gain, scale_layers)
    return np.mean(list(maps.values()), axis=0).astype(np.float32)


def explain_func(model, inputs: torch.Tensor, targets, method: str = "gain", layer: Optional[str] = None,
                 seed: int = 0, **kwargs) -> np.ndarray:
    """Saliency maps shaped like the input with channels collapsed, for Quantus-style tools.

    Args:
        model: GAttA model (plain models: gradcam, random, integrated_gradients, saliency only).
        inputs: (B, C, H, W) float tensor or array, normalised like the training data.
        targets: class per image.
        method: one of ``METHODS``. "gain" (default): alpha x agreement, where the modulation boosts (the same
            in every trained model); "agreement": raw signed agreement as the paper plots it, whose sign is set
            by training (kept under this name because published result tables use it); "total_gain":
            alpha x agreement averaged over layers without per-layer scaling; "gradcam", "random",
            "integrated_gradients", "saliency".
        layer: conv layer for "agreement"/"gain" (default: mean over layers) and "gradcam" (default: last GAttA conv layer).
        seed: for "random".
    Returns:
        (B, 1, H, W) float32 array.
    """
    dtype = inputs.dtype if torch.is_tensor(inputs) else np.asarray(inputs).dtype
    floating = dtype.is_floating_point if isinstance(dtype, torch.dtype) else np.issubdtype(dtype, np.floating)
    if not floating:
        name = str(dtype).replace("torch.", "")
        raise ValueError(f"explain_func inputs: expected a float tensor normalised like the training data, got {name}")
    x = torch.as_tensor(inputs, dtype=torch.float32)
    size = tuple(x.shape[2:])
    target = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if method in ("agreement", "gain"):
        m = agreement_saliency(model, x, layer, gain=method == "gain")
    elif method == "total_gain":
        m = agreement_saliency(model, x, layer, gain=True, scale_layers=False)
    elif method == "gradcam":
        if layer is None:
            if not hasattr(model, "layer_kinds"):
                raise ValueError("gradcam on a plain model needs layer=")
            layer = [n for n, k in model.layer_kinds.items() if k == "conv"][-1]
        m = upsample(gradcam(model, x, layer, target), size)
    elif method == "random":
        m = np.random.default_rng(seed).random((x.shape[0], *size)).astype(np.float32)
    elif method == "integrated_gradients":
        m = integrated_gradients(model, x, target, n_steps=kwargs.get("n_steps", 50))
    elif method == "saliency":
        m = saliency(model, x, target)
    else:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    return np.asarray(m, dtype=np.float32)[:, None]


def _check_patch(patch) -> None:
    """Raise ValueError unless ``patch`` is a positive int."""
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1:
        raise ValueError(f"patch must be a positive integer, got {patch!r}")


def _cell_ranks(sal: np.ndarray, h: int, w: int, patch: int) -> Tuple[np.ndarray, int]:
    """Perturbation rank of every pixel: its own rank (``patch=1``) or its ``patch x patch`` cell's.

    Cells tile the image on a ceil(h/patch) x ceil(w/patch) grid (edge cells may be smaller); a cell's
    score is the mean saliency over its real pixels. Ranks are by score descending, ties in raster order.

    Args:
        sal: (B, h * w) saliency.
        h, w: image size.
        patch: cell side in pixels.
    Returns:
        (B, h * w) rank per pixel (0 = perturbed first) and the number of ranked units (pixels or cells).
    """
    b = sal.shape[0]
    if patch == 1:
        scores, cell = sal, None
    else:
        gh, gw = -(-h // patch), -(-w // patch)
        padded = np.zeros((b, gh * patch, gw * patch), dtype=np.float64)
        padded[:, :h, :w] = sal.reshape(b, h, w)
        sums = padded.reshape(b, gh, patch, gw, patch).sum((2, 4)).reshape(b, -1)
        rows = np.minimum(patch, h - patch * np.arange(gh))  # real pixels per cell row / column
        cols = np.minimum(patch, w - patch * np.arange(gw))
        scores = sums / np.outer(rows, cols).reshape(1, -1)
        cell = ((np.arange(h) // patch)[:, None] * gw + (np.arange(w) // patch)[None, :]).reshape(-1)
    n = scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.empty_like(order)
    rank[np.arange(b)[:, None], order] = np.arange(n)[None, :]
    return (rank if cell is None else rank[:, cell]), n


@torch.no_grad()
def perturbation_curve(model, x: torch.Tensor, sal: np.ndarray, target, mode: str = "deletion", steps: int = 28,
                       baseline: Union[float, Sequence[float], str] = 0.0, batch_size: int = 512,
                       patch: int = 1, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """Target-class probability as pixels (or patch x patch regions) are deleted (or inserted), most salient first.

    Args:
        model: returns logits.
        x: (B, C, H, W) normalised inputs.
        sal: (B, H, W) or (B, 1, H, W) saliency; higher = more important. Ties keep raster order.
        target: class per image.
        mode: ``"deletion"`` or ``"insertion"``.
        steps: number of perturbation steps.
        baseline: value of a deleted pixel (normalised space): one number, or one per channel; or ``"road"``:
            deleted pixels are filled by noisy linear imputation from the kept ones (ROAD, Rong et al. 2022),
            and the insertion curve's first point (nothing kept) is the all-zero (mean) image plus noise.
        batch_size: forwards per call.
        patch: 1 perturbs single pixels; ``patch > 1`` perturbs whole non-overlapping ``patch x patch`` cells
            (region perturbation, Samek et al. 2017) ranked by their mean saliency (edge cells of a size not
            divisible by ``patch`` are smaller and averaged over their real pixels); step k then perturbs
            the first round(k * n_cells / steps) cells.
        noise: with ``baseline="road"``, std of the noise added to imputed pixels.
        seed: with ``baseline="road"``, seed of that noise.
    Returns:
        (B, steps + 1) probabilities.
    """
    perturb, n_units = _perturber(x, sal, mode, baseline, patch, noise, seed)
    b = x.shape[0]
    counts = [int(round(k * n_units / steps)) for k in range(steps + 1)]
    target = torch.as_tensor(target, dtype=torch.long).reshape(-1).expand(b) if np.ndim(target) == 0 else torch.as_tensor(target).reshape(-1)
    jobs = [(i, k) for i in range(b) for k in range(steps + 1)]
    probs = np.zeros((b, steps + 1), dtype=np.float64)
    with temporarily_eval(model):
        for s in range(0, len(jobs), batch_size):
            chunk = jobs[s : s + batch_size]
            p = torch.softmax(model(torch.stack([perturb(i, counts[k]) for i, k in chunk])).double(), 1)
            for j, (i, k) in enumerate(chunk):
                probs[i, k] = float(p[j, target[i]])
    return probs


def _perturber(x: torch.Tensor, sal, mode: str, baseline, patch: int, noise: float, seed: int):
    """Validate a perturbation set-up; return ``(perturb, n_units)``.

    ``perturb(i, count)`` is image ``i`` with its ``count`` most salient units (pixels or cells) deleted
    (``mode="deletion"``) or with only those kept (``"insertion"``), the rest filled by ``baseline``.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    _check_patch(patch)
    sal = np.asarray(sal, dtype=np.float32).reshape(x.shape[0], -1)
    b, hw = sal.shape
    if hw != x.shape[2] * x.shape[3]:
        raise ValueError(f"saliency has {hw} pixels, input has {x.shape[2] * x.shape[3]}")
    rank, n_units = _cell_ranks(sal, x.shape[2], x.shape[3], int(patch))
    rank_t = torch.from_numpy(rank).view(b, 1, *x.shape[2:])
    road = _is_road(baseline)
    if not road:
        base = torch.as_tensor(baseline, dtype=x.dtype).reshape(-1, 1, 1)
        if base.shape[0] not in (1, x.shape[1]):
            raise ValueError(f"baseline has {base.shape[0]} values, input has {x.shape[1]} channels")
        base = base.expand(x.shape[1:])
    gen = torch.Generator().manual_seed(seed)

    def perturb(i: int, count: int) -> torch.Tensor:
        top = rank_t[i] < count  # True where the pixel (or its cell) is among the `count` most salient
        keep = ~top if mode == "deletion" else top
        if road:
            return noisy_linear_impute(x[i], keep[0], noise, gen)
        return torch.where(keep, x[i], base)

    return perturb, n_units


def perturbed_images(x: torch.Tensor, sal: np.ndarray, mode: str = "deletion",
                     fractions: Sequence[float] = (0.1, 0.25, 0.5), baseline: Union[float, Sequence[float], str] = 0.0,
                     patch: int = 1, noise: float = 0.01, seed: int = 0) -> torch.Tensor:
    """The images a deletion or insertion curve feeds the model, at chosen fractions (to see what it scores).

    Args:
        x: (B, C, H, W) normalised inputs.
        sal: (B, H, W) saliency.
        mode: ``"deletion"`` or ``"insertion"``.
        fractions: fractions of units (pixels or cells) deleted / inserted, each in [0, 1].
        baseline, patch, noise, seed: as in :func:`perturbation_curve`.
    Returns:
        (B, len(fractions), C, H, W) tensor.
    """
    if any(not 0 <= f <= 1 for f in fractions):
        raise ValueError(f"fractions must lie in [0, 1], got {list(fractions)}")
    perturb, n_units = _perturber(x, sal, mode, baseline, patch, noise, seed)
    return torch.stack([torch.stack([perturb(i, int(round(f * n_units))) for f in fractions]) for i in range(x.shape[0])])


def _is_road(baseline) -> bool:
    """True for the ROAD fill; ValueError for any other string."""
    if isinstance(baseline, str):
        if baseline != "road":
            raise ValueError(f"baseline must be a number, one number per channel or 'road', got {baseline!r}")
        return True
    return False


def auc(curve: np.ndarray) -> np.ndarray:
    """Area under curves sampled at equal steps over [0, 1] (trapezoid rule). (..., steps+1) -> (...)."""
    c = np.asarray(curve, dtype=np.float64)
    return (c[..., 1:] + c[..., :-1]).sum(-1) / (2 * (c.shape[-1] - 1))


def parse_method(name: str) -> Tuple[str, Optional[str]]:
    """Split a map name ``"method"`` or ``"method:layer"`` (e.g. ``"agreement:layer3"``) into its parts.

    Raises:
        ValueError: unknown method, or a layer given for a method that takes none.
    """
    method, _, layer = str(name).partition(":")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} in {name!r}; choose from {METHODS} (optionally ':LAYER')")
    if layer and method not in ("agreement", "gain", "gradcam"):
        raise ValueError(f"{name!r}: only agreement, gain and gradcam take a layer")
    return method, layer or None


def _mean_se(v: np.ndarray) -> Tuple[float, float]:
    """Mean and standard error of the mean (0 for one value)."""
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def faithfulness_report(model, x: torch.Tensor, methods: Sequence[str] = ("gain", "gradcam", "random"),
                        steps: int = 28, batch_size: int = 100, seed: int = 0,
                        baseline: Union[float, Sequence[float], str] = 0.0, patch: int = 1,
                        noise: float = 0.01) -> Dict[str, Any]:
    """Deletion and insertion curves and AUCs of several saliency methods on the same images.

    Args:
        model: GAttA model.
        x: (N, C, H, W) normalised inputs.
        methods: map names, ``method`` from ``METHODS`` or ``method:layer`` (see :func:`parse_method`).
        steps: perturbation steps.
        batch_size: images per chunk.
        seed: random-map seed (and ROAD noise seed).
        baseline: value of a deleted pixel in normalised space, one number or one per channel
            (0: the dataset's mean intensity), or ``"road"`` (noisy linear imputation).
        patch: region side for region perturbation (1: single pixels); see :func:`perturbation_curve`.
        noise: ROAD imputation noise (``baseline="road"`` only).
    Returns:
        ``{"n", "steps", "baseline", "patch", "target": "predicted class (pass 2)", "methods": {m: {"deletion_auc",
        "deletion_auc_se", "insertion_auc", "insertion_auc_se", "deletion_curve", "insertion_curve",
        "deletion_aucs", "insertion_aucs"}}}`` (curves are means over images, ``*_aucs`` per image). With
        ``"random"`` among the methods every other entry also has ``"deletion_minus_random"``,
        ``"insertion_minus_random"`` and their ``*_se``: paired differences over the same images.
    """
    _check_patch(patch)
    parsed = {m: parse_method(m) for m in methods}
    road = _is_road(baseline)
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)])
    out: Dict[str, Any] = {"n": int(len(x)), "steps": steps, "baseline": "road" if road else np.asarray(baseline, dtype=float).tolist(),
                           "patch": int(patch), "target": "predicted class (pass 2)", "methods": {}}
    if road:
        out["noise"] = float(noise)
    per_image: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for m, (method, layer) in parsed.items():
        dels, ins = [], []
        for i in tqdm(range(0, len(x), batch_size), desc=f"faithfulness {m}", leave=False):
            xb, tb = x[i : i + batch_size], pred[i : i + batch_size]
            sal = explain_func(model, xb, tb, method=method, layer=layer, seed=seed + i)[:, 0]
            kw = dict(steps=steps, baseline=baseline, patch=patch, noise=noise, seed=seed + i)
            dels.append(perturbation_curve(model, xb, sal, tb, "deletion", **kw))
            ins.append(perturbation_curve(model, xb, sal, tb, "insertion", **kw))
        d, n_ = np.concatenate(dels), np.concatenate(ins)
        per_image[m] = (auc(d), auc(n_))
        (dm, dse), (im, ise) = _mean_se(per_image[m][0]), _mean_se(per_image[m][1])
        out["methods"][m] = {
            "deletion_auc": dm, "deletion_auc_se": dse, "insertion_auc": im, "insertion_auc_se": ise,
            "deletion_curve": d.mean(0).tolist(), "insertion_curve": n_.mean(0).tolist(),
            "deletion_aucs": per_image[m][0].tolist(), "insertion_aucs": per_image[m][1].tolist(),
        }
    if "random" in per_image:
        for m, r in out["methods"].items():
            if m == "random":
                continue
            for j, kind in enumerate(("deletion", "insertion")):
                r[f"{kind}_minus_random"], r[f"{kind}_minus_random_se"] = _mean_se(per_image[m][j] - per_image["random"][j])
    return out


def report_table(rep: Dict[str, Any]) -> str:
    """Markdown table of a :func:`faithfulness_report`."""
    paired = "random" in rep["methods"]
    head = "| map | deletion AUC (lower is better) | insertion AUC (higher is better) |"
    rows = [head + (" deletion - random (paired) | insertion - random (paired) |" if paired else ""),
            "|---|---:|---:|" + ("---:|---:|" if paired else "")]
    for m, r in rep["methods"].items():
        row = f"| {m} | {r['deletion_auc']:.3f} ± {r['deletion_auc_se']:.3f} | {r['insertion_auc']:.3f} ± {r['insertion_auc_se']:.3f} |"
        if paired:
            row += " |".join(f" {r[k + '_minus_random']:+.3f} ± {r[k + '_minus_random_se']:.3f}" if k + "_minus_random" in r else " "
                             for k in ("deletion", "insertion")) + " |"
        rows.append(row)
    return "\n".join(rows)


def example_panels(model, x: torch.Tensor, sals: Dict[str, np.ndarray], target: int,
                   fractions: Sequence[float] = (0.1, 0.25, 0.5), baseline: Union[float, Sequence[float], str] = 0.0,
                   patch: int = 1, noise: float = 0.01, seed: int = 0, mean: Sequence[float] = (0.0,),
                   std: Sequence[float] = (1.0,)) -> Dict[str, List[Tuple[str, np.ndarray]]]:
    """One image as the deletion and insertion curves show it to the model, one row per map.

    Args:
        model: returns logits.
        x: (1, C, H, W) normalised input.
        sals: map name -> (H, W) saliency.
        target: class whose probability is given in each panel's title.
        fractions: fractions deleted (first columns) and inserted (last columns).
        baseline, patch, noise, seed: as in :func:`perturbation_curve`.
        mean, std: the normalisation, undone for display (pixels clipped to [0, 1]).
    Returns:
        map name -> list of (title with the fraction and p(target), (H, W) or (H, W, 3) image in [0, 1]);
        draw with :func:`gatta_viz.analysis.metric_plots.plot_image_grid`.
    """
    m_ = torch.as_tensor(mean, dtype=x.dtype).reshape(-1, 1, 1)
    s_ = torch.as_tensor(std, dtype=x.dtype).reshape(-1, 1, 1)
    cols = [(mode, f) for mode in ("deletion", "insertion") for f in fractions]
    rows: Dict[str, List[Tuple[str, np.ndarray]]] = {}
    for name, sal in sals.items():
        cells = []
        for mode, f in cols:
            img = perturbed_images(x[:1], np.asarray(sal)[None], mode, [f], baseline, patch, noise, seed)[0, 0]
            with torch.no_grad(), temporarily_eval(model):
                p = float(torch.softmax(model(img[None]).double(), 1)[0, target])
            shown = (img * s_ + m_).clamp(0, 1).permute(1, 2, 0).squeeze(-1).cpu().numpy()
            cells.append((f"{mode[:3]} {100 * f:.0f}%: p={p:.2f}", shown))
        rows[name] = cells
    return rows
