"""Interactive plotly figures: a layer slider over overlays, and class-agreement bars."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from .overlays import overlay
from ..core.trace import GAttATrace

__all__ = ["layer_slider", "class_bars"]


def layer_slider(image, heatmaps: Dict[str, np.ndarray], cmap: str = "RdBu_r", opacity: float = 0.5, signed: bool = True) -> go.Figure:
    """One overlay per layer, a slider to move between layers.

    Args:
        image: the input (PIL or array).
        heatmaps: layer -> normalised map (see ``heatmaps.conv_heatmaps``).
        cmap, opacity, signed: as in ``overlays.overlay``.
    Returns:
        A plotly Figure (``fig.write_html(path)`` to keep it).
    """
    if not heatmaps:
        raise ValueError("layer_slider needs at least one heatmap")
    names = list(heatmaps)
    fig = go.Figure()
    for i, n in enumerate(names):
        fig.add_trace(go.Image(z=np.asarray(overlay(image, heatmaps[n], cmap, opacity, signed)), name=n, visible=i == 0))
    steps = [
        {"method": "update", "label": n, "args": [{"visible": [j == i for j in range(len(names))]}, {"title": f"agreement: {n}"}]}
        for i, n in enumerate(names)
    ]
    fig.update_layout(
        title=f"agreement: {names[0]}",
        sliders=[{"active": 0, "currentvalue": {"prefix": "layer: "}, "steps": steps}],
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def class_bars(trace: GAttATrace, index: int, classes: Sequence[str], true_label: Optional[int] = None,
               layer: Optional[str] = None) -> go.Figure:
    """Agreement of each class unit (a dense layer with one unit per class), predicted class in red, true in green.

    Args:
        trace: a trace.
        index: image in the batch.
        classes: class names.
        true_label: true class, if known.
        layer: the class layer (default: the last dense layer with len(classes) units).
    Returns:
        A plotly bar chart.
    """
    dense = [n for n, lt in trace.layers.items() if lt.kind == "dense" and lt.agreement.shape[-1] == len(classes)]
    if layer is None:
        if not dense:
            raise ValueError("no dense GAttA layer with one unit per class in this trace")
        layer = dense[-1]
    g = trace.agreement(layer)[index].detach().cpu().numpy()
    pred = int(trace.logits_pass2[index].argmax())
    colors = ["#7f7f7f"] * len(g)
    if true_label is not None:
        colors[int(true_label)] = "#2ca02c"
    colors[pred] = "#d62728"
    fig = go.Figure(go.Bar(x=list(classes), y=g, marker_color=colors))
    fig.update_layout(title=f"{layer}: agreement per class (red = predicted, green = true)", yaxis_title="agreement",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig
