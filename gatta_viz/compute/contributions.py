"""Layer contributions: agreement statistics per layer and the effect of switching one layer's modulation off."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..core.trace import GAttATrace
from ..models.kinds import is_gatta

__all__ = ["layer_statistics", "ablation_scores", "contribution_table"]


def layer_statistics(trace: GAttATrace, index: Optional[int] = None) -> List[Dict[str, object]]:
    """Per layer: alpha, mean and std of the agreement, share of positions up-/down-regulated, mean gain.

    A position is up-regulated when its gain 1 + alpha * gatta is above 1, down-regulated when below.

    Args:
        trace: a trace.
        index: one image of the batch, or None for all positions of all images.
    Returns:
        One dict per layer, in forward order.
    """
    rows = []
    for name, lt in trace.layers.items():
        g = lt.agreement if index is None else lt.agreement[index]
        g = g.detach().double().cpu()
        gain = 1 + lt.alpha * g
        rows.append({
            "layer": name,
            "kind": lt.kind,
            "alpha": float(lt.alpha),
            "mean": float(g.mean()),
            "std": float(g.std(unbiased=False)),
            "frac_up": float((gain > 1).double().mean()),
            "frac_down": float((gain < 1).double().mean()),
            "mean_gain": float(gain.mean()),
        })
    return rows


def _probs(logits: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.detach().double(), dim=1).gather(1, target.view(-1, 1))[:, 0].cpu().numpy()


@torch.no_grad()
def ablation_scores(model, x: torch.Tensor, target, layers: Optional[Sequence[str]] = None,
                    reference: Optional[torch.Tensor] = None) -> Dict[str, np.ndarray]:
    """Change of the target-class probability when one layer's modulation is switched off.

    score(layer) = p(target | full model) - p(target | alpha_layer = 0, other layers unchanged).
    Positive: that layer's attention supported the target class. A layer whose alpha is already
    0 scores exactly 0 (the two forwards are the same computation). One batched forward per layer.

    Args:
        model: a GAttA model.
        x: inputs (B, C, H, W).
        target: class per image (int or (B,) tensor).
        layers: which layers (default: all).
        reference: the full model's pass-2 logits on ``x`` if already computed (saves one forward).
    Returns:
        layer name -> (B,) float64 array.
    Raises:
        ValueError: a model that is not GAttA, or ``reference`` with another number of rows than ``x``.
    """
    if not is_gatta(model):
        raise ValueError("ablation_scores needs a GAttA model (one with .trace)")
    t = torch.as_tensor(target, dtype=torch.long, device=x.device).reshape(-1)
    t = t.expand(x.shape[0]) if t.numel() == 1 else t
    if reference is not None and tuple(reference.shape[:1]) != (x.shape[0],):
        raise ValueError(f"reference logits have {reference.shape[0]} rows for {x.shape[0]} images")
    full = _probs(reference if reference is not None else model.trace(x).logits_pass2, t)
    out = {}
    for name in layers if layers is not None else model.layer_names:
        off = _probs(model.trace(x, alpha_override={name: 0.0}).logits_pass2, t)
        out[name] = full - off
    return out


@torch.no_grad()
def contribution_table(model, x: torch.Tensor, targets=None) -> List[Dict[str, object]]:
    """All layers in one table: statistics over the batch plus mean ablation scores.

    Args:
        model: a GAttA model.
        x: inputs (B, C, H, W).
        targets: true classes (B,) if known.
    Returns:
        One row per layer: the :func:`layer_statistics` columns, ``dprob_pred`` (mean ablation score for
        the model's predicted class) and, with ``targets``, ``dprob_true``.
    """
    trace = model.trace(x)
    pred = trace.logits_pass2.argmax(1)
    rows = layer_statistics(trace)
    by_pred = ablation_scores(model, x, pred)
    by_true = ablation_scores(model, x, torch.as_tensor(targets).reshape(-1)) if targets is not None else None
    for r in rows:
        r["dprob_pred"] = float(by_pred[r["layer"]].mean())
        if by_true is not None:
            r["dprob_true"] = float(by_true[r["layer"]].mean())
    return rows
