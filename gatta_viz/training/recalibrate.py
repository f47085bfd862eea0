"""``gatta-viz recalibrate``: re-estimate BatchNorm running statistics on training data (each pass its own).

For checkpoints saved with one set of BatchNorm statistics for both passes: the model is rebuilt with
per-pass statistics and every running estimate is recomputed as the plain average of batch
statistics over training batches, in train mode and without gradients, as SWA's ``bn_update`` does.
Weights, keys, queries and alphas are not changed.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch
from torch import nn
from tqdm import tqdm

from ..models.checkpoint import load_checkpoint, save_checkpoint
from ..data.datasets import AnyData, FolderData, augment_batch, input_shape, load_dataset
from ..data.folders import load_folder_for_model
from .matching import check_fits, check_named_fits, resolve_dataset
from ..core.pass_statistics import is_batchnorm

__all__ = ["recalibrate_statistics", "recalibrate_checkpoint"]


@torch.no_grad()
def recalibrate_statistics(
    model: nn.Module,
    data: AnyData,
    images: int = 10240,
    batch_size: int = 128,
    augment: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> int:
    """Recompute every BatchNorm running estimate of ``model`` (pass 2's too) on ``data``.

    Each estimate becomes the average of the batch statistics over the batches seen (momentum None).
    The model's train/eval flags and BatchNorm momenta are restored afterwards.

    Args:
        model: a GAttA model or a plain CNN.
        data: training images (uint8) with their normalisation, in memory or an image folder (read from disk in
            shuffled batches, with the folder's training transform when ``augment``).
        images: how many images to use (the first ``images`` of a seeded permutation).
        batch_size: images per batch (batch statistics depend on it; use the training batch size).
        augment: apply the training augmentation (2-pixel shifts, flips) as training did.
        seed: seeds the permutation and the augmentation.
        progress: show a tqdm bar.
    Returns:
        The number of batches used.
    """
    if images <= 0 or batch_size <= 0:
        raise ValueError(f"images and batch_size must be positive, got {images} and {batch_size}")
    bns = [m for m in model.modules() if is_batchnorm(m)]
    if not bns:
        return 0
    flags = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in bns]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=g)[:images]
    device = next(model.parameters()).device
    if isinstance(data, FolderData):  # read from disk: shuffled batches with the folder's own training transform
        folder = data.with_augment(augment)
        feed = (folder.normalize(b[:images - i]) for i, (b, _) in zip(range(0, len(perm), batch_size),
                                                                       folder.batches(batch_size, shuffle=True, seed=seed)))
    else:
        def in_memory():
            for i in range(0, len(perm), batch_size):
                x = data.normalize(data.images[perm[i : i + batch_size]])
                yield augment_batch(x, generator=g) if augment else x

        feed = in_memory()
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        pass2 = getattr(model, "pass2_stats", None)
        if pass2 is not None:
            for st in pass2.stats.values():
                st.running_mean.zero_()
                st.running_var.fill_(1)
                st.num_batches_tracked.zero_()
        model.train()
        batches = range(0, len(perm), batch_size)
        for x in tqdm(feed, total=len(batches), desc="recalibrating BatchNorm statistics", disable=not progress):
            model(x.to(device))
    finally:
        for m, mom in momenta:
            m.momentum = mom
        for m, flag in flags:
            m.training = flag
    return len(batches)


def recalibrate_checkpoint(
    src: str, dst: str, dataset: Optional[str] = None, data_root: Optional[str] = None, **kwargs
) -> Dict[str, object]:
    """Load ``src`` with per-pass statistics, re-estimate them on the training split, write ``dst``.

    Args:
        src: a gatta_viz checkpoint (statistics shared or per pass).
        dst: destination path (a file; written atomically).
        dataset, data_root: the training data (as for ``gatta-viz train``); None: the data set recorded in the
            checkpoint (Fashion-MNIST when it records none).
        **kwargs: passed to :func:`recalibrate_statistics` (images, batch_size, augment, seed).
    Returns:
        What was done (written into the new checkpoint's meta under ``"recalibrated"``).
    Raises:
        FileNotFoundError, ValueError: ``src`` unreadable or invalid (non-finite weights included), ``dst`` a
            directory, or a data set whose images do not fit the model (another size or channel count).
    """
    if os.path.isdir(dst):
        raise ValueError(f"{dst} is a directory; give the file to write")
    lm = load_checkpoint(src, recalibrating=True)
    name = resolve_dataset(dataset, lm.meta)
    check_named_fits(lm.name, lm.preprocess, name, lm.meta)  # before building 60,000 scenes
    if os.path.isdir(name):  # an image folder: its training images, prepared as the checkpoint says
        data = load_folder_for_model(name, lm.preprocess, lm.classes, split="train")
    else:
        data = load_dataset(name, "train", data_root)
    check_fits(lm.name, lm.preprocess, input_shape(data), getattr(data, "name", name), lm.meta)
    batches = recalibrate_statistics(lm.model, data, **kwargs)
    info = {"from": src, "dataset": data.name, "batches": batches, **{k: v for k, v in kwargs.items() if k != "progress"}}
    meta = {**lm.meta, "recalibrated": info}
    save_checkpoint(dst, lm.model, lm.builder, lm.kwargs, lm.classes, lm.preprocess, meta)
    return info
