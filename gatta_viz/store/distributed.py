"""Several processes writing one map store: who am I (rank, world size), which chunks are mine, and the few
collective steps (the creator's verdict shared by all, barriers).

Under ``torchrun`` (environment ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) a process group is started on the gloo
backend (CPU; it also carries the few small messages of GPU runs). Rank 0 creates (or checks) the store, everyone
writes the chunks of its own contiguous range, rank 0 marks the store complete. Without a process group but with an
explicit rank and world size (independent jobs, e.g. a job array), rank 0 creates the store, the others wait for
it, and whichever process finds every chunk written marks it complete.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

__all__ = ["World", "resolve_world", "my_chunks", "share_verdict", "barrier", "finish", "wait_for"]


@dataclass
class World:
    """This process's place among the writers.

    Attributes:
        rank, size: this process's rank and the number of processes.
        group: whether a torch.distributed process group connects them (barriers and broadcasts work).
        started_here: whether :func:`resolve_world` started that group (and :func:`finish` ends it).
    """

    rank: int = 0
    size: int = 1
    group: bool = False
    started_here: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: creates the store, shows progress, marks the store complete."""
        return self.rank == 0


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def resolve_world(rank: Optional[int] = None, world_size: Optional[int] = None) -> World:
    """Rank and world size: given explicitly, else from a running torch.distributed group, else from torchrun's
    environment (starting a gloo group), else one process.

    Raises:
        ValueError: a rank outside ``[0, world_size)``, or only one of the two given.
    """
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if rank is not None:
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        import torch.distributed as dist

        on = dist.is_available() and dist.is_initialized()
        if on and (dist.get_rank(), dist.get_world_size()) != (int(rank), int(world_size)):
            raise ValueError(f"rank {rank} of {world_size} given, but the process group says "
                             f"{dist.get_rank()} of {dist.get_world_size()}")
        return World(int(rank), int(world_size), on)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), True)
    size = _env_int("WORLD_SIZE")
    if size is None or size <= 1:
        return World()
    dist.init_process_group("gloo")
    return World(dist.get_rank(), dist.get_world_size(), True, True)


def my_chunks(chunks: Sequence[int], rank: int, size: int) -> List[int]:
    """Rank ``rank``'s contiguous share of ``chunks`` (sizes differ by at most one; lower ranks get the extra)."""
    chunks = list(chunks)
    base, extra = divmod(len(chunks), size)
    start = rank * base + min(rank, extra)
    return chunks[start:start + base + (1 if rank < extra else 0)]


def share_verdict(world: World, verdict: str) -> str:
    """Rank 0's ``verdict`` (an error message, or "" for go) given to every rank of a process group."""
    if not world.group or world.size == 1:
        return verdict
    import torch.distributed as dist

    box = [verdict if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return str(box[0] or "")


def barrier(world: World) -> None:
    """Wait for every rank of the process group (no-op without one)."""
    if world.group and world.size > 1:
        import torch.distributed as dist

        dist.barrier()


def wait_for(ready: Callable[[], bool], what: str, timeout: float = 600.0, poll: float = 0.5) -> None:
    """Poll ``ready()`` until it is true (independent processes waiting for rank 0's store).

    Raises:
        TimeoutError: naming ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        time.sleep(poll)


def finish(world: World) -> None:
    """End the process group if :func:`resolve_world` started it."""
    if world.started_here:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
