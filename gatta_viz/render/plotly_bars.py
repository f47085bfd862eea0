"""Interactive bar charts of a dense layer (plotly): the gains 1 + alpha x agreement per unit, or raw agreement."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["dense_bars"]


def dense_bars(layer: str, g: np.ndarray, classes: Sequence[str], predicted: int, what: str = "gain"):
    """Plotly bars of a dense layer, in unit order.

    ``what="gain"``: bars of the gain 1 + alpha x agreement drawn from 1 (no change), red above (boosted) and
    blue below (suppressed). ``what="agreement"``: raw agreement from 0 in one neutral colour (its sign is set
    by training). On the class layer the predicted class is outlined and labelled, never coloured.

    Args:
        layer: the dense layer's name (for the title).
        g: (units,) gains (``what="gain"``) or raw agreement of that layer for one image.
        classes: unit names (class names on the class layer).
        predicted: index of the predicted class (pass 2).
        what: "gain" or "agreement".
    Returns:
        a plotly Figure.
    """
    import plotly.graph_objects as go

    g = np.asarray(g, dtype=float)
    is_class = len(g) == len(classes)
    labels = list(classes) if is_class else [str(i) for i in range(len(g))]
    if is_class:
        labels[predicted] = f"<b>{labels[predicted]}</b> (predicted)"
    gain = what == "gain"
    base = 1.0 if gain else 0.0
    colors = (["#b2182b" if v > 1 else "#2166ac" for v in g] if gain else ["#5f6b73"] * len(g))
    widths = [3 if (is_class and i == predicted) else 0 for i in range(len(g))]
    fig = go.Figure(go.Bar(x=labels, y=g - base, base=base, marker_color=colors,
                           marker_line_color="black", marker_line_width=widths,
                           hovertemplate="%{x}: %{customdata:.4f}<extra></extra>", customdata=g))
    title = (f"{layer}: gain 1 + alpha x agreement per {'class' if is_class else 'unit'} (red: boosted, blue: suppressed)"
             if gain else f"{layer}: raw agreement per {'class' if is_class else 'unit'} (sign set by training)")
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10}, title=title,
                      yaxis_title="gain" if gain else "raw agreement")
    fig.update_xaxes(type="category")
    return fig
