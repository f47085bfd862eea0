"""Explaining many image files into one folder: inputs and their unique output names, the output folder's
guard (a folder written with other settings is refused unless ``--overwrite``), and the batch loop with
per-file errors (one bad file is named and skipped; the others are still explained)."""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from ..data.preprocess import IMAGE_EXTENSIONS, ImageError, PreparedImage, load_image, prepare_image
from ..compute.explain import explain_batch
from ..compute.options import MapOptions
from ..models.checkpoint import LoadedModel
from ..render.options import FigureOptions
from ..render.outlines import Outline, outlines_from_index, rescale_outlines
from ..render.write import RendererCache, write_explanation

__all__ = ["auto_threads", "collect_inputs", "collect_files", "unique_stems", "outline_lookup", "Failure", "BatchInterrupted",
           "check_out_dir", "explain_files", "OUTPUT_SUFFIXES", "INDEX"]

INDEX = "index.json"
OUTPUT_SUFFIXES = (".png", ".pdf", ".svg", ".npz", ".json")  # what an explain run writes


def auto_threads(loaded: LoadedModel) -> int:
    """Torch threads for explaining with this model: 1 for small inputs (<= 64 x 64 pixels), where splitting
    each small operation over threads costs more than it saves; torch's default otherwise."""
    h, w = (int(s) for s in loaded.preprocess.get("size", (224, 224)))
    return 1 if h * w <= 64 * 64 else torch.get_num_threads()


def collect_inputs(inputs: Sequence[str]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """Expand files and directories (recursively, image extensions only, sorted), naming each file for messages
    and ``index.json``: a file given directly by its path as given, a file found in a directory by its path
    relative to that directory (``sub/x.png``); two different files that would share a name are named by their
    full path instead.

    Returns:
        ([(path, name), ...], inputs that do not exist).
    """
    found, missing = [], []
    for p in inputs:
        if os.path.isdir(p):
            for root, _, names in sorted(os.walk(p)):
                for n in sorted(names):
                    if n.lower().endswith(IMAGE_EXTENSIONS):
                        path = os.path.join(root, n)
                        found.append((path, os.path.relpath(path, p)))
        elif os.path.isfile(p):
            found.append((p, p))
        else:
            missing.append(p)
    paths_of: Dict[str, set] = {}
    for path, name in found:
        paths_of.setdefault(name, set()).add(os.path.realpath(path))
    return [(path, name if len(paths_of[name]) == 1 else path) for path, name in found], missing


def collect_files(inputs: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Like :func:`collect_inputs`, paths only. Returns (files, missing inputs)."""
    found, missing = collect_inputs(inputs)
    return [p for p, _ in found], missing


def _base_stem(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(os.path.basename(path))[0]) or "image"


def unique_stems(paths: Sequence[str], reserved: Sequence[str] = ("index",)) -> List[str]:
    """One output stem per input, all distinct (also when letter case is ignored, for case-insensitive disks).

    A file keeps its own name made safe (``a b.png`` -> ``a_b``) unless another input or a ``reserved`` name
    has it; then the file whose name needed no change keeps it and the others get the first free ``_2``, ``_3``...
    that no other input's own stem uses (``a b.png``, ``a_b.png``, ``a_b_2.png`` -> ``a_b_3``, ``a_b``, ``a_b_2``).
    """
    bases = [_base_stem(p) for p in paths]
    taken = {r.lower() for r in reserved}
    count: Dict[str, int] = {}
    for b in bases:
        count[b.lower()] = count.get(b.lower(), 0) + 1
    wanted = taken | set(count)  # every stem some input would like to have, and the reserved ones
    out: List[Optional[str]] = [None] * len(paths)
    exact_first = sorted(range(len(paths)),
                         key=lambda i: (os.path.splitext(os.path.basename(paths[i]))[0] != bases[i], i))
    for i in exact_first:  # files whose name is already safe claim it first
        b = bases[i]
        if b.lower() not in taken:
            out[i] = b
            taken.add(b.lower())
    for i in range(len(paths)):
        if out[i] is None:
            k = 2
            while f"{bases[i]}_{k}".lower() in taken or f"{bases[i]}_{k}".lower() in wanted:
                k += 1
            out[i] = f"{bases[i]}_{k}"
            taken.add(out[i].lower())
    return [s for s in out if s is not None]


def outline_lookup(index_path: str) -> Callable[[str], Optional[List[Outline]]]:
    """``lookup(path)``: the outlines an ``export_scenes`` / ``export_clutter`` index lists for an image file,
    matched by file name (None when the index does not list it).

    Raises:
        FileNotFoundError, ValueError: the index cannot be read (see ``outlines_from_index``).
    """
    table = outlines_from_index(index_path)

    def lookup(path: str) -> Optional[List[Outline]]:
        return table.get(os.path.basename(path))

    lookup.entries = len(table)  # type: ignore[attr-defined]
    return lookup


def check_out_dir(out_dir: str, settings: Dict[str, Any], overwrite: bool) -> None:
    """Make sure ``out_dir`` can take this run's files without mixing runs.

    A missing or empty folder is fine; so is one holding exactly what an earlier run with the same ``settings``
    wrote (its ``index.json`` lists the files). Anything else is refused, unless ``overwrite``: then the folder is
    emptied first, when everything in it is a file of the kinds an explain run writes (.png .pdf .svg .npz .json).

    Raises:
        ValueError: naming the folder and why (other settings, files of something else, a folder that
            ``--overwrite`` will not empty because it holds other things).
    """
    if not os.path.isdir(out_dir):
        return
    entries = sorted(os.listdir(out_dir))
    if not entries:
        return
    if overwrite:
        foreign = [e for e in entries if not os.path.isfile(os.path.join(out_dir, e))
                   or not (e.lower().endswith(OUTPUT_SUFFIXES) or (e.startswith(".") and ".tmp" in e))]
        if foreign:
            raise ValueError(f"--overwrite empties {out_dir} only when it holds nothing but explain outputs; it also "
                             f"holds {foreign[:3]}: choose a new folder")
        for e in entries:
            os.remove(os.path.join(out_dir, e))
        return
    previous = _previous_run(out_dir)
    if previous is None:
        raise ValueError(f"--out {out_dir} is not empty and was not written by gatta-viz explain (e.g. {entries[0]}); "
                         "choose a new folder, or add --overwrite to empty it first")
    if "settings" not in previous:
        raise ValueError(f"--out {out_dir} holds an explain run whose settings were not recorded (an older gatta-viz); "
                         "choose a new folder, or add --overwrite to empty it first")
    if previous.get("settings") != settings:
        was, now = previous.get("settings") or {}, settings
        diff = [k for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
        raise ValueError(f"--out {out_dir} holds a run with other settings ({', '.join(diff)} differ); its files would "
                         "mix with this run's: choose a new folder, or add --overwrite to empty it first")
    listed = {INDEX, *previous.get("extra_files", [])} | {os.path.basename(p) for r in previous.get("written", [])
                                                          for p in r.get("files", {}).values()}
    stray = [e for e in entries if e not in listed]
    if stray:
        raise ValueError(f"--out {out_dir} holds files the earlier run did not write (e.g. {stray[0]}); choose a new "
                         "folder, or add --overwrite to empty it first")


def _previous_run(out_dir: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(out_dir, INDEX)) as f:
            index = json.load(f)
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and ("settings" in index or "written" in index) else None


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`explain_files`, with what was written before it (``records``, ``errors``, ``total``)."""

    def __init__(self, records: List[Dict[str, Any]], errors: List["Failure"], total: int) -> None:
        super().__init__(f"interrupted; {len(records)} of {total} images written")
        self.records, self.errors, self.total = records, errors, total


@dataclass
class Failure:
    """A file that could not be explained: its name and the problem."""

    name: str
    problem: str


@dataclass
class _Run:
    loaded: LoadedModel
    out_dir: str
    maps: MapOptions
    figure: FigureOptions
    label_of: Optional[Callable[[str], Optional[int]]]
    outlines_of: Optional[Callable[[str], Optional[Sequence]]]
    bar: Any
    records: List[Dict[str, Any]] = field(default_factory=list)
    errors: List[Failure] = field(default_factory=list)
    renderers: RendererCache = field(default_factory=RendererCache)

    def fail(self, name: str, problem: str) -> None:
        self.errors.append(Failure(name, problem))
        tqdm.write(f"skipped {name}: {problem}", file=sys.stderr)

    def prepare(self, path: str, name: str) -> Optional[PreparedImage]:
        try:
            return prepare_image(load_image(path, name=name), self.loaded.preprocess, name=name)
        except ImageError as e:
            self.fail(e.name, e.problem)
        except Exception as e:  # noqa: BLE001 - any other decoding failure is this file's, named, and the batch goes on
            self.fail(name, f"cannot be prepared for the model ({type(e).__name__}: {e})")
        return None

    def explain(self, batch: List[Tuple[str, str, str, PreparedImage]]) -> List[Tuple[Tuple[str, str, str, PreparedImage], Any]]:
        """Explain a batch with one trace; if that fails, image by image, so only the failing files are skipped."""
        labels = [self.label_of(p) if self.label_of else None for p, _, _, _ in batch]
        try:
            return list(zip(batch, explain_batch(self.loaded, [b[3] for b in batch], self.maps, true_label=labels)))
        except Exception as e:  # noqa: BLE001 - a failure of one file is named, the others go on
            if len(batch) == 1:
                self.fail(batch[0][1], f"cannot be explained ({type(e).__name__}: {e})")
                self.bar.update(1)
                return []
        return [pair for item in batch for pair in self.explain([item])]

    def write(self, item: Tuple[str, str, str, PreparedImage], ex) -> None:
        path, name, stem, prep = item
        drawn = None
        found = self.outlines_of(path) if self.outlines_of is not None else None
        try:
            drawn = rescale_outlines(found, prep.original.size, ex.image.shape[:2], ex.placement) if found else None
        except ValueError as e:  # an index made for other images: say so, explain the image anyway
            tqdm.write(f"warning: {name}: outlines not drawn ({e})", file=sys.stderr)
        paths = write_explanation(ex, self.out_dir, stem, self.figure, drawn, self.renderers, source=path)
        record: Dict[str, Any] = {"source": path, "name": name, "prediction": ex.prediction,
                                  "pass1": ex.top_pass1[0], "files": paths}
        if ex.compare:
            record["prediction_without_cue"] = ex.uncued.prediction
        if self.outlines_of is not None:
            record["outlined"] = [o.label for o in drawn or []]
        w0, h0 = prep.original.size
        if (h0, w0) != tuple(ex.image.shape[:2]):
            record["resized"] = {"from_hw": [h0, w0], "to_hw": list(ex.image.shape[:2])}
        self.records.append(record)


def explain_files(loaded: LoadedModel, files: Sequence[Tuple[str, str, str]], out_dir: str,
                  maps: Optional[MapOptions] = None, figure: Optional[FigureOptions] = None, batch_size: int = 16,
                  label_of: Optional[Callable[[str], Optional[int]]] = None,
                  outlines_of: Optional[Callable[[str], Optional[Sequence]]] = None,
                  progress: bool = True) -> Tuple[List[Dict[str, Any]], List[Failure]]:
    """Explain many files: decode a batch, explain it with one trace, write each image's files.

    Any failure with one file (decoding, explaining, drawing, writing) is reported on stderr with the file's
    name and the file is skipped; the others are still explained. Ctrl-C stops after the files already written
    (each is written atomically) and raises :class:`BatchInterrupted` holding them.

    Args:
        loaded: a GAttA model from ``load_model``.
        files: (path, name, stem) per image (see :func:`collect_inputs`, :func:`unique_stems`).
        out_dir: output folder.
        maps, figure: what to compute and how to draw it.
        batch_size: images per trace.
        label_of: ``label_of(path)`` may give an image's true class index.
        outlines_of: ``outlines_of(path)`` may give an image's items to outline, in the image file's own pixels
            (e.g. :func:`outline_lookup`); they are moved to the model input with the preprocessing.
        progress: show a tqdm bar.
    Returns:
        (records, failures): one record per written image (source, name, predictions, files, ``resized`` when the
        image was resized for the model), and the files that failed.
    """
    bar = tqdm(total=len(files), desc="explain", disable=not progress, unit="img")
    run = _Run(loaded, out_dir, maps or MapOptions(), figure or FigureOptions(outlines=outlines_of is not None),
               label_of, outlines_of, bar)
    try:
        step = max(1, int(batch_size))
        for s in range(0, len(files), step):
            batch = []
            for path, name, stem in files[s : s + step]:
                prep = run.prepare(path, name)
                if prep is None:
                    bar.update(1)
                else:
                    batch.append((path, name, stem, prep))
            for item, ex in (run.explain(batch) if batch else []):
                try:
                    run.write(item, ex)
                except Exception as e:  # noqa: BLE001 - a drawing/writing failure is this file's; the batch goes on
                    run.fail(item[1], f"cannot be drawn or written ({type(e).__name__}: {e})")
                bar.update(1)
    except KeyboardInterrupt:
        raise BatchInterrupted(run.records, run.errors, len(files)) from None
    finally:
        bar.close()
    return run.records, run.errors
