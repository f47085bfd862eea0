"""Evaluation: clean accuracy, accuracy under additive Gaussian noise (paper Fig. 2a), pass-1 vs pass-2 changes.

The command is ``gatta-viz evaluate`` (:mod:`gatta_viz.cli.evaluate`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
from tqdm import tqdm

from ..models.checkpoint import LoadedModel
from ..data.datasets import ImageData
from ..core.hooks import temporarily_eval
from .train import hits

__all__ = ["NOISE_SIGMAS", "evaluate_model", "noise_table"]

NOISE_SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


@torch.no_grad()
def evaluate_model(
    loaded: LoadedModel,
    data: ImageData,
    sigmas: Sequence[float] = NOISE_SIGMAS,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = True,
) -> Dict[str, Any]:
    """Accuracy of a model on ``data`` for each noise level, plus pass-1 vs pass-2 statistics.

    Noise: x_noisy = clip(x + sigma * N(0, 1), 0, 1) on pixels in [0, 1], before normalisation;
    the noise is drawn from a generator seeded with ``seed`` per batch and sigma, so every
    model sees exactly the same noisy images.

    Args:
        loaded: model and its preprocessing (from :func:`load_model`).
        data: test images.
        sigmas: noise standard deviations (pixel scale 0-1).
        batch_size: images per forward.
        seed: noise seed.
        progress: show a tqdm bar.
    Returns:
        ``{"n", "accuracy": {sigma: acc}, "accuracy_pass1": {...} (GAttA only),
        "pass_change": {"changed", "fixed", "broken"} at sigma 0 (GAttA only)}``; fractions of images.
    """
    model = loaded.model
    gatta = loaded.is_gatta
    correct = {s: 0 for s in sigmas}
    correct1 = {s: 0 for s in sigmas}
    changed = fixed = broken = 0
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    with temporarily_eval(model):
        steps = [(s, i) for s in sigmas for i in range(0, len(data), batch_size)]
        for s, i in tqdm(steps, desc=f"evaluate {loaded.name}", disable=not progress, leave=False):
            pix = data.images[i : i + batch_size].float() / 255.0
            y = data.labels[i : i + batch_size]
            if s > 0:
                g = torch.Generator().manual_seed(seed * 100003 + i * 31 + int(round(s * 1000)))
                pix = (pix + s * torch.randn(pix.shape, generator=g)).clamp(0, 1)
            x = (pix - mean) / std
            if gatta:
                t = model.trace(x)
                ok1, ok2 = hits(t.logits_pass1, y), hits(t.logits_pass2, y)
                correct1[s] += int(ok1.sum())
                if s == 0:
                    changed += int((t.logits_pass1.argmax(1) != t.logits_pass2.argmax(1)).sum())
                    fixed += int((~ok1 & ok2).sum())
                    broken += int((ok1 & ~ok2).sum())
            else:
                ok2 = hits(model(x), y)
            correct[s] += int(ok2.sum())
    n = len(data)
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
