"""Evaluation: clean accuracy equals a direct count, seeded noise is reproducible, pass-change bookkeeping adds up."""
import json

import pytest
import torch

import gatta_viz as gv
from gatta_viz.cli import main
from gatta_viz.training.evaluate import evaluate_model


@pytest.fixture(scope="module")
def data():
    return gv.load_fashion_mnist("test").subset(120)


def test_clean_accuracy_and_pass_changes_by_hand(data):
    lm = gv.load_model("fmnist-gatta-resnet")
    res = evaluate_model(lm, data, sigmas=(0.0,), batch_size=50, progress=False)
    x, y = data.tensors()
    with torch.no_grad():
        t = lm.model.trace(x)
    p1, p2 = t.logits_pass1.argmax(1), t.logits_pass2.argmax(1)
    assert res["accuracy"]["0.0"] == pytest.approx((p2 == y).float().mean().item())
    assert res["accuracy_pass1"]["0.0"] == pytest.approx((p1 == y).float().mean().item())
    pc = res["pass_change"]
    assert pc["changed"] == pytest.approx((p1 != p2).float().mean().item())
    assert pc["fixed"] - pc["broken"] == pytest.approx(res["accuracy"]["0.0"] - res["accuracy_pass1"]["0.0"])
    assert pc["fixed"] + pc["broken"] <= pc["changed"] + 1e-12


def test_noise_is_seeded_and_hurts(data):
    lm = gv.load_model("fmnist-resnet")
    a = evaluate_model(lm, data, sigmas=(0.0, 0.5), batch_size=60, seed=3, progress=False)
    b = evaluate_model(lm, data, sigmas=(0.0, 0.5), batch_size=60, seed=3, progress=False)
    assert a["accuracy"] == b["accuracy"]
    assert a["accuracy"]["0.5"] < a["accuracy"]["0.0"]
    assert "pass_change" not in a  # a plain model has one pass


def test_evaluate_cli_writes_table_json_and_plot(tmp_path, capsys):
    code = main(["evaluate", "--models", "fmnist-gatta-toy", "fmnist-toy", "--n", "50", "--sigmas", "0", "0.1",
                 "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "| fmnist_gatta_toy |" in out and "| fmnist_toy |" in out and "sigma=0.1" in out
    res = json.load(open(tmp_path / "eval.json"))
    assert [r["model"] for r in res] == ["fmnist_gatta_toy", "fmnist_toy"]
    assert (tmp_path / "noise.png").stat().st_size > 5000
    assert main(["evaluate", "--models", "no-such-model.pt", "--n", "5", "--out", str(tmp_path)]) == 2


def test_checkpoints_with_the_same_file_name_are_told_apart_by_their_folder(tmp_path, capsys):
    import shutil

    for run in ("seed0", "seed1"):
        (tmp_path / run).mkdir()
        shutil.copy(gv.bundled_path("fmnist-toy"), tmp_path / run / "final.pt")
    code = main(["evaluate", "--models", str(tmp_path / "seed0" / "final.pt"), str(tmp_path / "seed1" / "final.pt"),
                 "--n", "20", "--sigmas", "0", "--out", str(tmp_path / "out")])
    assert code == 0
    res = json.load(open(tmp_path / "out" / "eval.json"))
    assert [r["model"] for r in res] == ["seed0/final", "seed1/final"]
    assert "| seed0/final |" in capsys.readouterr().out
