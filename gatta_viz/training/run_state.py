"""The files and state of one training run: the run folder's guard, the optimiser and schedule, resuming from
``last.pt``, and the metadata written with every checkpoint."""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from ..models.checkpoint import read_checkpoint

__all__ = ["RUN_FILES", "check_run_folder", "jsonable", "optimiser", "resume", "rng_state", "run_meta"]

RUN_FILES = ("last.pt", "final.pt", "metrics.json")


def check_run_folder(args: argparse.Namespace) -> None:
    """Refuse to start a new run in a folder that holds one (its files would mix with the new run's).

    Raises:
        ValueError: ``--out`` is an existing file, or holds last.pt/final.pt/metrics.json without ``--resume``.
    """
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} exists and is not a folder")
    found = [f for f in RUN_FILES if os.path.exists(os.path.join(args.out, f))]
    if found and not args.resume:
        raise ValueError(f"{args.out} holds a training run ({', '.join(found)}); use --resume to continue it, "
                         "or another --out for a new run")


def optimiser(args: argparse.Namespace, model: torch.nn.Module, steps_per_epoch: int
              ) -> Tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.OneCycleLR]:
    """SGD (Nesterov, momentum 0.9; no weight decay on alphas and other 1-d parameters) and its one-cycle schedule.

    Args:
        args: the training options (``lr``, ``wd``, ``epochs``, ``warmup``).
        model: the model; frozen parameters (``requires_grad`` False) are left out.
        steps_per_epoch: optimiser steps per epoch on this rank.

    Returns:
        (optimizer, scheduler).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.dim() <= 1 else decay).append(p)
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, momentum=0.9, nesterov=True,
    )
    warmup = args.warmup
    if abs(warmup * args.epochs * steps_per_epoch - 1) < 1e-9:
        warmup *= 1.001  # a warm-up of exactly one step makes torch's OneCycleLR divide by zero
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch, pct_start=warmup, anneal_strategy="cos"
    )
    return opt, sched


def resume(args: argparse.Namespace, builder: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
           sched: torch.optim.lr_scheduler.OneCycleLR) -> Tuple[int, List[Dict[str, Any]], float]:
    """Load ``OUT/last.pt`` into the model, optimiser, schedule and RNG when ``--resume`` finds one.

    Args:
        args: the training options (``out``, ``resume``, ``epochs``).
        builder: the builder the run's model was made with (a checkpoint of another builder is refused).
        model, opt, sched: what the state is loaded into.

    Returns:
        (epochs already done, their history, training seconds so far); (0, [], 0.0) for a new run.

    Raises:
        ValueError: last.pt holds another builder, no training state (an exported checkpoint), weights that do not
            fit the model, or a schedule planned for another number of epochs.
    """
    last_path = os.path.join(args.out, "last.pt")
    if not (args.resume and os.path.isfile(last_path)):
        return 0, [], 0.0
    obj = read_checkpoint(last_path)
    if obj["builder"] != builder:
        raise ValueError(f"cannot resume: {last_path} holds a {obj['builder']} model, not {builder}")
    if "train_state" not in obj:
        raise ValueError(f"cannot resume: {last_path} has no training state (an exported checkpoint?); "
                         "resume needs the last.pt a run wrote, or start a new run with another --out")
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"cannot resume: {last_path} does not fit the model built from these options "
                         f"({str(e).splitlines()[0]})") from None
    ts = obj["train_state"]
    planned = obj["meta"].get("epochs")
    if planned is not None and int(planned) != args.epochs:
        raise ValueError(f"cannot resume: {last_path} was set up for {planned} epochs (its one-cycle schedule); "
                         f"resume with --epochs {planned}, or start a new run with another --out")
    opt.load_state_dict(ts["optimizer"])
    sched.load_state_dict(ts["scheduler"])
    torch.set_rng_state(ts["rng"]["torch"])
    return int(ts["epoch"]), list(obj["meta"].get("history", [])), float(obj["meta"].get("train_seconds", 0.0))


def rng_state() -> Dict[str, Any]:
    """The RNG states stored with ``last.pt``."""
    return {"torch": torch.get_rng_state(), "numpy_seed": int(np.random.randint(0, 2**31 - 1))}


def jsonable(d: Dict[str, Any]) -> Dict[str, Any]:
    """The entries of ``d`` that JSON can hold as they are (the options stored with a run)."""
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, list, type(None)))}


def run_meta(args: argparse.Namespace, dataset: str, data_meta: Dict[str, Any], history: List[Dict[str, Any]],
             seconds: float, world: int) -> Dict[str, Any]:
    """The metadata saved with every checkpoint of a run and in its metrics.json.

    Args:
        args: the training options. dataset: the training set's name. data_meta: what the data loader records
            (image folders: layout, split, normalisation). history: one record per finished epoch.
        seconds: training time so far. world: the number of processes.

    Returns:
        The metadata dict.
    """
    return {"dataset": dataset, **data_meta, "seed": args.seed, "epochs": args.epochs, "history": history,
            "train_seconds": seconds, "world_size": world, "args": jsonable(vars(args))}
