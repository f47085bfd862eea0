"""Maps as pictures: colour a heatmap, blend it over the input the model saw or over the original image at its own
resolution; where the original lies in the model input (:func:`content_box`)."""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
from PIL import Image

from ..compute.arrays import to_rgb_array
from ..compute.maps import upsample

__all__ = ["check_cmap", "colorize", "colorbar_strip", "overlay", "content_box", "overlay_on_original"]


def check_cmap(cmap: str) -> str:
    """Return ``cmap`` if matplotlib knows it; ValueError with close matches otherwise."""
    import difflib

    from matplotlib import colormaps

    if cmap not in colormaps:
        close = difflib.get_close_matches(str(cmap), list(colormaps), n=4, cutoff=0.6)
        raise ValueError(f"unknown colormap {cmap!r}" + (f"; did you mean {close}?" if close else
                                                          " (any matplotlib colormap name, e.g. RdBu_r, coolwarm, viridis)"))
    return cmap


def colorize(heat: np.ndarray, cmap: str = "RdBu_r", signed: bool = True) -> np.ndarray:
    """Map a heatmap to RGB with a matplotlib colormap.

    Signed maps use the whole (diverging) colormap centred at 0: -1 -> cmap(0), 0 -> cmap(0.5), 1 -> cmap(1).
    Rectified maps use its upper half, so 0 keeps the colour it has in a signed map (the neutral centre) and
    never the colour of "suppressed": 0 -> cmap(0.5), 1 -> cmap(1).

    Args:
        heat: values in [-1, 1] (signed) or [0, 1] (rectified).
        cmap: matplotlib colormap name.
        signed: how to read ``heat``.
    Returns:
        float32 (H, W, 3) in [0, 1].
    """
    from matplotlib import colormaps

    check_cmap(cmap)
    h = np.asarray(heat, dtype=np.float32)
    pos = (np.clip(h, -1, 1) + 1) / 2 if signed else 0.5 + 0.5 * np.clip(h, 0, 1)
    return colormaps[cmap](pos)[..., :3].astype(np.float32)


def colorbar_strip(cmap: str = "RdBu_r", signed: bool = True, width: int = 256, height: int = 12) -> Image.Image:
    """A horizontal colour strip of ``cmap`` from the map's lowest (-1, or 0 when rectified) to its highest value (+1),
    coloured as :func:`colorize` colours maps.

    Returns:
        RGB PIL image of ``width`` x ``height``.
    """
    lo = -1.0 if signed else 0.0
    strip = np.tile(np.linspace(lo, 1.0, int(width), dtype=np.float32), (int(height), 1))
    rgb = colorize(strip, cmap, signed)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


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


def content_box(original_size: Tuple[int, int], input_size: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """Where the original image lies inside the model input after padding to the input's aspect ratio.

    The preprocessing (``gv.prepare_image``) fits the image inside the input keeping its aspect ratio and
    centres it (PIL ``ImageOps.pad``): this returns that region, in input pixels.

    Args:
        original_size: (width, height) of the original image.
        input_size: (width, height) of the model input.
    Returns:
        (left, top, width, height) of the original's content in the input; at least one pixel wide and high
        (an image of extreme aspect ratio, e.g. 1x500, covers a line of the input).
    """
    w0, h0 = int(original_size[0]), int(original_size[1])
    w, h = int(input_size[0]), int(input_size[1])
    if min(w0, h0, w, h) <= 0:
        raise ValueError(f"sizes must be positive, got original {original_size} and input {input_size}")
    if w0 / h0 > w / h:
        nh = max(1, round(h0 / w0 * w))  # a very wide image still covers one row of the input
        return 0, round((h - nh) * 0.5), w, nh
    if w0 / h0 < w / h:
        nw = max(1, round(w0 / h0 * h))  # a very tall one still covers one column
        return round((w - nw) * 0.5), 0, nw, h
    return 0, 0, w, h


def overlay_on_original(
    original: Union[Image.Image, np.ndarray],
    heat: np.ndarray,
    cmap: str = "RdBu_r",
    opacity: float = 0.5,
    signed: bool = True,
) -> Image.Image:
    """Blend a map computed on the model input over the original image, at the original's resolution and colours.

    The map (at the model input's size, e.g. 28x28) is cropped to the region the original occupies in the
    padded input (:func:`content_box`) and resized to the original's size, as torch-cam's ``overlay_mask``
    and pytorch-grad-cam's ``show_cam_on_image`` show a CAM over the image a user gave.

    Args:
        original: the decoded image before preprocessing (``PreparedImage.original``).
        heat: normalised map at the model input's size.
        cmap, opacity, signed: as in :func:`overlay`.
    Returns:
        RGB PIL image of the original's size.
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heat must be a 2-D map, got shape {heat.shape}")
    rgb = to_rgb_array(original)
    h0, w0 = rgb.shape[:2]
    left, top, w, h = content_box((w0, h0), (heat.shape[1], heat.shape[0]))
    return overlay(rgb, heat[top : top + h, left : left + w], cmap, opacity, signed)
