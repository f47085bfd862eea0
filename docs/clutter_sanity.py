"""Model-parameter randomisation sanity checks (Adebayo et al. 2018) on the garments-in-clutter test set.

Usage (the first 200 fixed test images of fmnist-clutter):
    OMP_NUM_THREADS=1 .venv/bin/python docs/clutter_sanity.py --checkpoint /work/runs15/gatta_s0/final.pt \
        --n 200 --out docs/results/clutter_sanity

Runs gatta_viz.metrics.sanity.randomization_report: the gain map (alpha x agreement) and Grad-CAM (last GAttA conv
layer; signed) of the trained model against those of copies whose parameters were re-initialised: cumulatively
from the top (fc, then layer3, layer2, layer1, stem; each block with its GAttA keys and queries, alphas kept), the
GAttA keys and queries only, the backbone only, a fresh (untrained) model, and each block alone
("independent"). Maps are compared per image by
Spearman rank correlation (signed and of |map|) and Pearson correlation of |map|, for the trained model's
predicted class. A baseline (plain CNN) checkpoint gets Grad-CAM only (cascade and untrained).

Writes OUT/report.json (every number, per image too), OUT/report.txt (the table), OUT/sanity.png (rows: the gain
map and Grad-CAM of the first 3 images; columns: trained, each cascade step, GAttA-only, untrained) and
OUT/curves.png (mean Spearman vs cascade step).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gatta_viz.analysis.sanity_plots import plot_randomization_curves, plot_randomization_maps  # noqa: E402
from gatta_viz.data.datasets import load_dataset  # noqa: E402
from gatta_viz.metrics.sanity import BATCHNORM, MODES, randomization_report, report_text  # noqa: E402
from gatta_viz.models.checkpoint import load_model  # noqa: E402

FIGURE_STEPS = ("trained", "cascade", "gatta", "untrained")  # "cascade" = every cascade step
THRESHOLD = 0.5  # docs/RESULTS.md 9.4: a map passes if its correlation falls below 0.5 once the top layer is randomised


def rule_lines(rep: dict) -> List[str]:
    """The fixed sanity rule per method: mean Spearman at the first cascade step (the top block, fc) below 0.5;
    also whether mean + 1.96 SE is below it, and the first cascade step whose mean is."""
    steps = [s["name"] for s in rep["steps"] if s["name"].startswith("cascade:")]
    if not steps:
        return []
    lines = [f"rule (docs/RESULTS.md 9.4): Spearman with the trained map below {THRESHOLD} once the top block "
             f"({steps[0].split(':', 1)[1]}) is re-initialised"]
    for m in rep["methods"]:
        r = rep["results"][m][steps[0]]
        if r["spearman"] is None:
            lines.append(f"  {m}: no finite correlation")
            continue
        upper = r["spearman"] + 1.96 * r["spearman_se"]
        first = next((s for s in steps if rep["results"][m][s]["spearman"] is not None
                      and rep["results"][m][s]["spearman"] < THRESHOLD), None)
        lines.append(f"  {m}: {r['spearman']:.3f} ± {r['spearman_se']:.3f} (mean + 1.96 SE = {upper:.3f}) -> "
                     f"{'PASS' if r['spearman'] < THRESHOLD else 'FAIL'}"
                     f"{'' if (upper < THRESHOLD) == (r['spearman'] < THRESHOLD) else ' (within 1.96 SE of the threshold)'}; "
                     f"first cascade step below {THRESHOLD}: {first or 'none'}")
    return lines


def plain_methods(methods: List[str], model: torch.nn.Module) -> List[str]:
    """Methods a plain CNN supports: GAttA maps dropped, ``gradcam`` pinned to the last stage (``layerN``)."""
    stages = [n for n, _ in model.named_children() if n.startswith("layer")]
    out = []
    for m in methods:
        if m.split(":")[0] in ("gain", "agreement", "total_gain"):
            continue
        out.append(f"gradcam:{stages[-1]}" if m == "gradcam" and stages else m)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint trained on fmnist-clutter")
    p.add_argument("--n", type=int, default=200, help="first N test images")
    p.add_argument("--methods", nargs="+", default=["gain", "gradcam"], help="maps (as gatta-viz faithfulness names them)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="randomisations to run")
    p.add_argument("--seed", type=int, default=0, help="randomisation seed")
    p.add_argument("--batchnorm", choices=BATCHNORM, default="reset",
                   help="reset: a re-initialised block's BatchNorm gets fresh affine parameters and running statistics "
                        "(both passes); keep: BatchNorm layers stay trained")
    p.add_argument("--examples", type=int, default=3, help="images in sanity.png")
    p.add_argument("--out", default="docs/results/clutter_sanity", help="output directory")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    lm = load_model(args.checkpoint)
    dataset = lm.meta.get("dataset", "fmnist-clutter")
    if dataset != "fmnist-clutter":
        print(f"warning: {args.checkpoint} was trained on {dataset!r}; using its test set", file=sys.stderr)
    data = load_dataset(dataset, "test")
    if list(data.images.shape[2:]) != [int(s) for s in lm.preprocess["size"]]:
        print(f"error: test images are {tuple(data.images.shape[2:])}, the model expects {lm.preprocess['size']}", file=sys.stderr)
        return 2
    x, y = data.tensors(args.n)
    methods = list(args.methods) if lm.is_gatta else plain_methods(list(args.methods), lm.model)
    if not methods:
        print("error: no method left for a plain CNN (GAttA maps need a GAttA model)", file=sys.stderr)
        return 2

    t0 = time.time()
    rep = randomization_report(lm.model, x, methods=methods, seed=args.seed, modes=args.modes,
                               batchnorm=args.batchnorm, keep_maps=args.examples)
    seconds = time.time() - t0
    maps = rep.pop("maps")
    with torch.no_grad():
        pred = torch.cat([lm.model(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)])
    history = lm.meta.get("history", [])
    rep.update({
        "checkpoint": os.path.abspath(args.checkpoint), "dataset": dataset, "seconds": seconds,
        "accuracy": float((pred == y).float().mean()) if y.dim() == 1 else float((pred[:, None] == y).any(1).float().mean()),
        "epochs_trained": len(history), "epochs_planned": lm.meta.get("epochs"),
        "alphas": getattr(lm.model, "alphas", {}),
    })
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(rep, f, indent=2, allow_nan=False)

    partial = f" (PARTIALLY TRAINED: {len(history)} of {rep['epochs_planned']} epochs)" \
        if rep["epochs_planned"] and len(history) < rep["epochs_planned"] else ""
    head = [f"checkpoint: {args.checkpoint}{partial}",
            f"data: first {rep['n']} {dataset} test images; accuracy on them {100 * rep['accuracy']:.1f}%"
            + (" (predicted class among the image's items)" if y.dim() == 2 else ""),
            f"alphas: {', '.join(f'{k} {v:+.3f}' for k, v in rep['alphas'].items()) or 'none (plain CNN)'}",
            f"target: {rep['target']}; batchnorm: {rep['batchnorm']}; seed {rep['seed']}; {seconds:.0f} s",
            "cells: mean ± s.e. over images of the rank correlation with the trained model's map (1 = unchanged; "
            "a map that passes the check falls towards 0 as parameters are re-initialised); 'cascade:B' = block B "
            "and every block above it re-initialised; 'prediction kept' = images whose predicted class is unchanged",
            ""]
    text = "\n".join(head) + report_text(rep) + "\n\n" + "\n".join(rule_lines(rep)) + "\n"
    with open(os.path.join(args.out, "report.txt"), "w") as f:
        f.write(text)
    print(text)

    names = [s["name"] for s in rep["steps"]]
    cols = [n for n in names if n in FIGURE_STEPS or (n.startswith("cascade:") and "cascade" in FIGURE_STEPS)]
    images = data.images[: args.examples, 0].float().numpy() / 255.0
    sims = {m: {s: rep["results"][m][s]["spearman_per_image"][: args.examples] for s in cols} for m in methods}
    title = f"{os.path.basename(os.path.dirname(os.path.abspath(args.checkpoint)))}/{os.path.basename(args.checkpoint)}{partial}"
    plot_randomization_maps(images, maps, os.path.join(args.out, "sanity.png"), steps=cols, similarity=sims, title=title)
    plot_randomization_curves(rep, os.path.join(args.out, "curves.png"))
    print(f"wrote {args.out}/report.json, report.txt, sanity.png and curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
