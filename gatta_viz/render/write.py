"""The files of one explanation: Fig. 3, overlays per layer (at the input's and at the original's resolution),
the maps (.npz) and a JSON summary. One writer for the CLI (to a folder) and the app (downloads, in memory)."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from .fig3 import Fig3Renderer
from .options import FigureOptions
from .outlines import as_outlines
from .overlays import explanation_overlays
from ..data.files import atomic_write, dumps_json
from ..compute.record import Explanation

__all__ = ["OutputFile", "RendererCache", "explanation_files", "write_explanation"]


@dataclass(frozen=True)
class OutputFile:
    """One file of an explanation: ``key`` (e.g. ``"figure"``, ``"overlay_layer2_cued"``), file ``name``, bytes."""

    key: str
    name: str
    data: bytes


class RendererCache:
    """One :class:`Fig3Renderer` per figure structure, reused across explanations (building costs more than drawing)."""

    def __init__(self) -> None:
        self.current: Optional[Fig3Renderer] = None

    def get(self, ex: Explanation, options: FigureOptions, outlines: bool = False) -> Fig3Renderer:
        """A renderer for ``ex``: the last one when it :meth:`~Fig3Renderer.matches`, else a new one (kept).

        Args:
            ex: the explanation to draw.
            options: figure options.
            outlines: whether the outline legend line is needed.
        Returns:
            the renderer (call its ``update(ex)`` before drawing).
        """
        r = self.current
        if r is None or not r.matches(ex, options, outlines):
            r = self.current = Fig3Renderer(ex, options, outlines=outlines)
        return r


def _figure_bytes(r: Fig3Renderer, fmt: str, dpi: int) -> bytes:
    if fmt == "png":
        return r.to_png(None, dpi)
    r._background = None  # a vector save draws on another canvas
    buf = io.BytesIO()
    r.fig.savefig(buf, dpi=dpi, format=fmt)
    return buf.getvalue()


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def explanation_files(ex: Explanation, stem: str, options: Optional[FigureOptions] = None, outlines=None,
                      renderers: Optional[RendererCache] = None, source: Optional[str] = None,
                      extra: Optional[Mapping[str, Any]] = None) -> List[OutputFile]:
    """Every file of one explanation, in memory.

    Files: ``STEM_fig3.FMT`` (GAttA models), ``STEM_overlay_LAYER.png`` per shown conv layer (what the model saw;
    under a cue with the uncued result, those without the cue keep these names and those under it end in
    ``_cued``; a plain CNN's are its Grad-CAM maps), ``STEM_overlay_LAYER[_cued]_original.png`` over the original
    image when it differs from the model input, ``STEM_maps.npz`` and ``STEM.json``.

    Args:
        ex: the explanation.
        stem: file name stem.
        options: :class:`FigureOptions` (cmap, opacity, layout, dpi, fmt).
        outlines: items to outline in model-input pixels (drawn in the figure and on enlarged overlays).
        renderers: a :class:`RendererCache` to reuse the figure across calls.
        source: the input's name, written as ``"source"`` in the JSON.
        extra: more JSON fields (e.g. what the preprocessing did).
    Returns:
        The files, in a fixed order.
    """
    opts = options or FigureOptions()
    items = as_outlines(outlines, ex.image.shape[:2]) if outlines else None
    files: List[OutputFile] = []
    if ex.is_gatta:
        r = (renderers or RendererCache()).get(ex, opts, outlines=bool(items))
        r.update(ex, outlines=items)
        files.append(OutputFile("figure", f"{stem}_fig3.{opts.fmt}", _figure_bytes(r, opts.fmt, opts.dpi)))
    which = "heatmaps" if ex.is_gatta else "gradcam"
    tagged = [(res, "_cued" if res.cue is not None else "") for res in ex.rows]
    for on, suffix in (("input", ""), ("original", "_original")):
        if on == "original" and not ex.original_differs():  # a 28x28 greyscale sample is its own model input
            continue
        for res, tag in tagged:
            for layer, img in explanation_overlays(ex, opts, on, items, which, res).items():
                key = f"overlay_{layer}{tag}{suffix}"
                files.append(OutputFile(key, f"{stem}_{key}.png", _png(img)))
    files.append(OutputFile("maps", f"{stem}_maps.npz", ex.to_npz()))
    summary: Dict[str, Any] = {"source": source} if source is not None else {}
    summary.update(ex.summary())
    if items:
        summary["outlines"] = [{"label": o.label, "box_xyxy": list(o.box), "colour": o.colour} for o in items]
    summary.update(extra or {})
    files.append(OutputFile("summary", f"{stem}.json", dumps_json(summary, indent=2).encode()))
    return files


def write_explanation(ex: Explanation, out_dir: str, stem: str, options: Optional[FigureOptions] = None,
                      outlines=None, renderers: Optional[RendererCache] = None, source: Optional[str] = None,
                      extra: Optional[Mapping[str, Any]] = None) -> Dict[str, str]:
    """Write the files of :func:`explanation_files` into ``out_dir``: all of them or none. Each is written
    atomically (a temp file in the folder, renamed into place); nothing is written before every file of the image
    was made, and when one write fails the files of this image already written are removed.

    Args:
        ex: the explanation.
        out_dir: the folder (created if missing).
        stem: the start of every file name (``STEM_fig3.png``, ``STEM_overlay_LAYER.png``, ``STEM_maps.npz``,
            ``STEM.json``).
        options: :class:`~gatta_viz.render.options.FigureOptions` (cmap, opacity, layout, dpi, format).
        outlines, renderers, source, extra: as in :func:`explanation_files`.
    Returns:
        key -> written path (``figure``, ``overlay_LAYER[_cued][_original]``, ``maps``, ``summary``).
    Raises:
        IsADirectoryError: a folder stands where a file should go (checked before anything is written).
        OSError: a write failed (nothing of this image is left).
    """
    files = explanation_files(ex, stem, options, outlines, renderers, source, extra)
    paths = [os.path.join(out_dir, f.name) for f in files]
    taken = [p for p in paths if os.path.isdir(p)]
    if taken:
        raise IsADirectoryError(f"{taken[0]} is a folder; cannot write the explanation's file there")
    os.makedirs(out_dir, exist_ok=True)
    written: Dict[str, str] = {}
    try:
        for f, path in zip(files, paths):
            with atomic_write(path, "wb") as fh:
                fh.write(f.data)
            written[f.key] = path
    except BaseException:
        for path in written.values():
            os.remove(path)
        raise
    return written
