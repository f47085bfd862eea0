"""One image, fully explained: trace, normalised heatmaps, predictions of both passes, layer table, Grad-CAM.

Used by the CLI (``gatta-viz explain``), the demo and the Streamlit app, so they all show the same numbers.
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
from ..models.checkpoint import LoadedModel
from .contributions import ablation_scores, layer_statistics
from .figures import fig3
from .heatmaps import normalize, upsample
from .overlays import overlay
from ..data.preprocess import PreparedImage
from ..core.trace import GAttATrace

__all__ = ["topk", "Explanation", "explain"]


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
        heatmaps: conv layer -> normalised agreement map at input size.
        raw: layer -> raw agreement (conv (h, w), dense (C,)).
        alphas: layer -> alpha.
        top_pass1, top_pass2: :func:`topk` lists.
        table: per-layer statistics and ablation score for the predicted class.
        gradcam: conv layer -> normalised Grad-CAM at input size (same normalisation as heatmaps), or {}.
        signed, joint: how heatmaps were normalised.
        gain: heatmaps show alpha x agreement (what each layer boosts) rather than raw agreement.
        true_label: the true class if given.
        inverted: whether the input's colours were inverted by the preprocessing.
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
    gain: bool = False

    @property
    def prediction(self) -> Dict[str, Any]:
        return self.top_pass2[0]

    @property
    def dense_layers(self) -> List[str]:
        return [n for n, lt in self.trace.layers.items() if lt.kind == "dense"]

    def summary(self) -> Dict[str, Any]:
        """JSON-able summary: top-k of both passes, alphas, layer table."""
        out = {
            "prediction": self.prediction,
            "top_pass1": self.top_pass1,
            "top_pass2": self.top_pass2,
            "prediction_changed_by_pass2": self.top_pass1[0]["index"] != self.top_pass2[0]["index"],
            "alphas": self.alphas,
            "layers": self.table,
            "normalisation": {"signed": self.signed, "joint": self.joint},
            "maps": "alpha x agreement" if self.gain else "agreement",
            "input_inverted": self.inverted,
        }
        if self.true_label is not None:
            out["true_label"] = {"index": int(self.true_label), "label": self.classes[int(self.true_label)]}
        return json.loads(json.dumps(out))  # plain types only

    def to_npz(self, target: Union[str, BinaryIO, None] = None) -> bytes:
        """Save image, raw maps, normalised heatmaps, Grad-CAM, q_avg and logits as .npz.

        Keys: ``image``, ``raw/<layer>``, ``heatmap/<layer>``, ``gradcam/<layer>``, ``q_avg``,
        ``logits_pass1``, ``logits_pass2``, ``alpha/<layer>``.
        Args:
            target: path or binary file; None to only return the bytes.
        Returns:
            The .npz bytes.
        """
        arrays = {"image": self.image, "q_avg": self.trace.q_avg[0].numpy(),
                  "logits_pass1": self.trace.logits_pass1[0].numpy(), "logits_pass2": self.trace.logits_pass2[0].numpy()}
        arrays.update({f"raw/{k}": v for k, v in self.raw.items()})
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

    def figure(self, cmap: str = "RdBu_r"):
        """The Fig. 3 layout for this image (matplotlib Figure)."""
        return fig3(self.image, self.trace, 0, self.classes, self.true_label, self.signed, self.joint, cmap, self.gain)

    def overlays(self, cmap: str = "RdBu_r", opacity: float = 0.5) -> Dict[str, Image.Image]:
        """Conv layer -> heatmap blended over the input."""
        return {n: overlay(self.image, h, cmap, opacity, self.signed) for n, h in self.heatmaps.items()}

    def gradcam_overlays(self, cmap: str = "RdBu_r", opacity: float = 0.5) -> Dict[str, Image.Image]:
        """Conv layer -> Grad-CAM blended over the input (same colour scale convention as the heatmaps)."""
        return {n: overlay(self.image, h, cmap, opacity, self.signed) for n, h in self.gradcam.items()}


def explain(
    loaded: LoadedModel,
    prepared: Union[PreparedImage, torch.Tensor],
    layers: Optional[Sequence[str]] = None,
    signed: bool = True,
    joint: bool = False,
    true_label: Optional[int] = None,
    k: int = 3,
    gradcam: bool = True,
    gain: bool = False,
) -> Explanation:
    """Explain one image with a GAttA model.

    Args:
        loaded: a :class:`LoadedModel` whose model is GAttA-enabled.
        prepared: a :class:`PreparedImage`, or a normalised (1, C, H, W) tensor.
        layers: conv layers to show (default: all); dense layers are always traced.
        signed: signed (diverging) or rectified heatmaps.
        joint: one normalisation across layers (comparable) instead of one per layer.
        true_label: class index, if known.
        k: how many top classes to list.
        gradcam: also compute captum Grad-CAM at the same conv layers.
        gain: heatmaps of alpha x agreement (what each layer boosts) instead of raw agreement; ``raw``
            keeps the raw agreement either way.
    Returns:
        An :class:`Explanation`.
    Raises:
        ValueError: non-GAttA model, bad layer names or input.
    """
    model = loaded.model
    if not loaded.is_gatta:
        raise ValueError(f"model {loaded.name!r} has no GAttA layers: there are no agreement maps to explain")
    if isinstance(prepared, PreparedImage):
        x, image, inverted = prepared.tensor, prepared.shown, prepared.inverted
    else:
        x, image, inverted = prepared, None, False
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"explain takes one image (1, C, H, W), got shape {tuple(x.shape)}")
    device = next(model.parameters()).device
    x = x.to(device)
    if image is None:
        from .figures import image_for_display

        image = image_for_display(x[0])
    with torch.no_grad():
        trace = model.trace(x)
    conv = [n for n, lt in trace.layers.items() if lt.kind == "conv"]
    if layers is not None:
        unknown = [n for n in layers if n not in trace.layers]
        if unknown:
            raise ValueError(f"unknown layers {unknown}; this model's GAttA layers are {list(trace.layers)}")
        conv = [n for n in conv if n in layers]
    size = tuple(x.shape[2:])
    raw = {n: lt.agreement[0].detach().cpu().numpy() for n, lt in trace.layers.items()}
    heat = normalize({n: upsample(trace.layers[n].map(gain)[0].detach().cpu().numpy(), size) for n in conv}, signed, joint)
    pred = int(trace.logits_pass2[0].argmax())
    table = layer_statistics(trace, 0)
    abl = ablation_scores(model, x, pred)
    for r in table:
        r["dprob_pred"] = float(abl[r["layer"]][0])
    cams: Dict[str, np.ndarray] = {}
    if gradcam and conv:
        cams = normalize({n: upsample(captum_gradcam(model, x, n, pred)[0], size) for n in conv}, signed, joint)
    t = trace.detach()
    classes = list(loaded.classes)
    return Explanation(
        image=np.asarray(image, dtype=np.float32), trace=t, classes=classes, heatmaps=heat, raw=raw,
        alphas=t.alphas, top_pass1=topk(t.logits_pass1[0], classes, k), top_pass2=topk(t.logits_pass2[0], classes, k),
        table=table, gradcam=cams, signed=signed, joint=joint, true_label=true_label, inverted=inverted, gain=gain,
    )
