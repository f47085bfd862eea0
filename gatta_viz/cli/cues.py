"""``gatta-viz cues``: store one top-down query per class with a GAttA checkpoint (see gatta_viz.training.cues)."""
from __future__ import annotations

import argparse
import sys

import torch

from ..data.datasets import load_dataset, load_fashion_mnist
from ..data.scenes import SCENE_DATASETS, load_singles, make_scenes
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
    p.add_argument("--calibrate", type=int, default=300,
                   help="scene models: training scenes on which to choose the sign of the steering cue (0: none)")
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
        calibrate = None
        if dataset in SCENE_DATASETS:  # a scene model: average over garments alone on the scene canvas
            pre = ckpt["preprocess"]
            data = load_singles(dataset, "train", args.data_root, pre["mean"], pre["std"])
            if args.calibrate:  # and pick the steering sign on training scenes
                scenes = make_scenes(load_fashion_mnist("train", args.data_root), args.calibrate,
                                     SCENE_DATASETS[dataset], seed=7)
                scenes.mean, scenes.std = tuple(pre["mean"]), tuple(pre["std"])

                def calibrate(model, means):
                    from ..metrics.cueing import calibrate_cue_sign  # imports captum: only when needed

                    return calibrate_cue_sign(model, means, scenes, n=args.calibrate)
        else:
            data = load_dataset(dataset, "train", args.data_root)
        info = store_class_queries(args.src, args.dst, data.subset(args.images) if args.images else data, calibrate)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} with one query per class ({info['images']} images of {info['dataset']})")
    if "sign" in info:
        print(f"steering cue sign {info['sign']:+d}: cued item ahead in {100 * info['success_plus']:.1f}% (+) / "
              f"{100 * info['success_minus']:.1f}% (-) of {2 * info['scenes']} training cases")
    return 0
