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


def test_gain_view_is_alpha_times_agreement_in_maps_bars_figure_and_cli(tmp_path, monkeypatch):
    """gain=True shows alpha x agreement: per-layer signed maps become sign(alpha) x the agreement maps."""
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app"))
    import logic

    lm = gv.load_model("fmnist-gatta-toy")  # trained with negative alphas on every conv layer
    path = os.path.join(SAMPLES, "bag_test00018.png")
    prep = gv.prepare_image(gv.load_image(path), lm.preprocess)
    plain = gv.explain(lm, prep, gradcam=False)
    gain = gv.explain(lm, prep, gradcam=False, gain=True)
    assert all(plain.alphas[n] < 0 for n in plain.heatmaps)
    for n, h in plain.heatmaps.items():
        assert np.allclose(gain.heatmaps[n], -h, atol=1e-6)
        assert np.array_equal(gain.raw[n], plain.raw[n])  # raw maps stay raw agreement
    assert gain.summary()["maps"] == "alpha x agreement" and plain.summary()["maps"] == "agreement"
    fig = gain.figure()
    shown = fig.axes[1].images[0].get_array()
    assert np.allclose(shown, -plain.figure().axes[1].images[0].get_array(), atol=1e-6)
    r = logic.render(lm, "bag.png", gv.load_image(path), gradcam=False, gain=True)
    assert np.allclose(r.dense["fc2"], 1 + plain.alphas["fc2"] * plain.raw["fc2"], atol=1e-6)
    assert main(["explain", path, "--model", "fmnist-gatta-toy", "--gain", "--out", str(tmp_path)]) == 0
    assert json.load(open(tmp_path / "bag_test00018.json"))["maps"] == "alpha x agreement"
