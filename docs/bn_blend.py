"""Where one shared set of BatchNorm statistics sits between the two passes' own.

For a checkpoint trained with statistics shared by both passes (OLD) and the same weights with each pass's
statistics re-estimated on training data (`gatta-viz recalibrate OLD NEW`), every BatchNorm whose input differs
between the passes gets, per channel, the blend fraction
    f = (shared - pass1) . (pass2 - pass1) / |pass2 - pass1|^2
of its running mean (0: the shared estimate is pass 1's, 1: pass 2's), and the relative gap between the passes
|pass2 - pass1| / |pass1| (means over channels, as vectors). Prints a markdown table.

Run:  .venv/bin/python docs/bn_blend.py OLD.pt NEW.pt [OLD2.pt NEW2.pt ...]
"""
from __future__ import annotations

import statistics
import sys

import torch

REPO = __file__.rsplit("/docs/", 1)[0]
sys.path.insert(0, REPO)
import gatta_viz as gv  # noqa: E402


def main(argv):
    print("| model | BatchNorms with two sets | blend fraction of the shared mean: median (min-max) | pass-2 vs pass-1 mean: relative gap, median (min-max) | pass-2 / pass-1 variance, median |")
    print("|---|---:|---:|---:|---:|")
    for old, new in zip(argv[::2], argv[1::2]):
        shared = gv.load_model(old, norm_stats="shared").model
        per = gv.load_model(new).model
        s_named, p_named = dict(shared.backbone.named_modules()), dict(per.backbone.named_modules())
        fr, gaps, vr = [], [], []
        for n in per.pass2_stats.names:
            m1, m2 = p_named[n].running_mean, per.pass2_stats.of(n).running_mean
            ms = s_named[n].running_mean
            d = m2 - m1
            fr.append(float((ms - m1) @ d / (d @ d)))
            gaps.append(float(d.norm() / m1.norm()))
            vr.append(float((per.pass2_stats.of(n).running_var / p_named[n].running_var).median()))
        med = lambda v: f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"  # noqa: E731
        print(f"| {old} | {len(fr)} | {med(fr)} | {med(gaps)} | {statistics.median(vr):.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
