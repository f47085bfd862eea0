"""Behaviour kept across the compute/render split: the demo and explain write the same numbers (.npz), the same
JSON and the same pixels (figures and overlays) as before it, for a plain sample, a cued scene with outlines, a
clutter image with outlines, and a resized photo with --raw --joint --rectified --gradcam. The recorded outputs are
in tests/data/explain_baseline (see its README); the commands are rerun here exactly as they were recorded."""
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from gatta_viz.cli import main

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BASE = os.path.join(HERE, "data", "explain_baseline")
S = os.path.join(REPO, "sample_images")

RUNS = {
    "demo": ("bag_test00018", ["demo"]),
    "scene": ("scene_00000", ["explain", f"{S}/scenes/scene_00000.png", "--model", "fmnist-pairs-gatta-resnet",
                              "--cue", "Trouser", "--boxes", f"{S}/scenes/index.json"]),
    "clutter": ("clutter_00001", ["explain", f"{S}/clutter/clutter_00001.png", f"{S}/clutter/clutter_00003.png",
                                  "--model", "fmnist-clutter-gatta-resnet", "--boxes", f"{S}/clutter/index.json"]),
    "options": ("cameraman", ["explain", f"{S}/fashion-mnist/bag_test00018.png", f"{S}/fashion-mnist/coat_test00006.png",
                              f"{S}/photos/cameraman.jpg", "--raw", "--joint", "--rectified", "--gradcam"]),
}


def _pixels(path):
    a = np.asarray(Image.open(path).convert("RGB"))
    return {"shape": list(a.shape), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_outputs_equal_the_recorded_baseline(run, tmp_path, capsys):
    stem, argv = RUNS[run]
    out = tmp_path / run
    assert main(argv + ["--out", str(out)]) == 0
    capsys.readouterr()
    want_dir = os.path.join(BASE, run)
    for f in sorted(os.listdir(want_dir)):
        got_path = out / f
        assert got_path.exists(), f
        if f.endswith(".npz"):
            want, got = np.load(os.path.join(want_dir, f)), np.load(got_path)
            assert sorted(got.files) == sorted(want.files)
            for k in want.files:
                assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), (f, k)
        else:
            want = json.load(open(os.path.join(want_dir, f)))
            got = json.load(open(got_path))
            # the source is the path as given on the command line: the same file, wherever the clone is
            assert os.path.basename(got.pop("source")) == os.path.basename(want.pop("source"))
            assert got == want, f
    pixels = json.load(open(os.path.join(BASE, "pixels.json")))["pixels"]
    recorded = {k.split("/", 1)[1]: v for k, v in pixels.items() if k.startswith(run + "/")}
    written = sorted(f for f in os.listdir(out) if f.startswith(stem) and f.endswith(".png"))
    assert written == sorted(recorded)  # the same figure and overlays, no more, no fewer
    for f in written:
        assert _pixels(out / f) == recorded[f], f
    index = json.load(open(out / "index.json"))
    assert [r["name"] for r in index["written"]] and index["failed"] == []
