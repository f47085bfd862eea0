"""Attributions through captum (Grad-CAM, Integrated Gradients, Saliency) and their rank correlation with GAttA maps
(the gain map alpha x agreement by default).

On a GAttA model every backbone layer runs twice. captum's layer methods record the layer's *last*
call, i.e. its pass-2 output (the activation before GAttA's modulation of that layer, after the
modulation of the layers below it), and the gradient of the pass-2 logits with respect to it.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .checks import check_model_input, unknown_name_message
from ..models.kinds import is_gatta
from .maps import upsample

__all__ = ["backbone_layer", "gradcam", "integrated_gradients", "saliency", "rank_correlation", "compare_with_captum"]

Target = Union[int, Sequence[int], torch.Tensor]


def backbone_layer(model: nn.Module, name: str) -> nn.Module:
    """The module called ``name`` in the backbone (GAttA model) or in the model itself (plain model).

    Args:
        model: a GAttA model or a plain CNN.
        name: a module name as ``named_modules()`` gives it (``"layer3"``, ``"features.10"``).
    Returns:
        the module (what Grad-CAM hooks).
    Raises:
        ValueError: no module of that name (the message suggests close names).
    """
    root = getattr(model, "backbone", model)
    modules = dict(root.named_modules())
    if name not in modules or not name:
        raise ValueError(unknown_name_message("layer", name, list(modules), type(root).__name__))
    return modules[name]


def _target(target: Target, batch: int) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"target has {t.numel()} entries for a batch of {batch}")
    return t


def gradcam(model: nn.Module, x: torch.Tensor, layer: str, target: Target, relu: bool = False) -> np.ndarray:
    """captum ``LayerGradCam`` at backbone layer ``layer``.

    Args:
        model: GAttA or plain model returning logits.
        x: input batch (B, C, H, W).
        layer: backbone module name (e.g. ``"layer3"``).
        target: class index, one per image or one for all.
        relu: rectify as in the Grad-CAM paper (False keeps the sign, comparable with signed agreement).
    Returns:
        (B, h, w) maps at the layer's resolution.
    """
    from captum.attr import LayerGradCam  # captum imports matplotlib: loaded only when an attribution is asked for

    x = check_model_input(x, "gradcam input")
    cam = LayerGradCam(model, backbone_layer(model, layer)).attribute(x, target=_target(target, x.shape[0]), relu_attributions=relu)
    return cam.detach().sum(1).cpu().numpy()


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: Target, n_steps: int = 50,
                         baseline: Optional[torch.Tensor] = None, internal_batch_size: int = 64) -> np.ndarray:
    """captum ``IntegratedGradients`` (baseline: zeros = the dataset mean in normalised space), channels summed.

    Args:
        model: any classifier returning logits (a GAttA model's are pass 2's).
        x: inputs (B, C, H, W), float, normalised like the training data.
        target: class per image (int or (B,) tensor).
        n_steps: integration steps.
        baseline: the reference input (default: zeros).
        internal_batch_size: inputs per forward inside captum.
    Returns:
        (B, H, W) attributions.
    """
    from captum.attr import IntegratedGradients

    x = check_model_input(x, "integrated_gradients input")
    ig = IntegratedGradients(model)
    attr = ig.attribute(x, baselines=baseline if baseline is not None else torch.zeros_like(x),
                        target=_target(target, x.shape[0]), n_steps=n_steps, internal_batch_size=internal_batch_size)
    return attr.detach().sum(1).cpu().numpy()


def saliency(model: nn.Module, x: torch.Tensor, target: Target) -> np.ndarray:
    """captum ``Saliency``: |d logit / d pixel|, max over channels.

    Args:
        model: any classifier returning logits.
        x: inputs (B, C, H, W), float, normalised like the training data.
        target: class per image (int or (B,) tensor).
    Returns:
        (B, H, W) float array.
    """
    from captum.attr import Saliency

    x = check_model_input(x, "saliency input")
    attr = Saliency(model).attribute(x.clone().requires_grad_(True), target=_target(target, x.shape[0]), abs=True)
    return attr.detach().amax(1).cpu().numpy()


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank (as Spearman's rho requires)."""
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    sv = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two 2-D maps, after upsampling both to the larger size.

    Args:
        a: a 2-D map.
        b: another 2-D map (any size).
    Returns:
        rho in [-1, 1]; NaN if either map is constant (no ranking to compare).
    Raises:
        ValueError: a map that is not 2-D.
    """
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"rank_correlation takes two 2-D maps, got {a.shape} and {b.shape}")
    if a.shape != b.shape:
        size = (max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1]))
        a, b = upsample(a, size), upsample(b, size)
    ra, rb = _ranks(a.ravel()), _ranks(b.ravel())
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def compare_with_captum(model: nn.Module, x: torch.Tensor, target: Target, layers: Optional[Sequence[str]] = None,
                        ig_steps: int = 50, gain: bool = True) -> List[Dict[str, float]]:
    """Spearman correlation between each conv layer's map and Grad-CAM (same layer), IG and Saliency.

    Args:
        model: a GAttA model.
        x: inputs (B, C, H, W), float, normalised like the training data.
        target: class per image (e.g. the predicted class).
        layers: conv layers (default: all).
        ig_steps: Integrated Gradients steps.
        gain: compare the gain map alpha x agreement (default; > 0 where pass 2 boosts) or, with False, raw
            agreement, whose sign is set by training (so its correlations flip sign with it). A layer with
            alpha = 0 has a constant gain map: its correlations are NaN.
    Returns:
        One row per (image, layer): ``image, layer, map`` ("gain" or "agreement"), ``gradcam``,
        ``integrated_gradients``, ``saliency``.
    Raises:
        ValueError: a model that is not GAttA, or a name in ``layers`` that is not one of its conv layers.
    """
    if not is_gatta(model):
        raise ValueError("compare_with_captum needs a GAttA model (one with .trace)")
    x = check_model_input(x, "compare_with_captum input")
    with torch.no_grad():
        tr = model.trace(x)
    convs = [n for n, lt in tr.layers.items() if lt.kind == "conv"]
    layers = list(layers) if layers is not None else convs
    for name in layers:
        if name not in convs:
            raise ValueError(f"{name!r} is not a conv layer of this model; conv layers: {convs}")
    ig = integrated_gradients(model, x, target, n_steps=ig_steps)
    sal = saliency(model, x, target)
    rows = []
    for name in layers:
        cams = gradcam(model, x, name, target)
        m = tr.layers[name].map(gain).cpu().numpy()
        for i in range(x.shape[0]):
            rows.append({
                "image": i, "layer": name, "map": "gain" if gain else "agreement",
                "gradcam": rank_correlation(m[i], cams[i]),
                "integrated_gradients": rank_correlation(m[i], ig[i]),
                "saliency": rank_correlation(m[i], sal[i]),
            })
    return rows
