"""The explain CLI on real sample images, with a corrupt file among them."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import gatta_viz as gv
from gatta_viz.cli import main

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "sample_images", "fashion-mnist")


def test_explain_folder_with_corrupt_file(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    good = sorted(os.listdir(SAMPLES))[:3]
    for n in good:
        shutil.copy(os.path.join(SAMPLES, n), src / n)
    (src / "broken.png").write_bytes(open(os.path.join(SAMPLES, good[0]), "rb").read()[:60])  # truncated PNG
    (src / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    code = main(["explain", str(src), "--out", str(out), "--batch-size", "2"])
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.png" in err and "truncated or corrupt" in err
    assert "empty.jpg" in err and "empty (0 bytes)" in err
    for n in good:
        stem = os.path.splitext(n)[0]
        assert (out / f"{stem}_fig3.png").stat().st_size > 1000
        for layer in ("layer1", "layer2", "layer3"):
            assert (out / f"{stem}_overlay_{layer}.png").exists()
        summary = json.load(open(out / f"{stem}.json"))
        assert set(summary) >= {"top_pass1", "top_pass2", "alphas", "layers"}
        assert [r["layer"] for r in summary["layers"]] == ["layer1", "layer2", "layer3", "fc"]
        maps = np.load(out / f"{stem}_maps.npz")
        assert maps["raw/layer2"].shape == (14, 14) and maps["raw/fc"].shape == (10,)
        assert maps["heatmap/layer1"].shape == (28, 28)
    index = json.load(open(out / "index.json"))
    assert len(index["written"]) == 3 and {f["file"] for f in index["failed"]} == {"broken.png", "empty.jpg"}


def test_explain_summary_matches_the_model(tmp_path):
    path = os.path.join(SAMPLES, sorted(os.listdir(SAMPLES))[0])
    assert main(["explain", path, "--out", str(tmp_path)]) == 0
    stem = os.path.splitext(os.path.basename(path))[0]
    summary = json.load(open(tmp_path / f"{stem}.json"))
    lm = gv.load_model()
    prep = gv.prepare_image(gv.load_image(path), lm.preprocess)
    with torch.no_grad():
        t = lm.model.trace(prep.tensor)
    assert summary["top_pass2"][0]["index"] == int(t.logits_pass2.argmax())
    assert summary["top_pass1"][0]["index"] == int(t.logits_pass1.argmax())
    assert summary["alphas"] == pytest.approx(lm.model.alphas)
    probs = torch.softmax(t.logits_pass2[0].double(), 0)
    assert summary["top_pass2"][0]["prob"] == pytest.approx(float(probs.max()))


def test_explain_bad_options_exit_2(tmp_path, capsys):
    assert main(["explain", SAMPLES, "--out", str(tmp_path), "--layers", "fc"]) == 2
    assert "not conv GAttA layers" in capsys.readouterr().err
    assert main(["explain", SAMPLES, "--out", str(tmp_path), "--model", "fmnist-resnet"]) == 2
    assert "no GAttA layers" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "nothing-here"), "--out", str(tmp_path)]) == 1
