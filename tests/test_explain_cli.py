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
    lm = gv.load_model("fmnist-gatta-toy")  # trained with negative alphas on every conv layer
    path = os.path.join(SAMPLES, "bag_test00018.png")
    prep = gv.prepare_image(gv.load_image(path), lm.preprocess)
    plain = gv.explain(lm, prep, gradcam=False, gain=False)
    gain = gv.explain(lm, prep, gradcam=False)  # the gain map is the default
    assert all(plain.alphas[n] < 0 for n in plain.heatmaps)
    for n, h in plain.heatmaps.items():
        assert np.allclose(gain.heatmaps[n], -h, atol=1e-6)
        assert np.array_equal(gain.raw[n], plain.raw[n])  # raw maps stay raw agreement
    assert gain.summary()["maps"] == "alpha x agreement"
    assert plain.summary()["maps"] == "raw agreement (sign set by training)"
    fig = gv.fig3(gain)
    shown = fig.axes[1].images[0].get_array()
    assert np.allclose(shown, -gv.fig3(plain).axes[1].images[0].get_array(), atol=1e-6)
    for n, sc in plain.scales.items():  # what +1 stands for: |alpha| x the raw map's max |value|
        assert gain.scales[n] == pytest.approx(abs(plain.alphas[n]) * sc, rel=1e-5) and sc > 0
    # the dense bars (figure, app) are drawn from the record's maps: the gain 1 + alpha x agreement
    assert np.allclose(1 + gain.native["fc2"], 1 + plain.alphas["fc2"] * plain.raw["fc2"], atol=1e-6)
    assert np.array_equal(plain.native["fc2"], plain.raw["fc2"])
    assert main(["explain", path, "--model", "fmnist-gatta-toy", "--gain", "--out", str(tmp_path)]) == 0  # old flag
    assert json.load(open(tmp_path / "bag_test00018.json"))["maps"] == "alpha x agreement"
    assert main(["explain", path, "--model", "fmnist-gatta-toy", "--out", str(tmp_path / "d")]) == 0
    assert json.load(open(tmp_path / "d" / "bag_test00018.json"))["maps"] == "alpha x agreement"  # the default
    assert main(["explain", path, "--model", "fmnist-gatta-toy", "--raw", "--out", str(tmp_path / "r")]) == 0
    assert json.load(open(tmp_path / "r" / "bag_test00018.json"))["maps"] == "raw agreement (sign set by training)"
    npz = np.load(tmp_path / "r" / "bag_test00018_maps.npz")
    np.testing.assert_allclose(npz["heatmap/conv2"], plain.heatmaps["conv2"], atol=1e-6)


def test_bad_colormap_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from gatta_viz.cli import explain as ex_cli

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(ex_cli, "load_model_arg", no_load)
    path = os.path.join(SAMPLES, "bag_test00018.png")
    assert main(["explain", path, "--cmap", "viridus", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gatta-viz explain: error: --cmap: unknown colormap 'viridus'; did you mean ['viridis'")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        main(["explain", path, "--opacity", "2", "--out", str(tmp_path)])
    assert e.value.code == 2 and "argument --opacity: must be >= 0 and <= 1, got 2" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["explain", "demo", "faithfulness"])
def test_unknown_model_lists_the_bundled_ones(command, tmp_path, capsys):
    argv = [command] + ([os.path.join(SAMPLES, "bag_test00018.png")] if command == "explain" else []) + \
        ["--model", "fmnist-gata-resnet", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown model 'fmnist-gata-resnet'" in err and "did you mean 'fmnist-gatta-resnet'?" in err
    assert "bundled models: " + ", ".join(gv.BUNDLED) in err and "Traceback" not in err


def test_every_sub_command_help_shows_its_defaults(capsys):
    from gatta_viz.cli import COMMANDS

    expected = {
        "explain": ["--dpi DPI", "(default: 150)", "(default: png)", "(default: double)", "(default: RdBu_r)",
                    "(default: fmnist-gatta-resnet)", "(default: 16)"],
        "demo": ["(default: demo_out)"],
        "train": ["(default: 10)", "(default: 0.1)", "(default: 128)", "(default: gatta_compact_resnet)"],
        "evaluate": ["(default: 500)", "(default: results/eval)"],
        "faithfulness": ["(default: 28)", "(default: ['gain', 'agreement', 'total_gain', 'gradcam', 'random'])"],
        "recalibrate": ["(default: 10240)"],
        "app": ["(default: 8501)"],
        "export": [],
    }
    assert set(expected) <= set(COMMANDS)
    for command in COMMANDS:  # every sub-command, including ones added later: defaults shown, none doubled
        needles = expected.get(command, [])
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for needle in needles:
            assert needle in text, (command, needle)
        assert "(default: None)" not in text and "(default: False)" not in text
        assert "(default: (default:" not in text and text.count("(default: 10240)") <= 1


def test_skipped_files_are_printed_above_the_progress_bar_and_index_names_are_unique(tmp_path, capsys):
    src = tmp_path / "in"
    good = sorted(os.listdir(SAMPLES))[0]
    for sub in ("a", "b"):
        (src / sub).mkdir(parents=True)
        (src / sub / "x.png").write_bytes(b"not an image")  # two different broken files, one short name
        shutil.copy(os.path.join(SAMPLES, good), src / sub / good)
    out = tmp_path / "out"
    assert main(["explain", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    skipped = [line for line in err.split("\n") if "skipped" in line]
    assert len(skipped) == 2
    assert all(line.split("\r")[-1].startswith("skipped ") for line in skipped)  # on their own line, not in the bar
    index = json.load(open(out / "index.json"))
    assert sorted(f["file"] for f in index["failed"]) == [os.path.join("a", "x.png"), os.path.join("b", "x.png")]
    assert sorted(r["name"] for r in index["written"]) == [os.path.join("a", good), os.path.join("b", good)]
    stem = os.path.splitext(good)[0]
    assert sorted(os.path.basename(r["files"]["figure"]) for r in index["written"]) == [f"{stem}_2_fig3.png",
                                                                                        f"{stem}_fig3.png"]
    # two inputs whose files would share a name: those are named by their full path
    assert main(["explain", str(src / "a"), str(src / "b"), "--out", str(out)]) == 1
    capsys.readouterr()
    index = json.load(open(out / "index.json"))
    assert sorted(f["file"] for f in index["failed"]) == [str(src / "a" / "x.png"), str(src / "b" / "x.png")]


def test_formats_dpi_layout_threads_and_original_overlays(tmp_path, capsys):
    import re

    from PIL import Image

    path = os.path.join(SAMPLES, "bag_test00018.png")
    photo = os.path.join(os.path.dirname(SAMPLES), "photos", "coffee_cup.jpg")
    before = torch.get_num_threads()  # whatever earlier tests left: each run must give it back
    assert main(["explain", path, photo, "--out", str(tmp_path / "p"), "--dpi", "100", "--layout", "single"]) == 0
    with Image.open(tmp_path / "p" / "bag_test00018_fig3.png") as im:
        assert im.size[0] == 350 and 250 < im.size[1] < 700  # 3.5 in at 100 dpi
    assert not (tmp_path / "p" / "bag_test00018_overlay_layer1_original.png").exists()  # same as the model input
    with Image.open(tmp_path / "p" / "coffee_cup_overlay_layer2_original.png") as im, Image.open(photo) as ph:
        assert im.size == ph.size  # the photo's own resolution
    with Image.open(tmp_path / "p" / "coffee_cup_overlay_layer2.png") as im:
        assert im.size == (28, 28)  # what the model saw
    index = json.load(open(tmp_path / "p" / "index.json"))
    assert index["threads"] == 1 and index["maps"] == "alpha x agreement"  # 1 thread for 28x28 inputs
    assert torch.get_num_threads() == before  # restored after the run
    assert main(["explain", path, "--out", str(tmp_path / "v"), "--format", "pdf", "--threads", "2"]) == 0
    pdf = (tmp_path / "v" / "bag_test00018_fig3.pdf").read_bytes()
    width = float(re.search(rb"/MediaBox \[\s*[\d.]+\s+[\d.]+\s+([\d.]+)", pdf).group(1))
    assert width == pytest.approx(7.2 * 72, abs=0.5)
    assert json.load(open(tmp_path / "v" / "index.json"))["threads"] == 2
    assert torch.get_num_threads() == before  # restored after the run
    assert main(["explain", path, "--out", str(tmp_path / "s"), "--format", "svg"]) == 0
    assert (tmp_path / "s" / "bag_test00018_fig3.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(SystemExit):
        main(["explain", path, "--out", str(tmp_path), "--format", "jpg"])
    capsys.readouterr()


def test_untrained_checkpoint_warns_on_the_command_line(tmp_path, capsys):
    torch.manual_seed(0)
    model = gv.gatta_toy(in_channels=1, input_size=28)  # alphas 0
    lm = gv.load_model("fmnist-gatta-toy")
    ck = tmp_path / "untrained.pt"
    gv.save_checkpoint(str(ck), model, "gatta_toy", {"in_channels": 1, "input_size": 28}, lm.classes, lm.preprocess)
    path = os.path.join(SAMPLES, "bag_test00018.png")
    assert main(["explain", path, "--checkpoint", str(ck), "--raw", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "warning: untrained: untrained GAttA parameters: every alpha is 0" in err
    assert "untrained GAttA parameters" in json.load(open(tmp_path / "o" / "bag_test00018.json"))["warning"]


def test_demo_explains_the_30_sample_images_of_the_repository(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "accuracy on the 30 labelled samples" in out
    figures = sorted(p.name for p in tmp_path.glob("*_fig3.png"))
    assert figures == sorted(os.path.splitext(n)[0] + "_fig3.png" for n in os.listdir(SAMPLES))
    assert (tmp_path / "alphas.png").stat().st_size > 1000
    summary = json.load(open(tmp_path / "bag_test00018.json"))
    assert summary["true_label"]["label"] == "Bag" and summary["maps"] == "alpha x agreement"
