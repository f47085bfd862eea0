"""Accuracy and noise robustness over training seeds: mean +/- sd per model kind, paired differences by seed.

Usage (the toy runs of docs/RESULTS.md):
    .venv/bin/python docs/seed_report.py \
        --group gatta_toy=runs/toy_gatta_s0/final.pt,runs/toy_gatta_s1/final.pt,runs/toy_gatta_s2/final.pt \
        --group toy=runs/toy_base_s0/final.pt,runs/toy_base_s1/final.pt,runs/toy_base_s2/final.pt \
        --pair gatta_toy:toy --out docs/results/seeds_toy

Every checkpoint is evaluated on the full Fashion-MNIST test set with the same noisy images
(gatta_viz.training.evaluate.evaluate_model). Checkpoints are paired by position in their group (same seed).
Writes OUT/seeds.json, OUT/seeds.md (tables) and OUT/noise_seeds.png (mean curve, band = min..max over seeds).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from typing import Dict, List, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import gatta_viz as gv  # noqa: E402
from gatta_viz.training.evaluate import NOISE_SIGMAS, evaluate_model  # noqa: E402


def mean_sd(v: Sequence[float]) -> tuple:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def paired(a: Sequence[float], b: Sequence[float]) -> Dict[str, float]:
    """Paired differences a - b: mean, sd, standard error of the mean, and mean / SE."""
    d = [x - y for x, y in zip(a, b)]
    m, sd = mean_sd(d)
    se = sd / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"mean": m, "sd": sd, "se": se, "t": m / se if se and se > 0 else float("nan"), "n": len(d), "diffs": d}


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group", action="append", required=True, help="NAME=ckpt1,ckpt2,... (one per seed, in seed order)")
    p.add_argument("--pair", action="append", default=[], help="A:B, report A - B paired by seed")
    p.add_argument("--sigmas", type=float, nargs="+", default=list(NOISE_SIGMAS))
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    groups = {}
    for g in args.group:
        name, _, paths = g.partition("=")
        groups[name] = paths.split(",")
    data = gv.load_fashion_mnist("test")
    results: Dict[str, List[dict]] = {}
    for name, paths in groups.items():
        results[name] = []
        for path in paths:
            r = evaluate_model(gv.load_model(path), data, args.sigmas)
            r["path"] = path
            r["seed"] = gv.read_checkpoint(path)["meta"].get("seed")
            results[name].append(r)
            print(f"{name} {path}: {100 * r['accuracy']['0.0']:.2f}%", flush=True)
    os.makedirs(args.out, exist_ok=True)
    sig = [str(s) for s in args.sigmas]
    lines = ["| model | seeds | " + " | ".join(f"sigma={s}" for s in sig) + " |", "|---|---|" + "---:|" * len(sig)]
    for name, rs in results.items():
        cells = []
        for s in sig:
            m, sd = mean_sd([100 * r["accuracy"][s] for r in rs])
            cells.append(f"{m:.2f} ± {sd:.2f}")
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")
        if "accuracy_pass1" in rs[0]:
            cells = [f"{mean_sd([100 * r['accuracy_pass1'][s] for r in rs])[0]:.2f} ± {mean_sd([100 * r['accuracy_pass1'][s] for r in rs])[1]:.2f}" for s in sig]
            lines.append(f"| {name} (pass 1 only) | {len(rs)} | " + " | ".join(cells) + " |")
    per_seed = ["", "| model | " + " | ".join(f"seed {r['seed']}" for r in next(iter(results.values()))) + " |",
                "|---|" + "---:|" * len(next(iter(results.values())))]
    for name, rs in results.items():
        per_seed.append(f"| {name} | " + " | ".join(f"{100 * r['accuracy']['0.0']:.2f}" for r in rs) + " |")
    pairs = {}
    pair_lines = ["", "| paired by seed | clean: mean diff ± SE (t) | " + " | ".join(f"sigma={s}" for s in sig[1:]) + " |",
                  "|---|---:|" + "---:|" * (len(sig) - 1)]
    for spec in args.pair:
        a, _, b = spec.partition(":")
        per_sigma = {s: paired([100 * r["accuracy"][s] for r in results[a]], [100 * r["accuracy"][s] for r in results[b]]) for s in sig}
        pairs[spec] = per_sigma
        c = per_sigma[sig[0]]
        pair_lines.append(f"| {a} - {b} | {c['mean']:+.2f} ± {c['se']:.2f} ({c['t']:.1f}) | "
                          + " | ".join(f"{per_sigma[s]['mean']:+.2f} ± {per_sigma[s]['se']:.2f}" for s in sig[1:]) + " |")
    text = "\n".join(lines + per_seed + pair_lines) + "\n"
    with open(os.path.join(args.out, "seeds.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "seeds.json"), "w") as f:
        json.dump({"results": results, "pairs": pairs}, f, indent=2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    xs = [float(s) for s in sig]
    for name, rs in results.items():
        ys = [[100 * r["accuracy"][s] for r in rs] for s in sig]
        ax.plot(xs, [statistics.mean(v) for v in ys], marker="o", label=f"{name} (mean of {len(rs)} seeds)")
        ax.fill_between(xs, [min(v) for v in ys], [max(v) for v in ys], alpha=0.25)
    ax.set_xlabel("additive Gaussian noise sigma (pixels in [0, 1])")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Noise robustness over seeds (band: min..max)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "noise_seeds.png"), dpi=130)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
