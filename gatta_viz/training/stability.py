"""Training stability: gradient-norm clipping, a guard that stops on non-finite values, and the size of the gain term.

The gain ``1 + alpha * (k . q_avg)`` of a GAttA layer is unbounded and grows with the square of the activations;
a fast learning-rate ramp can make one alpha jump and the run go to NaN within a few steps (RESULTS.md,
"Training that does not diverge"). The training loop therefore clips the global gradient norm (on by default),
checks the loss and the gradient norm at every step (one host sync per step, which the loop already paid for
its running loss) and every parameter and buffer at the end of each epoch, and logs the largest
|alpha x agreement| of each layer per epoch.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["CLIP_GRAD", "DIVERGED_LOSS", "NonFiniteError", "TrainForward", "clip_gradients", "check_step",
           "check_finite_state", "first_nonfinite", "first_nonfinite_activation", "display_name", "max_gain_record"]


CLIP_GRAD = 2.0  # default global gradient-norm bound (RESULTS.md, "Training that does not diverge")
DIVERGED_LOSS = 1e3  # a mean cross-entropy above this: the right class's probability is below e^-1000 (0 in float32)


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss, gradient or parameter (or a loss above :data:`DIVERGED_LOSS`).

    Attributes:
        epoch: 1-based epoch in which it happened.
        step: 1-based step within that epoch (the step whose loss or gradient was non-finite; for a check at
            the end of an epoch, its last step).
        tensor: name of the first non-finite tensor (``"loss"``, ``"layer3.alpha"``, ``"gradient of ..."``, ...).
        kind: ``"non-finite"`` or ``"diverged"`` (a finite loss above :data:`DIVERGED_LOSS`).
        last_good_epoch: the epoch the run's last.pt holds (set by the training loop; None: no checkpoint).
    """

    def __init__(self, epoch: int, step: int, tensor: str, detail: str = "") -> None:
        self.epoch, self.step, self.tensor, self.detail = int(epoch), int(step), str(tensor), str(detail)
        self.kind = "diverged" if self.tensor.startswith("loss above") else "non-finite"
        self.last_good_epoch: Optional[int] = None
        what = "diverged" if self.kind == "diverged" else "went non-finite"
        msg = f"training {what} at epoch {self.epoch}, step {self.step}: {self.tensor}"
        super().__init__(msg + (f" ({self.detail})" if self.detail else ""))


def display_name(name: str) -> str:
    """A parameter's name as users know it: GAttANet's ``alpha.layer3`` -> ``layer3.alpha``, ``kq.layer3.key`` ->
    ``layer3.kq.key`` (``__`` in GAttA keys stands for ``.`` in the layer name); other names unchanged."""
    for prefix in ("alpha.", "kq."):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            layer, _, tail = rest.partition(".")
            layer = layer.replace("__", ".")
            return f"{layer}.alpha" if prefix == "alpha." else f"{layer}.kq.{tail}" if tail else f"{layer}.kq"
    return name


class TrainForward(nn.Module):
    """The training forward: ``(logits, gain)`` where ``gain`` (L,) holds, for a GAttA model, each layer's largest
    |alpha x agreement| in this batch (detached; None for other models).

    A module of its own so that DDP can wrap it (DDP runs ``forward`` only). Same computation as
    ``model(x)``: the trace of the two-pass forward is the forward.

    Args:
        model: the model being trained (a GAttANet or any classifier).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def layer_names(self) -> List[str]:
        """GAttA layers in the order of ``gain`` (empty for other models)."""
        return list(getattr(self.model, "layer_names", [])) if hasattr(self.model, "trace") else []

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if not hasattr(self.model, "trace"):
            return self.model(x), None
        t = self.model.trace(x)
        with torch.no_grad():
            gain = torch.stack([
                t.layers[n].agreement.detach().abs().amax().float() * self.model.alpha_of(n).detach().abs().float()
                for n in self.layer_names
            ])
        return t.logits_pass2, gain


def _trainable(model: nn.Module) -> List[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def clip_gradients(params: Sequence[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm to ``max_norm`` (0: no clipping). Returns the norm before clipping (a 0-dim
    tensor on the gradients' device; non-finite if any gradient is)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)
    if hasattr(torch.nn.utils, "get_total_norm"):
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


def first_nonfinite(named: Iterable[Tuple[str, Optional[torch.Tensor]]]) -> Optional[str]:
    """Name of the first tensor with a NaN or infinite element (None: all finite; None tensors skipped)."""
    for name, t in named:
        if t is not None and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


@torch.no_grad()
def first_nonfinite_activation(model: nn.Module, x: torch.Tensor) -> Optional[str]:
    """Rerun the forward on ``x`` (same train/eval mode) and name the first module whose output is non-finite
    (``"pass 1: backbone.layer3.0.conv2"``), or a GAttA layer's agreement map (``"layer3 agreement"``), or None."""
    from ..core.hooks import forward_hooks

    backbone = getattr(model, "backbone", model)
    modules = {n: m for n, m in backbone.named_modules() if n and not list(m.children())}
    found: List[str] = []

    def hook(name: str):
        def h(_m, _i, out):
            if not found and torch.is_tensor(out) and out.is_floating_point() and not bool(torch.isfinite(out).all()):
                found.append(name)
        return h

    with forward_hooks(modules, hook):
        backbone(x)  # pass 1 (the plain backbone)
    if found:
        return f"pass-1 output of {found[0]}" if hasattr(model, "trace") else f"output of {found[0]}"
    if not hasattr(model, "trace"):
        return None
    t = model.trace(x)
    for n in model.layer_names:
        if not bool(torch.isfinite(t.layers[n].agreement).all()):
            return f"{n} agreement"
    with forward_hooks(modules, hook):  # hooks of other code see pass 2
        model(x)
    return f"pass-2 output of {found[0]}" if found else None


def _diagnose(model: nn.Module, loss_v: float, x: Optional[torch.Tensor] = None) -> str:
    """The first bad tensor: a parameter, else the loss (with the first non-finite activation when ``x`` is
    given), else a gradient (in parameter order)."""
    named = [(display_name(n), p) for n, p in model.named_parameters()]
    bad = first_nonfinite((n, p.detach()) for n, p in named)
    if bad:
        return bad
    if not math.isfinite(loss_v):
        where = first_nonfinite_activation(model, x) if x is not None else None
        return f"loss (first non-finite: {where})" if where else "loss"
    if loss_v > DIVERGED_LOSS:
        return f"loss above {DIVERGED_LOSS:g}"
    bad = first_nonfinite((f"gradient of {n}", p.grad) for n, p in named)
    return bad or "gradient norm (overflow: every gradient is finite)"


def check_step(model: nn.Module, loss: torch.Tensor, grad_norm: torch.Tensor, epoch: int, step: int,
               gain: Optional[torch.Tensor] = None, layer_names: Sequence[str] = (),
               x: Optional[torch.Tensor] = None) -> Tuple[float, float]:
    """Stop a non-finite step before the optimizer takes it. One host sync (loss and gradient norm together).

    Returns:
        (loss, gradient norm before clipping) as floats.
    Args:
        x: the step's input, rerun only on failure to name the first non-finite activation.
    Raises:
        NonFiniteError: naming the first non-finite tensor (see :func:`_diagnose`) and the largest
            |alpha x agreement| of this step; also for a finite loss above :data:`DIVERGED_LOSS`.
    """
    loss_v, gn_v = torch.stack([loss.detach().float().reshape(()), grad_norm.detach().float().reshape(()).to(loss.device)]).tolist()
    if math.isfinite(loss_v) and math.isfinite(gn_v) and loss_v <= DIVERGED_LOSS:
        return loss_v, gn_v
    detail = f"loss {loss_v:.4g}, gradient norm {gn_v:.4g}"
    if gain is not None and len(layer_names):
        g = dict(zip(layer_names, gain.tolist()))
        finite = {n: v for n, v in g.items() if math.isfinite(v)}
        if finite:
            worst = max(finite, key=finite.get)
            detail += f"; largest |alpha x agreement| {finite[worst]:.4g} in {worst}"
        if len(finite) < len(g):
            detail += f"; non-finite agreement in {', '.join(n for n in g if n not in finite)}"
    raise NonFiniteError(epoch, step, _diagnose(model, loss_v, x), detail)


def check_finite_state(model: nn.Module, epoch: int, step: int) -> None:
    """Every parameter and floating-point buffer finite (one host sync), before a checkpoint is written.

    Raises:
        NonFiniteError: naming the first non-finite parameter or buffer.
    """
    tensors = [(display_name(n), t.detach()) for n, t in model.named_parameters()]
    tensors += [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    if not tensors:
        return
    if bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):
        return
    raise NonFiniteError(epoch, step, first_nonfinite(tensors) or "a parameter")


def max_gain_record(layer_names: Sequence[str], gain: Optional[torch.Tensor]) -> Dict[str, Optional[float]]:
    """Layer -> largest |alpha x agreement| (JSON-able; None where non-finite)."""
    if gain is None:
        return {}
    return {n: (round(v, 6) if math.isfinite(v) else None) for n, v in zip(layer_names, gain.tolist())}
