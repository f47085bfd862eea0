"""``gatta-viz export``: turn a training run's checkpoint into a small file to ship or bundle.

Drops the optimizer/scheduler resume state (``train_state``), keeps weights, config, classes,
preprocessing and metrics, and checks that the written file rebuilds the same model.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from .checkpoint import load_checkpoint, read_checkpoint, write_atomically

__all__ = ["export_checkpoint", "build_parser", "run"]


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


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``gatta-viz export``."""
    p.add_argument("src", help="checkpoint to export, e.g. runs/fmnist_gatta_resnet/final.pt")
    p.add_argument("dst", help="destination file, e.g. gatta_viz/weights/fmnist_gatta_resnet.pt")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``gatta-viz export``; returns the exit code (2 on a bad source file)."""
    try:
        size = export_checkpoint(args.src, args.dst)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(build_parser(argparse.ArgumentParser(prog="gatta-viz export")).parse_args()))
