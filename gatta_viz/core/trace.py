"""Trace objects: what one two-pass GAttA forward exposes, per layer and per image."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, List, Optional

import torch

__all__ = ["LayerTrace", "GAttATrace", "UnknownLayerError", "unknown_layer"]


class UnknownLayerError(KeyError, ValueError):
    """A layer name that is not one of the model's GAttA layers. A KeyError (a name lookup) and a ValueError (as
    every other bad name in gatta_viz); its message says which names exist and which one was probably meant."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def unknown_layer(name: str, known: Iterable[str], what: str = "GAttA layer") -> UnknownLayerError:
    """The error for an unknown layer ``name``, with "did you mean" when a known name is close."""
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UnknownLayerError(f"unknown {what} {name!r}{hint} (layers: {', '.join(known)})")


@dataclass
class LayerTrace:
    """One selected layer's share of a trace.

    Attributes:
        name: module name in the backbone (e.g. ``"layer2"``).
        kind: ``"conv"`` (agreement is a (B, H, W) map) or ``"dense"`` ((B, C) bars).
        agreement: signed agreement gatta = k . q_avg, (B, H, W) or (B, C).
        alpha_tensor: the layer's modulation strength used in this forward, a detached 0-d tensor on the
            model's device (no host sync while tracing); :attr:`alpha` reads it as a float.
        keys: (B, d, H, W) or (B, C, d) if requested, else None.
        mean_query: the layer's mean query (B, d) if requested, else None.
    """

    name: str
    kind: str
    agreement: torch.Tensor
    alpha_tensor: torch.Tensor
    keys: Optional[torch.Tensor] = None
    mean_query: Optional[torch.Tensor] = None

    @property
    def alpha(self) -> float:
        """The layer's alpha in this forward, as a Python float (reads the tensor: a host sync on a GPU)."""
        return float(self.alpha_tensor)

    @property
    def gain(self) -> torch.Tensor:
        """Multiplicative gain 1 + alpha * gatta applied to the layer's output."""
        return 1 + self._alpha_like_map() * self.agreement

    def _alpha_like_map(self) -> torch.Tensor:
        a = torch.as_tensor(self.alpha_tensor)
        return a.to(device=self.agreement.device, dtype=self.agreement.dtype)

    def map(self, gain: bool = False) -> torch.Tensor:
        """The map to show: raw agreement, or with ``gain=True`` alpha x agreement (= gain - 1: positive where
        the layer's output is amplified). The raw sign is a convention of training (negating a layer's keys
        and its alpha gives the same network); alpha x agreement is not."""
        return self._alpha_like_map() * self.agreement if gain else self.agreement


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
        """Agreement of layer ``name``; raises :class:`UnknownLayerError` (a KeyError) naming the known layers."""
        if name not in self.layers:
            raise unknown_layer(name, self.layer_names, "layer in trace")
        return self.layers[name].agreement

    def nonfinite(self) -> List[str]:
        """What in this trace is NaN or infinite, earliest first (empty when everything is finite).

        Pass 1 is checked first (the backbone alone), then the global query, then each layer's agreement map in
        forward order, then pass 2. A pass 2 that is not finite while everything before it is, is named as
        such with the layers of largest ``|alpha x agreement|`` (the modulation ``1 + alpha x agreement``
        overflowed there), not blamed on a finite map. Reads tensors (a host sync on a GPU).
        """
        out = []
        if not bool(torch.isfinite(self.logits_pass1).all()):
            out.append("pass 1 (the backbone alone) gives non-finite logits: the input or the backbone's weights "
                       "are not finite or overflow")
        if not bool(torch.isfinite(self.q_avg).all()):
            out.append("the global query q_avg is not finite")
        bad_maps = [n for n, lt in self.layers.items() if not bool(torch.isfinite(lt.agreement).all())]
        for n in bad_maps:
            out.append(f"the agreement map of layer {n} is not finite")
        if not bool(torch.isfinite(self.logits_pass2).all()):
            strength = {n: float((lt.alpha_tensor * lt.agreement.detach().double()).abs().nan_to_num(float("inf")).max())
                        for n, lt in self.layers.items()}
            top = sorted(strength, key=lambda n: -strength[n])[:3]
            shown = ", ".join(f"{n} {strength[n]:.3g}" for n in top)
            if out:
                out.append("pass 2 gives non-finite logits (following the problems above)")
            else:
                out.append("pass 2 gives non-finite logits although pass 1 and every agreement map are finite: the "
                           f"modulation 1 + alpha x agreement overflowed (largest |alpha x agreement|: {shown})")
        return out

    @property
    def finite(self) -> bool:
        """True when both passes, the query and every map are finite (see :meth:`nonfinite`)."""
        return not self.nonfinite()

    def check_finite(self) -> None:
        """Raise ValueError with :meth:`nonfinite`'s first problem (and how many more) if anything is not finite."""
        problems = self.nonfinite()
        if problems:
            more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
            raise ValueError(f"non-finite trace: {problems[0]}{more}")

    @property
    def prediction_changed(self) -> torch.Tensor:
        """(B,) bool: True where pass 2's top class differs from pass 1's."""
        return self.logits_pass1.argmax(1) != self.logits_pass2.argmax(1)

    def detach(self) -> "GAttATrace":
        """A copy with every tensor detached and moved to the CPU."""

        def d(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if t is None else t.detach().cpu()

        layers = {
            n: replace(lt, agreement=d(lt.agreement), alpha_tensor=d(torch.as_tensor(lt.alpha_tensor)), keys=d(lt.keys),
                       mean_query=d(lt.mean_query))
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
