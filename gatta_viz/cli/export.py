"""``gatta-viz export``: turn a training run's checkpoint into a small file to ship or bundle."""
from __future__ import annotations

import argparse

from . import args as A
from ..training.export import export_checkpoint

__all__ = ["build_parser", "run"]

PROG = "gatta-viz export"


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``gatta-viz export``."""
    p.add_argument("src", type=A.existing_file, help="checkpoint to export, e.g. runs/fmnist_gatta_resnet/final.pt")
    p.add_argument("dst", type=A.output_file, help="destination file, e.g. gatta_viz/weights/fmnist_gatta_resnet.pt")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``gatta-viz export``; returns the exit code (2 with a one-line message on a bad source or destination)."""
    try:
        size = export_checkpoint(args.src, args.dst)
    except (FileNotFoundError, ValueError, OSError) as e:
        return A.report_error(PROG, e)
    print(f"wrote {args.dst} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(build_parser(A.Parser(prog=PROG)).parse_args()))
