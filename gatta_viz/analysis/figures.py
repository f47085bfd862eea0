"""Matplotlib figures: the paper's Fig. 3 layout at journal column widths, an alpha-per-layer bar chart, saving.

Fig. 3 (:func:`fig3`) is laid out by hand at a fixed size: ``layout="single"`` is 3.5 in wide (one journal column),
``"double"`` 7.2 in (two columns); every text is 7 pt or more at that size, so the figure can go into a paper
unscaled. Maps are the gain map alpha x agreement by default (see :mod:`gatta_viz.analysis.style`). A
:class:`Fig3Renderer` builds the figure once and redraws it for each image, which is what makes batch explain
fast; :func:`fig3` is a one-image shortcut.
"""
from __future__ import annotations

import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import matplotlib.pyplot as plt  # matplotlib picks Agg by itself on machines without a display
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.collections import PolyCollection
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from .checks import UntrainedGAttAWarning, is_untrained, untrained_message
from .heatmaps import conv_layer_names, normalize_with_scales
from .overlays import OUTLINE_STROKE, as_outlines, check_cmap, mask_edges, to_rgb_array
from .style import (
    DEFAULT_CMAP, NEUTRAL, PRED_EDGE, TRUE_EDGE, class_marks_text, dense_axis_label, map_name, map_sign_text,
    scale_text,
)
from ..core.trace import GAttATrace

__all__ = ["LAYOUTS", "FONT_PT", "Fig3Renderer", "fig3", "alpha_bars", "save_figure", "image_for_display",
           "FIGURE_FORMATS", "normalize_shared", "cued_title", "UNCUED_TITLE"]

LAYOUTS = {"single": 3.5, "double": 7.2}  # figure width in inches
FONT_PT = 7.0  # every text in fig3 and alpha_bars, at print size
FIGURE_FORMATS = ("png", "pdf", "svg")
_LH = FONT_PT * 1.3 / 72  # line height (inches)
_M = 0.06  # outer margin (inches)


def image_for_display(image: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """An image to show: (C, H, W) tensors (e.g. normalised inputs) are min-max scaled; arrays in [0, 1] kept."""
    if torch.is_tensor(image):
        a = image.detach().cpu().float()
        if a.dim() == 4:
            a = a[0]
        a = a.numpy()
        a = (a - a.min()) / (a.max() - a.min()) if a.max() > a.min() else np.zeros_like(a)
        return to_rgb_array(np.transpose(a, (1, 2, 0)))
    return to_rgb_array(image)


_MEASURE: list = []


def _text_width(text: str) -> float:
    """Width in inches of one line of ``text`` at FONT_PT (DejaVu Sans, matplotlib's default font)."""
    if not _MEASURE:
        from matplotlib.font_manager import FontProperties
        from matplotlib.textpath import TextToPath

        _MEASURE.extend([TextToPath(), FontProperties(size=FONT_PT)])
    return _MEASURE[0].get_text_width_height_descent(text, _MEASURE[1], ismath=False)[0] / 72.0


def _wrap(text: str, width_in: float, sep: str = " ") -> str:
    """Wrap ``text`` into lines no wider than ``width_in`` inches at FONT_PT, breaking at ``sep``."""
    lines: List[str] = []
    for word in text.split(sep):
        if lines and _text_width(lines[-1] + sep + word) <= width_in:
            lines[-1] += sep + word
        else:
            lines.append(word)
    return "\n".join(lines)


def _signed(v: float, digits: int = 3) -> str:
    """``+0.123`` / ``−0.123`` with a true minus sign."""
    return f"{v:+.{digits}f}".replace("-", "\u2212")


def _fmt(v: float) -> str:
    """Two significant digits, true minus sign."""
    return (f"{v:.2g}" if v != 0 else "0").replace("-", "\u2212")


@dataclass
class _Panel:
    """A conv map's artists."""

    name: str
    ax: object
    im: object
    scale: object
    row: int = 0


def normalize_shared(rows: Sequence[Dict[str, np.ndarray]], signed: bool = True, joint: bool = False
                     ) -> Tuple[List[Dict[str, np.ndarray]], Dict[str, float]]:
    """Normalise several sets of maps of the same layers (e.g. one image without and with a top-down cue) so that
    they can be compared: one scale per layer shared by every set (the largest max |value| of that layer among
    them), or with ``joint`` one scale for every map of every set.

    Args:
        rows: sets of maps, name -> array; every set has the same names.
        signed, joint: as :func:`gatta_viz.analysis.heatmaps.normalize`.
    Returns:
        (one dict of scaled float32 maps per set, name -> the shared scale, i.e. what +1 stands for); a scale of
        0 (all maps zero) gives zeros.
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


UNCUED_TITLE = "without cue: the query pass 1 pooled from the image"


def cued_title(cue: str) -> str:
    """The title of maps computed under a top-down cue: ``"cued: Trouser"``."""
    return f"cued: {cue}"


class Fig3Renderer:
    """The Fig. 3 layout for one model and one set of display options, redrawn for each image.

    Building the figure (axes, text, colourbar) costs more than drawing it; a renderer builds it once and
    :meth:`update` only sets the data, so explaining many images costs one draw each.

    Args:
        trace: a trace of the model (gives layer names, kinds, map sizes and alphas).
        classes: class names (the dense layer with one unit per class becomes the class chart).
        signed, joint: see :func:`gatta_viz.analysis.heatmaps.normalize`.
        cmap: diverging colormap of the maps (and of the gain bars).
        gain: show alpha x agreement (default) or raw agreement (labelled "sign set by training").
        layout: ``"single"`` (3.5 in) or ``"double"`` (7.2 in).
        layers: conv layers to show (default: all).
        image_shape: (H, W) of the input image shown in the first panel (default: the largest conv map's).
        cue: name of the top-down cue the maps were computed under (e.g. a class name): the header then starts
            with "cued: CUE". With ``compare`` it names the second row.
        compare: two rows of maps and two charts per dense layer: the first without a cue (pass 1's own
            pooled query), the second under ``cue`` (:meth:`update` then takes ``cued_trace``). Each layer's
            two maps share one colour scale (the larger max |value| of the two; ``joint``: one scale for all
            maps of both rows), so their colours compare; each dense layer's two charts share one y-scale.
        outlines: reserve a line under the maps for the legend of item outlines (:meth:`update`'s ``outlines``).
    """

    def __init__(self, trace: GAttATrace, classes: Optional[Sequence[str]] = None, signed: bool = True,
                 joint: bool = False, cmap: str = DEFAULT_CMAP, gain: bool = True, layout: str = "double",
                 layers: Optional[Sequence[str]] = None, image_shape: Optional[Tuple[int, int]] = None,
                 cue: Optional[str] = None, compare: bool = False, outlines: bool = False) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
        check_cmap(cmap)
        self.conv = conv_layer_names(trace, layers)
        self.dense = [n for n, lt in trace.layers.items() if lt.kind == "dense"]
        self.shapes = {n: tuple(trace.layers[n].agreement.shape[1:]) for n in self.conv + self.dense}
        self.classes = list(classes) if classes is not None else None
        self.signed, self.joint, self.gain, self.cmap_name, self.layout = signed, joint, gain, cmap, layout
        self.cmap = colormaps[cmap]
        self.alphas = {n: float(a) for n, a in trace.alphas.items()}
        self.untrained = is_untrained(self.alphas)
        self.compare = bool(compare)
        self.cue = (str(cue) if cue is not None else ("custom query" if self.compare else None))
        self.outlines = bool(outlines)
        self.rows = 2 if self.compare else 1
        self._warned = False
        self._background = None
        self._outline_artists: List = []
        self.key = self._key(trace, classes, signed, joint, cmap, gain, layout, layers, cue, compare, outlines)
        self._build(image_shape or max((self.shapes[n] for n in self.conv), default=(28, 28)))

    # ---------------------------------------------------------------------------------------------- building
    @staticmethod
    def _key(trace, classes, signed, joint, cmap, gain, layout, layers, cue=None, compare=False, outlines=False) -> tuple:
        shapes = tuple((n, lt.kind, tuple(lt.agreement.shape[1:])) for n, lt in trace.layers.items())
        alphas = tuple(round(float(a), 6) for a in trace.alphas.values())
        return (shapes, alphas, tuple(classes) if classes is not None else None, signed, joint, cmap, gain, layout,
                tuple(layers) if layers is not None else None, None if cue is None else str(cue), bool(compare),
                bool(outlines))

    def matches(self, trace: GAttATrace, classes=None, signed=True, joint=False, cmap=DEFAULT_CMAP, gain=True,
                layout="double", layers=None, cue=None, compare=False, outlines=False) -> bool:
        """Whether this renderer can draw ``trace`` with these options."""
        return self.key == self._key(trace, classes, signed, joint, cmap, gain, layout, layers, cue, compare, outlines)

    def _class_name(self, c: int) -> str:
        return self.classes[c] if self.classes is not None else str(c)

    def _is_class_layer(self, n: str) -> bool:
        return self.classes is not None and self.shapes[n][-1] == len(self.classes)

    def _row_title(self, row: int) -> str:
        return cued_title(self.cue) if row == 1 or not self.compare else UNCUED_TITLE

    def _legend_text(self, inner: float) -> str:
        sign = map_sign_text(self.gain, self.signed)
        if self.cue is not None:  # under a cue, agreement is with the cue's query
            sign = sign.replace("q_avg", "the query (pooled or cued)")
        first = _wrap(f"{map_name(self.gain)}: {sign}", inner)
        if self.compare:
            scale = ("one scale for all maps of both rows" if self.joint else
                     "each layer's two maps share one scale (the larger max |value|), printed under them")
        else:
            scale = scale_text(self.joint) + ("" if self.joint else ", printed under it")
        return first + "\n" + _wrap(scale, inner)

    def _build(self, image_shape: Tuple[int, int]) -> None:
        self.image_shape = tuple(int(v) for v in image_shape[:2])
        W = LAYOUTS[self.layout]
        single = self.layout == "single"
        inner = W - 2 * _M
        items: List[Tuple[str, tuple]] = []  # (kind, (left, top, width, height) in inches from the top-left)
        y = _M
        # header: predictions (and a warning for untrained GAttA parameters)
        longest = max((self._class_name(c) for c in range(len(self.classes))), key=len) if self.classes else "9999"
        self._header_width = inner
        probe = self._header_text(longest, 0.999, longest, 0.999, longest, longest, 0.999)
        self._header_lines = probe.count("\n") + 1
        items.append(("header", (_M, y, inner, self._header_lines * _LH)))
        y += self._header_lines * _LH
        if self.untrained:
            warn = _wrap("WARNING: " + untrained_message(self.gain), inner)
            items.append(("warning", (_M, y + 0.02, inner, (warn.count("\n") + 1) * _LH, warn)))
            y += (warn.count("\n") + 1) * _LH + 0.02
        y += 0.05
        # maps grid, per row (two rows when comparing without and with a cue): the input, then one panel per conv layer
        ncols_max = 4 if single else 6
        panels = ["__input__"] + self.conv
        ncols = min(len(panels), ncols_max)
        gap = 0.09
        s = min(1.0 if single else 1.3, (inner - (ncols - 1) * gap) / ncols)
        grid_w = ncols * s + (ncols - 1) * gap
        x0 = (W - grid_w) / 2
        title_h = 2 * _LH + 0.02
        nrows = -(-len(panels) // ncols)
        for row in range(self.rows):
            if self.compare:
                label = _wrap(self._row_title(row), grid_w)
                n_lab = label.count("\n") + 1
                items.append(("rowtitle", (x0, y, grid_w, n_lab * _LH, label)))
                y += n_lab * _LH + 0.02
            for i, p in enumerate(panels):
                r, c = divmod(i, ncols)
                top = y + r * (title_h + s + _LH + 0.08)
                items.append(("panel", (x0 + c * (s + gap), top + title_h, s, s, p, row)))
            y += nrows * (title_h + s + _LH + 0.08)
        if self.outlines:
            items.append(("outline_legend", (x0, y, grid_w, _LH)))
            y += _LH + 0.04
        # one colourbar for the maps, its ticks and a legend that follows every option
        if self.conv:
            cb_w = min(grid_w, 2.4)
            items.append(("colorbar", ((W - cb_w) / 2, y + 0.02, cb_w, 0.08)))
            y += 0.1 + _LH + 0.04
            legend = self._legend_text(inner)
            n_leg = legend.count("\n") + 1
            items.append(("legend", (_M, y, inner, n_leg * _LH, legend)))
            y += n_leg * _LH + 0.1
        # dense layers: bar charts, one per row (single) or two per row (double); comparing: each layer without
        # and with the cue side by side
        charts = [(n, row) for n in self.dense for row in range(self.rows)]
        per_row = 1 if single or len(charts) < 2 else 2
        ytick_w = 0.5
        dgap = 0.12
        for i, (n, row) in enumerate(charts):
            r, c = divmod(i, per_row)
            if c == 0:
                row_top = y
                group = charts[i : i + per_row]
                n_title = max(self._dense_title_lines(m, rw, (inner - (per_row - 1) * dgap) / per_row) for m, rw in group)
            cls = self._is_class_layer(n)
            label_w = max(_text_width(self._class_name(k)) for k in range(len(self.classes))) if cls else 0.0
            below = (label_w * 0.71 + 0.71 * _LH + 0.06) if cls else (2 * _LH + 0.06)
            cw = (inner - (per_row - 1) * dgap) / per_row
            ax_w = cw - ytick_w
            if cls:  # rotated class names reach left of the first bar
                first = ax_w / (2 * self.shapes[n][-1])
                ax_w -= max(0.0, label_w * 0.71 - first - ytick_w + 0.05)
            ax_h = 0.8 if single else 0.95
            left = _M + c * (cw + dgap) + (cw - ax_w)
            cell_left = _M + c * (cw + dgap)
            items.append(("dense", (left, row_top + n_title * _LH + 0.03, ax_w, ax_h, n, cw, cell_left, row)))
            if c == per_row - 1 or i == len(charts) - 1:
                y = row_top + n_title * _LH + 0.03 + ax_h + below + 0.06
        H = y + _M - 0.04
        self.width_in, self.height_in = W, H
        self._place(items, W, H, image_shape)

    def _dense_title(self, name: str, row: int, cw: float) -> str:
        units = self.shapes[name][-1]
        alpha = self.alphas[name]
        cls = self._is_class_layer(name)
        lines = [f"{name} ({units} units), α={_signed(alpha)}", dense_axis_label(self.gain)
                 + (" (α = 0: all 1)" if self.gain and alpha == 0 else "")]
        if self.compare:
            lines.insert(0, "without cue" if row == 0 else cued_title(self.cue))
        if cls:
            lines.append(class_marks_text(True))
        return "\n".join(_wrap(t, cw) for t in lines)

    def _dense_title_lines(self, name: str, row: int, cw: float) -> int:
        return self._dense_title(name, row, cw).count("\n") + 1

    def _place(self, items, W: float, H: float, image_shape) -> None:
        fig = Figure(figsize=(W, H))  # no pyplot: a renderer can live long without pyplot's figure registry
        fig.gatta_fixed_size = True  # save_figure keeps the size (no tight bounding box)
        self.fig = fig
        self._W, self._H = W, H

        def rect(left, top, w, h):
            return [left / W, 1 - (top + h) / H, w / W, h / H]

        def text_at(x_in, y_in, s, **kw):
            kw.setdefault("fontsize", FONT_PT)
            return fig.text(x_in / W, 1 - y_in / H, s, **kw)

        self._text_at = text_at
        self.panels: Dict[Tuple[int, str], _Panel] = {}
        self.input_axes: List = []
        self.input_ims: List = []
        self.bars: Dict[Tuple[int, str], dict] = {}
        self.dynamic: List = []  # artists whose content changes per image, in drawing order (see to_png)
        self._outline_line = None
        vmin = -1.0 if self.signed else 0.0
        for kind, geo in items:
            if kind == "header":
                self.header = text_at(geo[0], geo[1], "", va="top", ha="left")
                self.dynamic.append(self.header)
            elif kind == "warning":
                text_at(geo[0], geo[1], geo[4], va="top", ha="left", fontweight="bold")
            elif kind == "legend":
                text_at(W / 2, geo[1], geo[4], va="top", ha="center", multialignment="center")
            elif kind == "rowtitle":
                text_at(geo[0], geo[1], geo[4], va="top", ha="left", fontweight="bold")
            elif kind == "outline_legend":
                self._outline_line = (geo[0], geo[1], geo[2])
            elif kind == "panel":
                left, top, w, h, name, row = geo
                ax = fig.add_axes(rect(left, top, w, h))
                ax.set_xticks([]), ax.set_yticks([])
                for sp in ax.spines.values():
                    sp.set_linewidth(0.5)
                if name == "__input__":
                    im = ax.imshow(np.zeros((*image_shape, 3)), interpolation="nearest", aspect="auto")
                    ax.set_autoscale_on(False)
                    self.input_axes.append(ax)
                    self.input_ims.append(im)
                    text_at(left + w / 2, top - 0.02, f"input {image_shape[0]}×{image_shape[1]}", va="bottom", ha="center")
                    self.dynamic += [im, *ax.spines.values()]
                    continue
                shape = self.shapes[name]
                im = ax.imshow(np.zeros(shape), cmap=self._display_cmap(), norm=Normalize(vmin, 1.0),
                               interpolation="nearest", aspect="auto")
                ax.set_autoscale_on(False)
                alpha = self.alphas[name]
                text_at(left + w / 2, top - 0.02, f"{name} {shape[0]}×{shape[1]}\nα={_signed(alpha)}", va="bottom",
                        ha="center", multialignment="center")
                scale = text_at(left + w / 2, top + h + 0.02, "", va="top", ha="center")
                self.panels[(row, name)] = _Panel(name, ax, im, scale, row)
                self.dynamic += [im, *ax.spines.values(), scale]
            elif kind == "colorbar":
                left, top, w, h = geo
                cax = fig.add_axes(rect(left, top, w, h))
                first = next(iter(self.panels.values()))
                cb = fig.colorbar(first.im, cax=cax, orientation="horizontal")
                cb.outline.set_linewidth(0.5)
                cax.tick_params(labelsize=FONT_PT, length=2, width=0.5, pad=1.5)
                cb.set_ticks([vmin, 0.0, 1.0] if self.signed else [0.0, 0.5, 1.0])
                if self.joint:  # real values on the ticks, which change per image
                    self.dynamic.append(cax.xaxis)
                else:
                    cb.set_ticklabels(["−scale", "0", "+scale"] if self.signed else ["0", "scale/2", "scale"])
                self.colorbar = cb
            elif kind == "dense":
                left, top, w, h, name, cw, cell_left, row = geo
                ax = fig.add_axes(rect(left, top, w, h))
                units = self.shapes[name][-1]
                xs = np.arange(units)
                base = 1.0 if self.gain else 0.0
                # all bars in one collection (one draw call for hundreds of units); outlines mark the classes
                bars = PolyCollection(self._bar_verts(np.zeros(units), base), facecolors=NEUTRAL, linewidths=0)
                ax.add_collection(bars)
                pred_box = ax.add_patch(Rectangle((0, base), 0.8, 0, fill=False, zorder=2.2, **PRED_EDGE))
                true_box = ax.add_patch(Rectangle((0, base), 0.8, 0, fill=False, zorder=2.1, **TRUE_EDGE))
                line = ax.axhline(base, color="black", lw=0.5)
                ax.set_xlim(-0.6, units - 0.4)
                ax.set_ylim(base - 1, base + 1)
                ax.tick_params(labelsize=FONT_PT, length=2, width=0.5, pad=1.5)
                for sp in ("top", "right"):
                    ax.spines[sp].set_visible(False)
                for sp in ("left", "bottom"):
                    ax.spines[sp].set_linewidth(0.5)
                cls = self._is_class_layer(name)
                if cls:
                    ax.set_xticks(xs)
                    ax.set_xticklabels([self._class_name(int(k)) for k in xs], rotation=45, ha="right",
                                       rotation_mode="anchor")
                else:
                    step = int(math.ceil(units / 6 / 10.0)) * 10 if units > 12 else max(1, units // 6)
                    ax.set_xticks(np.arange(0, units, step))
                    ax.set_xlabel("unit", fontsize=FONT_PT, labelpad=1)
                text_at(cell_left + cw / 2, top - 0.03, self._dense_title(name, row, cw), va="bottom",
                        ha="center", multialignment="center")
                self.bars[(row, name)] = {"ax": ax, "bars": bars, "class": cls, "pred": pred_box, "true": true_box}
                self.dynamic += [bars, pred_box, true_box, line, ax.yaxis]
        self.input_im = self.input_ims[0]

    @staticmethod
    def _bar_verts(v: np.ndarray, base: float) -> np.ndarray:
        """(units, 4, 2) corners of bars of width 0.8 centred on 0, 1, ..., from ``base`` to ``base + v``."""
        x = np.arange(len(v), dtype=np.float64)
        lo, hi = np.full(len(v), base), base + np.asarray(v, dtype=np.float64)
        return np.stack([np.stack([x - 0.4, lo], 1), np.stack([x - 0.4, hi], 1), np.stack([x + 0.4, hi], 1),
                         np.stack([x + 0.4, lo], 1)], 1)

    def _display_cmap(self):
        """The maps' colormap: the whole diverging map when signed; its upper half (0 = centre) when rectified."""
        if self.signed:
            return self.cmap
        return ListedColormap(self.cmap(np.linspace(0.5, 1.0, 256)), name=f"{self.cmap_name}_upper")

    # ---------------------------------------------------------------------------------------------- drawing
    def _header_text(self, pred: str, p2: float, pred1: str, p1: float, true: Optional[str],
                     pred_cued: Optional[str] = None, p_cued: float = 0.0) -> str:
        if self.compare:
            parts = [f"pass 1: {pred1} {100 * p1:.0f}%", f"pass 2 without cue: {pred} {100 * p2:.0f}%",
                     f"{cued_title(self.cue)} → pass 2: {pred_cued} {100 * p_cued:.0f}%"]
        else:
            parts = [f"pass 2 (output): {pred} {100 * p2:.0f}%", f"pass 1: {pred1} {100 * p1:.0f}%"]
            if self.cue is not None:
                parts.insert(0, cued_title(self.cue))
        if true is not None:
            parts.append(f"true: {true}")
        return _wrap("   ".join(parts), self._header_width, sep="   ")

    def _check_trace(self, trace: GAttATrace, what: str) -> None:
        shapes = {n: tuple(trace.layers[n].agreement.shape[1:]) for n in self.shapes if n in trace.layers}
        if shapes != self.shapes:
            raise ValueError(f"this renderer was built for layers {self.shapes}; the {what} has {shapes}")

    def update(self, image, trace: GAttATrace, index: int = 0, true_label: Optional[int] = None,
               cued_trace: Optional[GAttATrace] = None, outlines=None) -> Figure:
        """Draw one image of ``trace`` into the figure; returns the figure (the same object every call).

        Args:
            image: the input as the model saw it ((C, H, W) tensor or (H, W[, C]) array in [0, 1]).
            trace: a trace holding this image (same model, layers and alphas as the renderer was built for);
                when comparing, the trace without the cue.
            index: which image of the trace.
            true_label: the true class, if known.
            cued_trace: when comparing (``compare=True``): the same images traced under the cue.
            outlines: items to outline on the input and on every map (see
                :func:`gatta_viz.analysis.overlays.as_outlines`: ``[(box_xyxy, label, colour), ...]`` in input
                pixels); their labels go on the line reserved by ``outlines=True`` when the renderer was built.
        Returns:
            The figure.
        Warns:
            UntrainedGAttAWarning: on the first image, when every alpha is 0.
        """
        self._check_trace(trace, "trace")
        if self.compare and cued_trace is None:
            raise ValueError("this renderer compares maps without and with a cue: pass cued_trace (the images traced "
                             "with query=...)")
        if not self.compare and cued_trace is not None:
            raise ValueError("cued_trace given to a renderer built without compare=True")
        if cued_trace is not None:
            self._check_trace(cued_trace, "cued trace")
        img = image_for_display(image)
        if img.shape[:2] != self.image_shape:
            raise ValueError(f"this renderer draws {self.image_shape[0]}x{self.image_shape[1]} inputs, got "
                             f"{img.shape[0]}x{img.shape[1]}; build another one")
        items = as_outlines(outlines, self.image_shape)
        if items and not self.outlines:
            raise ValueError("this renderer was built without room for outlines: build it with outlines=True")
        for im in self.input_ims:
            im.set_data(img)
        traces = [trace] + ([cued_trace] if cued_trace is not None else [])
        preds = []
        for t in traces:
            p2 = torch.softmax(t.logits_pass2[index].detach().double(), 0)
            preds.append((int(p2.argmax()), float(p2.max())))
        p1 = torch.softmax(trace.logits_pass1[index].detach().double(), 0)
        pred1 = int(p1.argmax())
        true = None if true_label is None else self._class_name(int(true_label))
        cued_name, cued_p = (self._class_name(preds[1][0]), preds[1][1]) if self.compare else (None, 0.0)
        self.header.set_text(self._header_text(self._class_name(preds[0][0]), preds[0][1], self._class_name(pred1),
                                               float(p1[pred1]), true, cued_name, cued_p))
        raws = [{n: t.layers[n].map(self.gain)[index].detach().cpu().numpy() for n in self.conv} for t in traces]
        rows, scales = normalize_shared(raws, self.signed, self.joint)
        for (row, n), panel in self.panels.items():
            panel.im.set_data(rows[row][n])
            if self.gain and self.alphas[n] == 0:
                panel.scale.set_text("α = 0: map is 0")
            elif self.joint:
                panel.scale.set_text("")
            else:
                panel.scale.set_text(f"scale ±{_fmt(scales[n])}" if self.signed else f"max {_fmt(scales[n])}")
        if self.conv and self.joint:
            s = max(scales.values(), default=0.0)
            ticks = [-s, 0.0, s] if self.signed else [0.0, s / 2, s]
            self.colorbar.set_ticklabels([_fmt(t) for t in ticks])
        spans = {n: max(float(t.layers[n].map(self.gain)[index].detach().abs().max()) if t.layers[n].agreement.numel()
                        else 0.0 for t in traces) for n in self.dense}
        for (row, n), d in self.bars.items():
            self._update_bars(n, d, traces[row], index, preds[row][0], true_label, spans[n])
        self._draw_outlines(items)
        if self.untrained and not self._warned:
            warnings.warn(untrained_message(self.gain), UntrainedGAttAWarning, stacklevel=2)
            self._warned = True
        return self.fig

    def _draw_outlines(self, items) -> None:
        """Replace the previous image's outlines (on the inputs and maps) and their legend."""
        from matplotlib import patheffects
        from matplotlib.collections import LineCollection

        for a in self._outline_artists:
            a.remove()
        self._outline_artists = []
        if not items:
            return
        stroke = [patheffects.withStroke(linewidth=2.4, foreground=OUTLINE_STROKE)]
        H0, W0 = self.image_shape
        axes = [(ax, self.image_shape) for ax in self.input_axes] + \
            [(p.ax, self.shapes[p.name]) for p in self.panels.values()]
        for ax, (h, w) in axes:
            sx, sy = w / W0, h / H0
            for o in items:
                if o.mask is not None:
                    segs = mask_edges(o.mask) * np.array([sx, sy]) - 0.5
                    art = ax.add_collection(LineCollection(segs, colors=o.colour, linewidths=0.9, zorder=3,
                                                           path_effects=stroke), autolim=False)
                else:
                    x0, y0, x1, y1 = o.box
                    art = ax.add_patch(Rectangle((x0 * sx - 0.5, y0 * sy - 0.5), (x1 - x0) * sx, (y1 - y0) * sy,
                                                 fill=False, edgecolor=o.colour, linewidth=0.9, zorder=3,
                                                 path_effects=stroke))
                self._outline_artists.append(art)
        if self._outline_line is not None:
            left, top, width = self._outline_line
            x = left
            head = "outlines:"
            self._outline_artists.append(self._text_at(x, top, head, va="top", ha="left"))
            x += _text_width(head) + 0.06
            for k, o in enumerate(items):
                text = o.label or f"item {k + 1}"
                need = _text_width("■") + 0.04 + _text_width(text) + 0.12
                if x + need > left + width and k:
                    self._outline_artists.append(self._text_at(x, top, "…", va="top", ha="left"))
                    break
                self._outline_artists.append(self._text_at(x, top, "■", va="top", ha="left", color=o.colour,
                                                           path_effects=[patheffects.withStroke(
                                                               linewidth=1.2, foreground=OUTLINE_STROKE)]))
                self._outline_artists.append(self._text_at(x + _text_width("■") + 0.04, top, text, va="top", ha="left"))
                x += need

    def _update_bars(self, n: str, d: dict, trace: GAttATrace, index: int, pred: int, true_label: Optional[int],
                     span: Optional[float] = None) -> None:
        v = trace.layers[n].map(self.gain)[index].detach().cpu().double().numpy()  # alpha x agreement, or raw
        base = 1.0 if self.gain else 0.0
        m = float(np.abs(v).max()) if v.size else 0.0
        m = max(m, span or 0.0)  # charts compared side by side share one scale
        colours = self.cmap(0.5 + 0.5 * (v / m if m > 0 else np.zeros_like(v))) if self.gain else NEUTRAL
        d["bars"].set_verts(self._bar_verts(v, base))
        d["bars"].set_facecolors(colours)
        for box, k in ((d["pred"], pred if d["class"] else None),
                       (d["true"], true_label if d["class"] and true_label is not None and int(true_label) != pred else None)):
            box.set_visible(k is not None)
            if k is not None:
                box.set_xy((int(k) - 0.4, base))
                box.set_height(v[int(k)])
        ax = d["ax"]
        span = m if m > 0 else 1.0
        lo, hi = base - 1.15 * span, base + 1.15 * span
        ax.set_ylim(lo, hi)
        # three ticks: the baseline and a round distance either side of it
        d = max((t for t in MaxNLocator(nbins=2, steps=[1, 2, 2.5, 5, 10]).tick_values(0, span) if 0 < t <= 1.1 * span),
                default=span)
        ticks = np.array([base - d, base, base + d])
        step = d
        # the fewest decimals that print every tick exactly (1.5 needs one, 0.25 two)
        dec = next((k for k in range(9) if np.allclose(np.round(ticks, k), ticks, rtol=0, atol=step * 1e-6)), 9)
        ax.set_yticks(ticks)
        if dec <= 4:
            labels = [f"{t:.{dec}f}".replace("-", "\u2212") for t in ticks]
        else:  # tiny spans: the base and a short offset ("1+2e-08"), not eight decimals
            labels = [f"{base:g}" if abs(t - base) < step / 2 else
                      f"{base:g}{'+' if t > base else chr(0x2212)}{abs(t - base):.1g}".replace("e-", "e\u2212")
                      for t in ticks]
            labels = [lb[2:] if lb.startswith("0+") else ("\u2212" + lb[2:] if lb.startswith("0\u2212") else lb)
                      for lb in labels]
        ax.set_yticklabels(labels)

    # ---------------------------------------------------------------------------------------------- saving
    def _dynamic_artists(self) -> List:
        return self.dynamic + self._outline_artists

    def to_png(self, path: Optional[str] = None, dpi: int = 200, compress_level: int = 1) -> bytes:
        """The current figure as PNG bytes (written to ``path`` if given), drawing only what changes per image.

        The first call at a given dpi draws everything except the per-image artists and keeps that
        background; later calls restore it and draw the per-image artists (maps, bars, their axes, header,
        scale labels, outlines) on top. The pixels are those of a full ``savefig`` at the same dpi (tested).

        Args:
            path: where to write the PNG (the directory must exist), or None.
            dpi: pixels per inch.
            compress_level: PNG zlib level (1: fast; 9: small).
        Returns:
            The PNG bytes.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        fig = self.fig
        if self._background is None or self._background[0] != dpi:
            fig.set_dpi(dpi)
            canvas = FigureCanvasAgg(fig)
            dynamic = self._dynamic_artists()
            for a in dynamic:
                a.set_animated(True)
            try:
                canvas.draw()
            finally:
                for a in dynamic:
                    a.set_animated(False)
            self._background = (dpi, canvas, canvas.copy_from_bbox(fig.bbox))
        _, canvas, bg = self._background
        canvas.restore_region(bg)
        renderer = canvas.get_renderer()
        for a in self._dynamic_artists():
            a.draw(renderer)
        data = _png_bytes(np.asarray(canvas.buffer_rgba()), compress_level)
        if path is not None:
            with open(path, "wb") as f:
                f.write(data)
        return data

    def save(self, path: str, dpi: int = 200) -> str:
        """Save the current figure: PNG through :meth:`to_png`, PDF and SVG as vector files. Returns ``path``."""
        ext = os.path.splitext(path)[1].lower()
        if ext == ".png":
            self.to_png(path, dpi)
        elif ext in (".pdf", ".svg"):
            self._background = None  # a vector save draws on another canvas
            self.fig.savefig(path, dpi=dpi)
        else:
            raise ValueError(f"figure path must end in .png, .svg or .pdf, got {path!r}")
        return path


def _png_bytes(rgba: np.ndarray, compress_level: int = 1) -> bytes:
    """An (H, W, 4) uint8 RGBA buffer as an RGB PNG (no row filters, zlib at ``compress_level``).

    About twice as fast as PIL's encoder on figure-like images (mostly flat colour), where row filters
    gain little.
    """
    from PIL import Image

    h, w = rgba.shape[:2]
    rgb = Image.frombuffer("RGBA", (w, h), np.ascontiguousarray(rgba), "raw", "RGBA", 0, 1).convert("RGB")
    raw = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    raw[:, 0] = 0  # filter type "None" for every row
    raw[:, 1:] = np.frombuffer(rgb.tobytes(), dtype=np.uint8).reshape(h, 3 * w)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), int(compress_level))) + chunk(b"IEND", b""))


def fig3(
    image,
    trace: GAttATrace,
    index: int = 0,
    classes: Optional[Sequence[str]] = None,
    true_label: Optional[int] = None,
    signed: bool = True,
    joint: bool = False,
    cmap: str = DEFAULT_CMAP,
    gain: bool = True,
    layout: str = "double",
    layers: Optional[Sequence[str]] = None,
    cued_trace: Optional[GAttATrace] = None,
    cue: Optional[str] = None,
    outlines=None,
) -> Figure:
    """The paper's Fig. 3 layout for one image, sized for a journal page.

    Panels: a header with both passes' predictions; the input; one map per conv layer at its own resolution
    with its alpha and its scale; one colourbar and a legend naming the map, its sign and its scale; one bar
    chart per dense layer. By default maps show alpha x agreement (> 0 boosted by pass 2, < 0 suppressed) and
    dense bars the gains 1 + alpha x agreement, coloured like the maps; ``gain=False`` shows raw agreement,
    labelled "sign set by training". On the class layer the predicted class has a solid outline and a bold
    label, the true class a dashed outline and an italic label.

    Top-down cue: with ``cued_trace`` (the same images traced with ``model.trace(x, query=...)``) the figure
    has two rows of maps, without the cue (``trace``) and "cued: CUE", and each dense layer's charts for both.
    A layer's two maps share one colour scale (the larger of their max |values|; ``joint``: one scale for all
    maps of both rows), so a colour means the same value in both rows. With ``cue`` alone, ``trace`` is taken
    to be cued already and the header starts with "cued: CUE".

    Args:
        image: the input as the model saw it ((C, H, W) tensor or (H, W[, C]) array in [0, 1]).
        trace: trace holding this image (without the cue when ``cued_trace`` is given).
        index: which image of the trace(s).
        classes: class names.
        true_label: the true class, if known.
        signed, joint: see ``heatmaps.normalize``.
        cmap: diverging colormap of the maps.
        gain: alpha x agreement (default) or raw agreement.
        layout: ``"double"`` (7.2 in wide, default) or ``"single"`` (3.5 in), all text >= 7 pt.
        layers: conv layers to show (default: all).
        cued_trace: the same images traced under a top-down cue: draw both rows.
        cue: the cue's name (e.g. the class name given to ``LoadedModel.cue``); default "custom query" when
            ``cued_trace`` is given.
        outlines: items to outline on the input and every map, ``[(box_xyxy, label, colour), ...]`` in input
            pixels (x1, y1 exclusive), :class:`~gatta_viz.analysis.overlays.Outline` objects or index entries
            of ``export_scenes`` / ``export_clutter``; a line under the maps names them in their colours.
    Returns:
        The figure (save it with :func:`save_figure`; it keeps its size).
    Warns:
        UntrainedGAttAWarning: every alpha is 0 (the figure also says so).
    """
    img = image_for_display(image)
    items = as_outlines(outlines, img.shape[:2])
    r = Fig3Renderer(trace, classes, signed, joint, cmap, gain, layout, layers, image_shape=img.shape[:2], cue=cue,
                     compare=cued_trace is not None, outlines=bool(items))
    return r.update(img, trace, index, true_label, cued_trace=cued_trace, outlines=items)


def alpha_bars(alphas: Dict[str, float]) -> Figure:
    """Bar chart of alpha per layer, in one neutral colour (alpha is a strength, not a boosted/suppressed value).

    alpha < 0 means the layer boosts where its agreement is negative; the values are printed on the bars.
    """
    fig = Figure(figsize=(max(2.4, 0.9 + 0.55 * len(alphas)), 2.2), layout="constrained")
    ax = fig.add_subplot()
    names, vals = list(alphas), [float(v) for v in alphas.values()]
    bars = ax.bar(names, vals, color=NEUTRAL)
    ax.axhline(0, color="black", lw=0.6)
    m = max((abs(v) for v in vals), default=0.0) or 1.0
    ax.set_ylim(min(0.0, min(vals, default=0.0)) - 0.25 * m, max(0.0, max(vals, default=0.0)) + 0.25 * m)
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:+.3g}", ha="center", va="bottom" if v >= 0 else "top",
                fontsize=FONT_PT)
    ax.set_ylabel("α", fontsize=FONT_PT + 1)
    ax.set_title("modulation strength α per layer\n(α < 0: boosts where agreement < 0)", fontsize=FONT_PT + 1)
    ax.tick_params(labelsize=FONT_PT)
    ax.tick_params(axis="x", rotation=30)
    return fig


def save_figure(fig: Figure, path: str, dpi: int = 150, tight: Optional[bool] = None, compress_level: int = 6) -> str:
    """Save as PNG, PDF or SVG (by extension), creating the directory; closes the figure. Returns the path.

    Args:
        fig: the figure.
        path: ends in .png, .pdf or .svg.
        dpi: pixels per inch of a PNG (and of images inside PDF/SVG).
        tight: crop to the drawn content (None: yes, except for fixed-size layouts such as :func:`fig3`'s,
            which keep their width in inches).
        compress_level: PNG zlib level (1 is faster, 9 smaller).
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".png", ".svg", ".pdf"):
        raise ValueError(f"figure path must end in .png, .svg or .pdf, got {path!r}")
    if tight is None:
        tight = not getattr(fig, "gatta_fixed_size", False)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    kw = {"pil_kwargs": {"compress_level": int(compress_level)}} if ext == ".png" else {}
    fig.savefig(path, dpi=dpi, bbox_inches="tight" if tight else None, **kw)
    plt.close(fig)
    return path
