"""Images as arrays: any image to (H, W, 3) float in [0, 1], and a model input made showable (numpy only)."""
from __future__ import annotations

from typing import Any, Union

import numpy as np
import torch

__all__ = ["to_rgb_array", "image_for_display"]


def _is_pil(image: Any) -> bool:
    return hasattr(image, "convert") and hasattr(image, "mode") and hasattr(image, "size")


def to_rgb_array(image: Any) -> np.ndarray:
    """Any PIL image or array ((H, W), (H, W, 1|3|4), (1|3, H, W), uint8 or float in [0, 1]) -> float32 (H, W, 3)
    in [0, 1].

    Args:
        image: a PIL image or an array as above (uint8 is divided by 255; values are clipped to [0, 1]).
    Returns:
        float32 (H, W, 3) in [0, 1] (grey repeated to three channels, alpha dropped).
    Raises:
        ValueError: an array that is not (H, W) or (H, W, C).
    """
    if _is_pil(image):
        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    else:
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
            arr = np.transpose(arr, (1, 2, 0))  # (C, H, W) -> (H, W, C)
        arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise ValueError(f"image must be (H, W) or (H, W, C), got shape {arr.shape}")
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        arr = arr[:, :, :3]
    return np.clip(arr, 0.0, 1.0)


def image_for_display(image: Union[np.ndarray, torch.Tensor, Any]) -> np.ndarray:
    """An image to show: (C, H, W) tensors (e.g. normalised inputs) are min-max scaled; arrays in [0, 1] kept.

    Args:
        image: a (C, H, W) or (1, C, H, W) tensor, or anything :func:`to_rgb_array` takes.
    Returns:
        float32 (H, W, 3) in [0, 1].
    """
    if torch.is_tensor(image):
        a = image.detach().cpu().float()
        if a.dim() == 4:
            a = a[0]
        a = a.numpy()
        a = (a - a.min()) / (a.max() - a.min()) if a.max() > a.min() else np.zeros_like(a)
        return to_rgb_array(np.transpose(a, (1, 2, 0)))
    return to_rgb_array(image)
