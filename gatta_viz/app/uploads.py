"""Turning what a visitor gives the page into named inputs: uploads, picked sample images, the operator's
preloaded files. Every file that cannot be used becomes an error message naming it; the others go on.

Only listed sample files are ever opened (never a path typed into a widget's state); names shown on the page
are escaped for Markdown; download names are sanitised.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

from ..data.limits import ImageLimits, format_mb
from ..data.preprocess import IMAGE_EXTENSIONS
from .settings import MAX_IMAGES, samples_dir

__all__ = ["Input", "content_key", "md_escape", "file_stem", "list_samples", "read_file", "collect_inputs"]


@dataclass(frozen=True)
class Input:
    """One image to explain on the page.

    Attributes:
        name: what the page calls it (an upload's name, a sample's relative path, a scene's description).
        data: the file's bytes (decoded later, inside the render's concurrency limit).
        outlines: items to outline, ``((box_xyxy, label, colour), ...)`` in model-input pixels (hashable, so the
            render cache can key on it).
    """

    name: str
    data: bytes
    outlines: Tuple = ()


def content_key(position: int, data: bytes) -> str:
    """A widget key unique per upload: its position on the page and a hash of its bytes (names may repeat)."""
    return f"{position}-{hashlib.sha256(data).hexdigest()[:16]}"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~$])")


def md_escape(text: str, limit: int = 120) -> str:
    """A user-supplied string (a file name) made safe to show inside Markdown: special characters escaped,
    control characters dropped, at most ``limit`` characters."""
    text = "".join(c for c in str(text) if c.isprintable())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return _MD_SPECIAL.sub(r"\\\1", text)


def file_stem(name: str) -> str:
    """A safe file-name stem for downloads (letters, digits, ``._-``)."""
    stem = os.path.splitext(os.path.basename(str(name)))[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80] or "image"


def list_samples(folder: Optional[str] = None) -> List[str]:
    """Sample image paths relative to ``folder`` (default :func:`~gatta_viz.app.settings.samples_dir`; recursive,
    sorted; item masks such as ``*_mask.png`` left out); [] if the folder is missing."""
    folder = folder or samples_dir()
    if not os.path.isdir(folder):
        return []
    out, seen = [], set()
    for root, dirs, names in os.walk(folder, followlinks=True):  # linked folders too (the package's samples)...
        real = os.path.realpath(root)
        if real in seen:  # ...but never twice (a link loop)
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()  # the same order on every file system: a folder reached twice keeps its first name
        for n in names:
            if n.lower().endswith(IMAGE_EXTENSIONS) and not os.path.splitext(n)[0].endswith("_mask"):
                out.append(os.path.relpath(os.path.join(root, n), folder))
    return sorted(out)


def read_file(path: str, name: str, limits: ImageLimits) -> Input:
    """A file of the server's (a sample, a preloaded file) read up to one byte over the size limit (the
    decoder then names the excess).

    Args:
        path: the file on the server.
        name: how messages name it.
        limits: the image limits (its byte limit bounds the read).
    Returns:
        an :class:`Input` (name and bytes).
    Raises:
        OSError: with the reason in ``strerror``.
    """
    with open(path, "rb") as f:
        return Input(name, f.read(limits.max_bytes + 1))


def _reason(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


def collect_inputs(uploads: Iterable[Tuple[str, int, bytes]], picked: Sequence[str], preloaded: Sequence[str],
                   limits: ImageLimits, first: Sequence[Input] = (), folder: Optional[str] = None
                   ) -> Tuple[List[Input], List[str]]:
    """Everything the page will explain, in page order, and an error message for every file it will not.

    Args:
        uploads: (name, size in bytes, data) of each upload.
        picked: sample images chosen (relative paths; only those :func:`list_samples` lists are opened).
        preloaded: paths the operator gave ``gatta-viz app`` (shown by their file name only).
        limits: the image limits in force (an upload over the size limit is not even passed on).
        first: inputs that come before the files (e.g. a composed scene).
        folder: the samples' folder (default :func:`~gatta_viz.app.settings.samples_dir`).
    Returns:
        (inputs, at most ``MAX_IMAGES`` of them; error messages, each naming its file).
    """
    inputs, errors = list(first), []
    for name, size, data in uploads:
        if size > limits.max_bytes:
            errors.append(f"Skipped {name}: file is {format_mb(size)}, over the {limits.max_mb:.3g} MB limit")
            continue
        inputs.append(Input(name, data))
    folder = folder or samples_dir()
    listed = set(list_samples(folder)) if picked else set()
    for rel in picked:
        if rel not in listed:  # only the listed files, never a path typed into the widget's state
            continue
        try:
            inputs.append(read_file(os.path.join(folder, rel), rel, limits))
        except OSError as e:
            errors.append(f"Skipped {rel}: cannot read the file: {_reason(e)}")
    for path in preloaded:  # set by the operator's command line, not by a visitor
        try:
            inputs.append(read_file(path, os.path.basename(path), limits))
        except OSError as e:
            errors.append(f"Skipped {os.path.basename(path)}: cannot read the file: {_reason(e)}")
    if len(inputs) > MAX_IMAGES:
        errors.append(f"{len(inputs) - MAX_IMAGES} more image(s) not shown: at most {MAX_IMAGES} per page")
        inputs = inputs[:MAX_IMAGES]
    return inputs, errors
