"""``gatta-viz train``: train a GAttA model or its baseline (CPU/GPU, single process or torchrun/DDP)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..models.builders import BUILDERS
from ..training.train import train

__all__ = ["build_parser", "run", "main"]


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """Arguments of the training command."""
    p = parser or argparse.ArgumentParser(prog="gatta-viz train", description="Train a GAttA model or its baseline.")
    p.add_argument("--model", default="gatta_compact_resnet", help=f"builder name, one of {sorted(BUILDERS)}")
    p.add_argument("--baseline", action="store_true", help="train the same backbone without GAttA")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, cifar10, cifar100 or an ImageFolder directory")
    p.add_argument("--data-root", default=None, help="directory holding the dataset files")
    p.add_argument("--out", required=True, help="output directory (last.pt, final.pt, metrics.json)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128, help="global batch size (split across processes)")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--warmup", type=float, default=0.15, help="fraction of steps spent warming up")
    p.add_argument("--wd", type=float, default=5e-4, help="weight decay (not on biases, BatchNorm or alpha)")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subset", type=int, default=0, help="train on the first N images only")
    p.add_argument("--test-subset", type=int, default=0, help="evaluate on the first N test images only")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--pad", type=int, default=2, help="random-crop padding in pixels")
    p.add_argument("--flip", type=int, default=1, help="random horizontal flips (1) or not (0)")
    p.add_argument("--no-eval", action="store_true", help="skip the test set after each epoch")
    p.add_argument("--key-dim", dest="d", type=int, default=None, help="key/query dimension d (GAttA models)")
    p.add_argument("--layers", nargs="+", default=None, help="layers to attend (GAttA models)")
    p.add_argument("--widths", type=int, nargs="+", default=None)
    p.add_argument("--blocks", type=int, nargs="+", default=None)
    p.add_argument("--stem-stride", type=int, choices=(1, 2), default=1,
                   help="compact ResNets: 2 halves every feature map (for 48x48 scenes)")
    p.add_argument("--alpha-init", type=float, default=0.0)
    p.add_argument("--freeze-backbone", action="store_true")
    p.add_argument("--norm-stats", choices=("per_pass", "shared"), default="per_pass",
                   help="BatchNorm running statistics per pass (default) or one blended set (ablation)")
    p.add_argument("--detach-pass1", action="store_true",
                   help="no backprop through pass 1 (K, Q, alpha still learn; ~1/3 cheaper per step)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if present")
    p.add_argument("--max-epochs-this-run", type=int, default=0,
                   help="stop after this many epochs (resume later with --resume), e.g. to fit a time slot")
    p.add_argument("--check-ranks", action="store_true", help="DDP: compare every rank's weights at the end")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster on CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the training command; returns the exit code (2 with a message on bad input)."""
    try:
        train(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
