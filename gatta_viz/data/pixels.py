"""Decoded pixels within a memory budget: what decoding an image costs (from its header alone), and the
conversion of any Pillow mode to 8-bit 'L' or 'RGB', shrunk band by band so that no full-size copy is made.
Used by :func:`gatta_viz.data.preprocess.load_image`.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from .limits import MB

__all__ = ["decoding_cost", "exif_orientation", "TRANSPOSE", "to_8bit"]

_BAND_BYTES = 1 * MB  # pixels (at 4 bytes each) per band when converting a large image


def _bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow stores per pixel of a mode (RGB is stored as 4)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16") or mode.startswith("BGR;1"):
        return 2
    return 4


def decoding_cost(img: Image.Image, full_size: Optional[Tuple[int, int]] = None) -> int:
    """Memory in bytes that decoding an opened (not yet loaded) image takes, from its header alone.

    Pillow's decoded pixels (1 byte per pixel for L/P, 2 for 16-bit greyscale, 4 for RGB, RGBA, LA, 32-bit
    and float), plus what a format's decoder holds besides: libwebp decodes the whole frame into its own
    buffer, which is copied twice before Pillow has it (16 bytes per pixel in all, measured), and a
    progressive JPEG keeps every DCT coefficient of the file (2 bytes each, at full size even when decoded
    at a reduced scale) until its last scan.

    Args:
        img: an image from ``Image.open``, after any ``draft``.
        full_size: the file's own size when ``draft`` reduced ``img.size``.
    Returns:
        Bytes.
    """
    w, h = img.size
    cost = w * h * _bytes_per_pixel(img.mode)
    if img.format == "WEBP":
        cost += 12 * w * h  # measured: 16 bytes per pixel in all
    if img.format in ("JPEG", "MPO") and img.info.get("progressive"):
        fw, fh = full_size or img.size
        layers = getattr(img, "layer", None) or [("", 1, 1, 0)] * 3
        hmax = max(int(lay[1]) for lay in layers)
        vmax = max(int(lay[2]) for lay in layers)
        cost += 2 * sum(math.ceil(fw * int(lay[1]) / hmax / 8) * 8 * math.ceil(fh * int(lay[2]) / vmax / 8) * 8
                        for lay in layers)
    return int(cost)


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 = as stored; 1 when the EXIF block is missing or broken)."""
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the image
        return 1


TRANSPOSE = {  # EXIF orientation -> the transpose that shows the image upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _output_mode(mode: str) -> str:
    return "L" if mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;16") else "RGB"


def _scale_top(img: Image.Image) -> float:
    """What 16-bit, 32-bit and float values are divided by to make 0..1 (as the file's type suggests)."""
    if img.mode.startswith("I;16"):
        return 65535.0
    hi = 0.0
    for band in _bands(img, 1):
        arr = np.asarray(band)
        if arr.size:
            m = np.nanmax(np.where(np.isfinite(arr), arr, np.nan)) if img.mode == "F" else arr.max()
            if np.isfinite(m):
                hi = max(hi, float(m))
    if img.mode == "F":
        return hi if hi > 1.0 else 1.0
    return 65535.0 if hi > 255 else 255.0


def _bands(img: Image.Image, factor: int):
    """Horizontal bands of ``img`` (copies of about 1 MB each), each a multiple of ``factor`` rows tall but the last."""
    w, h = img.size
    rows = max(factor, (_BAND_BYTES // max(1, w * 4)) // factor * factor)
    for y0 in range(0, h, rows):
        yield img.crop((0, y0, w, min(h, y0 + rows)))


def _to_8bit(band: Image.Image, top: float) -> Image.Image:
    """One band in any mode -> 8-bit 'L' or 'RGB'; transparency composited on black."""
    mode = band.mode
    if mode in ("L", "RGB"):
        return band
    if mode in ("I", "F") or mode.startswith("I;16"):
        arr = np.asarray(band, dtype=np.float32)
        arr = np.nan_to_num(arr, nan=0.0, posinf=top, neginf=0.0)
        return Image.fromarray(np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), "L")
    if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in band.info):
        if mode in ("LA", "La"):
            la = np.asarray(band if mode == "LA" else band.convert("LA"), dtype=np.uint16)
            value, alpha = la[..., 0], la[..., 1]
        else:
            rgba = np.asarray(band if mode == "RGBA" else band.convert("RGBA"), dtype=np.uint16)
            value, alpha = rgba[..., :3], rgba[..., 3:4]
        value = value * alpha  # composited on black: value * alpha / 255, rounded
        value += 127
        value //= 255
        return Image.fromarray(value.astype(np.uint8), "L" if value.ndim == 2 else "RGB")
    return band.convert(_output_mode(mode))


def to_8bit(img: Image.Image, max_side: Optional[int]) -> Image.Image:
    """A loaded image -> 8-bit 'L' or 'RGB', shrunk by an integer factor (box filter) to at most ``max_side``,
    converting band by band so that no full-size copy is made."""
    w, h = img.size
    factor = max(1, math.ceil(max(w, h) / max_side)) if max_side else 1
    if factor == 1 and img.mode in ("L", "RGB"):
        return img
    top = _scale_top(img) if img.mode in ("I", "F") or img.mode.startswith("I;16") else 255.0
    out_mode = _output_mode(img.mode)
    out = Image.new(out_mode, (math.ceil(w / factor), math.ceil(h / factor)))
    y = 0
    for band in _bands(img, factor):
        small = _to_8bit(band, top)
        if small.mode != out_mode:
            small = small.convert(out_mode)
        if factor > 1:
            small = small.reduce(factor)
        out.paste(small, (0, y))
        y += small.size[1]
    return out
