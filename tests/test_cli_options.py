"""Options of evaluate, recalibrate, cues, faithfulness and export that no other test runs, each checked against
the library called by hand: evaluate on an image folder and without 0 among the noise levels, recalibrate through
the CLI, cues on scene data with sign calibration, faithfulness with the black baseline and ROAD noise."""
import math
import os

import pytest
import torch
from PIL import Image

import gatta_viz as gv
from gatta_viz.cli import main

from cli_run import strict_load


def test_pass_changes_are_measured_on_clean_images_whatever_the_sigmas():
    from gatta_viz.training.evaluate import evaluate_model

    lm = gv.load_model("fmnist-gatta-toy")
    data = gv.load_fashion_mnist("test").subset(120)
    without0 = evaluate_model(lm, data, sigmas=(0.2,), batch_size=50, progress=False)
    with0 = evaluate_model(lm, data, sigmas=(0.0, 0.2), batch_size=50, progress=False)
    assert without0["pass_change"] == with0["pass_change"]
    assert without0["accuracy"] == {"0.2": with0["accuracy"]["0.2"]} and list(without0["accuracy_pass1"]) == ["0.2"]
    with torch.no_grad():  # by hand, on the clean images
        t = lm.model.trace(data.normalize(data.images))
    p1, p2, y = t.logits_pass1.argmax(1), t.logits_pass2.argmax(1), data.labels
    assert without0["pass_change"]["changed"] == pytest.approx(float((p1 != p2).float().mean()))
    assert without0["pass_change"]["fixed"] == pytest.approx(float(((p1 != y) & (p2 == y)).float().mean()))
    with pytest.raises(ValueError, match="more than once"):
        evaluate_model(lm, data, sigmas=(0.1, 0.1))
    with pytest.raises(ValueError, match="finite"):
        evaluate_model(lm, data, sigmas=(float("nan"),))
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_model(lm, data, batch_size=0)


def test_evaluate_on_an_image_folder_with_the_checkpoints_classes(tmp_path, capsys):
    """A checkpoint whose classes are folder names, and its validation images as PNG files: evaluate reads the folder
    as the checkpoint's preprocessing says; accuracy and pass changes equal the model on those images by hand."""
    obj = torch.load(gv.bundled_path("fmnist-gatta-toy"), weights_only=True)
    obj["classes"] = [f"c{i}" for i in range(10)]
    ckpt = tmp_path / "folder_model.pt"
    torch.save(obj, ckpt)
    src = gv.load_fashion_mnist("test").subset(30)
    root = tmp_path / "val_images"
    for i, (img, y) in enumerate(zip(src.images, src.labels)):
        (root / f"c{int(y)}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy(), "L").save(root / f"c{int(y)}" / f"{i:03d}.png")
    code = main(["evaluate", "--models", str(ckpt), "--dataset", str(root), "--sigmas", "0.1", "--batch-size", "7",
                 "--seed", "2", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    res = strict_load(tmp_path / "out" / "eval.json")[0]
    lm = gv.load_checkpoint(str(ckpt))
    with torch.no_grad():
        t = lm.model.trace(src.normalize(src.images))
    assert res["n"] == 30 and list(res["accuracy"]) == ["0.1"]
    assert res["pass_change"]["changed"] == pytest.approx(float((t.logits_pass1.argmax(1) != t.logits_pass2.argmax(1)).float().mean()))
    assert "pass 2 changed" in capsys.readouterr().out
    # a checkpoint trained on this folder with images held out (no val/ folder): evaluated on those images only, by
    # default (its recorded data set), split as its run split it
    from gatta_viz.data.folders import load_folder_for_model

    obj["meta"] = {**obj["meta"], "dataset": str(root), "val_fraction": 0.5, "seed": 3}
    torch.save(obj, tmp_path / "held_out.pt")
    assert main(["evaluate", "--models", str(tmp_path / "held_out.pt"), "--sigmas", "0", "--out", str(tmp_path / "o2")]) == 0
    held = load_folder_for_model(str(root), lm.preprocess, lm.classes, split="val", val_fraction=0.5, seed=3)
    res = strict_load(tmp_path / "o2" / "eval.json")[0]
    assert res["n"] == len(held) < 30 and res["dataset"] == held.name


def test_recalibrate_through_the_cli_equals_the_library_on_the_checkpoints_own_data(tmp_path, capsys):
    from gatta_viz.training.recalibrate import recalibrate_statistics

    src = gv.bundled_path("fmnist-gatta-toy")
    dst = tmp_path / "recal.pt"
    code = main(["recalibrate", src, str(dst), "--images", "64", "--batch-size", "32", "--no-augment", "--seed", "1",
                 "--threads", "1", "--data-root", "/usr/share/datasets/fashion-mnist"])
    assert code == 0, capsys.readouterr().err
    assert "statistics from 2 batches of fashion-mnist" in capsys.readouterr().out
    got = gv.load_checkpoint(str(dst))
    assert got.meta["recalibrated"]["dataset"] == "fashion-mnist"  # the checkpoint's own data set, not chosen by us
    ref = gv.load_checkpoint(src, recalibrating=True)
    recalibrate_statistics(ref.model, gv.load_fashion_mnist("train"), images=64, batch_size=32, augment=False, seed=1,
                           progress=False)
    for k, v in ref.model.state_dict().items():
        torch.testing.assert_close(got.model.state_dict()[k], v, atol=1e-6, rtol=0, msg=k)
    assert not (tmp_path / "x").exists() and sorted(os.listdir(tmp_path)) == ["recal.pt"]  # no temp file left


def test_cues_on_scene_data_average_singles_and_calibrate_the_sign(tmp_path, capsys):
    from gatta_viz.data.scenes import load_singles
    from gatta_viz.training.cues import class_queries

    src = gv.bundled_path("fmnist-pairs-gatta-resnet")
    dst = tmp_path / "cued.pt"
    code = main(["cues", src, str(dst), "--images", "400", "--calibrate", "20", "--threads", "1",
                 "--data-root", "/usr/share/datasets/fashion-mnist"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "400 images of fmnist-pairs-singles" in out and "steering cue sign" in out
    lm = gv.load_checkpoint(str(dst))
    info = lm.meta["class_queries"]
    assert info["sign"] in (1, -1) and info["scenes"] == 20 and info["images"] == 400
    assert lm.cue_definition == "steering"
    pre = lm.preprocess
    singles = load_singles("fmnist-pairs", "train", None, pre["mean"], pre["std"]).subset(400)
    torch.testing.assert_close(lm.class_queries, class_queries(gv.load_model(src).model, singles, progress=False),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("baseline, noise", [("black", None), ("road", "0.05")])
def test_faithfulness_black_baseline_and_road_noise(baseline, noise, tmp_path, capsys):
    model = ["--model", "fmnist-gatta-toy"] if baseline == "road" else ["--checkpoint", gv.bundled_path("fmnist-gatta-toy")]
    argv = ["faithfulness", *model, "--n", "3", "--steps", "3", "--methods", "gain", "random",
            "--baseline", baseline, "--seed", "1", "--patch", "2", "--out", str(tmp_path)]
    code = main(argv + (["--noise", noise] if noise else []))
    assert code == 0, capsys.readouterr().err
    rep = strict_load(tmp_path / "faithfulness.json")
    pre = gv.load_model("fmnist-gatta-toy").preprocess
    assert rep["baseline_name"] == baseline and rep["patch"] == 2 and rep["n"] == 3
    if baseline == "black":  # raw 0 in normalised units
        assert rep["baseline"] == pytest.approx([-pre["mean"][0] / pre["std"][0]])
    else:
        assert rep["baseline"] == "road" and rep["noise"] == 0.05
    for m in ("gain", "random"):
        assert len(rep["methods"][m]["deletion_curve"]) == 4 and math.isfinite(rep["methods"][m]["deletion_auc"])
    assert {p for p in os.listdir(tmp_path)} == {"faithfulness.json", "faithfulness.png", "examples.png"}


def test_export_strips_the_resume_state_and_refuses_a_folder(tmp_path, capsys):
    obj = torch.load(gv.bundled_path("fmnist-toy"), weights_only=True)
    obj["train_state"] = {"epoch": 3, "optimizer": {"lr": 0.1}}
    torch.save(obj, tmp_path / "run.pt")
    assert main(["export", str(tmp_path / "run.pt"), str(tmp_path / "small.pt")]) == 0
    small = torch.load(tmp_path / "small.pt", weights_only=True)
    assert "train_state" not in small and small["classes"] == obj["classes"]
    (tmp_path / "adir").mkdir()
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "run.pt"), str(tmp_path / "adir")])
    assert e.value.code == 2 and "is a directory" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["adir", "run.pt", "small.pt"] and not os.listdir(tmp_path / "adir")


def test_cues_and_recalibrate_read_a_folder_trained_checkpoints_own_images(tmp_path, capsys):
    """A checkpoint trained on an image folder: cues average its own images (prepared as it says) and recalibrate
    re-estimates on them; the class queries equal the mean q_avg of each class's files, read by hand."""
    src = gv.load_fashion_mnist("test").subset(80)
    assert set(src.labels.tolist()) == set(range(10))
    root = tmp_path / "images"
    for i, (img, y) in enumerate(zip(src.images, src.labels)):
        (root / f"c{int(y)}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy(), "L").save(root / f"c{int(y)}" / f"{i:03d}.png")
    obj = torch.load(gv.bundled_path("fmnist-gatta-toy"), weights_only=True)
    obj["classes"] = [f"c{i}" for i in range(10)]
    obj["meta"] = {**obj["meta"], "dataset": str(root)}
    obj.pop("class_queries", None)
    torch.save(obj, tmp_path / "m.pt")
    assert main(["cues", str(tmp_path / "m.pt"), str(tmp_path / "cued.pt")]) == 0, capsys.readouterr().err
    lm = gv.load_checkpoint(str(tmp_path / "cued.pt"))
    with torch.no_grad():
        q = lm.model.trace(src.normalize(src.images)).q_avg.double()
    by_hand = torch.stack([q[src.labels == c].mean(0) for c in range(10)]).float()
    torch.testing.assert_close(lm.class_queries, by_hand, atol=1e-5, rtol=0)
    assert lm.meta["class_queries"]["images"] == 80
    assert main(["recalibrate", str(tmp_path / "m.pt"), str(tmp_path / "r.pt"), "--images", "50", "--batch-size", "20",
                 "--no-augment"]) == 0, capsys.readouterr().err
    assert "statistics from 3 batches" in capsys.readouterr().out
    before, after = gv.load_checkpoint(str(tmp_path / "m.pt")).model, gv.load_checkpoint(str(tmp_path / "r.pt")).model
    changed = [k for k, v in after.state_dict().items() if "running_mean" in k and not torch.equal(v, before.state_dict()[k])]
    assert changed and all(torch.isfinite(v).all() for v in after.state_dict().values())
