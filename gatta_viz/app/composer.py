"""Two-garment scenes composed on the page from the sample garments, for models whose input holds two garments
at different places (e.g. the 48x48 fmnist-pairs models). The compositing is the library's
(:func:`gatta_viz.data.scenes.compose_items`, as :func:`gatta_viz.make_scenes` composites its scenes); this
module only picks the garments, names them by class and draws their outlines.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..data.preprocess import IMAGE_EXTENSIONS, load_image
from ..data.scenes import Composite, compose_items
from ..models.checkpoint import LoadedModel
from ..render.outlines import OUTLINE_COLOURS
from .settings import samples_dir

__all__ = ["GARMENT_FOLDER", "GARMENT_SIDE", "Scene", "composer_canvas", "garment_files", "garment_label",
           "load_garment", "compose_from_samples", "default_composition"]

GARMENT_FOLDER = "fashion-mnist"  # sample images of single 28x28 garments, the composer's pieces
GARMENT_SIDE = 28


def composer_canvas(lm: LoadedModel) -> Optional[Tuple[int, int]]:
    """(H, W) of the canvas the composer fills for this model: its own greyscale input when that has room for
    garments at different places (both sides larger than a 28x28 garment); None otherwise (28x28 models)."""
    h, w = (int(v) for v in lm.preprocess["size"])
    if int(lm.preprocess.get("channels", 1)) != 1 or h <= GARMENT_SIDE or w <= GARMENT_SIDE:
        return None
    return h, w


def _folder(folder: Optional[str]) -> str:
    return folder or os.path.join(samples_dir(), GARMENT_FOLDER)


def garment_files(folder: Optional[str] = None) -> List[str]:
    """The garment images the composer may place (file names in the samples' fashion-mnist folder, sorted)."""
    folder = _folder(folder)
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, n)))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def garment_label(file_name: str, classes: Sequence[str]) -> str:
    """The class of a sample garment from its file name (``t-shirt-top_test00019.png`` -> ``T-shirt/top``), as
    the model spells it; the file's stem when no class matches."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    prefix = stem.rsplit("_", 1)[0] if "_" in stem else stem
    return next((c for c in classes if _slug(c) == _slug(prefix)), stem)


def load_garment(file_name: str, folder: Optional[str] = None) -> np.ndarray:
    """One sample garment as uint8 (H, W) greyscale pixels. Only files that :func:`garment_files` lists.

    Raises:
        ValueError: a name that is not one of those files; ImageError: a file that cannot be decoded.
    """
    folder = _folder(folder)
    if file_name not in garment_files(folder):
        raise ValueError(f"unknown garment {file_name!r}: choose one of the sample garments")
    return np.asarray(load_image(os.path.join(folder, file_name), name=file_name).convert("L"), dtype=np.uint8)


@dataclass
class Scene:
    """A composed scene with its garments' names and places.

    Attributes:
        composite: the library's composite (image, layers, boxes, masks).
        labels: each garment's class name.
        positions: each garment's (x, y) top-left corner.
    """

    composite: Composite
    labels: List[str]
    positions: List[Tuple[int, int]]

    @property
    def image(self) -> np.ndarray:
        """uint8 (H, W): the scene."""
        return self.composite.image

    @property
    def name(self) -> str:
        """How the page names the scene: each garment's class and place."""
        return "scene: " + " + ".join(f"{lb} at ({x}, {y})" for lb, (x, y) in zip(self.labels, self.positions))

    def png(self) -> bytes:
        """The scene as a PNG file (what the page explains, as it explains an upload)."""
        buf = io.BytesIO()
        Image.fromarray(self.image, "L").save(buf, "PNG")
        return buf.getvalue()

    def outlines(self) -> Tuple[Tuple[Tuple[int, ...], str, str], ...]:
        """Each garment's box, in its own colour, labelled with its class, as ``(box_xyxy, label, colour)``
        (hashable; garments without visible pixels are left out)."""
        colours = OUTLINE_COLOURS
        return tuple((tuple(int(v) for v in b), lb, colours[k % len(colours)])
                     for k, (b, lb) in enumerate(zip(self.composite.boxes, self.labels)) if b[2] > b[0])


def compose_from_samples(files: Sequence[str], positions: Sequence[Tuple[int, int]], canvas: Tuple[int, int],
                         classes: Sequence[str], folder: Optional[str] = None) -> Scene:
    """A scene of sample garments (:func:`garment_files`) at ``positions`` (x, y) on a black ``canvas`` (H, W),
    labelled with their classes (:func:`garment_label`).

    Raises:
        ValueError, ImageError: an unknown or unreadable garment, or one that does not fit the canvas.
    """
    tiles = [load_garment(f, folder) for f in files]
    composite = compose_items(tiles, positions, canvas, noun="garment")
    return Scene(composite, [garment_label(f, classes) for f in files], [tuple(int(v) for v in p) for p in positions])


def default_composition(canvas: Tuple[int, int], garments: Sequence[str]) -> List[Tuple[str, int, int]]:
    """The composer's starting point: two garments of different classes in opposite corners (overlapping on a
    48x48 canvas, as most fmnist-pairs scenes do)."""
    h, w = canvas
    first = "trouser_test00002.png" if "trouser_test00002.png" in garments else garments[0]
    second = "bag_test00018.png" if "bag_test00018.png" in garments else garments[-1]
    return [(first, 0, 0), (second, max(0, w - GARMENT_SIDE), max(0, h - GARMENT_SIDE))]
