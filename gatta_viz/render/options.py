"""How to draw an explanation, as one object built once by each entry point (API, CLI, app)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..compute.options import checked_replace
from .fig3_text import LAYOUTS
from .images import check_cmap
from .save import FIGURE_FORMATS
from .style import DEFAULT_CMAP

__all__ = ["FigureOptions", "DPI_RANGE"]

DPI_RANGE = (10, 1200)


@dataclass(frozen=True)
class FigureOptions:
    """Display options of figures and overlays.

    Attributes:
        cmap: matplotlib colormap of the maps (a diverging one for signed maps).
        opacity: weight of the map in overlays, 0 (image only) to 1 (map only).
        layout: ``"double"`` (7.2 in wide, two journal columns) or ``"single"`` (3.5 in).
        dpi: figure resolution (PNG, and images inside PDF/SVG), 10 to 1200.
        fmt: figure file format, ``"png"``, ``"pdf"`` or ``"svg"``.
        outlines: reserve a line under Fig. 3's maps for the legend of item outlines.
    Raises:
        ValueError: naming the option and the allowed values.
    """

    cmap: str = DEFAULT_CMAP
    opacity: float = 0.5
    layout: str = "double"
    dpi: int = 150
    fmt: str = "png"
    outlines: bool = False

    def __post_init__(self) -> None:
        check_cmap(self.cmap)
        if isinstance(self.opacity, bool) or not isinstance(self.opacity, (int, float)) or \
                not math.isfinite(self.opacity) or not 0 <= self.opacity <= 1:
            raise ValueError(f"opacity must be a number in [0, 1], got {self.opacity!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {self.layout!r}")
        lo, hi = DPI_RANGE
        if isinstance(self.dpi, bool) or not isinstance(self.dpi, int) or not lo <= self.dpi <= hi:
            raise ValueError(f"dpi must be a whole number from {lo} to {hi}, got {self.dpi!r}")
        if self.fmt not in FIGURE_FORMATS:
            raise ValueError(f"figure format must be one of {FIGURE_FORMATS}, got {self.fmt!r}")
        if not isinstance(self.outlines, bool):
            raise ValueError(f"outlines must be True or False, got {self.outlines!r}")

    def replace(self, **changes: Any) -> "FigureOptions":
        """A copy with some fields changed (validated again).

        Args:
            **changes: field name -> new value (``cmap``, ``opacity``, ``layout``, ``dpi``, ``fmt``, ``outlines``).
        Returns:
            a new :class:`FigureOptions`; this one is unchanged (it is frozen).
        Raises:
            ValueError: an unknown option name (the message lists the known ones) or a bad value.
        """
        return checked_replace(self, changes, "figure")
