"""``--model`` / ``--checkpoint``: which model a sub-command uses, checked before anything is loaded."""
from __future__ import annotations

import argparse
import os
from typing import Optional

from . import args as A
from ..models.checkpoint import BUNDLED, DEFAULT_MODEL, LoadedModel, load_model

__all__ = ["add_model_args", "load_model_arg"]


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Add ``--model NAME_OR_PATH`` and ``--checkpoint PATH`` (one or the other; default the bundled default)."""
    p.add_argument("--model", type=A.nonempty_str, default=None,
                   help=f"bundled model name ({', '.join(BUNDLED)}) or checkpoint path (default: {DEFAULT_MODEL})")
    p.add_argument("--checkpoint", type=A.existing_file, default=None,
                   help="checkpoint file (instead of --model; give one of the two)")


def load_model_arg(model: Optional[str], checkpoint: Optional[str]) -> LoadedModel:
    """Load the model named by ``--model`` or ``--checkpoint``.

    Raises:
        UsageError: both given; a folder, or a path that does not exist, as ``--model``; a file that is not a
            usable checkpoint (the loader's message).
    """
    if model is not None and checkpoint is not None:
        raise A.UsageError("give --model or --checkpoint, not both (--checkpoint is a checkpoint file; --model a "
                           "bundled name or a checkpoint file)")
    name = checkpoint if checkpoint is not None else (model or DEFAULT_MODEL)
    if name not in BUNDLED:
        if os.path.isdir(name):
            raise A.UsageError(f"--model {name} is a folder, not a checkpoint file; give a .pt file or a bundled model "
                               f"({', '.join(BUNDLED)})")
        if not os.path.exists(name) and (os.sep in name or name.endswith((".pt", ".pth"))):
            raise A.UsageError(f"--model {name}: the checkpoint file does not exist")
    try:
        return load_model(name)
    except (FileNotFoundError, ValueError) as e:
        raise A.UsageError(str(e)) from None
