"""Image folders streamed from disk: layouts, transforms, normalisation, training on colour folders, pretrained
weights from a local file, a frozen backbone, bf16 autocast, DDP, and the data package's import structure.

The folders are made on the fly: crops of the bundled background photos (one class per photo), each crop given a
random colour cast (the same distribution for every class, so colour alone does not tell the classes apart).
"""
import ast
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import gatta_viz as gv
from gatta_viz.cli import train as train_cli
from gatta_viz.data import folders
from gatta_viz.data.datasets import eval_batches, load_dataset
from gatta_viz.data.folders import (IMAGENET_MEAN, IMAGENET_STD, FolderData, find_layout, load_folder_for_model,
                                    load_image_folder_splits)
from gatta_viz.data.preprocess import load_image, prepare_image
from gatta_viz.training.train import _autocast_dtype, accuracy, train

BG = os.path.join(os.path.dirname(gv.__file__), "data", "backgrounds")
CLASSES = ("astronaut", "brick", "coffee", "grass", "hubble", "rocket")
TINY = ["--key-dim", "8", "--quiet", "--threads", "1", "--workers", "0", "--widths", "8", "16", "32"]
SMALL = [*TINY, "--blocks", "1", "1", "1"]


def make_folder(root, n_train, n_val, seed=0, width=40, split_dirs=True):
    """Colour crops of the background photos, one class per photo, aspect ratios 0.7-1.4."""
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        photo = Image.open(os.path.join(BG, c + ".png")).convert("L")
        w0, h0 = photo.size
        for split, n in (("train", n_train), ("val", n_val)):
            d = os.path.join(root, split, c) if split_dirs else os.path.join(root, c)
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                cw = int(rng.integers(w0 // 6, w0 // 2))
                ch = min(int(cw * rng.uniform(0.7, 1.4)), h0 - 1)
                x, y = int(rng.integers(0, w0 - cw)), int(rng.integers(0, h0 - ch))
                g = np.asarray(photo.crop((x, y, x + cw, y + ch)).resize((width, max(8, int(width * ch / cw)))), np.float32)
                rgb = g[..., None] * rng.uniform(0.5, 1.2, 3) + rng.uniform(-25, 50, 3)
                Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(os.path.join(d, f"{split}{i:04d}.png"))
    return str(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("colour"), 60, 20)


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """Class folders alone (no train/ or val/): 30 images per class."""
    return make_folder(tmp_path_factory.mktemp("flat"), 30, 0, seed=1, split_dirs=False)


def run_train(out, *extra, base=SMALL):
    return train(train_cli.build_parser().parse_args(["--out", str(out), *base, *extra]))


# ----------------------------------------------------------------------------------------------- layouts
def test_train_val_layout_takes_classes_from_train_and_never_takes_split_folders_as_classes(folder):
    lay = find_layout(folder)
    assert lay.kind == "train/val" and lay.classes == sorted(CLASSES)
    assert len(lay.train_paths) == 6 * 60 and len(lay.val_paths) == 6 * 20
    assert np.bincount(lay.val_labels).tolist() == [20] * 6
    for paths, labels in ((lay.train_paths, lay.train_labels), (lay.val_paths, lay.val_labels)):
        assert all(os.path.basename(os.path.dirname(p)) == lay.classes[y] for p, y in zip(paths, labels))
    assert all("/train/" in p for p in lay.train_paths) and all("/val/" in p for p in lay.val_paths)


def test_val_may_be_called_test_and_a_train_folder_alone_is_held_out(tmp_path, folder):
    root = tmp_path / "t"
    shutil.copytree(os.path.join(folder, "train"), root / "train")
    alone = find_layout(str(root), val_fraction=0.25, seed=3)
    assert alone.kind == "held-out" and len(alone.val_paths) == 6 * 15 and len(alone.train_paths) == 6 * 45
    shutil.copytree(os.path.join(folder, "val"), root / "test")
    lay = find_layout(str(root))
    assert lay.kind == "train/test" and len(lay.val_paths) == 120 and "test" not in lay.classes


def test_held_out_split_is_fixed_by_the_seed_stratified_and_disjoint(flat):
    a, b = find_layout(flat, 0.2, seed=0), find_layout(flat, 0.2, seed=0)
    c = find_layout(flat, 0.2, seed=1)
    assert a.kind == "held-out" and a.classes == sorted(CLASSES)
    assert list(a.val_paths) == list(b.val_paths)  # same seed, same files
    assert set(a.val_paths) != set(c.val_paths)  # another seed, other files
    assert np.bincount(a.val_labels).tolist() == [6] * 6  # round(0.2 * 30) of every class
    assert not set(a.val_paths) & set(a.train_paths) and len(a.val_paths) + len(a.train_paths) == 180
    none = find_layout(flat, 0.0)
    assert len(none.val_paths) == 0 and len(none.train_paths) == 180


def test_bad_layouts_say_what_is_wrong(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="not found"):
        find_layout(str(tmp_path / "nope"))
    only_val = tmp_path / "only_val"
    shutil.copytree(os.path.join(folder, "val"), only_val / "val")
    with pytest.raises(ValueError, match="no train/"):
        find_layout(str(only_val))
    extra = tmp_path / "extra"
    shutil.copytree(os.path.join(folder, "train"), extra / "train")
    shutil.copytree(os.path.join(folder, "val", "brick"), extra / "val" / "zebra")
    with pytest.raises(ValueError, match="zebra.*class the training folder does not have"):
        find_layout(str(extra))
    empty = tmp_path / "empty"
    os.makedirs(empty / "a")
    shutil.copytree(os.path.join(folder, "val", "brick"), empty / "b")
    with pytest.raises(ValueError, match="a holds no images"):
        find_layout(str(empty))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        find_layout(folder, val_fraction=1.0)


# ------------------------------------------------------------------------------------ streaming, transforms
def test_dataset_holds_file_names_only_and_reads_files_when_asked(tmp_path, folder):
    train, val, _ = load_image_folder_splits(folder, 32, normalization="imagenet")
    arrays = [v for v in vars(train).values() if isinstance(v, (np.ndarray, torch.Tensor))]
    assert sum(a.nbytes for a in arrays) < 400 * len(train)  # names and labels, no pixels (32x32x3 = 3,072 bytes)
    assert len(pickle.dumps(train)) < 400 * len(train)  # what each DataLoader worker receives
    # a file removed after listing is read only when its batch comes, and the error names it
    root = tmp_path / "copy"
    shutil.copytree(folder, root)
    tr, _, _ = load_image_folder_splits(str(root), 32, normalization="imagenet")
    victim = str(tr.paths[5])
    os.remove(victim)
    got = tr[5]
    assert got[1] == -1 and victim in got[2]
    with pytest.raises(ValueError, match=os.path.basename(victim)):
        list(tr.batches(16))


def test_eval_transform_is_explains_preparation_and_torchvisions_resize_centre_crop(folder):
    from torchvision import transforms as T

    _, val, _ = load_image_folder_splits(folder, 32)
    rec = val.preprocess
    assert rec["crop"] == "center" and rec["resize"] == round(32 / 0.875) == 37 and rec["size"] == [32, 32]
    tv = T.Compose([T.Resize(rec["resize"]), T.CenterCrop(32)])
    for i in (0, 7, 50, 119):
        x, y, problem = val[i]
        assert problem == "" and y == val.labels_np[i] and x.dtype == torch.uint8 and x.shape == (3, 32, 32)
        img = load_image(str(val.paths[i]))
        shown = prepare_image(img, rec).shown  # what explain and the app feed the model
        assert torch.equal(x, torch.from_numpy(np.round(shown * 255).astype(np.uint8)).permute(2, 0, 1))
        assert torch.equal(x, torch.from_numpy(np.array(tv(img.convert("RGB")))).permute(2, 0, 1))
        assert (x[0].float() - x[2].float()).abs().mean() > 1  # colour kept: channels differ
    # and the model input explain builds is the same normalised tensor as validation's
    xb, _ = next(eval_batches(val, 4))
    assert torch.allclose(val.normalize(xb)[0], prepare_image(load_image(str(val.paths[0])), rec).tensor[0], atol=1e-6)


def test_training_transform_is_a_random_resized_crop_with_flips(folder):
    train, _, _ = load_image_folder_splits(folder, 32, normalization="imagenet")
    torch.manual_seed(0)
    draws = [train[3][0] for _ in range(6)]
    assert all(d.shape == (3, 32, 32) and d.dtype == torch.uint8 for d in draws)
    assert len({d.numpy().tobytes() for d in draws}) == 6  # a new crop every time
    assert not torch.equal(train[3][0], train.with_augment(False)[3][0])
    assert "RandomResizedCrop(32, scale=(0.25, 1))" in train.preprocess["train_transform"]
    no_flip, _, _ = load_image_folder_splits(folder, 32, normalization="imagenet", flip=False)  # --flip 0
    assert [type(t).__name__ for t in no_flip._random_crop().transforms] == ["RandomResizedCrop"]
    assert no_flip.preprocess["train_transform"] == "RandomResizedCrop(32, scale=(0.25, 1))"
    assert [type(t).__name__ for t in train._random_crop().transforms] == ["RandomResizedCrop", "RandomHorizontalFlip"]


def test_normalisation_from_a_sample_matches_a_hand_computation_and_weights_give_imagenets(folder):
    train, val, _ = load_image_folder_splits(folder, 32, seed=0)
    assert train.preprocess == val.preprocess
    # the sample is 500 images: all 360 here, so the estimate equals the mean/std over every evaluation crop
    pix = np.stack([train.with_augment(False)[i][0].numpy() for i in range(len(train))]).astype(np.float64) / 255
    assert np.allclose(train.mean, pix.mean(axis=(0, 2, 3)), atol=1e-9)
    assert np.allclose(train.std, pix.std(axis=(0, 2, 3)), atol=1e-9)
    assert "estimated on 360 training images" in train.preprocess["normalization"]
    small = folders.estimate_normalization(train, n=50, seed=1)
    assert not np.allclose(small[0], train.mean, atol=1e-6)  # a sample of 50: a different (seeded) estimate
    assert folders.estimate_normalization(train, n=50, seed=1) == small
    inet, _, _ = load_image_folder_splits(folder, 32, normalization="imagenet")
    assert inet.mean == IMAGENET_MEAN and inet.std == IMAGENET_STD and "ImageNet" in inet.preprocess["normalization"]


def test_load_dataset_and_evaluation_helpers_take_a_folder(folder):
    val = load_dataset(folder, "test", image_size=32)
    assert isinstance(val, FolderData) and len(val) == 120 and not val.augment
    labels = torch.cat([y for _, y in eval_batches(val, 50, workers=2)])
    assert torch.equal(labels, val.labels)  # two decoding processes, dataset order kept
    rec = val.preprocess
    classes = list(reversed(val.classes))  # a model whose class order differs: labels follow the model's
    same = load_folder_for_model(folder, rec, classes)
    assert len(same) == 120 and [classes[y] for y in same.labels_np[:3]] == [val.classes[y] for y in val.labels_np[:3]]
    direct = load_folder_for_model(os.path.join(folder, "val"), rec, classes)  # the val folder given directly
    assert list(direct.paths) == list(same.paths)
    with pytest.raises(ValueError, match="not classes of the model"):
        load_folder_for_model(folder, rec, classes[:5])


# ------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("builder", ["gatta_compact_resnet", "gatta_toy"])
def test_defaults_stay_finite_and_beat_chance_on_val_within_3_epochs(tmp_path, folder, builder):
    res = run_train(tmp_path, "--model", builder, "--dataset", folder, "--image-size", "32", "--epochs", "3",
                    "--batch-size", "32", base=SMALL if builder == "gatta_compact_resnet" else TINY)
    h = res["history"]
    assert all(np.isfinite(r["train_loss"]) and all(np.isfinite(list(r["alphas"].values()))) for r in h)
    assert h[-1]["test_acc"] >= 0.3, h  # chance is 1/6; with 120 val images 0.3 is 3.9 binomial SEs above it
    lm = gv.load_model(str(tmp_path / "final.pt"))
    assert lm.preprocess["channels"] == 3 and lm.preprocess["crop"] == "center" and lm.classes == sorted(CLASSES)
    assert "val" in lm.meta["layout"]
    # gatta-viz evaluate's path: the checkpoint's own preprocessing on the val folder gives the recorded accuracy
    data = load_folder_for_model(folder, lm.preprocess, lm.classes)
    assert accuracy(lm.model, data)["acc"] == pytest.approx(h[-1]["test_acc"], abs=1e-9)
    # explain's path: a colour file prepared for the model, finite maps
    prep = prepare_image(load_image(str(data.paths[0])), lm.preprocess)
    t = lm.model.trace(prep.tensor)
    assert prep.tensor.shape == (1, 3, 32, 32) and torch.isfinite(t.logits_pass2).all()


def test_held_out_run_records_its_split_and_evaluation_finds_the_same_images(tmp_path, flat, capsys):
    res = run_train(tmp_path, "--dataset", flat, "--val-fraction", "0.25", "--normalize", "imagenet",
                    "--image-size", "32", "--epochs", "1", "--batch-size", "32")
    lm = gv.load_model(str(tmp_path / "final.pt"))
    assert lm.preprocess["mean"] == list(IMAGENET_MEAN) and lm.meta["val_fraction"] == 0.25
    assert "48 of 180 images held out" in lm.meta["layout"]  # round(0.25 * 30) = 8 of each class
    val = load_folder_for_model(flat, lm.preprocess, lm.classes, split="val", val_fraction=0.25, seed=lm.meta["seed"])
    assert len(val) == 48
    assert accuracy(lm.model, val)["acc"] == pytest.approx(res["history"][0]["test_acc"], abs=1e-9)
    # folder options are refused for a named dataset, with a message instead of a traceback
    assert train_cli.main(["--out", str(tmp_path / "x"), *SMALL, "--normalize", "sample", "--epochs", "1"]) == 2
    assert "apply to image folders" in capsys.readouterr().err


def test_local_weights_file_and_frozen_backbone_learn_only_keys_queries_alphas_and_the_new_head(tmp_path, folder):
    import torchvision

    torch.manual_seed(5)
    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    res = run_train(tmp_path / "run", "--model", "gatta_resnet18", "--weights", str(weights), "--freeze-backbone",
                    "--dataset", folder, "--image-size", "32", "--epochs", "1", "--subset", "64", "--batch-size", "32",
                    "--no-eval", base=TINY[:7])
    assert res["kwargs"]["weights"] == str(weights)
    ck = gv.read_checkpoint(str(tmp_path / "run" / "final.pt"))
    assert ck["preprocess"]["mean"] == list(IMAGENET_MEAN)  # the weights' normalisation, not the folder's
    file = torch.load(weights, weights_only=True)
    sd = ck["state_dict"]
    params = {n for n, _ in torchvision.models.resnet18().named_parameters()}
    frozen = [n for n in params if not n.startswith("fc.")]
    assert all(torch.equal(sd["backbone." + n], file[n]) for n in frozen)  # bit-identical after 2 steps
    torch.manual_seed(0)  # what train() built before its first step
    init = gv.build_model(res["builder"], **res["kwargs"]).state_dict()
    assert all(torch.equal(init["backbone." + n], file[n]) for n in frozen)
    assert not torch.equal(sd["backbone.fc.weight"], init["backbone.fc.weight"])  # the new 6-class head learns
    moved = [k for k in sd if k.startswith(("kq.", "alpha.")) and not torch.equal(sd[k], init[k])]
    assert {k.split(".")[0] for k in moved} == {"kq", "alpha"} and len(moved) == len([k for k in sd if k.startswith(("kq.", "alpha."))])
    assert all(v != 0 for v in res["history"][0]["alphas"].values())
    # the checkpoint rebuilds without the weights file
    os.remove(weights)
    assert gv.load_model(str(tmp_path / "run" / "final.pt")).model.backbone.fc.out_features == 6


def test_weights_for_a_builder_without_pretrained_weights_is_refused(tmp_path, folder, capsys):
    code = train_cli.main(["--out", str(tmp_path), *SMALL, "--dataset", folder, "--weights", "x.pt", "--epochs", "1"])
    assert code == 2 and "ResNet builders" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not for resnet18"):
        gv.gatta_resnet18(weights="ResNet50_Weights.IMAGENET1K_V1", num_classes=6, input_size=32)
    import torchvision

    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pt")
    with pytest.raises(ValueError, match="does not fit torchvision's resnet18"):
        gv.gatta_resnet18(weights=str(tmp_path / "r34.pt"), num_classes=6, input_size=32)


def test_amp_trains_in_bfloat16_and_stays_finite(tmp_path, folder):
    args = train_cli.build_parser().parse_args(["--out", "x", "--amp"])
    assert _autocast_dtype(args, torch.device("cpu")) == torch.bfloat16
    model = gv.build_model("gatta_compact_resnet", in_channels=3, num_classes=6, input_size=32, widths=[8, 16, 32],
                           blocks=[1, 1, 1], d=8, alpha_init=0.1)
    seen = []
    handle = model.backbone.layer2.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)).float(), torch.arange(4))
    handle.remove()
    loss.backward()
    assert seen and set(seen) == {torch.bfloat16} and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in [*model.alpha.values(), *model.kq.parameters()])
    res = run_train(tmp_path, "--amp", "--dataset", folder, "--image-size", "32", "--epochs", "2", "--batch-size", "32")
    h = res["history"]
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["test_acc"]) for r in h) and h[1]["train_loss"] < h[0]["train_loss"]
    sd = gv.read_checkpoint(str(tmp_path / "final.pt"))["state_dict"]
    assert all(v.dtype != torch.bfloat16 for v in sd.values())  # autocast leaves the weights in float32


def test_ddp_streams_a_folder_with_a_distributed_sampler(tmp_path, folder):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    cmd = [torchrun, "--nnodes", "1", "--nproc_per_node", "2", "--standalone", "-m", "gatta_viz.cli", "train",
           "--out", str(tmp_path), *SMALL, "--dataset", folder, "--image-size", "32", "--epochs", "1",
           "--batch-size", "32", "--subset", "128", "--check-ranks"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = gv.read_checkpoint(str(tmp_path / "final.pt"))["meta"]
    assert metrics["world_size"] == 2 and metrics["rank_max_diff"]["parameters"] == 0.0
    assert np.isfinite(metrics["history"][0]["test_acc"])


# ------------------------------------------------------------------------------------ package structure
def test_the_data_package_has_no_import_cycle_and_no_import_inside_functions():
    data_dir = os.path.join(os.path.dirname(gv.__file__), "data")
    graph = {}
    for fname in sorted(os.listdir(data_dir)):
        if not fname.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(data_dir, fname)).read())
        mod = fname[:-3]
        graph[mod] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                graph[mod].add(node.module.split(".")[0])
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            inner = [n.module for n in ast.walk(fn) if isinstance(n, ast.ImportFrom) and n.level == 1]
            assert not inner, f"data/{fname}: {fn.name} imports {inner} inside the function"

    def reaches(a, b, seen=()):
        return any(n == b or (n not in seen and reaches(n, b, (*seen, n))) for n in graph.get(a, ()))

    assert not [m for m in graph if reaches(m, m)]
    assert {"clutter", "scenes", "folders"} <= graph["datasets"]
    assert "datasets" not in graph["clutter"] | graph["scenes"] | graph["folders"]


def test_a_folder_checkpoint_opens_in_the_app_on_a_colour_image(tmp_path, folder, monkeypatch):
    from streamlit.testing.v1 import AppTest

    run_train(tmp_path / "run", "--dataset", folder, "--image-size", "32", "--epochs", "1", "--subset", "64",
              "--batch-size", "32", "--no-eval")
    models, samples = tmp_path / "models", tmp_path / "samples"
    models.mkdir()
    samples.mkdir()
    shutil.copy(tmp_path / "run" / "final.pt", models / "colour.pt")
    sample = os.path.join(folder, "val", "coffee", "val0003.png")
    shutil.copy(sample, samples / "coffee.png")
    monkeypatch.setenv("GATTA_VIZ_MODEL_DIR", str(models))
    monkeypatch.setenv("GATTA_VIZ_SAMPLES", str(samples))
    app = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app", "streamlit_app.py")
    at = AppTest.from_file(app, default_timeout=180).run()
    at.selectbox(key="model").set_value("colour.pt").run()
    at.multiselect(key="samples").set_value(["coffee.png"]).run()
    assert not at.exception and not at.error
    lm = gv.load_model(str(models / "colour.pt"))
    with torch.no_grad():
        t = lm.model.trace(prepare_image(load_image(sample), lm.preprocess).tensor)
    top = gv.topk(t.logits_pass2[0], lm.classes, 1)[0]
    assert any(m.value.startswith(f"**Pass 2 (model output)**\n1. {top['label']}: {100 * top['prob']:.1f}%") for m in at.markdown)
