"""Turning image files into model inputs: safe decoding, then the model's own resize/greyscale/normalise.

Every failure raises :class:`ImageError`, whose message names the file and the problem in words,
so the app and the CLI can report it and go on with the other files.

One set of limits serves the app and the CLI (:func:`image_limits`, in :mod:`gatta_viz.data.limits`): a file
size limit, a pixel limit and a decoding-memory limit, each configurable by an environment variable or per
call. Decoding stays
within a memory budget: the decoded size is checked from the header before any pixel is read, JPEGs are
decoded at a reduced scale when they are large, and a large image is converted to 8 bits and shrunk
band by band, so no full-size copy beyond the decoded pixels themselves is ever made.
"""
from __future__ import annotations

import importlib
import io
import os
import re
import stat
import struct
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .limits import (ENV_MAX_DECODED_MB, ENV_MAX_PIXELS, ENV_MAX_UPLOAD_MB, MAX_BYTES, MAX_DECODED_BYTES,
                     MAX_PIXELS, MAX_SIDE, ImageLimits, image_limits)
from .limits import format_mb as _mb
from .pixels import TRANSPOSE, decoding_cost, exif_orientation, to_8bit

if TYPE_CHECKING:  # torch is imported where a tensor is made, so the limits load without it
    import torch

__all__ = [  # the limits are defined in .limits and offered here too
    "ImageError", "ImageLimits", "image_limits", "MAX_PIXELS", "MAX_BYTES", "MAX_DECODED_BYTES", "MAX_SIDE",
    "ENV_MAX_UPLOAD_MB", "ENV_MAX_PIXELS", "ENV_MAX_DECODED_MB", "IMAGE_EXTENSIONS", "FORMATS", "PreparedImage",
    "decoding_cost", "load_image", "prepare_image", "to_model_input", "resize_center_crop",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# the only decoders ever run on a file (Pillow knows many more, some of which call external programs)
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
_FORMAT_NAMES = "PNG, JPEG, WebP, BMP, TIFF, GIF"
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_WARNINGS_LOCK = threading.Lock()


class ImageError(ValueError):
    """An image that cannot be used; ``str(e)`` names the file and the problem."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name, self.problem = name, problem


Source = Union[str, os.PathLike, bytes, BinaryIO]


def _os_reason(e: OSError) -> str:
    """An OSError in words ("permission denied", "is a directory"...)."""
    text = e.strerror or str(e) or type(e).__name__
    return text[:1].lower() + text[1:]


def _read_bytes(source: Source, name: str, max_bytes: int) -> bytes:
    """The file's bytes, refusing more than ``max_bytes``; every I/O error becomes an ImageError."""
    over = f"over the {_mb(max_bytes)} limit"
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        elif isinstance(source, (str, os.PathLike)):
            # O_NONBLOCK: opening a FIFO must not hang; it is then refused as not a regular file
            fd = os.open(os.fspath(source), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if stat.S_ISDIR(st.st_mode):
                    raise ImageError(name, "is a directory, not an image file")
                if not stat.S_ISREG(st.st_mode):
                    raise ImageError(name, "is not a regular file")
                if st.st_size > max_bytes:
                    raise ImageError(name, f"file is {_mb(st.st_size)}, {over}")
                data = f.read(max_bytes + 1)
        else:
            data = source.read(max_bytes + 1)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(name, "file not found") from None
    except IsADirectoryError:
        raise ImageError(name, "is a directory, not an image file") from None
    except OSError as e:
        raise ImageError(name, f"cannot read the file: {_os_reason(e)}") from None
    if len(data) == 0:
        raise ImageError(name, "file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(name, f"file is {over}")
    return data


def _sniff(data: bytes) -> Optional[str]:
    """The format a file's first bytes announce, if one of ours."""
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


_PLUGINS = {"PNG": ("PngImagePlugin", "PngImageFile"), "JPEG": ("JpegImagePlugin", "JpegImageFile"),
            "GIF": ("GifImagePlugin", "GifImageFile"), "BMP": ("BmpImagePlugin", "BmpImageFile"),
            "TIFF": ("TiffImagePlugin", "TiffImageFile"), "WEBP": ("WebPImagePlugin", "WebPImageFile")}


def _why_unidentified(data: bytes) -> str:
    """Why Pillow could not open a file: the format's own complaint when the file says what it is."""
    fmt = _sniff(data)
    if fmt is None:
        return f"not a recognised image format ({_FORMAT_NAMES})"
    module, cls = _PLUGINS[fmt]
    reason = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            getattr(importlib.import_module(f"PIL.{module}"), cls)(io.BytesIO(data))
    except struct.error:
        reason = "the file ends inside its header"
    except Exception as e:  # noqa: BLE001 - the plugin's own words are what we want
        reason = str(e)
    prefix = f"broken {fmt.lower()} file"
    if reason.lower().startswith(prefix):
        reason = reason[len(prefix):].strip(" ()")
    if "unpack" in reason or "buffer" in reason:  # struct errors: the header stops short
        reason = "the file ends inside its header"
    if not reason or "not identified" in reason or reason.lower().startswith("not a "):
        reason = "its header is not valid"
    return f"broken {fmt} file: {reason}"


_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")


def load_image(
    source: Source,
    name: Optional[str] = None,
    max_pixels: Optional[int] = None,
    max_bytes: Optional[int] = None,
    max_decoded_bytes: Optional[int] = None,
    max_side: Optional[int] = MAX_SIDE,
) -> Image.Image:
    """Decode an image file safely into an 8-bit 'RGB' or 'L' PIL image.

    Handles PNG, JPEG, WebP, BMP, TIFF, GIF (first frame); RGB, RGBA and LA (composited on black),
    greyscale, palette, 16-bit, 32-bit and float (scaled to 8 bits by the type's range); applies EXIF
    orientation. No other decoder is ever run.

    Args:
        source: path, bytes or binary file object.
        name: name used in error messages (default: the path's file name, or "image").
        max_pixels: refuse images with more pixels (checked before decoding). None: :func:`image_limits`.
        max_bytes: refuse larger files. None: :func:`image_limits`.
        max_decoded_bytes: refuse images whose decoding needs more memory (:func:`decoding_cost`, checked
            before decoding). None: :func:`image_limits`.
        max_side: images whose longer side is larger are shrunk by an integer factor (box filter) while
            decoding (JPEGs at decode time), so the result's longer side is at most this; None keeps the
            full resolution (and costs a second full-size image).
    Returns:
        A fully loaded PIL image in mode 'RGB' or 'L'.
    Raises:
        ImageError: naming the file and the problem (I/O errors included: "permission denied"...).
    """
    name = name or (os.path.basename(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "image")
    limits = image_limits() if None in (max_pixels, max_bytes, max_decoded_bytes) else None
    max_pixels = limits.max_pixels if max_pixels is None else max_pixels
    max_bytes = limits.max_bytes if max_bytes is None else max_bytes
    max_decoded_bytes = limits.max_decoded_bytes if max_decoded_bytes is None else max_decoded_bytes
    data = _read_bytes(source, name, max_bytes)
    pixel_limit = f"over the {max_pixels:,}-pixel limit"
    try:
        # catch_warnings changes process-wide filters, so threads take turns (opening reads the header only)
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's bomb warning included: our own pixel check follows
            img = Image.open(io.BytesIO(data), formats=FORMATS)
        w, h = img.size
        if w * h > max_pixels:
            raise ImageError(name, f"image is {w}x{h} = {w * h:,} pixels, {pixel_limit}")
        if w == 0 or h == 0:
            raise ImageError(name, f"image has no pixels ({w}x{h})")
        if img.format in ("JPEG", "MPO") and max_side and max(w, h) > max_side:
            img.draft(None, (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale
        cost = decoding_cost(img, (w, h))
        if cost > max_decoded_bytes:
            raise ImageError(
                name, f"image is {w}x{h} {img.format} in mode {img.mode}: decoding it takes about {_mb(cost)}, "
                      f"over the {_mb(max_decoded_bytes)} decoding limit; save it smaller")
        img.load()
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            orientation = exif_orientation(img)  # after load: a PNG's EXIF may follow its pixels (getexif would load)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(name, _why_unidentified(data)) from None
    except Image.DecompressionBombError as e:
        found = _BOMB_SIZE.search(str(e))
        n = int(found.group(1)) if found else None
        if n is not None and n <= max_pixels:  # an operator's limit above Pillow's own guard
            raise ImageError(name, f"image is {n:,} pixels, over Pillow's decompression-bomb guard "
                                   f"({Image.MAX_IMAGE_PIXELS * 2:,} pixels)") from None
        raise ImageError(name, f"image is {pixel_limit}" + (f" ({n:,} pixels)" if n else "")) from None
    except MemoryError:
        raise ImageError(name, "not enough memory to decode this image") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        raise ImageError(name, f"image data is truncated or corrupt ({e})") from None
    try:
        img = to_8bit(img, max_side)
    except (OSError, ValueError) as e:
        raise ImageError(name, f"cannot convert this image ({e})") from None
    if orientation in TRANSPOSE:
        img = img.transpose(TRANSPOSE[orientation])
    if img.size != (w, h):  # shrunk while decoding: messages name the file's own size
        img.info["file_size"] = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
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


def to_model_input(pixels: np.ndarray, preprocess: Dict[str, Any]) -> "torch.Tensor":
    """[0, 1] float (H, W, C) -> normalised tensor (1, C, H, W) using the checkpoint's mean/std."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    mean = torch.tensor(preprocess["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(preprocess["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def resize_center_crop(img: Image.Image, preprocess: Dict[str, Any]) -> Image.Image:
    """The evaluation transform of folder-trained models (``"crop": "center"`` in their preprocessing): the
    shorter side resized to ``preprocess["resize"]`` (bilinear, as torchvision's ``Resize``), then the centre
    ``preprocess["size"]`` crop (torchvision's ``CenterCrop`` rounding). Training evaluates with this too.

    Args:
        img: a decoded image in the model's mode ('RGB' or 'L').
        preprocess: ``{"size": [H, W], "resize": S, ...}``.
    Returns:
        The (W, H) image the model sees.
    """
    h, w = (int(s) for s in preprocess["size"])
    short = int(preprocess.get("resize") or max(h, w))
    iw, ih = img.size
    if iw <= ih:
        nw, nh = short, max(1, int(short * ih / iw))
    else:
        nw, nh = max(1, int(short * iw / ih)), short
    if (nw, nh) != (iw, ih):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    if nw < w or nh < h:  # resize below the crop: pad with black, as CenterCrop does
        img = ImageOps.pad(img, (max(nw, w), max(nh, h)), color=0)
        nw, nh = img.size
    top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
    return img.crop((left, top, left + w, top + h))


def _border(img: Image.Image) -> np.ndarray:
    """The outermost rows and columns of an 8-bit image as [0, 1] floats (never the whole image)."""
    w, h = img.size
    strips = [img.crop(box) for box in ((0, 0, w, 1), (0, h - 1, w, h), (0, 0, 1, h), (w - 1, 0, w, h))]
    return np.concatenate([np.asarray(s, dtype=np.float32).ravel() for s in strips]) / 255.0


def _check_content(img: Image.Image, size: Tuple[int, int], name: str) -> None:
    """Refuse an image whose shorter side would shrink to 0 pixels once padded to the model's aspect ratio
    (Pillow would then pad an empty image: the model would see only the fill)."""
    (iw, ih), (h, w) = img.size, size
    side = ih / iw * w if iw / ih > w / h else iw / ih * h  # what ImageOps.contain rounds
    if round(side) < 1:
        iw, ih = img.info.get("file_size", img.size)
        raise ImageError(name, f"image is {iw}x{ih}: too thin for the model's {w}x{h} input (its short side would "
                               f"shrink to {side:.2g} pixels); crop it to a less extreme aspect ratio")


def prepare_image(img: Image.Image, preprocess: Dict[str, Any], invert: Union[str, bool] = "auto",
                  name: Optional[str] = None) -> PreparedImage:
    """Apply a model's preprocessing: pad to the model's aspect ratio, resize, set channels, normalise.

    Args:
        img: a decoded image (see :func:`load_image`).
        preprocess: ``{"size": [H, W], "channels": C, "mean": [...], "std": [...]}``, optionally
            ``"background": "dark"`` for datasets of light objects on black (Fashion-MNIST).
        invert: for dark-background models, ``"auto"`` inverts images whose border is
            bright (a photo on white becomes light-on-black like the training data);
            True/False force it.
        name: the file's name in error messages (default "image").
    Returns:
        A :class:`PreparedImage`.
    Raises:
        ImageError: an image so thin (1xN, Nx1, 2x3000...) that its content would vanish in the model's input.
    """
    h, w = (int(s) for s in preprocess["size"])
    _check_content(img, (h, w), name or "image")
    channels = int(preprocess["channels"])
    mode = "L" if channels == 1 else "RGB"
    work = img if img.mode == mode else img.convert(mode)
    border = _border(work)
    do_invert = False
    if preprocess.get("background") == "dark":
        do_invert = bool(invert) if invert != "auto" else bool(border.mean() > 0.5)
    if do_invert:
        work = ImageOps.invert(work)
        border = 1.0 - border
    fill = int(round(float(np.median(border)) * 255))
    fill_color = fill if mode == "L" else (fill, fill, fill)
    if preprocess.get("crop") == "center":  # folder-trained models: resize the shorter side, crop the centre
        work = resize_center_crop(work, preprocess)
    else:
        work = ImageOps.pad(work, (w, h), method=Image.Resampling.LANCZOS, color=fill_color)
    shown = np.asarray(work, dtype=np.float32) / 255.0
    if shown.ndim == 2:
        shown = shown[:, :, None]
    return PreparedImage(to_model_input(shown, preprocess), shown, img, do_invert)
