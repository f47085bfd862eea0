"""``gatta-viz cues``: store one top-down query per class with a GAttA checkpoint (see gatta_viz.training.cues)."""
from __future__ import annotations

import argparse
import os

from . import args as A

__all__ = ["build_parser", "run"]

PROG = "gatta-viz cues"


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``gatta-viz cues``."""
    p.add_argument("src", type=A.existing_file, help="a GAttA checkpoint")
    p.add_argument("dst", type=A.output_file, help="where to write it with its class queries (may be the same file)")
    p.add_argument("--dataset", default=None, help="images to average over (default: the checkpoint's training set; for a model "
                   "trained on two-garment scenes, every training garment alone on the scene canvas); their size and "
                   "channels must be the model's")
    p.add_argument("--data-root", type=A.existing_dir, default=None, help="directory holding the data set's files")
    p.add_argument("--images", type=A.nonnegative_int, default=0, help="average over the first N images only (0: all)")
    p.add_argument("--calibrate", type=A.nonnegative_int, default=300,
                   help="scene models: training scenes on which to choose the sign of the steering cue (0: none)")
    p.add_argument("--threads", type=A.threads, default=0, help="torch CPU threads (0: torch's default)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``gatta-viz cues``; returns the exit code (2 with a one-line message on bad input)."""
    import torch

    from ..data.datasets import input_shape, load_dataset
    from ..data.in_memory import load_fashion_mnist
    from ..data.scenes import SCENE_DATASETS, load_singles, make_scenes
    from ..models.checkpoint import load_checkpoint
    from ..training.cues import store_class_queries
    from ..training.matching import check_fits, check_named_fits, resolve_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        lm = load_checkpoint(args.src)
        if not lm.is_gatta:
            raise ValueError(f"{args.src} is a plain model ({lm.builder}); class cues need a GAttA model")
        dataset = resolve_dataset(args.dataset, lm.meta)
        calibrate = None
        pre = lm.preprocess
        check_named_fits(lm.name, pre, dataset, lm.meta)  # before building the images (singles: the scene canvas)
        if dataset in SCENE_DATASETS:  # a scene model: average over garments alone on the scene canvas
            data = load_singles(dataset, "train", args.data_root, pre["mean"], pre["std"])
            if args.calibrate:  # and pick the steering sign on training scenes
                scenes = make_scenes(load_fashion_mnist("train", args.data_root), args.calibrate,
                                     SCENE_DATASETS[dataset], seed=7)
                scenes.mean, scenes.std = tuple(pre["mean"]), tuple(pre["std"])

                def calibrate(model, means):
                    from ..metrics.cueing import calibrate_cue_sign  # imports captum: only when needed

                    return calibrate_cue_sign(model, means, scenes, n=args.calibrate)
        elif os.path.isdir(dataset):  # an image folder: its training images, prepared as the checkpoint says
            from ..data.folders import load_folder_for_model

            data = load_folder_for_model(dataset, pre, lm.classes, split="train")
        else:
            data = load_dataset(dataset, "train", args.data_root)
        check_fits(lm.name, pre, input_shape(data), getattr(data, "name", dataset), lm.meta)
        info = store_class_queries(args.src, args.dst, data.subset(args.images) if args.images else data, calibrate)
    except (FileNotFoundError, ValueError, OSError) as e:
        return A.report_error(PROG, e)
    print(f"wrote {args.dst} with one query per class ({info['images']} images of {info['dataset']})")
    if "sign" in info:
        print(f"steering cue sign {info['sign']:+d}: cued item ahead in {100 * info['success_plus']:.1f}% (+) / "
              f"{100 * info['success_minus']:.1f}% (-) of {2 * info['scenes']} training cases")
    return 0
