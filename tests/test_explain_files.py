"""Explaining folders of files: unique output names, a guarded output folder, per-file errors (decoding, drawing,
writing), images of extreme aspect ratio, resized images named, model options checked, strict JSON, Ctrl-C."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

import gatta_viz as gv
from cli_run import run_cli, strict_load
from gatta_viz.cli import batch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, "sample_images", "fashion-mnist")
TOY = ["--model", "fmnist-gatta-toy"]


# ------------------------------------------------------------------ names
def test_every_input_gets_its_own_stem():
    assert batch.unique_stems(["d/a b.png", "d/a_b.png", "d/a_b_2.png"]) == ["a_b_3", "a_b", "a_b_2"]
    assert batch.unique_stems(["x/A.png", "y/a.png", "index.png"]) == ["A", "a_2", "index_2"]  # case, reserved
    assert batch.unique_stems(["1/q.png", "2/q.png", "3/q.png"]) == ["q", "q_2", "q_3"]
    assert batch.unique_stems(["é!.png"]) == ["_"] and batch.unique_stems([".png"]) == [".png"]


def test_colliding_names_give_three_files_and_three_index_entries(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a b.png", "a_b.png", "a_b_2.png"):
        shutil.copy(os.path.join(SAMPLES, "bag_test00018.png"), src / name)
    code, _, err = run_cli(["explain", str(src), "--out", str(tmp_path / "o")] + TOY, capsys)
    assert code == 0, err
    index = strict_load(tmp_path / "o" / "index.json")
    summaries = [r["files"]["summary"] for r in index["written"]]
    assert len(set(summaries)) == 3 and all(os.path.exists(p) for p in summaries)
    assert sorted(r["name"] for r in index["written"]) == ["a b.png", "a_b.png", "a_b_2.png"]
    assert {r["name"]: os.path.basename(r["files"]["summary"]) for r in index["written"]} == {
        "a b.png": "a_b_3.json", "a_b.png": "a_b.json", "a_b_2.png": "a_b_2.json"}
    for r in index["written"]:
        assert os.path.basename(strict_load(r["files"]["summary"])["source"]) == r["name"]


# ------------------------------------------------------------------ the output folder
def test_an_output_folder_inside_the_inputs_is_not_explained_again(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(os.path.join(SAMPLES, "bag_test00018.png"), src / "bag.png")
    for _ in range(2):  # the second run finds the first run's PNGs under in/out and leaves them alone
        code, _, err = run_cli(["explain", str(src), "--out", str(src / "out")] + TOY, capsys)
        assert code == 0, err
        assert [r["name"] for r in strict_load(src / "out" / "index.json")["written"]] == ["bag.png"]
    assert "file(s) inside --out" in err and "are not explained" in err


def test_out_is_refused_when_written_by_other_settings_or_holding_other_files(tmp_path, capsys):
    img = os.path.join(SAMPLES, "bag_test00018.png")
    out = tmp_path / "o"
    assert run_cli(["explain", img, "--out", str(out)] + TOY, capsys)[0] == 0
    first = sorted(os.listdir(out))
    # the same settings again: allowed, the same files
    assert run_cli(["explain", img, "--out", str(out)] + TOY, capsys)[0] == 0
    assert sorted(os.listdir(out)) == first
    # other settings: refused before anything is written, naming what differs
    code, _, err = run_cli(["explain", img, "--out", str(out), "--raw"] + TOY, capsys)
    assert code == 2 and "other settings (maps differ)" in err and "--overwrite" in err and "Traceback" not in err
    assert sorted(os.listdir(out)) == first
    # --overwrite empties it first: only the new run's files remain
    code, _, _ = run_cli(["explain", os.path.join(SAMPLES, "coat_test00006.png"), "--out", str(out), "--raw",
                      "--overwrite"] + TOY, capsys)
    assert code == 0
    assert sorted(os.listdir(out)) == sorted(f.replace("bag_test00018", "coat_test00006") for f in first)
    assert strict_load(out / "index.json")["maps"] == "raw agreement (sign set by training)"
    # files that are not an explain run's: refused, and --overwrite does not delete them
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    code, _, err = run_cli(["explain", img, "--out", str(other)] + TOY, capsys)
    assert code == 2 and "not written by gatta-viz explain (e.g. notes.txt)" in err
    code, _, err = run_cli(["explain", img, "--out", str(other), "--overwrite"] + TOY, capsys)
    assert code == 2 and "notes.txt" in err and (other / "notes.txt").read_text() == "keep me"
    # a stray file next to an earlier run: refused too
    (out / "stray.png").write_bytes(b"x")
    code, _, err = run_cli(["explain", os.path.join(SAMPLES, "coat_test00006.png"), "--out", str(out), "--raw"] + TOY,
                       capsys)
    assert code == 2 and "did not write (e.g. stray.png)" in err


# ------------------------------------------------------------------ per-file errors
def _thin_folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for f in ("bag_test00018.png", "trouser_test00002.png"):
        shutil.copy(os.path.join(SAMPLES, f), d / f)
    rng = np.random.default_rng(0)
    for w, h in ((500, 1), (1, 400), (2, 3000)):
        Image.fromarray((rng.random((h, w)) * 255).astype(np.uint8)).save(d / f"thin_{w}x{h}.png")
    Image.fromarray((rng.random((100, 3)) * 255).astype(np.uint8)).save(d / "narrow_3x100.png")  # 1 column at 28x28
    return d


def test_extreme_aspect_ratios_are_refused_by_name_and_the_others_explained(tmp_path, capsys):
    d = _thin_folder(tmp_path)
    code, out, err = run_cli(["explain", str(d), "--out", str(tmp_path / "o")] + TOY, capsys)
    assert code == 1 and "Traceback" not in out + err
    index = strict_load(tmp_path / "o" / "index.json")
    assert sorted(r["name"] for r in index["written"]) == ["bag_test00018.png", "narrow_3x100.png", "trouser_test00002.png"]
    failed = {f["file"]: f["problem"] for f in index["failed"]}
    assert set(failed) == {"thin_500x1.png", "thin_1x400.png", "thin_2x3000.png"}
    for name, problem in failed.items():
        assert f"skipped {name}: " in err and "too thin" in problem
    # the 3x100 image covers one column of the input: its overlays over the original exist at its own size
    narrow = next(r for r in index["written"] if r["name"] == "narrow_3x100.png")
    with Image.open(narrow["files"]["overlay_conv1_original"]) as im:
        assert im.size == (3, 100)
    assert narrow["resized"] == {"from_hw": [100, 3], "to_hw": [28, 28]}


def test_overlay_on_original_of_a_one_pixel_wide_content_box():
    heat = np.linspace(-1, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    assert gv.overlay_on_original(np.zeros((1, 500, 3), np.float32), heat).size == (500, 1)
    assert gv.overlay_on_original(np.zeros((400, 1, 3), np.float32), heat).size == (1, 400)
    from gatta_viz.render.images import content_box

    assert content_box((500, 1), (28, 28)) == (0, 14, 28, 1) and content_box((1, 400), (28, 28)) == (14, 0, 1, 28)


def test_a_failure_while_drawing_or_writing_one_file_is_named_and_the_batch_goes_on(tmp_path, capsys, monkeypatch):
    from gatta_viz.render import write as writer

    real = writer.explanation_files

    def fail_for_trouser(ex, stem, *a, **k):
        if stem.startswith("trouser"):
            raise RuntimeError("disk on fire")
        return real(ex, stem, *a, **k)

    monkeypatch.setattr(writer, "explanation_files", fail_for_trouser)
    d = tmp_path / "in"
    d.mkdir()
    for f in ("bag_test00018.png", "trouser_test00002.png", "coat_test00006.png"):
        shutil.copy(os.path.join(SAMPLES, f), d / f)
    code, out, err = run_cli(["explain", str(d), "--out", str(tmp_path / "o"), "--batch-size", "3"] + TOY, capsys)
    assert code == 1 and "Traceback" not in out + err
    assert "skipped trouser_test00002.png: cannot be drawn or written (RuntimeError: disk on fire)" in err
    index = strict_load(tmp_path / "o" / "index.json")
    assert sorted(r["name"] for r in index["written"]) == ["bag_test00018.png", "coat_test00006.png"]
    assert not any(f.startswith("trouser") for f in os.listdir(tmp_path / "o"))  # nothing half-written
    assert index["failed"] == [{"file": "trouser_test00002.png",
                                "problem": "cannot be drawn or written (RuntimeError: disk on fire)"}]


def test_a_failure_while_explaining_isolates_the_file(tmp_path, capsys, monkeypatch):
    real = batch.explain_batch

    def fail_with_a_coat(loaded, preps, *a, **k):
        if any(p.original.size == (28, 28) and np.asarray(p.original).mean() > 60 for p in preps):
            raise RuntimeError("cannot trace this one")
        return real(loaded, preps, *a, **k)

    monkeypatch.setattr(batch, "explain_batch", fail_with_a_coat)
    d = tmp_path / "in"
    d.mkdir()
    bright = np.full((28, 28), 200, np.uint8)
    Image.fromarray(bright).save(d / "bright.png")
    shutil.copy(os.path.join(SAMPLES, "sandal_test00008.png"), d / "sandal.png")
    assert np.asarray(Image.open(d / "sandal.png")).mean() < 60
    code, _, err = run_cli(["explain", str(d), "--out", str(tmp_path / "o")] + TOY, capsys)
    index = strict_load(tmp_path / "o" / "index.json")
    assert code == 1 and [r["name"] for r in index["written"]] == ["sandal.png"]
    assert "skipped bright.png: cannot be explained (RuntimeError: cannot trace this one)" in err


# ------------------------------------------------------------------ resized images, model options, JSON
def test_resized_images_are_said_once_each(tmp_path, capsys):
    clutter = os.path.join(REPO, "sample_images", "clutter", "clutter_00000.png")
    code, _, err = run_cli(["explain", clutter, os.path.join(SAMPLES, "bag_test00018.png"), "--out",
                        str(tmp_path / "o")] + TOY, capsys)
    assert code == 0
    assert err.count("resized") == 1 and "clutter_00000.png: 48x48 resized to the model's 28x28 input" in err
    index = strict_load(tmp_path / "o" / "index.json")
    by_name = {os.path.basename(r["name"]): r for r in index["written"]}
    assert by_name["clutter_00000.png"]["resized"] == {"from_hw": [48, 48], "to_hw": [28, 28]}
    assert "resized" not in by_name["bag_test00018.png"]


def test_model_options_are_checked(tmp_path, capsys):
    img = os.path.join(SAMPLES, "bag_test00018.png")
    (tmp_path / "adir").mkdir()
    cases = [(["--model", ""], "empty"), (["--model", "fmnist-gatta-toy", "--checkpoint", gv.bundled_path("fmnist-gatta-toy")],
                                          "not both"),
             (["--checkpoint", "/nonexistent.pt"], "no such file: /nonexistent.pt"),
             (["--model", "/nonexistent.pt"], "the checkpoint file does not exist"),
             (["--model", str(tmp_path / "adir")], "is a folder, not a checkpoint file"),
             (["--dpi", "5"], "dpi"), (["--dpi", "10000"], "dpi")]
    for extra, message in cases:
        code, _, err = run_cli(["explain", img, "--out", str(tmp_path / "o")] + extra, capsys)
        assert code == 2 and message in err and "did you mean" not in err and "Traceback" not in err, (extra, err)
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_json_outputs_are_strict_nan_written_as_null(tmp_path):
    lm = gv.load_model("fmnist-gatta-toy")
    ex = gv.explain(lm, torch.zeros(1, 28, 28), gradcam=False, ablation=False)  # no ablation: dprob_pred is NaN
    assert all(np.isnan(r["dprob_pred"]) for r in ex.table)
    assert all(r["dprob_pred"] is None for r in ex.summary()["layers"])
    paths = gv.write_explanation(ex, str(tmp_path), "zero")
    assert all(r["dprob_pred"] is None for r in strict_load(paths["summary"])["layers"])
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


# ------------------------------------------------------------------ Ctrl-C
def _default_sigint() -> None:
    """A child started from a background shell inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler: give the child the default disposition, as a terminal's Ctrl-C finds it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_explain_ends_with_one_line_and_keeps_whole_files(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    names = sorted(os.listdir(SAMPLES))
    for k in range(6):
        for f in names:
            shutil.copy(os.path.join(SAMPLES, f), src / f"{k}_{f}")
    total = 6 * len(names)
    out = tmp_path / "o"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "gatta_viz.cli", "explain", str(src), "--out", str(out),
                          "--batch-size", "1"] + TOY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 240
        while not (out.is_dir() and any(f.endswith(".json") for f in os.listdir(out))):  # wait for the first image
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "no output appeared"
            time.sleep(0.05)
        # Ctrl-C; pressed once more only if the run is still going 4 s later, as a person would (CPython loses a
        # KeyboardInterrupt raised while a finalizer runs, so a single SIGINT now and then passes without effect)
        for _ in range(10):
            p.send_signal(signal.SIGINT)
            try:
                stdout, stderr = p.communicate(timeout=4)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stdout + stderr
    lines = [ln for ln in stderr.replace("\r", "\n").splitlines() if ln.strip() and not ln.startswith("explain:")]
    assert len(lines) == 1, lines
    index = strict_load(out / "index.json")
    n = len(index["written"])
    assert lines[0] == f"gatta-viz explain: interrupted; {n} of {total} images written"
    assert 1 <= n < total and index["interrupted"] is True
    for r in index["written"]:  # every image listed is complete
        assert all(os.path.getsize(f) > 0 for f in r["files"].values())
    assert not [f for f in os.listdir(out) if ".tmp" in f]


def test_the_demo_finds_its_samples_in_the_package_without_the_repository(monkeypatch):
    from gatta_viz.cli import demo

    assert demo.samples_folder() == demo.SAMPLES_DIR
    monkeypatch.setattr(demo, "SAMPLES_DIR", "/nonexistent")
    assert demo.samples_folder() == demo.PACKAGED_SAMPLES
    assert sorted(os.listdir(demo.PACKAGED_SAMPLES)) == sorted(os.listdir(SAMPLES))  # the same 30 images


def test_the_demo_reruns_into_its_own_folder_and_refuses_other_settings(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for f in ("bag_test00018.png", "trouser_test00002.png"):
        shutil.copy(os.path.join(SAMPLES, f), src / f)
    argv = ["demo", "--images", str(src), "--out", str(tmp_path / "o")] + TOY
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and "accuracy on the 2 labelled samples: " in out
    first = sorted(os.listdir(tmp_path / "o"))
    assert "alphas.png" in first and "index.json" in first
    assert run_cli(argv, capsys)[0] == 0 and sorted(os.listdir(tmp_path / "o")) == first  # same settings: fine
    code, _, err = run_cli(argv + ["--raw"], capsys)
    assert code == 2 and "other settings (maps differ)" in err
    assert run_cli(argv + ["--raw", "--overwrite"], capsys)[0] == 0
    assert strict_load(tmp_path / "o" / "index.json")["maps"] == "raw agreement (sign set by training)"
