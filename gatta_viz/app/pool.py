"""Replicas of a model, so that parallel renders never share one.

Streamlit runs each browser session in its own thread. A render registers hooks on the model it runs (GAttA's
two passes, captum's Grad-CAM), so one model must never serve two renders at once. Each model therefore comes
as a :class:`ModelPool` of replicas (deep copies), one per CPU core by default; a render takes a replica for its
whole duration, decoding included, so at most that many uploads are decoded and rendered at the same time and
the cores all work.
"""
from __future__ import annotations

import contextlib
import copy
import queue
import threading
from typing import Any, Callable, Iterator, Optional, Union

from ..models.checkpoint import LoadedModel
from .settings import ACQUIRE_TIMEOUT, render_workers

__all__ = ["ModelPool", "pool_for"]


class ModelPool:
    """A model and its replicas (deep copies), each used by one render at a time.

    Args:
        lm: the loaded model (itself the first replica).
        size: how many renders may run at once (default :func:`~gatta_viz.app.settings.render_workers`).
    """

    def __init__(self, lm: LoadedModel, size: Optional[int] = None) -> None:
        self.lm = lm
        self.size = max(1, int(size or render_workers()))
        self._free: "queue.Queue[LoadedModel]" = queue.Queue()
        self._free.put(lm)
        for _ in range(self.size - 1):
            self._free.put(copy.deepcopy(lm))

    @contextlib.contextmanager
    def replica(self, timeout: Optional[float] = ACQUIRE_TIMEOUT) -> Iterator[LoadedModel]:
        """Take a replica for the duration of the block (waiting for one if all are busy).

        Raises:
            TimeoutError: none became free within ``timeout`` seconds.
        """
        try:
            lm = self._free.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the server is busy (all {self.size} render slots in use for {timeout:.0f} s); "
                               "try again in a moment") from None
        try:
            yield lm
        finally:
            self._free.put(lm)

    def idle(self) -> int:
        """Replicas free right now."""
        return self._free.qsize()

    def on_every_replica(self, work: Callable[[LoadedModel], Any]) -> None:
        """Hold every replica, then run ``work`` on each (e.g. a warm-up render), and give them all back."""
        held = []
        try:
            for _ in range(self.size):
                held.append(self._free.get(timeout=ACQUIRE_TIMEOUT))
            for lm in held:
                work(lm)
        finally:
            for lm in held:
                self._free.put(lm)


_POOLS_LOCK = threading.Lock()


def pool_for(model: Union[LoadedModel, ModelPool]) -> ModelPool:
    """The pool serving ``model`` (made once per LoadedModel, on first use).

    Args:
        model: a loaded model, or a pool (returned as it is).
    Returns:
        its :class:`ModelPool`.
    """
    if isinstance(model, ModelPool):
        return model
    with _POOLS_LOCK:
        pool = model.__dict__.get("_render_pool")
        if pool is None:
            pool = ModelPool(model)
            model.__dict__["_render_pool"] = pool
        return pool
