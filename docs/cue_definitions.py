"""Which definition of a class cue steers a scene model's gain map to the cued item? (docs/RESULTS.md section 8)

Compared on validation scenes (test scenes 5,000-5,499, disjoint from the first 2,000 the report measures), so
the choice does not peek at the reported numbers:
  mean    the stored query: mean pass-1 q_avg of garments of the class alone on the canvas (the default);
  negated -mean;
  centred mean minus the average of all classes' queries, rescaled to the mean's norm;
  negated-centred.

    .venv/bin/python docs/cue_definitions.py CHECKPOINT [CHECKPOINT ...] > docs/results/scenes/cue_definitions.txt
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gatta_viz.data.scenes import load_scenes  # noqa: E402
from gatta_viz.metrics.cueing import measure_cues, scene_report  # noqa: E402
from gatta_viz.models.checkpoint import load_model  # noqa: E402


def definitions(q: torch.Tensor) -> dict:
    """name -> (C, d) queries."""
    centred = q - q.mean(0, keepdim=True)
    centred = centred * (q.norm(dim=1, keepdim=True) / centred.norm(dim=1, keepdim=True))
    return {"mean": q, "negated": -q, "centred": centred, "negated-centred": -centred}


def main() -> int:
    torch.set_num_threads(1)
    scenes = load_scenes("fmnist-pairs", "test").subset(indices=range(5000, 5500))
    print(f"{'checkpoint':28s} {'definition':16s} {'success gain':>13s} {'none+low':>9s} "
          + " ".join(f"{'L' + str(i + 1):>6s}" for i in range(3)) + f" {'d prob':>8s} {'read-out - p2':>14s}")
    for path in sys.argv[1:]:
        lm = load_model(path)
        for name, q in definitions(lm.class_queries).items():
            rep = scene_report(measure_cues(lm.model, scenes, q, n=None, progress=False), scenes)
            c = rep["cue"]
            layers = [c[m]["success"]["all"]["mean"] for m in rep["maps"][1:]]
            print(f"{os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))[-28:]:28s} {name:16s} {100 * c['gain']['success']['all']['mean']:13.1f} "
                  f"{100 * c['gain']['success']['none+low']['mean']:9.1f} " + " ".join(f"{100 * v:6.1f}" for v in layers)
                  + f" {100 * rep['cued_class']['prob_change']['all']['mean']:+8.2f}"
                  + f" {100 * rep['readout_minus_pass2']['all']['mean']:+14.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
