"""``gatta-viz explain IMAGE_OR_DIR ... --out DIR``: per image a Fig.-3 figure, overlays per layer, maps (.npz), JSON.

Maps show alpha x agreement by default (> 0 boosted by pass 2, < 0 suppressed; the same in every trained
model); ``--raw`` shows raw agreement, whose sign is set by training. Per image it writes ``STEM_fig3.png``
(or .pdf/.svg), ``STEM_overlay_LAYER.png`` (at the model input's resolution, what the model saw),
``STEM_overlay_LAYER_original.png`` (over the original image at its own resolution and colours, when it differs
from the model input), ``STEM_maps.npz`` and
``STEM.json``; plus ``index.json`` for the run. Unreadable files are reported on stderr (file and problem) and
skipped; everything else is still written, and the exit code is 1 when any file failed (0 when all
succeeded, 2 on bad options).

``--cue CLASS`` explains every image under a top-down cue: the model's stored query of CLASS replaces the query
pass 1 pools from the image (a GAttA checkpoint with class queries, see ``gatta-viz cues``). The figure then
has two rows, "without cue" and "cued: CLASS", each layer's two maps on one colour scale; overlays under the
cue are written as ``STEM_overlay_LAYER_cued.png`` next to those without it; the JSON, the .npz (keys
``uncued/...``) and ``index.json`` record the cue. ``--boxes INDEX.json`` outlines the items listed for each
image in an ``index.json`` written by ``export_scenes`` or ``export_clutter`` (matched by file name), in the
figure and on enlarged overlays.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from tqdm import tqdm

from ..analysis.checks import UntrainedGAttAWarning, is_untrained, untrained_message
from ..analysis.explanation import Explanation, explain_batch, resolve_cue
from ..analysis.figures import FIGURE_FORMATS, LAYOUTS, Fig3Renderer
from ..analysis.overlays import Outline, as_outlines, check_cmap, outlines_from_index, rescale_outlines
from ..analysis.style import DEFAULT_CMAP
from ..data.preprocess import IMAGE_EXTENSIONS, ImageError, PreparedImage, load_image, prepare_image
from ..models.checkpoint import BUNDLED, DEFAULT_MODEL, LoadedModel, load_model

__all__ = ["collect_files", "collect_inputs", "resolve_model", "auto_threads", "write_explanation", "explain_files",
           "outline_lookup", "build_parser", "run"]


def resolve_model(name_or_path: str) -> LoadedModel:
    """Load a bundled model by name or a checkpoint by path (``load_model``; an unknown name lists the bundled ones).

    Raises:
        FileNotFoundError, ValueError: see :func:`gatta_viz.load_model`.
    """
    return load_model(name_or_path)


def auto_threads(loaded: LoadedModel) -> int:
    """Torch threads for explaining with this model: 1 for small inputs (<= 64 x 64 pixels), where splitting
    each small operation over threads costs more than it saves; torch's default otherwise."""
    h, w = (int(s) for s in loaded.preprocess.get("size", (224, 224)))
    return 1 if h * w <= 64 * 64 else torch.get_num_threads()


def collect_files(inputs: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Expand files and directories (recursively, image extensions only, sorted).

    Returns:
        (files, missing): paths to process and inputs that do not exist.
    """
    found, missing = collect_inputs(inputs)
    return [p for p, _ in found], missing


def collect_inputs(inputs: Sequence[str]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """Expand files and directories like :func:`collect_files`, naming each file for messages and ``index.json``.

    A file given directly is named as given; a file found in a directory by its path relative to that
    directory (``sub/x.png``); if two inputs would give two different files one name, those files are named by
    their full path as found instead, so no name stands for two files.

    Returns:
        ([(path, name), ...], missing inputs).
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


def _stem(path: str, used: Dict[str, int]) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(os.path.basename(path))[0]) or "image"
    used[s] = used.get(s, 0) + 1
    return s if used[s] == 1 else f"{s}_{used[s]}"


class _Renderers:
    """One :class:`Fig3Renderer` per figure structure, reused across images (building costs more than drawing)."""

    def __init__(self, cmap: str, layout: str, outlines: bool = False) -> None:
        self.cmap, self.layout, self.outlines = cmap, layout, outlines
        self.current: Optional[Fig3Renderer] = None

    def get(self, ex: Explanation, outlines: Optional[bool] = None) -> Fig3Renderer:
        layers = list(ex.heatmaps)
        compare = ex.uncued is not None
        outlines = self.outlines if outlines is None else outlines
        r = self.current
        if r is None or not r.matches(ex.trace, ex.classes, ex.signed, ex.joint, self.cmap, ex.gain, self.layout, layers,
                                      ex.cue, compare, outlines) or r.image_shape != ex.image.shape[:2]:
            r = Fig3Renderer(ex.trace, ex.classes, ex.signed, ex.joint, self.cmap, ex.gain, self.layout, layers,
                             image_shape=ex.image.shape[:2], cue=ex.cue, compare=compare, outlines=outlines)
            self.current = r
        return r


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


def write_explanation(ex: Explanation, out_dir: str, stem: str, source: str, cmap: str = DEFAULT_CMAP,
                      opacity: float = 0.5, fmt: str = "png", dpi: int = 150, layout: str = "double",
                      renderers: Optional[_Renderers] = None, outlines: Optional[Sequence] = None) -> Dict[str, str]:
    """Write figure, overlays (input and original resolution), npz and JSON for one explanation.

    With a cue and the uncued explanation (``explain(..., cue=...)``), the figure has both rows, overlays
    without the cue keep their names and those under it end in ``_cued``. ``outlines`` (in model-input pixels)
    are drawn in the figure and on the overlays, which are then enlarged (see ``Explanation.overlays``).

    Returns:
        name -> written path.
    """
    os.makedirs(out_dir, exist_ok=True)
    renderers = renderers or _Renderers(cmap, layout, outlines=bool(outlines))
    r = renderers.get(ex)
    items = as_outlines(outlines, ex.image.shape[:2]) if outlines else None
    if ex.uncued is not None:
        r.update(ex.uncued.image, ex.uncued.trace, 0, ex.true_label, cued_trace=ex.trace, outlines=items)
    else:
        r.update(ex.image, ex.trace, 0, ex.true_label, outlines=items)
    written = {"figure": r.save(os.path.join(out_dir, f"{stem}_fig3.{fmt}"), dpi=dpi)}
    versions = [(ex.uncued, ""), (ex, "_cued")] if ex.uncued is not None else [(ex, "_cued" if ex.cue else "")]
    for e, tag in versions:
        for layer, img in e.overlays(cmap, opacity, outlines=items).items():
            written[f"overlay_{layer}{tag}"] = p = os.path.join(out_dir, f"{stem}_overlay_{layer}{tag}.png")
            img.save(p, compress_level=1)
    if ex.original_differs():  # a 28x28 greyscale sample is its own model input: no second copy
        for e, tag in versions:
            for layer, img in e.overlays(cmap, opacity, on="original", outlines=items).items():
                key = f"overlay_{layer}{tag}_original"
                written[key] = p = os.path.join(out_dir, f"{stem}_{key}.png")
                img.save(p, compress_level=1)
    written["maps"] = os.path.join(out_dir, f"{stem}_maps.npz")
    ex.to_npz(written["maps"])
    summary = {"source": source, **ex.summary()}
    if items:
        summary["outlines"] = [{"label": o.label, "box_xyxy": list(o.box), "colour": o.colour} for o in items]
    written["summary"] = os.path.join(out_dir, f"{stem}.json")
    with open(written["summary"], "w") as f:
        json.dump(summary, f, indent=2)
    return written


def explain_files(loaded: LoadedModel, files: Sequence[Union[str, Tuple[str, str]]], out_dir: str, layers=None, signed: bool = True,
                  joint: bool = False, batch_size: int = 16, cmap: str = DEFAULT_CMAP, opacity: float = 0.5,
                  gradcam: bool = False, progress: bool = True, gain: bool = True,
                  label_of: Optional[Callable[[str], Optional[int]]] = None, fmt: str = "png", dpi: int = 150,
                  layout: str = "double", cue=None,
                  outlines_of: Optional[Callable[[str], Optional[Sequence]]] = None) -> Tuple[List[Dict], List[ImageError]]:
    """Explain many files: decode a batch, explain it with one trace (and one ablation forward per layer), write
    each image's outputs.

    Args:
        loaded: a GAttA model from ``load_model``.
        files: image paths, or (path, name) pairs from :func:`collect_inputs` (the name is used in messages,
            in the error list and in each record's ``name``).
        out_dir: output directory.
        layers, signed, joint, gradcam, gain: as in :func:`gatta_viz.analysis.explanation.explain` (gain map by
            default; ``gain=False`` for raw agreement).
        batch_size: images per trace.
        cmap, opacity: colours of maps and overlays.
        progress: show a tqdm bar (messages about skipped files are printed above it).
        label_of: ``label_of(path)`` may give an image's true class index (shown in the figure and the JSON).
        fmt: figure format, ``png``, ``pdf`` or ``svg``.
        dpi: figure resolution (PNG, and images inside PDF/SVG).
        layout: ``double`` (7.2 in wide) or ``single`` (3.5 in) figure.
        cue: a top-down cue (a class name with stored class queries, or a query tensor): every image is
            explained under it and without it (two rows in the figure).
        outlines_of: ``outlines_of(path)`` may give an image's items to outline, in the image file's own
            pixels (e.g. :func:`outline_lookup` of an ``export_scenes`` index); they are moved to the model
            input when the preprocessing resizes the image.
    Returns:
        (records, errors): one record per written image (source, prediction, paths), and the files that failed.
    """
    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"figure format must be one of {FIGURE_FORMATS}, got {fmt!r}")
    records, errors = [], []
    used: Dict[str, int] = {}
    renderers = _Renderers(cmap, layout, outlines=outlines_of is not None)
    bar = tqdm(total=len(files), desc="explain", disable=not progress, unit="img")
    items = [(f, f) if isinstance(f, str) else (f[0], f[1]) for f in files]
    names = dict(items)
    for s in range(0, len(items), max(1, batch_size)):
        batch: List[Tuple[str, PreparedImage]] = []
        for path, name in items[s : s + max(1, batch_size)]:
            try:
                batch.append((path, prepare_image(load_image(path, name=name), loaded.preprocess)))
            except ImageError as e:
                errors.append(e)
                tqdm.write(f"skipped {e}", file=sys.stderr)
                bar.update(1)
        if not batch:
            continue
        labels = [label_of(p) if label_of else None for p, _ in batch]
        exs = explain_batch(loaded, [prep for _, prep in batch], layers=layers, signed=signed, joint=joint,
                            gradcam=gradcam, true_label=labels, gain=gain, cue=cue)
        for (path, prep), ex in zip(batch, exs):
            found = outlines_of(path) if outlines_of is not None else None
            try:
                drawn = rescale_outlines(found, prep.original.size, ex.image.shape[:2]) if found else None
            except ValueError as e:  # an index made for other images: say so, explain the image anyway
                tqdm.write(f"warning: {names[path]}: outlines not drawn ({e})", file=sys.stderr)
                drawn = None
            paths = write_explanation(ex, out_dir, _stem(path, used), path, cmap, opacity, fmt, dpi, layout, renderers,
                                      outlines=drawn)
            record = {"source": path, "name": names[path], "prediction": ex.prediction, "pass1": ex.top_pass1[0],
                      "files": paths}
            if ex.uncued is not None:
                record["prediction_without_cue"] = ex.uncued.prediction
            if outlines_of is not None:
                record["outlined"] = [o.label for o in drawn or []]
            records.append(record)
            bar.update(1)
    bar.close()
    return records, errors


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """Arguments of ``gatta-viz explain``."""
    p = parser or argparse.ArgumentParser(prog="gatta-viz explain", description=__doc__,
                                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files and/or directories")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"bundled model name ({', '.join(BUNDLED)}) or checkpoint path")
    p.add_argument("--checkpoint", default=None, help="checkpoint path (instead of --model)")
    p.add_argument("--layers", nargs="+", default=None, help="conv layers to show (default: all GAttA conv layers)")
    p.add_argument("--batch-size", type=int, default=16, help="images per trace")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--signed", dest="signed", action="store_true", default=True, help="diverging maps centred at 0")
    g.add_argument("--rectified", dest="signed", action="store_false",
                   help="positive values only (boosted positions; with --raw, agreement > 0)")
    p.add_argument("--joint", action="store_true", help="one colour scale across layers (default: one per layer)")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--raw", action="store_true",
                   help="show raw agreement (sign set by training) instead of the gain map alpha x agreement")
    m.add_argument("--gain", action="store_true",
                   help="show the gain map alpha x agreement (the default; kept for old scripts)")
    p.add_argument("--cmap", default=DEFAULT_CMAP, help="matplotlib colormap of the maps (a diverging one)")
    p.add_argument("--opacity", type=float, default=0.5, help="weight of the map in the overlays, 0 to 1")
    p.add_argument("--gradcam", action="store_true", help="also store captum Grad-CAM maps in the .npz")
    p.add_argument("--format", dest="fmt", choices=FIGURE_FORMATS, default="png", help="figure file format")
    p.add_argument("--dpi", type=int, default=150,
                   help="figure resolution (PNG, and images inside PDF/SVG); 300 for print")
    p.add_argument("--layout", choices=tuple(LAYOUTS), default="double",
                   help="figure width: double = 7.2 in (two journal columns), single = 3.5 in (one column)")
    p.add_argument("--cue", default=None, metavar="CLASS",
                   help="explain under a top-down cue: the model's stored query of class CLASS replaces the query pass 1 "
                        "pools from the image (a GAttA checkpoint with class queries: store them with `gatta-viz cues`); "
                        "figures show the maps without and with the cue (\"cued: CLASS\") on one colour scale per layer")
    p.add_argument("--boxes", default=None, metavar="INDEX.json",
                   help="outline each image's items (both garments of a scene, the garment of a clutter image) from an "
                        "index.json written by gatta_viz export_scenes / export_clutter, matched by file name")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads; 0 = automatic (1 for inputs up to 64x64 pixels, torch's default otherwise)")
    return p


def _check_options(args: argparse.Namespace) -> None:
    """Validate options that need no model (before the model is loaded). Raises ValueError."""
    check_cmap(args.cmap)
    if not 0 <= args.opacity <= 1:
        raise ValueError(f"--opacity must be in [0, 1], got {args.opacity}")
    if args.dpi <= 0:
        raise ValueError(f"--dpi must be positive, got {args.dpi}")
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")


def run(args: argparse.Namespace) -> int:
    """Run the explain command. Returns 0 (all written), 1 (some files failed) or 2 (bad options/model)."""
    try:
        _check_options(args)
        loaded = resolve_model(args.checkpoint or args.model or DEFAULT_MODEL)
        if not loaded.is_gatta:
            raise ValueError(f"model {loaded.name} has no GAttA layers; choose a GAttA model")
        if args.layers:
            bad = [n for n in args.layers if loaded.model.layer_kinds.get(n) != "conv"]
            if bad:
                conv = [n for n, k in loaded.model.layer_kinds.items() if k == "conv"]
                raise ValueError(f"--layers {bad} are not conv GAttA layers of {loaded.name}; choose from {conv}")
        cue = None
        if args.cue is not None:
            try:
                cue = resolve_cue(loaded, args.cue)[1]
            except ValueError as e:
                raise ValueError(f"--cue: {e}") from None
        outlines_of = outline_lookup(args.boxes) if args.boxes else None
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files, missing = collect_inputs(args.inputs)
    for m in missing:
        print(f"skipped {m}: no such file or directory", file=sys.stderr)
    if not files and not missing:
        print("error: no image files found in the inputs", file=sys.stderr)
        return 2
    threads = args.threads or auto_threads(loaded)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    if is_untrained(loaded.model.alphas):
        print(f"warning: {loaded.name}: {untrained_message(not args.raw)}", file=sys.stderr)
    try:
        with torch.enable_grad(), warnings.catch_warnings():  # captum's Grad-CAM needs autograd
            warnings.simplefilter("ignore", UntrainedGAttAWarning)  # said once above, in words
            records, errors = explain_files(loaded, files, args.out, args.layers, args.signed, args.joint,
                                            args.batch_size, args.cmap, args.opacity, args.gradcam, gain=not args.raw,
                                            fmt=args.fmt, dpi=args.dpi, layout=args.layout, cue=cue,
                                            outlines_of=outlines_of)
    finally:
        torch.set_num_threads(previous)
    if outlines_of is not None and records and not any(r["outlined"] for r in records):
        print(f"warning: {args.boxes} lists none of the explained images (matched by file name): no outlines drawn",
              file=sys.stderr)
    index = {"model": loaded.name, "maps": "raw agreement (sign set by training)" if args.raw else "alpha x agreement",
             "cue": cue, "boxes": args.boxes, "threads": threads, "written": records,
             "failed": [{"file": e.name, "problem": e.problem} for e in errors]
             + [{"file": m, "problem": "no such file or directory"} for m in missing]}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump(index, f, indent=2)
    print(f"explained {len(records)} image(s) into {args.out}; {len(index['failed'])} failed")
    return 1 if index["failed"] else 0
