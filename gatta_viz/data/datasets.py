"""Datasets by name: the one place that maps a name to its loader, and batches of any of them.

``load_dataset`` picks Fashion-MNIST or CIFAR (held in memory, :mod:`.in_memory`), the two-garment scenes
(:mod:`.scenes`), garments in clutter (:mod:`.clutter`) or an image folder streamed from disk
(:mod:`.folders`). The modules it dispatches to import only :mod:`.in_memory`, never this one, so the
data package has no import cycle. The in-memory names are offered here too, for older imports.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Iterator, Optional, Tuple, Union

import torch

from .clutter import CLUTTER_DATASETS, load_clutter
from .folders import FolderData, load_image_folder_splits
from .in_memory import (FASHION_MNIST_CLASSES, FASHION_MNIST_DIRS, ImageData, augment_batch, load_cifar,
                        load_fashion_mnist, read_idx)
from .scenes import SCENE_DATASETS, load_scenes

__all__ = [
    "ImageData",
    "FolderData",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIRS",
    "DATASETS",
    "read_idx",
    "load_fashion_mnist",
    "load_cifar",
    "load_dataset",
    "augment_batch",
    "eval_batches",
    "input_shape",
    "AnyData",
]

_NAMED: Dict[str, Callable[[str, Optional[str]], object]] = {
    "fashion-mnist": lambda split, root: load_fashion_mnist(split, root),
    "cifar10": lambda split, root: load_cifar(split, 10, root),
    "cifar100": lambda split, root: load_cifar(split, 100, root),
}
_ALIASES = {"fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}
DATASETS = (*_NAMED, *SCENE_DATASETS, *CLUTTER_DATASETS)  # the names load_dataset knows (besides folders)

AnyData = Union[ImageData, FolderData]


def load_dataset(name: str, split: str = "train", root: Optional[str] = None, image_size: int = 64) -> AnyData:
    """A dataset by name, or an image folder.

    Args:
        name: ``fashion-mnist``, ``cifar10``, ``cifar100``, a scene set (``fmnist-pairs``,
            ``fmnist-pairs-multimnist``: a ``SceneData`` whose labels are (N, 2)), ``fmnist-clutter`` (a
            ``ClutterData``), or a directory (see :func:`gatta_viz.data.folders.find_layout`).
        split: ``"train"`` or ``"test"`` (for a folder: its validation split).
        root: directory holding a named dataset's files.
        image_size: a folder's model input side (its normalisation is estimated on training images).
    Returns:
        An :class:`ImageData` (in memory) or, for a directory, a :class:`FolderData` (streamed).
    Raises:
        ValueError: an unknown name, or a folder without a validation split asked for ``"test"``.
    """
    key = name.lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key in SCENE_DATASETS:
        return load_scenes(key, split, root)
    if key in CLUTTER_DATASETS:
        return load_clutter(key, split, root)
    if key in _NAMED:
        return _NAMED[key](split, root)
    if os.path.isdir(name):
        train, val, layout = load_image_folder_splits(name, image_size)
        if split == "train":
            return train
        if val is None:
            raise ValueError(f"{name} has no validation split ({layout.description})")
        return val
    raise ValueError(f"unknown dataset {name!r}: use {', '.join(DATASETS)} or an image folder "
                     "(ROOT/train/<class>/ and ROOT/val/<class>/, or ROOT/<class>/)")


def input_shape(data: AnyData) -> Tuple[int, int, int]:
    """(C, H, W) of one model input for ``data``."""
    if isinstance(data, FolderData):
        return data.input_shape
    c, h, w = data.images.shape[1:]
    return int(c), int(h), int(w)


def eval_batches(data: AnyData, batch_size: int = 500, workers: int = 0) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """``(uint8 images (B, C, H, W), labels)`` in dataset order, without augmentation; ``data.normalize``
    turns the images into model inputs. Image folders are decoded batch by batch (``workers`` processes).

    Raises:
        ValueError: a folder image that cannot be read (naming the file).
    """
    if isinstance(data, FolderData):
        yield from data.with_augment(False).batches(batch_size, workers=workers)
        return
    for i in range(0, len(data), batch_size):
        yield data.images[i : i + batch_size], data.labels[i : i + batch_size]
