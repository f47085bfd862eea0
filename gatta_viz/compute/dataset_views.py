"""Views of a map store (:func:`gatta_viz.open_maps`) as numbers: the q_avg embedding (the paper's Fig. 2b), the
mean gain map of every class per layer, the store's table filtered and sorted, one image's stored record.

Everything reads the store chunk by chunk (``ms.chunks()``), so memory stays that of one chunk whatever the
number of images; nothing recomputes a map. No plotting library is imported here (figures:
:mod:`gatta_viz.render.dataset_figures`).
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
from scipy.special import softmax

__all__ = [
    "EMBEDDING_METHODS", "GROUP_BY", "StoreEmbedding", "ClassMeans", "TableQuery", "StoredImage", "umap_available",
    "pca_2d", "read_store_rows", "q_avg_embedding_from_store", "class_mean_maps", "sort_columns", "query_table",
    "with_class_names", "stored_image",
]

EMBEDDING_METHODS = ("auto", "umap", "pca")
GROUP_BY = ("label", "pred_pass2", "pred_pass1")  # what makes an image's class in class_mean_maps
MIN_EMBEDDED = 3  # fewer images than this have no 2-D layout to speak of
NO_UMAP = "method 'umap' needs umap-learn (pip install umap-learn); method 'pca' works without it"


# ------------------------------------------------------------------------------------------------ reading rows
def _conv_layers(ms: Any, layer: Union[None, str, Sequence[str]]) -> List[str]:
    """The store's conv layers, or the ones named (checked)."""
    known = list(ms.layers)
    wanted = known if layer is None else [layer] if isinstance(layer, str) else list(layer)
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        raise ValueError(f"unknown layer(s) {unknown or wanted!r}: the store holds maps of {known}")
    return wanted


def _array(ms: Any, path: str) -> Any:
    """The store's array at ``path`` ("q_avg", "maps/layer2"...), indexed one level at a time."""
    obj = ms
    for part in path.split("/"):
        obj = obj[part]
    return obj


def _chunks(ms: Any) -> Iterator[Tuple[int, int]]:
    """Row ranges of the chunks to read: all of a complete store, only the written ones of an incomplete store
    (elsewhere its arrays hold fill values, not maps)."""
    return ms.chunks(written_only=not ms.complete)


def _written_rows(ms: Any) -> np.ndarray:
    """The store rows that hold data (every row of a complete store)."""
    if ms.complete:
        return np.arange(len(ms))
    ranges = [np.arange(a, b) for a, b in _chunks(ms)]
    return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)


def read_store_rows(ms: Any, names: Sequence[str], rows: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Some rows of some of the store's arrays, read one chunk at a time (only chunks holding a wanted row).

    Args:
        ms: an open map store.
        names: array paths, e.g. ``["q_avg", "label", "maps/layer2"]``.
        rows: store rows (any order; None: every row).
    Returns:
        name -> array of the rows in the order given (rows of an incomplete store's unwritten chunks hold fill
        values).
    Raises:
        ValueError: a row outside the store.
    """
    n = len(ms)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"rows must be in 0..{n - 1}, got {int(rows.min())}..{int(rows.max())}")
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    arrays = {k: _array(ms, k) for k in names}
    parts: Dict[str, list] = {k: [] for k in names}
    for start, stop in ms.chunks():
        lo, hi = np.searchsorted(ordered, [start, stop])
        if lo == hi:
            continue
        for k in names:
            parts[k].append(np.asarray(arrays[k][start:stop])[ordered[lo:hi] - start])
    out = {}
    for k in names:
        shape = arrays[k].shape[1:]
        got = np.concatenate(parts[k]) if parts[k] else np.empty((0, *shape), dtype=arrays[k].dtype)
        back = np.empty_like(got)
        back[order] = got
        out[k] = back
    return out


# ------------------------------------------------------------------------------------------------ embedding
@dataclass
class StoreEmbedding:
    """q_avg of a store's images in 2-D.

    Attributes:
        coords: (n, 2) float32 coordinates.
        rows: (n,) the store rows embedded (sorted).
        labels: (n,) true classes (-1: unknown).
        changed: (n,) whether pass 2 changed the prediction.
        method: ``"umap"`` or ``"pca"``: how ``coords`` were made.
        classes: class names, indexed by label.
        explained: PCA only: the fraction of q_avg's variance on each axis (None for UMAP).
    """

    coords: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    changed: np.ndarray
    method: str
    classes: List[str]
    explained: Optional[np.ndarray] = None

    def axis_labels(self) -> Tuple[str, str]:
        """Names of the two axes (with the share of variance for PCA)."""
        if self.method == "pca" and self.explained is not None:
            return (f"PC1 ({100 * self.explained[0]:.0f}% of variance)", f"PC2 ({100 * self.explained[1]:.0f}%)")
        return ("UMAP 1", "UMAP 2")


def umap_available() -> bool:
    """Whether umap-learn is installed (found without importing it: importing takes seconds)."""
    try:
        return importlib.util.find_spec("umap") is not None
    except (ImportError, ValueError):  # a broken or blocked entry in sys.modules
        return False


def pca_2d(v: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """PCA to 2 components by SVD of the centred data.

    Args:
        v: (N, d) vectors.
    Returns:
        (coords (N, 2), explained variance ratio (2,)), float32.
    """
    v = np.asarray(v, dtype=np.float64)
    c = v - v.mean(0, keepdims=True)
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    coords = np.zeros((len(c), 2))
    coords[:, : min(2, vt.shape[0])] = c @ vt[:2].T
    var = np.zeros(2)
    var[: min(2, len(s))] = (s ** 2)[:2]
    total = float((s ** 2).sum())
    return coords.astype(np.float32), (var / total if total > 0 else np.zeros(2)).astype(np.float32)


def _umap_2d(q: np.ndarray, seed: int) -> np.ndarray:
    """UMAP to 2-D with umap-learn's defaults (15 neighbours, min_dist 0.1), seeded."""
    try:
        import umap
    except ImportError as e:  # installed but broken (e.g. a numba that does not fit)
        raise ValueError(f"{NO_UMAP} (importing it failed: {e})") from None

    small = len(q) < 16
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(q) - 1), random_state=int(seed),
                        init="random" if small else "spectral")
    with warnings.catch_warnings():  # "n_jobs overridden by random_state" and friends: a seeded run is wanted
        warnings.simplefilter("ignore")
        return np.asarray(reducer.fit_transform(np.asarray(q, dtype=np.float32)), dtype=np.float32)


def q_avg_embedding_from_store(ms: Any, method: str = "auto", n: Optional[int] = None,
                               seed: int = 0) -> StoreEmbedding:
    """The global query q_avg of a store's images in 2-D (the paper's Fig. 2b), read chunk by chunk.

    Args:
        ms: an open map store.
        method: ``"umap"`` (umap-learn, as the paper), ``"pca"``, or ``"auto"``: UMAP when umap-learn is
            installed, PCA otherwise. The result's ``method`` says which was used.
        n: embed a random sample of this many images (seeded; None or more than the store: all). An incomplete
            store's images are those of its written chunks.
        seed: for the sample and for UMAP.
    Returns:
        a :class:`StoreEmbedding`.
    Raises:
        ValueError: an unknown method, ``"umap"`` without umap-learn, n < 3 or a store of fewer than 3 images.
    """
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"unknown embedding method {method!r}: choose one of {', '.join(EMBEDDING_METHODS)}")
    if method == "umap" and not umap_available():
        raise ValueError(NO_UMAP)
    use = "umap" if method == "umap" or (method == "auto" and umap_available()) else "pca"
    rows = _written_rows(ms)
    if n is not None and int(n) < MIN_EMBEDDED:
        raise ValueError(f"n must be at least {MIN_EMBEDDED}, got {n}")
    if len(rows) < MIN_EMBEDDED:
        raise ValueError(f"the store holds {len(rows)} written image(s): an embedding needs at least {MIN_EMBEDDED}")
    if n is not None and int(n) < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=int(n), replace=False))
    got = read_store_rows(ms, ["q_avg", "label", "logits_pass1", "logits_pass2"], rows)
    changed = got["logits_pass1"].argmax(1) != got["logits_pass2"].argmax(1)
    coords, explained = (_umap_2d(got["q_avg"], seed), None) if use == "umap" else pca_2d(got["q_avg"])
    return StoreEmbedding(coords, rows, got["label"].astype(np.int64), changed, use, list(ms.classes), explained)


# ------------------------------------------------------------------------------------------------ class means
@dataclass
class ClassMeans:
    """Mean gain map (alpha x agreement) of every class, per conv layer, at the layer's own resolution.

    Attributes:
        maps: layer -> (classes, h, w) float32 means (NaN for a class without images).
        counts: (classes,) images per class.
        classes: class names.
        by: what made an image's class: ``"label"`` (true class), ``"pred_pass2"`` or ``"pred_pass1"``.
        alphas: layer -> alpha (from the store's attributes).
    """

    maps: Dict[str, np.ndarray]
    counts: np.ndarray
    classes: List[str]
    by: str
    alphas: Dict[str, float]


def _group_of(ms: Any, by: str, start: int, stop: int) -> np.ndarray:
    """The class of each row of one chunk (-1: none)."""
    if by == "label":
        return np.asarray(ms["label"][start:stop]).astype(np.int64)
    return np.asarray(ms["logits_" + by.split("_")[1]][start:stop]).argmax(1).astype(np.int64)


def class_mean_maps(ms: Any, layer: Union[None, str, Sequence[str]] = None, *, by: str = "label",
                    mask: Optional[np.ndarray] = None) -> ClassMeans:
    """Mean gain map per class and conv layer, summed one chunk at a time (never every map at once); of an
    incomplete store, over its written chunks.

    Args:
        ms: an open map store.
        layer: a conv layer, a list of them, or None for all.
        by: group images by their true class (``"label"``; unlabelled images, label -1, are left out) or by a
            pass's prediction (``"pred_pass2"``, ``"pred_pass1"``).
        mask: (N,) booleans: only these images (e.g. ``table["changed"].to_numpy()``).
    Returns:
        a :class:`ClassMeans`.
    Raises:
        ValueError: an unknown layer or grouping, a mask of the wrong length, or no image to average.
    """
    layers = _conv_layers(ms, layer)
    if by not in GROUP_BY:
        raise ValueError(f"unknown grouping {by!r}: choose one of {', '.join(GROUP_BY)}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        if len(mask) != len(ms):
            raise ValueError(f"mask has {len(mask)} entries for a store of {len(ms)} images")
    k = len(ms.classes)
    sums = {n: np.zeros((k, int(np.prod(ms["maps"][n].shape[1:]))), dtype=np.float64) for n in layers}
    counts = np.zeros(k, dtype=np.int64)
    for start, stop in _chunks(ms):
        group = _group_of(ms, by, start, stop)
        keep = (group >= 0) & (group < k) & (True if mask is None else mask[start:stop])
        if not keep.any():
            continue
        onehot = np.zeros((int(keep.sum()), k))
        onehot[np.arange(len(onehot)), group[keep]] = 1.0
        counts += onehot.sum(0).astype(np.int64)
        for n in layers:
            block = np.asarray(ms["maps"][n][start:stop])[keep]
            sums[n] += onehot.T @ block.reshape(len(block), -1).astype(np.float64)
    if not counts.any():
        hint = " (no image has a single true class, label -1: group by 'pred_pass2')" if by == "label" else ""
        raise ValueError(f"no image to average{hint}")
    with np.errstate(invalid="ignore", divide="ignore"):
        means = {n: (s / counts[:, None]).astype(np.float32).reshape(k, *ms["maps"][n].shape[1:])
                 for n, s in sums.items()}
    alphas = {n: float(a) for n, a in dict(ms.attrs.get("alphas", {})).items()}
    return ClassMeans(means, counts, list(ms.classes), by, alphas)


# ------------------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class TableQuery:
    """Which of a store's images to list, and in which order.

    Attributes:
        changed_only: only images whose prediction pass 2 changed.
        classes: only these true classes (names; empty: all).
        predicted: only these pass-2 predictions (names; empty: all).
        correct: only images pass 2 gets right (True) or wrong (False); None: both.
        sort_by: a column of the table (see :func:`sort_columns`), e.g. ``"prob_pass2"`` or ``"mean_gain:layer2"``.
        descending: largest first.
    """

    changed_only: bool = False
    classes: Tuple[str, ...] = ()
    predicted: Tuple[str, ...] = ()
    correct: Optional[bool] = None
    sort_by: str = "index"
    descending: bool = False


def sort_columns(table: pd.DataFrame) -> List[str]:
    """The table's columns an image list can be sorted by (numbers and booleans), in table order."""
    return [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c])]


def _class_ids(names: Sequence[str], classes: Sequence[str], what: str) -> List[int]:
    unknown = [c for c in names if c not in classes]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}: the store's classes are {list(classes)}")
    return [list(classes).index(c) for c in names]


def query_table(table: pd.DataFrame, classes: Sequence[str], query: TableQuery = TableQuery()) -> pd.DataFrame:
    """The rows of a store's table (``ms.table()``) that ``query`` keeps, in its order; the index stays the store row.

    Args:
        table: the store's table.
        classes: the store's class names (``ms.classes``).
        query: the filter and the order.
    Returns:
        a new DataFrame (a view of the same columns).
    Raises:
        ValueError: an unknown class name or sort column.
    """
    keep = np.ones(len(table), dtype=bool)
    if query.changed_only:
        keep &= table["changed"].to_numpy(dtype=bool)
    if query.classes:
        keep &= table["label"].isin(_class_ids(query.classes, classes, "class")).to_numpy()
    if query.predicted:
        keep &= table["pred_pass2"].isin(_class_ids(query.predicted, classes, "predicted class")).to_numpy()
    if query.correct is not None:
        keep &= table["correct_pass2"].to_numpy(dtype=bool) == bool(query.correct)
    columns = sort_columns(table)
    if query.sort_by not in columns:
        raise ValueError(f"cannot sort by {query.sort_by!r}: choose one of {', '.join(columns)}")
    return table[keep].sort_values(query.sort_by, ascending=not query.descending, kind="stable")


def with_class_names(table: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """The table with the class names of the label and of both passes' predictions (unknown label: ``"?"``),
    for people to read."""
    names = np.array(list(classes) + ["?"], dtype=object)
    out = table.copy()
    for col, new in (("label", "class"), ("pred_pass1", "pass 1"), ("pred_pass2", "pass 2")):
        ids = out[col].to_numpy(dtype=np.int64)
        out.insert(out.columns.get_loc(col) + 1, new, names[np.where((ids >= 0) & (ids < len(classes)), ids, -1)])
    return out


# ------------------------------------------------------------------------------------------------ one image
@dataclass
class StoredImage:
    """One image's record as the store holds it.

    Attributes:
        row: the store row.
        index: the image's index in its dataset.
        label: the true class (-1: unknown).
        maps: conv layer -> (h, w) float32 gain map alpha x agreement, at the layer's resolution.
        dense: dense layer -> (units,) float32 alpha x agreement.
        logits_pass1, logits_pass2: (classes,) float32 logits of each pass.
        alphas: layer -> alpha.
    """

    row: int
    index: int
    label: int
    maps: Dict[str, np.ndarray]
    dense: Dict[str, np.ndarray]
    logits_pass1: np.ndarray
    logits_pass2: np.ndarray
    alphas: Dict[str, float]

    def probs(self, which: int = 2) -> np.ndarray:
        """Softmax probabilities of pass ``which`` (1 or 2), float64."""
        return softmax(np.asarray(self.logits_pass2 if which == 2 else self.logits_pass1, dtype=np.float64))

    @property
    def changed(self) -> bool:
        """Whether pass 2 changed the prediction."""
        return int(np.argmax(self.logits_pass1)) != int(np.argmax(self.logits_pass2))


def stored_image(ms: Any, row: int, layers: Union[None, str, Sequence[str]] = None) -> StoredImage:
    """One image of a store: its maps, dense gains and both passes' logits (reads one row of each array).

    Args:
        ms: an open map store.
        row: the store row (0..N-1).
        layers: conv layers to read (None: all).
    Returns:
        a :class:`StoredImage`.
    Raises:
        ValueError: a row outside the store or an unknown layer.
    """
    n = len(ms)
    if not 0 <= int(row) < n:
        raise ValueError(f"row must be in 0..{n - 1}, got {row}")
    r = int(row)
    dense_layers = list(ms.attrs.get("dense_layers", []))
    alphas = {k: float(v) for k, v in dict(ms.attrs.get("alphas", {})).items()}
    return StoredImage(
        row=r, index=int(ms["index"][r]), label=int(ms["label"][r]),
        maps={k: np.asarray(ms["maps"][k][r], dtype=np.float32) for k in _conv_layers(ms, layers)},
        dense={k: np.asarray(ms["dense"][k][r], dtype=np.float32) for k in dense_layers},
        logits_pass1=np.asarray(ms["logits_pass1"][r], dtype=np.float32),
        logits_pass2=np.asarray(ms["logits_pass2"][r], dtype=np.float32),
        alphas=alphas)
