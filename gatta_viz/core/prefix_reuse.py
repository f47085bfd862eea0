"""Pass 2 without recomputing what pass 1 already computed.

Everything the backbone computes before the first GAttA layer's output is modulated sees exactly the
same input in both passes: the stem, and the first GAttA layer itself (its *raw* output is identical;
only the modulation applied to it differs). Under ``torch.no_grad()`` with every such module in eval
mode, pass 2 can return pass 1's outputs for those modules instead of recomputing them. For
ResNet-18 at 224x224 that is the stem and ``layer1``, about a third of a forward pass.

How the reusable modules are found (once per input shape, dtype and device): pass 1 is run with every
submodule's ``forward`` wrapped, recording when each call completes. A module is reusable if it ran
exactly once, finished no later than the first GAttA layer, is in eval mode (with all its
submodules) and returned a tensor. Only the outermost such modules are replaced in pass 2 (their
submodules then never run). An output that pass 1 later modifies in place (e.g. a conv followed by
``ReLU(inplace=True)``) is copied when it is produced, from the second call on. Each later call checks
that the plan still holds (each module ran once, before any GAttA layer finished, uncopied outputs
not modified); if not, that call's pass 2 runs in full and the plan is rebuilt on the next call. Forward
hooks and pre-hooks on the reused modules still fire in pass 2, on the same values as in pass 1.

Not used when autograd is on (gradients must flow through pass 2), under ``torch.inference_mode()``
(inference tensors have no version counter, so in-place changes cannot be detected), or when the
model's ``reuse_prefix`` is False.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["PrefixReuse", "patched_forwards"]

PlanKey = Tuple[Tuple[int, ...], torch.dtype, torch.device]
Plan = Dict[str, bool]  # module name -> keep a copy of its output (later modified in place in pass 1)


@contextlib.contextmanager
def patched_forwards(modules: Dict[str, nn.Module], make: Callable[[str, Callable], Callable]) -> Iterator[None]:
    """Replace each module's ``forward`` by ``make(name, original_forward)``; always restore on exit.

    The replacement is an instance attribute, so ``module(x)`` still runs the module's hooks around it.
    A module whose ``forward`` cannot be replaced (e.g. a scripted one) is left as it is.
    """
    saved: List[Tuple[nn.Module, bool, Any]] = []
    try:
        for name, mod in modules.items():
            had, old = "forward" in mod.__dict__, mod.__dict__.get("forward")
            try:
                object.__setattr__(mod, "forward", make(name, mod.forward))
            except (AttributeError, TypeError, RuntimeError):  # e.g. scripted modules: left to run as they are
                continue
            saved.append((mod, had, old))
        yield
    finally:
        for mod, had, old in reversed(saved):
            if had:
                object.__setattr__(mod, "forward", old)
            else:
                del mod.__dict__["forward"]


class _Recording:
    """Outputs and call facts of the recorded modules during one pass 1."""

    def __init__(self) -> None:
        self.outputs: Dict[str, torch.Tensor] = {}
        self.versions: Dict[str, int] = {}
        self.calls: Dict[str, int] = {}
        self.done_at: Dict[str, int] = {}  # completion order of each module's first call
        self.counter = 0
        self.first_layer_done: Optional[int] = None  # completion index of the first GAttA layer to finish

    def mark_layer_done(self) -> None:
        if self.first_layer_done is None:
            self.first_layer_done = self.counter - 1  # the layer's own forward was the last to complete

    def untouched(self, name: str) -> bool:
        return self.outputs[name]._version == self.versions[name]


class PrefixReuse:
    """Finds and replays the part of a backbone that pass 2 need not recompute.

    Plans are kept per input shape, dtype and device. Each call gets the backbone's current
    ``dict(named_modules())`` from the caller (so a wrapper whose backbone is replaced stays correct:
    plans naming missing modules are rebuilt).
    """

    def __init__(self) -> None:
        self._plans: Dict[PlanKey, Plan] = {}

    @staticmethod
    def possible() -> bool:
        """True when the ambient mode allows reuse: autograd off and not in inference mode."""
        return not torch.is_grad_enabled() and not torch.is_inference_mode_enabled()

    @staticmethod
    def _key(x: torch.Tensor) -> PlanKey:
        return tuple(x.shape[1:]), x.dtype, x.device

    def plan(self, x: torch.Tensor) -> Optional[Plan]:
        """The modules reused for inputs like ``x``, each with whether its output is copied (None: not known yet)."""
        return self._plans.get(self._key(x))

    def forget(self) -> None:
        """Drop every plan (they are rebuilt on the next calls)."""
        self._plans.clear()

    # ---------------------------------------------------------------- pass 1
    @contextlib.contextmanager
    def record(self, named: Dict[str, nn.Module], x: torch.Tensor) -> Iterator[_Recording]:
        """Wrap pass 1: record the outputs of the planned modules (all modules when there is no plan yet)."""
        plan = self.plan(x)
        if plan is not None and not all(n in named for n in plan):
            self.forget()
            plan = None
        names = list(plan) if plan is not None else [n for n in named if n]
        copy = plan or {}
        rec = _Recording()

        def make(name: str, original: Callable) -> Callable:
            def forward(*args, **kwargs):
                out = original(*args, **kwargs)
                rec.calls[name] = rec.calls.get(name, 0) + 1
                if rec.calls[name] == 1:
                    rec.done_at[name] = rec.counter
                    # after the first GAttA layer nothing is reusable: count calls, keep no outputs (memory)
                    if torch.is_tensor(out) and rec.first_layer_done is None:
                        kept = out.clone() if copy.get(name) else out
                        rec.outputs[name], rec.versions[name] = kept, kept._version
                rec.counter += 1
                return out

            return forward

        with patched_forwards({n: named[n] for n in names}, make):
            yield rec

    def replay_plan(self, named: Dict[str, nn.Module], x: torch.Tensor, rec: _Recording) -> Optional[List[str]]:
        """After pass 1: the modules pass 2 may take from ``rec`` (None: run pass 2 in full).

        Builds the plan from a full recording, or checks a known plan against this call's recording.
        """
        key = self._key(x)
        known = self._plans.get(key)
        if known is None:
            plan = self._build(rec, named)
            self._plans[key] = plan
            # outputs that were modified in place were not copied during this first call: recompute them
            usable = [n for n, copied in plan.items() if not copied]
            return usable or None
        if not known:
            return None
        ok = rec.first_layer_done is not None and all(
            rec.calls.get(n) == 1 and n in rec.outputs and rec.untouched(n) and rec.done_at[n] <= rec.first_layer_done
            for n in known
        )
        if not ok:
            del self._plans[key]  # control flow changed: rebuild next time
            return None
        if any(m.training for n in known for m in named[n].modules()):
            return None
        return list(known)

    def _build(self, rec: _Recording, named: Dict[str, nn.Module]) -> Plan:
        if rec.first_layer_done is None:
            return {}
        ok = {
            n
            for n, c in rec.calls.items()
            if c == 1
            and n in rec.outputs
            and rec.done_at[n] <= rec.first_layer_done
            and not any(m.training for m in named[n].modules())
        }

        def has_reused_ancestor(n: str) -> bool:
            parts = n.split(".")
            return any(".".join(parts[:i]) in ok for i in range(1, len(parts)))

        return {n: not rec.untouched(n) for n in named if n in ok and not has_reused_ancestor(n)}

    # ---------------------------------------------------------------- pass 2
    @contextlib.contextmanager
    def replay(self, named: Dict[str, nn.Module], plan: Sequence[str], rec: _Recording) -> Iterator[None]:
        """Wrap pass 2: each planned module returns its pass-1 output on its first call (later calls compute)."""

        def make(name: str, original: Callable) -> Callable:
            used = [False]

            def forward(*args, **kwargs):
                if not used[0]:
                    used[0] = True
                    return rec.outputs[name]
                return original(*args, **kwargs)

            return forward

        with patched_forwards({n: named[n] for n in plan}, make):
            yield
