"""What kind of model this is: the one answer to "is this a GAttA model?"."""
from __future__ import annotations

from typing import Any

__all__ = ["is_gatta"]


def is_gatta(model: Any) -> bool:
    """Whether ``model`` has GAttA layers (agreement maps, alphas, a global query to cue).

    Args:
        model: a :class:`~gatta_viz.models.checkpoint.LoadedModel`, a :class:`~gatta_viz.core.network.GAttANet`
            (or anything with ``trace`` and ``layer_kinds``), or a plain network.
    Returns:
        True for a GAttA model (loaded or bare), False for a plain CNN or anything else.
    """
    net = model.model if hasattr(model, "preprocess") and hasattr(model, "model") else model
    return hasattr(net, "trace") and hasattr(net, "layer_kinds")
