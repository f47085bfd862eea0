"""Checkpoints: a plain state dict plus the config needed to rebuild the model from the file alone.

Loaded with ``torch.load(weights_only=True)``: no pickled code is ever executed.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from .builders import BUILDERS, build_model
from ..core.pass_statistics import SharedStatisticsError

__all__ = [
    "CHECKPOINT_FORMAT",
    "BUNDLED",
    "DEFAULT_MODEL",
    "steering_queries",
    "LoadedModel",
    "save_checkpoint",
    "read_checkpoint",
    "load_checkpoint",
    "bundled_path",
    "load_model",
]

CHECKPOINT_FORMAT = "gatta_viz.checkpoint/1"
_GATTA_BUILDERS = {n for n in BUILDERS if n.startswith("gatta_")}
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
BUNDLED = {
    "fmnist-gatta-resnet": "fmnist_gatta_resnet.pt",
    "fmnist-resnet": "fmnist_resnet.pt",
    "fmnist-gatta-toy": "fmnist_gatta_toy.pt",
    "fmnist-toy": "fmnist_toy.pt",
    "fmnist-pairs-gatta-resnet": "fmnist_pairs_gatta_resnet.pt",
    "fmnist-pairs-resnet": "fmnist_pairs_resnet.pt",
    "fmnist-clutter-gatta-resnet": "fmnist_clutter_gatta_resnet.pt",
    "fmnist-clutter-resnet": "fmnist_clutter_resnet.pt",
}
DEFAULT_MODEL = "fmnist-gatta-resnet"


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with what is needed to feed it.

    Attributes:
        model: the network, in eval mode.
        builder, kwargs: how it was built.
        classes: class names, index = logit.
        preprocess: ``{"size": [H, W], "channels": C, "mean": [...], "std": [...]}``.
        meta: training facts (dataset, epochs, metrics...).
        path: where it was loaded from.
        class_queries: (classes, d) top-down cues stored with the checkpoint (one global query per class,
            see ``gatta_viz.training.cues``), or None.
    """

    model: nn.Module
    builder: str
    kwargs: Dict[str, Any]
    classes: List[str]
    preprocess: Dict[str, Any]
    meta: Dict[str, Any] = field(default_factory=dict)
    path: str = ""
    class_queries: Optional[torch.Tensor] = None

    @property
    def is_gatta(self) -> bool:
        return hasattr(self.model, "trace")

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0] if self.path else self.builder

    @property
    def cue_definition(self) -> str:
        """The definition :meth:`cue` uses by default: ``"steering"`` when the checkpoint stores a calibrated
        sign (scene models, see ``gatta-viz cues``), else ``"mean"``."""
        info = self.meta.get("class_queries") or {}
        return "steering" if info.get("sign") in (1, -1) else "mean"

    def cue(self, class_name: str, definition: Optional[str] = None) -> torch.Tensor:
        """A top-down query (d,) for ``class_name``, to pass as ``model.trace(x, query=...)``.

        Args:
            class_name: one of ``classes``.
            definition: ``"mean"``: the stored mean pass-1 q_avg of images holding that class alone;
                ``"steering"``: that mean minus the mean over classes (the part the class does not share with
                the others), rescaled to the mean's norm, times the sign calibrated on training scenes so that
                the cue moves gain-map energy onto the class's garment (:func:`steering_queries`).
                Default: :attr:`cue_definition`.
        Raises:
            ValueError: the model has no stored class queries, the name is not one of its classes, an unknown
                definition, or "steering" without a calibrated sign.
        """
        if self.class_queries is None:
            raise ValueError(f"model {self.name} has no stored class queries; compute them with "
                             "gatta_viz.class_queries(model, training_data) or `gatta-viz cues CHECKPOINT OUT`")
        if class_name not in self.classes:
            raise ValueError(f"unknown class {class_name!r} for cueing; classes: {self.classes}")
        definition = definition or self.cue_definition
        if definition == "mean":
            return self.class_queries[self.classes.index(class_name)]
        if definition != "steering":
            raise ValueError(f"unknown cue definition {definition!r}; use 'mean' or 'steering'")
        sign = (self.meta.get("class_queries") or {}).get("sign")
        if sign not in (1, -1):
            raise ValueError(f"model {self.name} has no calibrated cue sign (only scene models get one: "
                             "`gatta-viz cues` on a checkpoint trained on fmnist-pairs); use definition='mean'")
        return steering_queries(self.class_queries, sign)[self.classes.index(class_name)]


def steering_queries(means: torch.Tensor, sign: int) -> torch.Tensor:
    """Class queries with the part all classes share removed: ``sign * (m_c - mean_c' m_c')``, each rescaled to
    the norm of ``m_c``.

    Args:
        means: (C, d) mean pass-1 q_avg per class.
        sign: +1 or -1 (calibrated per model: which way moves gain energy onto the cued class's garment).
    Returns:
        (C, d) queries.
    """
    centred = means - means.mean(0, keepdim=True)
    scale = means.norm(dim=1, keepdim=True) / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return float(sign) * centred * scale

def save_checkpoint(
    path: str,
    model: nn.Module,
    builder: str,
    kwargs: Dict[str, Any],
    classes: Sequence[str],
    preprocess: Dict[str, Any],
    meta: Optional[Dict[str, Any]] = None,
    train_state: Optional[Dict[str, Any]] = None,
    class_queries: Optional[torch.Tensor] = None,
) -> None:
    """Write a checkpoint atomically (temp file + rename, so a kill never leaves half a file).

    Args:
        path: destination file.
        model: the model whose ``state_dict`` is saved.
        builder, kwargs: builder name and JSON-able kwargs that rebuild ``model``.
        classes: class names.
        preprocess: input size, channels, mean, std.
        meta: JSON-able facts (metrics, dataset, seed...).
        train_state: optimizer/scheduler/epoch state for resuming, omitted in bundled files.
        class_queries: (classes, d) top-down cues to store with the model, or None.
    """
    if builder not in BUILDERS:
        raise ValueError(f"unknown builder {builder!r}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {
        "format": CHECKPOINT_FORMAT,
        "builder": builder,
        "kwargs": dict(kwargs),
        "state_dict": state,
        "classes": list(classes),
        "preprocess": dict(preprocess),
        "meta": dict(meta or {}),
    }
    if train_state is not None:
        obj["train_state"] = train_state
    if class_queries is not None:
        obj["class_queries"] = class_queries.detach().cpu()
    write_atomically(obj, path)


def write_atomically(obj: Dict[str, Any], path: str) -> None:
    """``torch.save`` to a temp file, then rename: a kill never leaves half a file at ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str) -> Dict[str, Any]:
    """Read and validate a checkpoint file without building the model.

    Raises:
        FileNotFoundError: no such file.
        ValueError: corrupt/truncated file, or a file that is not a gatta_viz checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means an unreadable file
        raise ValueError(f"cannot read checkpoint {path}: corrupt, truncated or not a torch file ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{path} is not a gatta_viz checkpoint (expected format {CHECKPOINT_FORMAT!r}; found {found}). "
            "A bare torchvision state dict can be passed to gatta_resnet18(weights=PATH) instead."
        )
    for key in ("builder", "kwargs", "state_dict", "classes", "preprocess"):
        if key not in obj:
            raise ValueError(f"checkpoint {path} lacks {key!r}")
    if obj["builder"] not in BUILDERS:
        raise ValueError(f"checkpoint {path} names unknown builder {obj['builder']!r}")
    return obj


def load_checkpoint(
    path: str, device: str | torch.device = "cpu", norm_stats: Optional[str] = None, recalibrating: bool = False
) -> LoadedModel:
    """Rebuild a model from a checkpoint file alone.

    Args:
        path: checkpoint path.
        device: where to put the model.
        norm_stats: override the checkpoint's BatchNorm-statistics mode of a GAttA model: ``"shared"``
            loads a checkpoint saved before per-pass statistics as it was (both passes normalised with
            one blended estimate). None: as the checkpoint says (``"per_pass"`` when it says nothing).
        recalibrating: build with per-pass statistics and accept a file without pass 2's statistics
            (they start as copies of pass 1's); only for re-estimating them (``gatta-viz recalibrate``).
    Returns:
        A :class:`LoadedModel` whose model is in eval mode.
    Raises:
        FileNotFoundError, ValueError: see :func:`read_checkpoint`; ValueError also when
            the weights do not fit the architecture. SharedStatisticsError (a ValueError) when a
            checkpoint with one set of BatchNorm statistics for both passes is loaded as per-pass.
    """
    obj = read_checkpoint(path)
    kwargs = dict(obj["kwargs"])
    kwargs.pop("weights", None)  # never download when rebuilding: the file holds the weights
    if recalibrating:
        norm_stats = "per_pass"
    if norm_stats is not None and obj["builder"] in _GATTA_BUILDERS:
        kwargs["norm_stats"] = norm_stats
    model = build_model(obj["builder"], **kwargs)
    try:
        result = model.load_state_dict(obj["state_dict"], strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"checkpoint {path} does not fit builder {obj['builder']}: {str(e)[:300]}") from e
    missing_pass2 = [k for k in result.missing_keys if k.startswith("pass2_stats.")]
    missing = [k for k in result.missing_keys if k not in missing_pass2]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"checkpoint {path} does not fit builder {obj['builder']}: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    if missing_pass2:
        if not recalibrating:
            raise SharedStatisticsError(
                f"checkpoint {path} holds one set of BatchNorm statistics for both passes (saved before per-pass "
                "statistics), which blends pass 1's and pass 2's. Re-estimate each pass's own with "
                f"`gatta-viz recalibrate {path} NEW.pt`, or load it as it was with norm_stats='shared'."
            )
        model.pass2_stats.copy_from_pass1(dict(model.backbone.named_modules()))
    model.to(device).eval()
    queries = obj.get("class_queries")
    if queries is not None:
        d = getattr(model, "d", None)
        if not torch.is_tensor(queries) or tuple(queries.shape) != (len(obj["classes"]), d):
            raise ValueError(f"checkpoint {path}: class_queries must be a ({len(obj['classes'])}, {d}) tensor")
    return LoadedModel(model, obj["builder"], kwargs, list(obj["classes"]), dict(obj["preprocess"]),
                       dict(obj.get("meta", {})), path, queries)


def bundled_path(name: str) -> str:
    """Path of a bundled checkpoint by name (see ``BUNDLED``)."""
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled model {name!r}; bundled: {sorted(BUNDLED)}")
    return os.path.join(WEIGHTS_DIR, BUNDLED[name])


def load_model(
    name_or_path: str = DEFAULT_MODEL, device: str | torch.device = "cpu", norm_stats: Optional[str] = None
) -> LoadedModel:
    """Load a bundled model by name or any checkpoint by path.

    Args:
        name_or_path: a key of ``BUNDLED`` (default ``"fmnist-gatta-resnet"``) or a file path.
        device: target device.
        norm_stats: see :func:`load_checkpoint`.
    Returns:
        A :class:`LoadedModel`.
    Raises:
        FileNotFoundError: neither a bundled name nor an existing file (the message lists the bundled names and
            the closest match).
    """
    if name_or_path not in BUNDLED and not os.path.exists(name_or_path):
        close = difflib.get_close_matches(name_or_path, list(BUNDLED), n=3, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise FileNotFoundError(f"unknown model {name_or_path!r}: not a bundled model nor a checkpoint file{hint} "
                                f"(bundled models: {', '.join(BUNDLED)})")
    path = bundled_path(name_or_path) if name_or_path in BUNDLED else name_or_path
    return load_checkpoint(path, device, norm_stats)
