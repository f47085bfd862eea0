"""Heatmaps blended over images: at the model input's resolution, or over the original image at its own resolution;
item outlines (boxes or mask boundaries, e.g. the two garments of a scene) drawn over them."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .heatmaps import upsample

__all__ = ["to_rgb_array", "colorize", "overlay", "content_box", "overlay_on_original", "OUTLINE_COLOURS", "Outline",
           "as_outlines", "outlines_from_index", "rescale_outlines", "mask_edges", "draw_outlines"]


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
        (left, top, width, height) of the original's content in the input.
    """
    w0, h0 = int(original_size[0]), int(original_size[1])
    w, h = int(input_size[0]), int(input_size[1])
    if min(w0, h0, w, h) <= 0:
        raise ValueError(f"sizes must be positive, got original {original_size} and input {input_size}")
    if w0 / h0 > w / h:
        nh = round(h0 / w0 * w)
        return 0, round((h - nh) * 0.5), w, nh
    if w0 / h0 < w / h:
        nw = round(w0 / h0 * h)
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


# ------------------------------------------------------------------------------------------------ item outlines
OUTLINE_COLOURS = ("#00e676", "#ffd600", "#00e5ff", "#ff9100")  # item 1, 2, 3, 4: away from the maps' red and blue
OUTLINE_COLOUR_NAMES = {"#00e676": "green", "#ffd600": "yellow", "#00e5ff": "cyan", "#ff9100": "orange"}
OUTLINE_STROKE = "#000000"  # a dark edge under every outline, so it shows on light and dark pixels alike


@dataclass(frozen=True)
class Outline:
    """One item to outline on an image, in the model input's pixel coordinates.

    Attributes:
        box: (x0, y0, x1, y1), x1/y1 exclusive (as ``SceneData.boxes`` and ``ClutterData.boxes``); whole
            pixels, or fractions of them after :func:`rescale_outlines`.
        label: the item's name (its class), shown in the figure's outline legend and on outlined overlays.
        colour: any matplotlib colour; the default is :data:`OUTLINE_COLOURS` by position.
        mask: optional (H, W) bool mask of the item at input size: when given its boundary is drawn instead
            of the box.
    """

    box: Tuple[float, float, float, float]
    label: str = ""
    colour: str = OUTLINE_COLOURS[0]
    mask: Optional[np.ndarray] = field(default=None, compare=False, repr=False)

    @property
    def colour_name(self) -> str:
        """``"green"`` for the default colours, else the colour as given."""
        return OUTLINE_COLOUR_NAMES.get(str(self.colour).lower(), str(self.colour))


OutlineLike = Union[Outline, Sequence[Any], Mapping[str, Any]]


def _check_colour(colour: Any, where: str) -> str:
    from matplotlib.colors import is_color_like

    if not isinstance(colour, str) or not is_color_like(colour):
        raise ValueError(f"{where}: colour must be a matplotlib colour such as '#00e676' or 'lime', got {colour!r}")
    return colour


def _box_of_mask(mask: np.ndarray) -> Tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)


def as_outlines(items: Optional[Iterable[OutlineLike]], size: Optional[Tuple[int, int]] = None) -> List[Outline]:
    """Outlines from what a caller has at hand, checked.

    Args:
        items: None, or a list of :class:`Outline`, ``(box_xyxy, label)`` / ``(box_xyxy, label, colour)``
            tuples, or dicts with ``box_xyxy`` (or ``box``) and ``class`` (or ``label``), optionally
            ``colour`` and ``mask`` (the entries of ``export_scenes`` / ``export_clutter`` index files).
            A missing colour is taken from :data:`OUTLINE_COLOURS` by position. An all-zero box (an item with
            no pixels above the threshold) is skipped.
        size: (H, W) of the model input, to check that boxes and masks lie on it.
    Returns:
        A list of :class:`Outline`.
    Raises:
        ValueError: naming the item and the problem (malformed box, box off the image, bad colour, bad mask).
    """
    out: List[Outline] = []
    for i, item in enumerate(items or []):
        where = f"outline {i + 1}"
        default = OUTLINE_COLOURS[i % len(OUTLINE_COLOURS)]
        if isinstance(item, Outline):
            box, label, colour, mask = item.box, item.label, item.colour, item.mask
        elif isinstance(item, Mapping):
            box = item.get("box_xyxy", item.get("box"))
            label = item.get("class", item.get("label", ""))
            colour, mask = item.get("colour", default), item.get("mask")
            if isinstance(mask, str):  # a mask file name from an index: boxes only
                mask = None
        elif isinstance(item, (list, tuple)) and 1 <= len(item) <= 3:
            box, label, colour = list(item) + ["", default][len(item) - 1 :]
            mask = None
        else:
            raise ValueError(f"{where}: expected an Outline, (box_xyxy, label[, colour]) or a dict with 'box_xyxy', "
                             f"got {type(item).__name__}")
        if mask is not None:
            mask = np.asarray(mask).astype(bool)
            if mask.ndim != 2:
                raise ValueError(f"{where}: mask must be (H, W), got shape {mask.shape}")
            if size is not None and mask.shape != tuple(size):
                raise ValueError(f"{where}: mask is {mask.shape[0]}x{mask.shape[1]}, the image {size[0]}x{size[1]}")
            if not mask.any():
                continue
            if box is None:
                box = _box_of_mask(mask)
        try:
            b = tuple(float(v) for v in box)
            if len(b) != 4 or not all(math.isfinite(v) for v in b) or isinstance(box, (str, bytes)):
                raise TypeError
        except (TypeError, ValueError):
            raise ValueError(f"{where}: box must be four numbers (x0, y0, x1, y1), got {box!r}") from None
        b = tuple(int(v) if v == int(v) else v for v in b)
        if b == (0, 0, 0, 0):
            continue
        if not (b[0] < b[2] and b[1] < b[3]) or min(b) < 0:
            raise ValueError(f"{where}: box must have 0 <= x0 < x1 and 0 <= y0 < y1 (x1, y1 exclusive), got {list(b)}")
        if size is not None and (b[2] > size[1] or b[3] > size[0]):
            raise ValueError(f"{where}: box {list(b)} reaches outside the {size[0]}x{size[1]} image")
        out.append(Outline(b, str(label), _check_colour(colour if colour is not None else default, where), mask))
    return out


def outlines_from_index(index: Union[str, Mapping[str, Any]]) -> Dict[str, List[Outline]]:
    """Outlines per image from an ``index.json`` written by ``export_scenes`` or ``export_clutter``.

    Args:
        index: the file's path, or its parsed content.
    Returns:
        image file name (as in the index, e.g. ``"scene_00000.png"``) -> its items' outlines (both items of a
        scene in two colours, or the garment of a clutter image), labelled with their class names.
    Raises:
        ValueError: a file that is not such an index (the message says what is missing).
        FileNotFoundError: no such file.
    """
    import json

    name = "index"
    if isinstance(index, str):
        name = index
        if not os.path.isfile(index):
            raise FileNotFoundError(f"outline index not found: {index}")
        try:
            with open(index) as f:
                index = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{name}: not a JSON file ({e})") from None
    if not isinstance(index, Mapping):
        raise ValueError(f"{name}: expected the index.json of export_scenes or export_clutter (a JSON object)")
    records = index.get("scenes", index.get("images"))
    if not isinstance(records, list):
        raise ValueError(f"{name}: not an index written by export_scenes or export_clutter (no 'scenes' or "
                         f"'images' list)")
    out: Dict[str, List[Outline]] = {}
    for j, rec in enumerate(records):
        if not isinstance(rec, Mapping) or not isinstance(rec.get("image"), str):
            raise ValueError(f"{name}: entry {j + 1} has no 'image' file name")
        items = rec.get("items", [rec])
        if not isinstance(items, list):
            raise ValueError(f"{name}: entry {j + 1} ({rec['image']}): 'items' must be a list")
        try:
            out[rec["image"]] = as_outlines(items)
        except ValueError as e:
            raise ValueError(f"{name}: entry {j + 1} ({rec['image']}): {e}") from None
    return out


def rescale_outlines(outlines: Optional[Iterable[OutlineLike]], original_size: Tuple[int, int],
                     input_size: Tuple[int, int]) -> List[Outline]:
    """Outlines given in an original image's pixels, moved to the model input it was prepared into.

    The preprocessing (``gv.prepare_image``) pads the image to the input's aspect ratio, centred, and resizes it
    (:func:`content_box`); boxes follow the same path (masks are dropped when the sizes differ: their boxes are
    kept). With equal sizes the outlines are returned unchanged.

    Args:
        outlines: see :func:`as_outlines`, in the original's pixels.
        original_size: (width, height) of the original image (PIL's ``size``).
        input_size: (H, W) of the model input.
    Returns:
        Outlines in model-input pixels.
    """
    w0, h0 = int(original_size[0]), int(original_size[1])
    h, w = int(input_size[0]), int(input_size[1])
    items = as_outlines(outlines, (h0, w0))
    if (w0, h0) == (w, h):
        return items
    left, top, cw, ch = content_box((w0, h0), (w, h))
    sx, sy = cw / w0, ch / h0
    out = []
    for o in items:
        x0, y0, x1, y1 = o.box
        out.append(Outline((left + x0 * sx, top + y0 * sy, left + x1 * sx, top + y1 * sy), o.label, o.colour))
    return out


def mask_edges(mask: np.ndarray) -> np.ndarray:
    """The boundary of a mask as line segments along pixel edges, (n, 2, 2) of ((x, y), (x, y)) in pixel-edge
    coordinates (pixel (r, c) spans x in [c, c + 1], y in [r, r + 1])."""
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    segs = []
    ys, xs = np.nonzero(m[1:, 1:-1] != m[:-1, 1:-1])  # horizontal edges: between rows y - 1 and y
    segs += [((x, y), (x + 1, y)) for y, x in zip(ys.tolist(), xs.tolist())]
    ys, xs = np.nonzero(m[1:-1, 1:] != m[1:-1, :-1])  # vertical edges: between columns x - 1 and x
    segs += [((x, y), (x, y + 1)) for y, x in zip(ys.tolist(), xs.tolist())]
    return np.asarray(segs, dtype=np.float64).reshape(-1, 2, 2)


def draw_outlines(image: Union[Image.Image, np.ndarray], outlines: Optional[Iterable[OutlineLike]],
                  input_size: Optional[Tuple[int, int]] = None, scale: int = 1, labels: bool = True) -> Image.Image:
    """An image with item outlines drawn on it, enlarged ``scale`` times without smoothing.

    Outlines are given in model-input pixels; ``input_size`` (H, W) is the model input's size when ``image``
    has another size (e.g. an original photo: then boxes are mapped through :func:`content_box`). Each box or
    mask boundary is a coloured line over a dark one; with ``labels`` each item's label is written in a
    small tag of its colour at its box's top-left corner (bottom-left when that would hide another tag).

    Args:
        image: PIL image or array (an overlay, or the input itself).
        outlines: see :func:`as_outlines`.
        input_size: (H, W) the outlines' coordinates refer to; default the image's own size.
        scale: whole-number enlargement (lines are 1 px wide at the enlarged size, so use >= 3 for small inputs).
        labels: write the labels.
    Returns:
        RGB PIL image of (scale x) the image's size.
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
    if (h0, w0) == size:
        left, top, sx, sy = 0.0, 0.0, float(scale), float(scale)
    else:  # the original image: the input's content region, mapped back to the original's pixels
        left, top, cw, ch = content_box((w0, h0), (size[1], size[0]))
        sx, sy = scale * w0 / cw, scale * h0 / ch

    def to_px(x: float, y: float) -> Tuple[float, float]:
        return (x - left) * sx, (y - top) * sy

    draw = ImageDraw.Draw(rgb)
    width = max(1, round(min(rgb.size) / 160))
    for o in items:
        if o.mask is not None:
            for (xa, ya), (xb, yb) in mask_edges(o.mask):
                a, b = to_px(xa, ya), to_px(xb, yb)
                draw.line([a, b], fill=OUTLINE_STROKE, width=width + 2)
        else:
            (xa, ya), (xb, yb) = to_px(o.box[0], o.box[1]), to_px(o.box[2], o.box[3])
            draw.rectangle([xa - 1, ya - 1, xb, yb], outline=OUTLINE_STROKE, width=width + 2)
    for o in items:
        colour = _hex(o.colour)
        if o.mask is not None:
            for (xa, ya), (xb, yb) in mask_edges(o.mask):
                draw.line([to_px(xa, ya), to_px(xb, yb)], fill=colour, width=width)
        else:
            (xa, ya), (xb, yb) = to_px(o.box[0], o.box[1]), to_px(o.box[2], o.box[3])
            draw.rectangle([xa, ya, xb - 1, yb - 1], outline=colour, width=width)
    if labels:
        font = ImageFont.load_default(size=max(8, min(rgb.size) // 18))
        taken: List[Tuple[float, float, float, float]] = []
        for o in items:
            if not o.label:
                continue
            x0, y0 = to_px(o.box[0], o.box[1])
            _, y1 = to_px(o.box[2], o.box[3])
            tb = draw.textbbox((0, 0), o.label, font=font)
            tw, th = tb[2] - tb[0] + 4, tb[3] - tb[1] + 4
            x = min(max(0.0, x0), rgb.size[0] - tw)
            spot = None
            for y in (y0, y1 - th, y0 - th, y1):
                y = min(max(0.0, y), rgb.size[1] - th)
                r = (x, y, x + tw, y + th)
                if not any(r[0] < q[2] and q[0] < r[2] and r[1] < q[3] and q[1] < r[3] for q in taken):
                    spot = r
                    break
            spot = spot or (x, min(max(0.0, y0), rgb.size[1] - th), x + tw, min(max(0.0, y0), rgb.size[1] - th) + th)
            taken.append(spot)
            draw.rectangle(spot, fill=colour_of(o), outline=OUTLINE_STROKE)
            draw.text((spot[0] + 2 - tb[0], spot[1] + 2 - tb[1]), o.label, fill="#000000", font=font)
    return rgb


def colour_of(o: Outline) -> str:
    """An outline's colour as ``#rrggbb``."""
    return _hex(o.colour)


def _hex(colour: str) -> str:
    from matplotlib.colors import to_hex

    return to_hex(colour)
