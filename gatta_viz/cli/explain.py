"""``gatta-viz explain IMAGE_OR_DIR ... --out DIR``: per image a Fig.-3 PNG, overlays per layer, raw maps (.npz), JSON.

Unreadable files are reported on stderr (file and problem) and skipped; everything else is still
written, and the exit code is 1 when any file failed (0 when all succeeded, 2 on bad options).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from ..models.checkpoint import DEFAULT_MODEL, LoadedModel, load_model
from ..analysis.explanation import Explanation, explain
from ..analysis.figures import save_figure
from ..data.preprocess import IMAGE_EXTENSIONS, ImageError, PreparedImage, load_image, prepare_image

__all__ = ["collect_files", "write_explanation", "explain_files", "build_parser", "run"]


def collect_files(inputs: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Expand files and directories (recursively, image extensions only, sorted).

    Returns:
        (files, missing): paths to process and inputs that do not exist.
    """
    files, missing = [], []
    for p in inputs:
        if os.path.isdir(p):
            for root, _, names in sorted(os.walk(p)):
                files += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(p):
            files.append(p)
        else:
            missing.append(p)
    return files, missing


def _stem(path: str, used: Dict[str, int]) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(os.path.basename(path))[0]) or "image"
    used[s] = used.get(s, 0) + 1
    return s if used[s] == 1 else f"{s}_{used[s]}"


def write_explanation(ex: Explanation, out_dir: str, stem: str, source: str, cmap: str = "RdBu_r", opacity: float = 0.5) -> Dict[str, str]:
    """Write figure, overlays, npz and JSON for one explanation. Returns name -> written path."""
    os.makedirs(out_dir, exist_ok=True)
    written = {"figure": save_figure(ex.figure(cmap), os.path.join(out_dir, f"{stem}_fig3.png"))}
    for layer, img in ex.overlays(cmap, opacity).items():
        p = os.path.join(out_dir, f"{stem}_overlay_{layer}.png")
        img.save(p)
        written[f"overlay_{layer}"] = p
    written["maps"] = os.path.join(out_dir, f"{stem}_maps.npz")
    ex.to_npz(written["maps"])
    summary = {"source": source, **ex.summary()}
    written["summary"] = os.path.join(out_dir, f"{stem}.json")
    with open(written["summary"], "w") as f:
        json.dump(summary, f, indent=2)
    return written


def explain_files(loaded: LoadedModel, files: Sequence[str], out_dir: str, layers=None, signed: bool = True,
                  joint: bool = False, batch_size: int = 16, cmap: str = "RdBu_r", opacity: float = 0.5,
                  gradcam: bool = False, progress: bool = True, gain: bool = False,
                  label_of: Optional[Callable[[str], Optional[int]]] = None) -> Tuple[List[Dict], List[ImageError]]:
    """Explain many files: decode a batch, explain each image, write its outputs.

    ``label_of(path)`` may give an image's true class index (shown in the figure and the JSON).

    Returns:
        (records, errors): one record per written image (source, prediction, paths), and the files that failed.
    """
    records, errors = [], []
    used: Dict[str, int] = {}
    bar = tqdm(total=len(files), desc="explain", disable=not progress, unit="img")
    for s in range(0, len(files), max(1, batch_size)):
        batch: List[Tuple[str, PreparedImage]] = []
        for path in files[s : s + batch_size]:
            try:
                batch.append((path, prepare_image(load_image(path), loaded.preprocess)))
            except ImageError as e:
                errors.append(e)
                print(f"skipped {e}", file=sys.stderr)
                bar.update(1)
        for path, prep in batch:
            true = label_of(path) if label_of else None
            ex = explain(loaded, prep, layers=layers, signed=signed, joint=joint, gradcam=gradcam, true_label=true,
                         gain=gain)
            paths = write_explanation(ex, out_dir, _stem(path, used), path, cmap, opacity)
            records.append({"source": path, "prediction": ex.prediction, "pass1": ex.top_pass1[0], "files": paths})
            bar.update(1)
    bar.close()
    return records, errors


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="gatta-viz explain", description=__doc__)
    p.add_argument("inputs", nargs="+", help="image files and/or directories")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model", default=None, help=f"bundled model name (default {DEFAULT_MODEL})")
    p.add_argument("--checkpoint", default=None, help="checkpoint path (instead of --model)")
    p.add_argument("--layers", nargs="+", default=None, help="conv layers to show (default: all GAttA conv layers)")
    p.add_argument("--batch-size", type=int, default=16)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--signed", dest="signed", action="store_true", default=True, help="diverging maps centred at 0 (default)")
    g.add_argument("--rectified", dest="signed", action="store_false", help="positive agreement only")
    p.add_argument("--joint", action="store_true", help="one colour scale across layers (default: one per layer)")
    p.add_argument("--gain", action="store_true",
                   help="show alpha x agreement (what each layer boosts) instead of raw agreement, whose sign is a "
                        "convention of training")
    p.add_argument("--cmap", default="RdBu_r")
    p.add_argument("--opacity", type=float, default=0.5)
    p.add_argument("--gradcam", action="store_true", help="also store captum Grad-CAM maps in the .npz")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the explain command. Returns 0 (all written), 1 (some files failed) or 2 (bad options/model)."""
    try:
        loaded = load_model(args.checkpoint or args.model or DEFAULT_MODEL)
        if not loaded.is_gatta:
            raise ValueError(f"model {loaded.name} has no GAttA layers; choose a GAttA model")
        if args.layers:
            bad = [n for n in args.layers if loaded.model.layer_kinds.get(n) != "conv"]
            if bad:
                conv = [n for n, k in loaded.model.layer_kinds.items() if k == "conv"]
                raise ValueError(f"--layers {bad} are not conv GAttA layers of {loaded.name}; choose from {conv}")
        if not 0 <= args.opacity <= 1:
            raise ValueError(f"--opacity must be in [0, 1], got {args.opacity}")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files, missing = collect_files(args.inputs)
    for m in missing:
        print(f"skipped {m}: no such file or directory", file=sys.stderr)
    if not files and not missing:
        print("error: no image files found in the inputs", file=sys.stderr)
        return 2
    torch.set_grad_enabled(True)
    records, errors = explain_files(loaded, files, args.out, args.layers, args.signed, args.joint, args.batch_size,
                                    args.cmap, args.opacity, args.gradcam, gain=args.gain)
    index = {"model": loaded.name, "written": records, "failed": [{"file": e.name, "problem": e.problem} for e in errors]
             + [{"file": m, "problem": "no such file or directory"} for m in missing]}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump(index, f, indent=2)
    print(f"explained {len(records)} image(s) into {args.out}; {len(index['failed'])} failed")
    return 1 if index["failed"] else 0
