"""Saving figures (PNG, PDF, SVG; atomic), a fast PNG encoder for redrawn figures, and the alpha-per-layer chart."""
from __future__ import annotations

import os
import struct
import zlib
from typing import Dict, Optional

import matplotlib.pyplot as plt  # matplotlib picks Agg by itself on machines without a display
import numpy as np
from matplotlib.figure import Figure

from .fig3_text import FONT_PT
from .style import NEUTRAL
from ..data.files import atomic_path

__all__ = ["FIGURE_FORMATS", "save_figure", "png_bytes", "alpha_bars"]

FIGURE_FORMATS = ("png", "pdf", "svg")


def png_bytes(rgba: np.ndarray, compress_level: int = 1) -> bytes:
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


def alpha_bars(alphas: Dict[str, float]) -> Figure:
    """Bar chart of alpha per layer, in one neutral colour (alpha is a strength, not a boosted/suppressed value).

    alpha < 0 means the layer boosts where its agreement is negative; the values are printed on the bars.

    Args:
        alphas: layer -> alpha (e.g. ``trace.alphas`` or ``ex.alphas``).
    Returns:
        a matplotlib Figure.
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
    """Save as PNG, PDF or SVG (by extension), creating the directory, atomically (a temp file renamed into
    place); closes the figure. Returns the path.

    Args:
        fig: the figure.
        path: ends in .png, .pdf or .svg.
        dpi: pixels per inch of a PNG (and of images inside PDF/SVG).
        tight: crop to the drawn content (None: yes, except for fixed-size layouts such as :func:`fig3`'s,
            which keep their width in inches).
        compress_level: PNG zlib level (1 is faster, 9 smaller).
    Returns:
        ``path``.
    Raises:
        ValueError: ``path`` does not end in .png, .pdf or .svg.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".png", ".svg", ".pdf"):
        raise ValueError(f"figure path must end in .png, .svg or .pdf, got {path!r}")
    if tight is None:
        tight = not getattr(fig, "gatta_fixed_size", False)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    kw = {"pil_kwargs": {"compress_level": int(compress_level)}} if ext == ".png" else {}
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None, format=ext[1:], **kw)
    finally:
        plt.close(fig)
    return path
