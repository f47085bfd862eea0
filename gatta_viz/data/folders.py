"""Image folders streamed from disk: layout, validation split, transforms and normalisation.

Layouts (``ROOT`` is the folder given as ``--dataset``)::

    ROOT/train/<class>/*.jpg  and  ROOT/val/<class>/*.jpg   (or ROOT/test/<class>/)
    ROOT/<class>/*.jpg        a held-out fraction of each class (fixed seed) is the validation split
    ROOT/train/<class>/       alone: the same, held out of train/

``train``, ``val`` and ``test`` are never taken as class names. Images are decoded when a batch needs them
(in a ``DataLoader``'s worker processes), so memory does not grow with the number of images. Training
images get a random resized crop and a horizontal flip; evaluation images are resized (shorter side to
``size / 0.875``) and centre-cropped, exactly as :func:`gatta_viz.data.preprocess.prepare_image` does for
``gatta-viz explain`` and the app: the checkpoint's preprocessing record (:func:`preprocess_record`) says so.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .in_memory import ImageData
from .preprocess import IMAGE_EXTENSIONS, ImageError, load_image, resize_center_crop

__all__ = [
    "SPLIT_DIRS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CROP_SCALE",
    "RESIZE_RATIO",
    "FolderLayout",
    "FolderData",
    "find_layout",
    "preprocess_record",
    "estimate_normalization",
    "load_image_folder_splits",
    "load_folder_for_model",
]

SPLIT_DIRS = ("train", "val", "test")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # every torchvision ResNet weight
CROP_SCALE = (0.25, 1.0)  # our choice: RandomResizedCrop keeps at least a quarter of the image (torchvision: 0.08)
RESIZE_RATIO = 0.875  # evaluation: shorter side to size / 0.875, then the centre crop (torchvision's 256 -> 224)
NORM_SAMPLE = 500  # training images that the normalisation is estimated on


@dataclass(frozen=True)
class FolderLayout:
    """Where the images of each split are.

    Attributes:
        root: the folder.
        kind: ``"train/val"``, ``"train/test"`` or ``"held-out"``.
        classes: class names (sorted folder names), index = label.
        train_paths, train_labels: training files and labels (numpy arrays, no Python object per file).
        val_paths, val_labels: validation files and labels (empty when there is no validation split).
        description: the layout in words, for logs and the checkpoint.
    """

    root: str
    kind: str
    classes: List[str]
    train_paths: np.ndarray
    train_labels: np.ndarray
    val_paths: np.ndarray
    val_labels: np.ndarray
    description: str


def _subdirs(directory: str) -> List[str]:
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def images_under(directory: str) -> List[str]:
    """Image files under ``directory`` (recursively, sorted; hidden files and folders skipped)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                   if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    return out


def _scan(directory: str, classes: Sequence[str], required: bool) -> Tuple[List[str], List[int]]:
    paths: List[str] = []
    labels: List[int] = []
    for name in _subdirs(directory):
        if name not in classes:
            raise ValueError(f"{os.path.join(directory, name)} is a class the training folder does not have "
                             f"(training classes: {list(classes)})")
        files = images_under(os.path.join(directory, name))
        if required and not files:
            raise ValueError(f"class folder {os.path.join(directory, name)} holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
        paths.extend(files)
        labels.extend([classes.index(name)] * len(files))
    return paths, labels


def _hold_out(labels: Sequence[int], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the held-out images: ``round(fraction * n)`` of each class (at least 1 and at most
    n - 1 when a class has 2 images or more), chosen with a generator seeded by ``seed`` and the class."""
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        mask[np.random.default_rng([seed, int(c)]).choice(idx, size=k, replace=False)] = True
    return mask


def find_layout(root: str, val_fraction: float = 0.1, seed: int = 0) -> FolderLayout:
    """Find the classes and the train/validation files of an image folder.

    Args:
        root: ``ROOT/train/<class>/`` with ``ROOT/val/`` or ``ROOT/test/``, or ``ROOT/<class>/`` alone.
        val_fraction: share of each class held out for validation when there is no ``val/`` or ``test/``
            folder; 0: no validation split.
        seed: seed of the held-out choice (the same seed always holds out the same files).
    Returns:
        A :class:`FolderLayout`.
    Raises:
        FileNotFoundError: no such folder.
        ValueError: no class folders or no images, a class folder without images, a validation class the
            training folder does not have, ``val/`` without ``train/``, or a fraction outside [0, 1).
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"the validation fraction must be in [0, 1), got {val_fraction}")
    subs = _subdirs(root)
    if "train" in subs:
        train_dir = os.path.join(root, "train")
        val_name = "val" if "val" in subs else "test" if "test" in subs else None
    elif "val" in subs or "test" in subs:
        raise ValueError(f"{root} has {'val' if 'val' in subs else 'test'}/ but no train/: put the training "
                         "images in train/<class>/ (or use class folders alone and a held-out fraction)")
    else:
        train_dir, val_name = root, None
    classes = _subdirs(train_dir)
    if not classes:
        raise ValueError(f"{train_dir} has no class sub-folders: use {train_dir}/<class>/<image files>")
    paths, labels = _scan(train_dir, classes, required=True)
    if val_name is not None:
        vpaths, vlabels = _scan(os.path.join(root, val_name), classes, required=False)
        if not vpaths:
            raise ValueError(f"{os.path.join(root, val_name)} holds no images in class folders")
        kind, desc = f"train/{val_name}", f"{train_dir} ({len(paths)} images) and {os.path.join(root, val_name)} ({len(vpaths)})"
        tp, tl = np.array(paths), np.array(labels, dtype=np.int64)
        vp, vl = np.array(vpaths), np.array(vlabels, dtype=np.int64)
    else:
        held = _hold_out(labels, val_fraction, seed) if val_fraction > 0 else np.zeros(len(labels), dtype=bool)
        allp, alll = np.array(paths), np.array(labels, dtype=np.int64)
        tp, tl, vp, vl = allp[~held], alll[~held], allp[held], alll[held]
        kind = "held-out"
        desc = (f"{train_dir}: {len(vp)} of {len(allp)} images held out for validation "
                f"({val_fraction:g} of each class, seed {seed})" if val_fraction > 0 else f"{train_dir}: no validation split")
    return FolderLayout(root, kind, classes, tp, tl, vp if len(vp) else np.array([], dtype=str), vl, desc)


def preprocess_record(size: int, mean: Sequence[float], std: Sequence[float], normalization: str,
                      channels: int = 3, crop_scale: Sequence[float] = CROP_SCALE, flip: bool = True) -> Dict[str, Any]:
    """The checkpoint's preprocessing for a folder-trained model (what explain and the app apply).

    Args:
        size: side of the square model input.
        mean, std: per-channel normalisation of [0, 1] pixels.
        normalization: where mean/std come from, in words.
        channels: 3 (RGB) or 1.
        crop_scale: RandomResizedCrop's scale range used in training.
        flip: whether training flipped images left-right.
    Returns:
        ``{"size", "channels", "mean", "std", "resize", "crop": "center", "normalization", "train_transform"}``;
        ``resize`` is the shorter side before the centre crop.
    """
    return {
        "size": [int(size), int(size)],
        "channels": int(channels),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "resize": int(round(size / RESIZE_RATIO)),
        "crop": "center",
        "normalization": normalization,
        "train_transform": f"RandomResizedCrop({int(size)}, scale=({crop_scale[0]:g}, {crop_scale[1]:g}))"
                           + (" + horizontal flip" if flip else ""),
    }


class FolderData(torch.utils.data.Dataset):
    """Images of one split, decoded on demand: item ``i`` is ``(uint8 (C, H, W), label, problem)`` where
    ``problem`` is "" or the reason the file could not be read (iterate with :meth:`batches`, which turns it
    into a clear error).

    Attributes:
        paths, labels_np: files and labels (numpy arrays).
        classes: class names, index = label.
        preprocess: the preprocessing record (:func:`preprocess_record`).
        augment: random resized crop + flip (training) or resize + centre crop (evaluation).
        name: dataset name, for reports.
        flip: with ``augment``, flip half of the images left-right.
    """

    normalize = ImageData.normalize  # uint8 (B, C, H, W) -> [0, 1] -> (x - mean) / std

    def __init__(self, paths: np.ndarray, labels: np.ndarray, classes: Sequence[str], preprocess: Dict[str, Any],
                 augment: bool = False, name: str = "", flip: bool = True) -> None:
        self.paths = np.asarray(paths)
        self.labels_np = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.preprocess = dict(preprocess)
        self.augment = bool(augment)
        self.name = name
        self.flip = bool(flip)
        self._crop = None

    @property
    def mean(self) -> Tuple[float, ...]:
        return tuple(self.preprocess["mean"])

    @property
    def std(self) -> Tuple[float, ...]:
        return tuple(self.preprocess["std"])

    @property
    def labels(self) -> torch.Tensor:
        """int64 (N,) labels."""
        return torch.from_numpy(self.labels_np)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """(C, H, W) of a model input."""
        h, w = self.preprocess["size"]
        return int(self.preprocess["channels"]), int(h), int(w)

    def __len__(self) -> int:
        return int(len(self.paths))

    def _random_crop(self):
        """RandomResizedCrop + flip, made once (in the main process, before workers fork: torchvision loads once)."""
        if self._crop is None:
            from torchvision import transforms as T

            size = tuple(int(s) for s in self.preprocess["size"])
            steps = [T.RandomResizedCrop(size, scale=CROP_SCALE)] + ([T.RandomHorizontalFlip()] if self.flip else [])
            self._crop = T.Compose(steps)
        return self._crop

    def _transform(self, img: Image.Image) -> Image.Image:
        return self._random_crop()(img) if self.augment else resize_center_crop(img, self.preprocess)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int, str]:
        path = str(self.paths[i])
        c, h, w = self.input_shape
        try:
            img = load_image(path)
        except ImageError as e:
            return torch.zeros(c, h, w, dtype=torch.uint8), -1, f"cannot use image {path}: {e.problem}"
        img = self._transform(img.convert("L" if c == 1 else "RGB"))
        arr = np.asarray(img, dtype=np.uint8)
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous(), int(self.labels_np[i]), ""

    def with_augment(self, augment: bool, flip: Optional[bool] = None) -> "FolderData":
        """The same images with training (True) or evaluation (False) transforms (``flip``: None keeps this one's)."""
        return FolderData(self.paths, self.labels_np, self.classes, self.preprocess, augment, self.name,
                          self.flip if flip is None else flip)

    def subset(self, n: Optional[int] = None, indices: Optional[Sequence[int]] = None, seed: int = 0) -> "FolderData":
        """``n`` images chosen at random with a fixed seed (kept in folder order), or those at ``indices``."""
        if indices is None:
            k = min(int(n), len(self))
            indices = np.sort(np.random.default_rng(seed).choice(len(self), size=k, replace=False))
        idx = np.asarray(list(indices), dtype=np.int64)
        return FolderData(self.paths[idx], self.labels_np[idx], self.classes, self.preprocess, self.augment, self.name,
                          self.flip)

    def loader(self, batch_size: int, shuffle: bool = False, workers: int = 0, seed: int = 0, epoch: int = 0,
               world: int = 1, rank: int = 0) -> torch.utils.data.DataLoader:
        """A ``DataLoader`` over this split.

        Args:
            batch_size: images per batch (per process).
            shuffle: a new order each epoch (seeded by ``seed`` and ``epoch``).
            workers: decoding worker processes (0: in this process).
            seed, epoch: the shuffle's seed.
            world, rank: with ``world > 1`` a ``DistributedSampler`` gives every process an equal share
                (the remainder is dropped, so the processes step in lockstep).
        Returns:
            A loader whose batches are ``(uint8 (B, C, H, W), labels (B,), problems)``; see :meth:`batches`.
        """
        if self.augment:
            self._random_crop()
        if world > 1:
            sampler = torch.utils.data.DistributedSampler(self, num_replicas=world, rank=rank, shuffle=shuffle,
                                                          seed=seed, drop_last=True)
            sampler.set_epoch(epoch)
        elif shuffle:
            sampler = torch.utils.data.RandomSampler(self, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        else:
            sampler = torch.utils.data.SequentialSampler(self)
        return torch.utils.data.DataLoader(self, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                           persistent_workers=False, pin_memory=False,
                                           generator=torch.Generator().manual_seed(seed * 1000 + epoch + 1))

    def batches(self, batch_size: int, **loader_kwargs) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """``(uint8 images (B, C, H, W), labels (B,))`` batches from :meth:`loader`.

        Raises:
            ValueError: naming the first file that could not be read.
        """
        for images, labels, problems in self.loader(batch_size, **loader_kwargs):
            bad = [p for p in problems if p]
            if bad:
                raise ValueError(bad[0])
            yield images, labels


def estimate_normalization(data: FolderData, n: int = NORM_SAMPLE, seed: int = 0, workers: int = 0
                           ) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and std of [0, 1] pixels over ``n`` training images (fixed seed), after the evaluation
    transform (resize + centre crop), accumulated batch by batch.

    Returns:
        (mean, std), std at least 1e-3.
    """
    sample = data.with_augment(False).subset(min(n, len(data)), seed=seed)
    total = total_sq = count = 0.0
    for images, _ in sample.batches(64, workers=workers):
        x = images.double() / 255.0
        total = total + x.sum(dim=(0, 2, 3))
        total_sq = total_sq + (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    return tuple(float(m) for m in mean), tuple(max(float(s), 1e-3) for s in std)


Normalization = Union[str, Tuple[Sequence[float], Sequence[float]]]


def load_image_folder_splits(root: str, image_size: int = 64, val_fraction: float = 0.1, seed: int = 0,
                             normalization: Normalization = "sample", channels: int = 3, workers: int = 0,
                             flip: bool = True) -> Tuple[FolderData, Optional[FolderData], FolderLayout]:
    """The training and validation splits of an image folder, streamed from disk.

    Args:
        root: the folder (see :func:`find_layout` for the layouts).
        image_size: side of the square model input.
        val_fraction, seed: the held-out split when the folder has no ``val/`` or ``test/``.
        normalization: ``"sample"``: mean/std estimated on 500 training images; ``"imagenet"``: the
            torchvision ImageNet weights' mean/std (use it when starting from pretrained weights);
            or an explicit ``(mean, std)`` pair.
        channels: 3 (RGB, default) or 1 (greyscale).
        workers: decoding processes for the normalisation estimate.
        flip: training images are flipped left-right at random (with the random resized crop).
    Returns:
        (train with training transforms, validation with evaluation transforms or None, the layout).
        Both carry the same ``preprocess`` record.
    Raises:
        FileNotFoundError, ValueError: see :func:`find_layout`; a bad size, channel count or normalisation.
    """
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"the image size must be an integer of at least 8 pixels, got {image_size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    layout = find_layout(root, val_fraction, seed)
    name = os.path.basename(os.path.normpath(root))
    draft = preprocess_record(image_size, [0.0] * channels, [1.0] * channels, "", channels)
    train = FolderData(layout.train_paths, layout.train_labels, layout.classes, draft, True, name)
    if isinstance(normalization, str) and normalization == "sample":
        k = min(NORM_SAMPLE, len(train))
        mean, std = estimate_normalization(train, k, seed, workers)
        how = f"estimated on {k} training images (seed {seed})"
    elif isinstance(normalization, str) and normalization == "imagenet":
        if channels != 3:
            raise ValueError("the ImageNet normalisation is for RGB (channels=3)")
        mean, std, how = IMAGENET_MEAN, IMAGENET_STD, "ImageNet mean/std (the pretrained weights')"
    elif isinstance(normalization, (tuple, list)) and len(normalization) == 2:
        mean, std = (tuple(float(v) for v in normalization[0]), tuple(float(v) for v in normalization[1]))
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ValueError(f"mean and std need {channels} values each and std > 0, got {mean}, {std}")
        how = "given"
    else:
        raise ValueError(f"normalization must be 'sample', 'imagenet' or (mean, std), got {normalization!r}")
    record = preprocess_record(image_size, mean, std, how, channels, flip=flip)
    train = FolderData(layout.train_paths, layout.train_labels, layout.classes, record, True, name, flip)
    val = (FolderData(layout.val_paths, layout.val_labels, layout.classes, record, False, name)
           if len(layout.val_paths) else None)
    return train, val, layout


def load_folder_for_model(root: str, preprocess: Dict[str, Any], classes: Sequence[str], split: str = "auto",
                          val_fraction: float = 0.1, seed: int = 0) -> FolderData:
    """Images of a folder prepared as a checkpoint's preprocessing says, labelled with its classes
    (for ``gatta-viz evaluate`` and other tools that take a model's own folder).

    Args:
        root: a training layout (``ROOT/train/`` + ``ROOT/val/``), or class folders alone.
        preprocess: the checkpoint's record (``LoadedModel.preprocess``).
        classes: the checkpoint's classes; every class folder must be one of them.
        split: ``"auto"``: the validation split of a train/val layout, else every image of the class folders
            (a folder of held-out images given directly); ``"val"``: the validation split of any layout
            (held out with ``val_fraction`` and ``seed``, as the training run did); ``"train"``: the training
            split; ``"all"``: every image under the class folders of ``root``.
    Returns:
        A :class:`FolderData` with evaluation transforms (no augmentation).
    Raises:
        FileNotFoundError, ValueError: no folder, no images, or a class the model does not know.
    """
    if split not in ("auto", "val", "train", "all"):
        raise ValueError(f"split must be 'auto', 'val', 'train' or 'all', got {split!r}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    classes = list(classes)
    name = os.path.basename(os.path.normpath(root))
    has_split_dirs = any(s in _subdirs(root) for s in SPLIT_DIRS)
    if split == "all" or (split == "auto" and not has_split_dirs):
        unknown = [c for c in _subdirs(root) if c not in classes]
        if unknown:
            raise ValueError(f"{root}: class folder(s) {unknown} are not classes of the model ({classes})")
        paths, labels = _scan(root, classes, required=False)
        if not paths:
            raise ValueError(f"{root} holds no images in class folders")
        return FolderData(np.array(paths), np.array(labels, dtype=np.int64), classes, preprocess, False, name)
    layout = find_layout(root, val_fraction if split != "train" else 0.0, seed)
    unknown = [c for c in layout.classes if c not in classes]
    if unknown:
        raise ValueError(f"{root}: class folder(s) {unknown} are not classes of the model ({classes})")
    remap = np.array([classes.index(c) for c in layout.classes], dtype=np.int64)
    paths, labels = ((layout.train_paths, layout.train_labels) if split == "train"
                     else (layout.val_paths, layout.val_labels))
    if not len(paths):
        raise ValueError(f"{root} has no validation images ({layout.description})")
    return FolderData(paths, remap[labels], classes, preprocess, False, name)
