"""What one image file may cost, set once for the app and the CLI (environment variables or per call).

Three limits: the file's size, its pixel count (read from the header, before decoding) and the memory
its decoding takes (:func:`gatta_viz.data.preprocess.decoding_cost`). :func:`image_limits` reads the
operator's settings at every call, so ``GATTA_VIZ_MAX_UPLOAD_MB=10`` applies to ``gatta-viz explain`` and to
the app alike.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

__all__ = [
    "MB", "MAX_BYTES", "MAX_PIXELS", "MAX_DECODED_BYTES", "MAX_SIDE", "ENV_MAX_UPLOAD_MB", "ENV_MAX_PIXELS",
    "ENV_MAX_DECODED_MB", "ImageLimits", "image_limits", "env_number", "format_mb",
]

MB = 1024 * 1024
MAX_BYTES = 25 * MB  # default file size limit (app uploads and CLI files alike)
MAX_PIXELS = 40_000_000  # default width * height limit; larger files are refused (decompression bombs)
MAX_DECODED_BYTES = 120 * MB  # default memory the decoded pixels may take (see decoding_cost)
MAX_SIDE = 1024  # images larger than this are shrunk while decoding: the models take a few hundred pixels at most
ENV_MAX_UPLOAD_MB = "GATTA_VIZ_MAX_UPLOAD_MB"
ENV_MAX_PIXELS = "GATTA_VIZ_MAX_PIXELS"
ENV_MAX_DECODED_MB = "GATTA_VIZ_MAX_DECODED_MB"


def format_mb(n: float) -> str:
    """Bytes in words: ``"25 MB"`` (1 MB = 2**20 bytes, three significant digits)."""
    return f"{n / MB:.3g} MB"


@dataclass(frozen=True)
class ImageLimits:
    """What an image file may cost.

    Attributes:
        max_bytes: file size limit.
        max_pixels: width x height limit (checked from the header, before decoding).
        max_decoded_bytes: memory the decoder may need for the pixels (see ``decoding_cost``).
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
        return (f"files up to {format_mb(self.max_bytes)}, images up to {self.max_pixels / 1e6:g} megapixels "
                f"and {format_mb(self.max_decoded_bytes)} once decoded")


def env_number(var: str, default: float) -> float:
    """A positive number from environment variable ``var``, or ``default`` when it is unset or blank.

    Args:
        var: the variable's name.
        default: the value without the variable.
    Returns:
        The number.
    Raises:
        ValueError: naming the variable, when it is not a positive finite number.
    """
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
        max_bytes=int(round(env_number(ENV_MAX_UPLOAD_MB, MAX_BYTES / MB) * MB)),
        max_pixels=int(env_number(ENV_MAX_PIXELS, MAX_PIXELS)),
        max_decoded_bytes=int(round(env_number(ENV_MAX_DECODED_MB, MAX_DECODED_BYTES / MB) * MB)),
    )
