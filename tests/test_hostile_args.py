"""Every sub-command over a table of hostile arguments: exit 2 (130 for Ctrl-C), one line on stderr naming the
problem, no traceback, nothing left behind (no partial output, no temp file).

Runs ``gatta_viz.cli.main(argv)`` in-process (argparse's SystemExit caught). Placeholders in argv: ``{d}`` the
test's own empty folder (also the working directory, so default outputs land there), ``{F}`` shared fixture files
(see ``fixtures``), ``{img}`` a 28x28 PNG.
"""
import copy
import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from gatta_viz.cli import COMMANDS
from gatta_viz.models.checkpoint import bundled_path

from cli_run import run_cli

# (command, argv, regex the one stderr line must match)
ROWS = [
    # ---- evaluate
    ("evaluate", ["--n", "20", "--models", "fmnist-gatta-toy", "--sigmas", "0", "0", "0.1", "0.10"], r"more than once"),
    ("evaluate", ["--n", "20", "--models", "fmnist-gatta-toy", "--sigmas", "nan"], r"sigmas.*finite"),
    ("evaluate", ["--n", "20", "--models", "fmnist-gatta-toy", "--sigmas", "-1"], r"sigmas.*>= 0"),
    ("evaluate", ["--n", "20", "--models", "fmnist-gatta-toy", "--sigmas", "inf"], r"finite"),
    ("evaluate", ["--n", "20", "--models", "fmnist-gatta-toy", "--batch-size", "0"], r"batch-size.*>= 1"),
    ("evaluate", ["--n", "20", "--models", "fmnist-gatta-toy", "--batch-size", "-1"], r"batch-size.*>= 1"),
    ("evaluate", ["--models", "fmnist-gatta-toy", "--n", "0"], r"--n.*>= 1"),
    ("evaluate", ["--models", "fmnist-gatta-toy", "--n", "-1"], r"--n.*>= 1"),
    ("evaluate", ["--n", "20", "--models", "fmnist-resnet", "--dataset", "fmnist-pairs"], r"48x48.*28x28|28x28.*48x48"),
    ("evaluate", ["--n", "20", "--models", "fmnist-pairs-gatta-resnet", "--dataset", "fashion-mnist"], r"48x48.*28x28|28x28.*48x48"),
    ("evaluate", ["--n", "20", "--models", "{F}/nan.pt"], r"non-finite"),
    ("evaluate", ["--n", "20", "--models", "{F}/adir"], r"folder|directory"),
    ("evaluate", ["--n", "20", "--models", ""], r"empty"),
    ("evaluate", ["--n", "20", "--models", "fmnist-toy", "fmnist-toy"], r"more than once"),
    ("evaluate", ["--n", "20", "--models", "fmnist-gatta-toy", "--out", "{F}/afile.txt"], r"not a folder"),
    ("evaluate", ["--n", "20", "--models", "fmnist-gatta-toy", "--out", "/proc/gatta_out"], r"/proc"),
    ("evaluate", ["--n", "20", "--models", "fmnist-gatta-toy", "--out", ""], r"empty"),
    ("evaluate", ["--n", "20", "--models", "{F}/no_preprocess.pt"], r"preprocess"),
    ("evaluate", ["--n", "20", "--models", "{F}/bad_kwargs.pt"], r"kwargs"),
    ("evaluate", ["--n", "20", "--models", "{F}/bad_meta.pt"], r"meta"),
    # ---- recalibrate
    ("recalibrate", ["{F}/toy.pt", "{F}/adir"], r"directory"),
    ("recalibrate", ["{F}/toy.pt", ""], r"empty"),
    ("recalibrate", ["{F}/toy.pt", "/proc/gatta.pt"], r"/proc"),
    ("recalibrate", ["{F}/toy.pt", "{d}/missing/out.pt"], r"does not exist"),
    ("recalibrate", ["{F}/nan.pt", "{d}/out.pt"], r"non-finite"),
    ("recalibrate", ["{F}/missing.pt", "{d}/out.pt"], r"no such file"),
    ("recalibrate", ["{F}/toy.pt", "{d}/out.pt", "--images", "0"], r"images.*>= 1"),
    ("recalibrate", ["{F}/toy.pt", "{d}/out.pt", "--batch-size", "0"], r"batch-size.*>= 1"),
    ("recalibrate", ["{F}/toy.pt", "{d}/out.pt", "--threads", "100000"], r"threads.*between"),
    ("recalibrate", ["{F}/toy.pt", "{d}/out.pt", "--threads", "-1"], r"threads.*between"),
    ("recalibrate", ["{F}/toy.pt", "{d}/out.pt", "--dataset", "fmnist-pairs"], r"48x48.*28x28|28x28.*48x48"),
    ("recalibrate", ["{F}/no_preprocess.pt", "{d}/out.pt"], r"preprocess"),
    # ---- cues
    ("cues", ["{F}/toy.pt", "{F}/adir"], r"directory"),
    ("cues", ["{F}/toy.pt", ""], r"empty"),
    ("cues", ["{F}/nan.pt", "{d}/out.pt"], r"non-finite"),
    ("cues", ["{F}/toy.pt", "{d}/out.pt", "--images", "-1"], r"images.*>= 0"),
    ("cues", ["{F}/toy.pt", "{d}/out.pt", "--calibrate", "-1"], r"calibrate.*>= 0"),
    ("cues", ["{F}/toy.pt", "{d}/out.pt", "--threads", "100000"], r"threads"),
    ("cues", ["{F}/toy.pt", "{d}/out.pt", "--dataset", "fmnist-pairs"], r"48x48.*28x28|28x28.*48x48"),
    ("cues", ["{F}/baseline.pt", "{d}/out.pt"], r"GAttA"),
    # ---- faithfulness
    ("faithfulness", ["--n", "4", "--model", "fmnist-gatta-toy", "--steps", "0"], r"steps.*>= 1"),
    ("faithfulness", ["--n", "4", "--model", "fmnist-gatta-toy", "--steps", "-1"], r"steps.*>= 1"),
    ("faithfulness", ["--model", "fmnist-gatta-toy", "--n", "0"], r"--n.*>= 1"),
    ("faithfulness", ["--model", "fmnist-gatta-toy", "--n", "-1"], r"--n.*>= 1"),
    ("faithfulness", ["--n", "4", "--steps", "2", "--model", "fmnist-gatta-toy", "--patch", "100"], r"patch.*28x28|larger"),
    ("faithfulness", ["--n", "4", "--steps", "2", "--model", "fmnist-gatta-toy", "--patch", "0"], r"patch.*>= 1"),
    ("faithfulness", ["--n", "4", "--steps", "2", "--model", "fmnist-gatta-toy", "--baseline", "road", "--noise", "nan"], r"noise.*finite"),
    ("faithfulness", ["--n", "4", "--steps", "2", "--model", "fmnist-gatta-toy", "--noise", "-1"], r"noise.*>= 0"),
    ("faithfulness", ["--n", "4", "--steps", "2", "--model", "fmnist-toy", "--methods", "gradcam"], r"GAttA|plain|baseline"),
    ("faithfulness", ["--n", "4", "--steps", "2", "--model", "fmnist-gatta-toy", "--methods", "gain", "gain"], r"more than once"),
    ("faithfulness", ["--n", "4", "--steps", "2", "--model", "fmnist-gatta-toy", "--methods", "nonsense"], r"nonsense"),
    ("faithfulness", ["--n", "4", "--steps", "2", "--checkpoint", "{F}/nan.pt"], r"non-finite"),
    ("faithfulness", ["--n", "4", "--steps", "2", "--model", ""], r"empty"),
    ("faithfulness", ["--n", "4", "--steps", "2", "--checkpoint", "/nonexistent.pt"], r"no such file"),
    ("faithfulness", ["--n", "4", "--steps", "2", "--model", "fmnist-gatta-toy", "--checkpoint", "{F}/toy.pt"], r"not both"),
    ("faithfulness", ["--n", "4", "--steps", "2", "--model", "{F}/adir"], r"folder"),
    ("faithfulness", ["--n", "4", "--steps", "2", "--model", "fmnist-gatta-toy", "--out", "{F}/afile.txt"], r"not a folder"),
    # ---- export
    ("export", ["{F}/toy.pt", "{F}/adir"], r"directory"),
    ("export", ["{F}/toy.pt", ""], r"empty"),
    ("export", ["{F}/toy.pt", "/proc/gatta.pt"], r"/proc"),
    ("export", ["{F}/nan.pt", "{d}/out.pt"], r"non-finite"),
    ("export", ["{F}/missing.pt", "{d}/out.pt"], r"no such file"),
    ("export", ["{F}/adir", "{d}/out.pt"], r"directory"),
    ("export", ["{F}/bad_kwargs.pt", "{d}/out.pt"], r"kwargs"),
    # ---- explain (H24core)
    ("explain", ["{img}", "--out", "{F}/afile.txt"], r"not a folder"),
    ("explain", ["{img}", "--out", "/proc/gatta_out"], r"/proc"),
    ("explain", ["{img}", "--out", ""], r"empty"),
    ("explain", ["{img}", "--out", "{d}/o", "--dpi", "5"], r"dpi.*between"),
    ("explain", ["{img}", "--out", "{d}/o", "--dpi", "10000"], r"dpi.*between"),
    ("explain", ["{img}", "--out", "{d}/o", "--threads", "100000"], r"threads"),
    ("explain", ["{img}", "--out", "{d}/o", "--threads", "-1"], r"threads"),
    ("explain", ["{img}", "--out", "{d}/o", "--model", ""], r"empty"),
    ("explain", ["{img}", "--out", "{d}/o", "--model", "fmnist-gatta-toy", "--checkpoint", "{F}/toy.pt"], r"not both"),
    ("explain", ["{img}", "--out", "{d}/o", "--checkpoint", "/nonexistent.pt"], r"^(?!.*did you mean).*(no such file|does not exist)"),
    ("explain", ["{img}", "--out", "{d}/o", "--model", "{F}/adir"], r"folder"),
    ("explain", ["{img}", "--out", "{d}/o", "--checkpoint", "{F}/nan.pt"], r"non-finite"),
    ("explain", ["{img}", "--out", "{d}/o", "--batch-size", "0"], r"batch-size.*>= 1"),
    ("explain", ["{img}", "--out", "{d}/o", "--opacity", "2"], r"opacity"),
    ("explain", ["{img}", "--out", "{d}/o", "--layers", "layer2", "layer2"], r"more than once"),
    # ---- demo (H24core)
    ("demo", ["--out", "{F}/afile.txt"], r"not a folder"),
    ("demo", ["--out", "/proc/gatta_out"], r"/proc"),
    ("demo", ["--out", ""], r"empty"),
    ("demo", ["--out", "{d}/o", "--images", "{F}/afile.txt"], r"not a folder"),
    ("demo", ["--out", "{d}/o", "--images", "/nonexistent_dir"], r"no such folder"),
    # ---- train (H22stab)
    ("train", ["--out", "{d}/run", "--batch-size", "0"], r"batch-size.*>= 1"),
    ("train", ["--out", "{d}/run", "--max-epochs-this-run", "-1"], r"max-epochs-this-run"),
    ("train", ["--out", "{d}/run", "--pad", "-1"], r"pad.*>= 0"),
    ("train", ["--out", "{d}/run", "--flip", "5"], r"flip"),
    ("train", ["--out", "{d}/run", "--subset", "-1"], r"subset.*>= 0"),
    ("train", ["--out", "{d}/run", "--label-smoothing", "2"], r"label-smoothing"),
    ("train", ["--out", "{d}/run", "--device", "bogus"], r"device"),
    ("train", ["--out", "{d}/run", "--device", "cuda"], r"device|cuda|GPU"),
    ("train", ["--out", "{d}/run", "--widths", "0"], r"widths.*>= 1"),
    ("train", ["--out", "{d}/run", "--threads", "100000"], r"threads"),
    ("train", ["--out", "{d}/run", "--lr", "nan"], r"lr.*finite"),
    ("train", ["--out", "{d}/run", "--epochs", "0"], r"epochs.*>= 1"),
    ("train", ["--out", "{F}/afile.txt"], r"not a folder"),
    ("train", ["--out", "/proc/gatta_run"], r"/proc"),
    ("train", ["--out", ""], r"empty"),
    ("train", ["--out", "{F}/exported_run", "--resume"], r"resume|train_state|export"),
    ("train", ["--out", "{F}/finished_run"], r"--resume|exists"),
    # ---- app (H24app)
    ("app", ["--address", "999.1.1.1"], r"address|999\.1\.1\.1"),
    ("app", ["--port", "70000"], r"port.*between"),
    ("app", ["--port", "0"], r"port.*between"),
    ("app", ["--port", "-1"], r"port.*between"),
    ("app", ["/nonexistent.png"], r"no such file"),
    # ---- maps
    ("maps", ["--model", "nope", "--out", "{d}/m.zarr"], r"unknown model"),
    ("maps", ["--checkpoint", "{F}/nan.pt", "--out", "{d}/m.zarr"], r"non-finite"),
    ("maps", ["--model", "{F}/adir", "--out", "{d}/m.zarr"], r"folder"),
    ("maps", ["--model", "fmnist-toy", "--out", "{d}/m.zarr"], r"plain CNN"),
    ("maps", ["--model", "fmnist-gatta-toy", "--n", "0", "--out", "{d}/m.zarr"], r"--n.*>= 1"),
    ("maps", ["--model", "fmnist-gatta-toy", "--n", "10001", "--out", "{d}/m.zarr"], r"10001 is more than the 10000 images"),
    ("maps", ["--model", "fmnist-gatta-toy", "--dataset", "nope", "--out", "{d}/m.zarr"], r"unknown dataset"),
    ("maps", ["--model", "fmnist-gatta-toy", "--dataset", "fmnist-pairs", "--out", "{d}/m.zarr"], r"48x48.*28x28|28x28.*48x48"),
    ("maps", ["--model", "fmnist-gatta-toy", "--out", "{F}/afile.txt"], r"not a folder"),
    ("maps", ["--model", "fmnist-gatta-toy", "--out", "/proc/m.zarr"], r"/proc"),
    ("maps", ["--model", "fmnist-gatta-toy", "--out", ""], r"empty"),
    ("maps", ["--model", "fmnist-gatta-toy", "--n", "4"], r"required: --out"),
    ("maps", ["--model", "fmnist-gatta-toy", "--chunk", "0", "--out", "{d}/m.zarr"], r"chunk.*between"),
    ("maps", ["--model", "fmnist-gatta-toy", "--batch-size", "0", "--out", "{d}/m.zarr"], r"batch-size.*>= 1"),
    ("maps", ["--model", "fmnist-gatta-toy", "--threads", "-1", "--out", "{d}/m.zarr"], r"threads.*between"),
    ("maps", ["--model", "fmnist-gatta-toy", "--device", "cuda:7", "--out", "{d}/m.zarr"], r"device"),
    ("maps", ["--model", "fmnist-gatta-toy", "--folder", "{F}/afile.txt", "--out", "{d}/m.zarr"], r"is a file"),
    ("maps", ["--model", "fmnist-gatta-toy", "--folder", "{F}/adir", "--out", "{d}/m.zarr"], r"holds no image files"),
    ("maps", ["--model", "fmnist-gatta-toy", "--labels", "none", "--out", "{d}/m.zarr"], r"--labels applies to --folder"),
    ("maps", ["--model", "fmnist-gatta-toy", "--dataset", "fashion-mnist", "--folder", "{F}/adir", "--out", "{d}/m.zarr"], r"not both"),
]


def _ids():
    seen = {}
    out = []
    for cmd, argv, _ in ROWS:
        key = f"{cmd}:{' '.join(a.replace('{F}/', '').replace('{d}/', '') for a in argv) or 'EMPTY'}"[:70]
        seen[key] = seen.get(key, 0) + 1
        out.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return out


def _save_like(path, obj):
    torch.save(obj, path)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """Files the rows point at: valid and broken checkpoints, a file, a folder, run folders."""
    F = tmp_path_factory.mktemp("hostile")
    shutil.copy(bundled_path("fmnist-gatta-toy"), F / "toy.pt")
    shutil.copy(bundled_path("fmnist-toy"), F / "baseline.pt")
    good = torch.load(F / "toy.pt", weights_only=True)
    nan = copy.deepcopy(good)
    first = next(k for k, v in nan["state_dict"].items() if v.is_floating_point())
    nan["state_dict"][first] = torch.full_like(nan["state_dict"][first], float("nan"))
    _save_like(F / "nan.pt", nan)
    no_pre = copy.deepcopy(good)
    del no_pre["preprocess"]
    _save_like(F / "no_preprocess.pt", no_pre)
    _save_like(F / "bad_kwargs.pt", {**good, "kwargs": ["in_channels", 1]})
    _save_like(F / "bad_meta.pt", {**good, "meta": "trained somewhere"})
    (F / "afile.txt").write_text("not a folder\n")
    (F / "adir").mkdir()
    (F / "exported_run").mkdir()
    shutil.copy(F / "toy.pt", F / "exported_run" / "last.pt")  # an exported checkpoint: no train_state
    run = F / "finished_run"
    run.mkdir()
    shutil.copy(F / "toy.pt", run / "final.pt")
    shutil.copy(F / "toy.pt", run / "last.pt")
    (run / "metrics.json").write_text("[]\n")
    Image.fromarray((np.arange(28 * 28).reshape(28, 28) % 255).astype(np.uint8), "L").save(F / "img.png")
    return F


def snapshot(*roots):
    """Every file and folder under ``roots``, with sizes and modification times."""
    out = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for n in dirs + files:
                p = os.path.join(dirpath, n)
                st = os.stat(p)
                out[p] = (st.st_size, st.st_mtime_ns) if os.path.isfile(p) else "dir"
    return out


BAR = re.compile(r"\d+%\|.*\|.*\[.*\]")  # a tqdm progress bar


def shown_lines(err):
    """The non-blank lines a terminal shows, progress bars left out (a carriage return starts a line over)."""
    shown = [ln.split("\r")[-1] for ln in err.split("\n")]
    return [ln for ln in shown if ln.strip() and not BAR.search(ln)]


def fill(argv, F, d):
    return [a.replace("{F}", str(F)).replace("{d}", str(d)).replace("{img}", str(F / "img.png")) for a in argv]


def test_every_sub_command_has_rows():
    assert {c for c, _, _ in ROWS} == set(COMMANDS)


@pytest.mark.parametrize("cmd, argv, expected", ROWS, ids=_ids())
def test_a_hostile_argument_is_refused_in_one_line(cmd, argv, expected, fixtures, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(fixtures, tmp_path)
    code, out, err = run_cli([cmd] + fill(argv, fixtures, tmp_path), capsys)
    lines = shown_lines(err)
    assert "Traceback" not in out + err, err[-2000:]
    assert code == 2, (code, out[-500:], err[-1000:])
    assert len(lines) == 1, err[-2000:]
    assert re.search(expected, lines[0], re.IGNORECASE), lines[0]
    assert snapshot(fixtures, tmp_path) == before, "the refused command left files behind or changed some"


class _CtrlC(Exception):
    pass


# Ctrl-C at the first two-pass forward (every command below runs one), or at the first torch.save (export)
INTERRUPT_ROWS = [
    ("evaluate", ["--models", "fmnist-gatta-toy", "--n", "20", "--out", "{d}/o"]),
    ("faithfulness", ["--model", "fmnist-gatta-toy", "--n", "4", "--steps", "2", "--out", "{d}/o"]),
    ("cues", ["{F}/toy.pt", "{d}/c.pt", "--images", "50"]),
    ("recalibrate", ["{F}/toy.pt", "{d}/r.pt", "--images", "64", "--batch-size", "32"]),
    ("export", ["{F}/toy.pt", "{d}/e.pt"]),
    ("explain", ["{img}", "--out", "{d}/x", "--model", "fmnist-gatta-toy"]),
    ("demo", ["--out", "{d}/demo"]),
    ("train", ["--out", "{d}/run", "--model", "gatta_toy", "--subset", "64", "--epochs", "1", "--no-eval",
               "--batch-size", "32", "--threads", "1", "--quiet"]),
    ("maps", ["--model", "fmnist-gatta-toy", "--n", "20", "--chunk", "10", "--out", "{d}/m.zarr"]),
]


@pytest.mark.parametrize("cmd, argv", INTERRUPT_ROWS, ids=[r[0] for r in INTERRUPT_ROWS])
def test_ctrl_c_ends_with_one_line_and_exit_130(cmd, argv, fixtures, tmp_path, capsys, monkeypatch):
    from gatta_viz.core.network import GAttANet

    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(GAttANet, "_two_pass", interrupt)
    if cmd == "export":
        monkeypatch.setattr(torch, "save", interrupt)
    code, out, err = run_cli([cmd] + fill(argv, fixtures, tmp_path), capsys)
    lines = shown_lines(err)
    assert "Traceback" not in out + err, err[-2000:]
    assert code == 130, (code, err[-1000:])
    assert len(lines) == 1 and re.match(rf"gatta-viz {cmd}: interrupted", lines[0]), lines
    left = [p for p in snapshot(tmp_path, fixtures) if ".tmp" in os.path.basename(p)]
    assert left == [], left
