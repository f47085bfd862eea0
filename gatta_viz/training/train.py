"""Training: ``python -m gatta_viz.training.train`` or ``gatta-viz train``; CPU/GPU, single process or torchrun (DDP).

Each epoch writes ``OUT/last.pt`` (model + optimizer + scheduler + RNG state) atomically, so a
killed run resumes (``--resume``) losing at most the epoch in progress, and appends to
``OUT/metrics.json``. At the end ``OUT/final.pt`` holds the model alone (the bundled form).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from typing import Any, Dict, List

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from ..models.builders import BUILDERS, build_model
from ..models.checkpoint import read_checkpoint, save_checkpoint
from ..data.datasets import ImageData, augment_batch, load_dataset
from ..core.hooks import temporarily_eval

__all__ = ["baseline_of", "model_kwargs", "hits", "loss_fn", "accuracy", "train"]

GATTA_ONLY = ("d", "layers", "alpha_init", "freeze_backbone", "keys_from", "norm_stats")
BASELINES = {"gatta_compact_resnet": "compact_resnet", "gatta_toy": "toy_cnn"}


def baseline_of(builder: str, kwargs: Dict[str, Any]) -> tuple:
    """The same backbone without GAttA: (builder, kwargs)."""
    kw = {k: v for k, v in kwargs.items() if k not in GATTA_ONLY}
    if builder in BASELINES:
        return BASELINES[builder], kw
    if builder.startswith("gatta_resnet"):
        return "resnet", {"arch": builder[len("gatta_"):], **kw}
    if builder in BUILDERS and not builder.startswith("gatta_"):
        return builder, kw
    raise ValueError(f"no baseline known for builder {builder!r}")


def model_kwargs(args: argparse.Namespace, data: ImageData) -> Dict[str, Any]:
    """Builder kwargs from the command line and the dataset's shape and classes."""
    c, h, w = data.images.shape[1:]
    kw: Dict[str, Any] = {"in_channels": int(c), "num_classes": len(data.classes), "input_size": [int(h), int(w)]}
    if args.widths:
        kw["widths"] = list(args.widths)
    if args.blocks:
        kw["blocks"] = list(args.blocks)
    if getattr(args, "stem_stride", 1) != 1:
        kw["stem_stride"] = args.stem_stride
    if args.model.startswith("gatta_"):
        if args.d is not None:
            kw["d"] = args.d
        if args.layers:
            kw["layers"] = list(args.layers)
        kw["alpha_init"] = args.alpha_init
        kw["freeze_backbone"] = args.freeze_backbone
        kw["norm_stats"] = args.norm_stats
    return kw


def _dist_info() -> tuple:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world, rank


def _rng_state() -> Dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy_seed": int(np.random.randint(0, 2**31 - 1))}


def hits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the prediction is right. Labels (B,): the top class is the label. Labels (B, k) (scenes with
    k items): the top-k classes are exactly the k labels ("both items" for pairs)."""
    if labels.dim() == 1:
        return logits.argmax(1) == labels
    k = labels.shape[1]
    top = logits.topk(k, dim=1).indices.sort(dim=1).values
    return (top == labels.sort(dim=1).values).all(dim=1)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy. With (B, k) labels the target puts 1/k on each present class (a soft-target
    cross-entropy: the k classes share the probability), smoothed like single labels."""
    if labels.dim() == 1:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    target = torch.zeros_like(logits).scatter_(1, labels, 1.0 / labels.shape[1])
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: ImageData, batch_size: int = 500) -> Dict[str, float]:
    """Test accuracy of pass 2 (the output) and, for GAttA models, of pass 1 (see :func:`hits` for scenes with
    several items). Restores train/eval flags."""
    correct2 = correct1 = 0
    with temporarily_eval(model):
        for i in range(0, len(data), batch_size):
            x = data.normalize(data.images[i : i + batch_size])
            y = data.labels[i : i + batch_size]
            if hasattr(model, "trace"):
                t = model.trace(x)
                correct1 += int(hits(t.logits_pass1, y).sum())
                correct2 += int(hits(t.logits_pass2, y).sum())
            else:
                correct2 += int(hits(model(x), y).sum())
    out = {"acc": correct2 / len(data)}
    if hasattr(model, "trace"):
        out["acc_pass1"] = correct1 / len(data)
    return out


def train(args: argparse.Namespace) -> Dict[str, Any]:
    """Run training as configured by ``args`` (see :func:`build_parser`). Returns the metrics dict."""
    world, rank = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    train_data = load_dataset(args.dataset, "train", args.data_root)
    test_data = load_dataset(args.dataset, "test", args.data_root)
    if args.subset:
        train_data = train_data.subset(args.subset)
    if args.test_subset:
        test_data = test_data.subset(args.test_subset)

    builder = args.model
    kwargs = model_kwargs(args, train_data)
    if args.baseline:
        builder, kwargs = baseline_of(builder, kwargs)
    model = build_model(builder, **kwargs).to(device)
    if args.detach_pass1:
        if not hasattr(model, "detach_pass1"):
            raise ValueError("--detach-pass1 applies to GAttA models only")
        model.detach_pass1 = True
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    preprocess = {
        "size": list(train_data.images.shape[2:]),
        "channels": int(train_data.images.shape[1]),
        "mean": list(train_data.mean),
        "std": list(train_data.std),
    }
    if train_data.name.startswith(("fashion-mnist", "fmnist-pairs")):
        preprocess["background"] = "dark"  # light garments on black: the app inverts photos on white

    # alpha and normalisation-free params take no weight decay
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() <= 1 else decay).append(p)
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, momentum=0.9, nesterov=True,
    )
    per_rank_batch = max(1, args.batch_size // world)
    steps_per_epoch = (len(train_data) // world + per_rank_batch - 1) // per_rank_batch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch, pct_start=args.warmup, anneal_strategy="cos"
    )

    os.makedirs(args.out, exist_ok=True)
    last_path = os.path.join(args.out, "last.pt")
    metrics_path = os.path.join(args.out, "metrics.json")
    history: List[Dict[str, Any]] = []
    start_epoch = 0
    elapsed_before = 0.0
    if args.resume and os.path.isfile(last_path):
        obj = read_checkpoint(last_path)
        if obj["builder"] != builder:
            raise ValueError(f"cannot resume: {last_path} holds a {obj['builder']} model, not {builder}")
        model.load_state_dict(obj["state_dict"])
        ts = obj["train_state"]
        opt.load_state_dict(ts["optimizer"])
        sched.load_state_dict(ts["scheduler"])
        start_epoch = int(ts["epoch"])
        torch.set_rng_state(ts["rng"]["torch"])
        history = list(obj["meta"].get("history", []))
        elapsed_before = float(obj["meta"].get("train_seconds", 0.0))
        if rank == 0:
            print(f"resuming from {last_path} after epoch {start_epoch}", flush=True)

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)

    t_run = time.time()
    stop_at = args.epochs if not args.max_epochs_this_run else min(args.epochs, start_epoch + args.max_epochs_this_run)
    for epoch in range(start_epoch, stop_at):
        net.train()
        g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        perm = torch.randperm(len(train_data), generator=g)
        perm = perm[: len(perm) - len(perm) % world][rank::world]  # equal shares: ranks step in lockstep
        t0 = time.time()
        tot_loss = tot_correct = seen = 0
        bar = tqdm(range(0, len(perm), per_rank_batch), desc=f"epoch {epoch + 1}/{args.epochs}", disable=rank != 0 or args.quiet, leave=False)
        for i in bar:
            idx = perm[i : i + per_rank_batch]
            x = train_data.normalize(train_data.images[idx])
            y = train_data.labels[idx]
            if not args.no_augment:
                x = augment_batch(x, pad=args.pad, flip=args.flip, generator=g)
            x, y = x.to(device), y.to(device)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = net(x)
            loss = loss_fn(logits, y, args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(loss.detach()) * len(y)
            tot_correct += int(hits(logits.detach(), y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{tot_loss / seen:.4f}")
        secs = time.time() - t0
        record = {
            "epoch": epoch + 1,
            "train_loss": tot_loss / max(seen, 1),
            "train_acc": tot_correct / max(seen, 1),
            "seconds": secs,
            "img_per_s": seen * world / secs,
            "lr": sched.get_last_lr()[0],
        }
        if rank == 0:
            if not args.no_eval:
                record.update({f"test_{k}": v for k, v in accuracy(model, test_data).items()})
            if hasattr(model, "alphas"):
                record["alphas"] = model.alphas
            history.append(record)
            meta = {
                "dataset": train_data.name, "seed": args.seed, "epochs": args.epochs, "history": history,
                "train_seconds": elapsed_before + time.time() - t_run, "world_size": world, "args": _jsonable(vars(args)),
            }
            save_checkpoint(
                last_path, model, builder, kwargs, train_data.classes, preprocess, meta,
                train_state={"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch + 1, "rng": _rng_state()},
            )
            with open(metrics_path, "w") as f:
                json.dump({"builder": builder, "kwargs": kwargs, **meta}, f, indent=2)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}), flush=True)
        if world > 1:
            dist.barrier()

    result: Dict[str, Any] = {"builder": builder, "kwargs": kwargs, "history": history, "finished": stop_at == args.epochs}
    if world > 1 and args.check_ranks:
        result["rank_max_diff"] = _rank_max_diff(model)
        if rank == 0:
            print(json.dumps({"rank_max_diff": result["rank_max_diff"]}), flush=True)
    if rank == 0 and result["finished"]:
        meta = {"dataset": train_data.name, "seed": args.seed, "epochs": args.epochs, "history": history,
                "train_seconds": elapsed_before + time.time() - t_run, "world_size": world, "args": _jsonable(vars(args))}
        if "rank_max_diff" in result:
            meta["rank_max_diff"] = result["rank_max_diff"]
            with open(metrics_path, "w") as f:
                json.dump({"builder": builder, "kwargs": kwargs, **meta}, f, indent=2)
        save_checkpoint(os.path.join(args.out, "final.pt"), model, builder, kwargs, train_data.classes, preprocess, meta)
        result["train_seconds"] = meta["train_seconds"]
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def _rank_max_diff(model: torch.nn.Module) -> Dict[str, float]:
    """Largest absolute difference between any two ranks' parameters and buffers (DDP sanity check)."""
    out = {}
    for kind, tensors in (("parameters", [p.detach() for p in model.parameters()]),
                          ("buffers", [b.detach().float() for b in model.buffers() if b.is_floating_point()])):
        flat = torch.cat([t.reshape(-1).float().cpu() for t in tensors]) if tensors else torch.zeros(1)
        gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        out[kind] = max(float((g - gathered[0]).abs().max()) for g in gathered)
    return out


def _jsonable(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, list, type(None)))}
