"""``gatta-viz evaluate``: clean accuracy, accuracy under Gaussian noise and pass-1 vs pass-2 changes.

``gatta-viz evaluate --models fmnist-gatta-resnet fmnist-resnet --out results/eval`` writes
``eval.json``, ``noise.png`` and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from ..analysis.metric_plots import plot_noise
from ..data.datasets import load_dataset
from ..models.checkpoint import load_model
from ..training.evaluate import NOISE_SIGMAS, evaluate_model, noise_table

__all__ = ["build_parser", "run", "main"]


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="gatta-viz evaluate", description=__doc__)
    p.add_argument("--models", nargs="+", default=["fmnist-gatta-resnet", "fmnist-resnet"], help="bundled names or checkpoint paths")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--n", type=int, default=0, help="first N test images (0: all)")
    p.add_argument("--sigmas", type=float, nargs="+", default=list(NOISE_SIGMAS))
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/eval", help="directory for eval.json and noise.png")
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate every model on the same images and noise; returns the exit code."""
    try:
        data = load_dataset(args.dataset, "test")
        if args.n:
            data = data.subset(args.n)
        results = [evaluate_model(load_model(m), data, args.sigmas, args.batch_size, args.seed) for m in args.models]
        names = [r["model"] for r in results]
        for r, m in zip(results, args.models):  # checkpoints with the same file name (runs/a/final.pt, runs/b/final.pt)
            if names.count(r["model"]) > 1 and os.path.exists(m):
                r["model"] = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(m))), r["model"])
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "eval.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot_noise(results, os.path.join(args.out, "noise.png"))
    print(noise_table(results))
    for r in results:
        if "pass_change" in r:
            pc = r["pass_change"]
            print(f"{r['model']}: pass 2 changed {100 * pc['changed']:.2f}% of predictions "
                  f"(fixed {100 * pc['fixed']:.2f}%, broke {100 * pc['broken']:.2f}%)")
    print(f"wrote {args.out}/eval.json and {args.out}/noise.png")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
