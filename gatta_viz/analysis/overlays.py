"""Heatmaps blended over images."""
from __future__ import annotations

from typing import Union

import numpy as np
from PIL import Image

from .heatmaps import upsample

__all__ = ["to_rgb_array", "colorize", "overlay"]


def to_rgb_array(image: Union[Image.Image, np.ndarray]) -> np.ndarray:
    """Any PIL image or array ((H, W), (H, W, 1|3|4), uint8 or float in [0, 1]) -> float32 (H, W, 3) in [0, 1]."""
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    else:
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
            arr = np.transpose(arr, (1, 2, 0))  # (C, H, W) -> (H, W, C)
        arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise ValueError(f"image must be (H, W) or (H, W, C), got shape {arr.shape}")
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        arr = arr[:, :, :3]
    return np.clip(arr, 0.0, 1.0)


def colorize(heat: np.ndarray, cmap: str = "RdBu_r", signed: bool = True) -> np.ndarray:
    """Map a heatmap to RGB with a matplotlib colormap.

    Args:
        heat: values in [-1, 1] (signed: -1 -> cmap(0), 0 -> cmap(0.5), 1 -> cmap(1)) or [0, 1] (rectified).
        cmap: matplotlib colormap name.
        signed: how to read ``heat``.
    Returns:
        float32 (H, W, 3) in [0, 1].
    """
    from matplotlib import colormaps

    if cmap not in colormaps:
        raise ValueError(f"unknown colormap {cmap!r}")
    h = np.asarray(heat, dtype=np.float32)
    pos = (np.clip(h, -1, 1) + 1) / 2 if signed else np.clip(h, 0, 1)
    return colormaps[cmap](pos)[..., :3].astype(np.float32)


def overlay(
    image: Union[Image.Image, np.ndarray],
    heat: np.ndarray,
    cmap: str = "RdBu_r",
    opacity: float = 0.5,
    signed: bool = True,
) -> Image.Image:
    """Blend a heatmap over an image: ``(1 - opacity) * image + opacity * cmap(heat)``.

    Args:
        image: PIL image or array (greyscale or RGB).
        heat: normalised heatmap, [-1, 1] if ``signed`` else [0, 1]; resized to the image's size.
        cmap: matplotlib colormap (a diverging one such as RdBu_r for signed maps).
        opacity: weight of the heatmap, 0 (image only) to 1 (heatmap only).
        signed: whether ``heat`` is signed.
    Returns:
        RGB PIL image of the image's size.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    rgb = to_rgb_array(image)
    h, w = rgb.shape[:2]
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heat must be a 2-D map, got shape {heat.shape}")
    if heat.shape != (h, w):
        heat = upsample(heat, (h, w))
    blended = (1.0 - opacity) * rgb + opacity * colorize(heat, cmap, signed)
    return Image.fromarray(np.round(np.clip(blended, 0, 1) * 255).astype(np.uint8), "RGB")
