"""Images, fully explained: trace, normalised maps, predictions of both passes, layer table, Grad-CAM.

Used by the CLI (``gatta-viz explain``), the demo and the Streamlit app, so they all show the same numbers.
Maps are the gain map alpha x agreement by default (> 0 boosted by pass 2, < 0 suppressed); ``gain=False``
gives raw agreement, whose sign is a convention of training.

Top-down cue: ``explain(model, image, cue="Trouser")`` explains the image with the model's stored query of a
class in place of the query pass 1 pooled from the image (``model.trace(x, query=lm.cue("Trouser"))``): maps,
pass 2, the layer table and Grad-CAM are all computed under the cue. The explanation also holds the same image
explained without the cue (``ex.uncued``; ``compare=False`` skips it), both scaled with one colour scale per
layer, and ``ex.figure()`` draws the two as two rows.
"""
from __future__ import annotations

import difflib
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .attributions import gradcam as captum_gradcam
from .checks import check_model_input, is_untrained, unknown_name_message, untrained_message, warn_if_untrained
from .contributions import ablation_scores, layer_statistics
from .figures import fig3, image_for_display, normalize_shared
from .heatmaps import normalize, normalize_with_scales, upsample
from .overlays import draw_outlines, overlay, overlay_on_original, to_rgb_array
from .style import DEFAULT_CMAP
from ..core.hooks import temporarily_eval
from ..core.trace import GAttATrace
from ..data.preprocess import PreparedImage
from ..models.checkpoint import LoadedModel

__all__ = ["topk", "Explanation", "explain", "explain_batch", "resolve_cue", "CUSTOM_QUERY"]

CUSTOM_QUERY = "custom query"  # the name of a cue given as a query tensor rather than a class name


def topk(logits: torch.Tensor, classes: Sequence[str], k: int = 3) -> List[Dict[str, Any]]:
    """Top-k classes of one logit vector.

    Args:
        logits: (C,) logits.
        classes: class names.
        k: how many.
    Returns:
        ``[{"label", "index", "prob"}, ...]``, most probable first.
    """
    p = torch.softmax(logits.detach().double().reshape(-1), 0)
    vals, idx = p.topk(min(k, p.numel()))
    return [{"label": classes[int(i)], "index": int(i), "prob": float(v)} for v, i in zip(vals, idx)]


@dataclass
class Explanation:
    """Everything shown for one image.

    Attributes:
        image: the input the model saw, (H, W, C) in [0, 1].
        trace: one-image trace, detached, on the CPU.
        classes: class names.
        heatmaps: conv layer -> normalised map at input size: alpha x agreement (``gain=True``) or raw agreement.
        raw: layer -> raw agreement (conv (h, w), dense (C,)), whatever ``gain`` is.
        alphas: layer -> alpha.
        top_pass1, top_pass2: :func:`topk` lists.
        table: per-layer statistics and ablation score for the predicted class.
        gradcam: conv layer -> normalised Grad-CAM at input size (same normalisation as heatmaps), or {}.
        signed, joint: how heatmaps were normalised.
        true_label: the true class if given.
        inverted: whether the input's colours were inverted by the preprocessing.
        gain: heatmaps show alpha x agreement (default) rather than raw agreement.
        scales: conv layer -> the value that +1 stands for in its heatmap.
        original: the image before preprocessing (for overlays at its own resolution), if known.
        untrained: every alpha is 0 (GAttA parameters never trained): maps carry no learned attention.
        cue: the top-down cue the image was explained under (a class name, or "custom query" for a query
            tensor), or None: then everything above comes from the query pass 1 pooled from the image.
        uncued: with a cue, the same image explained without it (or None when ``compare=False``). Its heatmaps,
            Grad-CAM maps and ``scales`` share this explanation's colour scale per layer (the larger of the
            two max |values|; one scale for everything with ``joint``), so colours compare between the two.
    """

    image: np.ndarray
    trace: GAttATrace
    classes: List[str]
    heatmaps: Dict[str, np.ndarray]
    raw: Dict[str, np.ndarray]
    alphas: Dict[str, float]
    top_pass1: List[Dict[str, Any]]
    top_pass2: List[Dict[str, Any]]
    table: List[Dict[str, Any]]
    gradcam: Dict[str, np.ndarray] = field(default_factory=dict)
    signed: bool = True
    joint: bool = False
    true_label: Optional[int] = None
    inverted: bool = False
    gain: bool = True
    scales: Dict[str, float] = field(default_factory=dict)
    original: Optional[Image.Image] = None
    untrained: bool = False
    cue: Optional[str] = None
    uncued: Optional["Explanation"] = field(default=None, repr=False)

    @property
    def prediction(self) -> Dict[str, Any]:
        return self.top_pass2[0]

    @property
    def dense_layers(self) -> List[str]:
        return [n for n, lt in self.trace.layers.items() if lt.kind == "dense"]

    @property
    def map_kind(self) -> str:
        """``"alpha x agreement"`` or ``"raw agreement (sign set by training)"`` (as written in the JSON summary)."""
        return "alpha x agreement" if self.gain else "raw agreement (sign set by training)"

    def summary(self) -> Dict[str, Any]:
        """JSON-able summary: top-k of both passes, alphas, layer table, what the maps show and their scales."""
        out = {
            "prediction": self.prediction,
            "top_pass1": self.top_pass1,
            "top_pass2": self.top_pass2,
            "prediction_changed_by_pass2": self.top_pass1[0]["index"] != self.top_pass2[0]["index"],
            "alphas": self.alphas,
            "layers": self.table,
            "normalisation": {"signed": self.signed, "joint": self.joint},
            "maps": self.map_kind,
            "map_scales": self.scales,
            "input_inverted": self.inverted,
        }
        if self.untrained:
            out["warning"] = untrained_message(self.gain)
        if self.true_label is not None:
            out["true_label"] = {"index": int(self.true_label), "label": self.classes[int(self.true_label)]}
        if self.cue is not None:
            out["cue"] = self.cue
            out["query"] = ("the cue's query replaced the query pass 1 pooled from the image: maps, pass 2, layers "
                            "and Grad-CAM are under the cue")
        if self.uncued is not None:
            u = self.uncued
            out["prediction_changed_by_cue"] = u.top_pass2[0]["index"] != self.top_pass2[0]["index"]
            out["uncued"] = {"prediction": u.prediction, "top_pass2": u.top_pass2, "layers": u.table,
                             "map_scales": u.scales}
            out["normalisation"]["shared_with_uncued"] = True
        return json.loads(json.dumps(out))  # plain types only

    def to_npz(self, target: Union[str, BinaryIO, None] = None) -> bytes:
        """Save image, raw maps, gain maps, normalised heatmaps, Grad-CAM, q_avg and logits as .npz.

        Keys: ``image``, ``raw/<layer>`` (raw agreement), ``gain_map/<layer>`` (alpha x agreement, unscaled),
        ``heatmap/<layer>`` (the map shown, normalised, input size), ``gradcam/<layer>``, ``q_avg`` (the query
        the maps used: the cue's, when cued), ``logits_pass1``, ``logits_pass2``, ``alpha/<layer>``. Under a
        cue also ``q_pass1`` (the query pass 1 pooled, which the cue replaced) and, with the uncued
        explanation, the same keys prefixed ``uncued/`` (``uncued/raw/<layer>``, ``uncued/heatmap/<layer>``,
        ``uncued/logits_pass2``...).
        Args:
            target: path or binary file; None to only return the bytes.
        Returns:
            The .npz bytes.
        """
        arrays = {"image": self.image, **self._arrays()}
        if self.trace.q_pass1 is not None:
            arrays["q_pass1"] = self.trace.q_pass1[0].numpy()
        if self.uncued is not None:
            arrays.update({f"uncued/{k}": v for k, v in self.uncued._arrays().items() if not k.startswith("alpha/")})
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        data = buf.getvalue()
        if isinstance(target, str):
            with open(target, "wb") as f:
                f.write(data)
        elif target is not None:
            target.write(data)
        return data

    def _arrays(self) -> Dict[str, np.ndarray]:
        arrays = {"q_avg": self.trace.q_avg[0].numpy(), "logits_pass1": self.trace.logits_pass1[0].numpy(),
                  "logits_pass2": self.trace.logits_pass2[0].numpy()}
        arrays.update({f"raw/{k}": v for k, v in self.raw.items()})
        arrays.update({f"gain_map/{k}": np.float32(self.alphas[k]) * v for k, v in self.raw.items()})
        arrays.update({f"heatmap/{k}": v for k, v in self.heatmaps.items()})
        arrays.update({f"gradcam/{k}": v for k, v in self.gradcam.items()})
        arrays.update({f"alpha/{k}": np.float32(v) for k, v in self.alphas.items()})
        return arrays

    def figure(self, cmap: str = DEFAULT_CMAP, layout: str = "double", outlines=None):
        """The Fig. 3 layout for this image (matplotlib Figure, ``layout`` "double" = 7.2 in or "single" = 3.5 in).

        Under a cue with the uncued explanation kept, two rows: "without cue" and "cued: CUE", each layer's two
        maps on one colour scale. ``outlines``: items to outline, ``[(box_xyxy, label, colour), ...]`` (see
        :func:`gatta_viz.analysis.figures.fig3`).
        """
        if self.uncued is not None:
            u = self.uncued
            return fig3(u.image, u.trace, 0, self.classes, self.true_label, self.signed, self.joint, cmap, self.gain,
                        layout=layout, layers=list(self.heatmaps), cued_trace=self.trace, cue=self.cue,
                        outlines=outlines)
        return fig3(self.image, self.trace, 0, self.classes, self.true_label, self.signed, self.joint, cmap, self.gain,
                    layout=layout, layers=list(self.heatmaps), cue=self.cue, outlines=outlines)

    def outline_scale(self) -> int:
        """How much outlined images are enlarged by default: to about 192 pixels on their longer side."""
        return max(1, math.ceil(192 / max(self.image.shape[:2])))

    def outlined_input(self, outlines, scale: Optional[int] = None) -> Image.Image:
        """The input the model saw, enlarged ``scale`` times (default :meth:`outline_scale`) with ``outlines``
        drawn (see :func:`gatta_viz.analysis.overlays.draw_outlines`)."""
        return draw_outlines(self.image, outlines, scale=scale or self.outline_scale())

    def original_differs(self) -> bool:
        """Whether the original image differs from the input the model saw (size, colours or inversion)."""
        if self.original is None:
            return False
        if (self.original.size[1], self.original.size[0]) != tuple(self.image.shape[:2]):
            return True
        return not np.allclose(to_rgb_array(self.original), to_rgb_array(self.image), atol=1 / 255)

    def overlays(self, cmap: str = DEFAULT_CMAP, opacity: float = 0.5, on: str = "input", outlines=None,
                 scale: Optional[int] = None) -> Dict[str, Image.Image]:
        """Conv layer -> map blended over the input the model saw (``on="input"``) or over the original image at
        its own resolution and colours (``on="original"``; the input when the original is unknown).

        With ``outlines`` (``[(box_xyxy, label, colour), ...]`` in input pixels) the items are outlined and
        labelled on every overlay, which is then enlarged ``scale`` times without smoothing (default: to about
        192 pixels on the longer side, or not at all when it is larger) so the lines do not hide the map.
        """
        if on not in ("input", "original"):
            raise ValueError(f"on must be 'input' or 'original', got {on!r}")
        if on == "original" and self.original is not None:
            out = {n: overlay_on_original(self.original, h, cmap, opacity, self.signed) for n, h in self.heatmaps.items()}
            if outlines is None:
                return out
            k = scale or max(1, math.ceil(192 / max(self.original.size)))
            return {n: draw_outlines(img, outlines, input_size=self.image.shape[:2], scale=k) for n, img in out.items()}
        out = {n: overlay(self.image, h, cmap, opacity, self.signed) for n, h in self.heatmaps.items()}
        if outlines is None:
            return out
        return {n: draw_outlines(img, outlines, scale=scale or self.outline_scale()) for n, img in out.items()}

    def gradcam_overlays(self, cmap: str = DEFAULT_CMAP, opacity: float = 0.5, outlines=None,
                         scale: Optional[int] = None) -> Dict[str, Image.Image]:
        """Conv layer -> Grad-CAM blended over the input (same colour scale convention as the heatmaps); with
        ``outlines`` drawn as in :meth:`overlays`."""
        out = {n: overlay(self.image, h, cmap, opacity, self.signed) for n, h in self.gradcam.items()}
        if outlines is None:
            return out
        return {n: draw_outlines(img, outlines, scale=scale or self.outline_scale()) for n, img in out.items()}


Inputs = Union[PreparedImage, torch.Tensor, Sequence[PreparedImage]]


def _as_batch(prepared: Inputs):
    """(x (B, C, H, W), shown images or None, inverted flags, originals, single?)."""
    if isinstance(prepared, PreparedImage):
        items, single = [prepared], True
    elif isinstance(prepared, (list, tuple)) and all(isinstance(p, PreparedImage) for p in prepared):
        if not prepared:
            raise ValueError("explain got an empty list of images")
        items, single = list(prepared), False
    else:
        x = check_model_input(prepared, "explain input")
        single = prepared.dim() == 3 or x.shape[0] == 1
        return x, None, [False] * x.shape[0], [None] * x.shape[0], single
    shapes = {tuple(p.tensor.shape[1:]) for p in items}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch must have one size; got {sorted(shapes)}")
    x = torch.cat([check_model_input(p.tensor, "explain input") for p in items])
    return x, [p.shown for p in items], [p.inverted for p in items], [p.original for p in items], single


Cue = Union[None, str, torch.Tensor]


def resolve_cue(model, cue: Cue) -> Tuple[Optional[torch.Tensor], Optional[str]]:
    """The query and the name of a top-down cue.

    Args:
        model: a :class:`LoadedModel` or a GAttA model.
        cue: None; a class name (the model's stored class query, ``LoadedModel.cue``; letter case may differ);
            or a query tensor of shape (d,) (the same for every image) or (B, d).
    Returns:
        (query or None, name or None): the name is the class name as the model spells it, or
        :data:`CUSTOM_QUERY` for a tensor.
    Raises:
        ValueError: a model without GAttA layers; a class name for a bare model or for a model without stored
            class queries (the message names ``gatta-viz cues``); an unknown class (the message lists the
            classes); a tensor of the wrong shape or with NaN/inf; anything else.
    """
    if cue is None:
        return None, None
    net = model.model if isinstance(model, LoadedModel) else model
    name = model.name if isinstance(model, LoadedModel) else type(model).__name__
    if not hasattr(net, "trace") or not hasattr(net, "layer_kinds"):
        raise ValueError(f"a top-down cue needs a GAttA model: {name} has no GAttA layers, so there is no global "
                         "query to replace")
    d = int(getattr(net, "d", 0))
    if isinstance(cue, str):
        if not isinstance(model, LoadedModel):
            raise ValueError(f"a cue given by class name ({cue!r}) needs a model loaded with its class queries "
                             f"(gv.load_model(...)); for a bare GAttA model pass the query itself, a tensor of "
                             f"shape ({d},)")
        if model.class_queries is None:
            raise ValueError(f"model {model.name} has no stored class queries to cue with: store them with "
                             "`gatta-viz cues CHECKPOINT OUT` (or gatta_viz.store_class_queries), or pass a query "
                             f"tensor of shape ({d},)")
        classes = list(model.classes)
        if cue not in classes:
            same = [c for c in classes if c.lower() == cue.strip().lower()]
            if len(same) != 1:
                close = difflib.get_close_matches(cue, classes, n=1, cutoff=0.5)
                raise ValueError(f"unknown class {cue!r} to cue with" + (f"; did you mean {close[0]!r}?" if close else "")
                                 + f" Classes of {model.name}: {', '.join(classes)}")
            cue = same[0]
        return model.cue(cue).detach(), cue
    if torch.is_tensor(cue):
        if not torch.is_floating_point(cue) or cue.dim() not in (1, 2) or cue.shape[-1] != d:
            raise ValueError(f"a cue query must be a float tensor of shape ({d},) or (B, {d}), got "
                             f"{str(cue.dtype).replace('torch.', '')} {tuple(cue.shape)}")
        if not torch.isfinite(cue).all():
            raise ValueError("the cue query contains NaN or infinite values")
        return cue.detach(), CUSTOM_QUERY
    raise ValueError(f"cue must be a class name or a query tensor of shape ({d},), got {type(cue).__name__}")


class _CuedForward:
    """A GAttA model's pass-2 logits under a fixed top-down query, as a function of the input (what captum's
    Grad-CAM differentiates); ``backbone`` lets it find the layer."""

    def __init__(self, net, query: torch.Tensor) -> None:
        self.net, self.query, self.backbone = net, query, net.backbone

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.trace(x, query=self.query).logits_pass2


@torch.no_grad()
def _cued_ablation(net, x: torch.Tensor, pred: torch.Tensor, reference: torch.Tensor, query: torch.Tensor
                   ) -> Dict[str, np.ndarray]:
    """:func:`ablation_scores` under a top-down query: p(pred | cue) - p(pred | cue, one layer's alpha = 0)."""
    def probs(logits):
        return torch.softmax(logits.double(), 1).gather(1, pred.view(-1, 1))[:, 0].cpu().numpy()

    full = probs(reference)
    return {n: full - probs(net.trace(x, alpha_override={n: 0.0}, query=query).logits_pass2) for n in net.layer_names}


def _model_and_classes(model, classes: Optional[Sequence[str]]):
    if isinstance(model, LoadedModel):
        if not model.is_gatta:
            raise ValueError(f"model {model.name!r} has no GAttA layers: there are no agreement maps to explain")
        return model.model, list(classes) if classes is not None else list(model.classes)
    if not hasattr(model, "trace") or not hasattr(model, "layer_kinds"):
        raise ValueError(f"explain needs a GAttA model (a GAttANet or a gv.load_model result), got {type(model).__name__}")
    return model, list(classes) if classes is not None else None


def explain_batch(
    model,
    prepared: Inputs,
    layers: Optional[Sequence[str]] = None,
    signed: bool = True,
    joint: bool = False,
    true_label: Union[None, int, Sequence[Optional[int]]] = None,
    k: int = 3,
    gradcam: bool = True,
    gain: bool = True,
    classes: Optional[Sequence[str]] = None,
    ablation: bool = True,
    cue: Cue = None,
    compare: bool = True,
) -> List[Explanation]:
    """Explain every image of a batch with one trace, one batched ablation per layer and one Grad-CAM per layer.

    Args: as :func:`explain`; ``ablation=False`` skips the per-layer ablation column of the table.
    Returns:
        One :class:`Explanation` per image.
    """
    query, cue_name = resolve_cue(model, cue)
    net, class_names = _model_and_classes(model, classes)
    x, shown, inverted, originals, _ = _as_batch(prepared)
    device = next(net.parameters()).device
    x = x.to(device)
    b = x.shape[0]
    labels = list(true_label) if isinstance(true_label, (list, tuple)) else [true_label] * b
    if len(labels) != b:
        raise ValueError(f"true_label has {len(labels)} entries for {b} images")
    runs = []  # (trace, ablation, Grad-CAMs) under the cue (or without one), then without the cue to compare
    with temporarily_eval(net):
        queries = [query] + ([None] if query is not None and compare else [])
        with torch.no_grad():
            traces = [net.trace(x, query=q) for q in queries]
        conv = [n for n, lt in traces[0].layers.items() if lt.kind == "conv"]
        if layers is not None:
            unknown = [n for n in layers if n not in conv]
            if unknown:
                raise ValueError(unknown_name_message("conv GAttA layer", unknown[0], conv) + f" (conv layers: {conv})")
            conv = [n for n in conv if n in layers]
        n_classes = traces[0].logits_pass2.shape[1]
        if class_names is None:
            class_names = [str(i) for i in range(n_classes)]
        if len(class_names) != n_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {n_classes} outputs")
        for q, trace in zip(queries, traces):
            pred = trace.logits_pass2.argmax(1)
            if not ablation:
                abl = None
            elif q is None:
                abl = ablation_scores(net, x, pred, reference=trace.logits_pass2)
            else:
                abl = _cued_ablation(net, x, pred, trace.logits_pass2, q)
            forward = net if q is None else _CuedForward(net, q)
            cams = {n: captum_gradcam(forward, x, n, pred) for n in conv} if gradcam and conv else {}
            runs.append((trace.detach(), abl, cams))
    untrained = is_untrained(traces[0].alphas)
    warn_if_untrained(traces[0].alphas, gain)
    size = tuple(x.shape[2:])
    out = []
    for i in range(b):
        label = labels[i]
        if label is not None and not 0 <= int(label) < n_classes:
            raise ValueError(f"true_label {label} is not a class index (0..{n_classes - 1})")
        image = np.asarray(shown[i] if shown is not None else image_for_display(x[i]), dtype=np.float32)
        per_run = []
        for t, abl, cams in runs:
            ti = t[i]
            maps = {n: upsample(ti.layers[n].map(gain)[0].numpy(), size) for n in conv}
            cam = {n: upsample(c[i], size) for n, c in cams.items()}
            table = layer_statistics(ti, 0)
            for r in table:
                r["dprob_pred"] = float(abl[r["layer"]][i]) if abl is not None else float("nan")
            per_run.append((ti, maps, cam, table))
        if len(per_run) == 2:  # cued and uncued: one colour scale per layer for both
            heats, scales = normalize_shared([m for _, m, _, _ in per_run], signed, joint)
            cams_n = normalize_shared([c for _, _, c, _ in per_run], signed, joint)[0] if gradcam and conv else [{}, {}]
        else:
            heat, sc = normalize_with_scales(per_run[0][1], signed, joint)
            heats, scales = [heat], sc
            cams_n = [normalize(per_run[0][2], signed, joint) if gradcam and conv else {}]
        exs = []
        for j, (ti, _, _, table) in enumerate(per_run):
            exs.append(Explanation(
                image=image, trace=ti, classes=class_names, heatmaps=heats[j],
                raw={n: lt.agreement[0].numpy() for n, lt in ti.layers.items()}, alphas=ti.alphas,
                top_pass1=topk(ti.logits_pass1[0], class_names, k), top_pass2=topk(ti.logits_pass2[0], class_names, k),
                table=table, gradcam=cams_n[j], signed=signed, joint=joint,
                true_label=None if label is None else int(label), inverted=inverted[i], gain=gain, scales=dict(scales),
                original=originals[i], untrained=untrained, cue=cue_name if j == 0 else None,
            ))
        if len(exs) == 2:
            exs[0].uncued = exs[1]
        out.append(exs[0])
    return out


def explain(
    model,
    prepared: Inputs,
    layers: Optional[Sequence[str]] = None,
    signed: bool = True,
    joint: bool = False,
    true_label: Union[None, int, Sequence[Optional[int]]] = None,
    k: int = 3,
    gradcam: bool = True,
    gain: bool = True,
    classes: Optional[Sequence[str]] = None,
    cue: Cue = None,
    compare: bool = True,
) -> Union[Explanation, List[Explanation]]:
    """Explain images with a GAttA model.

    Args:
        model: a :class:`LoadedModel` (``gv.load_model(...)``) or a GAttA model itself (``gv.GAttANet``,
            ``gv.gatta_resnet18()``...). Run in eval mode; the model's own train/eval flags are restored.
        prepared: a :class:`PreparedImage`, a list of them, or a float tensor normalised like the training
            data: one image (C, H, W) or (1, C, H, W), or a batch (B, C, H, W).
        layers: conv layers to show (default: all); dense layers are always traced.
        signed: signed (diverging) or rectified heatmaps.
        joint: one normalisation across layers (comparable) instead of one per layer.
        true_label: class index (one, or one per image), if known.
        k: how many top classes to list.
        gradcam: also compute captum Grad-CAM at the same conv layers.
        gain: heatmaps of alpha x agreement (default: > 0 boosted by pass 2, < 0 suppressed) instead of raw
            agreement, whose sign is set by training; ``raw`` keeps the raw agreement either way.
        classes: class names (default: the LoadedModel's, or "0", "1", ...).
        cue: a top-down cue: a class name (the model's stored class query, ``LoadedModel.cue``) or a query
            tensor (d,) / (B, d). It replaces the query pass 1 pools from the image
            (``model.trace(x, query=...)``); maps, pass 2, the table (its ablation under the cue too) and
            Grad-CAM are computed under it, and ``Explanation.cue`` names it.
        compare: with a cue, also explain each image without it (``Explanation.uncued``), on the same colour
            scale per layer, for side-by-side figures (``ex.figure()`` draws both rows).
    Returns:
        An :class:`Explanation` for one image (a PreparedImage, (C, H, W) or (1, C, H, W)); a list of them
        for a batch or a list (:func:`explain_batch` always returns a list).
    Raises:
        ValueError: non-GAttA model, bad layer names, or input that is not a float image tensor (e.g. uint8);
            a cue the model cannot take (see :func:`resolve_cue`: no stored class queries, unknown class...).
    Warns:
        UntrainedGAttAWarning: every alpha is 0 (the GAttA parameters were never trained).
    """
    out = explain_batch(model, prepared, layers, signed, joint, true_label, k, gradcam, gain, classes, cue=cue,
                        compare=compare)
    return out[0] if _as_batch_is_single(prepared) else out


def _as_batch_is_single(prepared: Inputs) -> bool:
    if isinstance(prepared, PreparedImage):
        return True
    if torch.is_tensor(prepared):
        return prepared.dim() == 3 or (prepared.dim() == 4 and prepared.shape[0] == 1)
    return False
