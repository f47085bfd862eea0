"""``gatta-viz cues``: store one top-down query per class with a GAttA checkpoint (see gatta_viz.training.cues)."""
from __future__ import annotations

import argparse
import sys

import torch

from ..data.datasets import load_dataset
from ..data.scenes import SCENE_DATASETS, load_singles
from ..training.cues import store_class_queries

__all__ = ["build_parser", "run"]


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``gatta-viz cues``."""
    p.add_argument("src", help="a GAttA checkpoint")
    p.add_argument("dst", help="where to write it with its class queries (may be the same file)")
    p.add_argument("--dataset", default=None, help="images to average over (default: the checkpoint's training set; for a model "
                   "trained on two-garment scenes, every training garment alone on the scene canvas)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--images", type=int, default=0, help="average over the first N images only (0: all)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``gatta-viz cues``; returns the exit code (2 with a message on bad input)."""
    from ..models.checkpoint import read_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        ckpt = read_checkpoint(args.src)
        dataset = args.dataset or ckpt["meta"].get("dataset", "fashion-mnist")
        if dataset in SCENE_DATASETS:  # a scene model: average over garments alone on the scene canvas
            pre = ckpt["preprocess"]
            data = load_singles(dataset, "train", args.data_root, pre["mean"], pre["std"])
        else:
            data = load_dataset(dataset, "train", args.data_root)
        info = store_class_queries(args.src, args.dst, data.subset(args.images) if args.images else data)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} with one query per class ({info['images']} images of {info['dataset']})")
    return 0
