"""Top-down cues for the explain pipeline: what a ``cue`` option means as a query, and computing under it.

A cue replaces the query pass 1 pools from the image (``model.trace(x, query=q)``). A class name is the
model's stored class query (:func:`gatta_viz.models.cues.class_cue`, where the steering maths lives); a tensor is
taken as the query itself.
"""
from __future__ import annotations

import difflib
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

from ..models.checkpoint import LoadedModel
from ..models.kinds import is_gatta

__all__ = ["CUSTOM_QUERY", "Cue", "resolve_cue", "CuedForward", "cued_ablation"]

CUSTOM_QUERY = "custom query"  # the name of a cue given as a query tensor rather than a class name


Cue = Union[None, str, torch.Tensor]


def resolve_cue(model, cue: Cue) -> Tuple[Optional[torch.Tensor], Optional[str]]:
    """The query and the name of a top-down cue.

    Args:
        model: a :class:`LoadedModel` or a GAttA model.
        cue: None; a class name (the model's stored class query, ``LoadedModel.cue``; letter case may differ);
            or a query tensor of shape (d,) (the same for every image) or (B, d).
    Returns:
        (query or None, name or None): the name is the class name as the model spells it, or
        :data:`CUSTOM_QUERY` for a tensor.
    Raises:
        ValueError: a model without GAttA layers; a class name for a bare model or for a model without stored
            class queries (the message names ``gatta-viz cues``); an unknown class (the message lists the
            classes); a tensor of the wrong shape or with NaN/inf; anything else.
    """
    if cue is None:
        return None, None
    net = model.model if isinstance(model, LoadedModel) else model
    name = model.name if isinstance(model, LoadedModel) else type(model).__name__
    if not is_gatta(net):
        raise ValueError(f"a top-down cue needs a GAttA model: {name} has no GAttA layers, so there is no global "
                         "query to replace")
    d = int(getattr(net, "d", 0))
    if isinstance(cue, str):
        if not isinstance(model, LoadedModel):
            raise ValueError(f"a cue given by class name ({cue!r}) needs a model loaded with its class queries "
                             f"(gv.load_model(...)); for a bare GAttA model pass the query itself, a tensor of "
                             f"shape ({d},)")
        if model.class_queries is None:
            raise ValueError(f"model {model.name} has no stored class queries to cue with: store them with "
                             "`gatta-viz cues CHECKPOINT OUT` (or gatta_viz.store_class_queries), or pass a query "
                             f"tensor of shape ({d},)")
        classes = list(model.classes)
        if cue not in classes:
            same = [c for c in classes if c.lower() == cue.strip().lower()]
            if len(same) != 1:
                close = difflib.get_close_matches(cue, classes, n=1, cutoff=0.5)
                raise ValueError(f"unknown class {cue!r} to cue with" + (f"; did you mean {close[0]!r}?" if close else "")
                                 + f" Classes of {model.name}: {', '.join(classes)}")
            cue = same[0]
        return model.cue(cue).detach(), cue
    if torch.is_tensor(cue):
        if not torch.is_floating_point(cue) or cue.dim() not in (1, 2) or cue.shape[-1] != d:
            raise ValueError(f"a cue query must be a float tensor of shape ({d},) or (B, {d}), got "
                             f"{str(cue.dtype).replace('torch.', '')} {tuple(cue.shape)}")
        if not torch.isfinite(cue).all():
            raise ValueError("the cue query contains NaN or infinite values")
        return cue.detach(), CUSTOM_QUERY
    raise ValueError(f"cue must be a class name or a query tensor of shape ({d},), got {type(cue).__name__}")


class CuedForward:
    """A GAttA model's pass-2 logits under a fixed top-down query, as a function of the input (what captum's
    Grad-CAM differentiates); ``backbone`` lets it find the layer."""

    def __init__(self, net, query: torch.Tensor) -> None:
        self.net, self.query, self.backbone = net, query, net.backbone

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.trace(x, query=self.query).logits_pass2


@torch.no_grad()
def cued_ablation(net, x: torch.Tensor, pred: torch.Tensor, reference: torch.Tensor, query: torch.Tensor
                   ) -> Dict[str, np.ndarray]:
    """:func:`ablation_scores` under a top-down query: p(pred | cue) - p(pred | cue, one layer's alpha = 0)."""
    def probs(logits):
        return torch.softmax(logits.double(), 1).gather(1, pred.view(-1, 1))[:, 0].cpu().numpy()

    full = probs(reference)
    return {n: full - probs(net.trace(x, alpha_override={n: 0.0}, query=query).logits_pass2) for n in net.layer_names}
