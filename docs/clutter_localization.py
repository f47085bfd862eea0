"""Localization on the garments-in-clutter test set, per checkpoint: rank-based measures against fitted priors.

Usage (the first 1,000 fixed test images of fmnist-clutter; a seed's GAttA and baseline model):
    OMP_NUM_THREADS=1 .venv/bin/python docs/clutter_localization.py \\
        --checkpoint runs/clutter_gatta_s2/final.pt --checkpoint runs/clutter_base_s2/final.pt \\
        --n 1000 --out docs/results/clutter_localization_s2
    # bundled models (seed 0): --checkpoint fmnist-clutter-gatta-resnet --checkpoint fmnist-clutter-resnet
    # the first generator's test set (fragments may share the label's class), for comparisons: --test-set old

Priors are fitted on the first 10,000 training images only (gatta_viz.metrics.localization.fit_priors): the
mean training mask, and a centre prior whose width is chosen per measure (only energy depends on it). For each
checkpoint it runs gatta_viz.metrics.localization_report.localization_report (gain map, each layer's gain map, total
gain, raw agreement, Grad-CAM at the last conv stage, integrated gradients, all for the predicted class where
class-specific; random, centre and mean-mask references) and the prediction of every one of the 10,000 test
images (accuracy, paired comparisons between test sets). Writes OUT/report.json (every number, per image too),
OUT/report.txt (tables per checkpoint, the summary and the fixed verdict rule) and OUT/examples.png (the first
test images with the gain map, its layers, Grad-CAM, IG and the priors, from the first GAttA checkpoint, titled
with each map's pixel ROC-AUC).
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
from tqdm import tqdm  # noqa: E402

from gatta_viz.data.clutter import CLUTTER_NORMALIZATION, TEST_BACKGROUNDS, make_clutter  # noqa: E402
from gatta_viz.data.datasets import load_dataset, load_fashion_mnist  # noqa: E402
from gatta_viz.metrics.faithfulness import explain_func  # noqa: E402
from gatta_viz.metrics.localization import fit_priors  # noqa: E402
from gatta_viz.metrics.localization_report import localization_report, report_text  # noqa: E402
from gatta_viz.models.checkpoint import load_model  # noqa: E402

DEFAULT_METHODS = ("gain", "total_gain", "agreement", "gradcam", "integrated_gradients", "random", "centre", "mean_mask")
EXAMPLE_MAPS = ("gain", "gain:layer1", "gain:layer2", "gain:layer3", "gradcam", "integrated_gradients", "mean_mask")
N_PRIOR = 10_000  # training images the priors are fitted on


def label(path: str) -> str:
    """``run_dir/file.pt`` of a checkpoint path (or the bundled name), for tables."""
    if not os.path.exists(path):
        return path
    return os.path.join(os.path.basename(os.path.dirname(os.path.abspath(path))), os.path.basename(path))


def check_normalisation(lm, data) -> None:
    """Warn on stderr when the checkpoint was trained with another normalisation than the data's."""
    mean = lm.preprocess.get("mean")
    if mean is not None and not np.allclose(mean, data.mean, atol=1e-3):
        print(f"warning: {lm.path} was trained with mean {mean}, the data uses {list(data.mean)}: "
              "is it an fmnist-clutter model?", file=sys.stderr)


def test_set(which: str):
    """The 10,000 fixed test images: ``new`` (clean distractors) or ``old`` (the first generator)."""
    if which == "new":
        return load_dataset("fmnist-clutter", "test")
    d = make_clutter(load_fashion_mnist("test"), 10_000, TEST_BACKGROUNDS, seed=1, clean_distractors=False)
    d.mean, d.std = CLUTTER_NORMALIZATION
    return d


@torch.no_grad()
def predictions(net: torch.nn.Module, data, batch_size: int = 500) -> np.ndarray:
    """Predicted class (pass 2 for GAttA) of every image."""
    x, _ = data.tensors()
    was = net.training
    net.eval()
    try:
        out = [net(x[i: i + batch_size]).argmax(1) for i in tqdm(range(0, len(x), batch_size), desc="predict", leave=False)]
    finally:
        net.train(was)
    return torch.cat(out).numpy()


def summary(reports: Dict[str, Dict[str, Any]]) -> str:
    """One line per checkpoint: accuracy, ROC-AUC and top-k share of gain / gradcam / priors, and the verdict."""
    cols = ("gain", "gradcam", "mean_mask", "centre", "random")
    head = f"{'checkpoint':<30}{'acc (10k)':>10}" + "".join(f"{m + ' AUC / top-k':>26}" for m in cols) + "  verdict (gain)"
    lines = [head, "-" * len(head)]
    for name, rep in reports.items():
        row = f"{name:<30}{rep['accuracy_all']:>10.4f}"
        for m in cols:
            r = rep["methods"].get(m)
            row += f"{r['auc']:>14.3f} / {r['topk']:.3f}  " if r else f"{'-':>26}"
        v = rep.get("verdict")
        row += "  " + (("PASS" if v["passes"] else "FAIL") + f" (beyond priors: {'yes' if v['beyond_priors'] else 'no'}, "
                       f"as good as Grad-CAM: {'yes' if v['as_good_as_gradcam'] else 'no'})" if v else "n/a (no gain map)")
        lines.append(row)
    return "\n".join(lines)


def examples(lm, data, rep: Dict[str, Any], priors, k: int, path: str) -> str:
    """Draw the first ``k`` images with the example maps of a GAttA checkpoint; returns the path."""
    from gatta_viz.render.save import save_figure
    from gatta_viz.analysis.localization_plots import localization_examples

    d = data.subset(k)
    x, y = d.tensors()
    pred = rep["predicted"][:k]
    maps = {}
    for name in EXAMPLE_MAPS:
        if name not in rep["methods"]:
            continue
        if name in priors:
            maps[name] = np.broadcast_to(priors[name].rank_map, (k,) + priors[name].rank_map.shape)
        else:
            method, _, layer = name.partition(":")
            layer = layer or (rep["gradcam_layer"] if method == "gradcam" else None)
            maps[name] = explain_func(lm.model, x, pred, method=method, layer=layer)[:, 0]
    scores = {m: [np.nan if v is None else v for v in rep["methods"][m]["auc_per_image"][:k]] for m in maps}
    classes = lm.classes
    rows = [f"true {classes[int(t)]}\npred {classes[int(p)]}" for t, p in zip(y, pred)]
    fig = localization_examples(d.images[:, 0].numpy() / 255.0, d.masks.numpy(), maps, scores, rows)
    return save_figure(fig, path)


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", required=True, help="a checkpoint or bundled name (repeat)")
    p.add_argument("--n", type=int, default=1000, help="the first N fixed test images (default 1000)")
    p.add_argument("--out", default="docs/results/clutter_localization")
    p.add_argument("--test-set", choices=("new", "old"), default="new",
                   help="new: clean distractors (default); old: the first generator (fragments may share the label's class)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--no-per-layer", action="store_true", help="skip each layer's gain map alone")
    p.add_argument("--tolerance", type=int, default=0, help="pointing-game tolerance in pixels")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="random-map seed")
    p.add_argument("--examples", type=int, default=6, help="images in examples.png (0: none)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train = load_dataset("fmnist-clutter", "train").subset(N_PRIOR)
    priors = fit_priors(train.masks.numpy())
    del train
    print(f"priors fitted on {N_PRIOR} training images ({time.perf_counter() - t0:.0f} s): "
          + "; ".join(f"{k}: {v.note}" for k, v in priors.items()), flush=True)
    data = test_set(args.test_set)
    reports: Dict[str, Dict[str, Any]] = {}
    drawn = None
    os.makedirs(args.out, exist_ok=True)
    for path in args.checkpoint:
        lm = load_model(path)
        check_normalisation(lm, data)
        t0 = time.perf_counter()
        pred_all = predictions(lm.model, data)
        rep = localization_report(lm, data, args.methods, args.n, not args.no_per_layer, args.batch_size,
                                  args.seed, args.tolerance, priors=priors)
        correct = pred_all == data.labels.numpy()
        rep.update(checkpoint=label(path), path=os.path.abspath(path) if os.path.exists(path) else path,
                   seconds=time.perf_counter() - t0, threads=args.threads, test_set=args.test_set,
                   epochs_trained=len(lm.meta.get("history", [])) or None, seed=lm.meta.get("seed"),
                   alphas=dict(lm.model.alphas) if hasattr(lm.model, "alphas") else None,
                   accuracy_all=float(correct.mean()), correct_all=[bool(c) for c in correct])
        reports[label(path)] = rep
        print(report_text(rep) + f"\naccuracy on all {len(correct)} test images: {correct.mean():.4f}"
              f"\n({rep['seconds']:.0f} s)\n", flush=True)
        if drawn is None and args.examples > 0 and lm.is_gatta:
            drawn = examples(lm, data, rep, priors, args.examples, os.path.join(args.out, "examples.png"))
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump({"dataset": "fmnist-clutter", "split": "test", "test_set": args.test_set, "n": args.n,
                   "n_prior": N_PRIOR, "command": " ".join(sys.argv),
                   "priors": {k: {"note": v.note, "fit": v.fit, "rank_map": v.rank_map.tolist()} for k, v in priors.items()},
                   "reports": reports}, f, indent=1)
    text = "\n\n".join([summary(reports)] + [report_text(r) + f"\naccuracy on all 10,000 test images: {r['accuracy_all']:.4f}"
                                             for r in reports.values()])
    with open(os.path.join(args.out, "report.txt"), "w") as f:
        f.write(text + "\n")
    print(summary(reports))
    print(f"wrote {args.out}/report.json, report.txt" + (", examples.png" if drawn else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
