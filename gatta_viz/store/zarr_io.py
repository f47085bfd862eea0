"""The store on disk (or in an object store): opening, creating with every array, refusing another run's store.

All zarr calls of the writer live here. A store is named by a local path or a URL that zarr opens through
fsspec (``s3://bucket/maps.zarr`` with s3fs installed; ``storage_options`` go to fsspec).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .layout import DENSE, DONE, FORMAT, MAPS, SCALAR_KINDS, fingerprint, n_chunks, refusal_message, scalar_path

__all__ = ["is_url", "open_group", "try_open_group", "read_attrs", "done_flags", "array_specs", "prepare_store",
           "check_existing", "COMPRESSION"]

# zstd at level 1: the maps are float16 and compress little; a fast level keeps writing far below the trace's cost
COMPRESSION = {"name": "zstd", "configuration": {"level": 1, "checksum": False}}


def is_url(store: str) -> bool:
    """Whether ``store`` is a URL (``s3://...``, ``gs://...``, ``memory://``) rather than a local path."""
    return "://" in str(store)


def _zarr():
    """The zarr module (version 3 or newer), or ImportError saying how to get it."""
    try:
        import zarr
    except ImportError:
        raise ImportError("the map store needs zarr 3 (Python 3.11 or newer): pip install 'zarr>=3.1'") from None
    if int(str(zarr.__version__).split(".")[0]) < 3:
        raise ImportError(f"the map store needs zarr 3, found zarr {zarr.__version__}: pip install 'zarr>=3.1'")
    return zarr


def open_group(store: Any, mode: str, storage_options: Optional[Dict[str, Any]] = None):
    """The store's root group (zarr format 3); ``mode`` as :func:`zarr.open_group`."""
    zarr = _zarr()
    kwargs: Dict[str, Any] = {"mode": mode, "zarr_format": 3}
    if storage_options and isinstance(store, str) and is_url(store):
        kwargs["storage_options"] = storage_options
    return zarr.open_group(store, **kwargs)


def try_open_group(store: Any, storage_options: Optional[Dict[str, Any]] = None):
    """The root group opened for reading, or None when there is no zarr group at ``store``.

    Raises:
        ValueError: ``store`` holds a zarr array, not a group.
    """
    _zarr()
    from zarr.errors import ContainsArrayError

    try:
        return open_group(store, "r", storage_options)
    except FileNotFoundError:  # zarr's GroupNotFoundError is one too
        return None
    except ContainsArrayError:
        raise ValueError(f"{store} is a zarr array, not a map store") from None


def read_attrs(store: Any, storage_options: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The root group's attributes, or None when there is no zarr group at ``store``."""
    group = try_open_group(store, storage_options)
    return None if group is None else dict(group.attrs.asdict())


def array_specs(attrs: Dict[str, Any]) -> List[Tuple[str, Tuple[int, ...], str, Tuple[int, ...], Any]]:
    """(path, shape, dtype, chunks, fill value) of every array a store with these attributes holds."""
    n, c = int(attrs["n"]), int(attrs["chunk"])
    classes, d = len(attrs["classes"]), int(attrs["d"])
    specs = []
    for layer in attrs["conv_layers"]:
        h, w = attrs["map_shapes"][layer]
        specs.append((f"{MAPS}/{layer}", (n, h, w), "float16", (c, h, w), 0.0))
    for layer in attrs["dense_layers"]:
        units = int(attrs["dense_units"][layer])
        specs.append((f"{DENSE}/{layer}", (n, units), "float16", (c, units), 0.0))
    for layer in list(attrs["conv_layers"]) + list(attrs["dense_layers"]):
        specs += [(scalar_path(kind, layer), (n,), "float32", (c,), 0.0) for kind in SCALAR_KINDS]
    specs += [("q_avg", (n, d), "float32", (c, d), 0.0),
              ("logits_pass1", (n, classes), "float32", (c, classes), 0.0),
              ("logits_pass2", (n, classes), "float32", (c, classes), 0.0),
              ("label", (n,), "int64", (c,), -1), ("index", (n,), "int64", (c,), -1)]
    k = int(attrs["dataset"].get("labels_per_image", 1))
    if k > 1:
        specs.append(("labels", (n, k), "int64", (c, k), -1))
    specs.append((DONE, (n_chunks(n, c),), "uint8", (1,), 0))
    return specs


def _create(store: Any, attrs: Dict[str, Any], storage_options: Optional[Dict[str, Any]]) -> None:
    """A new store: every array, then the attributes (with the fingerprint last: a store without one is a creation
    that was interrupted, and is made again)."""
    group = open_group(store, "w", storage_options)
    for path, shape, dtype, chunks, fill in array_specs(attrs):
        compressors = [COMPRESSION] if dtype.startswith("float") else "auto"
        group.create_array(path, shape=shape, dtype=dtype, chunks=chunks, fill_value=fill, compressors=compressors)
    body = dict(attrs)
    body.pop("fingerprint", None)
    group.attrs.update(body)
    group.attrs.update({"fingerprint": fingerprint(attrs)})


def _local_problem(store: Any) -> str:
    """Why a local ``store`` path cannot hold a map store ("" when it can)."""
    if not isinstance(store, (str, os.PathLike)) or is_url(str(store)):
        return ""
    path = os.fspath(store)
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{path} is a file, not a map store folder; give another --out"
    if os.path.isdir(path) and os.listdir(path) and not os.path.exists(os.path.join(path, "zarr.json")):
        return f"{path} is a folder that is not a map store (it has no zarr.json); give another --out"
    return ""


def check_existing(store: Any, attrs: Dict[str, Any], overwrite: bool,
                   storage_options: Optional[Dict[str, Any]] = None) -> str:
    """What to do with ``store``: ``"create"``, ``"resume"`` (same fingerprint) or ``"overwrite"``.

    Raises:
        ValueError: a file or a foreign folder at ``store``; a zarr store of another kind; a map store made with
            another model, data set, preprocessing, n, chunk or layers (naming the fields) without ``overwrite``.
    """
    problem = _local_problem(store)
    if problem:
        raise ValueError(problem)
    old = read_attrs(store, storage_options)
    if old is None:
        return "create"
    if old.get("format") != FORMAT:
        raise ValueError(f"{store} is a zarr store but not a gatta_viz map store (format {old.get('format')!r}); "
                         "give another --out")
    if "fingerprint" not in old:  # its creation was interrupted: nothing was computed into it
        return "overwrite"
    if overwrite:
        return "overwrite"
    if old["fingerprint"] != fingerprint(attrs):
        raise ValueError(refusal_message(str(store), old, attrs))
    return "resume"


def prepare_store(store: Any, attrs: Dict[str, Any], overwrite: bool,
                  storage_options: Optional[Dict[str, Any]] = None) -> str:
    """Create ``store`` (or replace it with ``overwrite``) or check that it can be resumed; see
    :func:`check_existing`. Returns what was done: ``"create"``, ``"overwrite"`` or ``"resume"``."""
    action = check_existing(store, attrs, overwrite, storage_options)
    if action in ("create", "overwrite"):
        _create(store, attrs, storage_options)
    return action


def done_flags(group: Any) -> np.ndarray:
    """(n_chunks,) bool: which chunks are completely written."""
    return np.asarray(group[DONE][:], dtype=bool)
