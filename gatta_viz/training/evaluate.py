"""Evaluation: clean accuracy, accuracy under additive Gaussian noise (paper Fig. 2a), pass-1 vs pass-2 changes.

The command is ``gatta-viz evaluate`` (:mod:`gatta_viz.cli.evaluate`).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

import torch
from tqdm import tqdm

from ..models.checkpoint import LoadedModel
from ..data.datasets import AnyData, eval_batches, input_shape
from ..core.hooks import temporarily_eval
from .matching import check_fits
from .train import hits

__all__ = ["NOISE_SIGMAS", "check_sigmas", "evaluate_model", "noise_table"]

NOISE_SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def check_sigmas(sigmas: Sequence[float]) -> List[float]:
    """The noise levels as floats, or ValueError: empty, non-finite, negative or repeated (each would be counted
    as its own column, and a repeat twice)."""
    out = [float(s) for s in sigmas]
    if not out:
        raise ValueError("sigmas: give at least one noise level")
    bad = [s for s in out if not math.isfinite(s) or s < 0]
    if bad:
        raise ValueError(f"sigmas must be finite and >= 0, got {bad}")
    repeated = sorted({s for s in out if out.count(s) > 1})
    if repeated:
        raise ValueError(f"sigmas: {', '.join(f'{s:g}' for s in repeated)} given more than once")
    return out


@torch.no_grad()
def evaluate_model(
    loaded: LoadedModel,
    data: AnyData,
    sigmas: Sequence[float] = NOISE_SIGMAS,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = True,
) -> Dict[str, Any]:
    """Accuracy of a model on ``data`` for each noise level, plus pass-1 vs pass-2 statistics.

    Noise: x_noisy = clip(x + sigma * N(0, 1), 0, 1) on pixels in [0, 1], before normalisation;
    the noise is drawn from a generator seeded with ``seed`` per batch and sigma, so every
    model sees exactly the same noisy images. Pass-1 vs pass-2 changes are always measured on the clean
    images, whether or not 0 is among ``sigmas``.

    Args:
        loaded: model and its preprocessing (from :func:`load_model`).
        data: test images (in memory, or an image folder streamed from disk); their size must be the model's.
        sigmas: noise standard deviations (pixel scale 0-1): finite, >= 0, no repeats.
        batch_size: images per forward (>= 1).
        seed: noise seed.
        progress: show a tqdm bar.
    Returns:
        ``{"n", "accuracy": {sigma: acc}, "accuracy_pass1": {...} (GAttA only),
        "pass_change": {"changed", "fixed", "broken"} on clean images (GAttA only)}``; fractions of images.
    Raises:
        ValueError: bad sigmas or batch size, an empty data set, or images that do not fit the model.
    """
    sigmas = check_sigmas(sigmas)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(data)
    if n == 0:
        raise ValueError("no images to evaluate on")
    check_fits(loaded.name, loaded.preprocess, input_shape(data), getattr(data, "name", "the data"), loaded.meta)
    model = loaded.model
    gatta = loaded.is_gatta
    correct = {s: 0 for s in sigmas}
    correct1 = {s: 0 for s in sigmas}
    changed = fixed = broken = 0
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    runs = sigmas if not gatta or 0.0 in sigmas else [0.0] + sigmas  # clean images for the pass change, always
    with temporarily_eval(model):
        bar = tqdm(total=math.ceil(n / batch_size), desc=f"evaluate {loaded.name}", disable=not progress, leave=False)
        i = 0
        for images, y in eval_batches(data, batch_size):
            clean = images.float() / 255.0
            for s in runs:
                pix = clean
                if s > 0:
                    g = torch.Generator().manual_seed(seed * 100003 + i * 31 + int(round(s * 1000)))
                    pix = (pix + s * torch.randn(pix.shape, generator=g)).clamp(0, 1)
                x = (pix - mean) / std
                if gatta:
                    t = model.trace(x)
                    ok1, ok2 = hits(t.logits_pass1, y), hits(t.logits_pass2, y)
                    if s == 0:
                        changed += int((t.logits_pass1.argmax(1) != t.logits_pass2.argmax(1)).sum())
                        fixed += int((~ok1 & ok2).sum())
                        broken += int((ok1 & ~ok2).sum())
                else:
                    ok1 = ok2 = hits(model(x), y)
                if s in correct:
                    correct1[s] += int(ok1.sum())
                    correct[s] += int(ok2.sum())
            i += len(y)
            bar.update(1)
        bar.close()
    out: Dict[str, Any] = {"model": loaded.name, "n": n, "accuracy": {str(s): correct[s] / n for s in sigmas}}
    if gatta:
        out["accuracy_pass1"] = {str(s): correct1[s] / n for s in sigmas}
        out["pass_change"] = {"changed": changed / n, "fixed": fixed / n, "broken": broken / n}
        out["alphas"] = model.alphas
    return out


def noise_table(results: List[Dict[str, Any]]) -> str:
    """Markdown table: one row per model, one column per sigma (accuracy in %)."""
    sigmas = list(results[0]["accuracy"])
    head = "| model | " + " | ".join(f"sigma={s}" for s in sigmas) + " |"
    rule = "|---|" + "---:|" * len(sigmas)
    rows = [head, rule]
    for r in results:
        rows.append(f"| {r['model']} | " + " | ".join(f"{100 * r['accuracy'][s]:.2f}" for s in sigmas) + " |")
        if "accuracy_pass1" in r:
            rows.append(f"| {r['model']} (pass 1 only) | " + " | ".join(f"{100 * r['accuracy_pass1'][s]:.2f}" for s in sigmas) + " |")
    return "\n".join(rows)
