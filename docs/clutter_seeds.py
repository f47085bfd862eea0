"""Localization over seeds, and the bundled models on the old and the new test set (docs/RESULTS.md section 9).

Usage (after docs/clutter_localization.py has written one folder per seed, and one on the old test set):
    .venv/bin/python docs/clutter_seeds.py --seed-dir docs/results/clutter_localization_s0 \\
        [--seed-dir docs/results/clutter_localization_s2] --old docs/results/clutter_localization_old_s0 \\
        --out docs/results/clutter_localization_seeds.txt

Per map and measure: each seed's mean ± per-image SE, and the mean ± SD over the seeds (the SD needs two or more
seeds); the fixed rule's verdict per seed. Then the retraining trigger fixed in RESULTS 9: for each model measured
on both test sets, the paired change (new - old) of accuracy over the 10,000 test images and of the gain map's
ROC-AUC, top-k share and energy over the first 1,000, and whether any moves by more than 2 SE. Writes the text
file and a JSON file beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List

import numpy as np

MEASURES = (("auc", "ROC-AUC"), ("topk", "top-k share"), ("ap", "avg precision"), ("pointing", "pointing"),
            ("energy", "energy (+ part)"))
MAPS = ("gain", "gain:layer1", "gain:layer2", "gain:layer3", "total_gain", "agreement", "gradcam", "integrated_gradients",
        "baseline gradcam", "baseline integrated_gradients", "mean_mask", "centre", "random")


def load(folder: str) -> Dict[str, Any]:
    with open(os.path.join(folder, "report.json")) as f:
        return json.load(f)


def split(rep: Dict[str, Any]):
    """(GAttA report, baseline report) of one folder (a report with a gain map is the GAttA one)."""
    g = [r for r in rep["reports"].values() if "gain" in r["methods"]]
    b = [r for r in rep["reports"].values() if "gain" not in r["methods"]]
    return (g[0] if g else None), (b[0] if b else None)


def entries(rep: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Map name -> the report's entry, the baseline's maps prefixed with 'baseline '."""
    g, b = split(rep)
    out = dict(g["methods"]) if g else {}
    if b:
        out.update({f"baseline {m}": r for m, r in b["methods"].items() if m in ("gradcam", "integrated_gradients")})
    return out


def per_image(entry: Dict[str, Any], key: str) -> np.ndarray:
    vals = entry["hit_per_image"] if key == "pointing" else entry[f"{key}_per_image"]
    fill = 0.0 if key == "energy" else np.nan  # energy: a map without positive values scores 0
    return np.array([fill if v is None else float(v) for v in vals])


def paired(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    d = a - b
    d = d[np.isfinite(d)]
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"mean": float(d.mean()), "se": se, "n": int(len(d))}


def over_seeds(seeds: Dict[str, Dict[str, Any]], out: Dict[str, Any]) -> List[str]:
    """Per map: 'beyond priors' and 'ROC-AUC as good as Grad-CAM' on each seed, and the statement over seeds."""
    lines, out["beyond_priors"] = [], {}
    for m in MAPS:
        per = {}
        for s, v in seeds.items():
            e = entries(v["rep"]).get(m)
            if e and e.get("tests"):
                per[s] = (bool(e["tests"].get("beyond_priors")), e["tests"].get("auc_as_good_as_gradcam"))
        if not per:
            continue
        bp = [b for b, _ in per.values()]
        word = "holds" if all(bp) else "fails" if not any(bp) else "mixed"
        out["beyond_priors"][m] = {"per_seed": {s: b for s, (b, _) in per.items()}, "over_seeds": word}
        cells = "  ".join(f"seed {s}: {'yes' if b else 'no'}{'' if g is None else (' / ' + ('yes' if g else 'no'))}"
                          for s, (b, g) in per.items())
        lines.append(f"  {m:<30} beyond priors {word:<6} ({cells})")
    lines.append("  (per seed: beyond priors yes/no, then ROC-AUC as good as Grad-CAM yes/no)")
    return lines


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed-dir", action="append", required=True, help="a clutter_localization.py folder (new test set)")
    p.add_argument("--old", action="append", default=[], help="a folder measured with --test-set old (same models)")
    p.add_argument("--out", default="docs/results/clutter_localization_seeds.txt")
    args = p.parse_args(argv)
    seeds = {}
    for d in args.seed_dir:
        rep = load(d)
        g, b = split(rep)
        seeds[str((g or b).get("seed"))] = {"folder": d, "rep": rep, "g": g, "b": b}
    lines: List[str] = []
    out: Dict[str, Any] = {"seeds": list(seeds), "maps": {}, "verdicts": {}, "trigger": {}}
    lines.append(f"seeds: {', '.join(seeds)} (first {next(iter(seeds.values()))['rep']['n']} test images of the new test set)")
    for s, v in seeds.items():
        g, b = v["g"], v["b"]
        acc = f"GAttA {g['accuracy_all']:.4f}" if g else ""
        acc += f", baseline {b['accuracy_all']:.4f}" if b else ""
        lines.append(f"seed {s}: accuracy on the 10,000 test images: {acc}; alphas {g.get('alphas') if g else '-'}")
    for key, title in MEASURES:
        head = f"{title:<30}" + "".join(f"{'seed ' + s:>18}" for s in seeds) + f"{'mean ± SD over seeds':>24}"
        lines += ["", head, "-" * len(head)]
        for m in MAPS:
            vals, cells = [], []
            for s, v in seeds.items():
                e = entries(v["rep"]).get(m)
                if e is None:
                    cells.append(f"{'-':>18}")
                    continue
                vals.append(e[key])
                cells.append(f"{e[key]:>10.3f} ± {e[key + '_se']:.3f}")
            if not vals:
                continue
            sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
            out["maps"].setdefault(m, {})[key] = {"per_seed": vals, "mean": float(np.mean(vals)), "sd": sd}
            lines.append(f"{m:<30}" + "".join(cells) + (f"{np.mean(vals):>14.3f} ± {sd:.3f}" if len(vals) > 1 else f"{'(one seed)':>24}"))
    lines.append("")
    lines.append("verdict per seed (rank-based rule, RESULTS 9; lower 95% bounds of gain minus each reference):")
    for s, v in seeds.items():
        vd = v["g"] and v["g"].get("verdict")
        if not vd:
            continue
        out["verdicts"][s] = vd
        lows = ", ".join(f"{k} {x:+.3f}" for k, x in vd["lower95"].items())
        lines.append(f"  seed {s}: {'PASS' if vd['passes'] else 'FAIL'} (beyond priors: {'yes' if vd['beyond_priors'] else 'no'}; "
                     f"as good as Grad-CAM: {'yes' if vd['as_good_as_gradcam'] else 'no'}, upper 95% of AUC gain - "
                     f"Grad-CAM {vd['auc_minus_gradcam_upper95']:+.3f}); {lows}")
        er = v["g"].get("energy_rule")
        if er:
            lines.append(f"          first (energy) rule: {'PASS' if er['passes'] else 'FAIL'}")
    lines += ["", "each map against the image-independent guesses, per seed (the verdict's tests applied to every map: ROC-AUC and",
              "top-k share beyond random, the mean training mask and the fitted centre prior; over seeds: holds / fails / mixed)"]
    lines += over_seeds(seeds, out)
    for od in args.old:
        old = load(od)
        lines += ["", f"old test set ({od}) vs new: paired change new - old, '>2 SE' marks the retraining trigger"]
        for name, ro in old["reports"].items():
            rn = next((r for s in seeds.values() for r in s["rep"]["reports"].values() if r["checkpoint"] == ro["checkpoint"]), None)
            if rn is None:
                continue
            t: Dict[str, Any] = {"accuracy": paired(np.array(rn["correct_all"], float), np.array(ro["correct_all"], float))}
            t["accuracy"].update(old=ro["accuracy_all"], new=rn["accuracy_all"])
            m = "gain" if "gain" in ro["methods"] else "gradcam"
            for key in ("auc", "topk", "energy"):
                t[f"{m} {key}"] = paired(per_image(rn["methods"][m], key), per_image(ro["methods"][m], key))
                t[f"{m} {key}"].update(old=ro["methods"][m][key], new=rn["methods"][m][key])
            for k, d in t.items():
                d["beyond_2se"] = bool(abs(d["mean"]) > 2 * d["se"])
                lines.append(f"  {ro['checkpoint']:<30} {k:<14} old {d['old']:.4f}  new {d['new']:.4f}  change "
                             f"{d['mean']:+.4f} ± {d['se']:.4f}{'  > 2 SE' if d['beyond_2se'] else ''}")
            out["trigger"][ro["checkpoint"]] = t
    text = "\n".join(lines)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(out, f, indent=1)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
