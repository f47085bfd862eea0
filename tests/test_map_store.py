"""The map store (gatta_viz.store, ``gatta-viz maps``): stored arrays equal the model's own trace, the table equals
hand computations, opening reads no map data, a killed run resumes with only the missing chunks, a store made
otherwise is refused naming the field, folders are read chunk by chunk. Multi-process runs: test_map_store_dist.py."""
import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import gatta_viz as gv

zarr = pytest.importorskip("zarr", minversion="3")  # the store needs zarr 3 (Python 3.11+)
from zarr.storage import LocalStore  # noqa: E402
from gatta_viz.store import layout  # noqa: E402
from gatta_viz.store.sources import DatasetSource, dataset_source, folder_source  # noqa: E402
from gatta_viz.store.write import _Writer  # noqa: E402
from cli_run import run_cli  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, CHUNK = 150, 10  # 15 chunks, every one of them one batch


@pytest.fixture(scope="module")
def lm():
    return gv.load_model("fmnist-gatta-resnet")


@pytest.fixture(scope="module")
def test_set():
    return gv.load_fashion_mnist("test")


@pytest.fixture(scope="module")
def ref(lm, tmp_path_factory):
    """The reference store: the first 150 test images, chunks of 10, written in one go."""
    path = str(tmp_path_factory.mktemp("ref") / "ref.zarr")
    return gv.compute_maps(lm, "fashion-mnist", path, n=N, chunk=CHUNK, progress=False)


def arrays_of(group, prefix=""):
    """Every array of a zarr group, by path."""
    out = {}
    for name, node in group.members():
        if isinstance(node, zarr.Group):
            out.update(arrays_of(node, f"{prefix}{name}/"))
        else:
            out[f"{prefix}{name}"] = node[...]
    return out


def assert_same_store(a, b):
    ga, gb = arrays_of(zarr.open_group(a, mode="r")), arrays_of(zarr.open_group(b, mode="r"))
    assert sorted(ga) == sorted(gb)
    for k in ga:
        assert ga[k].dtype == gb[k].dtype and ga[k].tobytes() == gb[k].tobytes(), k


def test_stored_arrays_are_the_trace_of_the_same_images(lm, test_set, ref):
    x = test_set.normalize(test_set.images[:N])
    with torch.no_grad():
        traces = [lm.model.trace(x[i:i + CHUNK]) for i in range(0, N, CHUNK)]
    assert len(ref) == N and ref.complete and ref.layers == ["layer1", "layer2", "layer3"]
    assert ref.dense_layers == ["fc"] and ref.classes == lm.classes
    for layer in ["layer1", "layer2", "layer3", "fc"]:
        by_hand = np.concatenate([(t.layers[layer].alpha_tensor * t.layers[layer].agreement).numpy() for t in traces])
        stored = ref["maps" if layer != "fc" else "dense"][layer]
        assert stored.dtype == np.float16 and stored.shape == by_hand.shape
        np.testing.assert_allclose(stored[:].astype(np.float32), by_hand, rtol=1e-3, atol=1e-4)
        dims = tuple(range(1, by_hand.ndim))
        np.testing.assert_allclose(ref[f"scalars/mean_gain/{layer}"][:], by_hand.mean(axis=dims), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ref[f"scalars/boosted/{layer}"][:], (by_hand > 0).mean(axis=dims).astype(np.float32))
    for name in ("q_avg", "logits_pass1", "logits_pass2"):
        np.testing.assert_allclose(ref[name][:], np.concatenate([getattr(t, name).numpy() for t in traces]), atol=1e-6)
    assert ref["maps"]["layer1"].shape == (N, 28, 28) and ref["maps"]["layer3"].shape == (N, 7, 7)
    np.testing.assert_array_equal(ref["label"][:], test_set.labels[:N].numpy())
    np.testing.assert_array_equal(ref["index"][:], np.arange(N))
    assert ref.done().all() and len(ref.done()) == 15


def test_attributes_record_the_model_data_and_fingerprint(lm, ref):
    a = ref.attrs
    with open(gv.bundled_path("fmnist-gatta-resnet"), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    assert a["format"] == "gatta_viz.maps/1" and a["gatta_viz_version"] == gv.__version__
    assert a["model"] == {"name": "fmnist_gatta_resnet", "checkpoint_sha256": sha, "builder": "gatta_compact_resnet",
                          "hash_of": "checkpoint file"}
    assert a["alphas"] == pytest.approx(lm.model.alphas, abs=1e-7)
    assert a["conv_layers"] == ["layer1", "layer2", "layer3"] and a["dense_layers"] == ["fc"]
    assert a["classes"] == lm.classes and a["d"] == lm.model.d
    assert a["dataset"] == {"name": "fashion-mnist", "split": "test", "n": 10000, "kind": "named", "folder": None,
                            "labels_per_image": 1}
    assert a["preprocess"]["mean"] == [0.286] and a["preprocess"]["std"] == [0.353]
    assert (a["n"], a["chunk"], a["n_chunks"], a["complete"]) == (N, CHUNK, 15, True)
    assert a["fingerprint"] == layout.fingerprint(a) and len(a["fingerprint"]) == 64
    assert list(ref.chunks())[:2] == [(0, 10), (10, 20)] and list(ref.chunks())[-1] == (140, 150)


def test_the_table_is_softmax_argmax_and_the_stored_scalars(ref):
    t = ref.table()
    l1, l2 = ref["logits_pass1"][:].astype(np.float64), ref["logits_pass2"][:].astype(np.float64)
    p1 = np.exp(l1) / np.exp(l1).sum(1, keepdims=True)
    p2 = np.exp(l2) / np.exp(l2).sum(1, keepdims=True)
    label = ref["label"][:]
    assert list(t.index) == list(range(N)) and t.index.name == "row"
    np.testing.assert_array_equal(t["pred_pass1"], p1.argmax(1))
    np.testing.assert_array_equal(t["pred_pass2"], p2.argmax(1))
    np.testing.assert_allclose(t["prob_pass1"], p1.max(1), rtol=1e-9)
    np.testing.assert_allclose(t["prob_pass2"], p2.max(1), rtol=1e-9)
    np.testing.assert_allclose(t["prob_label_pass2"], p2[np.arange(N), label], rtol=1e-9)
    np.testing.assert_array_equal(t["changed"], p1.argmax(1) != p2.argmax(1))
    np.testing.assert_array_equal(t["correct_pass2"], p2.argmax(1) == label)
    assert t["correct_pass2"].mean() > 0.85  # the bundled model is ~93% right on Fashion-MNIST
    np.testing.assert_array_equal(t["index"], np.arange(N))
    for layer in ref.layers + ref.dense_layers:
        np.testing.assert_array_equal(t[f"mean_gain:{layer}"], ref[f"scalars/mean_gain/{layer}"][:])
        m = ref["maps"][layer][:].astype(np.float32) if layer in ref.layers else None
        if m is not None:  # the scalars were taken before the float16 rounding: close to the stored map's
            np.testing.assert_allclose(t[f"mean_gain:{layer}"], m.mean(axis=(1, 2)), atol=2e-4)
            np.testing.assert_allclose(t[f"boosted:{layer}"], (m > 0).mean(axis=(1, 2)), atol=0.02)


def test_the_callers_train_mode_is_kept_and_the_maps_are_eval_mode(lm, ref, tmp_path):
    lm.model.train()
    try:
        ms = gv.compute_maps(lm, "fashion-mnist", str(tmp_path / "t.zarr"), n=20, chunk=CHUNK, progress=False)
        assert lm.model.training and all(m.training for m in lm.model.modules())
    finally:
        lm.model.eval()
    np.testing.assert_array_equal(ms["maps"]["layer2"][:], ref["maps"]["layer2"][:20])


class ReadSpy:
    """Records every key zarr reads from a local store."""

    def __init__(self, monkeypatch):
        self.keys = []
        orig = LocalStore.get

        async def get(store, key, *args, **kwargs):
            self.keys.append(key)
            return await orig(store, key, *args, **kwargs)

        monkeypatch.setattr(LocalStore, "get", get)

    def chunk_reads(self, prefix=""):
        return [k for k in self.keys if "/c/" in k and k.startswith(prefix)]


def test_opening_a_60k_store_reads_no_map_data_and_the_table_reads_no_map(lm, tmp_path, monkeypatch):
    path = str(tmp_path / "big.zarr")
    train = dataset_source("fashion-mnist", "train")
    # rank 0 of 235 independent jobs: the store holds 60,000 rows, only chunk 0 is computed
    gv.compute_maps(lm, train, path, n=60000, chunk=256, rank=0, world_size=235, progress=False)
    spy = ReadSpy(monkeypatch)
    ms = gv.open_maps(path)
    assert len(ms) == 60000 and not ms.complete and ms.layers == ["layer1", "layer2", "layer3"]
    arr = ms["maps"]["layer2"]
    assert arr.shape == (60000, 14, 14) and arr.dtype == np.float16 and ms["q_avg"].shape == (60000, 32)
    assert spy.keys and spy.chunk_reads() == []  # metadata only
    t = ms.table()  # an incomplete store: the written chunk's rows
    assert list(t.index) == list(range(256)) and (t["index"] == np.arange(256)).all()
    assert spy.chunk_reads("maps/") == [] and spy.chunk_reads("dense/") == []
    assert spy.chunk_reads("logits_pass2/") and spy.chunk_reads("scalars/")
    first = arr[0]
    assert spy.chunk_reads("maps/layer2/") == ["maps/layer2/c/0/0/0"] and np.abs(first).max() > 0
    assert float(np.abs(arr[300]).max()) == 0.0  # rows of unwritten chunks are the fill value
    assert ms.done().sum() == 1 and [c for c in ms.chunks(written_only=True)] == [(0, 256)]


def test_a_failure_after_two_chunks_resumes_with_only_the_missing_chunks(lm, ref, tmp_path, monkeypatch):
    path = str(tmp_path / "r.zarr")
    orig_write, written = _Writer.write, []

    def failing(self, c, *args, **kwargs):
        if len(written) == 2:
            raise RuntimeError("injected failure")
        orig_write(self, c, *args, **kwargs)
        written.append(c)

    monkeypatch.setattr(_Writer, "write", failing)
    with pytest.raises(RuntimeError, match="injected"):
        gv.compute_maps(lm, "fashion-mnist", path, n=N, chunk=CHUNK, progress=False)
    half = gv.open_maps(path)
    assert not half.complete and half.done().tolist() == [True, True] + [False] * 13
    monkeypatch.setattr(_Writer, "write", orig_write)
    starts = []
    orig_batch = DatasetSource.batch
    monkeypatch.setattr(DatasetSource, "batch", lambda self, a, b: starts.append(a) or orig_batch(self, a, b))
    ms = gv.compute_maps(lm, "fashion-mnist", path, n=N, chunk=CHUNK, progress=False)
    assert [s for s in starts if s > 0] == list(range(20, N, CHUNK))  # (row 0 once: the shape probe)
    assert ms.complete
    assert_same_store(path, ref.path)


def test_a_killed_cli_run_resumes_with_only_the_missing_chunks(lm, ref, tmp_path, monkeypatch):
    out = str(tmp_path / "k.zarr")
    cmd = [sys.executable, "-m", "gatta_viz.cli", "maps", "--n", str(N), "--chunk", str(CHUNK), "--threads", "1",
           "--out", out, "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not os.path.exists(os.path.join(out, "done", "c", "1")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = gv.open_maps(out).done()
    assert 2 <= done.sum() < 15 and not gv.open_maps(out).complete, proc.stderr.read()  # killed in the middle
    starts = []
    orig_batch = DatasetSource.batch
    monkeypatch.setattr(DatasetSource, "batch", lambda self, a, b: starts.append(a) or orig_batch(self, a, b))
    ms = gv.compute_maps(lm, "fashion-mnist", out, n=N, chunk=CHUNK, progress=False)  # the same settings
    assert starts[1:] == [c * CHUNK for c in np.flatnonzero(~done)]  # (starts[0]: the shape probe)
    assert ms.complete
    assert_same_store(out, ref.path)


@pytest.mark.parametrize("change, field", [
    ({"model": "fmnist-gatta-toy"}, "model (checkpoint sha256 / builder)"),
    ({"n": 30}, "n (number of images): 40 vs 30"),
    ({"chunk": 8}, "chunk (images per chunk): 10 vs 8"),
    ({"split": "train"}, "dataset: n 10000 vs 60000; split 'test' vs 'train'"),
    ({"mean": (0.5,)}, "preprocessing: mean"),
])
def test_a_store_made_otherwise_is_refused_naming_the_field(lm, test_set, tmp_path, change, field):
    path = str(tmp_path / "m.zarr")
    gv.compute_maps(lm, DatasetSource(test_set, "fashion-mnist", "test"), path, n=40, chunk=10, progress=False)
    model = gv.load_model(change["model"]) if "model" in change else lm
    data = test_set if "mean" not in change else gv.ImageData(test_set.images, test_set.labels, test_set.classes,
                                                               change["mean"], test_set.std, "fashion-mnist")
    source = dataset_source("fashion-mnist", "train") if "split" in change else DatasetSource(data, "fashion-mnist", "test")
    kwargs = {"n": change.get("n", 40), "chunk": change.get("chunk", 10), "progress": False}
    with pytest.raises(ValueError) as e:
        gv.compute_maps(model, source, path, **kwargs)
    assert field in str(e.value) and "--overwrite" in str(e.value) and "another --out" in str(e.value)
    assert gv.open_maps(path).attrs["n"] == 40  # untouched
    ms = gv.compute_maps(model, source, path, overwrite=True, **kwargs)
    assert ms.complete and len(ms) == kwargs["n"] and ms.attrs["fingerprint"] == layout.fingerprint(ms.attrs)


def test_plain_cnns_files_foreign_folders_and_too_many_images_are_refused(lm, tmp_path):
    with pytest.raises(ValueError, match="plain CNN"):
        gv.compute_maps(gv.load_model("fmnist-resnet"), "fashion-mnist", str(tmp_path / "p.zarr"), n=4)
    assert not os.path.exists(tmp_path / "p.zarr")
    with pytest.raises(ValueError, match="n=10001 is more than the 10000 images"):
        gv.compute_maps(lm, "fashion-mnist", str(tmp_path / "q.zarr"), n=10001)
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        gv.compute_maps(lm, "fashion-mnist", str(afile), n=4, progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a map store"):
        gv.compute_maps(lm, "fashion-mnist", str(foreign), n=4, overwrite=True, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        gv.MapsConfig(chunk=0)
    with pytest.raises(FileNotFoundError, match="no map store"):
        gv.open_maps(str(tmp_path / "nothing.zarr"))


def _write_pngs(folder, images):
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = os.path.join(folder, f"im{i:02d}.png")
        Image.fromarray(img[0].numpy()).save(p)
        paths.append(p)
    return paths


def test_folders_are_decoded_chunk_by_chunk_as_prepare_image_does(lm, test_set, tmp_path, monkeypatch):
    from gatta_viz.data import preprocess

    root = tmp_path / "imgs"
    trousers = _write_pngs(str(root / "Trouser"), test_set.images[:7])
    bags = _write_pngs(str(root / "Bag"), test_set.images[7:12])
    decoded, at_write = [], []
    orig_load = preprocess.load_image
    monkeypatch.setattr(preprocess, "load_image", lambda p, *a, **k: decoded.append(p) or orig_load(p, *a, **k))
    orig_write = _Writer.write
    monkeypatch.setattr(_Writer, "write", lambda self, *a, **k: at_write.append(len(decoded)) or orig_write(self, *a, **k))
    src = folder_source(str(root), lm.classes, lm.preprocess)
    ms = gv.compute_maps(lm, src, str(tmp_path / "f.zarr"), chunk=4, progress=False)
    assert at_write == [1 + 4, 1 + 8, 1 + 12]  # the shape probe's image, then one chunk of images per write
    order = bags + trousers  # class folders sorted by name, files sorted in each
    prepared = [gv.prepare_image(orig_load(p), lm.preprocess) for p in order]
    with torch.no_grad():
        t = lm.model.trace(torch.cat([p.tensor for p in prepared]))
    np.testing.assert_allclose(ms["q_avg"][:], t.q_avg.numpy(), atol=1e-5)
    np.testing.assert_array_equal(ms["label"][:], [lm.classes.index("Bag")] * 5 + [lm.classes.index("Trouser")] * 7)
    ds = ms.attrs["dataset"]
    assert ds["kind"] == "image-folder" and ds["folder"] == str(root) and ds["n"] == 12
    assert ms.attrs["preprocess"]["function"] == "gatta_viz.data.preprocess.prepare_image"
    np.testing.assert_allclose(ms.source().shown(3), prepared[3].shown)
    # a folder of files in any layout: every image, label -1, sorted by path
    (root / "misc").mkdir()
    extra = _write_pngs(str(root / "misc" / "deep"), test_set.images[12:14])
    files = gv.compute_maps(lm, folder_source(str(root), lm.classes, lm.preprocess), str(tmp_path / "g.zarr"),
                            chunk=5, progress=False)
    assert files.attrs["dataset"]["kind"] == "files" and len(files) == 14
    assert (files["label"][:] == -1).all() and files.table()["prob_label_pass2"].isna().all()
    with torch.no_grad():
        t = lm.model.trace(gv.prepare_image(orig_load(extra[1]), lm.preprocess).tensor)
    # os.walk order, sorted: Bag/ (5), Trouser/ (7), misc/deep/ (2)
    np.testing.assert_allclose(files["logits_pass2"][13], t.logits_pass2[0].numpy(), atol=1e-5)


def test_sources_follow_the_checkpoint_and_a_train_val_folder_layout(pairs_test_set, test_set, tmp_path, monkeypatch):
    from gatta_viz.data import datasets
    from gatta_viz.store.sources import source_for_model

    pairs = gv.load_model("fmnist-pairs-gatta-resnet")
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split, root=None: asked.append((name, split)) or pairs_test_set)
    src = source_for_model(pairs)  # no data set given: the one its checkpoint records, normalised as it records
    assert asked == [("fmnist-pairs", "test")] and src.describe()["name"] == "fmnist-pairs"
    assert src.preprocess()["mean"] == pairs.preprocess["mean"] and src.labels_per_image == 2
    with pytest.raises(ValueError, match="takes 28x28 images with 1 channel"):
        source_for_model(gv.load_model("fmnist-gatta-toy"), "fmnist-pairs")
    root = tmp_path / "split"
    train = _write_pngs(str(root / "train" / "Bag"), test_set.images[:3])
    val = _write_pngs(str(root / "val" / "Bag"), test_set.images[3:5])
    lm = gv.load_model("fmnist-gatta-toy")
    for split, files in (("test", val), ("train", train)):
        src = folder_source(str(root), lm.classes, lm.preprocess, split)
        assert list(src.paths) == files and src.kind == "image-folder" and src.describe()["split"] == split


def test_scenes_store_both_items_labels(pairs_test_set, tmp_path):
    pairs = gv.load_model("fmnist-pairs-gatta-resnet")
    ms = gv.compute_maps(pairs, DatasetSource(pairs_test_set, "fmnist-pairs", "test"), str(tmp_path / "s.zarr"), n=24,
                         chunk=8, progress=False)
    np.testing.assert_array_equal(ms["labels"][:], pairs_test_set.labels[:24].numpy())
    assert (ms["label"][:] == -1).all() and ms.attrs["dataset"]["labels_per_image"] == 2
    t = ms.table()
    np.testing.assert_array_equal(t["label_1"], pairs_test_set.labels[:24, 1].numpy())
    items = pairs_test_set.labels[:24].numpy()
    np.testing.assert_array_equal(t["correct_pass2"], (items == t["pred_pass2"].to_numpy()[:, None]).any(1))
    assert ms["maps"]["layer1"].shape[0] == 24


@pytest.mark.parametrize("argv, message", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--n", "0"], "argument --n: must be >= 1, got 0"),
    (["--n", "10001"], "--n 10001 is more than the 10000 images of fashion-mnist (test split)"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--model", "fmnist-resnet"], "plain CNN"),
    (["--labels", "none"], "--labels applies to --folder only"),
    (["--chunk", "0"], "a chunk size must be between 1 and 1000000, got 0"),
    (["--folder", "/nonexistent/imgs"], "no such folder: /nonexistent/imgs"),
])
def test_the_cli_refuses_bad_input_in_one_line(argv, message, tmp_path, capsys):
    code, out, err = run_cli(["maps", "--out", str(tmp_path / "x.zarr"), *argv], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "x.zarr")


def test_the_cli_writes_refuses_another_n_and_overwrites(ref, tmp_path, capsys):
    out = str(tmp_path / "c.zarr")
    code, stdout, err = run_cli(["maps", "--n", "20", "--chunk", "10", "--out", out, "--no-progress"], capsys)
    assert code == 0 and "20 images of fashion-mnist" in stdout and "complete" in stdout
    np.testing.assert_array_equal(gv.open_maps(out)["q_avg"][:], ref["q_avg"][:20])
    code, _, err = run_cli(["maps", "--n", "30", "--chunk", "10", "--out", out], capsys)
    assert code == 2 and "n (number of images): 20 vs 30" in err and "--overwrite" in err
    code, _, err = run_cli(["maps", "--n", "30", "--chunk", "10", "--out", out, "--overwrite", "--no-progress"], capsys)
    assert code == 0 and len(gv.open_maps(out)) == 30
    code, _, err = run_cli(["maps", "--out", os.path.join(REPO, "README.md")], capsys)
    assert code == 2 and "exists and is not a folder" in err
