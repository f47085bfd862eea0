"""An explanation's maps blended over its images: per conv layer, over the input the model saw or over the original
image at its own resolution, with item outlines; the input enlarged with its outlines."""
from __future__ import annotations

import math
from typing import Dict, Optional

from PIL import Image

from .images import overlay, overlay_on_original
from .options import FigureOptions
from .outline_draw import draw_outlines
from ..compute.record import Explanation, MapResult

__all__ = ["outline_scale", "explanation_overlays", "outlined_input"]


def outline_scale(shape_hw) -> int:
    """How much an outlined image is enlarged by default: to about 192 pixels on its longer side (1 if larger)."""
    return max(1, math.ceil(192 / max(shape_hw)))


def explanation_overlays(ex: Explanation, options: Optional[FigureOptions] = None, on: str = "input", outlines=None,
                         which: str = "heatmaps", result: Optional[MapResult] = None,
                         scale: Optional[int] = None) -> Dict[str, Image.Image]:
    """Conv layer -> map blended over the input the model saw (``on="input"``) or over the original image at its
    own resolution and colours (``on="original"``; the input when the original is unknown).

    Args:
        ex: the explanation.
        options: colours (``cmap``) and ``opacity`` (:class:`FigureOptions`).
        on: ``"input"`` or ``"original"``.
        outlines: items to outline (``[(box_xyxy, label, colour), ...]`` in input pixels): every overlay is then
            enlarged ``scale`` times without smoothing (default: to about 192 pixels on the longer side) and the
            items outlined and labelled.
        which: ``"heatmaps"`` (the maps) or ``"gradcam"`` (Grad-CAM, same colour convention).
        result: which result of ``ex`` (default :attr:`Explanation.shown`; ``ex.uncued`` / ``ex.cued`` for a row).
        scale: enlargement with outlines (default as above).
    Returns:
        Layer -> RGB PIL image.
    Raises:
        ValueError: an unknown ``on`` or ``which``.
    """
    if on not in ("input", "original"):
        raise ValueError(f"on must be 'input' or 'original', got {on!r}")
    if which not in ("heatmaps", "gradcam"):
        raise ValueError(f"which must be 'heatmaps' or 'gradcam', got {which!r}")
    opts = options or FigureOptions()
    res = result if result is not None else ex.shown
    maps = res.heatmaps if which == "heatmaps" else res.gradcam
    signed = ex.options.signed
    if on == "original" and ex.original is not None:
        out = {n: overlay_on_original(ex.original, h, opts.cmap, opts.opacity, signed, ex.placement)
               for n, h in maps.items()}
        if outlines is None:
            return out
        k = scale or outline_scale(ex.original.size)
        return {n: draw_outlines(img, outlines, input_size=ex.image.shape[:2], scale=k, placement=ex.placement)
                for n, img in out.items()}
    out = {n: overlay(ex.image, h, opts.cmap, opts.opacity, signed) for n, h in maps.items()}
    if outlines is None:
        return out
    return {n: draw_outlines(img, outlines, scale=scale or outline_scale(ex.image.shape[:2])) for n, img in out.items()}


def outlined_input(ex: Explanation, outlines, scale: Optional[int] = None) -> Image.Image:
    """The input the model saw, enlarged ``scale`` times (default: to about 192 pixels) with ``outlines`` drawn.

    Args:
        ex: the explanation.
        outlines: items to outline, in model-input pixels (as :func:`gatta_viz.render.outlines.as_outlines` takes).
        scale: enlargement factor (default: :func:`outline_scale`).
    Returns:
        an RGB PIL image.
    """
    return draw_outlines(ex.image, outlines, scale=scale or outline_scale(ex.image.shape[:2]))
