"""``gatta-viz export``: turn a training run's checkpoint into a small file to ship or bundle."""
from __future__ import annotations

import argparse
import sys

from ..training.export import export_checkpoint

__all__ = ["build_parser", "run"]


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``gatta-viz export``."""
    p.add_argument("src", help="checkpoint to export, e.g. runs/fmnist_gatta_resnet/final.pt")
    p.add_argument("dst", help="destination file, e.g. gatta_viz/weights/fmnist_gatta_resnet.pt")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``gatta-viz export``; returns the exit code (2 on a bad source file)."""
    try:
        size = export_checkpoint(args.src, args.dst)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(build_parser(argparse.ArgumentParser(prog="gatta-viz export")).parse_args()))
