"""Which of GAttA's two passes the hooks of other code see.

A GAttA model runs its backbone twice per call, so a hook registered on a backbone module fires twice.
Tools that record a layer with hooks assume one forward per call: pytorch-grad-cam appends both
activations and both gradients and then uses the first of each (pass 1's activation with the gradient
that reaches pass 1 through the agreement maps, not the pass-2 Grad-CAM), other tools keep the last
call or the first. By default (``model.hook_passes == "pass2"``) pass 1 therefore runs with those
hooks taken out, and every hook sees one forward per call: pass 2, the one whose output is the model's
output. ``"both"`` lets every hook see both passes (pass 1 first).

What is hidden during pass 1, on every module of the backbone (the root included): forward pre-hooks,
forward hooks, backward pre-hooks and backward hooks (full or not) that were registered before the
call, except torch's own (hooks defined in a ``torch`` module: pruning masks, weight and spectral
norm, quantization observers, FSDP), which are part of what the module computes and run in both
passes. Tensor hooks that a forward hook registers on its output then exist for pass 2 only.

Not hidden: global hooks (``torch.nn.modules.module.register_module_forward_hook`` and the other
``register_module_*`` functions): they belong to the whole process (profilers, FLOP counters,
module trackers) and see every call, both passes included. Hooks on the GAttA model itself and on
its key/query modules fire once per call anyway. GAttA's own hooks are registered during the call,
after the others are hidden, and removed before they are put back. The hidden hooks are put back in
their original order, in the same dictionaries (so their handles still remove them), whatever
happens in pass 1. ``model.backbone_forward(x)`` is pass 1 alone: hook that to see pass 1.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterable, Iterator, List, Tuple

from torch import nn

__all__ = ["HOOK_KINDS", "HOOK_PASSES", "hook_passes", "is_torch_hook", "others_hooks_hidden"]

HOOK_PASSES = ("pass2", "both")
# the per-module hook dictionaries that nn.Module._call_impl reads
HOOK_KINDS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")


def is_torch_hook(hook: Callable) -> bool:
    """True if ``hook`` (a function, bound method, callable object or ``functools.partial`` of one) is defined in torch.

    Args:
        hook: a module hook as stored in a module's hook dictionary.
    Returns:
        Whether the innermost callable's ``__module__`` is ``torch`` or a submodule of it.
    """
    fn: Any = hook
    while type(fn).__name__ == "partial" and callable(getattr(fn, "func", None)):
        fn = fn.func
    module = getattr(fn, "__module__", None) or type(fn).__module__ or ""
    return module == "torch" or module.startswith("torch.")


@contextlib.contextmanager
def others_hooks_hidden(modules: Iterable[nn.Module]) -> Iterator[int]:
    """Take the hooks of every module that are not torch's own out for the block; always put them back.

    Hooks registered inside the block are kept (after the restored ones); a restored hook goes back to
    its original place among the hooks that stayed, so the calling order is unchanged. (A hidden hook
    whose handle is removed inside the block, by code running in it, comes back: nothing in the block
    can see it to remove it.)

    Args:
        modules: the modules whose hooks to hide (each visited once, however often it is listed).
    Returns:
        A context manager yielding the number of hooks hidden.
    """
    saved: List[Tuple[Dict[int, Callable], List[int], Dict[int, Callable]]] = []
    seen = set()
    try:
        for mod in modules:
            attrs = mod.__dict__
            if not (attrs.get("_forward_pre_hooks") or attrs.get("_forward_hooks") or attrs.get("_backward_pre_hooks")
                    or attrs.get("_backward_hooks")) or id(mod) in seen:
                continue  # the common case: no hooks at all
            seen.add(id(mod))
            for kind in HOOK_KINDS:
                hooks = attrs.get(kind)
                if not hooks:
                    continue
                hidden = {k: h for k, h in hooks.items() if not is_torch_hook(h)}
                if not hidden:
                    continue
                saved.append((hooks, list(hooks), hidden))
                for k in hidden:
                    del hooks[k]
        yield sum(len(hidden) for _, _, hidden in saved)
    finally:
        for hooks, order, hidden in reversed(saved):
            now = dict(hooks)  # the hooks that stayed, and any registered inside the block
            restored = [(k, hidden[k] if k in hidden else now.pop(k)) for k in order if k in hidden or k in now]
            hooks.clear()
            hooks.update(restored)
            hooks.update(now)


@contextlib.contextmanager
def hook_passes(model: nn.Module, passes: str) -> Iterator[nn.Module]:
    """Set which passes other code's hooks on the backbone see, for the block; restore the model's setting after.

    Args:
        model: a GAttA model (a :class:`~gatta_viz.core.network.GAttANet`).
        passes: ``"pass2"`` (the default setting: one forward per call, the one whose output is the
            model's output) or ``"both"`` (pass 1, then pass 2).
    Returns:
        A context manager yielding ``model``.
    Raises:
        ValueError: ``passes`` is not one of :data:`HOOK_PASSES`, or ``model`` is not a GAttA model.
    """
    if passes not in HOOK_PASSES:
        raise ValueError(f"passes must be one of {HOOK_PASSES}, got {passes!r}")
    if not hasattr(model, "hook_passes"):
        raise ValueError(f"hook_passes needs a GAttA model (with a hook_passes setting), got {type(model).__name__}")
    before = model.hook_passes
    model.hook_passes = passes
    try:
        yield model
    finally:
        model.hook_passes = before
