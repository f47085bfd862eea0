"""Fig. 3's geometry as typed objects: what the figure shows (:class:`Fig3Spec`) and where every part goes
(:func:`layout_fig3` -> :class:`Fig3Layout`), in inches from the top-left corner, before anything is drawn."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .fig3_text import (
    LAYOUTS, LINE_H, MARGIN, dense_title, header_text, legend_text, row_title, text_width, wrap,
)
from ..compute.checks import untrained_message

__all__ = ["Fig3Spec", "Box", "TextBlock", "HeaderBox", "WarningText", "RowTitle", "MapPanel", "OutlineLegendLine", "ColorbarBox",
           "LegendText", "DenseChart", "Fig3Layout", "layout_fig3"]


@dataclass(frozen=True)
class Fig3Spec:
    """What one Fig. 3 shows, independent of the image: layers and their map shapes, alphas, classes, options.

    Two explanations with equal specs (:meth:`key`) draw into the same figure.
    """

    conv: Tuple[str, ...]
    dense: Tuple[str, ...]
    shapes: Dict[str, Tuple[int, ...]]
    classes: Optional[Tuple[str, ...]]
    alphas: Dict[str, float]
    signed: bool
    joint: bool
    gain: bool
    cmap: str
    layout: str
    cue: Optional[str]
    compare: bool
    outlines: bool
    image_shape: Tuple[int, int]

    @property
    def rows(self) -> int:
        return 2 if self.compare else 1

    @property
    def untrained(self) -> bool:
        return len(self.alphas) > 0 and all(a == 0.0 for a in self.alphas.values())

    def key(self) -> tuple:
        """What decides whether a built figure can draw another explanation (alphas to 6 decimals)."""
        return (tuple((n, self.shapes[n]) for n in self.conv + self.dense), self.conv, self.dense,
                tuple(round(a, 6) for a in self.alphas.values()), self.classes, self.signed, self.joint, self.gain,
                self.cmap, self.layout, self.cue, self.compare, self.outlines, self.image_shape)

    def class_name(self, c: int) -> str:
        return self.classes[c] if self.classes is not None else str(c)

    def is_class_layer(self, n: str) -> bool:
        return self.classes is not None and self.shapes[n][-1] == len(self.classes)


@dataclass(frozen=True)
class Box:
    """A rectangle in inches from the figure's top-left corner."""

    left: float
    top: float
    width: float
    height: float


@dataclass(frozen=True)
class HeaderBox(Box):
    """The predictions line(s); filled per image."""


@dataclass(frozen=True)
class TextBlock(Box):
    """Fixed words at a place."""

    text: str


@dataclass(frozen=True)
class WarningText(TextBlock):
    """The untrained-model warning."""


@dataclass(frozen=True)
class RowTitle(TextBlock):
    """The title of a row of maps (without the cue / cued: CUE)."""


@dataclass(frozen=True)
class MapPanel(Box):
    """A square panel: the input (``layer`` None) or one conv layer's map, in row ``row``."""

    layer: Optional[str]
    row: int


@dataclass(frozen=True)
class OutlineLegendLine(Box):
    """The line naming the outlined items in their colours; filled per image."""


@dataclass(frozen=True)
class ColorbarBox(Box):
    """The maps' colour bar."""


@dataclass(frozen=True)
class LegendText(TextBlock):
    """The words under the colour bar."""


@dataclass(frozen=True)
class DenseChart(Box):
    """A dense layer's bar chart (the axes' box) in row ``row``, inside a cell starting at ``cell_left``."""

    layer: str
    row: int
    cell_left: float
    cell_width: float


@dataclass(frozen=True)
class Fig3Layout:
    """Every part's place. ``inner`` is the text width inside the margins."""

    width: float
    height: float
    inner: float
    items: Tuple[Box, ...]


def _maps_grid(spec: Fig3Spec, items: List[Box], y: float, W: float, inner: float) -> Tuple[float, float, float]:
    """The input and one panel per conv layer, per row. Returns (y after the grid, grid left, grid width)."""
    single = spec.layout == "single"
    panels: List[Optional[str]] = [None] + list(spec.conv)
    ncols = min(len(panels), 4 if single else 6)
    gap = 0.09
    s = min(1.0 if single else 1.3, (inner - (ncols - 1) * gap) / ncols)
    grid_w = ncols * s + (ncols - 1) * gap
    x0 = (W - grid_w) / 2
    title_h = 2 * LINE_H + 0.02
    nrows = -(-len(panels) // ncols)
    for row in range(spec.rows):
        if spec.compare:
            label = wrap(row_title(spec, row), grid_w)
            n_lab = label.count("\n") + 1
            items.append(RowTitle(x0, y, grid_w, n_lab * LINE_H, label))
            y += n_lab * LINE_H + 0.02
        for i, p in enumerate(panels):
            r, c = divmod(i, ncols)
            top = y + r * (title_h + s + LINE_H + 0.08)
            items.append(MapPanel(x0 + c * (s + gap), top + title_h, s, s, p, row))
        y += nrows * (title_h + s + LINE_H + 0.08)
    return y, x0, grid_w


def _dense_charts(spec: Fig3Spec, items: List[Box], y: float, inner: float) -> float:
    """Bar charts, one per row (single) or two per row (double); comparing: each layer without and with the cue
    side by side. Returns y after them."""
    single = spec.layout == "single"
    charts = [(n, row) for n in spec.dense for row in range(spec.rows)]
    per_row = 1 if single or len(charts) < 2 else 2
    ytick_w, dgap = 0.5, 0.12
    cw = (inner - (per_row - 1) * dgap) / per_row
    row_top, n_title = y, 1
    for i, (n, row) in enumerate(charts):
        c = i % per_row
        if c == 0:
            row_top = y
            n_title = max(dense_title(spec, m, rw, cw).count("\n") + 1 for m, rw in charts[i : i + per_row])
        cls = spec.is_class_layer(n)
        label_w = max(text_width(spec.class_name(k)) for k in range(len(spec.classes))) if cls else 0.0
        below = (label_w * 0.71 + 0.71 * LINE_H + 0.06) if cls else (2 * LINE_H + 0.06)
        ax_w = cw - ytick_w
        if cls:  # rotated class names reach left of the first bar
            first = ax_w / (2 * spec.shapes[n][-1])
            ax_w -= max(0.0, label_w * 0.71 - first - ytick_w + 0.05)
        ax_h = 0.8 if single else 0.95
        left = MARGIN + c * (cw + dgap) + (cw - ax_w)
        cell_left = MARGIN + c * (cw + dgap)
        items.append(DenseChart(left, row_top + n_title * LINE_H + 0.03, ax_w, ax_h, n, row, cell_left, cw))
        if c == per_row - 1 or i == len(charts) - 1:
            y = row_top + n_title * LINE_H + 0.03 + ax_h + below + 0.06
    return y


def layout_fig3(spec: Fig3Spec) -> Fig3Layout:
    """Place every part of Fig. 3 for ``spec``: header, warning, maps grid (one or two rows), outline legend line,
    colour bar and legend, dense-layer charts; the height follows from what is there."""
    W = LAYOUTS[spec.layout]
    inner = W - 2 * MARGIN
    items: List[Box] = []
    y = MARGIN
    longest = max((spec.class_name(c) for c in range(len(spec.classes))), key=len) if spec.classes else "9999"
    probe = header_text(spec, inner, (longest, 0.999), (longest, 0.999), longest, (longest, 0.999))
    n_head = probe.count("\n") + 1
    items.append(HeaderBox(MARGIN, y, inner, n_head * LINE_H))
    y += n_head * LINE_H
    if spec.untrained:
        warn = wrap("WARNING: " + untrained_message(spec.gain), inner)
        items.append(WarningText(MARGIN, y + 0.02, inner, (warn.count("\n") + 1) * LINE_H, warn))
        y += (warn.count("\n") + 1) * LINE_H + 0.02
    y += 0.05
    y, x0, grid_w = _maps_grid(spec, items, y, W, inner)
    if spec.outlines:
        items.append(OutlineLegendLine(x0, y, grid_w, LINE_H))
        y += LINE_H + 0.04
    if spec.conv:
        cb_w = min(grid_w, 2.4)
        items.append(ColorbarBox((W - cb_w) / 2, y + 0.02, cb_w, 0.08))
        y += 0.1 + LINE_H + 0.04
        legend = legend_text(spec, inner)
        n_leg = legend.count("\n") + 1
        items.append(LegendText(MARGIN, y, inner, n_leg * LINE_H, legend))
        y += n_leg * LINE_H + 0.1
    y = _dense_charts(spec, items, y, inner)
    return Fig3Layout(W, y + MARGIN - 0.04, inner, tuple(items))
