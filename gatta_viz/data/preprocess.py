"""Turning image files into model inputs: safe decoding, then the model's own resize/greyscale/normalise.

Every failure raises :class:`ImageError`, whose message names the file and the problem,
so the app and the CLI can report it and go on with the other files.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import Any, BinaryIO, Dict, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageError",
    "MAX_PIXELS",
    "MAX_BYTES",
    "IMAGE_EXTENSIONS",
    "PreparedImage",
    "load_image",
    "prepare_image",
    "to_model_input",
]

MAX_PIXELS = 40_000_000  # width * height; larger files are refused (decompression bombs)
MAX_BYTES = 25 * 1024 * 1024
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class ImageError(ValueError):
    """An image that cannot be used; ``str(e)`` names the file and the problem."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name, self.problem = name, problem


Source = Union[str, os.PathLike, bytes, BinaryIO]


def _read_bytes(source: Source, name: str, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ImageError(name, "file not found")
        size = os.path.getsize(path)
        if size > max_bytes:
            raise ImageError(name, f"file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit")
        with open(path, "rb") as f:
            data = f.read()
    else:
        data = source.read(max_bytes + 1)
    if len(data) == 0:
        raise ImageError(name, "file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(name, f"file is over the {max_bytes / 1e6:.0f} MB limit")
    return data


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale -> 8-bit 'L', scaling by the type's range."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            top = max(float(arr.max()), 1.0) if arr.max() > 1.0 else 1.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img


def load_image(
    source: Source,
    name: Optional[str] = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> Image.Image:
    """Decode an image file safely into an 8-bit 'RGB' or 'L' PIL image.

    Handles PNG, JPEG, WebP, BMP, TIFF, GIF (first frame); RGB, RGBA and LA
    (composited on black), greyscale, palette, 16-bit; applies EXIF orientation.

    Args:
        source: path, bytes or binary file object.
        name: name used in error messages (default: the path, or "image").
        max_pixels: refuse images with more pixels (checked before decoding).
        max_bytes: refuse larger files.
    Returns:
        A fully loaded PIL image in mode 'RGB' or 'L'.
    Raises:
        ImageError: naming the file and the problem.
    """
    name = name or (os.path.basename(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "image")
    data = _read_bytes(source, name, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(name, f"image is {w}x{h} = {w * h:,} pixels, over the {max_pixels:,}-pixel limit")
            if w == 0 or h == 0:
                raise ImageError(name, f"image has no pixels ({w}x{h})")
            img.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(name, "not a recognised image format (PNG, JPEG, WebP, BMP, TIFF, GIF)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(name, f"image is over the pixel limit (decompression bomb guard: {e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(name, f"image data is truncated or corrupt ({e})") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the image
        pass
    img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, rgba).convert("RGB")
    elif img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    return img


@dataclass
class PreparedImage:
    """An image made ready for a model.

    Attributes:
        tensor: normalised input (1, C, H, W).
        shown: the image the model saw (resized, greyscaled, maybe inverted), [0, 1] float (H, W, C).
        original: the decoded image before the model's preprocessing.
        inverted: whether the colours were inverted to match a dark-background domain.
    """

    tensor: torch.Tensor
    shown: np.ndarray
    original: Image.Image
    inverted: bool


def to_model_input(pixels: np.ndarray, preprocess: Dict[str, Any]) -> torch.Tensor:
    """[0, 1] float (H, W, C) -> normalised tensor (1, C, H, W) using the checkpoint's mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    mean = torch.tensor(preprocess["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(preprocess["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def prepare_image(img: Image.Image, preprocess: Dict[str, Any], invert: Union[str, bool] = "auto") -> PreparedImage:
    """Apply a model's preprocessing: pad to the model's aspect ratio, resize, set channels, normalise.

    Args:
        img: a decoded image (see :func:`load_image`).
        preprocess: ``{"size": [H, W], "channels": C, "mean": [...], "std": [...]}``, optionally
            ``"background": "dark"`` for datasets of light objects on black (Fashion-MNIST).
        invert: for dark-background models, ``"auto"`` inverts images whose border is
            bright (a photo on white becomes light-on-black like the training data);
            True/False force it.
    Returns:
        A :class:`PreparedImage`.
    """
    h, w = (int(s) for s in preprocess["size"])
    channels = int(preprocess["channels"])
    mode = "L" if channels == 1 else "RGB"
    work = img.convert(mode)
    arr = np.asarray(work, dtype=np.float32) / 255.0
    border = np.concatenate([arr[0].ravel(), arr[-1].ravel(), arr[:, 0].ravel(), arr[:, -1].ravel()])
    do_invert = False
    if preprocess.get("background") == "dark":
        do_invert = bool(invert) if invert != "auto" else bool(border.mean() > 0.5)
    if do_invert:
        work = ImageOps.invert(work)
        border = 1.0 - border
    fill = int(round(float(np.median(border)) * 255))
    fill_color = fill if mode == "L" else (fill, fill, fill)
    work = ImageOps.pad(work, (w, h), method=Image.Resampling.LANCZOS, color=fill_color)
    shown = np.asarray(work, dtype=np.float32) / 255.0
    if shown.ndim == 2:
        shown = shown[:, :, None]
    return PreparedImage(to_model_input(shown, preprocess), shown, img, do_invert)


def prepare_batch(paths: Sequence[str], preprocess: Dict[str, Any], invert: Union[str, bool] = "auto"):
    """Load and prepare several files. Returns (prepared list, errors list of ImageError), never raising for a bad file."""
    ok, errors = [], []
    for p in paths:
        try:
            ok.append((p, prepare_image(load_image(p), preprocess, invert)))
        except ImageError as e:
            errors.append(e)
    return ok, errors
