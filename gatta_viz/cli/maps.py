"""``gatta-viz maps``: every GAttA layer's gain map (alpha x agreement), the dense layers' gains, q_avg and both
passes' logits of a whole data set, into one chunked zarr store that later analyses read lazily (``gv.open_maps``).

``gatta-viz maps --model fmnist-gatta-resnet --split train --out maps.zarr`` writes the 60,000 Fashion-MNIST
training images. Rerun the same command after a kill: finished chunks are skipped. A store made with another
model, data set, preprocessing, --n or --chunk is refused (--overwrite replaces it). Several processes share the
work: ``torchrun --standalone --nproc_per_node 2 -m gatta_viz.cli -- maps ...`` (each writes its own chunks; no
merge step; the ``--`` keeps torchrun from reading ``--n`` as its own ``--nnodes``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

from . import args as A
from .model_args import add_model_args, load_model_arg

__all__ = ["build_parser", "run", "main"]

PROG = "gatta-viz maps"


def store_out(text: str) -> str:
    """An argparse type: where the store goes (a folder, created if missing; or a URL such as ``s3://b/maps.zarr``)."""
    if "://" in str(text):
        return text
    problem = A.check_output_dir(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or A.Parser(prog=PROG, description=__doc__)
    add_model_args(p)
    p.add_argument("--dataset", type=A.nonempty_str, default=None,
                   help="a data set name (fashion-mnist, fmnist-pairs, fmnist-clutter, cifar10...) or an image folder "
                        "(default: the one the checkpoint was trained on)")
    p.add_argument("--split", choices=["train", "test"], default="test",
                   help="which split of the data set (of a folder with train/ and val/: test = val/)")
    p.add_argument("--folder", type=A.existing_dir, default=None,
                   help="a folder of images instead of --dataset: class sub-folders named after the model's classes "
                        "give labels, any other layout is read as image files (label -1)")
    p.add_argument("--labels", choices=["auto", "folders", "none"], default="auto",
                   help="with --folder: labels from class sub-folders (folders), none (every image file, label -1), "
                        "or auto")
    p.add_argument("--n", type=A.positive_int, default=None, help="the first N images (default: all)")
    p.add_argument("--chunk", type=A.int_range(1, 1_000_000, "a chunk size"), default=256,
                   help="images per chunk: the unit of work, of resuming, and of the arrays' chunking")
    p.add_argument("--batch-size", type=A.positive_int, default=None,
                   help="images per trace (default: the chunk for inputs up to 64x64 pixels, about a million "
                        "input pixels per trace for larger ones)")
    p.add_argument("--threads", type=A.threads, default=0, help="torch threads per process (0: torch's default)")
    p.add_argument("--device", type=A.device, default="cpu",
                   help="where to trace: cpu, cuda (under torchrun: each process its LOCAL_RANK's GPU), cuda:N, mps")
    p.add_argument("--out", type=store_out, required=True,
                   help="the store: a folder (maps.zarr) or a URL zarr opens with fsspec (s3://bucket/maps.zarr)")
    p.add_argument("--overwrite", action="store_true", help="replace a store made with other settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _chunks_written(out: str) -> str:
    """``"K of M chunks"`` already in the store at ``out`` (for the interrupt message), or ""."""
    try:
        from ..store.read import open_maps

        done = open_maps(out).done()
        return f"{int(done.sum())} of {len(done)} chunks written; "
    except Exception:  # noqa: BLE001 - the message must not fail
        return ""


def _device(name: str) -> str:
    """``cuda`` under torchrun is this process's GPU (``cuda:LOCAL_RANK``); any other name as given."""
    local = os.environ.get("LOCAL_RANK")
    return f"cuda:{int(local)}" if name == "cuda" and local is not None and local.strip().isdigit() else name


def _compute(args: argparse.Namespace):
    """Load, check and write; returns (store, source, seconds)."""
    import torch

    from ..store.sources import source_for_model
    from ..store.write import MapsConfig, compute_maps

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.folder is None and args.labels != "auto":
        raise A.UsageError("--labels applies to --folder only")
    loaded = load_model_arg(args.model, args.checkpoint)
    loaded.model.to(_device(args.device))
    if not loaded.is_gatta:
        raise A.UsageError(f"{loaded.name} is a plain CNN without GAttA layers: it has no agreement maps to store")
    source = source_for_model(loaded, args.dataset, args.split, args.folder, args.labels)
    if args.n is not None and args.n > len(source):
        what = source.describe()
        raise A.UsageError(f"--n {args.n} is more than the {len(source)} images of {what['name']}"
                           + (f" ({what['split']} split)" if what.get("split") else ""))
    cfg = MapsConfig(n=args.n, chunk=args.chunk, batch_size=args.batch_size, overwrite=args.overwrite,
                     progress=not args.no_progress)
    t0 = time.perf_counter()
    store = compute_maps(loaded, source, args.out, cfg)
    return store, source, time.perf_counter() - t0


def run(args: argparse.Namespace) -> int:
    """Write the store; returns the exit code (2: a user's mistake, one line; 130: Ctrl-C)."""
    import torch

    threads = torch.get_num_threads()  # --threads holds for this run only (main() may be called in a process)
    try:
        store, source, seconds = _compute(args)
    except KeyboardInterrupt:
        raise A.Interrupted(f"interrupted; {_chunks_written(args.out)}rerun the same command to resume") from None
    except A.UsageError:
        raise
    except (ValueError, FileNotFoundError, OSError, ImportError) as e:
        return A.report_error(PROG, e)
    finally:
        torch.set_num_threads(threads)
    if int(os.environ.get("RANK", "0") or 0) == 0:
        n = len(store)
        state = "complete" if store.complete else "incomplete (rerun to finish)"
        print(f"{args.out}: {n} images of {source.describe()['name']}, layers "
              f"{', '.join(store.layers + store.dense_layers)}; {state}; this run {seconds:.1f} s")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from . import main as cli_main

    return cli_main(["maps", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
