"""How long each notebook takes to execute from a clean slate (target: under 180 s each on a busy 2-core CPU).

The test suite checks what the notebooks compute (tests/test_notebooks.py), not how fast: wall time depends on the
machine. Run this on the machine whose speed you care about.

Run:  .venv/bin/python benchmarks/notebooks.py [--only 01_quickstart.ipynb ...] [--target 180]
Prints a markdown table (seconds per notebook, and whether it is within the target); exit 1 if one is over.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import List, Optional

NB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")


def run_notebook(path: str, cell_timeout: int = 1800) -> float:
    """Execute ``path`` (its stored outputs cleared) in a fresh kernel; returns the wall time in seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    with tempfile.TemporaryDirectory() as work:
        t = time.perf_counter()
        NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", resources={"metadata": {"path": work}}).execute()
        return time.perf_counter() - t


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", default=None, help="notebook file names (default: all in notebooks/)")
    p.add_argument("--target", type=float, default=180.0, help="seconds per notebook")
    args = p.parse_args(argv)
    names = args.only or sorted(n for n in os.listdir(NB_DIR) if n.endswith(".ipynb"))
    print(f"| notebook | seconds | within {args.target:.0f} s |\n|---|---:|---|")
    over = 0
    for name in names:
        s = run_notebook(os.path.join(NB_DIR, name))
        over += s > args.target
        print(f"| {name} | {s:.0f} | {'yes' if s <= args.target else 'NO'} |", flush=True)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
