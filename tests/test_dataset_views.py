"""Views that read a map store (gatta_viz.compute.dataset_views, gatta_viz.render.dataset_figures, the app's Dataset
view): the q_avg embedding (UMAP, and PCA when umap-learn cannot be imported), per-class mean gain maps against a
hand computation over the stored arrays and read one chunk at a time, the table's filters, one image's record,
the figures as files, and the Dataset page (stores listed by name, filters, an image's maps, a broken store named).
Every store is written by the real writer (gv.compute_maps) from the bundled Fashion-MNIST ResNet."""
import os
import shutil
import sys

import numpy as np
import pytest
import zarr
from PIL import Image
from scipy.special import softmax
from streamlit.testing.v1 import AppTest

import gatta_viz as gv
from gatta_viz.app import dataset as app_dataset
from gatta_viz.compute import dataset_views as dv
from gatta_viz.render import dataset_figures as dfig
from gatta_viz.render.images import colorize

APP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app", "streamlit_app.py")
N, CHUNK = 200, 64  # 4 chunks, the last one partial


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("stores") / "fmnist.zarr"
    gv.compute_maps(gv.load_model("fmnist-gatta-resnet"), "fashion-mnist", str(path), n=N, chunk=CHUNK, progress=False)
    return path


@pytest.fixture(scope="module")
def ms(store):
    return gv.open_maps(str(store))


@pytest.fixture(scope="module")
def arrays(ms):
    """Every array of the small store, read whole (the reference the chunk-wise views are checked against)."""
    out = {k: np.asarray(ms[k][:]) for k in ("q_avg", "logits_pass1", "logits_pass2", "label", "index")}
    out["maps"] = {n: np.asarray(ms["maps"][n][:], dtype=np.float64) for n in ms.layers}
    out["dense"] = {n: np.asarray(ms["dense"][n][:], dtype=np.float32) for n in ms.dense_layers}
    return out


class Recorder:
    """A map store whose arrays note every slice read from them."""

    def __init__(self, ms):
        self._ms, self.reads = ms, []

    def __getattr__(self, name):
        return getattr(self._ms, name)

    def __len__(self):
        return len(self._ms)

    def __getitem__(self, key):
        inner = self._ms[key]
        if key == "maps":
            return {n: RecordedArray(inner[n], f"maps/{n}", self.reads) for n in inner}
        return RecordedArray(inner, key, self.reads)


class RecordedArray:
    def __init__(self, arr, name, reads):
        self._arr, self._name, self._reads = arr, name, reads
        self.shape, self.dtype = arr.shape, arr.dtype

    def __getitem__(self, sl):
        self._reads.append((self._name, sl))
        return self._arr[sl]


# ------------------------------------------------------------------------------------------------ class means
def test_class_means_equal_a_hand_computation_over_the_stored_arrays(ms, arrays):
    k = len(ms.classes)
    cm = gv.class_mean_maps(ms)
    assert list(cm.maps) == ms.layers == ["layer1", "layer2", "layer3"] and cm.by == "label"
    assert cm.counts.tolist() == np.bincount(arrays["label"], minlength=k).tolist() and cm.counts.sum() == N
    for n in ms.layers:
        assert cm.maps[n].shape == (k, *arrays["maps"][n].shape[1:]) and cm.maps[n].dtype == np.float32
        for c in range(k):
            np.testing.assert_allclose(cm.maps[n][c], arrays["maps"][n][arrays["label"] == c].mean(0), atol=1e-6)
    assert cm.alphas["layer2"] == pytest.approx(ms.attrs["alphas"]["layer2"])
    # grouped by the pass-2 prediction, only the images pass 2 changed
    changed = arrays["logits_pass1"].argmax(1) != arrays["logits_pass2"].argmax(1)
    pred = arrays["logits_pass2"].argmax(1)
    sub = gv.class_mean_maps(ms, "layer3", by="pred_pass2", mask=changed)
    assert list(sub.maps) == ["layer3"]
    assert sub.counts.tolist() == np.bincount(pred[changed], minlength=k).tolist()
    for c in range(k):
        rows = changed & (pred == c)
        if rows.any():
            np.testing.assert_allclose(sub.maps["layer3"][c], arrays["maps"]["layer3"][rows].mean(0), atol=1e-6)
        else:  # a class without images has no mean
            assert np.isnan(sub.maps["layer3"][c]).all()


def test_class_means_read_one_whole_chunk_at_a_time(ms):
    rec = Recorder(ms)
    gv.class_mean_maps(rec, ["layer1", "layer2"])
    chunks = list(ms.chunks())
    assert chunks == [(0, 64), (64, 128), (128, 192), (192, 200)]
    map_reads = [(name, (sl.start, sl.stop)) for name, sl in rec.reads if name.startswith("maps/")]
    # every chunk once per layer, whole, and no other map read
    assert map_reads == [(f"maps/{n}", c) for c in chunks for n in ("layer1", "layer2")]


def test_class_means_refuse_what_they_cannot_average(ms):
    with pytest.raises(ValueError, match=r"unknown layer.*'fc'.*layer1"):
        gv.class_mean_maps(ms, "fc")  # a dense layer has no map
    with pytest.raises(ValueError, match="unknown grouping 'colour'"):
        gv.class_mean_maps(ms, by="colour")
    with pytest.raises(ValueError, match="mask has 3 entries for a store of 200 images"):
        gv.class_mean_maps(ms, mask=[True, False, True])
    with pytest.raises(ValueError, match="no image to average"):
        gv.class_mean_maps(ms, mask=np.zeros(N, bool))


# ------------------------------------------------------------------------------------------------ embedding
def test_pca_embedding_of_a_sample_is_the_pca_of_its_q_avg(ms, arrays):
    emb = gv.q_avg_embedding_from_store(ms, "pca", n=50, seed=3)
    assert emb.method == "pca" and emb.coords.shape == (50, 2) and emb.coords.dtype == np.float32
    assert len(set(emb.rows.tolist())) == 50 and (np.diff(emb.rows) > 0).all() and emb.rows.max() < N
    np.testing.assert_array_equal(emb.labels, arrays["label"][emb.rows])
    changed = arrays["logits_pass1"].argmax(1) != arrays["logits_pass2"].argmax(1)
    np.testing.assert_array_equal(emb.changed, changed[emb.rows])
    q = arrays["q_avg"][emb.rows].astype(np.float64)
    c = q - q.mean(0)
    vals, vecs = np.linalg.eigh(c.T @ c)
    proj = c @ vecs[:, ::-1][:, :2]
    for j in range(2):  # eigenvectors have no sign
        sign = np.sign(proj[:, j] @ emb.coords[:, j])
        np.testing.assert_allclose(emb.coords[:, j], sign * proj[:, j], atol=1e-3 * np.abs(proj).max())
    np.testing.assert_allclose(emb.explained, vals[::-1][:2] / vals.sum(), rtol=1e-4)
    assert emb.axis_labels()[0].startswith("PC1 (")
    again = gv.q_avg_embedding_from_store(ms, "pca", n=50, seed=3)
    np.testing.assert_array_equal(again.rows, emb.rows)  # the sample is seeded
    assert gv.q_avg_embedding_from_store(ms, "pca").rows.tolist() == list(range(N))  # n=None: every image


def test_auto_falls_back_to_pca_when_umap_learn_cannot_be_imported(ms, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` now raises ImportError
    assert not dv.umap_available()
    emb = gv.q_avg_embedding_from_store(ms, "auto", n=20)
    assert emb.method == "pca" and emb.explained is not None and emb.coords.shape == (20, 2)
    with pytest.raises(ValueError, match=r"needs umap-learn \(pip install umap-learn\).*'pca'"):
        gv.q_avg_embedding_from_store(ms, "umap", n=20)


def test_umap_embedding_as_the_paper_seeded(ms, arrays):
    pytest.importorskip("umap")
    emb = gv.q_avg_embedding_from_store(ms, n=60, seed=1)  # auto: UMAP when installed
    assert emb.method == "umap" and emb.explained is None and emb.axis_labels() == ("UMAP 1", "UMAP 2")
    assert emb.coords.shape == (60, 2) and np.isfinite(emb.coords).all() and emb.coords.std(0).min() > 0
    np.testing.assert_array_equal(emb.labels, arrays["label"][emb.rows])
    again = gv.q_avg_embedding_from_store(ms, "umap", n=60, seed=1)
    np.testing.assert_allclose(again.coords, emb.coords, atol=1e-5)  # seeded: the same layout


def test_embedding_refuses_bad_arguments(ms):
    with pytest.raises(ValueError, match="unknown embedding method 'tsne'.*auto, umap, pca"):
        gv.q_avg_embedding_from_store(ms, "tsne")
    with pytest.raises(ValueError, match="n must be at least 3, got 2"):
        gv.q_avg_embedding_from_store(ms, "pca", n=2)


def test_an_incomplete_store_is_read_only_where_written(store, tmp_path, arrays):
    part = tmp_path / "part.zarr"
    shutil.copytree(store, part)
    g = zarr.open_group(str(part), mode="r+")
    g.attrs.update({"complete": False})
    g["done"][1] = 0  # rows 64..127 "not written yet"
    ms2 = gv.open_maps(str(part))
    written = np.r_[0:64, 128:200]
    assert gv.q_avg_embedding_from_store(ms2, "pca").rows.tolist() == written.tolist()
    cm = gv.class_mean_maps(ms2, "layer2")
    assert cm.counts.tolist() == np.bincount(arrays["label"][written], minlength=10).tolist()
    assert not set(gv.q_avg_embedding_from_store(ms2, "pca", n=100).rows.tolist()) & set(range(64, 128))


# ------------------------------------------------------------------------------------------------ table, rows
def test_query_table_filters_and_sorts_like_pandas_by_hand(ms):
    t = ms.table()
    assert t.index.tolist() == list(range(N))  # the index is the store row
    classes = ms.classes
    q = gv.TableQuery(changed_only=True, sort_by="mean_gain:layer2", descending=True)
    got = gv.query_table(t, classes, q)
    want = t[t["changed"]].sort_values("mean_gain:layer2", ascending=False)
    assert got.index.tolist() == want.index.tolist() and len(got) >= 1
    q = gv.TableQuery(classes=("Shirt", "Coat"), predicted=("Shirt",), correct=False, sort_by="prob_pass2")
    got = gv.query_table(t, classes, q)
    want = t[t["label"].isin([6, 4]) & (t["pred_pass2"] == 6) & ~t["correct_pass2"]].sort_values("prob_pass2")
    assert got.index.tolist() == want.index.tolist()
    assert (got["label"] == 4).all()  # a wrong "Shirt" prediction among Shirts and Coats is a Coat
    assert gv.query_table(t, classes).index.tolist() == list(range(N))  # the default query: all, by index
    named = dv.with_class_names(t.head(3), classes)
    assert named["class"].tolist() == [classes[i] for i in t["label"][:3]]
    assert list(named.columns[:3]) == ["index", "label", "class"]
    assert "mean_gain:layer1" in dv.sort_columns(t) and "changed" in dv.sort_columns(t)
    with pytest.raises(ValueError, match=r"unknown class \['Hat'\]"):
        gv.query_table(t, classes, gv.TableQuery(classes=("Hat",)))
    with pytest.raises(ValueError, match="cannot sort by 'colour'"):
        gv.query_table(t, classes, gv.TableQuery(sort_by="colour"))


def test_stored_image_and_read_store_rows_are_the_stored_arrays(ms, arrays):
    img = gv.stored_image(ms, 70)
    assert (img.row, img.index, img.label) == (70, int(arrays["index"][70]), int(arrays["label"][70]))
    for n in ms.layers:
        np.testing.assert_array_equal(img.maps[n], arrays["maps"][n][70].astype(np.float32))
    np.testing.assert_array_equal(img.dense["fc"], arrays["dense"]["fc"][70])
    np.testing.assert_allclose(img.probs(2), softmax(arrays["logits_pass2"][70].astype(np.float64)), rtol=1e-6)
    assert img.changed == bool(ms.table()["changed"][70])
    assert list(gv.stored_image(ms, 0, "layer3").maps) == ["layer3"]
    with pytest.raises(ValueError, match=r"row must be in 0..199, got 200"):
        gv.stored_image(ms, N)
    rows = np.array([150, 3, 3, 70])
    got = gv.read_store_rows(ms, ["q_avg", "maps/layer2"], rows)
    np.testing.assert_array_equal(got["q_avg"], arrays["q_avg"][rows])
    np.testing.assert_array_equal(got["maps/layer2"], arrays["maps"]["layer2"][rows].astype(np.float16))
    with pytest.raises(ValueError, match=r"rows must be in 0..199"):
        gv.read_store_rows(ms, ["q_avg"], [-1])


# ------------------------------------------------------------------------------------------------ figures
def test_figures_are_written_readable_and_scaled_per_layer(ms, tmp_path):
    emb = gv.q_avg_embedding_from_store(ms, "pca", n=80)
    cm = gv.class_mean_maps(ms)
    fig = gv.class_means_figure(cm)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 10 * 3
    for j, n in enumerate(ms.layers):  # one symmetric scale per layer, shared by its classes
        s = float(np.nanmax(np.abs(cm.maps[n])))
        assert all(im.get_clim() == pytest.approx((-s, s)) for im in images[j::3])
    two = gv.class_means_figure(cm, classes=["Bag", "Coat"])  # a few rows of many classes
    assert [ax.get_ylabel().split("\n")[0] for ax in two.axes if ax.images and ax.get_ylabel()] == ["Bag", "Coat"]
    assert sum(bool(ax.images) for ax in two.axes) == 2 * 3
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['Hat'\]"):
        gv.class_means_figure(cm, classes=["Hat"])
    fig = gv.dataset_embedding_figure(emb)
    by_class, by_change = fig.axes[:2]
    assert sum(len(c.get_offsets()) for c in by_class.collections) == 80
    assert [len(c.get_offsets()) for c in by_change.collections] == [int((~emb.changed).sum()), int(emb.changed.sum())]
    paths = gv.save_dataset_figures(str(tmp_path / "figs"), embedding=emb, class_means=cm)
    assert [os.path.basename(p) for p in paths] == ["q_avg_embedding.png", "class_mean_maps.png"]
    for p in paths:
        with Image.open(p) as im:
            im.verify()
        assert os.path.getsize(p) > 10_000
    with pytest.raises(ValueError, match="nothing to save"):
        gv.save_dataset_figures(str(tmp_path))


def test_map_tiles_keep_each_layer_s_cells_and_colours(ms):
    img = gv.stored_image(ms, 5)
    tiles = gv.map_tiles(img)
    for n, (tile, scale) in tiles.items():
        h, w = img.maps[n].shape
        f = round(dfig.DISPLAY_SIDE / h)
        assert tile.size == (w * f, h * f) and scale == pytest.approx(np.abs(img.maps[n]).max())
        want = np.round(colorize(img.maps[n] / scale, "RdBu_r") * 255).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(tile)[::f, ::f], want)  # one colour per map cell
    joint = gv.map_tiles(img, joint=True)
    assert len({s for _, s in joint.values()}) == 1


# ------------------------------------------------------------------------------------------------ the app
@pytest.fixture
def store_dir(store, tmp_path, monkeypatch):
    folder = tmp_path / "stores"
    folder.mkdir()
    shutil.copytree(store, folder / "fmnist.zarr")
    (folder / "broken.zarr").mkdir()
    (folder / "broken.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    (folder / "notes").mkdir()  # not a store: not listed
    monkeypatch.setenv("GATTA_VIZ_STORE_DIR", str(folder))
    for var in ("GATTA_VIZ_FILES", "GATTA_VIZ_MODEL_DIR", "GATTA_VIZ_RENDER_WORKERS"):
        monkeypatch.delenv(var, raising=False)
    return folder


def _captions(at):
    return [img.caption for el in at.get("image") for img in el.proto.imgs]


def test_dataset_view_lists_filters_and_shows_an_image_s_maps(store_dir, ms):
    assert app_dataset.list_stores() == ["broken.zarr", "fmnist.zarr"]
    with pytest.raises(ValueError, match="unknown store"):
        app_dataset.open_store(str(store_dir / "fmnist.zarr"))  # a path is not a name
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.sidebar.radio(key="app_view").set_value("Dataset").run()
    at.sidebar.selectbox(key="ds_store").set_value("fmnist.zarr").run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="ds_store").options == ["broken.zarr", "fmnist.zarr"]
    md = [m.value for m in at.markdown]
    assert any(v.startswith("**fmnist.zarr**: 200 images of fashion-mnist (test)") for v in md)
    t = ms.table()
    assert at.selectbox(key="ds_row").options[0].startswith("row 0 · #0 · ")
    caps = _captions(at)
    assert "image #0" in caps  # the image itself, re-loaded from the named data set
    assert [c.split(",")[0] for c in caps if c.startswith("α × agreement")] == [
        "α × agreement layer1 (28×28)", "α × agreement layer2 (14×14)", "α × agreement layer3 (7×7)"]
    # filter: only the images pass 2 changed, sorted by layer3's mean gain, largest first
    at.sidebar.checkbox(key="ds_changed").check().run()
    at.sidebar.selectbox(key="ds_sort").set_value("mean_gain:layer3").run()
    at.sidebar.checkbox(key="ds_desc").check().run()
    want = t[t["changed"]].sort_values("mean_gain:layer3", ascending=False).index.tolist()
    options = at.selectbox(key="ds_row").options
    assert [int(o.split(" ")[1]) for o in options] == want
    assert any(m.value.startswith(f"**{len(want)} of 200 images** match") for m in at.markdown)
    at.selectbox(key="ds_row").set_value(options[-1]).run()
    assert not at.exception and not at.error
    assert f"image #{int(t['index'][want[-1]])}" in _captions(at)
    # a class with a filter that keeps nothing says so
    at.sidebar.multiselect(key="ds_classes").set_value(["Trouser"]).run()
    at.sidebar.radio(key="ds_correct").set_value("wrong").run()
    assert not at.exception and any("No image matches" in i.value for i in at.info)
    # the embedding and the class means, on request (PCA: instant)
    at.radio(key="ds_method").set_value("pca").run()
    at.button(key="ds_embed_go").click().run()
    at.button(key="ds_means_go").click().run()
    assert not at.exception and not at.error
    assert "PCA of q_avg" in _captions(at)
    assert len(_captions(at)) == 2  # no image listed (the filters keep none): the two figures


def test_a_broken_store_is_named_on_the_page_without_a_path_or_traceback(store_dir):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.sidebar.radio(key="app_view").set_value("Dataset").run()
    at.sidebar.selectbox(key="ds_store").set_value("broken.zarr").run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Could not open the store: broken.zarr is not a gatta")
    assert str(store_dir) not in errors[0]


def test_no_store_folder_no_dataset_view_and_an_empty_folder_says_how_to_make_one(store_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("GATTA_VIZ_STORE_DIR")
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception and "app_view" not in [r.key for r in at.sidebar.radio]
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("GATTA_VIZ_STORE_DIR", str(empty))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.sidebar.radio(key="app_view").set_value("Dataset").run()
    assert not at.exception and any("gatta-viz maps" in i.value for i in at.info)
