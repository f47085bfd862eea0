"""Localization on the garments-in-clutter test set: energy in mask and pointing game, per checkpoint.

Usage (the first 1,000 fixed test images of fmnist-clutter, every seed's GAttA and baseline model):
    OMP_NUM_THREADS=1 .venv/bin/python docs/clutter_localization.py \
        --checkpoint /work/runs15/gatta_s0/final.pt --checkpoint /work/runs15/gatta_s1/final.pt \
        --checkpoint /work/runs15/base_s0/final.pt --checkpoint /work/runs15/base_s1/final.pt \
        --n 1000 --out docs/results/clutter_localization

For each checkpoint it runs gatta_viz.metrics.localization.localization_report (gain map, each layer's gain
map, Grad-CAM at the last conv stage, integrated gradients and total gain, all for the predicted class where
class-specific; a uniform random map and a centre prior as references). GAttA maps are skipped for baseline
models. Writes OUT/report.json (every number, per image too), OUT/report.txt (tables, one per checkpoint, and a
summary with the fixed verdict rule for the gain map) and OUT/examples.png (the first test images with the
gain map, Grad-CAM, IG and the centre prior, from the first GAttA checkpoint).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gatta_viz.analysis.figures import save_figure  # noqa: E402
from gatta_viz.analysis.localization_plots import localization_examples  # noqa: E402
from gatta_viz.data.datasets import load_dataset  # noqa: E402
from gatta_viz.metrics.faithfulness import explain_func  # noqa: E402
from gatta_viz.metrics.localization import centre_prior, localization_report, report_text  # noqa: E402
from gatta_viz.models.checkpoint import load_model  # noqa: E402

DEFAULT_METHODS = ("gain", "gradcam", "integrated_gradients", "total_gain", "random", "centre")
EXAMPLE_MAPS = ("gain", "gradcam", "integrated_gradients", "centre")


def label(path: str) -> str:
    """``run_dir/file.pt`` of a checkpoint path, for tables."""
    return os.path.join(os.path.basename(os.path.dirname(os.path.abspath(path))), os.path.basename(path))


def check_normalisation(lm, data) -> None:
    """Warn on stderr when the checkpoint was trained with another normalisation than the data's."""
    mean = lm.preprocess.get("mean")
    if mean is not None and not np.allclose(mean, data.mean, atol=1e-3):
        print(f"warning: {lm.path} was trained with mean {mean}, the data uses {list(data.mean)}: "
              "is it an fmnist-clutter model?", file=sys.stderr)


def summary(reports: Dict[str, Dict[str, Any]]) -> str:
    """One line per checkpoint: accuracy, energy of gain / gradcam / random / centre and the verdict."""
    head = f"{'checkpoint':<24}{'acc':>7}" + "".join(f"{m:>16}" for m in ("gain", "gradcam", "random", "centre")) + "  verdict (gain)"
    lines = [head, "-" * len(head)]
    for name, rep in reports.items():
        row = f"{name:<24}{rep['accuracy']:>7.3f}"
        for m in ("gain", "gradcam", "random", "centre"):
            r = rep["methods"].get(m)
            row += f"{r['energy']:>9.3f} ± {r['energy_se']:.3f}" if r else f"{'-':>16}"
        v = rep.get("verdict")
        row += "  " + ("PASS" if v and v["passes"] else "FAIL" if v else "n/a (no gain map)")
        lines.append(row)
    return "\n".join(lines)


def examples(lm, data, rep: Dict[str, Any], k: int, path: str) -> str:
    """Draw the first ``k`` images with the example maps of a GAttA checkpoint; returns the path."""
    d = data.subset(k)
    x, y = d.tensors()
    pred = rep["predicted"][:k]
    maps = {}
    for name in EXAMPLE_MAPS:
        if name == "centre":
            maps[name] = centre_prior(k, x.shape[2], x.shape[3])
        elif name in rep["methods"]:
            layer = rep["gradcam_layer"] if name == "gradcam" else None
            maps[name] = explain_func(lm.model, x, pred, method=name, layer=layer)[:, 0]
    energies = {m: rep["methods"][m]["energy_per_image"][:k] for m in maps}
    energies = {m: [np.nan if e is None else e for e in v] for m, v in energies.items()}
    classes = lm.classes
    rows = [f"true {classes[int(t)]}\npred {classes[int(p)]}" for t, p in zip(y, pred)]
    fig = localization_examples(d.images[:, 0].numpy() / 255.0, d.masks.numpy(), maps, energies, rows)
    return save_figure(fig, path)


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", required=True, help="a checkpoint (repeat for several)")
    p.add_argument("--n", type=int, default=1000, help="the first N fixed test images (default 1000)")
    p.add_argument("--out", default="docs/results/clutter_localization")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--no-per-layer", action="store_true", help="skip each layer's gain map alone")
    p.add_argument("--tolerance", type=int, default=0, help="pointing-game tolerance in pixels")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="random-map seed")
    p.add_argument("--examples", type=int, default=6, help="images in examples.png (0: none)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset("fmnist-clutter", "test")
    reports: Dict[str, Dict[str, Any]] = {}
    drawn = None
    os.makedirs(args.out, exist_ok=True)
    for path in args.checkpoint:
        lm = load_model(path)
        check_normalisation(lm, data)
        t0 = time.perf_counter()
        rep = localization_report(lm, data, args.methods, args.n, not args.no_per_layer, args.batch_size,
                                  args.seed, args.tolerance)
        rep.update(checkpoint=label(path), path=os.path.abspath(path), seconds=time.perf_counter() - t0,
                   threads=args.threads, epochs_trained=len(lm.meta.get("history", [])) or None)
        reports[label(path)] = rep
        print(report_text(rep) + f"\n({rep['seconds']:.0f} s)\n", flush=True)
        if drawn is None and args.examples > 0 and lm.is_gatta:
            drawn = examples(lm, data, rep, args.examples, os.path.join(args.out, "examples.png"))
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump({"dataset": "fmnist-clutter", "split": "test", "n": args.n, "command": " ".join(sys.argv),
                   "reports": reports}, f, indent=1)
    text = "\n\n".join([summary(reports)] + [report_text(r) for r in reports.values()])
    with open(os.path.join(args.out, "report.txt"), "w") as f:
        f.write(text + "\n")
    print(summary(reports))
    print(f"wrote {args.out}/report.json, report.txt" + (", examples.png" if drawn else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
