"""Training: loss goes down, resume continues, DDP (torchrun, gloo) keeps ranks identical, checkpoints load safely."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import gatta_viz as gv
from gatta_viz.cli import train as train_cli
from gatta_viz.models.checkpoint import CHECKPOINT_FORMAT
from gatta_viz.training.train import train

SMALL = ["--widths", "8", "16", "32", "--blocks", "1", "1", "1", "--key-dim", "8", "--quiet", "--threads", "1"]


def run_train(out, *extra):
    args = train_cli.build_parser().parse_args(["--out", str(out), *SMALL, *extra])
    return train(args)


def test_two_epochs_on_512_images_lower_the_loss(tmp_path):
    res = run_train(tmp_path, "--epochs", "2", "--subset", "512", "--test-subset", "200", "--lr", "0.05", "--no-augment",
                    "--batch-size", "32")
    h = res["history"]
    assert [r["epoch"] for r in h] == [1, 2]
    # loss of the trained model on the training subset vs the same model at initialisation
    data = gv.load_fashion_mnist("train").subset(512)
    x, y = data.tensors()
    trained = gv.load_checkpoint(os.path.join(tmp_path, "final.pt")).model.train()  # batch statistics: 32 steps
    torch.manual_seed(0)                                                                # are too few for running ones
    init = gv.build_model(res["builder"], **res["kwargs"]).train()
    with torch.no_grad():
        loss_init = torch.nn.functional.cross_entropy(init(x), y).item()
        loss_trained = torch.nn.functional.cross_entropy(trained(x), y).item()
    assert loss_trained < 0.8 * loss_init
    assert h[1]["train_loss"] < h[0]["train_loss"]
    metrics = json.load(open(tmp_path / "metrics.json"))
    assert metrics["builder"] == "gatta_compact_resnet" and len(metrics["history"]) == 2
    assert set(metrics["history"][1]["alphas"]) == {"layer1", "layer2", "layer3", "fc"}


def test_resume_continues_epoch_count_and_matches_uninterrupted_run(tmp_path):
    common = ["--epochs", "2", "--subset", "256", "--test-subset", "100", "--no-eval"]
    full = run_train(tmp_path / "full", *common)
    part = run_train(tmp_path / "part", *common, "--max-epochs-this-run", "1")  # as if killed after epoch 1
    assert [r["epoch"] for r in part["history"]] == [1] and not part["finished"]
    assert not os.path.exists(tmp_path / "part" / "final.pt")
    resumed = run_train(tmp_path / "part", *common, "--resume")
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    a = gv.read_checkpoint(str(tmp_path / "full" / "final.pt"))["state_dict"]
    b = gv.read_checkpoint(str(tmp_path / "part" / "final.pt"))["state_dict"]
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-5


def test_export_drops_resume_state_and_keeps_the_model(tmp_path):
    run_train(tmp_path / "run", "--epochs", "1", "--subset", "128", "--no-eval")
    src = tmp_path / "run" / "last.pt"
    assert "train_state" in gv.read_checkpoint(str(src))
    from gatta_viz.cli import main
    assert main(["export", str(src), str(tmp_path / "small.pt")]) == 0
    small = gv.read_checkpoint(str(tmp_path / "small.pt"))
    assert "train_state" not in small
    assert os.path.getsize(tmp_path / "small.pt") < os.path.getsize(src)
    full = gv.read_checkpoint(str(src))
    assert small["state_dict"].keys() == full["state_dict"].keys()
    assert all(torch.equal(full["state_dict"][k], v) for k, v in small["state_dict"].items())
    assert small["preprocess"]["background"] == "dark" and small["classes"] == full["classes"]
    with pytest.raises(SystemExit) as e:  # refused while parsing: one line, exit 2
        main(["export", str(tmp_path / "nope.pt"), str(tmp_path / "x.pt")])
    assert e.value.code == 2


def test_baseline_flag_builds_same_backbone_without_gatta(tmp_path):
    res = run_train(tmp_path, "--baseline", "--epochs", "1", "--subset", "128", "--no-eval")
    assert res["builder"] == "compact_resnet"
    loaded = gv.load_checkpoint(str(tmp_path / "final.pt"))
    assert not loaded.is_gatta and loaded.kwargs["widths"] == [8, 16, 32]


def test_ddp_two_processes_give_identical_weights(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torchrun not found next to the interpreter"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "gatta_viz.cli", "train", "--out", str(tmp_path),
           *SMALL, "--epochs", "1", "--subset", "256", "--test-subset", "100", "--batch-size", "64", "--check-ranks"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.load(open(tmp_path / "metrics.json"))
    assert metrics["world_size"] == 2
    assert metrics["rank_max_diff"]["parameters"] == 0.0
    # each rank saw half of the 256 images: 2 steps of 32 per rank, 4 global batches of 64
    assert metrics["history"][0]["img_per_s"] > 0
    lm = gv.load_checkpoint(str(tmp_path / "final.pt"))
    assert lm.is_gatta and lm.model.norm_stats == "per_pass"
    named = dict(lm.model.backbone.named_modules())
    for n in lm.model.pass2_stats.names:  # rank 0's pass-2 statistics were trained and saved beside pass 1's
        assert int(lm.model.pass2_stats.of(n).num_batches_tracked) == int(named[n].num_batches_tracked) == 4


def test_corrupted_and_foreign_checkpoints_give_clear_errors(tmp_path):
    good = gv.bundled_path("fmnist-gatta-resnet")
    trunc = tmp_path / "truncated.pt"
    trunc.write_bytes(open(good, "rb").read()[:5000])
    with pytest.raises(ValueError, match="corrupt, truncated or not a torch file"):
        gv.load_checkpoint(str(trunc))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match="corrupt, truncated"):
        gv.load_checkpoint(str(junk))
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not a gatta_viz checkpoint"):
        gv.load_checkpoint(str(foreign))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        gv.load_checkpoint(str(tmp_path / "nope.pt"))
    # right format, wrong architecture
    obj = gv.read_checkpoint(good)
    obj["kwargs"]["widths"] = [4, 8, 16]
    torch.save(obj, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="does not fit builder"):
        gv.load_checkpoint(str(tmp_path / "mismatch.pt"))


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "x": Evil()}, path)
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        gv.load_checkpoint(str(path))
    assert not (tmp_path / "pwned").exists()


def test_missing_dataset_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        gv.load_fashion_mnist("test", root=str(tmp_path))
