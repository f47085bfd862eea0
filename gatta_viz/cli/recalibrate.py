"""``gatta-viz recalibrate``: re-estimate BatchNorm statistics of a checkpoint on training data, each pass its own."""
from __future__ import annotations

import argparse
import sys

import torch

from ..training.recalibrate import recalibrate_checkpoint

__all__ = ["build_parser", "run"]


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``gatta-viz recalibrate``."""
    p.add_argument("src", help="checkpoint to recalibrate (e.g. one saved with shared BatchNorm statistics)")
    p.add_argument("dst", help="where to write the recalibrated checkpoint")
    p.add_argument("--dataset", default="fashion-mnist", help="training data (default: %(default)s)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--images", type=int, default=10240, help="training images to average over (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="as in training (default: %(default)s)")
    p.add_argument("--no-augment", action="store_true", help="use the images without the training augmentation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``gatta-viz recalibrate``; returns the exit code (2 with a message on bad input)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        info = recalibrate_checkpoint(
            args.src, args.dst, args.dataset, args.data_root,
            images=args.images, batch_size=args.batch_size, augment=not args.no_augment, seed=args.seed,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} (statistics from {info['batches']} batches of {info['dataset']})")
    return 0
