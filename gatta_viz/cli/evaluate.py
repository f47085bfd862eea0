"""``gatta-viz evaluate``: clean accuracy, accuracy under Gaussian noise and pass-1 vs pass-2 changes.

``gatta-viz evaluate --models fmnist-gatta-resnet fmnist-resnet --out results/eval`` writes
``eval.json``, ``noise.png`` and prints a markdown table. Each model is evaluated on the test split of the data set
its checkpoint records (``--dataset`` to choose another: a data set name, or an image folder whose validation split
is used, prepared as the checkpoint's preprocessing says); images of another size or channel count are refused.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

from . import args as A
from ..training.evaluate import NOISE_SIGMAS

__all__ = ["build_parser", "run", "main"]

PROG = "gatta-viz evaluate"


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or A.Parser(prog=PROG, description=__doc__)
    p.add_argument("--models", nargs="+", type=A.nonempty_str, action=A.UniqueList,
                   default=["fmnist-gatta-resnet", "fmnist-resnet"], help="bundled names or checkpoint paths")
    p.add_argument("--dataset", type=A.nonempty_str, default=None,
                   help="test data: a data set name or an image folder (default: each checkpoint's own data set)")
    p.add_argument("--n", type=A.positive_int, default=None, help="first N test images (default: all)")
    p.add_argument("--sigmas", type=A.nonnegative_float, nargs="+", action=A.UniqueList, default=list(NOISE_SIGMAS),
                   help="noise levels (pixel scale 0-1); pass-2 changes are measured on clean images whatever they are")
    p.add_argument("--batch-size", type=A.positive_int, default=500)
    p.add_argument("--seed", type=A.nonnegative_int, default=0)
    p.add_argument("--out", type=A.output_dir, default="results/eval", help="directory for eval.json and noise.png")
    return p


def _load_models(names: List[str]):
    from ..models.checkpoint import load_model

    loaded = []
    for m in names:
        if os.path.isdir(m):
            raise ValueError(f"--models {m} is a folder, not a checkpoint file")
        loaded.append(load_model(m))
    return loaded


def _data_for(lm, dataset: Optional[str], n: Optional[int], cache: Dict):
    """Test data for one model: ``dataset`` or the checkpoint's own, checked against the model's input."""
    from ..data.datasets import input_shape, load_dataset
    from ..training.matching import check_fits, check_named_fits, resolve_dataset

    name = resolve_dataset(dataset, lm.meta)
    if os.path.isdir(name):  # an image folder: its validation split, prepared as this checkpoint says
        from ..data.folders import load_folder_for_model

        own = lm.meta.get("dataset")
        split = {"split": "auto"}
        if isinstance(own, str) and os.path.abspath(own) == os.path.abspath(name) and \
                isinstance(lm.meta.get("val_fraction"), (int, float)):  # the images its own run held out
            split = {"split": "val", "val_fraction": float(lm.meta["val_fraction"]), "seed": int(lm.meta.get("seed", 0))}
        key = (os.path.abspath(name), repr(sorted(lm.preprocess.items())), tuple(lm.classes), repr(split))
        if key not in cache:
            cache[key] = load_folder_for_model(name, lm.preprocess, lm.classes, **split)
    else:
        key = name
        check_named_fits(lm.name, lm.preprocess, name, lm.meta)  # before building 10,000 scenes
        if key not in cache:
            cache[key] = load_dataset(name, "test")
    data = cache[key]
    check_fits(lm.name, lm.preprocess, input_shape(data), getattr(data, "name", name), lm.meta)
    return data.subset(n) if n else data


def run(args: argparse.Namespace) -> int:
    """Evaluate every model on its test images and the same noise; returns the exit code."""
    from ..analysis.metric_plots import plot_noise
    from ..data.files import atomic_path, write_json
    from ..training.evaluate import check_sigmas, evaluate_model, noise_table

    try:
        check_sigmas(args.sigmas)
        models = _load_models(args.models)
        cache: Dict = {}
        datas = [_data_for(lm, args.dataset, args.n, cache) for lm in models]  # all checked before any work
        results = [evaluate_model(lm, data, args.sigmas, args.batch_size, args.seed) for lm, data in zip(models, datas)]
        names = [r["model"] for r in results]
        for r, m in zip(results, args.models):  # checkpoints with the same file name (runs/a/final.pt, runs/b/final.pt)
            if names.count(r["model"]) > 1 and os.path.exists(m):
                r["model"] = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(m))), r["model"])
        for r, data in zip(results, datas):
            r["dataset"] = getattr(data, "name", args.dataset)
        os.makedirs(args.out, exist_ok=True)
        write_json(os.path.join(args.out, "eval.json"), results)
        with atomic_path(os.path.join(args.out, "noise.png")) as tmp:
            plot_noise(results, tmp)
    except (ValueError, FileNotFoundError, OSError) as e:
        return A.report_error(PROG, e)
    print(noise_table(results))
    for r in results:
        if "pass_change" in r:
            pc = r["pass_change"]
            print(f"{r['model']}: pass 2 changed {100 * pc['changed']:.2f}% of predictions on clean images "
                  f"(fixed {100 * pc['fixed']:.2f}%, broke {100 * pc['broken']:.2f}%)")
    print(f"wrote {args.out}/eval.json and {args.out}/noise.png")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
