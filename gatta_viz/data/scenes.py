"""Scenes with two garments: where one global query goes when there is more than one thing to attend to.

Each scene places two Fashion-MNIST garments of different classes on a black canvas and composites them by
pixel-wise max (as MultiMNIST does). Every scene carries both labels, each item's box and visible-pixel mask,
and how much the two overlap, so maps can be scored against each item.

Presets:
    ``"random"``: a ``canvas`` x ``canvas`` black image (default 48), each garment's 28x28 tile at an
        independent uniform position, so overlap runs from none to heavy. Measured on 2,000 test scenes
        (overlap as defined below): at 48x48, 4% none, 12% below 0.1, 35% at 0.5 or more; at 40x40 the
        garments always touch (1% below 0.1, 64% at 0.5 or more); at 56x56, 18% none and 21% heavy.
    ``"multimnist"``: the MultiMNIST protocol of Sabour et al. 2017: 36x36, each tile shifted by up to 4 px
        in x and y from the centre (mean overlap 0.65 for garments).

Deterministic: the same source split, preset, ``n`` and ``seed`` give the same scenes. Train scenes come
from the train split and test scenes from the test split (``make_scenes(load_fashion_mnist("test"), ...)``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .in_memory import ImageData, load_fashion_mnist

__all__ = ["PRESETS", "SCENE_DATASETS", "SceneData", "Composite", "compose_items", "make_scenes", "make_singles",
           "load_scenes", "load_singles", "export_scenes"]

PRESETS = ("random", "multimnist")
ITEM_THRESHOLD = 16  # a pixel belongs to an item when its intensity (0-255) exceeds this
# dataset name -> preset; the train set draws 60,000 scenes from the train split (seed 0), the fixed test set
# 10,000 scenes from the test split (seed 1)
SCENE_DATASETS = {"fmnist-pairs": "random", "fmnist-pairs-multimnist": "multimnist"}
SPLIT_SIZES = {"train": (60_000, 0), "test": (10_000, 1)}
# mean and std of each named set's 60,000 train scenes (pixels in [0, 1]): both splits are normalised with these,
# as a model trained on the train scenes is (its checkpoint records the same numbers)
SCENE_NORMALIZATION = {
    "fmnist-pairs": ((0.16858592274872908,), (0.31068682401761655,)),
    "fmnist-pairs-multimnist": ((0.2716073288348261,), (0.3624024682534546,)),
}


@dataclass
class SceneData:
    """Two-item scenes in memory.

    Attributes:
        images: uint8 (N, 1, H, W) composites.
        labels: int64 (N, 2), the two items' classes (always different).
        boxes: int64 (N, 2, 4), each item's box (x0, y0, x1, y1), x1/y1 exclusive, of its pixels > threshold.
        masks: bool (N, 2, H, W), each item's visible pixels: above threshold and at least as bright as the
            other item there (the pixels of the composite that the item supplies).
        overlap: float (N,), shared pixels of the two items' supports over the smaller support (0 = apart,
            1 = the smaller item lies entirely on the bigger one).
        sources: int64 (N, 2), indices of the two garments in the source data.
        classes, mean, std, name: as :class:`ImageData` (mean/std of the scenes' own pixels).
    """

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor
    overlap: torch.Tensor
    sources: torch.Tensor
    classes: List[str]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    name: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    # the same as ImageData's: uint8 -> [0, 1] -> normalised with the scenes' own mean and std
    normalize = ImageData.normalize
    tensors = ImageData.tensors

    def subset(self, n: Optional[int] = None, indices: Optional[Sequence[int]] = None) -> "SceneData":
        """The first ``n`` scenes, or those at ``indices``."""
        idx = torch.as_tensor(list(indices)) if indices is not None else torch.arange(min(n, len(self)))
        return SceneData(self.images[idx], self.labels[idx], self.boxes[idx], self.masks[idx], self.overlap[idx],
                         self.sources[idx], self.classes, self.mean, self.std, self.name)

    def multi_hot(self) -> torch.Tensor:
        """(N, classes) float targets with a 1 for each item's class."""
        t = torch.zeros(len(self), len(self.classes))
        t.scatter_(1, self.labels, 1.0)
        return t


def _offsets(preset: str, canvas: int, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 2, 2) top-left (y, x) of each item's 28x28 tile."""
    if preset == "random":
        return rng.integers(0, canvas - 28 + 1, size=(n, 2, 2))
    centre = (canvas - 28) // 2
    return centre + rng.integers(-4, 5, size=(n, 2, 2))


def _place(tiles: np.ndarray, idx: np.ndarray, offsets: np.ndarray, canvas: int) -> np.ndarray:
    """(m, k, canvas, canvas) uint8: tile ``idx[i, k]`` at top-left ``offsets[i, k]`` (y, x), zeros elsewhere."""
    m, items = idx.shape
    layers = np.zeros((m, items, canvas, canvas), dtype=np.uint8)
    r = np.arange(28)
    for k in range(items):
        ys = offsets[:, k, 0, None] + r  # (m, 28)
        xs = offsets[:, k, 1, None] + r
        layers[np.arange(m)[:, None, None], k, ys[:, :, None], xs[:, None, :]] = tiles[idx[:, k]]
    return layers


def _boxes(support: np.ndarray) -> np.ndarray:
    """(m, k, 4) boxes (x0, y0, x1, y1), x1/y1 exclusive, of each item's True pixels; zeros for an empty item."""
    rows, cols = support.any(axis=3), support.any(axis=2)  # (m, 2, H), (m, 2, W)
    h, w = rows.shape[-1], cols.shape[-1]
    y0, x0 = rows.argmax(-1), cols.argmax(-1)
    y1, x1 = h - rows[..., ::-1].argmax(-1), w - cols[..., ::-1].argmax(-1)
    out = np.stack([x0, y0, x1, y1], -1)
    out[~rows.any(-1)] = 0
    return out


@dataclass
class Composite:
    """Items composited on one black canvas (see :func:`compose_items`).

    Attributes:
        image: uint8 (H, W), the pixel-wise max of the layers.
        layers: uint8 (k, H, W), each item alone at its place.
        boxes: int64 (k, 4), each item's box (x0, y0, x1, y1), x1/y1 exclusive, of its pixels > ITEM_THRESHOLD
            (zeros for an item without such pixels), as ``SceneData.boxes``.
        masks: bool (k, H, W), each item's visible pixels (above threshold and the brightest there), as
            ``SceneData.masks``.
    """

    image: np.ndarray
    layers: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray


def compose_items(tiles: Sequence[np.ndarray], positions: Sequence[Tuple[int, int]], canvas: Tuple[int, int],
                  noun: str = "item") -> Composite:
    """Place items (e.g. garments) on a black canvas and composite them by pixel-wise max, as the scenes of
    :func:`make_scenes` are composited: one scene, chosen item by item.

    Args:
        tiles: uint8 (h, w) items (each may have its own size).
        positions: each item's (x, y) top-left corner on the canvas.
        canvas: (H, W).
        noun: what messages call the items ("item 2 does not fit...", "garment 2...").
    Returns:
        A :class:`Composite`.
    Raises:
        ValueError: naming the item that is malformed or does not fit the canvas.
    """
    h0, w0 = (int(v) for v in canvas)
    if len(tiles) != len(positions) or not len(tiles):
        raise ValueError(f"{len(tiles)} {noun}s for {len(positions)} positions")
    layers = np.zeros((len(tiles), h0, w0), dtype=np.uint8)
    for k, (tile, pos) in enumerate(zip(tiles, positions)):
        tile = np.asarray(tile)
        if tile.ndim != 2 or tile.dtype != np.uint8:
            raise ValueError(f"{noun} {k + 1} must be uint8 (h, w) pixels, got {tile.dtype} {tile.shape}")
        th, tw = tile.shape
        try:
            x, y = (int(v) for v in pos)
        except (TypeError, ValueError):
            raise ValueError(f"{noun} {k + 1}: position must be (x, y) whole numbers, got {pos!r}") from None
        if not (0 <= x <= w0 - tw and 0 <= y <= h0 - th):
            raise ValueError(f"{noun} {k + 1} ({tw}x{th}) at x={x}, y={y} does not fit the {w0}x{h0} canvas: x must be "
                             f"in 0..{w0 - tw} and y in 0..{h0 - th}")
        layers[k, y : y + th, x : x + tw] = tile
    image = layers.max(axis=0)
    support = layers > ITEM_THRESHOLD
    return Composite(image, layers, _boxes(support[None])[0], support & (layers >= image))


def make_scenes(
    source: ImageData, n: int, preset: str = "random", canvas: Optional[int] = None, seed: int = 0,
    name: Optional[str] = None,
) -> SceneData:
    """Compose ``n`` two-garment scenes from ``source`` (28x28 greyscale images).

    Args:
        source: the split to draw garments from (train scenes from the train split, test from test).
        n: number of scenes.
        preset: ``"random"`` or ``"multimnist"`` (see the module docstring).
        canvas: canvas size; default 48 for ``"random"``, 36 for ``"multimnist"`` (which requires 36).
        seed: seeds the choice of garments and positions.
        name: dataset name for reports (default ``"fmnist-pairs-<preset>"``).
    Returns:
        A :class:`SceneData`.
    Raises:
        ValueError: unknown preset, canvas smaller than 28 (or not 36 for multimnist), n < 1, source images
            not (N, 1, 28, 28), or fewer than two classes in the source.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown scene preset {preset!r}; presets: {PRESETS}")
    canvas = canvas if canvas is not None else (48 if preset == "random" else 36)
    if preset == "multimnist" and canvas != 36:
        raise ValueError(f"the multimnist preset is defined on a 36x36 canvas, got {canvas}")
    if canvas < 28:
        raise ValueError(f"canvas must be at least 28 pixels to hold a garment, got {canvas}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if tuple(source.images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"source images must be (N, 1, 28, 28) greyscale, got {tuple(source.images.shape)}")
    labels_src = source.labels.numpy()
    if len(np.unique(labels_src)) < 2:
        raise ValueError("the source needs garments of at least two classes")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(source), size=n)
    second = rng.integers(0, len(source), size=n)
    same = labels_src[first] == labels_src[second]
    while same.any():  # redraw until the classes differ (deterministic given the seed)
        second[same] = rng.integers(0, len(source), size=int(same.sum()))
        same = labels_src[first] == labels_src[second]
    offsets = _offsets(preset, canvas, rng, n)
    tiles = source.images[:, 0].numpy()
    images = np.zeros((n, canvas, canvas), dtype=np.uint8)
    masks = np.zeros((n, 2, canvas, canvas), dtype=bool)
    overlap = np.zeros(n, dtype=np.float64)
    boxes = np.zeros((n, 2, 4), dtype=np.int64)
    for lo in range(0, n, 4096):  # in chunks: the per-item layers of 60,000 scenes would take gigabytes
        sl = slice(lo, min(n, lo + 4096))
        layers = _place(tiles, np.stack([first[sl], second[sl]], 1), offsets[sl], canvas)
        images[sl] = layers.max(axis=1)
        support = layers > ITEM_THRESHOLD
        masks[sl] = support & (layers >= layers[:, ::-1])
        inter = (support[:, 0] & support[:, 1]).sum(axis=(1, 2))
        sizes = support.sum(axis=(2, 3))
        smaller = sizes.min(axis=1)
        overlap[sl] = np.where(smaller > 0, inter / np.maximum(smaller, 1), 0.0)
        boxes[sl] = _boxes(support)
    counts = np.bincount(images.ravel(), minlength=256).astype(np.float64)  # exact moments without a float copy
    values = np.arange(256) / 255.0
    mean = float((counts * values).sum() / counts.sum())
    std = float(np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum()))
    return SceneData(
        images=torch.from_numpy(images[:, None].copy()),
        labels=torch.from_numpy(np.stack([labels_src[first], labels_src[second]], 1).astype(np.int64)),
        boxes=torch.from_numpy(boxes),
        masks=torch.from_numpy(masks),
        overlap=torch.from_numpy(overlap.astype(np.float32)),
        sources=torch.from_numpy(np.stack([first, second], 1).astype(np.int64)),
        classes=list(source.classes),
        mean=(mean,),
        std=(std,),
        name=name or f"fmnist-pairs-{preset}",
    )


def make_singles(source: ImageData, preset: str = "random", canvas: Optional[int] = None, seed: int = 2,
                 name: Optional[str] = None) -> ImageData:
    """Every garment of ``source`` alone on a scene canvas, placed as a scene would place it.

    These are the images "holding one class alone" that the default top-down cue of a scene model averages
    over (:func:`gatta_viz.training.cues.class_queries`): same canvas, same placement rule, one item.

    Args:
        source: 28x28 greyscale garments (normally the train split).
        preset, canvas: as :func:`make_scenes`.
        seed: seeds the positions.
        name: dataset name for reports (default ``"<preset>-singles"``).
    Returns:
        An :class:`ImageData` with one label per image, normalised like the scenes of that preset would be
        (pass the scenes' mean/std yourself when it matters: ``data.mean, data.std = scenes.mean, scenes.std``).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown scene preset {preset!r}; presets: {PRESETS}")
    canvas = canvas if canvas is not None else (48 if preset == "random" else 36)
    if tuple(source.images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"source images must be (N, 1, 28, 28) greyscale, got {tuple(source.images.shape)}")
    rng = np.random.default_rng(seed)
    n = len(source)
    offsets = _offsets(preset, canvas, rng, n)[:, :1]  # (n, 1, 2): one item per image
    tiles = source.images[:, 0].numpy()
    images = np.zeros((n, 1, canvas, canvas), dtype=np.uint8)
    for lo in range(0, n, 4096):
        sl = slice(lo, min(n, lo + 4096))
        images[sl] = _place(tiles, np.arange(sl.start, sl.stop)[:, None], offsets[sl], canvas)
    return ImageData(torch.from_numpy(images), source.labels.clone(), list(source.classes), source.mean, source.std,
                     name or f"{preset}-singles")


def load_singles(name: str, split: str = "train", root: Optional[str] = None,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> ImageData:
    """Every garment of a Fashion-MNIST split alone on the canvas of scene set ``name``.

    Args:
        name: a scene data set name (``SCENE_DATASETS``).
        split: ``"train"`` (default; what class queries average over) or ``"test"``.
        root: where the Fashion-MNIST files are.
        mean, std: normalisation to attach (a scene model's own, from its checkpoint); default: the train
            scenes' (``SCENE_NORMALIZATION``), which is what a model trained on ``name`` uses.
    Returns:
        An :class:`ImageData` of 60,000 (train) or 10,000 (test) single-garment images.
    """

    if name not in SCENE_DATASETS:
        raise ValueError(f"unknown scene data set {name!r}; known: {sorted(SCENE_DATASETS)}")
    singles = make_singles(load_fashion_mnist(split, root), SCENE_DATASETS[name], name=f"{name}-singles")
    if mean is None or std is None:
        mean, std = SCENE_NORMALIZATION[name]
    singles.mean, singles.std = tuple(mean), tuple(std)
    return singles


def load_scenes(name: str, split: str = "train", root: Optional[str] = None) -> SceneData:
    """A named scene data set (see ``SCENE_DATASETS``): 60,000 train scenes or the fixed 10,000 test scenes,
    both normalised with the train scenes' mean and std (``SCENE_NORMALIZATION``).

    Args:
        name: ``"fmnist-pairs"`` (random placement, 48x48) or ``"fmnist-pairs-multimnist"`` (36x36).
        split: ``"train"`` or ``"test"``; scenes are drawn from the same split of Fashion-MNIST.
        root: where the Fashion-MNIST files are (default: Debian's package, then torchvision's download).
    Returns:
        A :class:`SceneData`.
    """

    if name not in SCENE_DATASETS:
        raise ValueError(f"unknown scene data set {name!r}; known: {sorted(SCENE_DATASETS)}")
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    n, seed = SPLIT_SIZES[split]
    scenes = make_scenes(load_fashion_mnist(split, root), n, SCENE_DATASETS[name], seed=seed, name=name)
    scenes.mean, scenes.std = SCENE_NORMALIZATION[name]
    return scenes


def export_scenes(scenes: SceneData, out_dir: str, limit: Optional[int] = None) -> str:
    """Write scenes as PNG files plus one JSON index (labels, class names, boxes, overlap, mask files).

    Args:
        scenes: what to write.
        out_dir: destination folder (created).
        limit: write only the first ``limit`` scenes.
    Returns:
        The path of ``index.json``.
    """
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    count = len(scenes) if limit is None else min(limit, len(scenes))
    records: List[Dict[str, object]] = []
    for i in range(count):
        stem = f"scene_{i:05d}"
        Image.fromarray(scenes.images[i, 0].numpy()).save(os.path.join(out_dir, f"{stem}.png"))
        items = []
        for k in range(2):
            mask_file = f"{stem}_item{k}_mask.png"
            Image.fromarray(scenes.masks[i, k].numpy().astype(np.uint8) * 255).save(os.path.join(out_dir, mask_file))
            c = int(scenes.labels[i, k])
            items.append({"label": c, "class": scenes.classes[c], "box_xyxy": [int(v) for v in scenes.boxes[i, k]],
                          "mask": mask_file, "source_index": int(scenes.sources[i, k])})
        records.append({"image": f"{stem}.png", "items": items, "overlap": round(float(scenes.overlap[i]), 4)})
    path = os.path.join(out_dir, "index.json")
    with open(path, "w") as f:
        json.dump({"name": scenes.name, "classes": scenes.classes, "mean": scenes.mean, "std": scenes.std,
                   "scenes": records}, f, indent=1)
    return path
