"""Garments in clutter on natural backgrounds: localization where the background is not flat black.

Each image is one Fashion-MNIST garment (the label) at a random position and scale on a greyscale canvas,
over a random crop of a natural photograph or texture with randomised zoom, contrast and brightness, plus a
few distractor fragments (the cluttered-MNIST protocol of Mnih et al. 2014 and Jaderberg et al. 2015), cut
from garments of other classes only (clean distractors: a map pointing at a fragment points at no evidence
for the label; ``ClutterData.fragment_labels`` / ``fragment_boxes`` say where they are and what they were
cut from). The garment is drawn last, opaque where it has ink (alpha = intensity / 64, clipped
to 1), so it is whole and the mask says exactly where it is.

Backgrounds come from photographs and textures of the scikit-image 0.26.0 wheel (CC0 or public domain; see
``backgrounds/LICENSES.md``); the photos behind train and test images are disjoint (``TRAIN_BACKGROUNDS`` /
``TEST_BACKGROUNDS``). Deterministic: the same source split, ``n``, ``seed`` and options give the same images.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .in_memory import ImageData, load_fashion_mnist

__all__ = ["CLUTTER_DATASETS", "TRAIN_BACKGROUNDS", "TEST_BACKGROUNDS", "ClutterData", "load_backgrounds",
           "make_clutter", "load_clutter", "export_clutter"]

BACKGROUND_DIR = os.path.join(os.path.dirname(__file__), "backgrounds")
TRAIN_BACKGROUNDS = ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "grass", "hubble")
TEST_BACKGROUNDS = ("coins", "gravel", "retina", "rocket")
ITEM_THRESHOLD = 16  # a garment pixel belongs to the item when its intensity (0-255) exceeds this
ALPHA_FULL = 64  # garment intensity at which the garment fully hides the background
CLUTTER_DATASETS = {"fmnist-clutter": 48}  # name -> canvas
SPLIT_SIZES = {"train": (60_000, 0), "test": (10_000, 1)}


@dataclass
class ClutterData(ImageData):
    """One garment per image, in clutter; an :class:`ImageData` with where the garment is.

    Attributes:
        images: uint8 (N, 1, H, W).
        labels: int64 (N,), the garment's class.
        boxes: int64 (N, 4), the garment's box (x0, y0, x1, y1), x1/y1 exclusive, of its pixels > threshold.
        masks: bool (N, H, W), the garment's pixels (intensity > threshold after scaling).
        backgrounds: names of the photos, index = ``background`` entry.
        background: int64 (N,), which photo each image's background was cut from.
        sources: int64 (N,), index of the garment in the source data.
        fragment_labels: int64 (N, F), the class of the garment each distractor fragment was cut from (never
            the image's label: fragments are clean distractors).
        fragment_boxes: int64 (N, F, 4), each fragment's square on the canvas (x0, y0, x1, y1), x1/y1 exclusive
            (the whole cut square, drawn before the garment, which may cover part of it).
        fragment_sources: int64 (N, F), index in the source data of the garment each fragment was cut from.
    """

    boxes: Optional[torch.Tensor] = None
    masks: Optional[torch.Tensor] = None
    backgrounds: Tuple[str, ...] = ()
    background: Optional[torch.Tensor] = None
    sources: Optional[torch.Tensor] = None
    fragment_labels: Optional[torch.Tensor] = None
    fragment_boxes: Optional[torch.Tensor] = None
    fragment_sources: Optional[torch.Tensor] = None

    def subset(self, n: Optional[int] = None, indices: Optional[Sequence[int]] = None) -> "ClutterData":
        """The first ``n`` images, or those at ``indices``."""
        idx = torch.as_tensor(list(indices)) if indices is not None else torch.arange(min(n, len(self)))
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return ClutterData(self.images[idx], self.labels[idx], self.classes, self.mean, self.std, self.name,
                           self.boxes[idx], self.masks[idx], self.backgrounds, self.background[idx],
                           self.sources[idx], pick(self.fragment_labels), pick(self.fragment_boxes),
                           pick(self.fragment_sources))


def load_backgrounds(names: Sequence[str]) -> List[torch.Tensor]:
    """The named background photos as float tensors (1, 1, h, w) in [0, 1] (short side 192 px).

    Raises:
        ValueError: a name that is not one of the bundled backgrounds.
    """
    from PIL import Image

    known = TRAIN_BACKGROUNDS + TEST_BACKGROUNDS
    out = []
    for name in names:
        if name not in known:
            raise ValueError(f"unknown background {name!r}; bundled: {sorted(known)}")
        with Image.open(os.path.join(BACKGROUND_DIR, f"{name}.png")) as im:
            a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(a)[None, None])
    return out


def _affine_grid(scale_x: torch.Tensor, scale_y: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor,
                 size: int) -> torch.Tensor:
    """Sampling grid (m, size, size, 2) mapping canvas pixels to source coordinates (align_corners=False)."""
    theta = torch.zeros(len(scale_x), 2, 3, dtype=torch.float32)
    theta[:, 0, 0], theta[:, 0, 2] = scale_x, tx
    theta[:, 1, 1], theta[:, 1, 2] = scale_y, ty
    return F.affine_grid(theta, [len(scale_x), 1, size, size], align_corners=False)


def _place(tiles: torch.Tensor, size: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, canvas: int) -> torch.Tensor:
    """(m, 1, canvas, canvas) float: each 28x28 tile resized to ``size`` px with top-left (y0, x0), 0 elsewhere."""
    # canvas pixel centre c (normalised u = (2c + 1) / canvas - 1) lands on tile coordinate
    # v = (2 (c - x0) / size) * ... ; in normalised terms v = a u + b with a = canvas / size
    a = canvas / size.float()
    bx = (canvas - 2 * x0.float() - size.float()) / size.float()
    by = (canvas - 2 * y0.float() - size.float()) / size.float()
    grid = _affine_grid(a, a, bx, by, canvas)
    return F.grid_sample(tiles, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _other_class_sources(labels: torch.Tensor, item: torch.Tensor, frag_src: torch.Tensor, seed: int) -> torch.Tensor:
    """Fragment sources with every fragment of the item's own class re-drawn among the other classes' garments.

    A fragment cut from a garment of the label's class would be evidence a map may rightly point at, so the
    distractors are clean: each fragment whose source shares the item's class is replaced by a garment drawn
    uniformly from the other classes. The re-draws use their own generator (seeded by ``seed``), so every other
    random choice, and every image without such a fragment, is what the generator made before.

    Args:
        labels: (S,) class of every source garment.
        item: (n,) source index of each image's garment.
        frag_src: (n, F) source index of each fragment.
        seed: the data set's seed.
    Returns:
        (n, F) int64 source indices, none of the item's class.
    Raises:
        ValueError: fragments are wanted but every source garment has the same class.
    """
    if frag_src.numel() == 0:
        return frag_src
    own = labels[item][:, None]  # (n, 1)
    same = labels[frag_src] == own
    if not same.any():
        return frag_src
    u = torch.rand(frag_src.shape, generator=torch.Generator().manual_seed(10_007 + seed))
    out = frag_src.clone()
    for c in own[same.any(1)].unique().tolist():
        others = (labels != c).nonzero().flatten()
        if len(others) == 0:
            raise ValueError("distractor fragments need garments of another class than the item's; the source "
                             f"has only class {c}")
        sel = same & (own == c)
        out[sel] = others[(u[sel] * len(others)).long().clamp(max=len(others) - 1)]
    return out


def _background_crops(photos: Sequence[torch.Tensor], which: torch.Tensor, crop: torch.Tensor, u: torch.Tensor,
                      v: torch.Tensor, flip: torch.Tensor, canvas: int) -> torch.Tensor:
    """(m, 1, canvas, canvas) crops of the photos: photo ``which``, crop side ``crop`` px, position (u, v) in [0, 1),
    mirrored where ``flip``."""
    bg = torch.zeros(len(which), 1, canvas, canvas)
    for p, photo in enumerate(photos):
        sel = (which == p).nonzero().flatten()
        if len(sel) == 0:
            continue
        h, w = photo.shape[-2:]
        c = crop[sel]
        sx, sy = c / w, c / h  # half-extent of the crop in normalised photo coordinates
        cx = (u[sel] * 2 - 1) * (1 - sx)
        cy = (v[sel] * 2 - 1) * (1 - sy)
        sx = torch.where(flip[sel], -sx, sx)
        grid = _affine_grid(sx, sy, cx, cy, canvas)
        bg[sel] = F.grid_sample(photo.expand(len(sel), -1, -1, -1), grid, mode="bilinear",
                                padding_mode="border", align_corners=False)
    return bg


def _paste_fragment(out: torch.Tensor, src: torch.Tensor, fy: torch.Tensor, fx: torch.Tensor, size: int,
                    g: torch.Generator) -> torch.Tensor:
    """Paste, on each image of ``out`` (m, 1, H, W), a ``size`` square of its garment ``src`` (m, 1, 28, 28) centred
    on a random ink pixel of it, at top-left (fy, fx)."""
    m, canvas = out.shape[0], out.shape[-1]
    ink = (src[:, 0] > 0.25).flatten(1).float() + 1e-6
    pick = torch.multinomial(ink, 1, generator=g).flatten()
    cy_, cx_ = (pick // 28).float(), (pick % 28).float()
    # integer top-left of the cut inside the tile, clamped so the square stays in the tile
    ty = (cy_ - size // 2).clamp(0, 28 - size).long()
    tx = (cx_ - size // 2).clamp(0, 28 - size).long()
    r = torch.arange(size)
    cut = src[torch.arange(m)[:, None, None], 0, (ty[:, None] + r)[:, :, None], (tx[:, None] + r)[:, None, :]]
    layer = torch.zeros(m, canvas, out.shape[-1])
    layer[torch.arange(m)[:, None, None], (fy[:, None] + r)[:, :, None], (fx[:, None] + r)[:, None, :]] = cut
    a = (layer * (255.0 / ALPHA_FULL)).clamp(max=1.0)[:, None]
    return out * (1 - a) + layer[:, None] * a


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, 4) int boxes (x0, y0, x1, y1) around each (N, H, W) mask; all zeros for an empty mask."""
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (N, H), (N, W)
    big = max(masks.shape[1:]) + 1
    y0 = torch.where(rows, torch.arange(masks.shape[1]), big).min(1).values
    x0 = torch.where(cols, torch.arange(masks.shape[2]), big).min(1).values
    y1 = torch.where(rows, torch.arange(masks.shape[1]), -1).max(1).values + 1
    x1 = torch.where(cols, torch.arange(masks.shape[2]), -1).max(1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], 1)
    boxes[~rows.any(1)] = 0
    return boxes


def make_clutter(
    source: ImageData, n: int, backgrounds: Sequence[str], canvas: int = 48, seed: int = 0,
    scale: Tuple[int, int] = (24, 34), fragments: int = 4, fragment_size: int = 10,
    contrast: Tuple[float, float] = (0.25, 0.9), name: str = "fmnist-clutter", clean_distractors: bool = True,
) -> ClutterData:
    """Compose ``n`` cluttered images, one garment each, from ``source`` (28x28 greyscale garments).

    Args:
        source: the split the garments and fragments come from.
        n: number of images.
        backgrounds: names of the bundled photos to cut backgrounds from (``TRAIN_BACKGROUNDS`` for training
            sets, ``TEST_BACKGROUNDS`` for test sets).
        canvas: image side in pixels.
        seed: seeds every random choice.
        scale: smallest and largest garment side in pixels (a 28x28 garment tile is resized to this).
        fragments: distractor fragments per image, each cut from a garment of another class than the item's.
        fragment_size: side of each fragment in pixels.
        contrast: range of the background's contrast factor (its pixels are scaled about their mean).
        name: dataset name for reports.
        clean_distractors: cut fragments from garments of other classes only (default). False reproduces the
            first generator, whose fragments could come from a garment of the label's class (for comparisons
            with results measured on it).
    Returns:
        A :class:`ClutterData`.
    Raises:
        ValueError: bad sizes, n < 1, or source images not (N, 1, 28, 28).
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if tuple(source.images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"source images must be (N, 1, 28, 28) greyscale, got {tuple(source.images.shape)}")
    lo, hi = scale
    if not 8 <= lo <= hi <= canvas:
        raise ValueError(f"garment scale {scale} must satisfy 8 <= smallest <= largest <= canvas ({canvas})")
    if not 2 <= fragment_size <= canvas or fragments < 0:
        raise ValueError(f"need 0 or more fragments of size 2..{canvas}, got {fragments} of {fragment_size}")
    if not backgrounds:
        raise ValueError("need at least one background photo")
    photos = load_backgrounds(backgrounds)
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    tiles = source.images.float() / 255.0  # (S, 1, 28, 28)
    S = len(source)

    # background: photo, zoom (crop side 48..144 px of the 192-px photo), position, contrast, brightness
    which = torch.randint(0, len(photos), (n,), generator=g)
    crop = 48 + rnd(n) * 96
    u, v = rnd(n), rnd(n)
    k = contrast[0] + rnd(n) * (contrast[1] - contrast[0])
    level = 0.15 + rnd(n) * 0.45  # background mean after the change, in [0.15, 0.6]
    flip = rnd(n) < 0.5
    # garment: which, size, position
    item = torch.randint(0, S, (n,), generator=g)
    size = torch.randint(lo, hi + 1, (n,), generator=g)
    y0 = (rnd(n) * (canvas - size + 1).float()).floor().long()
    x0 = (rnd(n) * (canvas - size + 1).float()).floor().long()
    # fragments: source garment (never the item's), where in it, where on the canvas
    frag_src = torch.randint(0, S - 1, (n, fragments), generator=g)
    frag_src = frag_src + (frag_src >= item[:, None]).long()
    if clean_distractors:
        frag_src = _other_class_sources(source.labels.long(), item, frag_src, seed)
    rnd(n, fragments), rnd(n, fragments)  # drawn and unused: kept so every later draw stays as it was
    frag_y = (rnd(n, fragments) * (canvas - fragment_size + 1)).floor().long()
    frag_x = (rnd(n, fragments) * (canvas - fragment_size + 1)).floor().long()

    images = torch.zeros(n, 1, canvas, canvas, dtype=torch.uint8)
    masks = torch.zeros(n, canvas, canvas, dtype=torch.bool)
    for start in range(0, n, 2048):
        sl = slice(start, min(n, start + 2048))
        bg = _background_crops(photos, which[sl], crop[sl], u[sl], v[sl], flip[sl], canvas)
        mean = bg.mean(dim=(1, 2, 3), keepdim=True)
        bg = ((bg - mean) * k[sl].view(-1, 1, 1, 1) + level[sl].view(-1, 1, 1, 1)).clamp(0, 1)
        out = bg
        for f in range(fragments):
            out = _paste_fragment(out, tiles[frag_src[sl, f]], frag_y[sl, f], frag_x[sl, f], fragment_size, g)
        garment = _place(tiles[item[sl]], size[sl], y0[sl], x0[sl], canvas)
        a = (garment * (255.0 / ALPHA_FULL)).clamp(max=1.0)
        out = out * (1 - a) + garment * a
        images[sl] = (out * 255).round().clamp(0, 255).to(torch.uint8)
        masks[sl] = garment[:, 0] * 255 > ITEM_THRESHOLD

    boxes = _mask_boxes(masks)
    counts = torch.bincount(images.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    mean_px = float((counts * values).sum() / counts.sum())
    std_px = float(((counts * (values - mean_px) ** 2).sum() / counts.sum()).sqrt())
    frag_boxes = torch.stack([frag_x, frag_y, frag_x + fragment_size, frag_y + fragment_size], -1)
    return ClutterData(images, source.labels[item].clone(), list(source.classes), (mean_px,), (std_px,), name,
                       boxes, masks, tuple(backgrounds), which, item, source.labels[frag_src].long().clone(),
                       frag_boxes.long(), frag_src)


def load_clutter(name: str = "fmnist-clutter", split: str = "train", root: Optional[str] = None) -> ClutterData:
    """The named clutter set: 60,000 train images (train garments, train photos, seed 0) or the fixed 10,000
    test images (test garments, test photos, seed 1).

    Args:
        name: ``"fmnist-clutter"`` (48x48).
        split: ``"train"`` or ``"test"``.
        root: where the Fashion-MNIST files are (default: Debian's package, then torchvision's download).
    Returns:
        A :class:`ClutterData` normalised with the train set's mean and std (so train and test agree).
    """

    if name not in CLUTTER_DATASETS:
        raise ValueError(f"unknown clutter data set {name!r}; known: {sorted(CLUTTER_DATASETS)}")
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    n, seed = SPLIT_SIZES[split]
    bgs = TRAIN_BACKGROUNDS if split == "train" else TEST_BACKGROUNDS
    data = make_clutter(load_fashion_mnist(split, root), n, bgs, canvas=CLUTTER_DATASETS[name], seed=seed, name=name)
    data.mean, data.std = CLUTTER_NORMALIZATION
    return data


# mean and std of the 60,000 train images of ``fmnist-clutter`` (pixels in [0, 1]); test images use the same
CLUTTER_NORMALIZATION = ((0.4402,), (0.2129,))


def export_clutter(data: ClutterData, out_dir: str, limit: Optional[int] = None) -> str:
    """Write images as PNG files (plus each garment's mask) and one JSON index with labels, boxes, photos and
    each distractor fragment's class, box and source garment.

    Args:
        data: what to write.
        out_dir: destination folder (created).
        limit: write only the first ``limit`` images.
    Returns:
        The path of ``index.json``.
    """
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    count = len(data) if limit is None else min(limit, len(data))
    records: List[Dict[str, object]] = []
    for i in range(count):
        stem = f"clutter_{i:05d}"
        Image.fromarray(data.images[i, 0].numpy()).save(os.path.join(out_dir, f"{stem}.png"))
        Image.fromarray(data.masks[i].numpy().astype(np.uint8) * 255).save(os.path.join(out_dir, f"{stem}_mask.png"))
        c = int(data.labels[i])
        records.append({"image": f"{stem}.png", "mask": f"{stem}_mask.png", "label": c, "class": data.classes[c],
                        "box_xyxy": [int(v) for v in data.boxes[i]], "background": data.backgrounds[int(data.background[i])],
                        "source_index": int(data.sources[i])})
        if data.fragment_labels is not None:
            records[-1]["fragments"] = [
                {"label": int(fl), "class": data.classes[int(fl)], "box_xyxy": [int(v) for v in fb],
                 "source_index": int(fs)}
                for fl, fb, fs in zip(data.fragment_labels[i], data.fragment_boxes[i], data.fragment_sources[i])]
    path = os.path.join(out_dir, "index.json")
    with open(path, "w") as f:
        json.dump({"name": data.name, "classes": data.classes, "mean": data.mean, "std": data.std,
                   "licences": "backgrounds: see gatta_viz/data/backgrounds/LICENSES.md; garments: Fashion-MNIST, MIT",
                   "images": records}, f, indent=1)
    return path
