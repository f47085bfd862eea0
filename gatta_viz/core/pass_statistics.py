"""Normalisation statistics per pass: pass 2's BatchNorm layers keep running statistics of their own.

A GAttA forward runs the backbone twice, so every BatchNorm runs twice. With one set of running
statistics, training blends pass-1 and pass-2 batch statistics into one estimate and evaluation then
normalises both passes with that blend. Recurrent networks that reuse BatchNorm over time steps keep
statistics per step for this reason (Cooijmans et al. 2016); here each pass keeps its own.

Which layers need a second set: a BatchNorm that finishes before the first GAttA layer's output is
modulated sees the same input in both passes (the stem, and the inside of the first GAttA layer), so
its two estimates would be identical: it keeps one set, and in train mode it updates that set in pass 1
only (:func:`statistics_frozen` during pass 2), so its momentum is the backbone's. Every later BatchNorm keeps a second set for
pass 2, held here as buffers and swapped into the BatchNorm module for the duration of pass 2 (train
mode updates it there; eval mode reads it). The backbone's own buffers are pass 1's, so the backbone
alone (``GAttANet.backbone_forward``) is exactly pass 1.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterable, Iterator, List, Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["NORM_STATS", "PassStatistics", "SharedStatisticsError", "is_batchnorm", "statistics_frozen"]

NORM_STATS = ("per_pass", "shared")
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class SharedStatisticsError(ValueError):
    """A checkpoint saved with one set of BatchNorm statistics for both passes was loaded as per-pass."""


def is_batchnorm(module: nn.Module) -> bool:
    """True for a BatchNorm layer that keeps running statistics."""
    return isinstance(module, _BatchNorm) and module.track_running_stats


class _RunningStats(nn.Module):
    """Pass 2's copy of one BatchNorm's running statistics (buffers only)."""

    def __init__(self, bn: _BatchNorm) -> None:
        super().__init__()
        for b in _BUFFERS:
            self.register_buffer(b, bn._buffers[b].detach().clone())


def _key(name: str) -> str:
    return name.replace(".", "__")


class PassStatistics(nn.Module):
    """Pass 2's running statistics for the named BatchNorm layers of a backbone.

    Args:
        bns: module name -> BatchNorm layer whose input differs between the passes.
    """

    def __init__(self, bns: Mapping[str, _BatchNorm]) -> None:
        super().__init__()
        self.names: List[str] = list(bns)
        self.stats = nn.ModuleDict({_key(n): _RunningStats(bn) for n, bn in bns.items()})

    def __len__(self) -> int:
        return len(self.names)

    def of(self, name: str) -> _RunningStats:
        """Pass 2's statistics of BatchNorm ``name``."""
        return self.stats[_key(name)]

    @contextlib.contextmanager
    def active(self, named: Dict[str, nn.Module]) -> Iterator[None]:
        """Swap pass 2's statistics into the BatchNorm layers; swap them back on exit, whatever happens.

        Args:
            named: the backbone's ``dict(named_modules())``.
        """
        pairs = [(named[n], self.of(n)) for n in self.names]
        for bn, st in pairs:
            _swap(bn, st)
        try:
            yield
        finally:
            for bn, st in pairs:
                _swap(bn, st)

    @torch.no_grad()
    def copy_from_pass1(self, named: Dict[str, nn.Module]) -> None:
        """Set pass 2's statistics equal to pass 1's (the backbone's own)."""
        for n in self.names:
            st = self.of(n)
            for b in _BUFFERS:
                st._buffers[b].copy_(named[n]._buffers[b])


@contextlib.contextmanager
def statistics_frozen(bns: Iterable[nn.Module]) -> Iterator[None]:
    """Within the block, BatchNorms in train mode normalise with batch statistics as usual but leave their
    running statistics (and ``num_batches_tracked``) alone. For pass 2 of the BatchNorms that see the same input
    in both passes: pass 1 already counted that batch. Eval-mode layers are untouched.

    Args:
        bns: BatchNorm layers.
    """
    changed = [bn for bn in bns if bn.training and getattr(bn, "track_running_stats", False)]
    for bn in changed:
        bn.track_running_stats = False  # train mode: F.batch_norm then gets no running buffers to update
    try:
        yield
    finally:
        for bn in changed:
            bn.track_running_stats = True


def _swap(bn: nn.Module, st: nn.Module) -> None:
    for b in _BUFFERS:
        bn._buffers[b], st._buffers[b] = st._buffers[b], bn._buffers[b]
