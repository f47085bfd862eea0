"""Speed of GAttA traces vs the plain backbone, captum Grad-CAM / Integrated Gradients, and the app's render path.

Run:  .venv/bin/python benchmarks/speed.py            (prints markdown tables; a few minutes on 2 CPU cores)
      .venv/bin/python benchmarks/speed.py --quick    (fewer repeats)

Rows: default bundled model (1x28x28) and gatta_resnet18 (random weights, 3x224x224), at batch 1 and 64.
Columns: median wall time of one call (ms) and its ratio to the plain backbone forward of the same model/batch.
Targets (issue 6): GAttA trace <= 2.2x the plain forward, and faster than a one-layer captum LayerGradCam on the
same GAttA model. Two full passes would cost 2x; under no_grad the trace's pass 2 reuses pass 1's outputs up to
the first GAttA layer (gatta_viz/core/prefix_reuse.py), so it can cost less; the "pass 2 in full" row shows the
trace without that reuse.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch
from captum.attr import IntegratedGradients, LayerGradCam

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import gatta_viz as gv  # noqa: E402


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_model(name: str, model: gv.GAttANet, shape, batch: int, repeats: int, gradcam_layer: str,
                with_ig: bool = True) -> Dict[str, float]:
    model.eval()
    x = torch.randn(batch, *shape)
    target = torch.zeros(batch, dtype=torch.long)
    res: Dict[str, float] = {}
    with torch.no_grad():
        res["plain backbone forward"] = timeit(lambda: model.backbone(x), repeats)
        res["GAttA forward (logits)"] = timeit(lambda: model(x), repeats)
        res["GAttA trace (all maps)"] = timeit(lambda: model.trace(x), repeats)
        model.reuse_prefix = False  # both passes in full: what the trace costs without reusing pass 1's prefix
        try:
            res["GAttA trace, pass 2 in full (reuse_prefix=False)"] = timeit(lambda: model.trace(x), repeats)
        finally:
            model.reuse_prefix = True
    layer = dict(model.backbone.named_modules())[gradcam_layer]
    gc = LayerGradCam(model, layer)
    res[f"captum LayerGradCam ({gradcam_layer})"] = timeit(lambda: gc.attribute(x, target=target), repeats)
    if with_ig:
        ig = IntegratedGradients(model)
        ig_repeats = 1 if batch > 1 or shape[-1] > 100 else max(1, repeats // 3)
        res["captum IntegratedGradients (50 steps)"] = timeit(
            lambda: ig.attribute(x, target=target, n_steps=50, internal_batch_size=64), ig_repeats, warmup=0
        )
    return res


def app_render_seconds(repeats: int) -> float:
    """Server time of the Streamlit app's render path (app/logic.render: decode, trace, maps, Grad-CAM, figure PNG,
    npz) for one 28x28 sample image on the default model, model already loaded (the app caches it)."""
    sys.path.insert(0, os.path.join(REPO, "app"))
    import logic  # noqa: PLC0415

    lm = logic.load_model(gv.DEFAULT_MODEL)
    path = os.path.join(REPO, "sample_images", "fashion-mnist", "trouser_test00002.png")
    data = open(path, "rb").read()
    return timeit(lambda: logic.render(lm, "trouser.png", logic.decode("trouser.png", data)), repeats)


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats, no resnet18 batch 64")
    p.add_argument("--full", action="store_true", help="also IntegratedGradients on resnet18 at batch 64 (3,200 "
                   "two-pass forward+backward passes at 224x224: many minutes on a CPU)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 7
    torch.manual_seed(0)
    default = gv.load_model().model
    r18 = gv.gatta_resnet18(num_classes=1000, input_size=224)
    with torch.no_grad():  # random alphas so the second pass really modulates
        for a in r18.alpha.values():
            a.fill_(0.01)
    cases = [
        ("default (fmnist-gatta-resnet, 1x28x28)", default, (1, 28, 28), "layer3"),
        ("gatta_resnet18 (3x224x224)", r18, (3, 224, 224), "layer4"),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; median of {repeats} calls\n")
    for title, model, shape, layer in cases:
        for batch in (1, 64):
            if shape[-1] > 100 and batch == 64 and args.quick:
                continue
            big = shape[-1] > 100
            with_ig = args.full or not (big and batch == 64)
            res = bench_model(title, model, shape, batch, repeats if not big else max(2, repeats // 2), layer, with_ig)
            if not with_ig:
                res["captum IntegratedGradients (50 steps)"] = float("nan")
            base = res["plain backbone forward"]
            print(f"### {title}, batch {batch}")
            print("| what | ms per call | x plain forward |\n|---|---:|---:|")
            for k, v in res.items():
                if v != v:  # NaN: not run
                    print(f"| {k} | not run (use --full) | |")
                else:
                    print(f"| {k} | {1000 * v:.1f} | {v / base:.2f} |")
            trace_ratio = res["GAttA trace (all maps)"] / base
            gc_key = next(k for k in res if k.startswith("captum LayerGradCam"))
            print(f"\ntrace/plain = {trace_ratio:.2f} (target <= 2.2: {'met' if trace_ratio <= 2.2 else 'MISSED'}); "
                  f"trace faster than Grad-CAM: {'yes' if res['GAttA trace (all maps)'] < res[gc_key] else 'NO'}\n", flush=True)
    app = app_render_seconds(repeats)
    print(f"### Streamlit app, one 28x28 image on the default model\n\nserver render time (app/logic.render): "
          f"{1000 * app:.0f} ms (target < 1000 ms: {'met' if app < 1.0 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
