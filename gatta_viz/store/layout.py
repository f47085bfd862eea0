"""The map store's layout: array names, the attribute schema, the fingerprint and the refusal message.

A store is a zarr (format 3) group holding, for N images in chunks of C images along axis 0::

    maps/<layer>                float16 (N, h, w)   alpha x agreement of each conv GAttA layer (gain - 1)
    dense/<layer>               float16 (N, units)  alpha x agreement of each dense GAttA layer
    q_avg                       float32 (N, d)      the global query
    logits_pass1, logits_pass2  float32 (N, classes)
    label                       int64 (N,)          -1: unknown (a folder of files, or a scene of two items)
    labels                      int64 (N, k)        only for scenes of k items: each item's class
    index                       int64 (N,)          the row's index in the data set
    scalars/mean_gain/<layer>   float32 (N,)        mean of alpha x agreement over positions (or units)
    scalars/boosted/<layer>     float32 (N,)        share of positions (or units) with alpha x agreement > 0
    done                        uint8 (n_chunks,)   1 once every array of that chunk is written

Nothing here touches torch or zarr: names, dicts and hashes only.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Dict, Iterator, List, Sequence, Tuple

__all__ = [
    "FORMAT", "MAPS", "DENSE", "SCALARS", "SCALAR_KINDS", "DONE", "ROW_ARRAYS", "FINGERPRINT_FIELDS",
    "scalar_path", "scalar_column", "n_chunks", "chunk_ranges", "canonical_json", "fingerprint", "fingerprint_of",
    "differences", "refusal_message",
]

FORMAT = "gatta_viz.maps/1"
MAPS, DENSE, SCALARS, DONE = "maps", "dense", "scalars", "done"
SCALAR_KINDS = ("mean_gain", "boosted")  # scalars/<kind>/<layer>; the table's columns are "<kind>:<layer>"
ROW_ARRAYS = ("q_avg", "logits_pass1", "logits_pass2", "label", "index")  # besides maps, dense, scalars, labels

# attrs that must be equal to add chunks to an existing store, with the words the refusal uses for each
FINGERPRINT_FIELDS: Dict[str, str] = {
    "format": "store format",
    "model": "model (checkpoint sha256 / builder)",
    "alphas": "model alphas",
    "conv_layers": "layers (conv)",
    "dense_layers": "layers (dense)",
    "map_shapes": "map shapes",
    "dense_units": "dense layer sizes",
    "d": "query size d",
    "classes": "classes",
    "dataset": "dataset",
    "preprocess": "preprocessing",
    "n": "n (number of images)",
    "chunk": "chunk (images per chunk)",
}
_MODEL_KEYS = ("checkpoint_sha256", "builder")  # a renamed checkpoint file is the same model
_DATASET_SKIP = ("folder",)  # where a folder is mounted may differ between machines; its file list may not


def scalar_path(kind: str, layer: str) -> str:
    """Array path of a per-image scalar: ``scalars/mean_gain/layer2``."""
    if kind not in SCALAR_KINDS:
        raise ValueError(f"unknown scalar {kind!r}; known: {', '.join(SCALAR_KINDS)}")
    return f"{SCALARS}/{kind}/{layer}"


def scalar_column(kind: str, layer: str) -> str:
    """The table's column of a per-image scalar: ``mean_gain:layer2``."""
    return f"{kind}:{layer}"


def n_chunks(n: int, chunk: int) -> int:
    """How many chunks of ``chunk`` rows hold ``n`` rows."""
    return int(math.ceil(int(n) / int(chunk))) if n > 0 else 0


def chunk_ranges(n: int, chunk: int, which: Sequence[int] = ()) -> Iterator[Tuple[int, int]]:
    """(start, stop) rows of chunks ``which`` (all when empty), the last one cut at ``n``."""
    for c in (which or range(n_chunks(n, chunk))):
        yield c * chunk, min(n, (c + 1) * chunk)


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the same text for equal dicts, whatever their key order."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def fingerprint_of(attrs: Dict[str, Any]) -> Dict[str, Any]:
    """The part of ``attrs`` a fingerprint covers (see ``FINGERPRINT_FIELDS``)."""
    out = {k: attrs.get(k) for k in FINGERPRINT_FIELDS}
    out["model"] = {k: (attrs.get("model") or {}).get(k) for k in _MODEL_KEYS}
    out["dataset"] = {k: v for k, v in (attrs.get("dataset") or {}).items() if k not in _DATASET_SKIP}
    return out


def fingerprint(attrs: Dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of everything that must match to add to a store."""
    return hashlib.sha256(canonical_json(fingerprint_of(attrs)).encode()).hexdigest()


def _shown(value: Any, limit: int = 80) -> str:
    """A value in a message: strings quoted, anything else as compact JSON, cut at ``limit`` characters."""
    text = repr(value) if isinstance(value, str) else canonical_json(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """Which fingerprint fields differ between two attrs dicts, each as ``"WHAT: OLD vs NEW"`` (nested dicts name
    the key that differs: ``dataset: split 'test' vs 'train'``)."""
    a, b = fingerprint_of(old), fingerprint_of(new)
    out = []
    for key, what in FINGERPRINT_FIELDS.items():
        if a[key] == b[key]:
            continue
        if isinstance(a[key], dict) and isinstance(b[key], dict):
            keys = sorted(set(a[key]) | set(b[key]))
            parts = [f"{k} {_shown(a[key].get(k))} vs {_shown(b[key].get(k))}" for k in keys
                     if a[key].get(k) != b[key].get(k)]
            out.append(f"{what}: {'; '.join(parts)}")
        else:
            out.append(f"{what}: {_shown(a[key])} vs {_shown(b[key])}")
    return out


def refusal_message(path: str, old: Dict[str, Any], new: Dict[str, Any]) -> str:
    """Why a store cannot take this run's chunks, naming the fields that differ (stored value first)."""
    diffs = differences(old, new)
    shown = "; ".join(diffs) if diffs else "its fingerprint differs"
    return (f"the map store {path} was made with another {' / '.join(d.split(':')[0] for d in diffs) or 'set-up'} "
            f"(stored vs now: {shown}); give --overwrite (overwrite=True) to replace it, or another --out")
