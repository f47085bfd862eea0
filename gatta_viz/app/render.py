"""One input's page content: computed by the library's explain, drawn by its render layer.

Nothing here computes a map or draws a figure of its own: :func:`gatta_viz.explain` makes the record (GAttA
models and plain CNNs alike, with and without a top-down cue), the render layer turns it into overlays, a colour
strip, bars and the files of the downloads (the same writer as ``gatta-viz explain``).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from PIL import Image

from ..data.preprocess import PreparedImage, load_image, prepare_image
from ..compute.explain import explain
from ..compute.options import MapOptions
from ..compute.record import Explanation
from ..models.checkpoint import LoadedModel
from ..render.options import FigureOptions
from ..render.outlines import as_outlines
from ..render.overlays import explanation_overlays, outlined_input
from ..render.write import explanation_files
from .pool import ModelPool, pool_for
from .uploads import file_stem, md_escape

__all__ = ["Render", "decode", "render", "render_upload", "render_prepared", "warm_up"]

DRAW_LOCK = threading.Lock()  # figures are drawn one at a time (matplotlib's state is shared by the threads)


@dataclass
class Render:
    """Everything the page shows for one input.

    Attributes:
        name: the input's name on the page.
        explanation: the library's record (its ``original`` dropped: renders are cached and kept small).
        figure: the :class:`gatta_viz.FigureOptions` the overlays were drawn with (and the downloads will be).
        shown_image: the input as the model saw it, enlarged without smoothing, with the outlines if any.
        overlays, cued_overlays: conv layer -> overlay on the input, without and under the cue (one colour
            scale per layer for the two rows).
        gradcam_overlays: conv layer -> Grad-CAM overlay (class: ``gradcam_target``).
        gradcam_target: ``{"label", "index", "predicted": bool}`` of Grad-CAM's class, or None without Grad-CAM.
        outlines: the items outlined on the input and the overlays.
    """

    name: str
    explanation: Explanation
    figure: FigureOptions
    shown_image: Optional[Image.Image] = None
    overlays: Dict[str, Image.Image] = field(default_factory=dict)
    cued_overlays: Dict[str, Image.Image] = field(default_factory=dict)
    gradcam_overlays: Dict[str, Image.Image] = field(default_factory=dict)
    gradcam_target: Optional[Dict[str, Any]] = None
    outlines: List[Any] = field(default_factory=list)

    # the record's fields the page reads, without and under the cue
    shown = property(lambda self: self.explanation.image, doc="What the model saw, (H, W, C) in [0, 1].")
    inverted = property(lambda self: self.explanation.inverted, doc="Whether the input's colours were inverted.")
    is_gatta = property(lambda self: self.explanation.is_gatta, doc="False for a plain CNN.")
    gain = property(lambda self: self.explanation.options.gain, doc="Maps of alpha x agreement (else raw).")
    signed = property(lambda self: self.explanation.options.signed, doc="Signed maps (else rectified).")
    joint = property(lambda self: self.explanation.options.joint, doc="One scale for all layers.")
    cue = property(lambda self: self.explanation.cue if self.explanation.cued is not None else None,
                   doc="The cue of the second row, or None.")
    alphas = property(lambda self: self.explanation.uncued.alphas, doc="Layer -> alpha.")
    top_pass1 = property(lambda self: self.explanation.uncued.top_pass1, doc="Top classes of pass 1.")
    top_pass2 = property(lambda self: self.explanation.uncued.top_pass2, doc="Top classes of pass 2 (the output).")
    table = property(lambda self: self.explanation.uncued.table, doc="The layer table without the cue.")
    cued_top_pass2 = property(lambda self: self._cued("top_pass2", []), doc="Top classes under the cue.")
    cued_table = property(lambda self: self._cued("table", []), doc="The layer table under the cue.")

    def _cued(self, name: str, default: Any) -> Any:
        cued = self.explanation.cued
        return default if cued is None else getattr(cued, name)

    def _dense(self, result) -> Dict[str, np.ndarray]:
        if result is None or result.trace is None:
            return {}
        if self.gain:  # the gain 1 + alpha x agreement of each unit, as the bars show it
            return {n: result.trace.layers[n].gain[0].numpy() for n in result.dense_layers}
        return {n: result.raw[n] for n in result.dense_layers}

    @property
    def dense(self) -> Dict[str, np.ndarray]:
        """Dense layer -> per-unit gains (``gain``) or raw agreement, without the cue."""
        return self._dense(self.explanation.uncued)

    @property
    def cued_dense(self) -> Dict[str, np.ndarray]:
        """The same under the cue ({} without a cue)."""
        return self._dense(self.explanation.cued)

    def files(self) -> Dict[str, bytes]:
        """The files ``gatta-viz explain`` writes for this input (figure, overlays, maps, summary; the library's
        one writer), in memory: key (``"figure"``, ``"maps"``, ``"summary"``, ``"overlay_LAYER"``...) -> bytes.
        Drawn on first request: the figure is most of a render's time, so the page asks only when a download is
        clicked."""
        if "_files" not in self.__dict__:
            with DRAW_LOCK:
                made = explanation_files(self.explanation, file_stem(self.name), self.figure,
                                         outlines=self.outlines or None, source=self.name)
            self.__dict__["_files"] = {f.key: f.data for f in made}
        return self.__dict__["_files"]

    def figure_png(self) -> bytes:
        """The Fig. 3 figure as PNG bytes (see :meth:`files`); b"" for a plain CNN (no agreement maps)."""
        return self.files().get("figure", b"")

    @property
    def npz(self) -> bytes:
        """The raw maps as ``.npz`` bytes, as the writer stores them (both rows under a cue; Grad-CAM maps of a
        plain CNN)."""
        if "_npz" not in self.__dict__:
            self.__dict__["_npz"] = self.explanation.to_npz()
        return self.__dict__["_npz"]

    def outline_caption(self) -> str:
        """``"outlines: Trouser (green), Bag (yellow)"``, or "" without outlines."""
        if not self.outlines:
            return ""
        return "outlines: " + ", ".join(f"{md_escape(o.label)} ({o.colour_name})" for o in self.outlines)


def decode(name: str, data: bytes) -> Image.Image:
    """Decode one upload within the shared image limits.

    Args:
        name: the file's name (for messages).
        data: its bytes.
    Returns:
        the decoded PIL image.
    Raises:
        ImageError: naming the file and the problem (not an image, truncated, too large, too many pixels).
    """
    return load_image(data, name=name)


def _gradcam_target(options: MapOptions, predicted: int, classes: Sequence[str]) -> Dict[str, Any]:
    t = predicted if options.gradcam_target is None else int(options.gradcam_target)
    return {"label": classes[t], "index": t, "predicted": t == predicted}


def render_prepared(lm: LoadedModel, name: str, prep: PreparedImage, options: Optional[MapOptions] = None,
                    figure: Optional[FigureOptions] = None,
                    outlines: Optional[Sequence] = None) -> Render:
    """Explain a prepared input on ``lm`` (which the caller holds) and draw its overlays.

    Args:
        lm: a model replica held by the caller.
        name: the input's name.
        prep: the prepared input.
        options: :class:`~gatta_viz.compute.options.MapOptions` (default: the library's).
        figure: :class:`~gatta_viz.render.options.FigureOptions` (default: the library's).
        outlines: items to outline, ``[(box_xyxy, label, colour), ...]`` in model-input pixels.
    Returns:
        A :class:`Render`.
    Raises:
        ValueError: options the model cannot take (a cue on a plain CNN, an unknown class...).
    """
    options = options or MapOptions()
    figure = figure or FigureOptions()
    ex = explain(lm, prep, options)
    ex.original = None  # the decoded upload (up to 1024x1024) is not needed any more: keep renders small
    items = as_outlines(outlines, ex.image.shape[:2]) if outlines else []
    r = Render(name, ex, figure, outlines=items)
    r.shown_image = outlined_input(ex, items)  # enlarged; outlined when there are outlines
    for result in ex.rows if ex.is_gatta else []:
        maps = explanation_overlays(ex, figure, outlines=items or None, result=result)
        if result.cue is None:
            r.overlays = maps
        else:
            r.cued_overlays = maps
    if ex.uncued is not None and ex.uncued.gradcam:
        r.gradcam_overlays = explanation_overlays(ex, figure, outlines=items or None, which="gradcam",
                                                  result=ex.uncued)
        r.gradcam_target = _gradcam_target(options, ex.uncued.top_pass2[0]["index"], ex.classes)
    return r


def render(model: Union[LoadedModel, ModelPool], name: str, img: Image.Image, options: Optional[MapOptions] = None,
           figure: Optional[FigureOptions] = None, outlines: Optional[Sequence] = None) -> Render:
    """Prepare and explain one decoded image on a free replica of the model (see :func:`render_prepared`).

    Args:
        model: the model, or its pool of replicas.
        name: the image's name (for messages and downloads).
        img: the decoded image.
        options: what to compute (default ``MapOptions()``).
        figure: how to draw (default ``FigureOptions()``).
        outlines: items to outline, in model-input pixels.
    Returns:
        a :class:`Render` (the explanation and its pictures).
    Raises:
        ImageError: an image the model cannot take (too thin); ValueError: see :func:`render_prepared`;
        TimeoutError: every replica stayed busy.
    """
    with pool_for(model).replica() as lm:
        return render_prepared(lm, name, prepare_image(img, lm.preprocess, name=name), options, figure, outlines)


def render_upload(model: Union[LoadedModel, ModelPool], name: str, data: bytes, options: Optional[MapOptions] = None,
                  figure: Optional[FigureOptions] = None, outlines: Optional[Sequence] = None) -> Render:
    """Decode and explain one upload inside the same concurrency limit (a replica is held while decoding).

    Args:
        model, options, figure, outlines: as in :func:`render`.
        name: the file's name.
        data: its bytes.
    Returns:
        a :class:`Render`.
    Raises:
        ImageError: the file cannot be used; ValueError: the model cannot take it; TimeoutError: server busy.
    """
    with pool_for(model).replica() as lm:
        prep = prepare_image(decode(name, data), lm.preprocess, name=name)
        return render_prepared(lm, name, prep, options, figure, outlines)


def warm_up(pool: ModelPool) -> None:
    """Explain a blank image once on every replica, so that the first visitors after a start do not all wait for
    the first-use costs (captum, plotly, pyarrow imports; allocator warm-up) at once."""
    import contextlib
    import importlib

    for module in ("plotly.graph_objects", "pyarrow"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    h, w = (int(v) for v in pool.lm.preprocess["size"])
    blank = Image.new("L" if int(pool.lm.preprocess["channels"]) == 1 else "RGB", (w, h))
    pool.on_every_replica(lambda lm: render_prepared(lm, "warm-up.png", prepare_image(blank, lm.preprocess)))
