"""Trace objects: what one two-pass GAttA forward exposes, per layer and per image."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional

import torch

__all__ = ["LayerTrace", "GAttATrace"]


@dataclass
class LayerTrace:
    """One selected layer's share of a trace.

    Attributes:
        name: module name in the backbone (e.g. ``"layer2"``).
        kind: ``"conv"`` (agreement is a (B, H, W) map) or ``"dense"`` ((B, C) bars).
        agreement: signed agreement gatta = k . q_avg, (B, H, W) or (B, C).
        alpha: the layer's modulation strength used in this forward.
        keys: (B, d, H, W) or (B, C, d) if requested, else None.
        mean_query: the layer's mean query (B, d) if requested, else None.
    """

    name: str
    kind: str
    agreement: torch.Tensor
    alpha: float
    keys: Optional[torch.Tensor] = None
    mean_query: Optional[torch.Tensor] = None

    @property
    def gain(self) -> torch.Tensor:
        """Multiplicative gain 1 + alpha * gatta applied to the layer's output."""
        return 1 + self.alpha * self.agreement

    def map(self, gain: bool = False) -> torch.Tensor:
        """The map to show: raw agreement, or with ``gain=True`` alpha x agreement (= gain - 1: positive where
        the layer's output is amplified). The raw sign is a convention of training (negating a layer's keys
        and its alpha gives the same network); alpha x agreement is not."""
        return self.alpha * self.agreement if gain else self.agreement


@dataclass
class GAttATrace:
    """Everything one two-pass forward exposes.

    Attributes:
        layers: per-layer traces, in the order the layers run in the forward pass.
        q_avg: global query (B, d) the maps and pass 2 used: pooled from pass 1, or a top-down cue.
        logits_pass1: logits of the unmodulated pass (the backbone's own output).
        logits_pass2: logits of the modulated pass (the model's output).
        meta: facts about the call (``keys_from``; ``cued``: a top-down query replaced the pooled one).
        q_pass1: with a top-down cue, the query pass 1 pooled (which the cue replaced); None otherwise.
    """

    layers: Dict[str, LayerTrace]
    q_avg: torch.Tensor
    logits_pass1: torch.Tensor
    logits_pass2: torch.Tensor
    meta: dict = field(default_factory=dict)
    q_pass1: Optional[torch.Tensor] = None

    @property
    def logits(self) -> torch.Tensor:
        """The model's output (pass-2 logits)."""
        return self.logits_pass2

    @property
    def layer_names(self) -> List[str]:
        return list(self.layers)

    @property
    def alphas(self) -> Dict[str, float]:
        return {n: lt.alpha for n, lt in self.layers.items()}

    def agreement(self, name: str) -> torch.Tensor:
        """Agreement of layer ``name``; raises KeyError naming the known layers."""
        if name not in self.layers:
            raise KeyError(f"no layer {name!r} in trace; layers are {self.layer_names}")
        return self.layers[name].agreement

    @property
    def prediction_changed(self) -> torch.Tensor:
        """(B,) bool: True where pass 2's top class differs from pass 1's."""
        return self.logits_pass1.argmax(1) != self.logits_pass2.argmax(1)

    def detach(self) -> "GAttATrace":
        """A copy with every tensor detached and moved to the CPU."""

        def d(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if t is None else t.detach().cpu()

        layers = {
            n: replace(lt, agreement=d(lt.agreement), keys=d(lt.keys), mean_query=d(lt.mean_query))
            for n, lt in self.layers.items()
        }
        return GAttATrace(layers, d(self.q_avg), d(self.logits_pass1), d(self.logits_pass2), dict(self.meta), d(self.q_pass1))

    def __getitem__(self, idx) -> "GAttATrace":
        """Select images: ``trace[0:1]`` or ``trace[tensor_of_indices]``."""

        def s(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if t is None else t[idx]

        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        layers = {
            n: replace(lt, agreement=s(lt.agreement), keys=s(lt.keys), mean_query=s(lt.mean_query))
            for n, lt in self.layers.items()
        }
        return GAttATrace(layers, s(self.q_avg), s(self.logits_pass1), s(self.logits_pass2), dict(self.meta), s(self.q_pass1))

    def __len__(self) -> int:
        return int(self.q_avg.shape[0])
