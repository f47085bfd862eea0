"""Data matched to the model: which data set a checkpoint was trained on, and whether a data set fits its input.

``gatta-viz evaluate``, ``recalibrate`` and ``cues`` default to the data set recorded in the checkpoint and refuse
one whose images have another size or channel count (a silent resize or a 28x28 model fed 48x48 scenes gives
wrong numbers, not an error).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple

__all__ = ["recorded_dataset", "model_input_shape", "check_fits", "resolve_dataset", "scene_input_shape",
           "check_named_fits"]

FALLBACK_DATASET = "fashion-mnist"


def recorded_dataset(meta: Dict[str, Any]) -> Optional[str]:
    """The data set a checkpoint's ``meta`` says it was trained on (a name or a folder), or None."""
    name = meta.get("dataset") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name.strip() else None


def resolve_dataset(given: Optional[str], meta: Dict[str, Any]) -> str:
    """``given`` if not None, else the checkpoint's recorded data set, else Fashion-MNIST (older checkpoints).

    Raises:
        ValueError: the recorded data set is a folder that no longer exists (give ``--dataset``).
    """
    if given is not None:
        return given
    name = recorded_dataset(meta)
    if name is None:
        return FALLBACK_DATASET
    looks_like_path = os.sep in name or name.startswith(".")
    if looks_like_path and not os.path.isdir(name):
        raise ValueError(f"the checkpoint was trained on the image folder {name}, which does not exist here; "
                         "give --dataset")
    return name


def model_input_shape(preprocess: Dict[str, Any]) -> Tuple[int, int, int]:
    """(C, H, W) a checkpoint's ``preprocess`` record says the model takes."""
    size = preprocess.get("size") or [0, 0]
    return int(preprocess.get("channels", 1)), int(size[0]), int(size[1])


def _fmt(shape: Sequence[int]) -> str:
    c, h, w = shape
    return f"{h}x{w} ({c} channel{'s' if c != 1 else ''})"


def check_fits(model_name: str, preprocess: Dict[str, Any], data_shape: Sequence[int], data_name: str,
               meta: Optional[Dict[str, Any]] = None) -> None:
    """Raise ValueError unless images of ``data_shape`` (C, H, W) are what the model takes.

    Args:
        model_name: named in the message.
        preprocess: the checkpoint's preprocess record.
        data_shape: (C, H, W) of the data set's images.
        data_name: the data set, named in the message.
        meta: the checkpoint's meta (its recorded data set is suggested).
    """
    want = model_input_shape(preprocess)
    got = tuple(int(v) for v in data_shape)
    if want != got:
        trained = recorded_dataset(meta or {})
        hint = f"; it was trained on {trained} (the default when --dataset is not given)" if trained else ""
        raise ValueError(f"model {model_name} takes {_fmt(want)} images but {data_name} has {_fmt(got)} images"
                         f"{hint}")


def scene_input_shape(name: str) -> Optional[Tuple[int, int, int]]:
    """(C, H, W) of a named scene or clutter data set, found without building its 10,000-60,000 images (one scene
    is composed as the set would compose it), or None for any other name."""
    from ..data.clutter import CLUTTER_DATASETS
    from ..data.in_memory import load_fashion_mnist
    from ..data.scenes import SCENE_DATASETS, make_scenes

    key = str(name).lower().replace("_", "-")
    if key in CLUTTER_DATASETS:
        return 1, int(CLUTTER_DATASETS[key]), int(CLUTTER_DATASETS[key])
    if key in SCENE_DATASETS:
        one = make_scenes(load_fashion_mnist("test").subset(2), 1, SCENE_DATASETS[key], seed=0)
        c, h, w = one.images.shape[1:]
        return int(c), int(h), int(w)
    return None


def check_named_fits(model_name: str, preprocess: Dict[str, Any], dataset: str, meta: Optional[Dict[str, Any]] = None
                     ) -> None:
    """:func:`check_fits` for a named scene or clutter data set before it is built (a no-op for other names: check
    those once loaded)."""
    shape = scene_input_shape(dataset)
    if shape is not None:
        check_fits(model_name, preprocess, shape, dataset, meta)
