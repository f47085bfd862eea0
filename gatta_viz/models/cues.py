"""Top-down cues stored with a checkpoint: one global query per class, and the steering definition.

The one place for the cue maths: :meth:`LoadedModel.cue` and the explain pipeline's cue resolution
(:func:`gatta_viz.compute.cue.resolve_cue`) both come here.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

__all__ = ["steering_queries", "cue_definition", "class_cue"]


def steering_queries(means: torch.Tensor, sign: int) -> torch.Tensor:
    """Class queries with the part all classes share removed: ``sign * (m_c - mean_c' m_c')``, each rescaled to
    the norm of ``m_c``.

    Args:
        means: (C, d) mean pass-1 q_avg per class.
        sign: +1 or -1 (calibrated per model: which way moves gain energy onto the cued class's garment).
    Returns:
        (C, d) queries.
    """
    centred = means - means.mean(0, keepdim=True)
    scale = means.norm(dim=1, keepdim=True) / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return float(sign) * centred * scale


def cue_definition(meta: Mapping[str, Any]) -> str:
    """``"steering"`` when a checkpoint's ``meta`` stores a calibrated cue sign (scene models, see
    ``gatta-viz cues``), else ``"mean"``."""
    info = meta.get("class_queries") or {}
    return "steering" if info.get("sign") in (1, -1) else "mean"


def class_cue(loaded: Any, class_name: str, definition: Optional[str] = None) -> torch.Tensor:
    """A top-down query (d,) for ``class_name`` from a loaded model's stored class queries.

    Args:
        loaded: a :class:`~gatta_viz.models.checkpoint.LoadedModel` (``class_queries``, ``classes``, ``meta``, ``name``).
        class_name: one of its classes.
        definition: ``"mean"``: the stored mean pass-1 q_avg of images holding that class alone;
            ``"steering"``: that mean minus the mean over classes, rescaled to the mean's norm, times the sign
            calibrated on training scenes (:func:`steering_queries`). Default: :func:`cue_definition`.
    Returns:
        The (d,) query.
    Raises:
        ValueError: no stored class queries, an unknown class or definition, "steering" without a calibrated sign.
    """
    if loaded.class_queries is None:
        raise ValueError(f"model {loaded.name} has no stored class queries; compute them with "
                         "gatta_viz.class_queries(model, training_data) or `gatta-viz cues CHECKPOINT OUT`")
    if class_name not in loaded.classes:
        raise ValueError(f"unknown class {class_name!r} for cueing; classes: {loaded.classes}")
    definition = definition or cue_definition(loaded.meta)
    if definition == "mean":
        return loaded.class_queries[loaded.classes.index(class_name)]
    if definition != "steering":
        raise ValueError(f"unknown cue definition {definition!r}; use 'mean' or 'steering'")
    sign = (loaded.meta.get("class_queries") or {}).get("sign")
    if sign not in (1, -1):
        raise ValueError(f"model {loaded.name} has no calibrated cue sign (only scene models get one: "
                         "`gatta-viz cues` on a checkpoint trained on fmnist-pairs); use definition='mean'")
    return steering_queries(loaded.class_queries, sign)[loaded.classes.index(class_name)]
