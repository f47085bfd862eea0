"""Garments in clutter (docs/RESULTS.md section 9.1): accuracy of GAttA vs baseline, paired per seed over the
fixed 10,000 test images, pass 2 vs pass 1, and per background photo.

    .venv/bin/python docs/clutter_accuracy.py --gatta G0.pt G1.pt --baseline B0.pt B1.pt > docs/results/clutter_accuracy.txt
    (a bundled model's name works in place of a checkpoint path)
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gatta_viz.data.datasets import load_dataset  # noqa: E402
from gatta_viz.metrics.cueing import scene_logits  # noqa: E402
from gatta_viz.models.checkpoint import load_model  # noqa: E402


def paired(a: np.ndarray, b: np.ndarray) -> str:
    """``mean ± se`` of a - b in percent points."""
    d = a.astype(float) - b
    return f"{100 * d.mean():+.2f} ± {100 * d.std(ddof=1) / np.sqrt(len(d)):.2f}"


def _name(path: str) -> str:
    """A checkpoint's run folder (``runs/clutter_gatta_s1/final.pt`` -> ``clutter_gatta_s1``), or a bundled name."""
    return os.path.basename(os.path.dirname(path)) if os.path.exists(path) else path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gatta", nargs="+", required=True)
    p.add_argument("--baseline", nargs="+", required=True)
    p.add_argument("--dataset", default="fmnist-clutter")
    args = p.parse_args()
    torch.set_num_threads(1)
    test = load_dataset(args.dataset, "test")
    y = test.labels.numpy()
    print(f"{args.dataset}: {len(test)} test images; accuracy (%) and paired differences (percent points, mean ± se)")
    print("| pair | GAttA (pass 2) | pass 1 | baseline | GAttA - baseline | pass 2 - pass 1 |")
    print("|---|---:|---:|---:|---:|---:|")
    per_bg = []
    for gp, bp in zip(args.gatta, args.baseline):
        g, b = load_model(gp), load_model(bp)
        gl, bl = scene_logits(g.model, test, progress=False), scene_logits(b.model, test, progress=False)
        ok2, ok1, okb = (gl["pass2"].argmax(1) == y), (gl["pass1"].argmax(1) == y), (bl["output"].argmax(1) == y)
        name = f"{_name(gp)} / {_name(bp)}"
        print(f"| {name} | {100 * ok2.mean():.2f} | {100 * ok1.mean():.2f} | {100 * okb.mean():.2f} | "
              f"{paired(ok2, okb)} | {paired(ok2, ok1)} |")
        per_bg.append((name, ok2, okb))
    if hasattr(test, "background") and test.background is not None:
        print("\nper background photo (GAttA / baseline, %):")
        for i, bg in enumerate(test.backgrounds):
            sel = test.background.numpy() == i
            cells = "  ".join(f"{100 * o2[sel].mean():.1f} / {100 * ob[sel].mean():.1f}" for _, o2, ob in per_bg)
            print(f"{bg:10s} n={int(sel.sum()):5d}  {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
