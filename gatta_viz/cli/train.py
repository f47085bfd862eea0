"""``gatta-viz train``: train a GAttA model or its baseline (CPU/GPU, single process or torchrun/DDP)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..models.builders import BUILDERS
from ..training.stability import CLIP_GRAD, NonFiniteError
from ..training.train import train
from . import args as A

__all__ = ["build_parser", "run", "main", "CLIP_GRAD"]


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """Arguments of the training command."""
    p = parser or A.Parser(prog="gatta-viz train", description="Train a GAttA model or its baseline.")
    p.add_argument("--model", type=A.nonempty_str, default="gatta_compact_resnet", help=f"builder name, one of {sorted(BUILDERS)}")
    p.add_argument("--baseline", action="store_true", help="train the same backbone without GAttA")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist, cifar10, cifar100, fmnist-pairs, fmnist-clutter, or an image folder "
                        "(DIR/train/<class>/ + DIR/val/<class>/, or DIR/<class>/ with --val-fraction held out)")
    p.add_argument("--data-root", default=None, help="directory holding the dataset files")
    p.add_argument("--out", type=A.output_dir, required=True, help="output directory (last.pt, final.pt, metrics.json)")
    p.add_argument("--epochs", type=A.positive_int, default=10)
    p.add_argument("--batch-size", type=A.positive_int, default=128, help="global batch size (split across processes)")
    p.add_argument("--lr", type=A.positive_float, default=0.1, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--warmup", type=A.finite_float(0, 1, lo_open=True, hi_open=True), default=0.15, help="fraction of steps spent warming up")
    p.add_argument("--wd", type=A.nonnegative_float, default=5e-4, help="weight decay (not on biases, BatchNorm or alpha)")
    p.add_argument("--clip-grad", type=A.nonnegative_float, default=CLIP_GRAD,
                   help="clip the global gradient norm to this (0: no clipping); keeps the GAttA gain from running away")
    p.add_argument("--label-smoothing", type=A.finite_float(0, 1, hi_open=True), default=0.1)
    p.add_argument("--seed", type=A.nonnegative_int, default=0)
    p.add_argument("--subset", type=A.nonnegative_int, default=0, help="train on the first N images only")
    p.add_argument("--test-subset", type=A.nonnegative_int, default=0, help="evaluate on the first N test images only")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--pad", type=A.nonnegative_int, default=2, help="random-crop padding in pixels")
    p.add_argument("--flip", type=A.int_range(0, 1), default=1, help="random horizontal flips (1) or not (0)")
    p.add_argument("--no-eval", action="store_true", help="skip the test set after each epoch")
    p.add_argument("--key-dim", dest="d", type=A.positive_int, default=None, help="key/query dimension d (GAttA models)")
    p.add_argument("--layers", type=A.nonempty_str, nargs="+", action=A.UniqueList, default=None, help="layers to attend (GAttA models)")
    p.add_argument("--widths", type=A.positive_int, nargs="+", default=None, help="channels per stage (compact ResNets)")
    p.add_argument("--blocks", type=A.positive_int, nargs="+", default=None, help="residual blocks per stage (compact ResNets)")
    p.add_argument("--stem-stride", type=int, choices=(1, 2), default=1,
                   help="compact ResNets: 2 halves every feature map (for 48x48 scenes)")
    p.add_argument("--alpha-init", type=A.finite_float(), default=0.0)
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train only the GAttA keys, queries and alphas (and a class layer made new for your classes)")
    p.add_argument("--weights", default=None,
                   help="ResNet builders: start from pretrained weights, a torchvision name (IMAGENET1K_V1, DEFAULT; "
                        "downloads once) or a local state-dict file (offline)")
    p.add_argument("--image-size", type=A.int_range(8), default=None,
                   help="image folders: side of the square model input (default 64, 224 with --weights)")
    p.add_argument("--val-fraction", type=A.finite_float(0, 1, hi_open=True), default=0.1,
                   help="image folders without val/ or test/: share of each class held out for validation (seed --seed)")
    p.add_argument("--normalize", choices=("auto", "sample", "imagenet"), default="auto",
                   help="image folders: mean/std estimated on 500 training images (sample) or ImageNet's (imagenet); "
                        "auto: imagenet with --weights, else sample")
    p.add_argument("--workers", type=A.nonnegative_int, default=None,
                   help="image folders: decoding processes (default: up to 4, one core left for training)")
    p.add_argument("--amp", action="store_true", help="bfloat16 mixed precision (autocast) where the device supports it")
    p.add_argument("--norm-stats", choices=("per_pass", "shared"), default="per_pass",
                   help="BatchNorm running statistics per pass (default) or one blended set (ablation)")
    p.add_argument("--detach-pass1", action="store_true",
                   help="no backprop through pass 1 (K, Q, alpha still learn; ~1/3 cheaper per step)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if present")
    p.add_argument("--max-epochs-this-run", type=A.nonnegative_int, default=0,
                   help="0: no limit; else stop after this many epochs (resume later with --resume), e.g. to fit a time slot")
    p.add_argument("--check-ranks", action="store_true", help="DDP: compare every rank's weights at the end")
    p.add_argument("--device", type=_device, default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=A.threads, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster on CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _device(text: str) -> str:
    """``auto`` or a device available here (see :func:`gatta_viz.cli.args.device`)."""
    return "auto" if str(text).strip() == "auto" else A.device(text)


def run(args: argparse.Namespace) -> int:
    """Run the training command; returns the exit code: 0, 1 when training went non-finite (the message names
    epoch, step and tensor; last.pt keeps the last finite epoch, no final.pt), 2 with a message on bad input.

    Raises:
        gatta_viz.cli.args.Interrupted: Ctrl-C ("interrupted; resume with --resume"; exit 130 from ``gatta-viz``).
    """
    try:
        train(args)
    except NonFiniteError as e:
        kept = (f"{args.out}/last.pt keeps epoch {e.last_good_epoch}" if e.last_good_epoch
                else "no checkpoint was written")
        print(f"gatta-viz train: error: {e}; {kept}, no final.pt (try a smaller --lr, or --clip-grad if it was 0)",
              file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"gatta-viz train: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        raise A.Interrupted("interrupted; resume with --resume") from None
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m gatta_viz.cli.train ARGS``: parse and run (Ctrl-C: one line, exit 130)."""
    try:
        return run(build_parser().parse_args(argv))
    except KeyboardInterrupt as e:
        return A.report_interrupt("gatta-viz train", e)


if __name__ == "__main__":
    sys.exit(main())
