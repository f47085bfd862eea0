"""Checkpoints: a plain state dict plus the config needed to rebuild the model from the file alone.

Loaded with ``torch.load(weights_only=True)``: no pickled code is ever executed.
"""
from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from .builders import BUILDERS, build_model
from .cues import class_cue, cue_definition, steering_queries
from .kinds import is_gatta
from ..core.pass_statistics import SharedStatisticsError

__all__ = [
    "CHECKPOINT_FORMAT",
    "BUNDLED",
    "DEFAULT_MODEL",
    "steering_queries",
    "LoadedModel",
    "save_checkpoint",
    "read_checkpoint",
    "validate_checkpoint",
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
        """Whether the model has GAttA layers (:func:`gatta_viz.models.kinds.is_gatta`)."""
        return is_gatta(self.model)

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0] if self.path else self.builder

    @property
    def cue_definition(self) -> str:
        """The definition :meth:`cue` uses by default: ``"steering"`` when the checkpoint stores a calibrated
        sign (scene models, see ``gatta-viz cues``), else ``"mean"`` (:func:`gatta_viz.models.cues.cue_definition`)."""
        return cue_definition(self.meta)

    def cue(self, class_name: str, definition: Optional[str] = None) -> torch.Tensor:
        """A top-down query (d,) for ``class_name``, to pass as ``model.trace(x, query=...)``.

        See :func:`gatta_viz.models.cues.class_cue` (definitions ``"mean"`` and ``"steering"``).

        Raises:
            ValueError: the model has no stored class queries, the name is not one of its classes, an unknown
                definition, or "steering" without a calibrated sign.
        """
        return class_cue(self, class_name, definition)


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
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; give a file name")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:  # a failed or interrupted write leaves no temp file behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_checkpoint(path: str) -> Dict[str, Any]:
    """Read and validate a checkpoint file without building the model.

    Raises:
        FileNotFoundError: no such file.
        ValueError: corrupt/truncated file, a file that is not a gatta_viz checkpoint, or one whose contents
            fail :func:`validate_checkpoint` (missing keys, wrong types, non-finite weights).
    """
    if os.path.isdir(path):
        raise FileNotFoundError(f"{path} is a directory, not a checkpoint file")
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
    validate_checkpoint(obj, path)
    return obj


def _json_like(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_json_like(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _json_like(x) for k, x in v.items())
    return False


def _preprocess_problems(pre: Any) -> List[str]:
    if not isinstance(pre, dict):
        return [f"'preprocess' must be a dict, found {type(pre).__name__}"]
    out = []
    size, channels = pre.get("size"), pre.get("channels")
    if not (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        out.append(f"preprocess 'size' must be [H, W] with positive integers, found {size!r}")
    if not (isinstance(channels, int) and not isinstance(channels, bool) and channels > 0):
        out.append(f"preprocess 'channels' must be a positive integer, found {channels!r}")
    for key in ("mean", "std"):
        v = pre.get(key)
        ok = isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                        and math.isfinite(x) for x in v)
        if not ok:
            out.append(f"preprocess {key!r} must be a list of finite numbers, found {v!r}")
        elif isinstance(channels, int) and len(v) != channels:
            out.append(f"preprocess {key!r} has {len(v)} values for {channels} channels")
        elif key == "std" and min(v) <= 0:
            out.append(f"preprocess 'std' must be positive, found {list(v)}")
    return out


def validate_checkpoint(obj: Dict[str, Any], path: str = "checkpoint") -> None:
    """Check a checkpoint's contents before anything uses them: required keys and their types, the preprocess
    record, JSON-like kwargs and meta, and finite weights and class queries.

    Args:
        obj: what ``torch.load`` returned (a dict with the gatta_viz format tag).
        path: named in the message.
    Raises:
        ValueError: one line per problem found (all of them, not only the first).
    """
    problems = []
    missing = [k for k in ("builder", "kwargs", "state_dict", "classes", "preprocess") if k not in obj]
    if missing:
        problems.append(f"lacks {', '.join(repr(k) for k in missing)}")
    builder = obj.get("builder")
    if "builder" in obj and (not isinstance(builder, str) or builder not in BUILDERS):
        close = difflib.get_close_matches(str(builder), list(BUILDERS), n=1)
        problems.append(f"names unknown builder {builder!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    for key in ("kwargs", "meta"):
        if key in obj and not (isinstance(obj[key], dict) and _json_like(obj[key])):
            found = type(obj[key]).__name__ if not isinstance(obj[key], dict) else "a dict with non-JSON values"
            problems.append(f"{key!r} must be a dict of JSON values, found {found}")
    classes = obj.get("classes")
    if "classes" in obj and not (isinstance(classes, (list, tuple)) and classes
                                 and all(isinstance(c, str) for c in classes)):
        problems.append(f"'classes' must be a non-empty list of names, found {type(classes).__name__}")
    if "preprocess" in obj:
        problems += _preprocess_problems(obj["preprocess"])
    state = obj.get("state_dict")
    if "state_dict" in obj:
        if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
            problems.append("'state_dict' must map parameter names to tensors")
        else:
            bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
            if bad:
                problems.append(f"non-finite weights (NaN or inf) in {len(bad)} tensor(s): {', '.join(bad[:5])}"
                                + (" ..." if len(bad) > 5 else ""))
    queries = obj.get("class_queries")
    if queries is not None and (not torch.is_tensor(queries) or not bool(torch.isfinite(queries).all())):
        problems.append("'class_queries' must be a finite tensor")
    if "train_state" in obj and not isinstance(obj["train_state"], dict):
        problems.append(f"'train_state' must be a dict, found {type(obj['train_state']).__name__}")
    if problems:
        raise ValueError(f"checkpoint {path} is invalid: " + "; ".join(problems))


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
    try:
        model = build_model(obj["builder"], **kwargs)
    except (TypeError, ValueError, KeyError, IndexError) as e:  # kwargs the builder does not take
        raise ValueError(f"checkpoint {path}: cannot build {obj['builder']} from its kwargs: {str(e)[:300]}") from e
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
