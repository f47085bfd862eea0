"""Checks shared by the analysis entry points: model inputs, untrained GAttA parameters, layer names."""
from __future__ import annotations

import difflib
import warnings
from typing import Iterable, Mapping

import torch

__all__ = ["UntrainedGAttAWarning", "check_model_input", "is_untrained", "untrained_message", "warn_if_untrained",
           "unknown_name_message"]


class UntrainedGAttAWarning(UserWarning):
    """Maps are shown for a model whose GAttA parameters were never trained (every alpha is 0)."""


def check_model_input(x, what: str = "input") -> torch.Tensor:
    """Raise ValueError unless ``x`` is a float tensor (B, C, H, W) or (C, H, W); returns it as (B, C, H, W).

    Args:
        x: the model input.
        what: how to name it in the message.
    Returns:
        ``x`` with a batch dimension.
    Raises:
        ValueError: not a tensor, an integer/bool dtype (e.g. uint8 pixels), or the wrong number of dimensions.
    """
    if not torch.is_tensor(x):
        raise ValueError(f"{what}: expected a float tensor normalised like the training data, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        dtype = str(x.dtype).replace("torch.", "")
        raise ValueError(f"{what}: expected a float tensor normalised like the training data, got {dtype}"
                         + (" (raw pixels? prepare them with gv.prepare_image or divide by 255 and normalise)"
                            if x.dtype == torch.uint8 else ""))
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"{what}: expected images (B, C, H, W) or one image (C, H, W), got shape {tuple(x.shape)}")
    return x


def is_untrained(alphas: Mapping[str, float]) -> bool:
    """True when every alpha is exactly 0: the modulation is off and keys/queries never received a gradient."""
    return len(alphas) > 0 and all(float(a) == 0.0 for a in alphas.values())


def untrained_message(gain: bool = True) -> str:
    """What an untrained model's maps mean."""
    if gain:
        return ("untrained GAttA parameters: every alpha is 0, so pass 2 changes nothing and every α × agreement "
                "map is 0")
    return ("untrained GAttA parameters: every alpha is 0; raw agreement comes from untrained keys and queries, so "
            "structure in these maps reflects the backbone's features and random projections, not learned attention")


def warn_if_untrained(alphas: Mapping[str, float], gain: bool = True, stacklevel: int = 3) -> bool:
    """Issue an :class:`UntrainedGAttAWarning` when :func:`is_untrained`.

    Args:
        alphas: layer -> alpha.
        gain: whether the maps shown are alpha x agreement (the message says what they then show).
        stacklevel: as in :func:`warnings.warn`.
    Returns:
        whether it warned.
    """
    if is_untrained(alphas):
        warnings.warn(untrained_message(gain), UntrainedGAttAWarning, stacklevel=stacklevel)
        return True
    return False


def unknown_name_message(kind: str, name: str, known: Iterable[str], where: str = "") -> str:
    """``"no layer 'layer9' in CompactResNet; did you mean ['layer1', ...]? known: [...]"``-style message."""
    known = [k for k in known if k]
    close = difflib.get_close_matches(str(name), known, n=5, cutoff=0.5)
    msg = f"no {kind} {name!r}{' in ' + where if where else ''}"
    if close:
        msg += f"; did you mean {close}?"
    elif len(known) <= 30:
        msg += f"; choose from {known}"
    return msg
