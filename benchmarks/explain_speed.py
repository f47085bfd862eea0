"""Speed of batch explain (``gatta-viz explain``) on the 30 sample images, beside the trace alone.

Run:  .venv/bin/python benchmarks/explain_speed.py               (about a minute on 2 CPU cores)
      .venv/bin/python benchmarks/explain_speed.py --threads 1 2 --repeats 5 --model fmnist-gatta-toy

Prints markdown tables:
- per thread count: the GAttA trace alone (batches of 16, as explain uses) and explain with every output
  (Fig. 3 PNG, overlays at the input's and the original's resolution, maps .npz, JSON summary), in images/s,
  from wall-clock time and from the process's CPU time (on a busy machine the two differ: CPU time is what
  the work costs, wall time what one waits);
- where one explained image's time goes (one thread).
The first explain run of each setting is a warm-up; each timed run builds its figure renderer anew, as a
``gatta-viz explain`` call does (model loading and imports are not timed). The machine's load average is
printed: other jobs on the cores slow every number down.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import gatta_viz as gv  # noqa: E402
from gatta_viz.cli.batch import auto_threads, collect_inputs, explain_files, unique_stems  # noqa: E402
from gatta_viz.cli.explain import build_parser  # noqa: E402
from gatta_viz.compute.explain import explain_batch  # noqa: E402
from gatta_viz.render.fig3 import Fig3Renderer  # noqa: E402

SAMPLES = os.path.join(REPO, "sample_images", "fashion-mnist")


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Tuple[float, float]:
    """Median wall and median CPU seconds of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def trace_all(model, x: torch.Tensor, batch: int = 16) -> None:
    with torch.no_grad():
        for i in range(0, len(x), batch):
            model.trace(x[i : i + batch])


def stage_times(lm, files: List[Tuple[str, str, str]], out: str, repeats: int, dpi: int) -> Dict[str, float]:
    """Milliseconds per image of each stage of explain (one thread), medians over ``repeats`` passes."""
    paths = [p for p, _, _ in files]
    stages: Dict[str, List[float]] = {k: [] for k in ("decode + preprocess", "trace + ablation (explain_batch)",
                                                      "Fig. 3 (update + PNG)", "overlays (input; original if it differs)",
                                                      "maps .npz + JSON")}
    for _ in range(repeats + 1):
        t = time.perf_counter()
        preps = [gv.prepare_image(gv.load_image(p), lm.preprocess) for p in paths]
        t1 = time.perf_counter()
        exs = explain_batch(lm, preps[:16], gradcam=False) + explain_batch(lm, preps[16:], gradcam=False)
        t2 = time.perf_counter()
        r = Fig3Renderer(exs[0])
        for i, ex in enumerate(exs):
            r.update(ex)
            r.to_png(os.path.join(out, f"f{i}.png"), dpi=dpi)
        t3 = time.perf_counter()
        for i, ex in enumerate(exs):
            extra = ({k + "_o": v for k, v in gv.explanation_overlays(ex, on="original").items()}
                     if ex.original_differs() else {})
            for n, im in {**gv.explanation_overlays(ex), **extra}.items():
                im.save(os.path.join(out, f"o{i}_{n}.png"), compress_level=1)
        t4 = time.perf_counter()
        for i, ex in enumerate(exs):
            ex.to_npz(os.path.join(out, f"m{i}.npz"))
            with open(os.path.join(out, f"s{i}.json"), "w") as f:
                json.dump(ex.summary(), f)
        t5 = time.perf_counter()
        for k, (a, b) in zip(stages, ((t, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5))):
            stages[k].append(1000 * (b - a) / len(exs))
    return {k: statistics.median(v[1:]) for k, v in stages.items()}


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=gv.DEFAULT_MODEL)
    ap.add_argument("--images", default=SAMPLES)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dpi", type=int, default=None, help="figure dpi (default: the explain command's)")
    args = ap.parse_args(argv)

    dpi = args.dpi or build_parser().get_default("dpi")
    lm = gv.load_model(args.model)
    found, _ = collect_inputs([args.images])
    files = [(p, name, stem) for (p, name), stem in zip(found, unique_stems([p for p, _ in found]))]
    n = len(files)
    x = torch.cat([gv.prepare_image(gv.load_image(p), lm.preprocess).tensor for p, _, _ in files])
    auto = auto_threads(lm)
    load = os.getloadavg()
    print(f"model {lm.name}, {n} images {tuple(x.shape[1:])}, {os.cpu_count()} CPU cores, "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) at the start; "
          f"`gatta-viz explain` picks {auto} thread(s) for this model; figures at {dpi} dpi\n")
    print("| threads | trace alone (img/s, wall) | trace alone (img/s, CPU) | explain, all outputs (img/s, wall) "
          "| explain, all outputs (img/s, CPU) |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for th in args.threads:
            torch.set_num_threads(th)
            tw, tc = timed(lambda: trace_all(lm.model, x), max(args.repeats, 5))
            ew, ec = timed(lambda: explain_files(lm, files, os.path.join(tmp, "out"), gv.MapOptions(gradcam=False),
                                                 gv.FigureOptions(dpi=dpi), progress=False), args.repeats)
            print(f"| {th}{' (auto)' if th == auto else ''} | {n / tw:.0f} | {n / tc:.0f} | {n / ew:.1f} | {n / ec:.1f} |")
        torch.set_num_threads(1)
        st = stage_times(lm, files, tmp, args.repeats, dpi)
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    print("| stage of explain (1 thread) | ms per image (wall) |")
    print("|---|---:|")
    for k, v in st.items():
        print(f"| {k} | {v:.1f} |")
    print(f"| total | {sum(st.values()):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
