"""Image sources for a map store: the images of a data set in a fixed order, prepared for one model, read chunk by
chunk.

A source is an indexable sequence: ``len(source)`` rows, ``source.batch(start, stop)`` gives
``(normalised images (B, C, H, W) float32, labels (B,) or (B, k) int64, dataset indices (B,) int64)``. Three kinds:

- a named data set of :func:`gatta_viz.data.datasets.load_dataset` (Fashion-MNIST, the two-garment scenes, the
  clutter set, CIFAR): held in memory as uint8 and normalised a batch at a time with the data set's own mean/std
  (as training and ``gatta-viz evaluate`` do);
- an image folder (``ROOT/<class>/`` or ``ROOT/train|val/<class>/``) labelled with the model's classes, and
- a folder of image files (any layout, recursive, sorted; label -1).

Folder images are decoded when their chunk is read (never the whole folder at once) and prepared by
:func:`gatta_viz.data.preprocess.prepare_image`, the function ``gatta-viz explain`` and the app use, with the
checkpoint's own preprocessing record.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["MapSource", "DatasetSource", "FolderSource", "image_files", "dataset_source", "folder_source",
           "source_for_model", "source_from_attrs"]

Batch = Tuple[torch.Tensor, np.ndarray, np.ndarray]


class MapSource:
    """Base of the sources: ``len``, ``classes``, ``input_shape``, ``describe()``, ``preprocess()``, ``batch()``."""

    kind = "source"
    classes: List[str]
    labels_per_image = 1

    def __len__(self) -> int:  # pragma: no cover - every source defines it
        raise NotImplementedError

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """(C, H, W) of one prepared image."""
        raise NotImplementedError

    def describe(self) -> Dict[str, Any]:
        """The store's ``dataset`` attribute: name, split, n (images in the source), kind, folder, labels per image."""
        raise NotImplementedError

    def preprocess(self) -> Dict[str, Any]:
        """The store's ``preprocess`` attribute: how images become model inputs."""
        raise NotImplementedError

    def batch(self, start: int, stop: int) -> Batch:
        """Rows ``start:stop``: (float32 images (B, C, H, W), int64 labels (B,) or (B, k), int64 indices (B,))."""
        raise NotImplementedError

    def shown(self, i: int) -> np.ndarray:
        """Row ``i`` as the model saw it, [0, 1] float (H, W, C) (for display)."""
        raise NotImplementedError

    def _check_rows(self, start: int, stop: int) -> None:
        if not 0 <= start < stop <= len(self):
            raise ValueError(f"rows {start}:{stop} are outside this source's {len(self)} images")


class DatasetSource(MapSource):
    """A data set held in memory (``ImageData``, ``SceneData``, ``ClutterData``), normalised a batch at a time with
    ``mean``/``std`` (a checkpoint's own, when the source is made for a model; else the data set's)."""

    kind = "named"

    def __init__(self, data: Any, name: str, split: str, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None) -> None:
        self.data, self.name, self.split = data, str(name), str(split)
        self.classes = list(data.classes)
        labels = data.labels
        self.labels_per_image = 1 if labels.dim() == 1 else int(labels.shape[1])
        self.mean = tuple(float(m) for m in (data.mean if mean is None else mean))
        self.std = tuple(float(v) for v in (data.std if std is None else std))
        c = self.input_shape[0]
        if len(self.mean) != c or len(self.std) != c or min(self.std) <= 0:
            raise ValueError(f"mean and std need {c} values each (std > 0), got {self.mean} and {self.std}")

    def __len__(self) -> int:
        return len(self.data)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        c, h, w = self.data.images.shape[1:]
        return int(c), int(h), int(w)

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "split": self.split, "n": len(self), "kind": self.kind, "folder": None,
                "labels_per_image": self.labels_per_image}

    def preprocess(self) -> Dict[str, Any]:
        c, h, w = self.input_shape
        return {"function": "uint8 / 255, then (x - mean) / std", "size": [h, w], "channels": c,
                "mean": list(self.mean), "std": list(self.std)}

    def batch(self, start: int, stop: int) -> Batch:
        self._check_rows(start, stop)
        x = self.data.images[start:stop].float() / 255.0
        x = (x - torch.tensor(self.mean).view(1, -1, 1, 1)) / torch.tensor(self.std).view(1, -1, 1, 1)
        labels = self.data.labels[start:stop].numpy().astype(np.int64)
        return x, labels, np.arange(start, stop, dtype=np.int64)

    def shown(self, i: int) -> np.ndarray:
        return self.data.images[int(i)].permute(1, 2, 0).numpy().astype(np.float32) / 255.0


def image_files(root: str) -> List[str]:
    """Image files under ``root`` (recursive, sorted by path; hidden files and folders skipped)."""
    from ..data.folders import images_under

    return images_under(root)


class FolderSource(MapSource):
    """Image files decoded chunk by chunk and prepared with the checkpoint's preprocessing
    (:func:`gatta_viz.data.preprocess.prepare_image`)."""

    def __init__(self, root: str, paths: Sequence[str], labels: Sequence[int], classes: Sequence[str],
                 preprocess: Dict[str, Any], kind: str, split: Optional[str] = None, invert: str = "auto") -> None:
        self.root = os.path.abspath(root)
        self.paths = np.asarray(list(paths), dtype=str)
        self.labels_np = np.asarray(list(labels), dtype=np.int64)
        self.classes, self.model_preprocess = list(classes), dict(preprocess)
        self.kind, self.split, self.invert = kind, split, invert
        if not len(self.paths):
            raise ValueError(f"{root} holds no image files")

    def __len__(self) -> int:
        return int(len(self.paths))

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        h, w = (int(s) for s in self.model_preprocess["size"])
        return int(self.model_preprocess["channels"]), h, w

    def files_sha256(self) -> str:
        """sha256 of the files' paths (relative to the folder) and labels, in order: the folder's identity."""
        digest = hashlib.sha256()
        for p, label in zip(self.paths, self.labels_np):
            digest.update(f"{os.path.relpath(str(p), self.root)}\t{int(label)}\n".encode())
        return digest.hexdigest()

    def describe(self) -> Dict[str, Any]:
        return {"name": os.path.basename(self.root), "split": self.split, "n": len(self), "kind": self.kind,
                "folder": self.root, "files_sha256": self.files_sha256(), "labels_per_image": 1}

    def preprocess(self) -> Dict[str, Any]:
        return {"function": "gatta_viz.data.preprocess.prepare_image", "invert": self.invert,
                "record": dict(self.model_preprocess)}

    def _prepared(self, i: int):
        from ..data.preprocess import ImageError, load_image, prepare_image

        path = str(self.paths[i])
        try:
            return prepare_image(load_image(path), self.model_preprocess, self.invert, name=path)
        except ImageError as e:
            raise ValueError(f"cannot use image {path}: {e.problem}") from None

    def batch(self, start: int, stop: int) -> Batch:
        self._check_rows(start, stop)
        x = torch.cat([self._prepared(i).tensor for i in range(start, stop)])
        return x, self.labels_np[start:stop].copy(), np.arange(start, stop, dtype=np.int64)

    def shown(self, i: int) -> np.ndarray:
        return self._prepared(int(i)).shown


def dataset_source(name: str, split: str = "test", root: Optional[str] = None,
                   preprocess: Optional[Dict[str, Any]] = None) -> DatasetSource:
    """A named data set (see :data:`gatta_viz.data.datasets.DATASETS`) as a source.

    Args:
        name, split: the data set and its split (``"train"`` or ``"test"``).
        root: where its files are (default: the loader's own places).
        preprocess: a checkpoint's preprocessing record: its mean and std normalise the images (None: the data
            set's own, which is what a model trained on it records).

    Raises:
        ValueError: an unknown name or split.
    """
    from ..data.datasets import DATASETS, load_dataset

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    key = str(name).lower().replace("_", "-")
    if os.path.isdir(name) and key not in DATASETS:
        raise ValueError(f"{name} is a folder: give it as a folder source (--folder)")
    data = load_dataset(name, split, root)
    pre = preprocess or {}
    return DatasetSource(data, getattr(data, "name", "") or key, split, pre.get("mean"), pre.get("std"))


def _has_split_dirs(root: str) -> bool:
    return any(os.path.isdir(os.path.join(root, s)) for s in ("train", "val", "test"))


def folder_source(root: str, classes: Sequence[str], preprocess: Dict[str, Any], split: str = "test",
                  labels: str = "auto") -> FolderSource:
    """A folder as a source, prepared as ``preprocess`` says.

    Args:
        root: the folder.
        classes: the model's classes.
        preprocess: the checkpoint's preprocessing record.
        split: for a ``train/`` + ``val/`` (or ``test/``) layout: ``"test"`` reads the validation folder,
            ``"train"`` the training folder.
        labels: ``"auto"``: an image folder (labels from class folders) when every sub-folder of ``root`` is
            one of ``classes`` or ``root`` has ``train/``/``val/``/``test/``, else a folder of files;
            ``"folders"``: must be an image folder; ``"none"``: every image file under ``root``, label -1.
    Raises:
        FileNotFoundError: no such folder. ValueError: no images, or class folders the model does not know.
    """
    from ..data.folders import load_folder_for_model

    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    if labels not in ("auto", "folders", "none"):
        raise ValueError(f"labels must be 'auto', 'folders' or 'none', got {labels!r}")
    subs = [e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")]
    labelled = labels == "folders" or (labels == "auto" and subs and
                                       (_has_split_dirs(root) or all(s in classes for s in subs)))
    if not labelled:
        files = image_files(root)
        return FolderSource(root, files, [-1] * len(files), classes, preprocess, "files")
    which = ("val" if split == "test" else "train") if _has_split_dirs(root) else "all"
    data = load_folder_for_model(root, preprocess, classes, split=which)
    return FolderSource(root, data.paths, data.labels_np, classes, preprocess, "image-folder",
                        split if which != "all" else None)


def _check_fits(source: MapSource, preprocess: Dict[str, Any], model_name: str) -> None:
    size = preprocess.get("size") or [0, 0]
    want = (int(preprocess.get("channels", 1)), int(size[0]), int(size[1]))
    if tuple(source.input_shape) != want:
        c, h, w = source.input_shape
        raise ValueError(f"model {model_name} takes {want[1]}x{want[2]} images with {want[0]} channel(s) but "
                         f"{source.describe()['name']} has {h}x{w} images with {c} channel(s)")


def source_for_model(loaded: Any, dataset: Optional[str] = None, split: str = "test", folder: Optional[str] = None,
                     labels: str = "auto") -> MapSource:
    """The source a command line names, for a loaded model: ``folder`` if given, else ``dataset`` (a name, or a
    folder), else the data set the checkpoint records (Fashion-MNIST for older checkpoints).

    Raises:
        ValueError: both given, an unknown data set, or images of another size or channel count than the model's.
    """
    if folder is not None and dataset is not None:
        raise ValueError("give a data set or a folder, not both")
    name = dataset if dataset is not None else loaded.meta.get("dataset") or "fashion-mnist"
    if folder is None and isinstance(name, str) and os.path.isdir(name):
        folder = name
    if folder is not None:
        source: MapSource = folder_source(folder, loaded.classes, loaded.preprocess, split, labels)
    elif os.sep in str(name):
        raise ValueError(f"the data set {name} is a folder that does not exist here; give --dataset or --folder")
    else:
        source = dataset_source(name, split, preprocess=loaded.preprocess)
    _check_fits(source, loaded.preprocess, loaded.name)
    return source


def source_from_attrs(attrs: Dict[str, Any]) -> MapSource:
    """Re-open the source a store was written from (to show its images), from the store's attributes.

    Raises:
        ValueError: the store's images cannot be re-loaded here (a folder that is gone, or an unknown data set).
    """
    ds, pre = attrs.get("dataset") or {}, attrs.get("preprocess") or {}
    if ds.get("kind") == "named":
        return dataset_source(ds["name"], ds.get("split") or "test", preprocess=pre)
    folder = ds.get("folder")
    if not folder or not os.path.isdir(folder):
        raise ValueError(f"the store's images were read from {folder or 'an unknown source'}, which is not here")
    record = pre.get("record") or {}
    src = folder_source(folder, attrs.get("classes") or [], record, ds.get("split") or "test",
                        "none" if ds.get("kind") == "files" else "folders")
    if src.files_sha256() != ds.get("files_sha256"):
        raise ValueError(f"the folder {folder} no longer holds the files the store was written from")
    return src
