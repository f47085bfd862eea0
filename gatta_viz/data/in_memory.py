"""Datasets held in memory: Fashion-MNIST from Debian's package (offline) or torchvision, CIFAR-10/100.

Every loader returns an :class:`ImageData`: uint8 images (N, C, H, W) held in memory,
integer labels, class names and the normalisation that models trained on it use. Image folders are
streamed from disk instead (:mod:`gatta_viz.data.folders`); :func:`gatta_viz.data.datasets.load_dataset`
picks the loader by name.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "ImageData",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIRS",
    "read_idx",
    "load_fashion_mnist",
    "load_cifar",
    "augment_batch",
]

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_DIRS = ["/usr/share/datasets/fashion-mnist"]
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass
class ImageData:
    """Images in memory.

    Attributes:
        images: uint8 tensor (N, C, H, W).
        labels: int64 tensor (N,).
        classes: class names, index = label.
        mean, std: per-channel normalisation for images scaled to [0, 1].
        name: dataset name, for reports.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: List[str]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    name: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: Optional[int] = None, indices: Optional[Sequence[int]] = None) -> "ImageData":
        """The first ``n`` images, or those at ``indices``."""
        idx = torch.as_tensor(list(indices)) if indices is not None else torch.arange(min(n, len(self)))
        return ImageData(self.images[idx], self.labels[idx], self.classes, self.mean, self.std, self.name)

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float, scaled to [0, 1] then normalised."""
        x = images_uint8.float() / 255.0
        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - m) / s

    def tensors(self, n: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images and labels (the first ``n`` if given)."""
        d = self if n is None else self.subset(n)
        return d.normalize(d.images), d.labels


def read_idx(path: str) -> np.ndarray:
    """Read an idx file (optionally gzipped), as used by (Fashion-)MNIST.

    Args:
        path: file path.
    Returns:
        The array (uint8 for images and labels).
    Raises:
        ValueError: the file is not a valid idx file.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an idx file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise ValueError(f"{path}: only unsigned-byte idx files are supported (type code {dtype_code:#x})")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but the file holds {body.size} values (truncated?)")
    return body.reshape(dims)


def _find_idx(directory: str, stem: str) -> Optional[str]:
    for name in (stem, stem + ".gz"):
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    return None


def load_fashion_mnist(split: str = "train", root: Optional[str] = None, download: bool = True) -> ImageData:
    """Fashion-MNIST, offline from Debian's ``dataset-fashion-mnist`` when installed.

    Args:
        split: ``"train"`` (60,000) or ``"test"`` (10,000).
        root: a directory with the idx files; default: Debian's
            /usr/share/datasets/fashion-mnist, then torchvision's download into
            ``~/.cache/gatta_viz``.
        download: allow torchvision's downloader as the last resort.
    Returns:
        ImageData with 1x28x28 images.
    Raises:
        FileNotFoundError: naming the package and paths tried.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    dirs = [root] if root else list(FASHION_MNIST_DIRS)
    for d in dirs:
        img, lab = _find_idx(d, f"{prefix}-images-idx3-ubyte"), _find_idx(d, f"{prefix}-labels-idx1-ubyte")
        if img and lab:
            images = torch.from_numpy(read_idx(img).copy()).unsqueeze(1)
            labels = torch.from_numpy(read_idx(lab).astype(np.int64))
            return ImageData(images, labels, list(FASHION_MNIST_CLASSES), FASHION_MNIST_MEAN, FASHION_MNIST_STD, "fashion-mnist")
    if download and root is None:
        cache = os.path.join(os.path.expanduser("~"), ".cache", "gatta_viz")
        try:
            from torchvision.datasets import FashionMNIST

            ds = FashionMNIST(cache, train=split == "train", download=True)
            return ImageData(ds.data.unsqueeze(1).clone(), ds.targets.clone().long(), list(FASHION_MNIST_CLASSES),
                             FASHION_MNIST_MEAN, FASHION_MNIST_STD, "fashion-mnist")
        except Exception as e:  # noqa: BLE001
            raise FileNotFoundError(
                f"Fashion-MNIST not found in {dirs} and torchvision could not download it ({e}). "
                "Install Debian's package: apt-get install dataset-fashion-mnist"
            ) from e
    raise FileNotFoundError(
        f"Fashion-MNIST idx files ({prefix}-images-idx3-ubyte[.gz]) not found in {dirs}. "
        "Install Debian's package: apt-get install dataset-fashion-mnist"
    )


def load_cifar(split: str = "train", classes: int = 10, root: Optional[str] = None, download: bool = True) -> ImageData:
    """CIFAR-10 or CIFAR-100 through torchvision (downloads; needs a network the first time).

    Args:
        split: ``"train"`` or ``"test"``.
        classes: 10 or 100.
        root: dataset directory (default ``~/.cache/gatta_viz``).
        download: let torchvision download it.
    Returns:
        ImageData with 3x32x32 images.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    if classes not in (10, 100):
        raise ValueError(f"CIFAR has 10 or 100 classes, got {classes}")
    root = root or os.path.join(os.path.expanduser("~"), ".cache", "gatta_viz")
    cls = CIFAR10 if classes == 10 else CIFAR100
    try:
        ds = cls(root, train=split == "train", download=download)
    except Exception as e:  # noqa: BLE001
        raise FileNotFoundError(f"CIFAR-{classes} not in {root} and could not be downloaded: {e}") from e
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageData(images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes), CIFAR_MEAN, CIFAR_STD, f"cifar{classes}")


def augment_batch(x: torch.Tensor, pad: int = 2, flip: bool = True, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random crop after replicate padding, and random horizontal flip, per image.

    Args:
        x: float images (B, C, H, W), already normalised.
        pad: pixels of replicate padding before the random crop back to (H, W).
        flip: flip each image left-right with probability 1/2.
        generator: torch RNG for reproducibility.
    Returns:
        Augmented images, same shape.
    """
    b, _, h, w = x.shape
    if pad > 0:
        xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
        rows = (oy.view(b, 1) + torch.arange(h).view(1, h))  # (B, H)
        cols = (ox.view(b, 1) + torch.arange(w).view(1, w))  # (B, W)
        bi = torch.arange(b).view(b, 1, 1)
        x = xp.permute(0, 2, 3, 1)[bi, rows.view(b, h, 1), cols.view(b, 1, w)].permute(0, 3, 1, 2)
    if flip:
        m = torch.rand(b, generator=generator) < 0.5
        x = torch.where(m.view(b, 1, 1, 1), x.flip(3), x)
    # Standard NCHW strides. With one channel the gather above leaves a channel stride of 1, which
    # `.contiguous()` accepts as it is (a size-1 dim's stride is ignored) but which makes the tensor look
    # channels-last too; torch 2.14's CPU convolution backward then crashes (segfault) at 48x48 and larger.
    return x.clone(memory_format=torch.contiguous_format)
