"""Two-garment scenes (docs/RESULTS.md section 8): accuracy GAttA vs baseline, where uncued attention goes,
cue success (energy share and its ranked version: ROC-AUC of the cued item's pixels against the other item's),
read-out by cueing, controls.

    .venv/bin/python docs/scenes_report.py --gatta G0.pt G1.pt --baseline B0.pt B1.pt --out docs/results/scenes

The GAttA checkpoints must hold class queries and a calibrated steering sign (``gatta-viz cues CKPT CKPT``).
Both cue definitions are measured: the class mean (the rule's) and the steering cue (the default of ``lm.cue``). Pairs are formed by
position (seed 0 with seed 0, ...). Writes report.json, report.txt, cue_success.png and examples.png.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gatta_viz.analysis.scene_plots import plot_cue_examples, plot_cue_success  # noqa: E402
from gatta_viz.data.datasets import load_dataset  # noqa: E402
from gatta_viz.data.scenes import SCENE_NORMALIZATION, load_scenes  # noqa: E402
from gatta_viz.metrics.cueing import (OVERLAP_BINS, both_items_correct, cue_examples, item_recall, measure_cues,  # noqa: E402
                                      overlap_bins, scene_logits, scene_report)
from gatta_viz.metrics.stats import mean_se  # noqa: E402
from gatta_viz.models.checkpoint import load_model, steering_queries  # noqa: E402

BINS = [b for b, _, _ in OVERLAP_BINS] + ["none+low", "all"]


def _mean_se(v: np.ndarray) -> Dict[str, float]:
    m, se, n = mean_se(v)
    return {"mean": m, "se": se, "n": n}


def _select(bins: np.ndarray, name: str) -> np.ndarray:
    if name == "all":
        return np.ones(len(bins), bool)
    if name == "none+low":
        return (bins == "none") | (bins == "low")
    return bins == name


def accuracy_block(g: Dict[str, np.ndarray], b: Dict[str, np.ndarray], labels: np.ndarray, bins: np.ndarray) -> Dict[str, Any]:
    """Both-items accuracy and per-item recall by bin; paired differences GAttA - baseline and pass 2 - pass 1."""
    ok = {"gatta_pass2": both_items_correct(g["pass2"], labels), "gatta_pass1": both_items_correct(g["pass1"], labels),
          "baseline": both_items_correct(b["output"], labels)}
    rec = {"gatta_pass2": item_recall(g["pass2"], labels), "baseline": item_recall(b["output"], labels)}
    out: Dict[str, Any] = {}
    for name in BINS:
        sel = _select(bins, name)
        out[name] = {
            **{k: float(v[sel].mean()) for k, v in ok.items()},
            **{f"recall_{k}": float(v[sel].mean()) for k, v in rec.items()},
            "gatta_minus_baseline": _mean_se(ok["gatta_pass2"][sel].astype(float) - ok["baseline"][sel]),
            "pass2_minus_pass1": _mean_se(ok["gatta_pass2"][sel].astype(float) - ok["gatta_pass1"][sel]),
            "n": int(sel.sum()),
        }
    return out


def padded_multimnist(root=None):
    """The MultiMNIST-protocol test scenes (36x36) centred on a black 48x48 canvas, as the 48x48 models see them."""
    s = load_scenes("fmnist-pairs-multimnist", "test", root)
    s.mean, s.std = SCENE_NORMALIZATION["fmnist-pairs"]  # what the 48x48 models were trained with
    s.images = torch.nn.functional.pad(s.images, (6, 6, 6, 6))
    s.masks = torch.nn.functional.pad(s.masks, (6, 6, 6, 6))
    return s


def fmt(v: Dict[str, float], pct: bool = True) -> str:
    """``mean ± se``, in percent points when ``pct``."""
    return f"{100 * v['mean']:.1f} ± {100 * v['se']:.1f}" if pct else f"{v['mean']:.2f} ± {v['se']:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gatta", nargs="+", required=True)
    p.add_argument("--baseline", nargs="+", required=True)
    p.add_argument("--n", type=int, default=2000, help="scenes for the map and cue measurements")
    p.add_argument("--out", default="docs/results/scenes")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if len(args.gatta) != len(args.baseline):
        p.error("give one baseline per GAttA checkpoint (pairs by position)")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    test = load_dataset("fmnist-pairs", "test")
    mm = padded_multimnist()
    labels, bins = test.labels.numpy(), overlap_bins(test.overlap.numpy())
    report: Dict[str, Any] = {"seeds": [], "bins": {b: int((bins == b).sum()) for b, _, _ in OVERLAP_BINS}}
    lines: List[str] = []
    for gpath, bpath in zip(args.gatta, args.baseline):
        g, b = load_model(gpath), load_model(bpath)
        if g.class_queries is None:
            print(f"error: {gpath} has no class queries; run `gatta-viz cues {gpath} {gpath}`", file=sys.stderr)
            return 2
        for lm in (g, b):  # both splits use the train scenes' normalisation, which each checkpoint records
            if tuple(lm.preprocess["mean"]) != tuple(test.mean) or tuple(lm.preprocess["std"]) != tuple(test.std):
                print(f"error: {lm.name} was not trained on fmnist-pairs (normalisation {lm.preprocess['mean']})",
                      file=sys.stderr)
                return 2
        gl, bl = scene_logits(g.model, test), scene_logits(b.model, test)
        acc = accuracy_block(gl, bl, labels, bins)
        gm, bm = scene_logits(g.model, mm), scene_logits(b.model, mm)
        mm_acc = {"gatta_pass2": float(both_items_correct(gm["pass2"], mm.labels.numpy()).mean()),
                  "gatta_pass1": float(both_items_correct(gm["pass1"], mm.labels.numpy()).mean()),
                  "baseline": float(both_items_correct(bm["output"], mm.labels.numpy()).mean())}
        # the pre-registered cue (class mean) and the steering cue (centred, signed on training scenes)
        steer = steering_queries(g.class_queries, g.meta["class_queries"]["sign"])
        rep = scene_report(measure_cues(g.model, test, g.class_queries, n=args.n), test)
        rep_steer = scene_report(measure_cues(g.model, test, steer, n=args.n), test)
        seed = {"gatta": gpath, "baseline": bpath, "accuracy": acc, "multimnist_padded": mm_acc, "maps_and_cues": rep,
                "steering": rep_steer, "cue_calibration": g.meta["class_queries"]}
        report["seeds"].append(seed)
        if len(report["seeds"]) == 1:
            plot_cue_examples(cue_examples(g.model, test, steer), os.path.join(args.out, "examples.png"))
            plot_cue_examples(cue_examples(g.model, test, g.class_queries), os.path.join(args.out, "examples_mean_cue.png"))
        lines += [f"## {os.path.basename(os.path.dirname(gpath)) or gpath} vs {os.path.basename(os.path.dirname(bpath)) or bpath}",
                  "both-items accuracy (%), 10,000 test scenes:",
                  f"{'bin':9s} {'n':>5s} {'GAttA p2':>9s} {'GAttA p1':>9s} {'base':>7s} {'GAttA-base':>15s} {'p2-p1':>15s}"]
        for name in BINS:
            a = acc[name]
            lines.append(f"{name:9s} {a['n']:5d} {100 * a['gatta_pass2']:9.2f} {100 * a['gatta_pass1']:9.2f} "
                         f"{100 * a['baseline']:7.2f} {fmt(a['gatta_minus_baseline']):>15s} {fmt(a['pass2_minus_pass1']):>15s}")
        lines.append(f"per-item recall (all): GAttA {100 * acc['all']['recall_gatta_pass2']:.2f}, "
                     f"baseline {100 * acc['all']['recall_baseline']:.2f}")
        lines.append(f"MultiMNIST-protocol scenes (36x36 centred on 48x48): GAttA {100 * mm_acc['gatta_pass2']:.2f} "
                     f"(pass 1 {100 * mm_acc['gatta_pass1']:.2f}), baseline {100 * mm_acc['baseline']:.2f}")
        lines.append(f"maps and cues on the first {rep['n']} scenes (per (scene, item) case; mean ± se):")
        hdr = f"{'':34s}" + "".join(f"{b:>16s}" for b in BINS)
        lines.append(hdr)

        def row(label: str, d: Dict[str, Dict[str, float]], pct: bool = True) -> None:
            lines.append(f"{label:34s}" + "".join(f"{fmt(d[b], pct) if d[b]['n'] > 1 else 'n/a':>16s}" for b in BINS))

        for mname in rep["maps"]:
            row(f"cue success {mname}", rep["cue"][mname]["success"])
        for mname in rep["maps"]:
            row(f"steering cue success {mname}", rep_steer["cue"][mname]["success"])
        row("cue success Grad-CAM (class)", rep["cue"]["gradcam"]["success"])
        row("random-query success gain", rep["cue"]["gain"]["random_query_success"])
        # ranked cue success: ROC-AUC of the cued item's own pixels against the other item's > 0.5
        for label, r in (("ranked", rep), ("steering ranked", rep_steer)):
            for mname in rep["maps"]:
                row(f"{label} success {mname}", r["cue"][mname]["ranked_success"])
            row(f"{label} AUC gain", r["cue"]["gain"]["ranked_auc"], pct=False)
        row("ranked success Grad-CAM (class)", rep["cue"]["gradcam"]["ranked_success"])
        row("random-query ranked success gain", rep["cue"]["gain"]["random_query_ranked_success"])
        row("uncued picks higher-scoring", rep["uncued"]["gain"]["picks_higher_scoring"])
        row("uncued picks bigger", rep["uncued"]["gain"]["picks_bigger"])
        row("uncued picks brighter", rep["uncued"]["gain"]["picks_brighter"])
        row("uncued split (densities <20%)", rep["uncued"]["gain"]["split"])
        row("uncued energy on items", rep["uncued"]["gain"]["share_items_total"])
        row("cued class prob change", rep["cued_class"]["prob_change"])
        row("cued class rank change", rep["cued_class"]["rank_change"], pct=False)
        row("cued class becomes top-1", rep["cued_class"]["becomes_top1"])
        row("cued class top-1 uncued", rep["cued_class"]["was_top1"])
        row("both-items: pass 2 (uncued)", rep["accuracy"]["pass2"])
        row("both-items: read-out by cueing", rep["accuracy"]["readout_top3"])
        row("read-out - pass 2 (paired)", rep["readout_minus_pass2"])
        row("steering: cued class prob change", rep_steer["cued_class"]["prob_change"])
        row("steering: cued class becomes top-1", rep_steer["cued_class"]["becomes_top1"])
        row("steering: read-out by cueing", rep_steer["accuracy"]["readout_top3"])
        row("steering: read-out - pass 2", rep_steer["readout_minus_pass2"])
        row("steering: absent enters top 2", rep_steer["controls"]["absent_enters_top2"])
        row("steering: absent pair stays top 2", rep_steer["controls"]["absent_pair_still_top2"])
        row("absent cue: prob change", rep["controls"]["absent_prob_change"])
        row("absent cue: enters top 2", rep["controls"]["absent_enters_top2"])
        row("absent cue: pair stays top 2", rep["controls"]["absent_pair_still_top2"])
        row("absent cue: item energy change", rep["controls"]["absent_items_share_change"])
        row("random query: prob change", rep["controls"]["random_prob_change"])
        lines.append("")
    plot_cue_success(report, os.path.join(args.out, "cue_success.png"))
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out, "report.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
