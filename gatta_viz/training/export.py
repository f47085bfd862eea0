"""``gatta-viz export``: turn a training run's checkpoint into a small file to ship or bundle.

Drops the optimizer/scheduler resume state (``train_state``), keeps weights, config, classes,
preprocessing and metrics, and checks that the written file rebuilds the same model.
"""
from __future__ import annotations

import os

import torch

from ..models.checkpoint import load_checkpoint, read_checkpoint, write_atomically

__all__ = ["export_checkpoint"]


def export_checkpoint(src: str, dst: str) -> int:
    """Write ``src`` without its resume state to ``dst`` and verify it loads.

    Args:
        src: a gatta_viz checkpoint (e.g. ``runs/x/final.pt``).
        dst: destination path.
    Returns:
        The size of ``dst`` in bytes.
    Raises:
        FileNotFoundError, ValueError: ``src`` is missing or not a gatta_viz checkpoint, or the
            written file does not rebuild a model with the same weights.
    """
    obj = read_checkpoint(src)
    obj.pop("train_state", None)
    write_atomically(obj, dst)
    loaded = load_checkpoint(dst).model.state_dict()
    for k, v in obj["state_dict"].items():
        if not torch.equal(loaded[k].cpu(), v):
            raise ValueError(f"exported {dst} does not reproduce {src}: tensor {k} differs")
    return os.path.getsize(dst)
