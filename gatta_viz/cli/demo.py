"""``gatta-viz demo``: the main job. Explain the sample images with the bundled default model.

Writes, into ``--out``: per image a Fig.-3 PNG (gain maps alpha x agreement; ``--raw`` for raw agreement),
per-layer overlays, raw maps (.npz) and a JSON summary (via the explain command), plus ``alphas.png``; prints each image's true class (from its file name),
the predictions of pass 1 and pass 2, and the accuracy on the samples.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import List, Optional

import torch
from PIL import Image

from ..models.checkpoint import DEFAULT_MODEL
from .explain import auto_threads, collect_files, explain_files, resolve_model
from ..analysis.figures import alpha_bars, save_figure

__all__ = ["SAMPLES_DIR", "build_parser", "run"]

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # gatta_viz/cli/demo.py -> repo
SAMPLES_DIR = os.path.join(_REPO, "sample_images", "fashion-mnist")


def _fallback_samples(n: int = 12) -> str:
    """Write the first ``n`` Fashion-MNIST test images as PNGs (for installs without the repo's sample_images/)."""
    from ..data.datasets import load_fashion_mnist

    d = load_fashion_mnist("test").subset(n)
    out = tempfile.mkdtemp(prefix="gatta_viz_samples_")
    for i in range(n):
        name = d.classes[int(d.labels[i])].lower().replace("/", "-").replace(" ", "-")
        Image.fromarray(d.images[i, 0].numpy(), "L").save(os.path.join(out, f"{name}_test{i:05d}.png"))
    return out


def _true_label(path: str, classes: List[str]) -> Optional[int]:
    """Class index from a sample's file name (``<class>_test<index>.png``), or None."""
    stem = os.path.basename(path).split("_test")[0]
    for i, c in enumerate(classes):
        if c.lower().replace("/", "-").replace(" ", "-") == stem:
            return i
    return None


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="gatta-viz demo", description=__doc__)
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--model", default=DEFAULT_MODEL, help="bundled model name or checkpoint path")
    p.add_argument("--images", default=None, help="images folder (default: the repo's sample_images/fashion-mnist)")
    p.add_argument("--raw", action="store_true", help="maps of raw agreement (sign set by training) instead of alpha x agreement")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        lm = resolve_model(args.model)
        if not lm.is_gatta:
            raise ValueError(f"model {lm.name} has no GAttA layers; the demo needs a GAttA model")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    folder = args.images or (SAMPLES_DIR if os.path.isdir(SAMPLES_DIR) else _fallback_samples())
    files, _ = collect_files([folder])
    if not files:
        print(f"error: no images in {folder}", file=sys.stderr)
        return 2
    print(f"model {lm.name}: {lm.meta.get('dataset', '?')}, input {lm.preprocess['channels']}x"
          f"{lm.preprocess['size'][0]}x{lm.preprocess['size'][1]}; alphas "
          + ", ".join(f"{k}={v:+.3f}" for k, v in lm.model.alphas.items()))
    previous = torch.get_num_threads()
    torch.set_num_threads(auto_threads(lm))
    try:
        records, errors = explain_files(lm, files, args.out, label_of=lambda p: _true_label(p, lm.classes),
                                        gain=not args.raw)
    finally:
        torch.set_num_threads(previous)
    save_figure(alpha_bars(lm.model.alphas), os.path.join(args.out, "alphas.png"))
    print(f"\n{'image':34s} {'true':12s} {'pass 1':12s} {'pass 2 (output)':22s}")
    correct = known = 0
    for r in records:
        idx = _true_label(r["source"], lm.classes)
        true = None if idx is None else lm.classes[idx]
        p1, p2 = r["pass1"], r["prediction"]
        if true is not None:
            known += 1
            correct += p2["label"] == true
        mark = "" if true is None else (" ok" if p2["label"] == true else " WRONG")
        print(f"{os.path.basename(r['source'])[:34]:34s} {str(true):12s} {p1['label']:12s} {p2['label']:12s} {p2['prob']:.2f}{mark}")
    if known:
        print(f"\naccuracy on the {known} labelled samples: {100 * correct / known:.1f}%")
    print(f"wrote figures, overlays, maps (.npz) and summaries for {len(records)} image(s) to {args.out}/")
    return 1 if errors else 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
