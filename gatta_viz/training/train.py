"""Training: ``python -m gatta_viz.training.train`` or ``gatta-viz train``; CPU/GPU, single process or torchrun (DDP).

Each epoch writes ``OUT/last.pt`` (model + optimizer + scheduler + RNG state) atomically, so a
killed run resumes (``--resume``) losing at most the epoch in progress, and appends to
``OUT/metrics.json``. At the end ``OUT/final.pt`` holds the model alone (the bundled form).

Stability (``training/stability.py``): the global gradient norm is clipped (``--clip-grad``, on by default);
a non-finite loss, gradient or weight stops the run with :class:`~gatta_viz.training.stability.NonFiniteError`
naming epoch, step and tensor (last.pt keeps the last finite epoch, no final.pt, metrics.json says where it
stopped); each epoch logs every GAttA layer's largest |alpha x agreement|. A folder that holds a run is refused
without ``--resume``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from ..models.builders import BUILDERS, build_model
from ..models.checkpoint import save_checkpoint
from ..data.datasets import AnyData, FolderData, augment_batch, eval_batches, input_shape, load_dataset
from ..data.folders import load_image_folder_splits
from ..core.hooks import temporarily_eval
from ..data.files import write_json
from .run_state import check_run_folder, jsonable, optimiser, resume, rng_state, run_meta
from .stability import CLIP_GRAD, NonFiniteError, TrainForward, check_finite_state, check_step, clip_gradients, max_gain_record

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


def model_kwargs(args: argparse.Namespace, data: AnyData) -> Dict[str, Any]:
    """Builder kwargs from the command line and the dataset's shape and classes.

    Raises:
        ValueError: ``--weights`` for a builder without pretrained weights (only the ResNet builders have them).
    """
    c, h, w = input_shape(data)
    kw: Dict[str, Any] = {"in_channels": int(c), "num_classes": len(data.classes), "input_size": [int(h), int(w)]}
    if getattr(args, "weights", None):
        if not (args.model.startswith("gatta_resnet") or args.model == "resnet"):
            raise ValueError(f"--weights applies to the ResNet builders (gatta_resnet18/34/50), not {args.model}")
        kw["weights"] = args.weights
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
def accuracy(model: torch.nn.Module, data: AnyData, batch_size: int = 500, workers: int = 0) -> Dict[str, float]:
    """Test accuracy of pass 2 (the output) and, for GAttA models, of pass 1 (see :func:`hits` for scenes with
    several items). Restores train/eval flags. Image folders are streamed (``workers`` decoding processes)."""
    correct2 = correct1 = 0
    device = next(model.parameters()).device
    with temporarily_eval(model):
        for images, y in eval_batches(data, batch_size, workers):
            x, y = data.normalize(images).to(device), y.to(device)
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


def _workers(args: argparse.Namespace) -> int:
    """Decoding processes for image folders (``--workers``; default: up to 4, one core left for training)."""
    w = getattr(args, "workers", None)
    return int(w) if w is not None else max(0, min(4, (os.cpu_count() or 1) - 1))


def load_training_data(args: argparse.Namespace) -> Tuple[AnyData, Optional[AnyData], Dict[str, Any], Dict[str, Any]]:
    """The training and test/validation data, the checkpoint's preprocessing record and facts for its meta.

    A directory is an image folder streamed from disk (:func:`gatta_viz.data.folders.load_image_folder_splits`):
    ``--image-size`` (default 64, 224 with ``--weights``), ``--val-fraction`` when it has no ``val/`` or
    ``test/``, and a normalisation (``--normalize``: the ImageNet weights' mean/std when starting from
    ``--weights``, else estimated on 500 training images). Named datasets are held in memory.

    Returns:
        (train, test or None when a folder has no validation split, preprocess, meta facts).
    Raises:
        ValueError: folder options given for a named dataset, or a bad folder (see ``find_layout``).
    """
    image_size = getattr(args, "image_size", None)
    norm = getattr(args, "normalize", "auto") or "auto"
    if os.path.isdir(args.dataset):
        weights = getattr(args, "weights", None)
        if norm == "auto":
            norm = "imagenet" if weights else "sample"
        size = image_size or (224 if weights else 64)
        train_data, test_data, layout = load_image_folder_splits(
            args.dataset, size, getattr(args, "val_fraction", 0.1), args.seed, norm, workers=_workers(args),
            flip=bool(getattr(args, "flip", 1)))
        meta = {"layout": layout.description, "val_fraction": getattr(args, "val_fraction", 0.1)}
        preprocess = dict(train_data.preprocess)
    else:
        if image_size is not None or norm != "auto":
            raise ValueError(f"--image-size and --normalize apply to image folders; {args.dataset} has its own size "
                             "and normalisation")
        train_data = load_dataset(args.dataset, "train", args.data_root)
        test_data = load_dataset(args.dataset, "test", args.data_root)
        c, h, w = input_shape(train_data)
        preprocess = {"size": [h, w], "channels": c, "mean": list(train_data.mean), "std": list(train_data.std)}
        if train_data.name.startswith(("fashion-mnist", "fmnist-pairs")):
            preprocess["background"] = "dark"  # light garments on black: the app inverts photos on white
        meta = {}
    if args.subset:
        train_data = train_data.subset(args.subset)
    if args.test_subset and test_data is not None:
        test_data = test_data.subset(args.test_subset)
    return train_data, test_data, preprocess, meta


def epoch_batches(args: argparse.Namespace, data: AnyData, epoch: int, world: int, rank: int, batch_size: int
                  ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of this process's training batches, normalised and augmented: (x float (B, C, H, W), labels).

    In memory: a permutation seeded by seed and epoch, equal shares per rank, random crop after padding and
    flips (``--pad``, ``--flip``) on the batch. Image folders: a ``DataLoader`` with ``--workers`` decoding
    processes (a ``DistributedSampler`` under DDP), RandomResizedCrop + flip per image in the workers.
    """
    if isinstance(data, FolderData):
        folder = data.with_augment(not args.no_augment)
        for images, y in folder.batches(batch_size, shuffle=True, workers=_workers(args), seed=args.seed,
                                        epoch=epoch, world=world, rank=rank):
            yield data.normalize(images), y
        return
    g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    perm = torch.randperm(len(data), generator=g)
    perm = perm[: len(perm) - len(perm) % world][rank::world]  # equal shares: ranks step in lockstep
    for i in range(0, len(perm), batch_size):
        idx = perm[i : i + batch_size]
        x = data.normalize(data.images[idx])
        y = data.labels[idx]
        if not args.no_augment:
            x = augment_batch(x, pad=args.pad, flip=args.flip, generator=g)
        yield x, y


def _autocast_dtype(args: argparse.Namespace, device: torch.device) -> Optional[torch.dtype]:
    """bfloat16 with ``--amp`` (None without).

    Raises:
        ValueError: the device has no bfloat16 autocast.
    """
    if not getattr(args, "amp", False):
        return None
    ok = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
    if not ok or not torch.amp.autocast_mode.is_autocast_available(device.type):
        raise ValueError(f"--amp (bfloat16 autocast) is not supported on {device}")
    return torch.bfloat16


def _build_model(args: argparse.Namespace, train_data: AnyData, device: torch.device
                 ) -> Tuple[str, Dict[str, Any], torch.nn.Module]:
    """The model the options ask for (the baseline with ``--baseline``): (builder, kwargs, model on ``device``).

    Raises:
        ValueError: ``--detach-pass1`` for a model without GAttA.
    """
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
    return builder, kwargs, model


def _record_stop(e: NonFiniteError, metrics_path: str, run: Dict[str, Any], args: argparse.Namespace, rank: int) -> None:
    """Write where the run went non-finite into metrics.json (``run``: builder, kwargs, history)."""
    history = run["history"]
    e.last_good_epoch = history[-1]["epoch"] if history else None
    if rank == 0:
        write_json(metrics_path, {**run, "args": jsonable(vars(args)),
                                  "stopped": {"reason": e.kind, "epoch": e.epoch, "step": e.step, "tensor": e.tensor,
                                              "detail": e.detail, "last_good_epoch": e.last_good_epoch}})


@dataclass
class _Steps:
    """What one epoch's optimisation steps need: the model, its training forward, optimiser, schedule, device."""

    args: argparse.Namespace
    model: torch.nn.Module
    fwd: TrainForward
    net: torch.nn.Module  # fwd, or DDP around it
    opt: torch.optim.Optimizer
    sched: Any
    device: torch.device
    amp: Optional[torch.dtype]

    def run(self, bar: Iterable, epoch: int, stop: Callable[[NonFiniteError], None]) -> Dict[str, Any]:
        """One step per batch of ``bar``; a non-finite step is never taken (``stop`` records it, then it raises).

        Returns:
            Sums over the epoch: loss (x images), correct, seen, clipped steps, steps, grad_norm_max and the
            per-layer largest |alpha x agreement| (``gain_max``, None for a model without GAttA).
        """
        args, model, device, amp = self.args, self.model, self.device, self.amp
        params = [p for p in model.parameters() if p.requires_grad]
        clip = float(getattr(args, "clip_grad", CLIP_GRAD))
        tot_loss = tot_correct = seen = clipped = step = 0
        gain_max: Optional[torch.Tensor] = None
        grad_norm_max = 0.0
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                logits, gain = self.net(x)
                loss = loss_fn(logits.float(), y, args.label_smoothing)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            step += 1
            grad_norm = clip_gradients(params, clip)
            try:  # one host sync for loss and gradient norm; a non-finite step is never taken
                loss_v, gn_v = check_step(model, loss, grad_norm, epoch + 1, step, gain, self.fwd.layer_names, x)
            except NonFiniteError as e:
                stop(e)
                raise
            self.opt.step()
            self.sched.step()
            if gain is not None:
                gain_max = gain if gain_max is None else torch.maximum(gain_max, gain)
            grad_norm_max = max(grad_norm_max, gn_v)
            clipped += int(clip > 0 and gn_v > clip)
            tot_loss += loss_v * len(y)
            tot_correct += int(hits(logits.detach(), y).sum())
            seen += len(y)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{tot_loss / seen:.4f}")
        return {"loss": tot_loss, "correct": tot_correct, "seen": seen, "clipped": clipped, "steps": step,
                "gain_max": gain_max, "grad_norm_max": grad_norm_max}


def train(args: argparse.Namespace) -> Dict[str, Any]:
    """Run training as configured by ``args`` (see :func:`build_parser`). Returns the metrics dict."""
    world, rank = _dist_info()
    check_run_folder(args)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    train_data, test_data, preprocess, data_meta = load_training_data(args)

    builder, kwargs, model = _build_model(args, train_data, device)
    amp = _autocast_dtype(args, device)

    per_rank_batch = max(1, args.batch_size // world)
    steps_per_epoch = (len(train_data) // world + per_rank_batch - 1) // per_rank_batch
    opt, sched = optimiser(args, model, steps_per_epoch)

    os.makedirs(args.out, exist_ok=True)
    last_path = os.path.join(args.out, "last.pt")
    metrics_path = os.path.join(args.out, "metrics.json")
    start_epoch, history, elapsed_before = resume(args, builder, model, opt, sched)
    if start_epoch and rank == 0:
        print(f"resuming from {last_path} after epoch {start_epoch}", flush=True)

    final_path = os.path.join(args.out, "final.pt")
    if rank == 0 and start_epoch < args.epochs and os.path.exists(final_path):
        os.remove(final_path)  # training on: a final.pt of fewer epochs must not stay beside the new last.pt

    fwd = TrainForward(model)  # logits and each GAttA layer's largest |alpha x agreement|
    net = torch.nn.parallel.DistributedDataParallel(fwd) if world > 1 else fwd
    steps = _Steps(args, model, fwd, net, opt, sched, device, amp)

    def stop(e: NonFiniteError) -> None:
        """Record where the run went non-finite in metrics.json (last.pt stays the last finite epoch's)."""
        _record_stop(e, metrics_path, {"builder": builder, "kwargs": kwargs, "history": history}, args, rank)

    t_run = time.time()
    stop_at = args.epochs if not args.max_epochs_this_run else min(args.epochs, start_epoch + args.max_epochs_this_run)
    for epoch in range(start_epoch, stop_at):
        net.train()
        t0 = time.time()
        bar = tqdm(epoch_batches(args, train_data, epoch, world, rank, per_rank_batch), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{args.epochs}", disable=rank != 0 or args.quiet, leave=False)
        s = steps.run(bar, epoch, stop)
        secs = time.time() - t0
        record = {
            "epoch": epoch + 1,
            "train_loss": s["loss"] / max(s["seen"], 1),
            "train_acc": s["correct"] / max(s["seen"], 1),
            "seconds": secs,
            "img_per_s": s["seen"] * world / secs,
            "lr": sched.get_last_lr()[0],
            "grad_norm_max": s["grad_norm_max"],
            "clipped_fraction": s["clipped"] / max(s["steps"], 1),
        }
        if s["gain_max"] is not None:
            record["max_alpha_x_agreement"] = max_gain_record(fwd.layer_names, s["gain_max"])
        try:
            check_finite_state(model, epoch + 1, s["steps"])  # never write a checkpoint with non-finite weights
        except NonFiniteError as e:
            stop(e)
            raise
        if rank == 0:
            if not args.no_eval and test_data is not None:
                record.update({f"test_{k}": v for k, v in accuracy(model, test_data, workers=_workers(args)).items()})
            if hasattr(model, "alphas"):
                record["alphas"] = model.alphas
            history.append(record)
            meta = run_meta(args, train_data.name, data_meta, history, elapsed_before + time.time() - t_run, world)
            save_checkpoint(
                last_path, model, builder, kwargs, train_data.classes, preprocess, meta,
                train_state={"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch + 1, "rng": rng_state()},
            )
            write_json(metrics_path, {"builder": builder, "kwargs": kwargs, **meta})
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}), flush=True)
        if world > 1:
            dist.barrier()

    result: Dict[str, Any] = {"builder": builder, "kwargs": kwargs, "history": history, "finished": stop_at == args.epochs}
    if world > 1 and args.check_ranks:
        result["rank_max_diff"] = _rank_max_diff(model)
        if rank == 0:
            print(json.dumps({"rank_max_diff": result["rank_max_diff"]}), flush=True)
    if rank == 0 and result["finished"]:
        meta = run_meta(args, train_data.name, data_meta, history, elapsed_before + time.time() - t_run, world)
        if "rank_max_diff" in result:
            meta["rank_max_diff"] = result["rank_max_diff"]
            write_json(metrics_path, {"builder": builder, "kwargs": kwargs, **meta})
        save_checkpoint(final_path, model, builder, kwargs, train_data.classes, preprocess, meta)
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
