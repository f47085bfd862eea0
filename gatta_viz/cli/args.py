"""Validation at the command line's edge: argparse types that refuse meaningless values, and the errors a
sub-command raises to end with one line instead of a traceback.

Every ``type=`` callable here raises :class:`argparse.ArgumentTypeError` with a message naming the problem;
:class:`Parser` (the parser class of ``gatta-viz`` and all its sub-commands) prints it as one line and exits 2.
"""
from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import sys
from typing import Any, Callable, Optional, Sequence

__all__ = [
    "Parser", "UsageError", "Interrupted", "UniqueList",
    "positive_int", "nonnegative_int", "int_range", "finite_float", "positive_float", "nonnegative_float",
    "probability", "nonempty_str", "threads", "dpi", "port", "address", "device",
    "existing_file", "existing_dir", "output_dir", "output_file", "check_output_dir", "check_output_file",
    "report_interrupt", "report_error", "close_progress_bars", "unique",
]

MAX_THREADS = (os.cpu_count() or 1) * 4
SYSTEM_DIRS = ("/proc", "/sys", "/dev")


class UsageError(ValueError):
    """A user's mistake found while a sub-command runs: ``gatta-viz`` prints its message on one line, exit 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C with a line of its own, e.g. ``Interrupted("interrupted; 12 of 30 images written")``: ``gatta-viz``
    prints it (no traceback) and exits 130."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``PROG: error: MESSAGE (see PROG --help)``, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        line = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {line} (see {self.prog} --help)\n")


def _bad(message: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(message)


def _int(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise _bad(f"not an integer: {text!r}") from None


def int_range(lo: Optional[int] = None, hi: Optional[int] = None, what: str = "") -> Callable[[str], int]:
    """An argparse type: an integer in ``[lo, hi]`` (None: unbounded on that side)."""

    def parse(text: str) -> int:
        v = _int(text)
        if lo is not None and v < lo or hi is not None and v > hi:
            if hi is None:
                rule = f">= {lo}"
            elif lo is None:
                rule = f"<= {hi}"
            else:
                rule = f"between {lo} and {hi}"
            raise _bad(f"{what + ' ' if what else ''}must be {rule}, got {v}")
        return v

    parse.__name__ = "integer"
    return parse


positive_int = int_range(1)
positive_int.__doc__ = "An integer >= 1."
nonnegative_int = int_range(0)
nonnegative_int.__doc__ = "An integer >= 0."
threads = int_range(0, MAX_THREADS, "a thread count (0: torch's default)")
dpi = int_range(10, 1200, "a resolution in dots per inch")
port = int_range(1, 65535, "a TCP port")


def finite_float(lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
                 hi_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float (NaN and inf refused) in the given range.

    Args:
        lo, hi: bounds (None: unbounded on that side).
        lo_open, hi_open: exclude the bound itself (``finite_float(0, lo_open=True)``: > 0).
    """

    def parse(text: str) -> float:
        try:
            v = float(str(text).strip())
        except ValueError:
            raise _bad(f"not a number: {text!r}") from None
        if not math.isfinite(v):
            raise _bad(f"must be a finite number, got {text!r}")
        low_bad = lo is not None and (v <= lo if lo_open else v < lo)
        high_bad = hi is not None and (v >= hi if hi_open else v > hi)
        if low_bad or high_bad:
            parts = []
            if lo is not None:
                parts.append(f"{'>' if lo_open else '>='} {lo:g}")
            if hi is not None:
                parts.append(f"{'<' if hi_open else '<='} {hi:g}")
            raise _bad(f"must be {' and '.join(parts)}, got {v:g}")
        return v

    parse.__name__ = "number"
    return parse


positive_float = finite_float(0, lo_open=True)
nonnegative_float = finite_float(0)
probability = finite_float(0, 1)


def nonempty_str(text: str) -> str:
    """An argparse type: a string that is not empty or blank."""
    if not str(text).strip():
        raise _bad("must not be empty")
    return text


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def address(text: str) -> str:
    """An argparse type: an IPv4/IPv6 address or a well-formed host name (all-numeric names must be valid IPv4)."""
    t = str(text).strip()
    if not t:
        raise _bad("must not be empty")
    try:
        ipaddress.ip_address(t.strip("[]"))
        return t
    except ValueError:
        pass
    labels = t.rstrip(".").split(".")
    if all(label.isdigit() for label in labels):
        raise _bad(f"not a valid IP address: {text!r}")
    if len(t) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _bad(f"not a valid IP address or host name: {text!r}")
    return t


def device(text: str) -> str:
    """An argparse type: a torch device available here (``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    import torch

    t = str(text).strip()
    try:
        dev = torch.device(t)
    except (RuntimeError, ValueError):
        raise _bad(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return t
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _bad(f"device {text!r}: no CUDA GPU is available here; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise _bad(f"device {text!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        return t
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise _bad(f"device {text!r}: MPS is not available here; use cpu")
        return t
    raise _bad(f"unsupported device {text!r}; use cpu, cuda, cuda:N or mps")


def _system_path(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real == d or real.startswith(d + os.sep) for d in SYSTEM_DIRS)


def existing_file(text: str) -> str:
    """An argparse type: an existing regular file."""
    if not str(text).strip():
        raise _bad("a file path must not be empty")
    if os.path.isdir(text):
        raise _bad(f"{text} is a directory, not a file")
    if not os.path.isfile(text):
        raise _bad(f"no such file: {text}")
    return text


def existing_dir(text: str) -> str:
    """An argparse type: an existing directory."""
    if not str(text).strip():
        raise _bad("a folder path must not be empty")
    if not os.path.exists(text):
        raise _bad(f"no such folder: {text}")
    if not os.path.isdir(text):
        raise _bad(f"{text} is a file, not a folder")
    return text


def _nearest_existing(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def check_output_dir(path: str) -> str:
    """Why ``path`` cannot be an output folder (created if missing), or "" when it can."""
    if not str(path).strip():
        return "an output folder must not be empty"
    if _system_path(path):
        return f"{path}: cannot write under {', '.join(SYSTEM_DIRS)}"
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{path} exists and is not a folder"
    base = _nearest_existing(path)
    if not os.path.isdir(base):
        return f"{path}: {base} is a file, not a folder"
    if not os.access(base, os.W_OK | os.X_OK):
        return f"{path}: {base} is not writable"
    return ""


def check_output_file(path: str) -> str:
    """Why ``path`` cannot be written as a file, or "" when it can (its folder must exist)."""
    if not str(path).strip():
        return "an output file name must not be empty"
    if _system_path(path):
        return f"{path}: cannot write under {', '.join(SYSTEM_DIRS)}"
    if os.path.isdir(path):
        return f"{path} is a directory; give a file name"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"{path}: folder {parent} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return f"{path}: not writable"
    return ""


def output_dir(text: str) -> str:
    """An argparse type: a folder to write into (see :func:`check_output_dir`)."""
    problem = check_output_dir(text)
    if problem:
        raise _bad(problem)
    return text


def output_file(text: str) -> str:
    """An argparse type: a file to write (see :func:`check_output_file`)."""
    problem = check_output_file(text)
    if problem:
        raise _bad(problem)
    return text


class UniqueList(argparse.Action):
    """An argparse action for ``nargs="+"`` options that refuses a value given twice."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        seen, repeated = [], []
        for v in values:
            if v not in seen:
                seen.append(v)
            elif v not in repeated:
                repeated.append(v)
        if repeated:
            shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in repeated)
            parser.error(f"argument {option_string or self.dest}: {shown} given more than once")
        setattr(namespace, self.dest, list(values))


def close_progress_bars() -> None:
    """Close progress bars a failure or Ctrl-C left open, so the message that follows gets a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or []):
        try:
            bar.leave = False
            bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot close must not hide the message
            pass


def report_interrupt(prog: str, exc: BaseException, stream: Any = None) -> int:
    """Print the one line for a Ctrl-C (the :class:`Interrupted` message or "interrupted"); returns 130."""
    close_progress_bars()
    msg = str(exc).strip() if isinstance(exc, Interrupted) and str(exc).strip() else "interrupted"
    print(f"{prog}: {msg}", file=stream or sys.stderr, flush=True)
    return 130


def report_error(prog: str, exc: BaseException, stream: Any = None) -> int:
    """Print a user's mistake as one line ``PROG: error: MESSAGE`` (line breaks folded); returns 2."""
    close_progress_bars()
    msg = " ".join(str(exc).split()) or type(exc).__name__
    print(f"{prog}: error: {msg}", file=stream or sys.stderr, flush=True)
    return 2


def unique(values: Sequence[Any], name: str) -> None:
    """Raise :class:`UsageError` when ``values`` repeats an element (for lists checked after parsing)."""
    dup = sorted({v for v in values if list(values).count(v) > 1}, key=str)
    if dup:
        raise UsageError(f"{name}: {', '.join(map(str, dup))} given more than once")
