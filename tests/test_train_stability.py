"""Training stability: gradient clipping (on by default), the non-finite guard, the per-layer size of the gain term
in metrics.json, and the train command's validation (ranges, devices, run folders, resume, Ctrl-C)."""
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

import gatta_viz as gv
from gatta_viz.cli import main as cli_main
from gatta_viz.cli import train as train_cli
from gatta_viz.training import stability, train as train_mod
from gatta_viz.training.stability import (DIVERGED_LOSS, NonFiniteError, TrainForward, check_finite_state, check_step,
                                          clip_gradients, display_name, first_nonfinite_activation)
from gatta_viz.training.train import train

SMALL = ["--widths", "8", "16", "32", "--blocks", "1", "1", "1", "--key-dim", "8", "--quiet", "--threads", "1"]


def run_train(out, *extra):
    return train(train_cli.build_parser().parse_args(["--out", str(out), *SMALL, *extra]))


def small_model(seed=0):
    torch.manual_seed(seed)
    return gv.build_model("gatta_compact_resnet", widths=[8, 16, 32], blocks=[1, 1, 1], d=8)


# ---------------------------------------------------------------- units
def test_clip_gradients_scales_to_the_norm_and_zero_leaves_gradients_alone():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])
    norm = clip_gradients([a, b], 1.0)
    assert float(norm) == pytest.approx(5.0)  # the norm before clipping
    assert a.grad.item() == pytest.approx(0.6) and b.grad.item() == pytest.approx(0.8)
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])
    assert float(clip_gradients([a, b], 0.0)) == pytest.approx(5.0)
    assert a.grad.item() == 3.0 and b.grad.item() == 4.0
    a.grad = torch.tensor([float("nan")])
    assert math.isnan(float(clip_gradients([a, b], 0.0)))


def test_display_names_put_the_layer_first():
    assert display_name("alpha.layer3") == "layer3.alpha"
    assert display_name("alpha.layer3__0") == "layer3.0.alpha"
    assert display_name("kq.layer2.key.weight") == "layer2.kq.key.weight"
    assert display_name("backbone.fc.weight") == "backbone.fc.weight"


def test_train_forward_returns_the_logits_and_the_largest_gain_term_per_layer():
    model = small_model().train()
    with torch.no_grad():
        for i, n in enumerate(model.layer_names):
            model.alpha_of(n).fill_(0.1 * (i + 1) * (-1) ** i)
    x = torch.randn(4, 1, 28, 28)
    torch.manual_seed(1)
    logits, gain = TrainForward(model)(x)
    with torch.no_grad():
        t = model.trace(x)
    assert torch.allclose(logits, t.logits_pass2, atol=1e-5)
    for i, n in enumerate(model.layer_names):  # |alpha| x max |agreement|, by hand
        expect = 0.1 * (i + 1) * t.layers[n].agreement.abs().max().item()
        assert gain[i].item() == pytest.approx(expect, rel=1e-4)
    plain = gv.build_model("compact_resnet", widths=[8, 16, 32], blocks=[1, 1, 1])
    out, none = TrainForward(plain)(x)
    assert none is None and out.shape == (4, 10)


def test_check_step_passes_finite_steps_and_names_the_first_bad_tensor():
    model = small_model()
    names = model.layer_names
    gain = torch.tensor([0.1, 0.2, 3.0, 0.4])
    assert check_step(model, torch.tensor(2.3), torch.tensor(1.5), 1, 1, gain, names) == pytest.approx((2.3, 1.5))
    with pytest.raises(NonFiniteError, match=r"epoch 2, step 7: loss \(.*largest \|alpha x agreement\| 3 in layer3"):
        check_step(model, torch.tensor(float("nan")), torch.tensor(1.0), 2, 7, gain, names)
    with torch.no_grad():
        model.alpha_of("layer3").fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="epoch 1, step 3: layer3.alpha") as e:
        check_step(model, torch.tensor(float("nan")), torch.tensor(float("nan")), 1, 3)
    assert (e.value.epoch, e.value.step, e.value.tensor, e.value.kind) == (1, 3, "layer3.alpha", "non-finite")
    with pytest.raises(NonFiniteError, match="layer3.alpha"):
        check_finite_state(model, 4, 10)
    healthy = small_model()
    with pytest.raises(NonFiniteError, match="diverged at epoch 1, step 2: loss above") as e:
        check_step(healthy, torch.tensor(DIVERGED_LOSS * 2), torch.tensor(1.0), 1, 2)
    assert e.value.kind == "diverged"
    p = next(healthy.parameters())
    p.grad = torch.full_like(p, float("nan"))
    with pytest.raises(NonFiniteError, match=r"gradient of backbone\.conv1\.weight|gradient of backbone\.stem"):
        check_step(healthy, torch.tensor(1.0), torch.tensor(float("nan")), 1, 1)
    check_finite_state(healthy, 1, 1)  # finite weights pass


def test_first_nonfinite_activation_names_the_module():
    model = small_model().train()
    x = torch.randn(2, 1, 28, 28)
    assert first_nonfinite_activation(model, x) is None
    named = dict(model.backbone.named_modules())
    conv = next(n for n, m in named.items() if n.startswith("layer2") and isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        named[conv].weight.fill_(float("inf"))
    where = first_nonfinite_activation(model, x)
    assert where.startswith("pass-1 output of layer2")


# ---------------------------------------------------------------- the training loop
def test_clipping_is_on_by_default_and_zero_turns_it_off(tmp_path):
    assert train_cli.build_parser().parse_args(["--out", "x"]).clip_grad == stability.CLIP_GRAD > 0
    common = ["--epochs", "1", "--subset", "64", "--batch-size", "32", "--no-eval", "--no-augment"]
    tiny = run_train(tmp_path / "tiny", *common, "--clip-grad", "0.01")["history"][0]
    off = run_train(tmp_path / "off", *common, "--clip-grad", "0")["history"][0]
    default = run_train(tmp_path / "default", *common)["history"][0]
    assert tiny["clipped_fraction"] == 1.0 and off["clipped_fraction"] == 0.0
    assert tiny["grad_norm_max"] > 0.01
    # the first step is the same in all runs; what follows differs only by the clipping
    a = gv.read_checkpoint(str(tmp_path / "tiny" / "final.pt"))["state_dict"]
    b = gv.read_checkpoint(str(tmp_path / "off" / "final.pt"))["state_dict"]
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) > 1e-3
    # the default run's clipping is counted against the default bound
    assert (default["clipped_fraction"] > 0) == (default["grad_norm_max"] > stability.CLIP_GRAD)
    meta = json.load(open(tmp_path / "default" / "metrics.json"))
    assert meta["args"]["clip_grad"] == stability.CLIP_GRAD


def test_metrics_log_the_largest_alpha_x_agreement_per_layer(tmp_path):
    # one step on 64 images with alpha 0.5 everywhere and a negligible lr: the logged value must equal
    # |0.5| x max |agreement| of the initial model on those 64 images (train mode, batch statistics)
    run_train(tmp_path, "--epochs", "1", "--subset", "64", "--batch-size", "64", "--no-eval", "--no-augment",
              "--alpha-init", "0.5", "--lr", "1e-9")
    metrics = json.load(open(tmp_path / "metrics.json"))
    logged = metrics["history"][0]["max_alpha_x_agreement"]
    assert set(logged) == {"layer1", "layer2", "layer3", "fc"}
    torch.manual_seed(0)
    model = gv.build_model(metrics["builder"], **metrics["kwargs"]).train()
    data = gv.load_fashion_mnist("train").subset(64)
    with torch.no_grad():
        t = model.trace(data.normalize(data.images))
    for n, v in logged.items():
        assert v == pytest.approx(0.5 * t.layers[n].agreement.abs().max().item(), rel=1e-3, abs=1e-6)


def test_forced_divergence_stops_loudly_without_final_pt(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli_main(["train", "--out", str(out), *SMALL, "--epochs", "2", "--subset", "256", "--batch-size", "32",
                     "--lr", "50", "--no-eval"])
    err = capsys.readouterr().err
    assert code == 1
    line, = err.strip().splitlines()
    assert re.search(r"training (went non-finite|diverged) at epoch 1, step \d+: ", line)
    assert "no checkpoint was written" in line and "Traceback" not in err
    assert not (out / "final.pt").exists() and not (out / "last.pt").exists()
    stopped = json.load(open(out / "metrics.json"))["stopped"]
    assert stopped["epoch"] == 1 and stopped["last_good_epoch"] is None


def _fail_at(monkeypatch, call, what):
    """Make the ``call``-th training step (1-based) bad: "nan" (its loss is NaN), "alpha" (layer3's alpha becomes
    NaN after that step's checks, so the step itself is finite) or "interrupt" (KeyboardInterrupt)."""
    real_loss, real_check = train_mod.loss_fn, train_mod.check_step
    count = {"n": 0}

    def loss_fn(logits, labels, smoothing=0.0):
        count["n"] += 1
        loss = real_loss(logits, labels, smoothing)
        if count["n"] == call and what == "nan":
            return loss * float("nan")
        if count["n"] == call and what == "interrupt":
            raise KeyboardInterrupt
        return loss

    def check_step(model, *a, **k):  # after the backward, before the optimizer step
        out = real_check(model, *a, **k)
        if count["n"] == call and what == "alpha":
            with torch.no_grad():
                model.alpha_of("layer3").fill_(float("nan"))
        return out

    monkeypatch.setattr(train_mod, "loss_fn", loss_fn)
    monkeypatch.setattr(train_mod, "check_step", check_step)


@pytest.mark.parametrize("what,tensor", [("nan", "loss"), ("alpha", "layer3.alpha")])
def test_guard_keeps_the_last_finite_epoch(tmp_path, monkeypatch, what, tensor):
    # 64 images, batch 32: 2 steps per epoch; step 2 of epoch 2 (call 4) goes bad
    _fail_at(monkeypatch, 4, what)
    with pytest.raises(NonFiniteError) as e:
        run_train(tmp_path, "--epochs", "3", "--subset", "64", "--batch-size", "32", "--no-eval")
    assert e.value.epoch == 2 and e.value.tensor == tensor
    # a NaN loss is caught at its step; a NaN alpha set after a finite step at the end-of-epoch check
    assert e.value.step == 2 and e.value.last_good_epoch == 1
    assert not (tmp_path / "final.pt").exists()
    last = gv.read_checkpoint(str(tmp_path / "last.pt"))
    assert last["train_state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    metrics = json.load(open(tmp_path / "metrics.json"))
    assert [r["epoch"] for r in metrics["history"]] == [1]
    assert metrics["stopped"]["tensor"] == tensor and metrics["stopped"]["last_good_epoch"] == 1


def test_ctrl_c_is_one_line_exit_130_and_resume_recovers(tmp_path, monkeypatch, capsys):
    _fail_at(monkeypatch, 3, "interrupt")  # first step of epoch 2
    out = tmp_path / "run"
    args = ["train", "--out", str(out), *SMALL, "--epochs", "2", "--subset", "64", "--batch-size", "32", "--no-eval"]
    assert cli_main(args) == 130
    err = capsys.readouterr().err
    assert err.strip() == "gatta-viz train: interrupted; resume with --resume"
    assert gv.read_checkpoint(str(out / "last.pt"))["train_state"]["epoch"] == 1
    assert not (out / "final.pt").exists()
    assert [r["epoch"] for r in json.load(open(out / "metrics.json"))["history"]] == [1]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp") or ".tmp" in f]
    monkeypatch.undo()
    assert cli_main(args + ["--resume"]) == 0
    assert gv.read_checkpoint(str(out / "final.pt"))["meta"]["history"][-1]["epoch"] == 2


# ---------------------------------------------------------------- run folders and resume
def test_existing_run_folder_is_refused_without_resume(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path), *SMALL, "--epochs", "1", "--subset", "32", "--no-eval"]
    assert cli_main(args) == 0
    before = {f: os.path.getmtime(tmp_path / f) for f in ("last.pt", "final.pt", "metrics.json")}
    capsys.readouterr()
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "holds a training run" in err and "--resume" in err and "another --out" in err
    assert len(err.strip().splitlines()) == 1
    assert before == {f: os.path.getmtime(tmp_path / f) for f in before}  # nothing touched
    assert cli_main(args + ["--resume"]) == 0  # a finished run: nothing left to train, final.pt stays consistent


def test_resume_refuses_an_exported_checkpoint_and_another_schedule(tmp_path, capsys):
    run_train(tmp_path / "run", "--epochs", "2", "--max-epochs-this-run", "1", "--subset", "32", "--no-eval")
    assert cli_main(["export", str(tmp_path / "run" / "last.pt"), str(tmp_path / "small.pt")]) == 0
    os.replace(tmp_path / "small.pt", tmp_path / "run" / "last.pt")
    capsys.readouterr()
    args = ["train", "--out", str(tmp_path / "run"), *SMALL, "--epochs", "2", "--subset", "32", "--no-eval", "--resume"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "has no training state" in err and "Traceback" not in err
    run_train(tmp_path / "b", "--epochs", "2", "--max-epochs-this-run", "1", "--subset", "32", "--no-eval")
    with pytest.raises(ValueError, match="set up for 2 epochs"):
        run_train(tmp_path / "b", "--epochs", "3", "--subset", "32", "--no-eval", "--resume")


# ---------------------------------------------------------------- validation at the edge
HOSTILE = [
    (["--batch-size", "0"], "--batch-size"), (["--epochs", "0"], "--epochs"),
    (["--max-epochs-this-run", "-1"], "--max-epochs-this-run"), (["--pad", "-1"], "--pad"), (["--flip", "5"], "--flip"),
    (["--subset", "-1"], "--subset"), (["--test-subset", "-3"], "--test-subset"),
    (["--label-smoothing", "2"], "--label-smoothing"), (["--widths", "0"], "--widths"), (["--blocks", "0"], "--blocks"),
    (["--lr", "0"], "--lr"), (["--lr", "nan"], "--lr"), (["--wd", "-1"], "--wd"), (["--warmup", "1.5"], "--warmup"),
    (["--clip-grad", "-1"], "--clip-grad"), (["--clip-grad", "inf"], "--clip-grad"), (["--key-dim", "0"], "--key-dim"),
    (["--layers", "layer1", "layer1"], "--layers"), (["--seed", "-1"], "--seed"), (["--threads", "-1"], "--threads"),
    (["--alpha-init", "nan"], "--alpha-init"), (["--device", "bogus"], "--device"), (["--model", ""], "--model"),
]


@pytest.mark.parametrize("extra,flag", HOSTILE, ids=[" ".join(h[0]) for h in HOSTILE])
def test_hostile_train_options_are_refused_in_one_line(tmp_path, capsys, extra, flag):
    with pytest.raises(SystemExit) as e:
        cli_main(["train", "--out", str(tmp_path / "run"), *extra])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and flag in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["train", "--out", str(tmp_path), "--device", "cuda"])
    assert e.value.code == 2 and "no CUDA GPU" in capsys.readouterr().err


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit) as e:
        cli_main(["train", "--out", str(f)])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err


def test_rarely_used_flags_take_effect(tmp_path):
    out = tmp_path / "run"
    res = run_train(out, "--model", "gatta_compact_resnet", "--dataset", "fashion-mnist", "--data-root",
                    "/usr/share/datasets/fashion-mnist", "--layers", "layer2", "fc", "--stem-stride", "2",
                    "--norm-stats", "shared", "--detach-pass1", "--device", "cpu", "--channels-last", "--seed", "3",
                    "--warmup", "0.5", "--wd", "0", "--label-smoothing", "0", "--pad", "0", "--flip", "0",
                    "--epochs", "1", "--subset", "64", "--batch-size", "32", "--test-subset", "50")
    metrics = json.load(open(out / "metrics.json"))
    assert set(metrics["history"][0]["alphas"]) == set(metrics["history"][0]["max_alpha_x_agreement"]) == {"layer2", "fc"}
    assert res["kwargs"]["stem_stride"] == 2 and metrics["seed"] == 3
    loaded = gv.load_checkpoint(str(out / "final.pt"))
    assert loaded.model.norm_stats == "shared" and loaded.model.layer_names == ["layer2", "fc"]
    assert 0 <= metrics["history"][0]["test_acc"] <= 1
    assert {k: metrics["args"][k] for k in ("warmup", "wd", "label_smoothing", "pad", "flip", "detach_pass1")} == \
        {"warmup": 0.5, "wd": 0.0, "label_smoothing": 0.0, "pad": 0, "flip": 0, "detach_pass1": True}
    assert math.isfinite(metrics["history"][0]["train_loss"])  # warm-up 0.5 of 2 steps: a one-cycle edge case


def test_every_train_flag_appears_in_the_train_tests():
    """Each option of `gatta-viz train` runs in at least one test of tests/test_train*.py or the image-folder tests."""
    here = os.path.dirname(__file__)
    text = "".join(open(os.path.join(here, f)).read() for f in os.listdir(here)
                   if f.startswith(("test_train", "test_image_folders")) and f.endswith(".py"))
    flags = [s for a in train_cli.build_parser()._actions for s in a.option_strings if s.startswith("--") and s != "--help"]
    missing = [f for f in flags if f'"{f}"' not in text]
    assert not missing, f"train options no test runs: {missing}"
