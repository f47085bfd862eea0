"""The explanation record: everything computed for one image, without and (under a cue) with a top-down cue.

An :class:`Explanation` holds the image, the options it was computed with and one :class:`MapResult` per query:
``uncued`` (the query pass 1 pooled from the image) and ``cued`` (the cue's query, when there is a cue). Render
code draws ``ex.rows`` (uncued first, then cued): the one place where the order of the two rows is decided.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .options import MapOptions
from .placement import Placement
from ..core.trace import GAttATrace

__all__ = ["topk", "MapResult", "Explanation"]


def topk(logits: torch.Tensor, classes: Sequence[str], k: int = 3) -> List[Dict[str, Any]]:
    """Top-k classes of one logit vector.

    Args:
        logits: (C,) logits.
        classes: class names.
        k: how many.
    Returns:
        ``[{"label", "index", "prob"}, ...]``, most probable first.
    """
    p = torch.softmax(torch.as_tensor(logits).detach().double().reshape(-1), 0)
    vals, idx = p.topk(min(k, p.numel()))
    return [{"label": classes[int(i)], "index": int(i), "prob": float(v)} for v, i in zip(vals, idx)]


@dataclass
class MapResult:
    """One image explained under one query.

    Attributes:
        trace: the one-image trace, detached, on the CPU (None for a plain CNN: no GAttA layers).
        native: layer -> the map at the layer's own resolution (conv (h, w), dense (units,)): alpha x agreement
            or raw agreement, as the options say; what figures draw.
        heatmaps: conv layer -> the map upsampled to the input size and normalised for display.
        raw: layer -> raw agreement (conv (h, w), dense (units,)), whatever ``gain`` is.
        gradcam: conv layer -> normalised Grad-CAM at the input size, or {}.
        scales: conv layer -> the value that +1 stands for in its heatmap.
        top_pass1, top_pass2: :func:`topk` lists (equal for a plain CNN).
        table: per-layer statistics and ablation score for the predicted class ([] for a plain CNN).
        logits: (C,) pass-2 logits (the model's output).
        cue: the cue's name for a cued result, None for the image's own query.
    """

    trace: Optional[GAttATrace]
    native: Dict[str, np.ndarray]
    heatmaps: Dict[str, np.ndarray]
    raw: Dict[str, np.ndarray]
    top_pass1: List[Dict[str, Any]]
    top_pass2: List[Dict[str, Any]]
    table: List[Dict[str, Any]]
    logits: np.ndarray
    gradcam: Dict[str, np.ndarray] = field(default_factory=dict)
    scales: Dict[str, float] = field(default_factory=dict)
    cue: Optional[str] = None

    @property
    def prediction(self) -> Dict[str, Any]:
        """The top class of pass 2 (the model's output)."""
        return self.top_pass2[0]

    @property
    def alphas(self) -> Dict[str, float]:
        """Layer -> alpha ({} for a plain CNN)."""
        return {} if self.trace is None else self.trace.alphas

    @property
    def dense_layers(self) -> List[str]:
        """The dense GAttA layers, in forward order ([] for a plain CNN)."""
        return [] if self.trace is None else [n for n, lt in self.trace.layers.items() if lt.kind == "dense"]

    def arrays(self) -> Dict[str, np.ndarray]:
        """This result's arrays under the .npz keys (see :meth:`Explanation.to_npz`).

        Returns:
            key -> array (``q_avg``, ``logits_pass1``, ``raw/LAYER``, ``gain_map/LAYER``, ``heatmap/LAYER``...;
            a plain CNN's: ``logits`` and ``gradcam/LAYER``).
        """
        if self.trace is None:
            return {"logits": self.logits, **{f"gradcam/{k}": v for k, v in self.gradcam.items()}}
        t = self.trace
        arrays = {"q_avg": t.q_avg[0].numpy(), "logits_pass1": t.logits_pass1[0].numpy(),
                  "logits_pass2": t.logits_pass2[0].numpy()}
        alphas = self.alphas
        arrays.update({f"raw/{k}": v for k, v in self.raw.items()})
        arrays.update({f"gain_map/{k}": np.float32(alphas[k]) * v for k, v in self.raw.items()})
        arrays.update({f"heatmap/{k}": v for k, v in self.heatmaps.items()})
        arrays.update({f"gradcam/{k}": v for k, v in self.gradcam.items()})
        arrays.update({f"alpha/{k}": np.float32(v) for k, v in alphas.items()})
        return arrays


@dataclass
class Explanation:
    """Everything computed for one image.

    Attributes:
        image: the input the model saw, (H, W, 3) in [0, 1].
        classes: class names.
        options: the :class:`MapOptions` it was computed with.
        uncued: the image explained with the query pass 1 pools from it (None only under a cue with
            ``compare=False``).
        cued: the image explained under the cue (None without a cue). With both, each layer's heatmaps (and
            Grad-CAM maps) share one colour scale (``joint``: one for all), so colours compare between them.
        cue: the cue's name (a class name, or "custom query" for a query tensor), or None.
        true_label: the true class if given.
        inverted: whether the preprocessing inverted the input's colours.
        original: the image before preprocessing (a PIL image, for overlays at its own resolution), if known.
        untrained: every alpha is 0 (GAttA parameters never trained): maps carry no learned attention.
        is_gatta: False for a plain CNN (Grad-CAM and predictions only).
        placement: where the original lies in the input (:class:`~gatta_viz.compute.placement.Placement`; None:
            padded whole, the default preprocessing).

    The old one-result names (``ex.trace``, ``ex.heatmaps``, ``ex.prediction``...) read :attr:`shown`: the cued
    result under a cue, else the uncued one.
    """

    image: np.ndarray
    classes: List[str]
    options: MapOptions
    uncued: Optional[MapResult]
    cued: Optional[MapResult] = None
    cue: Optional[str] = None
    true_label: Optional[int] = None
    inverted: bool = False
    original: Any = field(default=None, repr=False)
    untrained: bool = False
    is_gatta: bool = True
    placement: Optional[Placement] = field(default=None, repr=False)

    # ------------------------------------------------------------------ which result is which
    @property
    def shown(self) -> MapResult:
        """The result a one-row view shows: under the cue when there is one, else the image's own."""
        return self.cued if self.cued is not None else self.uncued

    @property
    def rows(self) -> List[MapResult]:
        """The results in drawing order: without the cue first, then under it (one or two rows)."""
        return [r for r in (self.uncued, self.cued) if r is not None]

    @property
    def compare(self) -> bool:
        """Both rows are there (a cue and the image's own query)."""
        return self.uncued is not None and self.cued is not None

    # ------------------------------------------------------------------ the shown result's fields
    trace = property(lambda self: self.shown.trace, doc="The shown result's one-image trace.")
    heatmaps = property(lambda self: self.shown.heatmaps, doc="The shown result's normalised heatmaps.")
    raw = property(lambda self: self.shown.raw, doc="The shown result's raw agreement per layer.")
    native = property(lambda self: self.shown.native, doc="The shown result's maps at each layer's resolution.")
    scales = property(lambda self: self.shown.scales, doc="The shown result's heatmap scales.")
    top_pass1 = property(lambda self: self.shown.top_pass1, doc="Top classes of pass 1.")
    top_pass2 = property(lambda self: self.shown.top_pass2, doc="Top classes of pass 2 (the output).")
    table = property(lambda self: self.shown.table, doc="The shown result's layer table.")
    prediction = property(lambda self: self.shown.prediction, doc="The shown result's top class.")
    alphas = property(lambda self: self.shown.alphas, doc="Layer -> alpha.")
    dense_layers = property(lambda self: self.shown.dense_layers, doc="Dense GAttA layers.")
    signed = property(lambda self: self.options.signed, doc="Signed (diverging) maps.")
    joint = property(lambda self: self.options.joint, doc="One scale for all layers.")
    gain = property(lambda self: self.options.gain, doc="Maps of alpha x agreement (else raw agreement).")
    map_kind = property(lambda self: self.options.map_kind, doc="What the maps show, in words.")

    @property
    def gradcam(self) -> Dict[str, np.ndarray]:
        """The shown result's Grad-CAM maps."""
        return self.shown.gradcam

    @gradcam.setter
    def gradcam(self, maps: Dict[str, np.ndarray]) -> None:
        self.shown.gradcam = maps

    @property
    def conv_layers(self) -> List[str]:
        """The conv layers shown, in forward order."""
        return list(self.shown.heatmaps) if self.is_gatta else list(self.shown.gradcam)

    def original_differs(self) -> bool:
        """Whether the original image differs from the input the model saw (size, colours or inversion).

        Returns:
            False when there is no original or it equals the model's input to 1/255; else True.
        """
        from .arrays import to_rgb_array

        if self.original is None:
            return False
        if (self.original.size[1], self.original.size[0]) != tuple(self.image.shape[:2]):
            return True
        return not np.allclose(to_rgb_array(self.original), to_rgb_array(self.image), atol=1 / 255)

    # ------------------------------------------------------------------ files
    def summary(self) -> Dict[str, Any]:
        """Strict-JSON summary (NaN as null): top-k of both passes, alphas, layer table, maps and scales
        (:func:`gatta_viz.compute.export.summary_of`).

        Returns:
            a dict that ``json.dumps(..., allow_nan=False)`` accepts.
        """
        from .export import summary_of

        return summary_of(self)

    def to_npz(self, target: Union[str, BinaryIO, None] = None) -> bytes:
        """The arrays as .npz bytes, also written to ``target`` (a path or a binary file) if given
        (:func:`gatta_viz.compute.export.npz_bytes` lists the keys).

        Args:
            target: a path (written atomically), an open binary file, or None (bytes only).
        Returns:
            the .npz file's bytes.
        """
        from .export import npz_bytes

        data = npz_bytes(self)
        if isinstance(target, str):
            from ..data.files import atomic_write

            with atomic_write(target, "wb") as f:
                f.write(data)
        elif target is not None:
            target.write(data)
        return data
