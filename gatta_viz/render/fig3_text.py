"""The words of Fig. 3 and how wide they are: measuring and wrapping at print size, titles, header, legend."""
from __future__ import annotations

from typing import List, Optional, Tuple

from .style import class_marks_text, dense_axis_label, map_name, map_sign_text, scale_text

__all__ = ["LAYOUTS", "FONT_PT", "LINE_H", "MARGIN", "UNCUED_TITLE", "cued_title", "text_width", "wrap", "signed_text",
           "short_number", "header_text", "legend_text", "dense_title", "row_title"]

LAYOUTS = {"single": 3.5, "double": 7.2}  # figure width in inches
FONT_PT = 7.0  # every text in fig3 and alpha_bars, at print size
LINE_H = FONT_PT * 1.3 / 72  # line height (inches)
MARGIN = 0.06  # outer margin (inches)
UNCUED_TITLE = "without cue: the query pass 1 pooled from the image"

_MEASURE: list = []


def cued_title(cue: str) -> str:
    """The title of maps computed under a top-down cue: ``"cued: Trouser"``."""
    return f"cued: {cue}"


def text_width(text: str) -> float:
    """Width in inches of one line of ``text`` at FONT_PT (DejaVu Sans, matplotlib's default font)."""
    if not _MEASURE:
        from matplotlib.font_manager import FontProperties
        from matplotlib.textpath import TextToPath

        _MEASURE.extend([TextToPath(), FontProperties(size=FONT_PT)])
    return _MEASURE[0].get_text_width_height_descent(text, _MEASURE[1], ismath=False)[0] / 72.0


def wrap(text: str, width_in: float, sep: str = " ") -> str:
    """Wrap ``text`` into lines no wider than ``width_in`` inches at FONT_PT, breaking at ``sep``."""
    lines: List[str] = []
    for word in text.split(sep):
        if lines and text_width(lines[-1] + sep + word) <= width_in:
            lines[-1] += sep + word
        else:
            lines.append(word)
    return "\n".join(lines)


def signed_text(v: float, digits: int = 3) -> str:
    """``+0.123`` / ``−0.123`` with a true minus sign."""
    return f"{v:+.{digits}f}".replace("-", "\u2212")


def short_number(v: float) -> str:
    """Two significant digits, true minus sign."""
    return (f"{v:.2g}" if v != 0 else "0").replace("-", "\u2212")


def row_title(spec, row: int) -> str:
    """Title of a row of maps: the uncued row, or the cue's."""
    return cued_title(spec.cue) if row == 1 or not spec.compare else UNCUED_TITLE


def header_text(spec, width: float, pass2: Tuple[str, float], pass1: Tuple[str, float], true: Optional[str],
                cued: Optional[Tuple[str, float]] = None) -> str:
    """The header: both passes' predictions as (label, probability) (and under a cue, pass 2 without and with
    it), the true class."""
    (pred, p2), (pred1, p1) = pass2, pass1
    if spec.compare:
        pred_cued, p_cued = cued or ("", 0.0)
        parts = [f"pass 1: {pred1} {100 * p1:.0f}%", f"pass 2 without cue: {pred} {100 * p2:.0f}%",
                 f"{cued_title(spec.cue)} → pass 2: {pred_cued} {100 * p_cued:.0f}%"]
    else:
        parts = [f"pass 2 (output): {pred} {100 * p2:.0f}%", f"pass 1: {pred1} {100 * p1:.0f}%"]
        if spec.cue is not None:
            parts.insert(0, cued_title(spec.cue))
    if true is not None:
        parts.append(f"true: {true}")
    return wrap("   ".join(parts), width, sep="   ")


def legend_text(spec, inner: float) -> str:
    """The legend under the colour bar: what the maps show, their sign and their scale."""
    sign = map_sign_text(spec.gain, spec.signed)
    if spec.cue is not None:  # under a cue, agreement is with the cue's query
        sign = sign.replace("q_avg", "the query (pooled or cued)")
    first = wrap(f"{map_name(spec.gain)}: {sign}", inner)
    if spec.compare:
        scale = ("one scale for all maps of both rows" if spec.joint else
                 "each layer's two maps share one scale (the larger max |value|), printed under them")
    else:
        scale = scale_text(spec.joint) + ("" if spec.joint else ", printed under it")
    return first + "\n" + wrap(scale, inner)


def dense_title(spec, name: str, row: int, cw: float) -> str:
    """A dense layer's chart title: its name, units and alpha, what the bars show, the class marks."""
    units = spec.shapes[name][-1]
    alpha = spec.alphas[name]
    lines = [f"{name} ({units} units), α={signed_text(alpha)}", dense_axis_label(spec.gain)
             + (" (α = 0: all 1)" if spec.gain and alpha == 0 else "")]
    if spec.compare:
        lines.insert(0, "without cue" if row == 0 else cued_title(spec.cue))
    if spec.is_class_layer(name):
        lines.append(class_marks_text(True))
    return "\n".join(wrap(t, cw) for t in lines)
