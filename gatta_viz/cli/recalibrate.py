"""``gatta-viz recalibrate``: re-estimate BatchNorm statistics of a checkpoint on training data, each pass its own."""
from __future__ import annotations

import argparse

from . import args as A
from ..training.recalibrate import recalibrate_checkpoint

__all__ = ["build_parser", "run"]

PROG = "gatta-viz recalibrate"


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``gatta-viz recalibrate``."""
    p.add_argument("src", type=A.existing_file,
                   help="checkpoint to recalibrate (e.g. one saved with shared BatchNorm statistics)")
    p.add_argument("dst", type=A.output_file, help="where to write the recalibrated checkpoint (a file)")
    p.add_argument("--dataset", default=None, help="training data: a data set name or an image folder (default: the "
                   "data set recorded in the checkpoint); its images must have the model's size and channels")
    p.add_argument("--data-root", type=A.existing_dir, default=None, help="directory holding the data set's files")
    p.add_argument("--images", type=A.positive_int, default=10240, help="training images to average over (default: %(default)s)")
    p.add_argument("--batch-size", type=A.positive_int, default=128, help="as in training (default: %(default)s)")
    p.add_argument("--no-augment", action="store_true", help="use the images without the training augmentation")
    p.add_argument("--seed", type=A.nonnegative_int, default=0)
    p.add_argument("--threads", type=A.threads, default=0, help="torch CPU threads (0: torch's default)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``gatta-viz recalibrate``; returns the exit code (2 with a one-line message on bad input)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        info = recalibrate_checkpoint(
            args.src, args.dst, args.dataset, args.data_root,
            images=args.images, batch_size=args.batch_size, augment=not args.no_augment, seed=args.seed,
        )
    except (FileNotFoundError, ValueError, OSError) as e:
        return A.report_error(PROG, e)
    print(f"wrote {args.dst} (statistics from {info['batches']} batches of {info['dataset']})")
    return 0
