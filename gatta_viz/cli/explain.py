"""``gatta-viz explain IMAGE_OR_DIR ... --out DIR``: per image a Fig.-3 figure, overlays per layer, maps (.npz), JSON.

Maps show alpha x agreement by default (> 0 boosted by pass 2, < 0 suppressed; the same in every trained
model); ``--raw`` shows raw agreement, whose sign is set by training. Per image it writes ``STEM_fig3.png``
(or .pdf/.svg), ``STEM_overlay_LAYER.png`` (at the model input's resolution, what the model saw),
``STEM_overlay_LAYER_original.png`` (over the original image at its own resolution and colours, when it differs
from the model input), ``STEM_maps.npz`` and ``STEM.json``; plus ``index.json`` for the run. Every input gets its
own STEM (its file name made safe, with ``_2``, ``_3``... when two inputs would share one). Files that cannot be
read or explained are reported on stderr (file and problem) and skipped; everything else is still written, and
the exit code is 1 when any file failed (0 when all succeeded, 2 on bad options, 130 on Ctrl-C).

``--out`` must be new, empty, or hold an earlier run with the same settings; ``--overwrite`` empties a folder of
earlier explain outputs first. Images whose size differs from the model's input are resized (said on stderr and in
``index.json``). Files are written atomically: an interrupted run leaves whole files only.

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
import os
import sys
import warnings
from typing import Any, Dict, List, Optional

import torch

from . import args as A
from .batch import INDEX, BatchInterrupted, auto_threads, check_out_dir, collect_inputs, explain_files, \
    outline_lookup, unique_stems
from .model_args import add_model_args, load_model_arg
from ..data.files import write_json
from ..compute.checks import UntrainedGAttAWarning, is_untrained, untrained_message
from ..compute.cue import resolve_cue
from ..compute.options import MapOptions
from ..models.checkpoint import LoadedModel
from ..render.fig3_text import LAYOUTS
from ..render.options import FigureOptions
from ..render.save import FIGURE_FORMATS
from ..render.style import DEFAULT_CMAP

__all__ = ["build_parser", "run", "run_settings", "write_index", "report_resized"]



def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """Arguments of ``gatta-viz explain``."""
    p = parser or A.Parser(prog="gatta-viz explain", description=__doc__,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files and/or directories")
    p.add_argument("--out", required=True, type=A.output_dir, help="output directory")
    p.add_argument("--overwrite", action="store_true",
                   help="empty --out first when it holds an earlier run's outputs (any settings)")
    add_model_args(p)
    p.add_argument("--layers", nargs="+", default=None, action=A.UniqueList,
                   help="conv layers to show (default: all GAttA conv layers)")
    p.add_argument("--batch-size", type=A.positive_int, default=16, help="images per trace")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--signed", dest="signed", action="store_true", default=True, help="diverging maps centred at 0")
    g.add_argument("--rectified", dest="signed", action="store_false",
                   help="positive values only (boosted positions; with --raw, agreement > 0)")
    p.add_argument("--joint", action="store_true", help="one colour scale across layers (default: one per layer)")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--raw", action="store_true",
                   help="show raw agreement (sign set by training) instead of the gain map alpha x agreement")
    m.add_argument("--gain", action="store_true",
                   help="does nothing: the gain map alpha x agreement is the default (accepted so old scripts run)")
    p.add_argument("--cmap", default=DEFAULT_CMAP, help="matplotlib colormap of the maps (a diverging one)")
    p.add_argument("--opacity", type=A.probability, default=0.5, help="weight of the map in the overlays, 0 to 1")
    p.add_argument("--gradcam", action="store_true", help="also store captum Grad-CAM maps in the .npz")
    p.add_argument("--format", dest="fmt", choices=FIGURE_FORMATS, default="png", help="figure file format")
    p.add_argument("--dpi", type=A.dpi, default=150,
                   help="figure resolution (PNG, and images inside PDF/SVG), 10 to 1200; 300 for print")
    p.add_argument("--layout", choices=tuple(LAYOUTS), default="double",
                   help="figure width: double = 7.2 in (two journal columns), single = 3.5 in (one column)")
    p.add_argument("--cue", default=None, metavar="CLASS",
                   help="explain under a top-down cue: the model's stored query of class CLASS replaces the query pass 1 "
                        "pools from the image (a GAttA checkpoint with class queries: store them with `gatta-viz cues`); "
                        "figures show the maps without and with the cue (\"cued: CLASS\") on one colour scale per layer")
    p.add_argument("--boxes", default=None, metavar="INDEX.json", type=A.existing_file,
                   help="outline each image's items (both garments of a scene, the garment of a clutter image) from an "
                        "index.json written by gatta_viz export_scenes / export_clutter, matched by file name")
    p.add_argument("--threads", type=A.threads, default=0,
                   help="torch CPU threads; 0 = automatic (1 for inputs up to 64x64 pixels, torch's default otherwise)")
    return p


def run_settings(command: str, loaded: LoadedModel, maps: MapOptions, figure: FigureOptions,
                 boxes: Optional[str] = None) -> Dict[str, Any]:
    """What decides a run's files (written to ``index.json``; a second run into the same folder must match)."""
    return {"command": command, "model": os.path.abspath(loaded.path) if loaded.path else loaded.name,
            "maps": maps.map_kind, "signed": maps.signed, "joint": maps.joint,
            "layers": list(maps.layers) if maps.layers else None, "cue": maps.cue if isinstance(maps.cue, str) else None,
            "gradcam": maps.gradcam, "boxes": os.path.abspath(boxes) if boxes else None, "cmap": figure.cmap,
            "opacity": figure.opacity, "format": figure.fmt, "dpi": figure.dpi, "layout": figure.layout}


def report_resized(records: List[Dict[str, Any]], loaded: LoadedModel, shown: int = 5) -> None:
    """Say on stderr which images were resized for the model (the first ``shown``, then how many more)."""
    resized = [r for r in records if "resized" in r]
    h, w = loaded.preprocess["size"]
    for r in resized[:shown]:
        h0, w0 = r["resized"]["from_hw"]
        print(f"note: {r['name']}: {w0}x{h0} resized to the model's {w}x{h} input", file=sys.stderr)
    if len(resized) > shown:
        print(f"note: {len(resized) - shown} more image(s) resized to {w}x{h} (listed in index.json)", file=sys.stderr)


def write_index(out_dir: str, loaded: LoadedModel, settings: Dict[str, Any], records, errors, missing,
                extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write the run's ``index.json`` (strict JSON, atomically). Returns its content."""
    index = {"model": loaded.name, "maps": settings["maps"], "cue": settings["cue"], "boxes": settings["boxes"],
             **(extra or {}), "settings": settings, "written": records,
             "failed": [{"file": e.name, "problem": e.problem} for e in errors]
             + [{"file": m, "problem": "no such file or directory"} for m in missing]}
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, INDEX), index)
    return index


def _options(args: argparse.Namespace, loaded: LoadedModel):
    """MapOptions and FigureOptions from the arguments, checked against the model. Raises UsageError."""
    if not loaded.is_gatta:
        raise A.UsageError(f"model {loaded.name} has no GAttA layers; choose a GAttA model")
    try:
        figure = FigureOptions(cmap=args.cmap, opacity=args.opacity, layout=args.layout, dpi=args.dpi, fmt=args.fmt,
                               outlines=args.boxes is not None)
    except ValueError as e:
        raise A.UsageError(f"--cmap: {e}" if "colormap" in str(e) else str(e)) from None
    if args.layers:
        conv = [n for n, k in loaded.model.layer_kinds.items() if k == "conv"]
        bad = [n for n in args.layers if n not in conv]
        if bad:
            raise A.UsageError(f"--layers {bad} are not conv GAttA layers of {loaded.name}; choose from {conv}")
    cue = None
    if args.cue is not None:
        try:
            cue = resolve_cue(loaded, args.cue)[1]
        except ValueError as e:
            raise A.UsageError(f"--cue: {e}") from None
    maps = MapOptions(gain=not args.raw, signed=args.signed, joint=args.joint, layers=args.layers, cue=cue,
                      gradcam=args.gradcam)
    return maps, figure


def run(args: argparse.Namespace) -> int:
    """Run the explain command. Returns 0 (all written), 1 (some files failed); raises UsageError (exit 2) and
    :class:`gatta_viz.cli.args.Interrupted` (Ctrl-C, exit 130) for ``gatta-viz`` to report in one line."""
    try:
        FigureOptions(cmap=args.cmap)  # options that need no model, before the model is loaded
    except ValueError as e:
        raise A.UsageError(f"--cmap: {e}") from None
    loaded = load_model_arg(args.model, args.checkpoint)
    maps, figure = _options(args, loaded)
    try:
        outlines_of = outline_lookup(args.boxes) if args.boxes else None
    except (ValueError, FileNotFoundError) as e:
        raise A.UsageError(f"--boxes: {e}") from None
    found, missing = collect_inputs(args.inputs)
    for m in missing:
        print(f"skipped {m}: no such file or directory", file=sys.stderr)
    out_real = os.path.realpath(args.out) + os.sep
    own = [n for p, n in found if os.path.realpath(p).startswith(out_real)]
    if own:  # an earlier run's figures and overlays inside the inputs are not images to explain
        print(f"note: {len(own)} file(s) inside --out {args.out} are not explained (e.g. {own[0]})", file=sys.stderr)
        found = [(p, n) for p, n in found if not os.path.realpath(p).startswith(out_real)]
    if not found and not missing:
        raise A.UsageError("no image files found in the inputs")
    settings = run_settings("explain", loaded, maps, figure, args.boxes)
    try:
        check_out_dir(args.out, settings, args.overwrite)
    except (ValueError, OSError) as e:
        raise A.UsageError(str(e)) from None
    files = [(p, n, s) for (p, n), s in zip(found, unique_stems([p for p, _ in found]))]
    threads = args.threads or auto_threads(loaded)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    if is_untrained(loaded.model.alphas):
        print(f"warning: {loaded.name}: {untrained_message(not args.raw)}", file=sys.stderr)
    try:
        with torch.enable_grad(), warnings.catch_warnings():  # captum's Grad-CAM needs autograd
            warnings.simplefilter("ignore", UntrainedGAttAWarning)  # said once above, in words
            records, errors = explain_files(loaded, files, args.out, maps, figure, args.batch_size,
                                            outlines_of=outlines_of)
    except BatchInterrupted as stop:
        write_index(args.out, loaded, settings, stop.records, stop.errors, missing,
                    {"boxes": args.boxes, "threads": threads, "interrupted": True})
        raise A.Interrupted(str(stop)) from None
    finally:
        torch.set_num_threads(previous)
    report_resized(records, loaded)
    if outlines_of is not None and records and not any(r["outlined"] for r in records):
        print(f"warning: {args.boxes} lists none of the explained images (matched by file name): no outlines drawn",
              file=sys.stderr)
    index = write_index(args.out, loaded, settings, records, errors, missing, {"boxes": args.boxes, "threads": threads})
    print(f"explained {len(records)} image(s) into {args.out}; {len(index['failed'])} failed")
    return 1 if index["failed"] else 0
