"""Reading a map store lazily: :func:`open_maps` and :class:`MapStore`.

Opening reads the root group's metadata only; ``ms["maps"]["layer2"]`` is a zarr array whose chunks are read when
it is sliced; :meth:`MapStore.table` reads the per-image scalars and logits chunk by chunk, never a map.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .layout import DENSE, DONE, FORMAT, MAPS, SCALAR_KINDS, SCALARS, chunk_ranges, scalar_column, scalar_path
from .zarr_io import try_open_group

__all__ = ["MapStore", "LayerArrays", "open_maps"]


class LayerArrays:
    """A read-only dict of layer name -> zarr array (``ms["maps"]``, ``ms["dense"]``); each array is opened (its
    metadata read) on first access, its chunks when it is sliced."""

    def __init__(self, group: Any, prefix: str, layers: List[str]) -> None:
        self._group, self._prefix, self._layers = group, prefix, list(layers)
        self._open: Dict[str, Any] = {}

    def __getitem__(self, layer: str):
        if layer not in self._layers:
            from ..core.trace import unknown_layer

            raise unknown_layer(layer, self._layers, f"layer in {self._prefix}/")
        if layer not in self._open:
            self._open[layer] = self._group[f"{self._prefix}/{layer}"]
        return self._open[layer]

    def __contains__(self, layer: object) -> bool:
        return layer in self._layers

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def keys(self) -> List[str]:
        return list(self._layers)

    def items(self) -> Iterator[Tuple[str, Any]]:
        return ((layer, self[layer]) for layer in self._layers)

    def values(self) -> Iterator[Any]:
        return (self[layer] for layer in self._layers)

    def __repr__(self) -> str:
        return f"LayerArrays({self._prefix}/: {', '.join(self._layers)})"


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class MapStore:
    """A map store opened for reading (from :func:`open_maps` or :func:`gatta_viz.compute_maps`).

    ``ms["maps"][layer]``, ``ms["dense"][layer]``: zarr arrays per layer; ``ms["q_avg"]``, ``ms["logits_pass1"]``,
    ``ms["logits_pass2"]``, ``ms["label"]``, ``ms["index"]`` (and ``ms["labels"]`` for scenes of several items),
    ``ms["scalars/mean_gain/layer2"]``: zarr arrays. ``len(ms)`` is the number of images N.
    """

    def __init__(self, group: Any, path: Any) -> None:
        self._group, self.path = group, path
        self._attrs = dict(group.attrs.asdict())
        if self._attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not a gatta_viz map store (format {self._attrs.get('format')!r}, expected "
                             f"{FORMAT!r})")
        self._cache: Dict[str, Any] = {}

    @property
    def attrs(self) -> Dict[str, Any]:
        """The store's attributes (model, alphas, layers, classes, dataset, preprocess, chunk, n, fingerprint...)."""
        return dict(self._attrs)

    @property
    def layers(self) -> List[str]:
        """The conv GAttA layers (the keys of ``ms["maps"]``), in forward order."""
        return list(self._attrs["conv_layers"])

    @property
    def dense_layers(self) -> List[str]:
        """The dense GAttA layers (the keys of ``ms["dense"]``)."""
        return list(self._attrs["dense_layers"])

    @property
    def classes(self) -> List[str]:
        return list(self._attrs["classes"])

    @property
    def chunk(self) -> int:
        """Images per chunk."""
        return int(self._attrs["chunk"])

    @property
    def complete(self) -> bool:
        """Whether every chunk has been written (as recorded when the last writer finished)."""
        return bool(self._attrs.get("complete", False))

    def __len__(self) -> int:
        return int(self._attrs["n"])

    def keys(self) -> List[str]:
        """The names ``ms[...]`` takes."""
        extra = ["labels"] if int(self._attrs["dataset"].get("labels_per_image", 1)) > 1 else []
        return [MAPS, DENSE, SCALARS, "q_avg", "logits_pass1", "logits_pass2", "label", "index", *extra, DONE]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __getitem__(self, key: str):
        if key == MAPS:
            return self._cache.setdefault(MAPS, LayerArrays(self._group, MAPS, self.layers))
        if key == DENSE:
            return self._cache.setdefault(DENSE, LayerArrays(self._group, DENSE, self.dense_layers))
        if key == SCALARS:
            return {kind: LayerArrays(self._group, f"{SCALARS}/{kind}", self.layers + self.dense_layers)
                    for kind in SCALAR_KINDS}
        if key not in self.keys() and not key.startswith(f"{SCALARS}/"):
            raise KeyError(f"no {key!r} in the map store; keys: {', '.join(self.keys())}")
        if key not in self._cache:
            self._cache[key] = self._group[key]
        return self._cache[key]

    def done(self) -> np.ndarray:
        """(n_chunks,) bool: which chunks are written (reads the small ``done`` array)."""
        return np.asarray(self[DONE][:], dtype=bool)

    def chunks(self, written_only: bool = False) -> Iterator[Tuple[int, int]]:
        """(start, stop) row ranges of whole chunks, in order (for chunk-wise reductions).

        Args:
            written_only: skip chunks not (yet) written (an incomplete store's rows there are fill values).
        """
        which = [int(c) for c in np.flatnonzero(self.done())] if written_only else []
        if written_only and not which:
            return iter(())
        return chunk_ranges(len(self), self.chunk, which)

    def _table_chunk(self, start: int, stop: int) -> Dict[str, np.ndarray]:
        label = np.asarray(self["label"][start:stop])
        cols: Dict[str, np.ndarray] = {"index": np.asarray(self["index"][start:stop]), "label": label}
        if "labels" in self.keys():
            items = np.asarray(self["labels"][start:stop])
            for j in range(items.shape[1]):
                cols[f"label_{j}"] = items[:, j]
        for p in ("pass1", "pass2"):
            prob = _softmax(np.asarray(self[f"logits_{p}"][start:stop]))
            pred = prob.argmax(axis=1)
            cols[f"pred_{p}"] = pred
            cols[f"prob_{p}"] = prob[np.arange(len(pred)), pred]
            if p == "pass2":
                known = label >= 0
                cols["prob_label_pass2"] = np.where(known, prob[np.arange(len(pred)), np.clip(label, 0, None)], np.nan)
        cols["changed"] = cols["pred_pass1"] != cols["pred_pass2"]
        if "labels" in self.keys():
            cols["correct_pass2"] = (items == cols["pred_pass2"][:, None]).any(axis=1)
        else:
            cols["correct_pass2"] = cols["pred_pass2"] == label
        for layer in self.layers + self.dense_layers:
            for kind in SCALAR_KINDS:
                cols[scalar_column(kind, layer)] = np.asarray(self[scalar_path(kind, layer)][start:stop])
        return cols

    def table(self, written_only: Optional[bool] = None):
        """One row per image (the frame's index is the store row): ``index``, ``label`` (-1: unknown; scenes add
        ``label_0``, ``label_1``...), ``pred_pass1``, ``pred_pass2``, ``prob_pass1``, ``prob_pass2`` (softmax
        probability of that pass's predicted class), ``prob_label_pass2`` (of the true class; NaN when unknown),
        ``changed`` (pass 2 predicts another class than pass 1), ``correct_pass2`` (for scenes: one of the items),
        and ``mean_gain:<layer>``, ``boosted:<layer>`` for every GAttA layer. Read chunk by chunk; no map is read.

        Args:
            written_only: only the rows of written chunks (None: when the store is incomplete).
        Returns:
            A pandas DataFrame.
        """
        import pandas as pd

        only = (not self.complete) if written_only is None else bool(written_only)
        parts = [(start, stop, self._table_chunk(start, stop)) for start, stop in self.chunks(written_only=only)]
        if not parts:
            return pd.DataFrame(columns=list(self._table_chunk(0, 0)) if len(self) else [])
        rows = np.concatenate([np.arange(a, b) for a, b, _ in parts])
        data = {k: np.concatenate([p[k] for _, _, p in parts]) for k in parts[0][2]}
        return pd.DataFrame(data, index=pd.Index(rows, name="row"))

    def source(self):
        """The images the store was written from, re-opened (:func:`gatta_viz.store.sources.source_from_attrs`):
        ``src.shown(i)`` is image ``index[i]`` as the model saw it.

        Raises:
            ValueError: the images cannot be re-loaded here.
        """
        from .sources import source_from_attrs

        return source_from_attrs(self._attrs)

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return (f"MapStore({self.path!s}: {len(self)} images of {self._attrs['dataset'].get('name')}, "
                f"layers {', '.join(self.layers + self.dense_layers)}, {state})")


def open_maps(store: Any, storage_options: Optional[Dict[str, Any]] = None) -> MapStore:
    """Open a map store for reading; reads only its metadata.

    Args:
        store: the folder (``maps.zarr``) or a URL (``s3://bucket/maps.zarr``, through fsspec).
        storage_options: passed to fsspec for a URL.
    Returns:
        A :class:`MapStore`.
    Raises:
        FileNotFoundError: no store there. ValueError: a zarr store that is not a map store.
    """
    group = try_open_group(store, storage_options)
    if group is None:
        raise FileNotFoundError(f"no map store at {store}")
    return MapStore(group, store)
