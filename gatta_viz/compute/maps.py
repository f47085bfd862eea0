"""Maps as heatmaps: upsampling to the input size and signed/rectified, per-layer/joint normalisation.

The default map is the gain map alpha x agreement (> 0 boosted by pass 2, < 0 suppressed); raw agreement, whose
sign is a convention of training, with ``gain=False``. Numbers only: no plotting library is imported here."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..core.trace import GAttATrace

__all__ = ["upsample", "normalize", "normalize_with_scales", "normalize_shared", "conv_layer_names", "conv_heatmaps"]

ArrayLike = Union[np.ndarray, torch.Tensor]


def upsample(maps: ArrayLike, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (H, W) or (B, H, W) maps to ``size`` = (H_out, W_out).

    Orientation is kept (row 0 stays the top row, column 0 the left column) and any aspect
    ratio works; ``align_corners=False`` so each map cell covers an equal area of the input.

    Args:
        maps: a map or a batch of maps.
        size: output (height, width).
    Returns:
        float32 array of shape ``size`` or (B, *size).
    Raises:
        ValueError: maps that are not (H, W) or (B, H, W), or a size that is not positive.
    """
    t = torch.as_tensor(np.asarray(maps.detach().cpu() if torch.is_tensor(maps) else maps), dtype=torch.float32)
    if t.dim() not in (2, 3):
        raise ValueError(f"maps must be (H, W) or (B, H, W), got shape {tuple(t.shape)}")
    squeeze = t.dim() == 2
    t = t.unsqueeze(0) if squeeze else t
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    out = F.interpolate(t.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    out = out.numpy()
    return out[0] if squeeze else out


def normalize_with_scales(maps: Dict[str, np.ndarray], signed: bool = True,
                          joint: bool = False) -> Tuple[Dict[str, np.ndarray], Dict[str, float]]:
    """:func:`normalize`, also returning the divisor used for every map (what +1 stands for).

    Args:
        maps: name -> map.
        signed: keep the sign (scaled into [-1, 1]) or keep the positive part only (rectified, [0, 1]).
        joint: one scale for every map (the largest max |value|) instead of one per map.
    Returns:
        (name -> scaled float32 array, name -> scale); a scale is 0 for a map that is all zero (or all
        negative when rectified), whose scaled map is then zeros.
    Raises:
        ValueError: a map holding NaN or infinite values.
    """
    prepared = {k: (np.asarray(v, dtype=np.float32) if signed else np.maximum(np.asarray(v, dtype=np.float32), 0)) for k, v in maps.items()}
    for k, v in prepared.items():
        if not np.all(np.isfinite(v)):
            raise ValueError(f"map {k!r} contains NaN or infinite values")

    def scale(v: np.ndarray) -> float:
        return float(np.abs(v).max()) if v.size else 0.0

    own = {k: scale(v) for k, v in prepared.items()}
    joint_scale = max(own.values(), default=0.0)
    out, scales = {}, {}
    for k, v in prepared.items():
        s = joint_scale if joint else own[k]
        scales[k] = s
        out[k] = (v / s).astype(np.float32) if s > 0 else np.zeros_like(v, dtype=np.float32)
    return out, scales


def normalize(maps: Dict[str, np.ndarray], signed: bool = True, joint: bool = False) -> Dict[str, np.ndarray]:
    """Scale maps for display.

    signed: ``x / max|x|`` -> [-1, 1]; 0 stays 0, so a diverging colormap centred at 0 shows positive
    (boosted, for gain maps) and negative (suppressed) values. rectified (``signed=False``): ``max(x, 0) / max``
    -> [0, 1]. ``joint=True`` uses one scale for all maps (layers become comparable); otherwise each map has its
    own. A map that is all zero (or all negative when rectified) becomes zeros, never NaN.

    Args:
        maps: name -> array of any shape.
        signed: keep the sign (True) or rectify (False).
        joint: one scale across all maps.
    Returns:
        name -> float32 array of the same shape.
    """
    return normalize_with_scales(maps, signed, joint)[0]


def normalize_shared(rows: Sequence[Dict[str, np.ndarray]], signed: bool = True, joint: bool = False
                     ) -> Tuple[List[Dict[str, np.ndarray]], Dict[str, float]]:
    """Normalise several sets of maps of the same layers (e.g. one image without and with a top-down cue) so that
    they can be compared: one scale per layer shared by every set (the largest max |value| of that layer among
    them), or with ``joint`` one scale for every map of every set.

    Args:
        rows: sets of maps, name -> array; every set has the same names.
        signed, joint: as :func:`normalize`.
    Returns:
        (one dict of scaled float32 maps per set, name -> the shared scale, i.e. what +1 stands for); a scale of
        0 (all maps zero) gives zeros.
    Raises:
        ValueError: sets that do not hold the same layers, or a map holding NaN or infinite values.
    """
    rows = list(rows)
    if not rows:
        return [], {}
    names = list(rows[0])
    if any(list(r) != names for r in rows[1:]):
        raise ValueError(f"every set of maps must hold the same layers, got {[list(r) for r in rows]}")
    own = [normalize_with_scales(r, signed, False)[1] for r in rows]  # also checks for NaN / inf
    scales = {n: max(s[n] for s in own) for n in names}
    if joint:
        top = max(scales.values(), default=0.0)
        scales = {n: top for n in names}
    out = []
    for r in rows:
        d = {}
        for n, v in r.items():
            v = np.asarray(v, dtype=np.float32)
            v = v if signed else np.maximum(v, 0)
            d[n] = (v / scales[n]).astype(np.float32) if scales[n] > 0 else np.zeros_like(v, dtype=np.float32)
        out.append(d)
    return out, scales


def conv_layer_names(trace: GAttATrace, layers: Optional[Sequence[str]] = None) -> List[str]:
    """The trace's conv layers in forward order, or the subset ``layers`` of them.

    Args:
        trace: a GAttA trace.
        layers: names to keep (None: all conv layers).
    Returns:
        layer names, in forward order.
    Raises:
        ValueError: a name in ``layers`` is not a conv layer of the trace (the message lists those that are).
    """
    names = [n for n, lt in trace.layers.items() if lt.kind == "conv"]
    if layers is None:
        return names
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ValueError(f"not conv GAttA layers of this trace: {unknown}; conv layers are {names}")
    return [n for n in names if n in layers]


def conv_heatmaps(
    trace: GAttATrace,
    index: int,
    size: Tuple[int, int],
    signed: bool = True,
    joint: bool = False,
    layers: Optional[Sequence[str]] = None,
    gain: bool = True,
) -> Dict[str, np.ndarray]:
    """Normalised maps of one image's conv layers, upsampled to the input size.

    Normalisation happens after upsampling, so values are in [-1, 1] (signed) or [0, 1].

    Args:
        trace: a trace from ``model.trace``.
        index: which image of the batch.
        size: input (height, width).
        signed, joint: see :func:`normalize`.
        layers: subset of conv layers (default: all conv layers, in forward order).
        gain: the gain map alpha x agreement (default: > 0 boosted by pass 2, < 0 suppressed); False gives
            raw agreement, whose sign is set by training.
    Returns:
        layer name -> (H, W) float32 array.
    """
    names = conv_layer_names(trace, layers)
    raw = {n: upsample(trace.layers[n].map(gain)[index], size) for n in names}
    return normalize(raw, signed=signed, joint=joint)
