"""``gatta-viz demo``: the main job. Explain the sample images with the bundled default model.

Writes, into ``--out``: per image a Fig.-3 PNG (gain maps alpha x agreement; ``--raw`` for raw agreement),
per-layer overlays, raw maps (.npz) and a JSON summary (as ``gatta-viz explain`` does), ``index.json`` and
``alphas.png``; prints each image's true class (from its file name), the predictions of pass 1 and pass 2, and
the accuracy on the samples. ``--out`` must be new, empty, or hold an earlier demo with the same settings
(``--overwrite`` empties it first).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import List, Optional

import torch
from PIL import Image

from . import args as A
from .batch import BatchInterrupted, auto_threads, check_out_dir, collect_inputs, explain_files, unique_stems
from .explain import report_resized, run_settings, write_index
from .model_args import add_model_args, load_model_arg
from ..compute.options import MapOptions
from ..render.options import FigureOptions
from ..render.save import alpha_bars, save_figure

__all__ = ["SAMPLES_DIR", "PACKAGED_SAMPLES", "samples_folder", "build_parser", "run", "main"]

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # gatta_viz/cli/demo.py -> repo
SAMPLES_DIR = os.path.join(_REPO, "sample_images", "fashion-mnist")
# the same 30 samples shipped inside the package (what a wheel install has instead of the repository's folder)
PACKAGED_SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app", "samples",
                                "fashion-mnist")


def samples_folder() -> str:
    """The sample images: the repository's folder, else the package's copy, else the first Fashion-MNIST test
    images written out."""
    for folder in (SAMPLES_DIR, PACKAGED_SAMPLES):
        if os.path.isdir(folder) and os.listdir(folder):
            return folder
    return _fallback_samples()


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
    p = parser or A.Parser(prog="gatta-viz demo", description=__doc__)
    p.add_argument("--out", default="demo_out", type=A.output_dir, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="empty --out first when it holds an earlier run's outputs")
    add_model_args(p)
    p.add_argument("--images", default=None, type=A.existing_dir,
                   help="images folder (default: the repo's sample_images/fashion-mnist)")
    p.add_argument("--raw", action="store_true", help="maps of raw agreement (sign set by training) instead of alpha x agreement")
    return p


def _print_table(records, classes: List[str]) -> None:
    print(f"\n{'image':34s} {'true':12s} {'pass 1':12s} {'pass 2 (output)':22s}")
    correct = known = 0
    for r in records:
        idx = _true_label(r["source"], classes)
        true = None if idx is None else classes[idx]
        p1, p2 = r["pass1"], r["prediction"]
        if true is not None:
            known += 1
            correct += p2["label"] == true
        mark = "" if true is None else (" ok" if p2["label"] == true else " WRONG")
        print(f"{os.path.basename(r['source'])[:34]:34s} {str(true):12s} {p1['label']:12s} {p2['label']:12s} "
              f"{p2['prob']:.2f}{mark}")
    if known:
        print(f"\naccuracy on the {known} labelled samples: {100 * correct / known:.1f}%")


def run(args: argparse.Namespace) -> int:
    """Run the demo. Returns 0, or 1 when some images failed; raises UsageError (exit 2) / Interrupted (130)."""
    lm = load_model_arg(args.model, args.checkpoint)
    if not lm.is_gatta:
        raise A.UsageError(f"model {lm.name} has no GAttA layers; the demo needs a GAttA model")
    folder = args.images or samples_folder()
    found, _ = collect_inputs([folder])
    if not found:
        raise A.UsageError(f"no images in {folder}")
    maps, figure = MapOptions(gain=not args.raw, gradcam=False), FigureOptions()
    settings = run_settings("demo", lm, maps, figure)
    try:
        check_out_dir(args.out, settings, args.overwrite)
    except (ValueError, OSError) as e:
        raise A.UsageError(str(e)) from None
    print(f"model {lm.name}: {lm.meta.get('dataset', '?')}, input {lm.preprocess['channels']}x"
          f"{lm.preprocess['size'][0]}x{lm.preprocess['size'][1]}; alphas "
          + ", ".join(f"{k}={v:+.3f}" for k, v in lm.model.alphas.items()))
    files = [(p, n, s) for (p, n), s in zip(found, unique_stems([p for p, _ in found], reserved=("index", "alphas")))]
    previous = torch.get_num_threads()
    torch.set_num_threads(auto_threads(lm))
    try:
        records, errors = explain_files(lm, files, args.out, maps, figure, label_of=lambda p: _true_label(p, lm.classes))
    except BatchInterrupted as stop:
        write_index(args.out, lm, settings, stop.records, stop.errors, [], {"interrupted": True, "extra_files": []})
        raise A.Interrupted(str(stop)) from None
    finally:
        torch.set_num_threads(previous)
    save_figure(alpha_bars(lm.model.alphas), os.path.join(args.out, "alphas.png"))
    write_index(args.out, lm, settings, records, errors, [], {"extra_files": ["alphas.png"]})
    report_resized(records, lm)
    _print_table(records, lm.classes)
    print(f"wrote figures, overlays, maps (.npz) and summaries for {len(records)} image(s) to {args.out}/")
    return 1 if errors else 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
