"""Memory of a training epoch's loader over a large image folder: streaming keeps it flat.

Run:  .venv/bin/python benchmarks/folder_memory.py                  (20,000 PNGs at 64 px; about 2 minutes on 2 cores)
      .venv/bin/python benchmarks/folder_memory.py --images 2000     (quicker)

Writes ``--images`` colour PNGs (64x64, 10 classes) into a temporary folder, then runs one training epoch's batches
through the same code as ``gatta-viz train --dataset DIR --image-size 64`` (normalisation estimated on 500 images,
RandomResizedCrop + flip in ``--workers`` decoding processes, batches normalised in the main process). It samples
the memory of the main process and of every worker (PSS, see RSSSampler) every 0.2 s and prints one line: the peak of
their sum, its growth after the first 20 steps, and what the pixels alone would take held in memory.
Verdict rule (fixed before measuring): the peak summed RSS stays under 2 GB.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

import numpy as np
import psutil
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from gatta_viz.data.folders import load_image_folder_splits  # noqa: E402
from gatta_viz.training.train import epoch_batches  # noqa: E402

MB = 1024 * 1024
LIMIT_MB = 2048


def write_images(root: str, n: int, size: int, classes: int = 10, seed: int = 0) -> None:
    """``n`` smooth random colour images (a coarse random grid upsampled), spread over ``classes`` folders."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class{c}"), exist_ok=True)
    for i in range(n):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse, "RGB").resize((size, size), Image.Resampling.BILINEAR)
        img.save(os.path.join(root, f"class{i % classes}", f"{i:06d}.png"), compress_level=1)


class RSSSampler:
    """The summed memory of this process and its children, sampled in a thread; keeps the peak.

    Each process counts its proportional set size (PSS: private pages plus its share of pages shared with the
    others), so the libraries that forked workers share with the main process are counted once, not once each.
    """

    def __init__(self, period: float = 0.2) -> None:
        self.period, self.peak, self.now = period, 0, 0
        self._stop = threading.Event()
        self._me = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        total = self._me.memory_full_info().pss
        for child in self._me.children(recursive=True):
            try:
                total += child.memory_full_info().pss
            except psutil.Error:
                pass
        self.now = total
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.period)

    def __enter__(self) -> "RSSSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep", default=None, help="write the images here and keep them (default: a temp folder)")
    args = p.parse_args()
    torch.set_num_threads(1)
    root = args.keep or tempfile.mkdtemp(prefix="folder_memory_")
    try:
        t0 = time.time()
        if not os.path.isdir(os.path.join(root, "class0")):
            write_images(root, args.images, args.size)
        t_write = time.time() - t0
        train_args = SimpleNamespace(no_augment=False, seed=0, workers=args.workers, pad=0, flip=1)
        with RSSSampler() as rss:
            start = rss.sample()
            train, _, _ = load_image_folder_splits(root, args.size, val_fraction=0.0, workers=args.workers)
            steps, seen, after20 = 0, 0, None
            t1 = time.time()
            for x, y in epoch_batches(train_args, train, 0, 1, 0, args.batch_size):
                steps += 1
                seen += len(y)
                if steps == 20:
                    after20 = rss.sample()
            t_epoch = time.time() - t1
            rss.sample()
        pixels_mb = len(train) * 3 * args.size * args.size / MB
        peak_mb = rss.peak / MB
        growth = (rss.peak - (after20 or rss.peak)) / MB
        verdict = "pass" if peak_mb < LIMIT_MB else "FAIL"
        print(f"folder_memory: {seen:,} images at {args.size} px streamed in {steps} steps of {args.batch_size} "
              f"({args.workers} workers, {t_epoch:.0f} s; writing them took {t_write:.0f} s): peak memory (PSS) of the main "
              f"process + workers {peak_mb:.0f} MB (before loading {start / MB:.0f} MB; +{growth:.0f} MB after step 20), "
              f"limit {LIMIT_MB} MB: {verdict}; held in memory the pixels alone would take {pixels_mb:.0f} MB")
        return 0 if verdict == "pass" else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
