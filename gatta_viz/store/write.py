"""Computing a whole data set's maps into a store: :func:`compute_maps`.

One chunk of C images is one unit of work: its images are read, traced in batches under ``torch.no_grad`` (the
model's train/eval flags are restored afterwards), every array's rows of that chunk are written, then its ``done``
flag. A rerun skips chunks whose flag is set; several processes (torchrun, or independent jobs given a rank and a
world size) each take a contiguous range of chunks. Nothing is gathered: every process writes its own chunks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .distributed import World, barrier, finish, my_chunks, resolve_world, share_verdict, wait_for
from .layout import DENSE, DONE, FORMAT, MAPS, chunk_ranges, fingerprint, n_chunks, refusal_message, scalar_path
from .sources import DatasetSource, MapSource, source_for_model
from .zarr_io import done_flags, open_group, prepare_store, read_attrs
from ..core.hooks import temporarily_eval
from ..models.checkpoint import LoadedModel
from ..models.kinds import is_gatta

__all__ = ["MapsConfig", "compute_maps", "default_batch", "model_identity", "store_attrs", "trace_rows"]


@dataclass(frozen=True)
class MapsConfig:
    """How :func:`compute_maps` works.

    Attributes:
        n: the first ``n`` images of the source (None: all).
        chunk: images per chunk (the unit of work, of resuming and of every array's chunking).
        batch_size: images per trace (None: :func:`default_batch`: the chunk for inputs up to 64 x 64, fewer for
            larger images; smaller saves memory).
        progress: a tqdm bar (on rank 0 only).
        overwrite: replace a store made with another model, data set, preprocessing, n or chunk.
        rank, world_size: this process's share (None: from torch.distributed / torchrun, else one process).
        storage_options: passed to fsspec when the store is a URL (``s3://...``).
    """

    n: Optional[int] = None
    chunk: int = 256
    batch_size: Optional[int] = None
    progress: bool = True
    overwrite: bool = False
    rank: Optional[int] = None
    world_size: Optional[int] = None
    storage_options: Optional[Dict[str, Any]] = None

    def __post_init__(self) -> None:
        for name in ("n", "chunk", "batch_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.chunk is None:
            raise ValueError("chunk must be a positive integer, got None")

    def replace(self, **changes: Any) -> "MapsConfig":
        """A copy with ``changes`` (unknown names refused, values checked)."""
        known = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise ValueError(f"unknown MapsConfig option(s) {bad}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)


def default_batch(chunk: int, input_shape: Any) -> int:
    """Images per trace when none is given: the whole chunk for inputs up to 64 x 64 pixels, else about a million
    input pixels per trace (20 images of 224 x 224), so that large images do not hold a chunk's activations."""
    pixels = int(input_shape[1]) * int(input_shape[2])
    return int(chunk) if pixels <= 64 * 64 else max(1, min(int(chunk), (1 << 20) // pixels))


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_sha256(net: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        digest.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes() if t.dtype != torch.bfloat16 else
                      t.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _gatta_net(model: Any) -> torch.nn.Module:
    """The network of ``model``, or ValueError unless it is a GAttA model."""
    net = model.model if isinstance(model, LoadedModel) else model
    if not isinstance(net, torch.nn.Module):
        raise ValueError(f"compute_maps needs a GAttA model (gv.load_model(...) or a GAttANet), got "
                         f"{type(model).__name__}")
    if not is_gatta(net):
        raise ValueError(f"compute_maps needs a GAttA model; {type(net).__name__} is a plain CNN without GAttA "
                         "layers, so it has no agreement maps to store (wrap it in gv.GAttANet and train it)")
    return net


def model_identity(model: Any) -> Dict[str, Any]:
    """The store's ``model`` attribute: name, sha256 (of the checkpoint file, or of the weights of a model built in
    memory) and builder.

    Raises:
        ValueError: not a model, or a plain CNN (no GAttA layers, so no agreement maps to store).
    """
    net = _gatta_net(model)
    if isinstance(model, LoadedModel) and model.path and os.path.isfile(model.path):
        return {"name": model.name, "checkpoint_sha256": _file_sha256(model.path), "builder": model.builder,
                "hash_of": "checkpoint file"}
    return {"name": getattr(model, "name", type(net).__name__), "checkpoint_sha256": _state_sha256(net),
            "builder": getattr(model, "builder", None), "hash_of": "state dict"}


def _as_source(model: Any, source: Any) -> MapSource:
    if isinstance(source, MapSource):
        return source
    if isinstance(source, str):
        if isinstance(model, LoadedModel):
            return source_for_model(model, dataset=source)
        if os.path.isdir(source):
            raise ValueError("a folder source needs a loaded model (gv.load_model) for its preprocessing; pass "
                             "gv.store.folder_source(...) instead")
        from .sources import dataset_source

        return dataset_source(source, "test")
    if all(hasattr(source, a) for a in ("images", "labels", "normalize", "classes")):
        return DatasetSource(source, getattr(source, "name", "") or "in-memory", "unknown")
    raise ValueError(f"source must be a data set name, a folder, an ImageData or a MapSource, got "
                     f"{type(source).__name__}")


def _probe(net: torch.nn.Module, source: MapSource) -> Dict[str, Any]:
    """Layer shapes, d, class count and alphas from a trace of the first image."""
    x, _, _ = source.batch(0, 1)
    with temporarily_eval(net), torch.no_grad():
        t = net.trace(x.to(next(net.parameters()).device))
    conv = [n for n, lt in t.layers.items() if lt.kind == "conv"]
    dense = [n for n, lt in t.layers.items() if lt.kind == "dense"]
    return {"conv_layers": conv, "dense_layers": dense, "alphas": {n: float(lt.alpha) for n, lt in t.layers.items()},
            "map_shapes": {n: [int(s) for s in t.layers[n].agreement.shape[1:]] for n in conv},
            "dense_units": {n: int(t.layers[n].agreement.shape[1]) for n in dense},
            "d": int(t.q_avg.shape[1]), "n_classes": int(t.logits_pass2.shape[1])}


def store_attrs(model: Any, source: MapSource, n: int, chunk: int) -> Dict[str, Any]:
    """The attributes (and fingerprint) of a store of ``n`` images of ``source`` traced by ``model``."""
    # the version is defined in the top package (imported before any of its modules), which is no layer
    version = sys.modules[__name__.split(".")[0]].__version__
    net = model.model if isinstance(model, LoadedModel) else model
    identity = model_identity(model)
    probe = _probe(net, source)
    classes = list(model.classes) if isinstance(model, LoadedModel) else list(source.classes)
    outputs = probe.pop("n_classes")
    if len(classes) != outputs:
        raise ValueError(f"the model has {outputs} outputs but {len(classes)} class names "
                         f"({'its checkpoint' if isinstance(model, LoadedModel) else 'the source'}'s)")
    attrs = {"format": FORMAT, "model": identity, **probe, "classes": classes, "dataset": source.describe(),
             "preprocess": source.preprocess(), "gatta_viz_version": version, "chunk": int(chunk), "n": int(n),
             "n_chunks": n_chunks(n, chunk),
             "maps": "alpha x agreement (gain - 1), float16, at each layer's resolution",
             "scalars": {"mean_gain": "mean of alpha x agreement over positions (dense: units)",
                         "boosted": "share of positions (dense: units) with alpha x agreement > 0"},
             "complete": False}
    attrs["fingerprint"] = fingerprint(attrs)
    return attrs


def trace_rows(net: torch.nn.Module, x: torch.Tensor, batch_size: int) -> Dict[str, np.ndarray]:
    """Every array's rows for images ``x`` (traced ``batch_size`` at a time; call under ``torch.no_grad``)."""
    parts: Dict[str, List[np.ndarray]] = {}

    def add(name: str, t: torch.Tensor, dtype) -> None:
        parts.setdefault(name, []).append(t.detach().cpu().numpy().astype(dtype, copy=False))

    device = next(net.parameters()).device
    for i in range(0, x.shape[0], batch_size):
        t = net.trace(x[i:i + batch_size].to(device))
        for layer, lt in t.layers.items():
            g = lt.map(gain=True).float()
            dims = tuple(range(1, g.dim()))
            add(f"{MAPS if lt.kind == 'conv' else DENSE}/{layer}", g, np.float16)
            add(scalar_path("mean_gain", layer), g.mean(dim=dims), np.float32)
            add(scalar_path("boosted", layer), (g > 0).float().mean(dim=dims), np.float32)
        add("q_avg", t.q_avg, np.float32)
        add("logits_pass1", t.logits_pass1, np.float32)
        add("logits_pass2", t.logits_pass2, np.float32)
    return {k: np.concatenate(v) for k, v in parts.items()}


class _Writer:
    """The open arrays of one store, written one chunk at a time (``done`` last)."""

    def __init__(self, group: Any, attrs: Dict[str, Any]) -> None:
        self.group, self.attrs = group, attrs
        self.k = int(attrs["dataset"].get("labels_per_image", 1))
        self.arrays: Dict[str, Any] = {}

    def _array(self, name: str):
        if name not in self.arrays:
            self.arrays[name] = self.group[name]
        return self.arrays[name]

    def write(self, c: int, start: int, stop: int, rows: Dict[str, np.ndarray], labels: np.ndarray,
              index: np.ndarray) -> None:
        rows = dict(rows)
        labels = np.asarray(labels, dtype=np.int64)
        if self.k > 1:
            rows["labels"] = labels.reshape(-1, self.k)
            rows["label"] = np.full(stop - start, -1, dtype=np.int64)
        else:
            rows["label"] = labels.reshape(-1)
        rows["index"] = np.asarray(index, dtype=np.int64)
        for name, values in rows.items():
            self._array(name)[start:stop] = values
        self._array(DONE)[c] = 1


def _setup(store: Any, attrs: Dict[str, Any], cfg: MapsConfig, world: World):
    """Rank 0 creates or checks the store; every rank then opens it. Returns the open group."""
    verdict = ""
    if world.main:
        try:
            prepare_store(store, attrs, cfg.overwrite, cfg.storage_options)
        except (ValueError, OSError) as e:  # every rank raises it (the others would wait for rank 0 forever)
            verdict = str(e)
            if not world.group or world.size == 1:
                raise
    verdict = share_verdict(world, verdict)
    if verdict:
        raise ValueError(verdict)
    if not world.main and not world.group:  # independent jobs: wait for rank 0's store
        def ready() -> bool:
            old = read_attrs(store, cfg.storage_options) or {}
            if old.get("fingerprint") not in (None, attrs["fingerprint"]) and not cfg.overwrite:
                raise ValueError(refusal_message(str(store), old, attrs))
            return old.get("fingerprint") == attrs["fingerprint"]

        wait_for(ready, f"rank 0 to create the map store {store}")
    return open_group(store, "r+", cfg.storage_options)


def _run_chunks(net, source: MapSource, group, attrs: Dict[str, Any], chunks: List[int], cfg: MapsConfig,
                world: World) -> None:
    from tqdm import tqdm

    writer = _Writer(group, attrs)
    batch = int(cfg.batch_size or default_batch(cfg.chunk, source.input_shape))
    ranges = list(chunk_ranges(attrs["n"], attrs["chunk"], chunks))
    desc = "maps" + (f" (rank 0 of {world.size})" if world.size > 1 else "")
    with tqdm(total=sum(b - a for a, b in ranges), desc=desc, unit="img", disable=not (cfg.progress and world.main),
              leave=False) as bar, temporarily_eval(net), torch.no_grad():
        for c, (start, stop) in zip(chunks, ranges):
            x, labels, index = source.batch(start, stop)
            writer.write(c, start, stop, trace_rows(net, x, batch), labels, index)
            bar.update(stop - start)


def _finish_store(group, world: World) -> None:
    """Mark the store complete once every chunk is written (rank 0 after the barrier; any independent job)."""
    barrier(world)
    if (world.main or not world.group) and bool(done_flags(group).all()):
        group.attrs.update({"complete": True})
    barrier(world)


def compute_maps(model: Any, source: Any, store: Any, config: Optional[MapsConfig] = None, **options: Any):
    """Compute every GAttA layer's gain map, the dense layers' gains, q_avg and both passes' logits of a data set
    into a zarr store, chunk by chunk; resumable, and shared by several processes.

    Args:
        model: a GAttA model: ``gv.load_model(...)`` (its checkpoint's sha256 is recorded) or a ``GAttANet``.
        source: a data set name (``"fashion-mnist"``, ``"fmnist-pairs"``...; the test split), a folder (with a
            loaded model), an ``ImageData``, or a :class:`~gatta_viz.store.sources.MapSource`
            (``dataset_source(name, split)``, ``folder_source(...)``).
        store: a local folder (``maps.zarr``) or a URL zarr opens through fsspec (``s3://bucket/maps.zarr``).
        config: a :class:`MapsConfig`; keyword options (``n=``, ``chunk=``, ``overwrite=``...) override its fields.
    Returns:
        The store, opened for reading (:class:`~gatta_viz.store.read.MapStore`).
    Raises:
        ValueError: a plain CNN; ``n`` larger than the source; a store made with another model, data set,
            preprocessing, n, chunk or layers (naming the field) without ``overwrite``; a file or foreign folder
            at ``store``.
    """
    from .read import open_maps

    cfg = (config or MapsConfig()).replace(**options) if options else (config or MapsConfig())
    net = _gatta_net(model)  # a plain CNN is refused before any data is read
    src = _as_source(model, source)
    n = len(src) if cfg.n is None else int(cfg.n)
    if n > len(src):
        raise ValueError(f"n={n} is more than the {len(src)} images of {src.describe()['name']}")
    attrs = store_attrs(model, src, n, cfg.chunk)
    world = resolve_world(cfg.rank, cfg.world_size)
    try:
        group = _setup(store, attrs, cfg, world)
        mine = my_chunks(range(attrs["n_chunks"]), world.rank, world.size)
        done = done_flags(group)
        _run_chunks(net, src, group, attrs, [c for c in mine if not done[c]], cfg, world)
        _finish_store(group, world)
    finally:
        finish(world)
    return open_maps(store, storage_options=cfg.storage_options)
