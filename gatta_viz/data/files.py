"""Writing files safely: strict JSON (NaN and infinity written as null) and atomic writes (a temp file in the
destination's folder, renamed into place on success, removed on failure), so an interrupted or failed write
never leaves half a file or a stray temp file.

Standard library only; used by the CLI and the library's writers.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from contextlib import contextmanager
from typing import IO, Any, Iterator, Optional

__all__ = ["strict_json", "dumps_json", "write_json", "atomic_write", "atomic_path"]


def strict_json(obj: Any) -> Any:
    """A copy of ``obj`` that strict JSON parsers accept: non-finite numbers become None.

    Dicts, lists and tuples are copied recursively; numbers (Python, numpy scalars, 0-d tensors via their
    ``item``) are kept as Python numbers; other objects are returned unchanged.
    """
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        v = float(obj)
        return v if math.isfinite(v) else None
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy/torch 0-d arrays
        return strict_json(obj.item())
    return obj


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict_json` (``allow_nan=False``: anything non-finite left over is an error)."""
    return json.dumps(strict_json(obj), allow_nan=False, **kwargs)


def _refuse_directory(path: str) -> None:
    if not str(path).strip():
        raise FileNotFoundError("an output file name must not be empty")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; give a file name")


def _temp_in_folder(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    stem, ext = os.path.splitext(name)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the file gets the permissions open() would give it
    return tmp


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temp path (same folder, same extension) to write ``path`` through; renamed to ``path`` when the
    block ends normally, removed when it raises (Ctrl-C included).

    Raises:
        IsADirectoryError: ``path`` is a directory (checked before anything is written).
        FileNotFoundError: ``path`` is empty or its folder does not exist.
    """
    _refuse_directory(path)
    tmp = _temp_in_folder(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextmanager
def atomic_write(path: str, mode: str = "w", encoding: Optional[str] = None) -> Iterator[IO[Any]]:
    """Open a temp file next to ``path`` for writing; it replaces ``path`` when the block ends normally and is
    removed when it raises. ``mode`` is ``"w"`` or ``"wb"``. Raises as :func:`atomic_path`."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f


def write_json(path: str, obj: Any, indent: Optional[int] = 2) -> None:
    """Write ``obj`` as strict JSON (non-finite numbers as null), atomically."""
    text = dumps_json(obj, indent=indent)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")
