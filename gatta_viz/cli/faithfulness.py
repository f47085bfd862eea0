"""``gatta-viz faithfulness``: deletion/insertion AUC of gain maps (alpha x agreement), raw agreement maps,
Grad-CAM and a random map.

Compares maps on the first N test images of the data set the model was trained on (the checkpoint's
``meta["dataset"]``: Fashion-MNIST for the bundled models, e.g. ``fmnist-clutter`` for a model trained on the
garments in clutter; Fashion-MNIST when the checkpoint does not say); writes ``faithfulness.json``,
``faithfulness.png`` (mean curves) and ``examples.png`` (test image 0 as the curves show it to the model).
See :mod:`gatta_viz.metrics.faithfulness` for the protocols.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional, Union

import torch

from ..analysis.metric_plots import plot_curves, plot_image_grid
from ..data.datasets import load_dataset
from ..metrics.faithfulness import (
    METHODS, _check_patch, example_panels, explain_func, faithfulness_report, parse_method, report_table,
)
from ..models.checkpoint import DEFAULT_MODEL
from .explain import resolve_model

__all__ = ["build_parser", "run", "main"]


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="gatta-viz faithfulness", description=__doc__)
    p.add_argument("--model", default=DEFAULT_MODEL, help="bundled model name or checkpoint path")
    p.add_argument("--checkpoint", default=None, help="checkpoint path (instead of --model)")
    p.add_argument("--n", type=int, default=200, help="first N test images")
    p.add_argument("--methods", nargs="+", default=["gain", "agreement", "total_gain", "gradcam", "random"],
                   help=f"maps to compare: {', '.join(METHODS)} (gain = alpha x agreement; agreement = raw "
                        "agreement, sign set by training); gain, agreement and gradcam also as METHOD:LAYER")
    p.add_argument("--per-layer", action="store_true",
                   help="also evaluate each GAttA conv layer's map alone: gain:LAYER and/or agreement:LAYER for "
                        "whichever of gain and agreement is among --methods (gain if neither)")
    p.add_argument("--steps", type=int, default=28, help="perturbation steps per curve")
    p.add_argument("--seed", type=int, default=0, help="random-map and ROAD-noise seed")
    p.add_argument("--baseline", choices=("mean", "black", "road"), default="mean",
                   help="what a deleted pixel becomes: the dataset's mean intensity (0 after normalisation), "
                        "black (raw 0: Fashion-MNIST's background, not that of the clutter scenes) or road (noisy "
                        "linear imputation from the remaining pixels, Rong et al. 2022)")
    p.add_argument("--noise", type=float, default=0.01, help="ROAD imputation noise std (normalised units)")
    p.add_argument("--patch", type=int, default=1,
                   help="perturb patch x patch regions ranked by their mean saliency "
                        "(region perturbation, Samek et al. 2017); 1 = single pixels")
    p.add_argument("--out", default="results/faithfulness", help="output directory")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``gatta-viz faithfulness``; returns the exit code (2 with a message on bad options)."""
    try:
        _check_patch(args.patch)
        methods = list(args.methods)
        kinds = {parse_method(m)[0] for m in methods}
        lm = resolve_model(args.checkpoint or args.model or DEFAULT_MODEL)
        if not lm.is_gatta and ({"agreement", "gain", "total_gain"} & kinds or args.per_layer):
            raise ValueError(f"model {lm.name} has no GAttA layers; drop agreement, gain, total_gain and --per-layer")
        convs = [n for n, k in getattr(lm.model, "layer_kinds", {}).items() if k == "conv"]
        if args.per_layer:
            kinds_per_layer = [k for k in ("gain", "agreement") if k in kinds] or ["gain"]
            methods += [f"{k}:{n}" for k in kinds_per_layer for n in convs if f"{k}:{n}" not in methods]
        for m in methods:
            method, layer = parse_method(m)
            if method != "gradcam" and layer is not None and layer not in convs:
                raise ValueError(f"{m!r}: {layer!r} is not a GAttA conv layer of {lm.name}; conv layers: {convs}")
        data = load_dataset(lm.meta.get("dataset", "fashion-mnist"), "test").subset(args.n)
        size = [int(s) for s in lm.preprocess.get("size", data.images.shape[2:])]
        if list(data.images.shape[2:]) != size:
            said = lm.meta.get("dataset", "not recorded, so Fashion-MNIST was assumed")
            raise ValueError(f"model {lm.name} takes {size[0]}x{size[1]} images but the {data.name} test images are "
                             f"{data.images.shape[2]}x{data.images.shape[3]} (the checkpoint's data set: {said})")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    x, _ = data.tensors()
    pp = lm.preprocess
    if args.baseline == "black":
        base: Union[float, List[float], str] = [-m / s for m, s in zip(pp["mean"], pp["std"])]
    else:
        base = "road" if args.baseline == "road" else 0.0
    rep = faithfulness_report(lm.model, x, methods, args.steps, seed=args.seed, baseline=base, patch=args.patch, noise=args.noise)
    rep["model"], rep["baseline_name"], rep["dataset"] = lm.name, args.baseline, data.name
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "faithfulness.json"), "w") as f:
        json.dump(rep, f, indent=2)
    plot_curves(rep, os.path.join(args.out, "faithfulness.png"))
    with torch.no_grad():
        pred0 = int(lm.model(x[:1]).argmax(1))
    sals = {m: explain_func(lm.model, x[:1], [pred0], *parse_method(m), seed=args.seed)[0, 0] for m in methods}
    panels = example_panels(lm.model, x[:1], sals, pred0, baseline=base, patch=args.patch, noise=args.noise,
                            seed=args.seed, mean=pp["mean"], std=pp["std"])
    plot_image_grid(panels, os.path.join(args.out, "examples.png"))
    print(report_table(rep))
    print(f"wrote {args.out}/faithfulness.json, faithfulness.png (mean curves) and examples.png (test image 0 as the model sees it)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
