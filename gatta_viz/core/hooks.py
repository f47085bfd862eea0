"""Context managers that change a module for the duration of a call and always undo it: hooks, train/eval flags."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping

from torch import nn

__all__ = ["forward_hooks", "temporarily_eval"]


@contextlib.contextmanager
def forward_hooks(modules: Mapping[str, nn.Module], make_hook: Callable[[str], Callable]) -> Iterator[None]:
    """Register one forward hook per named module; always remove them on exit.

    Args:
        modules: name -> module.
        make_hook: name -> hook function ``(module, inputs, output) -> output or None``.
    """
    handles = []
    try:
        for name, mod in modules.items():
            handles.append(mod.register_forward_hook(make_hook(name)))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def temporarily_eval(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, then restore each one's own flag."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag
