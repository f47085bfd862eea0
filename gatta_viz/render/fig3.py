"""Fig. 3 drawn from an explanation record: the paper's layout at journal column widths, built once and redrawn
per image.

``layout="single"`` is 3.5 in wide (one journal column), ``"double"`` 7.2 in (two columns); every text is 7 pt or
more at that size, so the figure can go into a paper unscaled. A :class:`Fig3Renderer` builds the figure once
(:func:`~gatta_viz.render.fig3_layout.layout_fig3` places the parts) and :meth:`Fig3Renderer.update` only sets
the data of each :class:`~gatta_viz.compute.record.Explanation`, which is what makes batch explain fast;
:func:`fig3` is a one-image shortcut. Nothing here runs a model or computes a map: maps come from the record and
are only scaled for colour.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import PolyCollection
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .bars import bar_verts, set_bar_ticks
from .fig3_layout import (
    ColorbarBox, DenseChart, Fig3Spec, HeaderBox, LegendText, MapPanel, OutlineLegendLine, RowTitle, WarningText,
    layout_fig3,
)
from .fig3_text import FONT_PT, header_text, dense_title, short_number, signed_text, text_width
from .images import check_cmap
from .options import FigureOptions
from .outline_draw import draw_outlines_on_axes
from .outlines import OUTLINE_STROKE, as_outlines
from .save import png_bytes
from .style import NEUTRAL, PRED_EDGE, TRUE_EDGE
from ..compute.arrays import to_rgb_array
from ..compute.checks import UntrainedGAttAWarning, untrained_message
from ..compute.maps import normalize_shared
from ..compute.record import Explanation

__all__ = ["Fig3Renderer", "fig3", "fig3_spec"]


def fig3_spec(ex: Explanation, options: Optional[FigureOptions] = None, outlines: bool = False) -> Fig3Spec:
    """What Fig. 3 of ``ex`` shows (see :class:`Fig3Spec`).

    Raises:
        ValueError: a plain CNN's explanation (no GAttA maps to draw).
    """
    if not ex.is_gatta:
        raise ValueError("Fig. 3 draws GAttA maps; this explanation is of a plain CNN (draw its Grad-CAM overlays)")
    opts = options or FigureOptions()
    s = ex.shown
    conv = tuple(s.heatmaps)
    dense = tuple(ex.dense_layers)
    return Fig3Spec(conv=conv, dense=dense, shapes={n: tuple(s.native[n].shape) for n in conv + dense},
                    classes=tuple(ex.classes) if ex.classes is not None else None,
                    alphas={n: float(a) for n, a in ex.alphas.items()}, signed=ex.options.signed,
                    joint=ex.options.joint, gain=ex.options.gain, cmap=opts.cmap, layout=opts.layout,
                    cue=ex.cue if ex.cue is not None else None, compare=ex.compare,
                    outlines=bool(opts.outlines or outlines), image_shape=tuple(int(v) for v in ex.image.shape[:2]))


class Fig3Renderer:
    """The Fig. 3 layout for one model and one set of display options, redrawn for each explanation.

    Args:
        ex: an explanation of the kind to draw (gives layers, map shapes, alphas, classes, cue, map options).
        options: :class:`FigureOptions` (cmap, layout; ``outlines`` reserves the outline legend line).
        outlines: reserve the outline legend line even when ``options.outlines`` is False.
    Raises:
        ValueError: an unknown colormap.
    """

    def __init__(self, ex: Explanation, options: Optional[FigureOptions] = None, outlines: bool = False) -> None:
        self.options = options or FigureOptions()
        check_cmap(self.options.cmap)
        self.spec = fig3_spec(ex, self.options, outlines)
        self.cmap = colormaps[self.spec.cmap]
        self._warned = False
        self._background = None
        self._outline_artists: List = []
        self.layout = layout_fig3(self.spec)
        self._place()

    @property
    def image_shape(self) -> Tuple[int, int]:
        """(height, width) of the input image this renderer draws."""
        return self.spec.image_shape

    @property
    def fig(self) -> Figure:
        """The matplotlib figure (drawn for the last explanation given)."""
        return self._fig

    @property
    def width_in(self) -> float:
        """The figure's width in inches (3.5 or 7.2)."""
        return self.layout.width

    @property
    def height_in(self) -> float:
        """The figure's height in inches (what the layout needs)."""
        return self.layout.height

    def matches(self, ex: Explanation, options: Optional[FigureOptions] = None, outlines: bool = False) -> bool:
        """Whether this renderer can draw ``ex`` with these options.

        Args:
            ex, options, outlines: as for the constructor.
        Returns:
            True when ``ex`` has the same layers, map shapes, classes, cue and map options, and ``options`` the
            same layout (then :meth:`update` redraws it).
        """
        try:
            return fig3_spec(ex, options or self.options, outlines).key() == self.spec.key()
        except ValueError:
            return False

    # ------------------------------------------------------------------------------------------ building
    def _rect(self, box) -> List[float]:
        W, H = self.layout.width, self.layout.height
        return [box.left / W, 1 - (box.top + box.height) / H, box.width / W, box.height / H]

    def _text_at(self, x_in: float, y_in: float, s: str, **kw):
        kw.setdefault("fontsize", FONT_PT)
        return self._fig.text(x_in / self.layout.width, 1 - y_in / self.layout.height, s, **kw)

    def _place(self) -> None:
        lay, spec = self.layout, self.spec
        self._fig = Figure(figsize=(lay.width, lay.height))  # no pyplot: a renderer can live long without its registry
        self._fig.gatta_fixed_size = True  # save_figure keeps the size (no tight bounding box)
        self.panels: Dict[Tuple[int, str], object] = {}
        self.scale_texts: Dict[Tuple[int, str], object] = {}
        self.input_axes: List = []
        self.input_ims: List = []
        self.bars: Dict[Tuple[int, str], dict] = {}
        self.dynamic: List = []  # artists whose content changes per image, in drawing order (see to_png)
        self._outline_line: Optional[OutlineLegendLine] = None
        self._map_axes: List[Tuple[object, Tuple[int, ...]]] = []
        for item in lay.items:
            if isinstance(item, HeaderBox):
                self.header = self._text_at(item.left, item.top, "", va="top", ha="left")
                self.dynamic.append(self.header)
            elif isinstance(item, (WarningText, RowTitle)):
                self._text_at(item.left, item.top, item.text, va="top", ha="left", fontweight="bold")
            elif isinstance(item, LegendText):
                self._text_at(lay.width / 2, item.top, item.text, va="top", ha="center", multialignment="center")
            elif isinstance(item, OutlineLegendLine):
                self._outline_line = item
            elif isinstance(item, MapPanel):
                self._add_panel(item)
            elif isinstance(item, ColorbarBox):
                self._add_colorbar(item)
            elif isinstance(item, DenseChart):
                self._add_chart(item)

    def _add_panel(self, p: MapPanel) -> None:
        ax = self._fig.add_axes(self._rect(p))
        ax.set_xticks([]), ax.set_yticks([])
        for sp in ax.spines.values():
            sp.set_linewidth(0.5)
        h0, w0 = self.spec.image_shape
        if p.layer is None:
            im = ax.imshow(np.zeros((h0, w0, 3)), interpolation="nearest", aspect="auto")
            ax.set_autoscale_on(False)
            self.input_axes.append(ax)
            self.input_ims.append(im)
            self._map_axes.append((ax, (h0, w0)))
            self._text_at(p.left + p.width / 2, p.top - 0.02, f"input {h0}×{w0}", va="bottom", ha="center")
            self.dynamic += [im, *ax.spines.values()]
            return
        shape = self.spec.shapes[p.layer]
        vmin = -1.0 if self.spec.signed else 0.0
        im = ax.imshow(np.zeros(shape), cmap=self._display_cmap(), norm=Normalize(vmin, 1.0), interpolation="nearest",
                       aspect="auto")
        ax.set_autoscale_on(False)
        self._map_axes.append((ax, shape))
        self._text_at(p.left + p.width / 2, p.top - 0.02,
                      f"{p.layer} {shape[0]}×{shape[1]}\nα={signed_text(self.spec.alphas[p.layer])}", va="bottom",
                      ha="center", multialignment="center")
        scale = self._text_at(p.left + p.width / 2, p.top + p.height + 0.02, "", va="top", ha="center")
        self.panels[(p.row, p.layer)] = im
        self.scale_texts[(p.row, p.layer)] = scale
        self.dynamic += [im, *ax.spines.values(), scale]

    def _add_colorbar(self, box: ColorbarBox) -> None:
        cax = self._fig.add_axes(self._rect(box))
        cb = self._fig.colorbar(next(iter(self.panels.values())), cax=cax, orientation="horizontal")
        cb.outline.set_linewidth(0.5)
        cax.tick_params(labelsize=FONT_PT, length=2, width=0.5, pad=1.5)
        signed = self.spec.signed
        cb.set_ticks([-1.0, 0.0, 1.0] if signed else [0.0, 0.5, 1.0])
        if self.spec.joint:  # real values on the ticks, which change per image
            self.dynamic.append(cax.xaxis)
        else:
            cb.set_ticklabels(["−scale", "0", "+scale"] if signed else ["0", "scale/2", "scale"])
        self.colorbar = cb

    def _add_chart(self, d: DenseChart) -> None:
        spec = self.spec
        ax = self._fig.add_axes(self._rect(d))
        units = spec.shapes[d.layer][-1]
        xs = np.arange(units)
        base = 1.0 if spec.gain else 0.0
        # all bars in one collection (one draw call for hundreds of units); outlines mark the classes
        bars = PolyCollection(bar_verts(np.zeros(units), base), facecolors=NEUTRAL, linewidths=0)
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
        cls = spec.is_class_layer(d.layer)
        if cls:
            ax.set_xticks(xs)
            ax.set_xticklabels([spec.class_name(int(k)) for k in xs], rotation=45, ha="right", rotation_mode="anchor")
        else:
            step = int(math.ceil(units / 6 / 10.0)) * 10 if units > 12 else max(1, units // 6)
            ax.set_xticks(np.arange(0, units, step))
            ax.set_xlabel("unit", fontsize=FONT_PT, labelpad=1)
        self._text_at(d.cell_left + d.cell_width / 2, d.top - 0.03, dense_title(spec, d.layer, d.row, d.cell_width),
                      va="bottom", ha="center", multialignment="center")
        self.bars[(d.row, d.layer)] = {"ax": ax, "bars": bars, "class": cls, "pred": pred_box, "true": true_box}
        self.dynamic += [bars, pred_box, true_box, line, ax.yaxis]

    def _display_cmap(self):
        """The maps' colormap: the whole diverging map when signed; its upper half (0 = centre) when rectified."""
        if self.spec.signed:
            return self.cmap
        return ListedColormap(self.cmap(np.linspace(0.5, 1.0, 256)), name=f"{self.spec.cmap}_upper")

    # ------------------------------------------------------------------------------------------ drawing
    def update(self, ex: Explanation, outlines=None) -> Figure:
        """Draw one explanation into the figure; returns the figure (the same object every call).

        Args:
            ex: an explanation this renderer :meth:`matches` (both rows when it has a cue and the uncued result).
            outlines: items to outline on the input and on every map (see
                :func:`gatta_viz.render.outlines.as_outlines`, in input pixels); their labels go on the line
                reserved when the renderer was built with outlines.
        Returns:
            The figure.
        Raises:
            ValueError: ``ex`` does not fit this renderer (other layers, size, options), or outlines without room.
        Warns:
            UntrainedGAttAWarning: on the first image, when every alpha is 0.
        """
        spec = self.spec
        if fig3_spec(ex, self.options, spec.outlines).key() != spec.key():
            raise ValueError("this renderer was built for another kind of explanation (layers, map shapes, input size, "
                             "cue or options); build another one")
        items = as_outlines(outlines, spec.image_shape)
        if items and not spec.outlines:
            raise ValueError("this renderer was built without room for outlines: build it with outlines=True")
        img = to_rgb_array(ex.image)
        for im in self.input_ims:
            im.set_data(img)
        rows = ex.rows
        self._set_header(ex, rows)
        maps, scales = normalize_shared([{n: r.native[n] for n in spec.conv} for r in rows], spec.signed, spec.joint)
        for (row, n), im in self.panels.items():
            im.set_data(maps[row][n])
            text = self.scale_texts[(row, n)]
            if spec.gain and spec.alphas[n] == 0:
                text.set_text("α = 0: map is 0")
            elif spec.joint:
                text.set_text("")
            else:
                text.set_text(f"scale ±{short_number(scales[n])}" if spec.signed else f"max {short_number(scales[n])}")
        if spec.conv and spec.joint:
            s = max(scales.values(), default=0.0)
            ticks = [-s, 0.0, s] if spec.signed else [0.0, s / 2, s]
            self.colorbar.set_ticklabels([short_number(t) for t in ticks])
        spans = {n: max(float(np.abs(r.native[n]).max()) if r.native[n].size else 0.0 for r in rows) for n in spec.dense}
        for (row, n), d in self.bars.items():
            self._update_bars(d, rows[row].native[n], rows[row].prediction["index"], ex.true_label, spans[n])
        self._draw_outlines(items)
        if spec.untrained and not self._warned:
            warnings.warn(untrained_message(spec.gain), UntrainedGAttAWarning, stacklevel=2)
            self._warned = True
        return self._fig

    def _set_header(self, ex: Explanation, rows) -> None:
        spec = self.spec
        first, p1 = rows[0].prediction, rows[0].top_pass1[0]
        cued = rows[1].prediction if spec.compare else None
        true = None if ex.true_label is None else spec.class_name(int(ex.true_label))
        self.header.set_text(header_text(spec, self.layout.inner, (spec.class_name(first["index"]), first["prob"]),
                                         (spec.class_name(p1["index"]), p1["prob"]), true,
                                         (spec.class_name(cued["index"]), cued["prob"]) if cued else None))

    def _update_bars(self, d: dict, values: np.ndarray, pred: int, true_label: Optional[int], span: float) -> None:
        v = np.asarray(values).astype(np.float64)  # alpha x agreement, or raw
        base = 1.0 if self.spec.gain else 0.0
        m = max(float(np.abs(v).max()) if v.size else 0.0, span or 0.0)  # charts side by side share one scale
        colours = self.cmap(0.5 + 0.5 * (v / m if m > 0 else np.zeros_like(v))) if self.spec.gain else NEUTRAL
        d["bars"].set_verts(bar_verts(v, base))
        d["bars"].set_facecolors(colours)
        shown_true = true_label if d["class"] and true_label is not None and int(true_label) != pred else None
        for box, k in ((d["pred"], pred if d["class"] else None), (d["true"], shown_true)):
            box.set_visible(k is not None)
            if k is not None:
                box.set_xy((int(k) - 0.4, base))
                box.set_height(v[int(k)])
        set_bar_ticks(d["ax"], base, m if m > 0 else 1.0)

    def _draw_outlines(self, items) -> None:
        """Replace the previous image's outlines (on the inputs and maps) and their legend."""
        from matplotlib import patheffects

        for a in self._outline_artists:
            a.remove()
        self._outline_artists = []
        if not items:
            return
        for ax, shape in self._map_axes:
            self._outline_artists += draw_outlines_on_axes(ax, items, shape[:2], self.spec.image_shape)
        if self._outline_line is None:
            return
        line = self._outline_line
        x, head = line.left, "outlines:"
        self._outline_artists.append(self._text_at(x, line.top, head, va="top", ha="left"))
        x += text_width(head) + 0.06
        for k, o in enumerate(items):
            text = o.label or f"item {k + 1}"
            need = text_width("■") + 0.04 + text_width(text) + 0.12
            if x + need > line.left + line.width and k:
                self._outline_artists.append(self._text_at(x, line.top, "…", va="top", ha="left"))
                break
            self._outline_artists.append(self._text_at(
                x, line.top, "■", va="top", ha="left", color=o.colour,
                path_effects=[patheffects.withStroke(linewidth=1.2, foreground=OUTLINE_STROKE)]))
            self._outline_artists.append(self._text_at(x + text_width("■") + 0.04, line.top, text, va="top", ha="left"))
            x += need

    # ------------------------------------------------------------------------------------------ saving
    def _dynamic_artists(self) -> List:
        return self.dynamic + self._outline_artists

    def to_png(self, path: Optional[str] = None, dpi: int = 200, compress_level: int = 1) -> bytes:
        """The current figure as PNG bytes (written to ``path`` if given), drawing only what changes per image.

        The first call at a given dpi draws everything except the per-image artists and keeps that background;
        later calls restore it and draw the per-image artists on top. The pixels are those of a full ``savefig``
        at the same dpi (tested).

        Args:
            path: a file to write the PNG to (atomically), or None.
            dpi: pixels per inch.
            compress_level: PNG zlib level (1 is faster, 9 smaller).
        Returns:
            the PNG file's bytes.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        fig = self._fig
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
        data = png_bytes(np.asarray(canvas.buffer_rgba()), compress_level)
        if path is not None:
            with open(path, "wb") as f:
                f.write(data)
        return data

    def save(self, path: str, dpi: int = 200) -> str:
        """Save the current figure: PNG through :meth:`to_png`, PDF and SVG as vector files.

        Args:
            path: ends in .png, .pdf or .svg.
            dpi: pixels per inch of a PNG (and of images inside PDF/SVG).
        Returns:
            ``path``.
        Raises:
            ValueError: another extension.
        """
        ext = os.path.splitext(path)[1].lower()
        if ext == ".png":
            self.to_png(path, dpi)
        elif ext in (".pdf", ".svg"):
            self._background = None  # a vector save draws on another canvas
            self._fig.savefig(path, dpi=dpi, format=ext[1:])
        else:
            raise ValueError(f"figure path must end in .png, .svg or .pdf, got {path!r}")
        return path


def fig3(ex: Explanation, options: Optional[FigureOptions] = None, outlines=None, **overrides) -> Figure:
    """The paper's Fig. 3 layout for one explanation, sized for a journal page.

    Panels: a header with both passes' predictions; the input; one map per conv layer at its own resolution
    with its alpha and its scale; one colourbar and a legend naming the map, its sign and its scale; one bar
    chart per dense layer. Maps show what the explanation computed (``MapOptions.gain``: alpha x agreement, > 0
    boosted by pass 2; or raw agreement, labelled "sign set by training"), dense bars the gains 1 + alpha x
    agreement coloured like the maps. On the class layer the predicted class has a solid outline, the true class
    a dashed one. An explanation under a cue with its uncued result draws two rows, "without cue" and "cued:
    CUE"; a layer's two maps share one colour scale.

    Args:
        ex: an :class:`~gatta_viz.compute.record.Explanation` of a GAttA model (``gv.explain(model, x)``).
        options: :class:`FigureOptions` (cmap, layout "double" 7.2 in / "single" 3.5 in).
        outlines: items to outline on the input and every map, ``[(box_xyxy, label, colour), ...]`` in input
            pixels, :class:`~gatta_viz.render.outlines.Outline` objects or index entries of ``export_scenes`` /
            ``export_clutter``; a line under the maps names them in their colours.
        **overrides: fields of :class:`FigureOptions` to change (``cmap``, ``layout``...).
    Returns:
        The figure (save it with :func:`gatta_viz.render.save.save_figure`; it keeps its size). A trace at hand
        instead of a record: ``fig3(gv.explanation_from_trace(t, x[i], i, classes=...))``.
    Raises:
        ValueError: ``ex`` is not an explanation record (e.g. the old ``fig3(image, trace, index)`` call), or
            bad figure options.
    Warns:
        UntrainedGAttAWarning: every alpha is 0 (the figure also says so).

    Examples:
        >>> import gatta_viz as gv
        >>> x, _ = gv.load_fashion_mnist("test").tensors(1)
        >>> fig = gv.fig3(gv.explain(gv.load_model(), x[0], gradcam=False), gv.FigureOptions(layout="single"))
        >>> float(fig.get_figwidth())                             # inches: one journal column
        3.5
    """
    if not isinstance(ex, Explanation):
        raise ValueError(f"fig3 draws an explanation record (gv.explain(model, x), or gv.explanation_from_trace(trace, "
                         f"image, index) for a trace at hand), got {type(ex).__name__}")
    opts = (options or FigureOptions()).replace(**overrides) if overrides else options
    items = as_outlines(outlines, ex.image.shape[:2])
    return Fig3Renderer(ex, opts, outlines=bool(items)).update(ex, outlines=items)
