"""Choosing a model on the page: bundled models and the operator's folder by name (never a path), or an
uploaded checkpoint.

A checkpoint that did not come with the package is read with ``torch.load(weights_only=True)`` and checked by
the library (:func:`gatta_viz.models.checkpoint.read_checkpoint`: keys, types, finite weights); the server then
checks that rebuilding it is affordable before building it (:func:`check_affordable`).
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from typing import Any, Dict, Iterator, List, Optional

import torch

from ..models.builders import build_model
from ..models.checkpoint import BUNDLED, LoadedModel, load_checkpoint, load_model as load_named, read_checkpoint
from .settings import MAX_INPUT_SIDE, MAX_PARAMETERS, checkpoint_limit_bytes, model_dir

__all__ = ["list_model_files", "load_model", "check_affordable", "load_checked", "load_uploaded"]


def list_model_files(folder: Optional[str] = None) -> List[str]:
    """Names (never paths) of the ``.pt`` files directly in the model folder (``$GATTA_VIZ_MODEL_DIR``), sorted."""
    folder = folder or model_dir()
    if not folder:
        return []
    return sorted(n for n in os.listdir(folder) if n.endswith(".pt") and os.path.isfile(os.path.join(folder, n)))


def _public_error(e: Exception, path: str, label: str) -> ValueError:
    """A loading error with the server-side path replaced by the name the user knows."""
    return ValueError(str(e).replace(os.path.abspath(path), label).replace(path, label))


def load_model(name: str) -> LoadedModel:
    """A bundled model, or a ``.pt`` file of the model folder, by name only (never a path).

    Args:
        name: a bundled model's name or a name from :func:`list_model_files`.
    Returns:
        the loaded model.
    Raises:
        ValueError: an unknown name (paths included), or a file that cannot be loaded.
    """
    name = str(name).strip()
    if not name:
        raise ValueError("no model chosen")
    if name in BUNDLED:
        return load_named(name)
    files = list_model_files()
    if name in files:
        path = os.path.join(model_dir(), name)
        try:
            return load_checked(path, name)
        except (ValueError, FileNotFoundError) as e:
            raise _public_error(e, path, name) from None
    raise ValueError(f"unknown model {name!r}: choose a bundled model ({', '.join(BUNDLED)})"
                     + (f" or a file of the model folder ({', '.join(files)})" if files else ""))


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)


def check_affordable(obj: Dict[str, Any], label: str) -> None:
    """Refuse a (valid) checkpoint whose settings would make the server build something huge.

    A checkpoint names a builder and its arguments; a hostile one could ask for billions of parameters or huge
    inputs. The model is built on PyTorch's "meta" device (no memory) and must hold as many numbers as the
    file's weights, and at most ``MAX_PARAMETERS``; inputs may be at most ``MAX_INPUT_SIDE`` pixels a side.

    Args:
        obj: the checkpoint as :func:`read_checkpoint` returns it.
        label: the name shown in messages.
    Raises:
        ValueError: ``"LABEL: ..."`` naming the problem.
    """
    kwargs = {k: v for k, v in dict(obj["kwargs"]).items() if k != "weights"}
    if any(not math.isfinite(v) or abs(v) > 65536 for v in _numbers(kwargs)):
        raise ValueError(f"{label}: the checkpoint's model settings hold numbers out of range")
    if any(isinstance(v, (list, tuple)) and len(v) > 16 for v in kwargs.values()) or sum(
            v for v in _numbers(kwargs.get("blocks", [])) if v > 0) > 64:
        raise ValueError(f"{label}: the checkpoint asks for a model deeper than this app builds")
    pre = obj.get("preprocess")
    size = pre.get("size") if isinstance(pre, dict) else None
    sizes = list(_numbers(size)) + list(_numbers(kwargs.get("input_size", [])))
    if not sizes or any(s < 1 or s > MAX_INPUT_SIDE for s in sizes):
        raise ValueError(f"{label}: the checkpoint's input size {size} is outside 1..{MAX_INPUT_SIDE} pixels")
    held = sum(t.numel() for t in obj["state_dict"].values() if torch.is_tensor(t))
    try:
        with torch.device("meta"):
            shape = build_model(obj["builder"], **kwargs)
    except Exception as e:  # noqa: BLE001 - any failure to build means unusable settings
        raise ValueError(f"{label}: the checkpoint's model settings do not build a model ({type(e).__name__})") from None
    wanted = sum(t.numel() for t in shape.state_dict().values())
    if wanted > MAX_PARAMETERS or wanted > 1.01 * held + 1024:
        raise ValueError(f"{label}: the checkpoint's settings build a model of {wanted:,} numbers but it holds "
                         f"{held:,}: refused")


def load_checked(path: str, label: str) -> LoadedModel:
    """Load a checkpoint that did not come with the package: read and validated by the library, checked for
    cost (:func:`check_affordable`), then built.

    Args:
        path: the checkpoint file.
        label: how messages name it (the user's file name, never a server path).
    Returns:
        the loaded model.
    Raises:
        ValueError, FileNotFoundError: naming the problem.
    """
    obj = read_checkpoint(path)  # torch.load(weights_only=True) and the library's validation: no code runs
    check_affordable(obj, label)
    del obj
    return load_checkpoint(path)


def load_uploaded(name: str, data: bytes) -> LoadedModel:
    """Load a checkpoint uploaded through the page: written to a private temp file, loaded with
    :func:`load_checked` and deleted.

    Args:
        name: the upload's file name (for messages).
        data: the file's bytes (at most ``GATTA_VIZ_MAX_CHECKPOINT_MB``).
    Returns:
        the loaded model.
    Raises:
        ValueError: naming the upload (never the temp file) and the problem.
    """
    label = os.path.basename(str(name)) or "checkpoint"
    limit = checkpoint_limit_bytes()
    if len(data) > limit:
        raise ValueError(f"{label}: file is {len(data) / 2**20:.3g} MB, over the {limit / 2**20:.3g} MB checkpoint limit")
    if not data:
        raise ValueError(f"{label}: file is empty (0 bytes)")
    fd, path = tempfile.mkstemp(suffix=".pt", prefix="gatta-viz-upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            lm = load_checked(path, label)
        except (ValueError, FileNotFoundError) as e:
            raise _public_error(e, path, label) from None
        lm.path = label  # the model is named after the upload, not the temp file
        return lm
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
