"""Maps as pictures: colour a heatmap, blend it over the input the model saw or over the original image at its own
resolution (where the original lies in the input: :mod:`gatta_viz.compute.placement`)."""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
from PIL import Image

from ..compute.arrays import to_rgb_array
from ..compute.maps import upsample
from ..compute.placement import Placement, content_box

__all__ = ["check_cmap", "colorize", "colorbar_strip", "overlay", "content_box", "overlay_on_original"]


def check_cmap(cmap: str) -> str:
    """Check a colormap name.

    Args:
        cmap: a matplotlib colormap name.
    Returns:
        ``cmap``, when matplotlib knows it.
    Raises:
        ValueError: an unknown name (the message lists close matches).
    """
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

    Args:
        cmap: matplotlib colormap name.
        signed: the strip runs from -1 (True) or from 0 (False, rectified maps) to +1.
        width: pixels.
        height: pixels.
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
    Raises:
        ValueError: an opacity outside [0, 1], a map that is not 2-D, or an unknown colormap.
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


def overlay_on_original(
    original: Union[Image.Image, np.ndarray],
    heat: np.ndarray,
    cmap: str = "RdBu_r",
    opacity: float = 0.5,
    signed: bool = True,
    placement: Optional[Placement] = None,
) -> Image.Image:
    """Blend a map computed on the model input over the original image, at the original's resolution and colours.

    The map (at the model input's size, e.g. 28x28) is cropped to the region the original occupies in the
    padded input (:func:`content_box`) and resized to the original's size, as torch-cam's ``overlay_mask``
    and pytorch-grad-cam's ``show_cam_on_image`` show a CAM over the image a user gave.

    Args:
        original: the decoded image before preprocessing (``PreparedImage.original``).
        heat: normalised map at the model input's size.
        cmap, opacity, signed: as in :func:`overlay`.
        placement: how the original went into the input (:class:`~gatta_viz.compute.placement.Placement`);
            default: padded whole. For a resize-and-centre-crop model the map covers the cropped part of the
            original only; the rest is left as it is.
    Returns:
        RGB PIL image of the original's size.
    Raises:
        ValueError: a map that is not 2-D, an opacity outside [0, 1], or an unknown colormap.
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heat must be a 2-D map, got shape {heat.shape}")
    rgb = to_rgb_array(original)
    h0, w0 = rgb.shape[:2]
    if placement is None or placement.crop is None:
        left, top, w, h = content_box((w0, h0), (heat.shape[1], heat.shape[0]))
        return overlay(rgb, heat[top : top + h, left : left + w], cmap, opacity, signed)
    return _overlay_on_crop(rgb, heat, placement.crop, cmap, opacity, signed)


def _overlay_on_crop(rgb: np.ndarray, heat: np.ndarray, crop, cmap: str, opacity: float, signed: bool) -> Image.Image:
    """Blend ``heat`` over the part of ``rgb`` that a centre crop of (x0, y0, x1, y1) original pixels showed."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    h0, w0 = rgb.shape[:2]
    x0, y0, x1, y1 = crop
    cw, ch = max(1, round(x1 - x0)), max(1, round(y1 - y0))
    full = colorize(upsample(heat, (ch, cw)), cmap, signed)  # the map over the crop, in original pixels
    ox, oy = round(x0), round(y0)
    a0, b0, a1, b1 = max(0, ox), max(0, oy), min(w0, ox + cw), min(h0, oy + ch)
    out = rgb.copy()
    if a1 > a0 and b1 > b0:
        part = full[b0 - oy : b1 - oy, a0 - ox : a1 - ox]
        out[b0:b1, a0:a1] = (1.0 - opacity) * rgb[b0:b1, a0:a1] + opacity * part
    return Image.fromarray(np.round(np.clip(out, 0, 1) * 255).astype(np.uint8), "RGB")
