"""Writing a whole data set's maps (``gatta-viz maps``): what the store costs over the trace, what a second process
buys, and the memory each process needs. One run prints every ratio side by side.

Run:  .venv/bin/python benchmarks/map_store.py                 (the 60,000 Fashion-MNIST training images; on an idle
                                                                2-core machine about 15-20 minutes)
      .venv/bin/python benchmarks/map_store.py --quick         (2,048 images: checks that everything runs)
      .venv/bin/python benchmarks/map_store.py --n 10000 --with-threads2 --json results.json

Each measurement runs in its own fresh process (this script in ``--worker`` mode), with the bundled
``fmnist-gatta-resnet``, chunks of 256 images and ``--threads`` torch threads per process (default 1):

1. trace only: the same images read chunk by chunk and traced (``torch.no_grad``, eval mode), nothing stored;
2. ``compute_maps`` in one process (a fresh store);
3. ``compute_maps`` in two processes under ``torchrun --standalone --nproc_per_node 2`` (gloo), each one thread;
4. with ``--with-threads2``: ``compute_maps`` in one process with two threads (the other way to use two cores).

Reported: seconds of the work itself (model and data already loaded; for torchrun the slowest rank, process-group
start and barriers included) and the wall time of the whole command, images/s, and each process's peak RSS
(``getrusage``). Targets (issue 20): writing costs <= 25% on top of the trace; 2 processes >= 1.5x one process on
2 cores; peak RSS per process <= 1.5 GB for the 60,000 training images.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL, DATASET, SPLIT, CHUNK = "fmnist-gatta-resnet", "fashion-mnist", "train", 256
TARGETS = {"overhead_pct": 25.0, "speedup": 1.5, "rss_mb": 1536.0}


def worker(mode: str, n: int, threads: int, out: str, report: str) -> None:
    """One measurement in this process: ``trace`` or ``maps``; writes seconds, threads and peak RSS to ``report``
    (``{rank}`` in the name is replaced by this process's rank)."""
    sys.path.insert(0, REPO)
    import torch

    import gatta_viz as gv
    from gatta_viz.store.sources import dataset_source

    torch.set_num_threads(threads)
    lm = gv.load_model(MODEL)
    source = dataset_source(DATASET, SPLIT)
    t0 = time.perf_counter()
    if mode == "trace":
        with gv.temporarily_eval(lm.model), torch.no_grad():
            for start in range(0, n, CHUNK):
                x, _, _ = source.batch(start, min(n, start + CHUNK))
                lm.model.trace(x)
    else:
        gv.compute_maps(lm, source, out, n=n, chunk=CHUNK, progress=False, overwrite=True)
    seconds = time.perf_counter() - t0
    rank = int(os.environ.get("RANK", "0"))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes
    with open(report.replace("{rank}", str(rank)), "w") as f:
        json.dump({"seconds": seconds, "threads": torch.get_num_threads(), "peak_rss_mb": peak_mb, "rank": rank}, f)


def _run(cmd: List[str], reports: str, ranks: int, env: Dict[str, str]) -> Dict[str, float]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"benchmark step failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    parts = [json.load(open(reports.replace("{rank}", str(r)))) for r in range(ranks)]
    return {"seconds": max(p["seconds"] for p in parts), "wall": wall, "threads": parts[0]["threads"],
            "peak_rss_mb": max(p["peak_rss_mb"] for p in parts), "processes": ranks}


def measure(mode: str, n: int, threads: int, processes: int, tmp: str, tag: str) -> Dict[str, float]:
    """One step in fresh process(es)."""
    reports = os.path.join(tmp, f"{tag}-{{rank}}.json")
    args = ["--worker", mode, "--n", str(n), "--threads", str(threads), "--out", os.path.join(tmp, f"{tag}.zarr"),
            "--report", reports]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if processes == 1:
        cmd = [sys.executable, os.path.abspath(__file__), *args]
    else:
        torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
        # "--" ends torchrun's own options (its argparse would take "--n" for an abbreviation of --nnodes)
        cmd = [torchrun, "--standalone", "--nproc_per_node", str(processes), os.path.abspath(__file__), "--", *args]
    return _run(cmd, reports, processes, env)


def _row(name: str, r: Dict[str, float], n: int) -> str:
    threads = f"{r['threads']}" + (" each" if r["processes"] > 1 else "")
    return (f"{name:<34} {r['processes']:>5} {threads:>9} {r['seconds']:>9.1f} {r['wall']:>8.1f} "
            f"{n / r['seconds']:>9.1f} {r['peak_rss_mb']:>9.0f}")


def report(n: int, results: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """Print the table and the ratios; returns the ratios."""
    print(f"\n{n} images of {DATASET} ({SPLIT}), {MODEL}, chunks of {CHUNK}; cores here: {os.cpu_count()}")
    print(f"{'run':<34} {'procs':>5} {'threads':>9} {'work s':>9} {'wall s':>8} {'images/s':>9} {'peak MB':>9}")
    names = {"trace": "trace only (nothing stored)", "maps1": "compute_maps, 1 process",
             "maps2": "compute_maps, 2 processes (torchrun)", "maps1t2": "compute_maps, 1 process, 2 threads"}
    for key, r in results.items():
        print(_row(names[key], r, n))
    ratios = {"overhead_pct": 100.0 * (results["maps1"]["seconds"] / results["trace"]["seconds"] - 1.0),
              "speedup": results["maps1"]["seconds"] / results["maps2"]["seconds"],
              "speedup_wall": results["maps1"]["wall"] / results["maps2"]["wall"],
              "rss_mb": max(r["peak_rss_mb"] for r in results.values())}
    if "maps1t2" in results:
        ratios["speedup_vs_2_threads"] = results["maps1t2"]["seconds"] / results["maps2"]["seconds"]

    def verdict(ok: bool) -> str:
        return "meets" if ok else "MISSES"

    print(f"\nwrite overhead over the trace: {ratios['overhead_pct']:+.1f}% "
          f"({verdict(ratios['overhead_pct'] <= TARGETS['overhead_pct'])} the target <= 25%)")
    print(f"2 processes vs 1 (1 thread each): x{ratios['speedup']:.2f} on the work, x{ratios['speedup_wall']:.2f} on "
          f"the wall clock ({verdict(ratios['speedup'] >= TARGETS['speedup'])} the target >= 1.5x on 2 cores)")
    if "speedup_vs_2_threads" in ratios:
        print(f"2 processes vs 1 process with 2 threads: x{ratios['speedup_vs_2_threads']:.2f}")
    print(f"peak RSS per process: {ratios['rss_mb']:.0f} MB "
          f"({verdict(ratios['rss_mb'] <= TARGETS['rss_mb'])} the target <= 1536 MB)")
    return ratios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=60000, help="images (the first N training images)")
    p.add_argument("--quick", action="store_true", help="2,048 images: check that it runs")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--with-threads2", action="store_true", help="also one process with two threads")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.add_argument("--worker", choices=["trace", "maps"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--report", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.worker, a.n, a.threads, a.out, a.report)
        return
    n = 2048 if a.quick else a.n
    if not 1 <= n <= 60000:
        sys.exit(f"--n must be between 1 and 60000, got {n}")
    tmp = tempfile.mkdtemp(prefix="map_store_bench_")
    try:
        results = {"trace": measure("trace", n, a.threads, 1, tmp, "trace"),
                   "maps1": measure("maps", n, a.threads, 1, tmp, "maps1"),
                   "maps2": measure("maps", n, a.threads, 2, tmp, "maps2")}
        if a.with_threads2:
            results["maps1t2"] = measure("maps", n, 2, 1, tmp, "maps1t2")
        size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(tmp, "maps1.zarr"))
                      for f in fs) / 2 ** 20
        ratios = report(n, results)
        print(f"store size on disk: {size_mb:.1f} MB ({1024 * size_mb / n:.2f} KB per image)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"n": n, "results": results, "ratios": ratios, "store_mb": size_mb}, f, indent=2)


if __name__ == "__main__":
    main()
