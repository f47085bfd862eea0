"""Interactive plotly figures: a layer slider over overlays, and class bars (gains by default).

Same colour language as the matplotlib figures (:mod:`gatta_viz.render.style`): a diverging map for boosted (> 0)
vs suppressed (< 0), the predicted class marked by an outline and its label, never by a fill colour.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from ..compute.checks import untrained_message, warn_if_untrained
from ..render.images import check_cmap, overlay
from ..render.style import DEFAULT_CMAP, NEUTRAL, dense_axis_label, map_legend, map_name
from ..core.trace import GAttATrace

__all__ = ["layer_slider", "class_bars"]


def layer_slider(image, heatmaps: Dict[str, np.ndarray], cmap: str = DEFAULT_CMAP, opacity: float = 0.5,
                 signed: bool = True, gain: bool = True, joint: bool = False,
                 alphas: Optional[Dict[str, float]] = None) -> go.Figure:
    """One overlay per layer, a slider to move between layers; the title says what the maps are.

    Args:
        image: the input (PIL or array).
        heatmaps: layer -> normalised map (see ``heatmaps.conv_heatmaps``).
        cmap, opacity, signed: as in ``overlays.overlay``.
        gain, joint: what ``heatmaps`` hold (alpha x agreement or raw agreement; one scale or one per layer),
            for the legend.
        alphas: layer -> alpha, to print with each layer and to warn when all are 0 (untrained).
    Returns:
        A plotly Figure (``fig.write_html(path)`` to keep it).
    Raises:
        ValueError: no heatmaps.
    """
    if not heatmaps:
        raise ValueError("layer_slider needs at least one heatmap")
    check_cmap(cmap)
    names = list(heatmaps)
    legend = map_legend(gain, signed, joint)
    if alphas is not None and warn_if_untrained(alphas, gain):
        legend += f"<br><b>{untrained_message(gain)}</b>"

    def title(n: str) -> str:
        a = f", α={float(alphas[n]):+.3f}" if alphas is not None and n in alphas else ""
        return f"{map_name(gain)}: {n}{a}<br><sub>{legend}</sub>"

    fig = go.Figure()
    for i, n in enumerate(names):
        fig.add_trace(go.Image(z=np.asarray(overlay(image, heatmaps[n], cmap, opacity, signed)), name=n, visible=i == 0))
    steps = [
        {"method": "update", "label": n, "args": [{"visible": [j == i for j in range(len(names))]}, {"title": title(n)}]}
        for i, n in enumerate(names)
    ]
    fig.update_layout(
        title=title(names[0]),
        sliders=[{"active": 0, "currentvalue": {"prefix": "layer: "}, "steps": steps}],
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def class_bars(trace: GAttATrace, index: int, classes: Sequence[str], true_label: Optional[int] = None,
               layer: Optional[str] = None, gain: bool = True, cmap: str = DEFAULT_CMAP) -> go.Figure:
    """Each class unit of a dense layer (one unit per class): its gain 1 + α × agreement, or raw agreement.

    Gains are drawn from 1 and coloured like the maps (boosted > 1, suppressed < 1); raw agreement in one neutral
    colour. The predicted class (pass 2) has a solid black outline and a bold label, the true class a dashed one.

    Args:
        trace: a trace.
        index: image in the batch.
        classes: class names.
        true_label: true class, if known.
        layer: the class layer (default: the last dense layer with len(classes) units).
        gain: gains (default) or raw agreement ("sign set by training").
        cmap: colormap of the gain bars.
    Returns:
        A plotly bar chart.
    Raises:
        ValueError: the trace has no dense GAttA layer with one unit per class.
    Warns:
        UntrainedGAttAWarning: every alpha is 0 (the title says so too).
    """
    from matplotlib import colormaps

    check_cmap(cmap)
    dense = [n for n, lt in trace.layers.items() if lt.kind == "dense" and lt.agreement.shape[-1] == len(classes)]
    if layer is None:
        if not dense:
            raise ValueError("no dense GAttA layer with one unit per class in this trace")
        layer = dense[-1]
    lt = trace.layers[layer]
    v = lt.map(gain)[index].detach().cpu().double().numpy()  # alpha x agreement (= gain - 1) or raw agreement
    pred = int(trace.logits_pass2[index].argmax())
    if gain:
        m = float(np.abs(v).max()) or 1.0
        rgb = colormaps[cmap](0.5 + 0.5 * v / m)[:, :3]
        colors = [f"rgb({int(255 * r)},{int(255 * g)},{int(255 * b)})" for r, g, b in rgb]
    else:
        colors = [NEUTRAL] * len(v)
    widths = [0.0] * len(v)
    widths[pred] = 3.0
    labels = list(classes)
    labels[pred] = f"<b>{labels[pred]}</b>"
    if true_label is not None and int(true_label) != pred:
        widths[int(true_label)] = 2.0
        labels[int(true_label)] = f"<i>{labels[int(true_label)]}</i>"
    base = 1.0 if gain else 0.0
    fig = go.Figure(go.Bar(x=labels, y=v, base=base, marker={"color": colors, "line": {"color": "black", "width": widths}}))
    fig.add_hline(y=base, line_width=1, line_color="black")
    true_differs = true_label is not None and int(true_label) != pred
    marks = "bold + outline = predicted" + (", italic + thin outline = true class" if true_differs else "")
    if warn_if_untrained(trace.alphas, gain):
        marks += f"<br><b>{untrained_message(gain)}</b>"
    fig.update_layout(title=f"{layer}: {dense_axis_label(gain)} per class, α={float(lt.alpha):+.3f}<br><sub>{marks}</sub>",
                      yaxis_title=dense_axis_label(gain), margin={"l": 10, "r": 10, "t": 60, "b": 10})
    fig.update_xaxes(type="category")
    return fig
