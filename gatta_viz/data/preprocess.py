"""Turning image files into model inputs: safe decoding, then the model's own resize/greyscale/normalise.

Every failure raises :class:`ImageError`, whose message names the file and the problem in words,
so the app and the CLI can report it and go on with the other files.

One set of limits serves the app and the CLI (:func:`image_limits`): a file size limit, a pixel limit and
a decoding-memory limit, each configurable by an environment variable or per call. Decoding stays
within a memory budget: the decoded size is checked from the header before any pixel is read, JPEGs are
decoded at a reduced scale when they are large, and a large image is converted to 8 bits and shrunk
band by band, so no full-size copy beyond the decoded pixels themselves is ever made.
"""
from __future__ import annotations

import importlib
import io
import math
import os
import re
import stat
import struct
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:  # torch is imported where a tensor is made, so the limits load without it
    import torch

__all__ = [
    "ImageError",
    "ImageLimits",
    "image_limits",
    "MAX_PIXELS",
    "MAX_BYTES",
    "MAX_DECODED_BYTES",
    "MAX_SIDE",
    "ENV_MAX_UPLOAD_MB",
    "ENV_MAX_PIXELS",
    "ENV_MAX_DECODED_MB",
    "IMAGE_EXTENSIONS",
    "FORMATS",
    "PreparedImage",
    "decoding_cost",
    "load_image",
    "prepare_image",
    "prepare_batch",
    "to_model_input",
]

MB = 1024 * 1024
MAX_BYTES = 25 * MB  # default file size limit (app uploads and CLI files alike)
MAX_PIXELS = 40_000_000  # default width * height limit; larger files are refused (decompression bombs)
MAX_DECODED_BYTES = 120 * MB  # default memory the decoded pixels may take (see decoding_cost)
MAX_SIDE = 1024  # images larger than this are shrunk while decoding: the models take a few hundred pixels at most
ENV_MAX_UPLOAD_MB = "GATTA_VIZ_MAX_UPLOAD_MB"
ENV_MAX_PIXELS = "GATTA_VIZ_MAX_PIXELS"
ENV_MAX_DECODED_MB = "GATTA_VIZ_MAX_DECODED_MB"
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
_BAND_BYTES = 1 * MB  # pixels (at 4 bytes each) per band when converting a large image


class ImageError(ValueError):
    """An image that cannot be used; ``str(e)`` names the file and the problem."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name, self.problem = name, problem


@dataclass(frozen=True)
class ImageLimits:
    """What an image file may cost.

    Attributes:
        max_bytes: file size limit.
        max_pixels: width x height limit (checked from the header, before decoding).
        max_decoded_bytes: memory the decoder may need for the pixels (see :func:`decoding_cost`).
    """

    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS
    max_decoded_bytes: int = MAX_DECODED_BYTES

    @property
    def max_mb(self) -> float:
        """The file size limit in MB (1 MB = 2**20 bytes)."""
        return self.max_bytes / MB

    def describe(self) -> str:
        """The limits in words, for a page or a help text."""
        return (f"files up to {_mb(self.max_bytes)}, images up to {self.max_pixels / 1e6:g} megapixels "
                f"and {_mb(self.max_decoded_bytes)} once decoded")


def _mb(n: float) -> str:
    return f"{n / MB:.3g} MB"


def _env_number(var: str, default: float) -> float:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"environment variable {var} must be a positive number, got {raw!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"environment variable {var} must be a positive number, got {raw!r}")
    return value


def image_limits() -> ImageLimits:
    """The limits in force: defaults, overridden by ``$GATTA_VIZ_MAX_UPLOAD_MB``, ``$GATTA_VIZ_MAX_PIXELS`` and
    ``$GATTA_VIZ_MAX_DECODED_MB`` (read at every call, so an operator's setting applies to app and CLI alike).

    Returns:
        An :class:`ImageLimits`.
    Raises:
        ValueError: a variable that is not a positive number.
    """
    return ImageLimits(
        max_bytes=int(round(_env_number(ENV_MAX_UPLOAD_MB, MAX_BYTES / MB) * MB)),
        max_pixels=int(_env_number(ENV_MAX_PIXELS, MAX_PIXELS)),
        max_decoded_bytes=int(round(_env_number(ENV_MAX_DECODED_MB, MAX_DECODED_BYTES / MB) * MB)),
    )


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


def _bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow stores per pixel of a mode (RGB is stored as 4)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16") or mode.startswith("BGR;1"):
        return 2
    return 4


def decoding_cost(img: Image.Image, full_size: Optional[Tuple[int, int]] = None) -> int:
    """Memory in bytes that decoding an opened (not yet loaded) image takes, from its header alone.

    Pillow's decoded pixels (1 byte per pixel for L/P, 2 for 16-bit greyscale, 4 for RGB, RGBA, LA, 32-bit
    and float), plus what a format's decoder holds besides: libwebp decodes the whole frame into its own
    buffer, which is copied twice before Pillow has it (16 bytes per pixel in all, measured), and a
    progressive JPEG keeps every DCT coefficient of the file (2 bytes each, at full size even when decoded
    at a reduced scale) until its last scan.

    Args:
        img: an image from ``Image.open``, after any ``draft``.
        full_size: the file's own size when ``draft`` reduced ``img.size``.
    Returns:
        Bytes.
    """
    w, h = img.size
    cost = w * h * _bytes_per_pixel(img.mode)
    if img.format == "WEBP":
        cost += 12 * w * h  # measured: 16 bytes per pixel in all
    if img.format in ("JPEG", "MPO") and img.info.get("progressive"):
        fw, fh = full_size or img.size
        layers = getattr(img, "layer", None) or [("", 1, 1, 0)] * 3
        hmax = max(int(lay[1]) for lay in layers)
        vmax = max(int(lay[2]) for lay in layers)
        cost += 2 * sum(math.ceil(fw * int(lay[1]) / hmax / 8) * 8 * math.ceil(fh * int(lay[2]) / vmax / 8) * 8
                        for lay in layers)
    return int(cost)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the image
        return 1


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _output_mode(mode: str) -> str:
    return "L" if mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;16") else "RGB"


def _scale_top(img: Image.Image) -> float:
    """What 16-bit, 32-bit and float values are divided by to make 0..1 (as the file's type suggests)."""
    if img.mode.startswith("I;16"):
        return 65535.0
    hi = 0.0
    for band in _bands(img, 1):
        arr = np.asarray(band)
        if arr.size:
            m = np.nanmax(np.where(np.isfinite(arr), arr, np.nan)) if img.mode == "F" else arr.max()
            if np.isfinite(m):
                hi = max(hi, float(m))
    if img.mode == "F":
        return hi if hi > 1.0 else 1.0
    return 65535.0 if hi > 255 else 255.0


def _bands(img: Image.Image, factor: int):
    """Horizontal bands of ``img`` (copies of about 1 MB each), each a multiple of ``factor`` rows tall but the last."""
    w, h = img.size
    rows = max(factor, (_BAND_BYTES // max(1, w * 4)) // factor * factor)
    for y0 in range(0, h, rows):
        yield img.crop((0, y0, w, min(h, y0 + rows)))


def _to_8bit(band: Image.Image, top: float) -> Image.Image:
    """One band in any mode -> 8-bit 'L' or 'RGB'; transparency composited on black."""
    mode = band.mode
    if mode in ("L", "RGB"):
        return band
    if mode in ("I", "F") or mode.startswith("I;16"):
        arr = np.asarray(band, dtype=np.float32)
        arr = np.nan_to_num(arr, nan=0.0, posinf=top, neginf=0.0)
        return Image.fromarray(np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), "L")
    if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in band.info):
        if mode in ("LA", "La"):
            la = np.asarray(band if mode == "LA" else band.convert("LA"), dtype=np.uint16)
            value, alpha = la[..., 0], la[..., 1]
        else:
            rgba = np.asarray(band if mode == "RGBA" else band.convert("RGBA"), dtype=np.uint16)
            value, alpha = rgba[..., :3], rgba[..., 3:4]
        value = value * alpha  # composited on black: value * alpha / 255, rounded
        value += 127
        value //= 255
        return Image.fromarray(value.astype(np.uint8), "L" if value.ndim == 2 else "RGB")
    return band.convert(_output_mode(mode))


def _normalise(img: Image.Image, max_side: Optional[int]) -> Image.Image:
    """A loaded image -> 8-bit 'L' or 'RGB', shrunk by an integer factor (box filter) to at most ``max_side``,
    converting band by band so that no full-size copy is made."""
    w, h = img.size
    factor = max(1, math.ceil(max(w, h) / max_side)) if max_side else 1
    if factor == 1 and img.mode in ("L", "RGB"):
        return img
    top = _scale_top(img) if img.mode in ("I", "F") or img.mode.startswith("I;16") else 255.0
    out_mode = _output_mode(img.mode)
    out = Image.new(out_mode, (math.ceil(w / factor), math.ceil(h / factor)))
    y = 0
    for band in _bands(img, factor):
        small = _to_8bit(band, top)
        if small.mode != out_mode:
            small = small.convert(out_mode)
        if factor > 1:
            small = small.reduce(factor)
        out.paste(small, (0, y))
        y += small.size[1]
    return out


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
            orientation = _orientation(img)  # after load: a PNG's EXIF may follow its pixels (getexif would load)
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
        img = _normalise(img, max_side)
    except (OSError, ValueError) as e:
        raise ImageError(name, f"cannot convert this image ({e})") from None
    if orientation in _TRANSPOSE:
        img = img.transpose(_TRANSPOSE[orientation])
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


def _border(img: Image.Image) -> np.ndarray:
    """The outermost rows and columns of an 8-bit image as [0, 1] floats (never the whole image)."""
    w, h = img.size
    strips = [img.crop(box) for box in ((0, 0, w, 1), (0, h - 1, w, h), (0, 0, 1, h), (w - 1, 0, w, h))]
    return np.concatenate([np.asarray(s, dtype=np.float32).ravel() for s in strips]) / 255.0


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
    work = ImageOps.pad(work, (w, h), method=Image.Resampling.LANCZOS, color=fill_color)
    shown = np.asarray(work, dtype=np.float32) / 255.0
    if shown.ndim == 2:
        shown = shown[:, :, None]
    return PreparedImage(to_model_input(shown, preprocess), shown, img, do_invert)


def prepare_batch(paths: Sequence[str], preprocess: Dict[str, Any], invert: Union[str, bool] = "auto"
                  ) -> Tuple[list, list]:
    """Load and prepare several files, never raising for a bad file.

    Returns:
        (prepared list of (path, PreparedImage), errors list of ImageError).
    """
    ok, errors = [], []
    for p in paths:
        try:
            ok.append((p, prepare_image(load_image(p), preprocess, invert)))
        except ImageError as e:
            errors.append(e)
    return ok, errors
