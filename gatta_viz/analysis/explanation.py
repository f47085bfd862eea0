"""Images, fully explained: trace, normalised maps, predictions of both passes, layer table, Grad-CAM.

Used by the CLI (``gatta-viz explain``), the demo and the Streamlit app, so they all show the same numbers.
Maps are the gain map alpha x agreement by default (> 0 boosted by pass 2, < 0 suppressed); ``gain=False``
gives raw agreement, whose sign is a convention of training.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .attributions import gradcam as captum_gradcam
from .checks import check_model_input, is_untrained, unknown_name_message, untrained_message, warn_if_untrained
from .contributions import ablation_scores, layer_statistics
from .figures import fig3, image_for_display
from .heatmaps import normalize, normalize_with_scales, upsample
from .overlays import overlay, overlay_on_original, to_rgb_array
from .style import DEFAULT_CMAP
from ..core.hooks import temporarily_eval
from ..core.trace import GAttATrace
from ..data.preprocess import PreparedImage
from ..models.checkpoint import LoadedModel

__all__ = ["topk", "Explanation", "explain", "explain_batch"]


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
        return json.loads(json.dumps(out))  # plain types only

    def to_npz(self, target: Union[str, BinaryIO, None] = None) -> bytes:
        """Save image, raw maps, gain maps, normalised heatmaps, Grad-CAM, q_avg and logits as .npz.

        Keys: ``image``, ``raw/<layer>`` (raw agreement), ``gain_map/<layer>`` (alpha x agreement, unscaled),
        ``heatmap/<layer>`` (the map shown, normalised, input size), ``gradcam/<layer>``, ``q_avg``,
        ``logits_pass1``, ``logits_pass2``, ``alpha/<layer>``.
        Args:
            target: path or binary file; None to only return the bytes.
        Returns:
            The .npz bytes.
        """
        arrays = {"image": self.image, "q_avg": self.trace.q_avg[0].numpy(),
                  "logits_pass1": self.trace.logits_pass1[0].numpy(), "logits_pass2": self.trace.logits_pass2[0].numpy()}
        arrays.update({f"raw/{k}": v for k, v in self.raw.items()})
        arrays.update({f"gain_map/{k}": np.float32(self.alphas[k]) * v for k, v in self.raw.items()})
        arrays.update({f"heatmap/{k}": v for k, v in self.heatmaps.items()})
        arrays.update({f"gradcam/{k}": v for k, v in self.gradcam.items()})
        arrays.update({f"alpha/{k}": np.float32(v) for k, v in self.alphas.items()})
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        data = buf.getvalue()
        if isinstance(target, str):
            with open(target, "wb") as f:
                f.write(data)
        elif target is not None:
            target.write(data)
        return data

    def figure(self, cmap: str = DEFAULT_CMAP, layout: str = "double"):
        """The Fig. 3 layout for this image (matplotlib Figure, ``layout`` "double" = 7.2 in or "single" = 3.5 in)."""
        return fig3(self.image, self.trace, 0, self.classes, self.true_label, self.signed, self.joint, cmap, self.gain,
                    layout=layout, layers=list(self.heatmaps))

    def original_differs(self) -> bool:
        """Whether the original image differs from the input the model saw (size, colours or inversion)."""
        if self.original is None:
            return False
        if (self.original.size[1], self.original.size[0]) != tuple(self.image.shape[:2]):
            return True
        return not np.allclose(to_rgb_array(self.original), to_rgb_array(self.image), atol=1 / 255)

    def overlays(self, cmap: str = DEFAULT_CMAP, opacity: float = 0.5, on: str = "input") -> Dict[str, Image.Image]:
        """Conv layer -> map blended over the input the model saw (``on="input"``) or over the original image at
        its own resolution and colours (``on="original"``; the input when the original is unknown)."""
        if on not in ("input", "original"):
            raise ValueError(f"on must be 'input' or 'original', got {on!r}")
        if on == "original" and self.original is not None:
            return {n: overlay_on_original(self.original, h, cmap, opacity, self.signed) for n, h in self.heatmaps.items()}
        return {n: overlay(self.image, h, cmap, opacity, self.signed) for n, h in self.heatmaps.items()}

    def gradcam_overlays(self, cmap: str = DEFAULT_CMAP, opacity: float = 0.5) -> Dict[str, Image.Image]:
        """Conv layer -> Grad-CAM blended over the input (same colour scale convention as the heatmaps)."""
        return {n: overlay(self.image, h, cmap, opacity, self.signed) for n, h in self.gradcam.items()}


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
) -> List[Explanation]:
    """Explain every image of a batch with one trace, one batched ablation per layer and one Grad-CAM per layer.

    Args: as :func:`explain`; ``ablation=False`` skips the per-layer ablation column of the table.
    Returns:
        One :class:`Explanation` per image.
    """
    net, class_names = _model_and_classes(model, classes)
    x, shown, inverted, originals, _ = _as_batch(prepared)
    device = next(net.parameters()).device
    x = x.to(device)
    b = x.shape[0]
    labels = list(true_label) if isinstance(true_label, (list, tuple)) else [true_label] * b
    if len(labels) != b:
        raise ValueError(f"true_label has {len(labels)} entries for {b} images")
    with temporarily_eval(net):
        with torch.no_grad():
            trace = net.trace(x)
        conv = [n for n, lt in trace.layers.items() if lt.kind == "conv"]
        if layers is not None:
            unknown = [n for n in layers if n not in conv]
            if unknown:
                raise ValueError(unknown_name_message("conv GAttA layer", unknown[0], conv) + f" (conv layers: {conv})")
            conv = [n for n in conv if n in layers]
        n_classes = trace.logits_pass2.shape[1]
        if class_names is None:
            class_names = [str(i) for i in range(n_classes)]
        if len(class_names) != n_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {n_classes} outputs")
        pred = trace.logits_pass2.argmax(1)
        abl = ablation_scores(net, x, pred, reference=trace.logits_pass2) if ablation else None
        cams = {n: captum_gradcam(net, x, n, pred) for n in conv} if gradcam and conv else {}
    untrained = is_untrained(trace.alphas)
    warn_if_untrained(trace.alphas, gain)
    t = trace.detach()
    size = tuple(x.shape[2:])
    out = []
    for i in range(b):
        ti = t[i]
        raw = {n: lt.agreement[0].numpy() for n, lt in ti.layers.items()}
        heat, scales = normalize_with_scales({n: upsample(ti.layers[n].map(gain)[0].numpy(), size) for n in conv},
                                             signed, joint)
        table = layer_statistics(ti, 0)
        for r in table:
            r["dprob_pred"] = float(abl[r["layer"]][i]) if abl is not None else float("nan")
        gc = normalize({n: upsample(c[i], size) for n, c in cams.items()}, signed, joint) if cams else {}
        image = shown[i] if shown is not None else image_for_display(x[i])
        label = labels[i]
        if label is not None and not 0 <= int(label) < n_classes:
            raise ValueError(f"true_label {label} is not a class index (0..{n_classes - 1})")
        out.append(Explanation(
            image=np.asarray(image, dtype=np.float32), trace=ti, classes=class_names, heatmaps=heat, raw=raw,
            alphas=ti.alphas, top_pass1=topk(ti.logits_pass1[0], class_names, k),
            top_pass2=topk(ti.logits_pass2[0], class_names, k), table=table, gradcam=gc, signed=signed, joint=joint,
            true_label=None if label is None else int(label), inverted=inverted[i], gain=gain, scales=scales,
            original=originals[i], untrained=untrained,
        ))
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
    Returns:
        An :class:`Explanation` for one image (a PreparedImage, (C, H, W) or (1, C, H, W)); a list of them
        for a batch or a list (:func:`explain_batch` always returns a list).
    Raises:
        ValueError: non-GAttA model, bad layer names, or input that is not a float image tensor (e.g. uint8).
    Warns:
        UntrainedGAttAWarning: every alpha is 0 (the GAttA parameters were never trained).
    """
    out = explain_batch(model, prepared, layers, signed, joint, true_label, k, gradcam, gain, classes)
    return out[0] if _as_batch_is_single(prepared) else out


def _as_batch_is_single(prepared: Inputs) -> bool:
    if isinstance(prepared, PreparedImage):
        return True
    if torch.is_tensor(prepared):
        return prepared.dim() == 3 or (prepared.dim() == 4 and prepared.shape[0] == 1)
    return False
