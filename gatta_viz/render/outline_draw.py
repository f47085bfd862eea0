"""Outlines drawn on pictures: PIL images (overlays, the input enlarged) and Fig. 3's matplotlib axes, both from the
shapes of :func:`gatta_viz.render.outlines.outline_shapes`."""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..compute.placement import Placement, content_box
from .outlines import OUTLINE_STROKE, Outline, OutlineLike, OutlineShape, as_outlines, outline_shapes
from ..compute.arrays import to_rgb_array

__all__ = ["draw_outlines", "draw_outlines_on_axes"]


def _frame(size_hw: Tuple[int, int], input_size: Tuple[int, int], scale: int,
           placement: Optional[Placement] = None) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    """(scale, origin) taking input pixel coordinates onto an image of ``size_hw`` enlarged ``scale`` times."""
    h0, w0 = size_hw
    if placement is not None and placement.crop is not None and (h0, w0) != tuple(input_size):
        (sx, sy), (ox, oy) = placement.to_original()  # input x -> original x * sx + ox
        return (scale * sx, scale * sy), (-ox / sx, -oy / sy)
    if (h0, w0) == tuple(input_size):
        return (float(scale), float(scale)), (0.0, 0.0)
    left, top, cw, ch = content_box((w0, h0), (input_size[1], input_size[0]))  # the original: its content region
    return (scale * w0 / cw, scale * h0 / ch), (left, top)


def _label_spots(draw, shapes: Sequence[OutlineShape], font, size: Tuple[int, int]) -> List[Tuple[OutlineShape, tuple, tuple]]:
    """Where each label's tag goes: the box's top-left corner, else another corner that hides no other tag."""
    taken: List[Tuple[float, float, float, float]] = []
    out = []
    for s in shapes:
        if not s.label:
            continue
        x0, y0, _, y1 = s.rect
        tb = draw.textbbox((0, 0), s.label, font=font)
        tw, th = tb[2] - tb[0] + 4, tb[3] - tb[1] + 4
        x = min(max(0.0, x0), size[0] - tw)
        spot = None
        for y in (y0, y1 - th, y0 - th, y1):
            y = min(max(0.0, y), size[1] - th)
            r = (x, y, x + tw, y + th)
            if not any(r[0] < q[2] and q[0] < r[2] and r[1] < q[3] and q[1] < r[3] for q in taken):
                spot = r
                break
        spot = spot or (x, min(max(0.0, y0), size[1] - th), x + tw, min(max(0.0, y0), size[1] - th) + th)
        taken.append(spot)
        out.append((s, spot, tb))
    return out


def draw_outlines(image: Union[Image.Image, np.ndarray], outlines: Optional[Iterable[OutlineLike]],
                  input_size: Optional[Tuple[int, int]] = None, scale: int = 1, labels: bool = True,
                  placement: Optional[Placement] = None) -> Image.Image:
    """An image with item outlines drawn on it, enlarged ``scale`` times without smoothing.

    Outlines are given in model-input pixels; ``input_size`` (H, W) is the model input's size when ``image``
    has another size (e.g. an original photo: then boxes are mapped through :func:`content_box`). Each box or
    mask boundary is a coloured line over a dark one; with ``labels`` each item's label is written in a
    small tag of its colour at its box's top-left corner (bottom-left when that would hide another tag).

    Args:
        image: PIL image or array (an overlay, or the input itself).
        outlines: see :func:`~gatta_viz.render.outlines.as_outlines`.
        input_size: (H, W) the outlines' coordinates refer to; default the image's own size.
        scale: whole-number enlargement (lines are 1 px wide at the enlarged size, so use >= 3 for small inputs).
        labels: write the labels.
        placement: how an original image went into the input (default: padded whole, :func:`content_box`).
    Returns:
        RGB PIL image of (scale x) the image's size.
    Raises:
        ValueError: a scale that is not a whole number >= 1; outlines off the image (see ``as_outlines``).
    """
    from PIL import ImageDraw, ImageFont

    rgb = Image.fromarray(np.round(to_rgb_array(image) * 255).astype(np.uint8), "RGB")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a whole number >= 1, got {scale}")
    scale = int(scale)
    w0, h0 = rgb.size
    size = tuple(input_size) if input_size is not None else (h0, w0)
    items = as_outlines(outlines, size)
    if scale > 1:
        rgb = rgb.resize((w0 * scale, h0 * scale), Image.Resampling.NEAREST)
    if not items:
        return rgb
    factors, origin = _frame((h0, w0), size, scale, placement)
    shapes = outline_shapes(items, factors, origin)
    draw = ImageDraw.Draw(rgb)
    width = max(1, round(min(rgb.size) / 160))
    for s in shapes:  # a dark line under every outline first
        if s.segments is not None:
            for a, b in s.segments:
                draw.line([tuple(a), tuple(b)], fill=OUTLINE_STROKE, width=width + 2)
        else:
            xa, ya, xb, yb = s.rect
            draw.rectangle([xa - 1, ya - 1, xb, yb], outline=OUTLINE_STROKE, width=width + 2)
    for s in shapes:
        if s.segments is not None:
            for a, b in s.segments:
                draw.line([tuple(a), tuple(b)], fill=s.colour, width=width)
        else:
            xa, ya, xb, yb = s.rect
            draw.rectangle([xa, ya, xb - 1, yb - 1], outline=s.colour, width=width)
    if labels:
        font = ImageFont.load_default(size=max(8, min(rgb.size) // 18))
        for s, spot, tb in _label_spots(draw, shapes, font, rgb.size):
            draw.rectangle(spot, fill=s.colour, outline=OUTLINE_STROKE)
            draw.text((spot[0] + 2 - tb[0], spot[1] + 2 - tb[1]), s.label, fill="#000000", font=font)
    return rgb


def draw_outlines_on_axes(ax, items: Sequence[Outline], map_shape: Tuple[int, int],
                          image_shape: Tuple[int, int]) -> List:
    """Outlines on a matplotlib axes showing a map of ``map_shape`` (h, w) for an input of ``image_shape``
    (H, W), coloured lines over dark ones. Returns the artists (remove them to redraw)."""
    from matplotlib import patheffects
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Rectangle

    stroke = [patheffects.withStroke(linewidth=2.4, foreground=OUTLINE_STROKE)]
    (h, w), (H0, W0) = map_shape, image_shape
    artists = []
    for s in outline_shapes(items, (w / W0, h / H0), shift=-0.5):
        if s.segments is not None:
            art = ax.add_collection(LineCollection(s.segments, colors=s.colour, linewidths=0.9, zorder=3,
                                                   path_effects=stroke), autolim=False)
        else:
            xa, ya, xb, yb = s.rect
            art = ax.add_patch(Rectangle((xa, ya), xb - xa, yb - ya, fill=False, edgecolor=s.colour, linewidth=0.9,
                                         zorder=3, path_effects=stroke))
        artists.append(art)
    return artists
