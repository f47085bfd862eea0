"""One colour language for every map, bar chart and legend (figures, plotly views, CLI, app).

- Maps use a diverging colormap centred at 0 (default ``RdBu_r``). The default map is the *gain map*
  alpha x agreement (= gain - 1): > 0 where pass 2 boosts a position, < 0 where it suppresses it. Raw agreement
  is available, labelled "raw agreement (sign set by training)" because negating a layer's keys and its alpha
  gives the identical network.
- The predicted class is marked by a solid outline and a bold label, the true class by a dashed outline and an
  italic label; never by a fill colour, so red keeps one meaning ("boosted").
- Alpha bars use one neutral colour: alpha is a strength, not a map value.

No plotting library is imported here, so any front end can use these names and labels.
"""
from __future__ import annotations

from typing import Dict

__all__ = [
    "DEFAULT_CMAP", "NEUTRAL", "PRED_EDGE", "TRUE_EDGE", "map_name", "map_sign_text", "scale_text", "map_legend",
    "dense_axis_label", "class_marks_text",
]

DEFAULT_CMAP = "RdBu_r"
NEUTRAL = "#5f6b73"  # alpha bars and raw-agreement bars: carries no boosted/suppressed meaning
PRED_EDGE: Dict[str, object] = {"edgecolor": "black", "linewidth": 1.4, "linestyle": "-"}
TRUE_EDGE: Dict[str, object] = {"edgecolor": "black", "linewidth": 1.1, "linestyle": "--"}


def map_name(gain: bool = True) -> str:
    """What a map shows: ``"α × agreement"`` (the gain map) or ``"raw agreement (sign set by training)"``."""
    return "α × agreement" if gain else "raw agreement (sign set by training)"


def map_sign_text(gain: bool = True, signed: bool = True) -> str:
    """How to read the map's sign, e.g. ``"> 0 boosted by pass 2, < 0 suppressed"``."""
    if gain:
        return "> 0 boosted by pass 2, < 0 suppressed" if signed else "boosted by pass 2 only (rectified)"
    return "> 0 agrees with q_avg, < 0 disagrees" if signed else "agreement > 0 only (rectified)"


def scale_text(joint: bool = False) -> str:
    """How maps are scaled for display: one scale for all maps, or each map to its own max |value|."""
    return "one scale for all maps" if joint else "each map scaled to its own max |value|"


def map_legend(gain: bool = True, signed: bool = True, joint: bool = False) -> str:
    """The full legend line for a set of maps: map kind, sign, scale (follows every display control).

    Args:
        gain: alpha x agreement (True) or raw agreement (False).
        signed: signed (diverging) or rectified maps.
        joint: one scale for all layers or one per layer.
    Returns:
        the legend text.
    """
    return f"{map_name(gain)}: {map_sign_text(gain, signed)}; {scale_text(joint)}"


def dense_axis_label(gain: bool = True) -> str:
    """Axis label of dense-layer bars: gains ``1 + α × agreement`` (bars from 1) or raw agreement."""
    return "gain 1 + α × agreement" if gain else "raw agreement (sign set by training)"


def class_marks_text(true_known: bool) -> str:
    """Legend of the class marks."""
    return "solid outline = predicted" + (", dashed = true class" if true_known else "")
