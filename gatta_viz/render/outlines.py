"""Item outlines (boxes or mask boundaries, e.g. the two garments of a scene): the one outline model.

:class:`Outline` is what an item is; :func:`outline_shapes` is where its lines go on a target (a PIL image of any
size, or a matplotlib axes at a map's resolution). Both drawers, :func:`gatta_viz.render.outline_draw.draw_outlines`
(PIL) and the Fig. 3 renderer (matplotlib), draw these shapes, so an outline looks the same in every picture.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..compute.placement import Placement, content_box

__all__ = ["OUTLINE_COLOURS", "OUTLINE_COLOUR_NAMES", "OUTLINE_STROKE", "Outline", "OutlineShape", "as_outlines",
           "outlines_from_index", "rescale_outlines", "mask_edges", "outline_shapes", "colour_of"]

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
                     input_size: Tuple[int, int], placement: Optional[Placement] = None) -> List[Outline]:
    """Outlines given in an original image's pixels, moved to the model input it was prepared into.

    The default preprocessing (``gv.prepare_image``) pads the image to the input's aspect ratio, centred, and
    resizes it (:func:`content_box`); a resize-and-centre-crop model's (``placement`` with ``crop``) shows a part of
    it, and boxes are clipped to that part (an item wholly outside it is dropped). Boxes follow the same path
    (masks are dropped when the sizes differ: their boxes are kept). With equal sizes and no crop the outlines are
    returned unchanged.

    Args:
        outlines: see :func:`as_outlines`, in the original's pixels.
        original_size: (width, height) of the original image (PIL's ``size``).
        input_size: (H, W) of the model input.
        placement: how the original went into the input (default: padded whole).
    Returns:
        Outlines in model-input pixels.
    """
    w0, h0 = int(original_size[0]), int(original_size[1])
    h, w = int(input_size[0]), int(input_size[1])
    items = as_outlines(outlines, (h0, w0))
    crop = placement is not None and placement.crop is not None
    if (w0, h0) == (w, h) and not crop:
        return items
    if crop:
        (sx, sy), (ox, oy) = placement.to_original()
        out = []
        for o in items:
            x0, y0, x1, y1 = ((o.box[0] - ox) / sx, (o.box[1] - oy) / sy, (o.box[2] - ox) / sx, (o.box[3] - oy) / sy)
            x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
            if x1 > x0 and y1 > y0:
                out.append(Outline((x0, y0, x1, y1), o.label, o.colour))
        return out
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


@dataclass(frozen=True)
class OutlineShape:
    """Where one outline's lines go on a target, in the target's coordinates.

    Attributes:
        colour: ``#rrggbb``.
        label: the item's label.
        rect: (x0, y0, x1, y1) of the box's edges (a mask's box too: labels are placed by it).
        segments: (n, 2, 2) line segments of a mask's boundary, drawn instead of the box (None for a box).
    """

    colour: str
    label: str
    rect: Tuple[float, float, float, float]
    segments: Optional[np.ndarray] = field(default=None, compare=False, repr=False)


def outline_shapes(items: Sequence[Outline], scale: Tuple[float, float] = (1.0, 1.0),
                   origin: Tuple[float, float] = (0.0, 0.0), shift: float = 0.0) -> List[OutlineShape]:
    """The outlines' lines on a target: a point (x, y) in input pixel-edge coordinates goes to
    ``((x - origin_x) * scale_x + shift, (y - origin_y) * scale_y + shift)``.

    A PIL image enlarged k times: ``scale=(k, k)``; an original photo: ``origin`` = the content box's corner and
    ``scale`` its size ratio; a matplotlib axes showing an (h, w) map of an (H, W) input: ``scale=(w/W, h/H)``,
    ``shift=-0.5`` (pixel centres sit on whole numbers).
    """
    (sx, sy), (ox, oy) = scale, origin

    def point(x: float, y: float) -> Tuple[float, float]:
        return (x - ox) * sx + shift, (y - oy) * sy + shift

    out = []
    for o in items:
        segs = None
        if o.mask is not None:
            segs = mask_edges(o.mask)
            segs = (segs - np.array([ox, oy])) * np.array([sx, sy]) + shift if (ox, oy) != (0.0, 0.0) else \
                segs * np.array([sx, sy]) + shift
        (xa, ya), (xb, yb) = point(o.box[0], o.box[1]), point(o.box[2], o.box[3])
        out.append(OutlineShape(colour_of(o), o.label, (xa, ya, xb, yb), segs))
    return out


def colour_of(o: Outline) -> str:
    """An outline's colour as ``#rrggbb``."""
    from matplotlib.colors import to_hex

    return to_hex(o.colour)
