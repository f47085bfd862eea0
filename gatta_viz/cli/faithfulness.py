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
import os
import sys
from typing import List, Optional, Union

from . import args as A
from .model_args import add_model_args, load_model_arg

__all__ = ["build_parser", "run", "main"]

PROG = "gatta-viz faithfulness"
DEFAULT_METHODS = ["gain", "agreement", "total_gain", "gradcam", "random"]


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    from ..metrics.faithfulness import METHODS

    p = parser or A.Parser(prog=PROG, description=__doc__)
    add_model_args(p)
    p.add_argument("--n", type=A.positive_int, default=200, help="first N test images")
    p.add_argument("--methods", nargs="+", action=A.UniqueList, default=list(DEFAULT_METHODS),
                   help=f"maps to compare: {', '.join(METHODS)} (gain = alpha x agreement; agreement = raw "
                        "agreement, sign set by training); gain, agreement and gradcam also as METHOD:LAYER")
    p.add_argument("--per-layer", action="store_true",
                   help="also evaluate each GAttA conv layer's map alone: gain:LAYER and/or agreement:LAYER for "
                        "whichever of gain and agreement is among --methods (gain if neither)")
    p.add_argument("--steps", type=A.positive_int, default=28, help="perturbation steps per curve")
    p.add_argument("--seed", type=A.nonnegative_int, default=0, help="random-map and ROAD-noise seed")
    p.add_argument("--baseline", choices=("mean", "black", "road"), default="mean",
                   help="what a deleted pixel becomes: the dataset's mean intensity (0 after normalisation), "
                        "black (raw 0: Fashion-MNIST's background, not that of the clutter scenes) or road (noisy "
                        "linear imputation from the remaining pixels, Rong et al. 2022)")
    p.add_argument("--noise", type=A.nonnegative_float, default=0.01, help="ROAD imputation noise std (normalised units)")
    p.add_argument("--patch", type=A.positive_int, default=1,
                   help="perturb patch x patch regions ranked by their mean saliency "
                        "(region perturbation, Samek et al. 2017); 1 = single pixels; at most the image's side")
    p.add_argument("--out", type=A.output_dir, default="results/faithfulness", help="output directory")
    return p


def _methods_for(lm, methods: List[str], per_layer: bool) -> List[str]:
    """The maps to compare, checked against the model (ValueError naming the problem)."""
    from ..metrics.faithfulness import parse_method

    methods = list(methods)
    kinds = {parse_method(m)[0] for m in methods}
    if not lm.is_gatta and ({"agreement", "gain", "total_gain"} & kinds or per_layer):
        raise ValueError(f"model {lm.name} is a plain model (no GAttA layers); drop agreement, gain, total_gain and "
                         "--per-layer")
    convs = [n for n, k in getattr(lm.model, "layer_kinds", {}).items() if k == "conv"]
    if per_layer:
        kinds_per_layer = [k for k in ("gain", "agreement") if k in kinds] or ["gain"]
        methods += [f"{k}:{n}" for k in kinds_per_layer for n in convs if f"{k}:{n}" not in methods]
    modules = dict(lm.model.named_modules())
    for m in methods:
        method, layer = parse_method(m)
        if method != "gradcam" and layer is not None and layer not in convs:
            raise ValueError(f"{m!r}: {layer!r} is not a GAttA conv layer of {lm.name}; conv layers: {convs}")
        if method == "gradcam" and layer is None and not lm.is_gatta:
            raise ValueError(f"gradcam on the plain model {lm.name} needs a layer: use --methods gradcam:LAYER with "
                             "one of its conv modules")
        if method == "gradcam" and layer is not None and layer not in modules:
            raise ValueError(f"{m!r}: {lm.name} has no module {layer!r}")
    return methods


def run(args: argparse.Namespace) -> int:
    """Run ``gatta-viz faithfulness``; returns the exit code (2 with a one-line message on bad options)."""
    import torch

    from ..analysis.metric_plots import plot_curves, plot_image_grid
    from ..data.datasets import input_shape, load_dataset
    from ..data.files import atomic_path, write_json
    from ..metrics.faithfulness import example_panels, explain_func, faithfulness_report, parse_method, report_table
    from ..training.matching import check_fits, resolve_dataset

    try:
        lm = load_model_arg(args.model, args.checkpoint)
        methods = _methods_for(lm, args.methods, args.per_layer)
        h, w = [int(s) for s in lm.preprocess["size"]]
        if args.patch > min(h, w):
            raise ValueError(f"--patch {args.patch} is larger than the model's {h}x{w} images")
        name = resolve_dataset(None, lm.meta)
        data = load_dataset(name, "test")
        check_fits(lm.name, lm.preprocess, input_shape(data), getattr(data, "name", name), lm.meta)
        data = data.subset(args.n)
    except (ValueError, FileNotFoundError, OSError) as e:
        return A.report_error(PROG, e)
    x, _ = data.tensors()
    pp = lm.preprocess
    if args.baseline == "black":
        base: Union[float, List[float], str] = [-m / s for m, s in zip(pp["mean"], pp["std"])]
    else:
        base = "road" if args.baseline == "road" else 0.0
    rep = faithfulness_report(lm.model, x, methods, args.steps, seed=args.seed, baseline=base, patch=args.patch, noise=args.noise)
    rep["model"], rep["baseline_name"], rep["dataset"] = lm.name, args.baseline, data.name
    with torch.no_grad():
        pred0 = int(lm.model(x[:1]).argmax(1))
    sals = {m: explain_func(lm.model, x[:1], [pred0], *parse_method(m), seed=args.seed)[0, 0] for m in methods}
    panels = example_panels(lm.model, x[:1], sals, pred0, baseline=base, patch=args.patch, noise=args.noise,
                            seed=args.seed, mean=pp["mean"], std=pp["std"])
    try:
        os.makedirs(args.out, exist_ok=True)
        write_json(os.path.join(args.out, "faithfulness.json"), rep)
        with atomic_path(os.path.join(args.out, "faithfulness.png")) as tmp:
            plot_curves(rep, tmp)
        with atomic_path(os.path.join(args.out, "examples.png")) as tmp:
            plot_image_grid(panels, tmp)
    except OSError as e:
        return A.report_error(PROG, e)
    print(report_table(rep))
    print(f"wrote {args.out}/faithfulness.json, faithfulness.png (mean curves) and examples.png (test image 0 as the model sees it)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
