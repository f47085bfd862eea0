"""Model-parameter randomisation sanity checks (Adebayo et al. 2018): does a map change when the weights it
should depend on are replaced by random ones?

A map that stays the same when the trained weights are re-initialised says more about the architecture and
the input than about what the network learned. :func:`randomized_copies` makes the randomised models (always
deep copies: the caller's model is never touched); :func:`randomization_report` compares every map of every
randomised model with the trained model's map of the same image (Spearman rank correlation of the signed
maps, of their absolute values, and Pearson correlation of the absolute values), for the trained model's
predicted class.

Modes:
    ``"cascade"``: re-initialise the backbone's top-level blocks cumulatively from the output down (for the
        compact ResNet: ``fc``, then also ``layer3``, ``layer2``, ``layer1``, ``stem``). On a GAttA model a
        block's GAttA key/query projections (those of the GAttA layers inside it) are re-initialised with it;
        the alphas keep their trained values. Step names are ``cascade:BLOCK`` (BLOCK and every block above it
        random).
    ``"gatta"``: re-initialise every GAttA key/query projection; backbone and alphas stay trained. Step
        ``gatta``. (Re-drawing the alphas themselves is not a randomisation: their initial value is 0, where
        every gain map is 0, so they are kept.)
    ``"backbone"``: re-initialise the whole backbone; the GAttA keys, queries and alphas stay trained. Step
        ``backbone``.
    ``"untrained"``: every parameter re-initialised, as a fresh model of the same architecture, with each
        layer's alpha set to ``untrained_alpha`` (1e-6) times the sign of the trained alpha. A fresh model has
        alpha = 0, where the gain map alpha x agreement is 0 everywhere and has no ranking; a tiny alpha keeps
        the network what a fresh one computes (pass 2 = pass 1 up to 1e-6) and makes the gain map the limit
        sign(alpha) x agreement of randomly initialised keys, queries and features. Step ``untrained``.
    ``"independent"``: one block at a time (with its GAttA keys and queries), the rest trained (Adebayo et al.'s
        independent randomisation). Steps ``independent:BLOCK``.

Re-initialisation uses each module's own ``reset_parameters()`` (convolutions, linear layers, BatchNorm), and
for a GAttA dense layer's keys and queries (:class:`DenseKeyQuery`, which has none) the distribution its
constructor draws from. BatchNorm: ``reset_parameters()`` also resets the running statistics (mean 0,
variance 1), so a re-initialised BatchNorm is what a fresh model has, as in Quantus's MPRT; on a GAttA model
the pass-2 running statistics of that BatchNorm (``pass2_stats``) are reset with it, so neither pass keeps
statistics of the trained weights. ``batchnorm="keep"`` leaves every BatchNorm trained (affine parameters and
running statistics of both passes) and re-initialises only the other modules.

Seeds: every step re-initialises under its own seed (the global torch RNG is forked, so the caller's random
state is unchanged): cascade step k (0 = the top block) uses ``seed + k``; ``gatta`` ``seed + 100``;
``backbone`` ``seed + 200``; ``untrained`` ``seed + 300``; independent step k ``seed + 400 + k``. On a plain model the first cascade step resets
``fc`` exactly as Quantus's MPRT (``layer_order="top_down"``, seed ``seed - 1``) resets its first layer.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .stats import mean_se
from ..compute.attributions import rank_correlation
from ..core.hooks import temporarily_eval
from ..core.mechanism import DenseKeyQuery
from .faithfulness import explain_func, parse_method

__all__ = ["MODES", "BATCHNORM", "cascade_blocks", "randomize", "randomized_copies", "changed_parameters",
           "map_similarity", "randomization_report", "report_text"]

MODES = ("cascade", "gatta", "backbone", "untrained", "independent")
BATCHNORM = ("reset", "keep")
SEED_OFFSETS = {"gatta": 100, "backbone": 200, "untrained": 300, "independent": 400}


def _backbone(model: nn.Module) -> nn.Module:
    """The CNN of a GAttA model, or the model itself."""
    return getattr(model, "backbone", model)


def _is_gatta(model: nn.Module) -> bool:
    return hasattr(model, "kq") and hasattr(model, "layer_names")


def cascade_blocks(model: nn.Module) -> List[Tuple[str, List[str]]]:
    """The blocks a cascade re-initialises, top (output) first.

    Blocks are the backbone's top-level children that hold parameters, in reverse registration order (the
    forward order for the compact ResNet, the toy CNN and torchvision ResNets).

    Args:
        model: a GAttA model or a plain CNN.
    Returns:
        ``[(block, [GAttA layers inside it]), ...]``, e.g. ``[("fc", ["fc"]), ("layer3", ["layer3"]), ...,
        ("stem", [])]``.
    """
    layers = list(getattr(model, "layer_names", []))
    out = []
    for name, child in _backbone(model).named_children():
        if any(True for _ in child.parameters()):
            out.append((name, [n for n in layers if n == name or n.startswith(name + ".")]))
    return out[::-1]


@torch.no_grad()
def _reinit(module: nn.Module, batchnorm: str) -> List[str]:
    """Re-initialise every submodule of ``module`` in place with the global RNG.

    Returns:
        Names (relative to ``module``) of the BatchNorm layers that were reset.
    """
    reset_bns = []
    for name, m in module.named_modules():
        if isinstance(m, DenseKeyQuery):
            bound = 1.0 / math.sqrt(m.channels)
            m.key.uniform_(-bound, bound)
            m.query.uniform_(-bound, bound)
        elif isinstance(m, _BatchNorm):
            if batchnorm == "reset":
                m.reset_parameters()
                reset_bns.append(name)
        elif callable(getattr(m, "reset_parameters", None)):
            m.reset_parameters()
    return reset_bns


@torch.no_grad()
def _reset_pass2_stats(model: nn.Module, bn_names: Sequence[str]) -> None:
    """Copy the (just reset) running statistics of these backbone BatchNorms into their pass-2 statistics."""
    stats = getattr(model, "pass2_stats", None)
    if stats is None:
        return
    named = dict(_backbone(model).named_modules())
    for n in bn_names:
        if n in stats.names:
            st = stats.of(n)
            for b in ("running_mean", "running_var", "num_batches_tracked"):
                st._buffers[b].copy_(named[n]._buffers[b])


def _reinit_backbone_block(model: nn.Module, block: str, batchnorm: str) -> None:
    """Re-initialise backbone child ``block`` (``""``: the whole backbone) and its pass-2 BatchNorm statistics."""
    root = _backbone(model)
    module = root if block == "" else dict(root.named_children())[block]
    bns = _reinit(module, batchnorm)
    prefix = "" if block == "" else block + "."
    _reset_pass2_stats(model, [prefix + n if n else block for n in bns])


def _reinit_kq(model: nn.Module, layers: Sequence[str], batchnorm: str) -> None:
    for n in layers:
        _reinit(model.kq_of(n), batchnorm)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Fork the global torch RNG (CPU) and seed it; the caller's random state comes back on exit."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def randomize(model: nn.Module, mode: str, seed: int = 0, batchnorm: str = "reset",
              untrained_alpha: float = 1e-6) -> Iterator[Tuple[str, List[str], nn.Module]]:
    """Randomised deep copies of ``model``, one per step of ``mode`` (see the module docstring).

    Args:
        model: a GAttA model or a plain CNN; never modified.
        mode: one of ``MODES``.
        seed: base seed.
        batchnorm: ``"reset"`` (default) or ``"keep"`` (see the module docstring).
        untrained_alpha: |alpha| of every layer in ``"untrained"`` mode.
    Yields:
        ``(step name, what was re-initialised (cumulative, "backbone.BLOCK" / "kq.LAYER" / "alpha"), copy)``;
        each copy is a new model in eval mode.
    Raises:
        ValueError: unknown mode or batchnorm, or ``"gatta"`` / ``"backbone"`` on a plain model.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if batchnorm not in BATCHNORM:
        raise ValueError(f"batchnorm must be one of {BATCHNORM}, got {batchnorm!r}")
    gatta = _is_gatta(model)
    if mode in ("gatta", "backbone") and not gatta:
        raise ValueError(f"mode {mode!r} needs a GAttA model; {type(model).__name__} has no GAttA parameters")

    def fresh() -> nn.Module:
        m = copy.deepcopy(model)
        m.eval()
        return m

    if mode == "independent":
        for k, (block, layers) in enumerate(cascade_blocks(model)):
            work = fresh()
            with _seeded(seed + SEED_OFFSETS[mode] + k):
                _reinit_backbone_block(work, block, batchnorm)
                if gatta:
                    _reinit_kq(work, layers, batchnorm)
            yield f"independent:{block}", [f"backbone.{block}"] + [f"kq.{n}" for n in layers], work
        return
    if mode == "cascade":
        work, done = fresh(), []
        for k, (block, layers) in enumerate(cascade_blocks(model)):
            with _seeded(seed + k):
                _reinit_backbone_block(work, block, batchnorm)
                if gatta:
                    _reinit_kq(work, layers, batchnorm)
            done += [f"backbone.{block}"] + [f"kq.{n}" for n in layers]
            yield f"cascade:{block}", list(done), copy.deepcopy(work)
        return
    work = fresh()
    with _seeded(seed + SEED_OFFSETS[mode]):
        if mode in ("backbone", "untrained"):
            _reinit_backbone_block(work, "", batchnorm)
        if gatta and mode in ("gatta", "untrained"):
            _reinit_kq(work, work.layer_names, batchnorm)
    done = {"gatta": [f"kq.{n}" for n in getattr(model, "layer_names", [])], "backbone": ["backbone"],
            "untrained": ["backbone"] + [f"kq.{n}" for n in getattr(model, "layer_names", [])]}[mode]
    if mode == "untrained" and gatta:
        with torch.no_grad():
            for n in work.layer_names:
                a = work.alpha_of(n)
                a.fill_(math.copysign(float(untrained_alpha), float(a)) if float(a) != 0 else float(untrained_alpha))
        done = done + ["alpha"]
    yield mode, done, work


def randomized_copies(model: nn.Module, mode: str = "cascade", seed: int = 0, batchnorm: str = "reset",
                      untrained_alpha: float = 1e-6) -> Iterator[Tuple[str, nn.Module]]:
    """``(step name, randomised deep copy)`` for every step of ``mode``; see :func:`randomize`.

    Args:
        model: a GAttA model or a plain CNN; never modified.
        mode: ``"cascade"``, ``"gatta"``, ``"backbone"`` or ``"untrained"``.
        seed, batchnorm, untrained_alpha: see :func:`randomize`.
    Returns:
        An iterator of (name, model in eval mode).
    """
    for name, _, m in randomize(model, mode, seed, batchnorm, untrained_alpha):
        yield name, m


def changed_parameters(a: nn.Module, b: nn.Module) -> List[str]:
    """Names of the ``state_dict`` entries (parameters and buffers) that differ between two models of one architecture."""
    sa, sb = a.state_dict(), b.state_dict()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


def map_similarity(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    """How alike two (H, W) maps are.

    Returns:
        ``{"spearman": signed maps' rank correlation, "spearman_abs": of |map|, "pearson_abs": Pearson of |map|}``;
        NaN where a map is constant.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    aa, ab = np.abs(a).ravel(), np.abs(b).ravel()
    pearson = float(np.corrcoef(aa, ab)[0, 1]) if aa.std() > 0 and ab.std() > 0 else float("nan")
    return {"spearman": rank_correlation(a, b), "spearman_abs": rank_correlation(np.abs(a), np.abs(b)),
            "pearson_abs": pearson}


def _maps(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, name: str, seed: int,
          batch_size: int) -> np.ndarray:
    """(N, H, W) maps of one method for all images, in batches, with the model in eval mode."""
    method, layer = parse_method(name)
    with temporarily_eval(model):
        return np.concatenate([explain_func(model, x[i : i + batch_size], targets[i : i + batch_size], method=method,
                                            layer=layer, seed=seed)[:, 0] for i in range(0, len(x), batch_size)])


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with temporarily_eval(model):
        return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def _jsonable(v: float) -> Optional[float]:
    return None if not math.isfinite(v) else v


def randomization_report(model: nn.Module, x: torch.Tensor, targets=None, methods: Sequence[str] = ("gain", "gradcam"),
                         seed: int = 0, modes: Sequence[str] = ("cascade", "gatta", "backbone", "untrained"),
                         batchnorm: str = "reset", untrained_alpha: float = 1e-6, batch_size: int = 50,
                         keep_maps: int = 0) -> Dict[str, Any]:
    """Similarity of every randomised model's maps to the trained model's, per method and step.

    Args:
        model: a GAttA model (plain CNN: modes ``cascade``, ``untrained`` and ``independent``, methods without
            GAttA maps);
            never modified (randomised models are deep copies; its train/eval flags are restored).
        x: (N, C, H, W) normalised inputs.
        targets: class per image for class-specific maps; None (default): the trained model's predicted class
            (pass 2), used for every randomised model too. Gain and agreement maps do not depend on it.
        methods: map names as in :func:`gatta_viz.metrics.faithfulness.parse_method` (``"gain"``, ``"gradcam"``,
            ``"gain:layer2"``...).
        seed: randomisation seed (see the module docstring) and seed of the ``"random"`` map.
        modes: which randomisations to run, in this order (``"gatta"`` and ``"backbone"`` are skipped on a plain
            model).
        batchnorm: ``"reset"`` or ``"keep"`` (see the module docstring).
        untrained_alpha: see :func:`randomize`.
        batch_size: images per explanation call.
        keep_maps: also return the maps of the first ``keep_maps`` images (not JSON-able; for figures).
    Returns:
        JSON-able dict: ``n``, ``seed``, ``methods``, ``batchnorm``, ``target``, ``steps`` (list of ``{"name",
        "mode", "randomized", "changed_tensors", "prediction_kept"}``, the first being ``trained``: the trained
        model again, whose similarity is 1 when maps are deterministic), and ``results[method][step]`` =
        ``{"spearman", "spearman_se", "spearman_abs", "spearman_abs_se", "pearson_abs", "pearson_abs_se", "n_valid",
        "spearman_per_image"}`` (means over images with a finite value; NaN -> None). With ``keep_maps``:
        ``"maps"[method][step]`` = (keep_maps, H, W) arrays.
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    pred = _predict(model, x, batch_size)
    tgt = pred if targets is None else torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if len(tgt) != len(x):
        raise ValueError(f"targets has {len(tgt)} entries for {len(x)} images")
    for m in methods:
        parse_method(m)
    gatta = _is_gatta(model)
    reference = {m: _maps(model, x, tgt, m, seed, batch_size) for m in methods}
    rep: Dict[str, Any] = {
        "n": int(len(x)), "seed": int(seed), "methods": list(methods), "batchnorm": batchnorm,
        "untrained_alpha": float(untrained_alpha),
        "target": "trained model's predicted class (pass 2)" if targets is None else "given",
        "steps": [], "results": {m: {} for m in methods},
    }
    kept: Dict[str, Dict[str, np.ndarray]] = {m: {"trained": reference[m][:keep_maps]} for m in methods}

    def steps() -> Iterator[Tuple[str, str, List[str], nn.Module]]:
        yield "trained", "reference", [], copy.deepcopy(model).eval()
        for mode in modes:
            if mode in ("gatta", "backbone") and not gatta:
                continue
            for name, done, m in randomize(model, mode, seed, batchnorm, untrained_alpha):
                yield name, mode, done, m

    for name, mode, done, m in steps():
        p = _predict(m, x, batch_size)
        rep["steps"].append({"name": name, "mode": mode, "randomized": done,
                             "changed_tensors": len(changed_parameters(model, m)),
                             "prediction_kept": float((p == pred).float().mean())})
        for meth in methods:
            maps = _maps(m, x, tgt, meth, seed, batch_size)
            sims = [map_similarity(reference[meth][i], maps[i]) for i in range(len(x))]
            entry: Dict[str, Any] = {}
            for key in ("spearman", "spearman_abs", "pearson_abs"):
                mean, se, n_valid = mean_se([s[key] for s in sims])
                entry[key], entry[f"{key}_se"] = _jsonable(mean), _jsonable(se)
                if key == "spearman":
                    entry["n_valid"] = n_valid
            entry["spearman_per_image"] = [_jsonable(s["spearman"]) for s in sims]
            rep["results"][meth][name] = entry
            if keep_maps:
                kept[meth][name] = maps[:keep_maps]
        del m
    if keep_maps:
        rep["maps"] = kept
    return rep


def _short(randomized: Sequence[str]) -> str:
    """``["backbone.fc", "kq.fc", "backbone.stem"]`` -> ``"fc+kq, stem"`` (a block with its keys and queries)."""
    out = []
    for r in randomized:
        if r.startswith("backbone."):
            out.append(r[9:] + ("+kq" if f"kq.{r[9:]}" in randomized else ""))
        elif not (r.startswith("kq.") and f"backbone.{r[3:]}" in randomized):
            out.append(r)
    return ", ".join(out) or "nothing"


def report_text(rep: Dict[str, Any]) -> str:
    """Markdown table of a :func:`randomization_report`: mean Spearman (signed and |map|) ± se per step and method."""
    methods = rep["methods"]
    head = "| step | re-initialised | prediction kept | " + " | ".join(
        f"{m}: Spearman | {m}: Spearman abs" for m in methods) + " |"
    rows = [head, "|---|---|---:|" + "---:|---:|" * len(methods)]

    def cell(r: Dict[str, Any], k: str) -> str:
        return "n/a" if r[k] is None else f"{r[k]:.3f} ± {r[k + '_se']:.3f}"

    for s in rep["steps"]:
        what = _short(s["randomized"])
        cells = " | ".join(f"{cell(rep['results'][m][s['name']], 'spearman')} | {cell(rep['results'][m][s['name']], 'spearman_abs')}"
                           for m in methods)
        rows.append(f"| {s['name']} | {what} | {100 * s['prediction_kept']:.0f}% | {cells} |")
    return "\n".join(rows)
