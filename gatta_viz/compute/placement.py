"""Where an original image lies in the model input it was prepared into, for overlays and outlines on the original.

Two preprocessings exist (``gatta_viz.prepare_image``): the whole image padded to the input's aspect ratio and
resized (the default; :func:`content_box`), or, for models trained on image folders (``"crop": "center"``), the
shorter side resized to ``preprocess["resize"]`` and the centre cropped (:class:`Placement` with ``crop``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

__all__ = ["content_box", "Placement", "placement_of"]


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
    Raises:
        ValueError: a size that is not positive.
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


@dataclass(frozen=True)
class Placement:
    """How an original image was placed into the model input.

    Attributes:
        original_size: (width, height) of the original.
        input_size: (height, width) of the model input.
        crop: for resize-and-centre-crop models, the part of the original the input shows, (x0, y0, x1, y1) in
            original pixels (it may reach past the original's edges when the resized image was padded); None
            for the default preprocessing (the whole original, padded: :func:`content_box`).
    """

    original_size: Tuple[int, int]
    input_size: Tuple[int, int]
    crop: Optional[Tuple[float, float, float, float]] = None

    def to_original(self) -> Tuple[Tuple[float, float], Tuple[float, float]]:
        """The map from input coordinates to the original's.

        Returns:
            ((sx, sy), (ox, oy)): an input point (x, y) (pixel-edge coordinates) lies at ``(x * sx + ox, y * sy +
            oy)`` in the original.
        """
        w0, h0 = self.original_size
        h, w = self.input_size
        if self.crop is not None:
            x0, y0, x1, y1 = self.crop
            return ((x1 - x0) / w, (y1 - y0) / h), (x0, y0)
        left, top, cw, ch = content_box((w0, h0), (w, h))
        sx, sy = w0 / cw, h0 / ch
        return (sx, sy), (-left * sx, -top * sy)


def placement_of(original_size: Tuple[int, int], preprocess: Optional[Mapping[str, Any]],
                 input_size: Tuple[int, int]) -> Placement:
    """The :class:`Placement` of an original of ``original_size`` (w, h) under a model's ``preprocess`` (its
    ``"crop"`` and ``"resize"`` keys; None or no ``"crop"``: the default padding), input ``input_size`` (h, w).

    Follows ``gatta_viz.data.preprocess.resize_center_crop``'s rounding: the shorter side becomes ``resize``
    (the other ``int(resize * long / short)``), the resized image is padded (centred) when smaller than the
    input, and the centre crop starts at ``round((size - crop) / 2)``.

    Args:
        original_size: the original image's (width, height).
        preprocess: the model's preprocessing record (``LoadedModel.preprocess``), or None.
        input_size: the model input's (height, width).
    Returns:
        where the input lies in the original (:class:`Placement`).
    """
    w0, h0 = int(original_size[0]), int(original_size[1])
    h, w = int(input_size[0]), int(input_size[1])
    if not preprocess or preprocess.get("crop") != "center":
        return Placement((w0, h0), (h, w))
    short = int(preprocess.get("resize") or max(h, w))
    nw, nh = (short, max(1, int(short * h0 / w0))) if w0 <= h0 else (max(1, int(short * w0 / h0)), short)
    pad_x, pad_y = max(0, w - nw), max(0, h - nh)  # ImageOps.pad centres a resized image smaller than the crop
    px, py = pad_x // 2, pad_y // 2
    big_w, big_h = nw + pad_x, nh + pad_y
    left, top = int(round((big_w - w) / 2.0)), int(round((big_h - h) / 2.0))
    sx, sy = w0 / nw, h0 / nh  # original pixels per resized pixel
    x0, y0 = (left - px) * sx, (top - py) * sy
    return Placement((w0, h0), (h, w), (x0, y0, x0 + w * sx, y0 + h * sy))
