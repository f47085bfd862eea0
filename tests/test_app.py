"""The Streamlit app driven by streamlit's AppTest: predictions, layer panels, legends, downloads, bad files,
duplicate uploads, models (bundled, operator folder, uploaded), renders from many sessions at once, and the
page's modules (gatta_viz/app/) read directly."""
import io
import os
import shutil
import struct
import threading
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

import gatta_viz as gv

from gatta_viz.app import composer, models, render as rendering, settings, text, uploads
from gatta_viz.app.pool import ModelPool

APP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app", "streamlit_app.py")


def captions(at, prefix):
    out = []
    for el in at.get("image"):
        for img in el.proto.imgs:
            if img.caption.startswith(prefix):
                out.append(img.caption)
    return out


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def fake_huge_png(path, w=20000, h=20000):
    """A valid PNG header declaring w x h pixels (400 Mpx) in a few bytes: a decompression bomb's shape."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


@pytest.fixture
def samples(tmp_path, monkeypatch):
    d = gv.load_fashion_mnist("test").subset(3)
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in (1, 2):
        Image.fromarray(d.images[i, 0].numpy(), "L").save(folder / f"img{i}.png")
    monkeypatch.setenv("GATTA_VIZ_SAMPLES", str(folder))
    for var in ("GATTA_VIZ_FILES", "GATTA_VIZ_MODEL_DIR", "GATTA_VIZ_MAX_UPLOAD_MB", "GATTA_VIZ_MAX_PIXELS",
                "GATTA_VIZ_MAX_DECODED_MB", "GATTA_VIZ_RENDER_WORKERS"):
        monkeypatch.delenv(var, raising=False)
    return folder


def expected_top1(path, name="fmnist-gatta-resnet"):
    lm = gv.load_model(name)
    x = gv.prepare_image(gv.load_image(str(path)), lm.preprocess).tensor
    with torch.no_grad():
        t = lm.model.trace(x) if lm.is_gatta else None
        logits = t.logits_pass2[0] if t is not None else lm.model(x)[0]
        logits1 = t.logits_pass1[0] if t is not None else None
    return gv.topk(logits, lm.classes, 1)[0], (gv.topk(logits1, lm.classes, 1)[0] if logits1 is not None else None)


def test_sample_image_predictions_panels_legends_and_downloads(samples):
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception and not at.error
    assert at.radio(key="map").value == text.MAP_GAIN == "alpha x agreement (what pass 2 boosts or suppresses)"
    assert at.radio(key="map").options == [text.MAP_GAIN, "raw agreement (sign set by training)"]
    at.multiselect(key="samples").set_value(["img1.png"]).run()
    assert not at.exception and not at.error
    top2, top1 = expected_top1(samples / "img1.png")
    md = [m.value for m in at.markdown]
    assert any(v.startswith("**Pass 2 (model output)**\n1. " + f"{top2['label']}: {100 * top2['prob']:.1f}%") for v in md)
    assert any(v.startswith("**Pass 1 (no attention)**\n1. " + f"{top1['label']}: {100 * top1['prob']:.1f}%") for v in md)
    assert [c.split(",")[0] for c in captions(at, "alpha x agreement ")] == [f"alpha x agreement layer{i}" for i in (1, 2, 3)]
    assert len(captions(at, "Grad-CAM ")) == 3
    assert len(captions(at, "what the model saw")) == 1
    assert [b.proto.label for b in at.get("download_button")] == ["Download figure (PNG)", "Download raw maps (.npz)"]
    assert any("Fashion-MNIST" in i.value or "fashion-mnist" in i.value for i in at.info)  # the model's domain
    # the words a first-time user needs: class-agnostic maps vs class-specific Grad-CAM, what each column means
    assert any("class-agnostic" in v and "class-specific" in v for v in md)
    assert any(v.startswith("**alpha x agreement** (gain - 1)") and "red: boosted (gain > 1), blue: suppressed" in v
               and "each layer scaled to its own largest value" in v for v in md)
    assert any("for class **" + top2["label"] + "** (the predicted class): class-specific" in v for v in md)
    table_caption = " ".join(c.value for c in at.caption)
    assert "**dprob_pred** = p(full model) - p(this layer's modulation off), for the predicted class: positive means " \
           "the layer's modulation raised the predicted class's probability" in table_caption
    assert "**frac_up** / **frac_down**: share of positions whose gain 1 + alpha x agreement is above / below 1" in table_caption
    assert "**mean_gain**: mean of 1 + alpha x agreement" in table_caption

    at.multiselect(key="layers").set_value(["layer2", "layer3"]).run()
    assert [c.split(",")[0] for c in captions(at, "alpha x agreement ")] == ["alpha x agreement layer2", "alpha x agreement layer3"]
    # legends follow the controls: raw map, rectified, joint scale
    at.radio(key="map").set_value(text.MAP_RAW).run()
    at.radio(key="sign").set_value(text.SIGN_RECTIFIED).run()
    at.radio(key="norm").set_value(text.NORM_JOINT).run()
    assert not at.exception and not at.error
    assert [c.split(",")[0] for c in captions(at, "raw agreement ")] == ["raw agreement layer2", "raw agreement layer3"]
    md = [m.value for m in at.markdown]
    assert any(v.startswith("**raw agreement** key . q_avg (sign set by training") and "positive agreement only" in v
               and "one colour scale for all layers" in v for v in md)
    assert any("positive evidence only" in v and "one scale for all layers" in v for v in md)  # Grad-CAM legend
    assert set(at.selectbox(key="cmap").options) >= {"viridis", "magma"}  # rectified: sequential maps allowed too


def test_gradcam_class_can_be_chosen(samples):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.multiselect(key="samples").set_value(["img1.png"]).run()
    top2, _ = expected_top1(samples / "img1.png")
    other = next(c for c in gv.load_model().classes if c != top2["label"])
    assert at.selectbox(key="gradcam_target").value == text.PREDICTED
    at.selectbox(key="gradcam_target").set_value(other).run()
    assert not at.exception and not at.error
    md = [m.value for m in at.markdown]
    assert any(f"for class **{other}**: class-specific" in v for v in md)
    assert not any("(the predicted class)" in v for v in md)


def test_duplicate_names_and_the_same_file_twice_all_render(samples):
    """Issue: widget keys built from the file name crashed the page (StreamlitDuplicateElementKey) and lost the
    second image's bars, table and downloads."""
    a = (samples / "img1.png").read_bytes()
    b = (samples / "img2.png").read_bytes()
    hostile = "[x](javascript:alert(1)) *bold* #.png"
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.file_uploader(key="uploads").set_value([("shirt.png", a, "image/png"), ("shirt.png", b, "image/png"),
                                              ("same.png", a, "image/png"), ("same.png", a, "image/png"),
                                              (hostile, b, "image/png")]).run()
    assert not at.exception, at.exception
    assert not at.error
    heads = [s.value for s in at.subheader]
    assert heads[:4] == ["shirt.png", "shirt.png", "same.png", "same.png"]
    assert heads[4] == "\\[x\\](javascript:alert(1)) \\*bold\\* \\#.png"  # shown as text, not as a link
    assert len(at.get("download_button")) == 10 and len(at.get("plotly_chart")) == 5  # every image: bars + downloads
    assert len(at.dataframe) == 10  # alpha table + layer table per image
    names = [d.proto.label for d in at.get("download_button")]
    assert names.count("Download figure (PNG)") == 5


def test_bad_files_are_named_and_good_file_still_renders(samples, tmp_path, monkeypatch):
    monkeypatch.setenv("GATTA_VIZ_MAX_UPLOAD_MB", "10")  # one limit for app and CLI, set by the operator
    good = samples / "img2.png"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    trunc = tmp_path / "truncated.jpg"
    jpg = tmp_path / "full.jpg"
    Image.new("RGB", (300, 300), (120, 30, 200)).save(jpg, quality=95)
    trunc.write_bytes(jpg.read_bytes()[:400])
    bomb = tmp_path / "bomb.png"
    fake_huge_png(bomb)
    big = tmp_path / "big.bmp"
    big.write_bytes(b"BM" + b"\x00" * (11 * 1024 * 1024))  # over the 10 MB limit
    crc = tmp_path / "crc.png"
    data = bytearray(good.read_bytes())
    data[29] ^= 0xFF  # IHDR checksum
    crc.write_bytes(bytes(data))
    folder = tmp_path / "folder.png"
    folder.mkdir()
    files = [empty, text, good, trunc, bomb, big, crc, folder]
    monkeypatch.setenv("GATTA_VIZ_FILES", os.pathsep.join(str(f) for f in files))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("empty.png" in e and "empty (0 bytes)" in e for e in errors), errors
    assert any("notes.png" in e and "not a recognised image format" in e for e in errors), errors
    assert any("truncated.jpg" in e and "truncated or corrupt" in e for e in errors), errors
    assert any("bomb.png" in e and "over the 40,000,000-pixel limit (400,000,000 pixels)" in e for e in errors), errors
    assert any("big.bmp" in e and "over the 10 MB limit" in e for e in errors), errors
    assert any("crc.png" in e and "broken PNG file: bad header checksum" in e for e in errors), errors
    assert any("folder.png" in e and "is a directory" in e for e in errors), errors
    assert len(errors) == 7
    assert not any(str(tmp_path) in e for e in errors)  # names, never server paths
    assert [s.value for s in at.subheader] == ["img2.png"]
    top2, _ = expected_top1(good)
    assert any(m.value.startswith(f"**Pass 2 (model output)**\n1. {top2['label']}") for m in at.markdown)


@pytest.mark.parametrize("var, value, problem", [
    ("GATTA_VIZ_MAX_UPLOAD_MB", "ten", "must be a positive number, got 'ten'"),
    ("GATTA_VIZ_MAX_CHECKPOINT_MB", "-5", "must be a positive number, got '-5'"),
    ("GATTA_VIZ_RENDER_WORKERS", "0", "must be at least 1, got '0'"),
])
def test_a_misconfigured_setting_is_named_on_the_page_not_a_traceback(samples, monkeypatch, var, value, problem):
    monkeypatch.setenv(var, value)
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"The app is misconfigured: environment variable {var} {problem}"]


def test_plain_model_shows_gradcam_and_says_no_agreement(samples):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.selectbox(key="model").set_value("fmnist-resnet").run()
    at.multiselect(key="samples").set_value(["img1.png"]).run()
    assert not at.exception and not at.error
    assert any("no agreement maps" in w.value for w in at.warning)
    assert captions(at, "alpha x agreement ") == [] and captions(at, "raw agreement ") == []
    assert len(captions(at, "Grad-CAM ")) == 3
    top, _ = expected_top1(samples / "img1.png", "fmnist-resnet")
    assert any(m.value.startswith(f"**Prediction**\n1. {top['label']}") for m in at.markdown)


# ---------------------------------------------------------------- models come from a list or an upload, never a typed path
def test_no_server_path_can_be_typed_and_the_operator_folder_is_listed_by_name(samples, tmp_path, monkeypatch):
    """Issue: a text box opened any path the server could read, and its errors told which files exist."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(gv.bundled_path("fmnist-gatta-toy"), folder / "my-toy.pt")
    (folder / "notes.txt").write_text("not a model")
    (folder / "sub.pt").mkdir()
    monkeypatch.setenv("GATTA_VIZ_MODEL_DIR", str(folder))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception and not at.error
    assert len(at.text_input) == 0  # nothing to type a path into
    assert at.selectbox(key="model").options == list(gv.BUNDLED) + ["my-toy.pt", "upload a checkpoint (.pt)..."]
    at.selectbox(key="model").set_value("my-toy.pt").run()
    at.multiselect(key="samples").set_value(["img1.png"]).run()
    assert not at.exception and not at.error
    assert [c.split(",")[0] for c in captions(at, "alpha x agreement ")] == [f"alpha x agreement conv{i}" for i in (1, 2, 3)]
    # by name only: an existing secret file and a missing one give the same answer, naming neither as a file
    errors = {}
    for p in ("/etc/shadow", "/etc/no-such-file", str(folder / "my-toy.pt"), "../models/my-toy.pt"):
        with pytest.raises(ValueError) as e:
            models.load_model(p)
        errors[p] = str(e.value).replace(repr(p), "NAME")
    assert len(set(errors.values())) == 1, errors
    assert "unknown model NAME: choose a bundled model" in errors["/etc/shadow"]


def test_checkpoint_upload_loads_a_model_and_refuses_garbage_without_server_paths(samples):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.selectbox(key="model").set_value("upload a checkpoint (.pt)...").run()
    assert not at.exception and not at.error
    at.file_uploader(key="ckpt_upload").set_value(("x.pt", b"garbage", "application/octet-stream")).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Could not load the model: cannot read checkpoint x.pt: corrupt"), errors
    assert "/tmp" not in errors[0] and "gatta-viz-upload" not in errors[0]
    with open(gv.bundled_path("fmnist-gatta-toy"), "rb") as f:
        at.file_uploader(key="ckpt_upload").set_value(("toy.pt", f.read(), "application/octet-stream")).run()
    at.multiselect(key="samples").set_value(["img1.png"]).run()
    assert not at.exception and not at.error
    assert len(captions(at, "alpha x agreement conv")) == 3
    assert any("**toy** was trained on" in i.value for i in at.info)


def test_hostile_checkpoint_settings_are_refused_before_building(tmp_path, monkeypatch):
    """A checkpoint's settings decide the model's size: one that holds 0.7 M numbers but asks for billions is refused
    from its settings alone (on PyTorch's meta device): the real model is never built."""
    obj = torch.load(gv.bundled_path("fmnist-gatta-resnet"), weights_only=True)
    built = []
    real_load = models.load_checkpoint
    monkeypatch.setattr(models, "load_checkpoint", lambda path: (built.append(path), real_load(path))[1])
    for change, message in [
        ({"kwargs": {**obj["kwargs"], "widths": [4096, 8192, 16384]}}, "but it holds 715,207: refused"),
        ({"kwargs": {**obj["kwargs"], "blocks": [5000, 2, 2]}}, "deeper than this app builds"),
        ({"preprocess": {**obj["preprocess"], "size": [40000, 40000]}}, "input size [40000, 40000] is outside 1..512"),
        ({"kwargs": {**obj["kwargs"], "num_classes": 10**9}}, "numbers out of range"),
    ]:
        buf = io.BytesIO()
        torch.save({**obj, **change}, buf)
        with pytest.raises(ValueError, match=r"^evil\.pt: ") as e:
            models.load_uploaded("evil.pt", buf.getvalue())
        assert message in str(e.value) and built == []
    buf = io.BytesIO()
    torch.save(obj, buf)
    assert models.load_uploaded("fine.pt", buf.getvalue()).name == "fine" and len(built) == 1


def test_caches_are_bounded(samples):
    """The model cache and the render cache hold a bounded number of entries (and the renders a bounded size)."""
    from streamlit.runtime.caching import cache_data_api, cache_resource_api

    at = AppTest.from_file(APP, default_timeout=120).run()
    at.multiselect(key="samples").set_value(["img1.png"]).run()
    assert not at.exception
    resource = [c for caches in cache_resource_api._resource_caches._function_caches.values() for c in caches.values()
                if "get_pool" in c.display_name]
    data = [c for caches in cache_data_api._data_caches._function_caches.values() for c in caches.values()
            if "get_render" in c.display_name]
    assert resource and data
    assert all(c.max_entries == settings.MODEL_CACHE_ENTRIES == 4 for c in resource)
    assert all(c.max_entries == settings.RENDER_CACHE_ENTRIES and c.max_size_bytes == settings.RENDER_CACHE_BYTES for c in data)


# ---------------------------------------------------------------- many sessions
def test_renders_from_concurrent_sessions_match_one_at_a_time(samples):
    """Streamlit sessions are threads; each render takes its own replica of the model, whose hooks then never see
    another session's trace."""
    lm = models.load_model(gv.DEFAULT_MODEL)
    pool = ModelPool(lm, size=2)
    imgs = [gv.load_image(str(p)) for p in sorted(samples.glob("*.png"))]
    with_cam, without_cam = gv.MapOptions(gradcam=True), gv.MapOptions(gradcam=False)
    alone = [rendering.render(lm, f"{i}.png", img, with_cam) for i, img in enumerate(imgs)]

    # a render waits while every replica is taken (it cannot finish before one is given back)
    done = threading.Event()
    with pool.replica(), pool.replica():
        t = threading.Thread(target=lambda: (rendering.render(pool, "0.png", imgs[0], without_cam), done.set()))
        t.start()
        assert not done.wait(0.5)
    t.join(30)
    assert done.is_set()

    results, errors = {}, []

    def work(j):
        try:
            for rep in range(2):
                results[(j, rep)] = rendering.render(pool, f"{j % 2}.png", imgs[j % 2], with_cam)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(j,)) for j in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors
    assert len(results) == 8
    for (j, _), r in results.items():
        want = alone[j % 2]
        assert r.top_pass2 == want.top_pass2 and r.top_pass1 == want.top_pass1
        got_maps, want_maps = np.load(io.BytesIO(r.npz)), np.load(io.BytesIO(want.npz))
        assert sorted(got_maps.files) == sorted(want_maps.files)
        for key in want_maps.files:
            assert np.array_equal(got_maps[key], want_maps[key]), key


def test_renders_run_in_parallel_up_to_the_pool_size_and_decoding_waits_its_turn(samples, monkeypatch):
    """Issue: one lock made 8 sessions queue on one core. Now as many renders run at once as there are replicas,
    never more, and an upload is decoded only once it holds a replica. Overlap is forced by events, not sleeps:
    the first renders wait until two are running at once (a bounded wait that a serialised pool would fail)."""
    lm = models.load_model(gv.DEFAULT_MODEL)
    pool = ModelPool(lm, size=2)
    assert len({id(m) for m in [pool.lm] + list(pool._free.queue)}) == 2  # distinct replicas
    active, peak, lock = [0], [0], threading.Lock()
    two_running = threading.Event()
    seen_models = set()
    real_render, real_decode = rendering.render_prepared, rendering.decode
    decoded = []

    def overlapping_render(m, *args):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            seen_models.add(id(m))
            if active[0] == 2:
                two_running.set()
        try:
            assert two_running.wait(60), "two renders never ran at once"
            return real_render(m, *args)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(rendering, "render_prepared", overlapping_render)
    monkeypatch.setattr(rendering, "decode", lambda name, data: (decoded.append(name), real_decode(name, data))[1])
    data = (samples / "img1.png").read_bytes()
    options = gv.MapOptions(gradcam=False)
    failures = []

    def upload(name):
        try:
            rendering.render_upload(pool, name, data, options)
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(repr(e))

    threads = [threading.Thread(target=upload, args=(f"{j}.png",)) for j in range(5)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not failures and two_running.is_set()
    assert peak[0] == 2 and len(seen_models) == 2 and len(decoded) == 5

    decoded.clear()
    started = threading.Event()
    with pool.replica(), pool.replica():  # every slot busy: the upload is not even decoded yet
        t = threading.Thread(target=lambda: (started.set(), upload("late.png")))
        t.start()
        assert started.wait(30)
        assert not pool.idle() and decoded == []
        t.join(0.3)
        assert t.is_alive() and decoded == []  # still waiting for a replica, nothing decoded
    t.join(60)
    assert decoded == ["late.png"] and not failures


def test_figure_download_is_drawn_when_asked_for(samples):
    """The Fig. 3 PNG is about 3/4 of a render's time; the page draws it only when its download button is clicked."""
    r = rendering.render(models.load_model(gv.DEFAULT_MODEL), "img1.png", gv.load_image(str(samples / "img1.png")))
    assert "_files" not in r.__dict__ and r.explanation.original is None
    png = r.figure_png()
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size[0] > 300 and r.figure_png() is png  # drawn once


def test_busy_server_says_so_instead_of_waiting_forever():
    pool = ModelPool(models.load_model("fmnist-gatta-toy"), size=1)
    with pool.replica():
        with pytest.raises(TimeoutError, match="the server is busy"):
            with pool.replica(timeout=0.2):
                pass
    assert pool.idle() == 1


# ---------------------------------------------------------------- small pieces
def test_widget_keys_differ_for_same_name_and_for_same_content():
    a, b = b"first image bytes", b"second image bytes"
    keys = [uploads.content_key(0, a), uploads.content_key(1, b), uploads.content_key(2, a), uploads.content_key(3, a)]
    assert len(set(keys)) == 4 and keys[0].split("-")[1] == keys[2].split("-")[1]


def test_dense_bars_mark_the_predicted_class_by_outline_and_colour_by_sign():
    classes = ["a", "b", "c", "d"]
    fig = gv.dense_bars("fc", np.array([1.2, 0.7, 1.0, 1.5]), classes, predicted=1, what="gain")
    bar = fig.data[0]
    assert list(bar.marker.color) == ["#b2182b", "#2166ac", "#2166ac", "#b2182b"]  # red above 1, blue at/below
    assert list(bar.marker.line.width) == [0, 3, 0, 0] and bar.x[1] == "<b>b</b> (predicted)"
    assert np.allclose(np.asarray(bar.y) + bar.base, [1.2, 0.7, 1.0, 1.5])  # bars drawn from gain 1
    raw = gv.dense_bars("fc", np.array([0.3, -0.2, 0.1, 0.0]), classes, predicted=0, what="agreement")
    assert set(raw.data[0].marker.color) == {"#5f6b73"} and "sign set by training" in raw.layout.title.text


def test_legend_words_follow_every_control():
    texts = {(g, s, j): text.maps_legend(g, s, j) for g in (True, False) for s in (True, False) for j in (True, False)}
    assert len(set(texts.values())) == 8
    assert "red: boosted (gain > 1), blue: suppressed (gain < 1)" in texts[(True, True, False)]
    assert "boosted positions only" in texts[(True, False, False)]
    assert "red: agrees with the global query, blue: disagrees" in texts[(False, True, False)]
    assert "one colour scale for all layers" in texts[(True, True, True)]
    assert "green: boosted" in text.maps_legend(True, True, False, "PiYG")
    assert text.cmaps_for(True) == ["RdBu_r", "coolwarm", "seismic", "PiYG"]
    bar = np.asarray(gv.colorbar_strip("RdBu_r", True))
    assert bar[0, 0, 2] > bar[0, 0, 0] and bar[0, -1, 0] > bar[0, -1, 2]  # blue on the left, red on the right


def test_names_are_escaped_and_download_stems_sanitised():
    assert uploads.md_escape("a_b*c[1](x).png") == "a\\_b\\*c\\[1\\](x).png"
    assert uploads.file_stem("../../etc/pass wd.png") == "pass_wd"
    assert uploads.file_stem("?.png") == "image"


def test_cli_app_binds_loopback_unless_told_and_shares_the_image_limit(monkeypatch):
    from gatta_viz.cli import app as cli_app

    assert cli_app.build_parser().parse_args([]).address == "127.0.0.1"
    assert cli_app.build_parser().parse_args(["--address", "0.0.0.0"]).address == "0.0.0.0"
    monkeypatch.delenv("GATTA_VIZ_MAX_CHECKPOINT_MB", raising=False)
    monkeypatch.setenv("GATTA_VIZ_MAX_UPLOAD_MB", "300")
    cmd = cli_app.app_command(8600)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.maxUploadSize") + 1] == "300"  # Streamlit's own cap follows the shared limit
    assert cmd[cmd.index("--client.showErrorDetails") + 1] == "type"  # no tracebacks with server paths
    assert [cli_app.is_loopback(a) for a in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::", "192.168.1.5")] == \
        [True, True, True, False, False, False]
    doc = open(APP).read()
    assert "streamlit run app/streamlit_app.py --server.address 127.0.0.1" in doc


def test_warm_up_renders_on_every_replica_and_gives_them_back(monkeypatch):
    pool = ModelPool(models.load_model("fmnist-gatta-toy"), size=2)
    seen = []
    real = rendering.render_prepared
    monkeypatch.setattr(rendering, "render_prepared", lambda m, *a, **k: (seen.append(id(m)), real(m, *a, **k))[1])
    rendering.warm_up(pool)
    assert sorted(seen) == sorted({id(pool.lm)} | {id(m) for m in pool._free.queue}) and pool.idle() == 2


# ---------------------------------------------------------------- top-down cues and composed scenes
SCENE_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def save_scene_checkpoint(path, queries=True):
    """A small 48x48 GAttA scene model (alphas 0.3) with random stored class queries, or none."""
    kwargs = {"in_channels": 1, "num_classes": 10, "input_size": [48, 48], "widths": [8, 16, 32], "blocks": [1, 1, 1],
              "d": 8, "stem_stride": 2, "alpha_init": 0.3}
    torch.manual_seed(0)
    model = gv.gatta_compact_resnet(**kwargs).eval()
    gv.save_checkpoint(str(path), model, "gatta_compact_resnet", kwargs, SCENE_CLASSES,
                       {"size": [48, 48], "channels": 1, "mean": [0.17], "std": [0.31], "background": "dark"},
                       meta={"dataset": "fmnist-pairs"}, class_queries=torch.randn(10, 8) if queries else None)


def selectbox_keys(at):
    return [s.key for s in at.selectbox]


def test_cue_selector_only_for_models_with_stored_queries_and_the_scene_composer(samples, tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    save_scene_checkpoint(folder / "scene.pt")
    save_scene_checkpoint(folder / "noq.pt", queries=False)
    monkeypatch.setenv("GATTA_VIZ_MODEL_DIR", str(folder))
    monkeypatch.setenv("GATTA_VIZ_SAMPLES", os.path.join(os.path.dirname(APP), "..", "sample_images"))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception and not at.error
    # the bundled 28x28 GAttA model stores class queries: a cue selector, but no composer (no room for two garments)
    assert "cue" in selectbox_keys(at) and "garment0" not in selectbox_keys(at)
    assert at.selectbox(key="cue").options == [text.NO_CUE] + list(gv.load_model().classes)
    for name in ("fmnist-resnet", "noq.pt"):  # a plain CNN; a GAttA model without stored queries
        at.selectbox(key="model").set_value(name).run()
        assert not at.exception and not at.error
        assert "cue" not in selectbox_keys(at), name
    at.selectbox(key="model").set_value("scene.pt").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="cue").value == text.NO_CUE
    assert [at.selectbox(key=f"garment{i}").value for i in (0, 1)] == ["trouser_test00002.png", "bag_test00018.png"]
    assert [s.value for s in at.subheader] == ["scene: Trouser at (0, 0) + Bag at (20, 20)"]
    assert captions(at, "what the model saw") == ["what the model saw; outlines: Trouser (green), Bag (yellow)"]
    assert captions(at, "cued: ") == []

    lm = gv.load_model(str(folder / "scene.pt"))

    def by_hand(x0, y0, x1, y1):
        scene = composer.compose_from_samples(["trouser_test00002.png", "bag_test00018.png"], [(x0, y0), (x1, y1)],
                                           (48, 48), lm.classes)
        x = gv.prepare_image(Image.open(io.BytesIO(scene.png())), lm.preprocess).tensor
        with torch.no_grad():
            t = lm.model.trace(x, query=lm.cue("Trouser"))
        return gv.topk(t.logits_pass2[0], lm.classes, 1)[0]

    at.selectbox(key="cue").set_value("Trouser").run()
    assert not at.exception and not at.error
    assert [c.split(",")[0] for c in captions(at, "cued: ")] == [f"cued: Trouser · alpha x agreement layer{i}" for i in (1, 2, 3)]
    assert len(captions(at, "alpha x agreement layer")) == 3  # the row without the cue is still there
    top = by_hand(0, 0, 20, 20)
    md = [m.value for m in at.markdown]
    assert any(v.startswith(f"**Pass 2 cued: Trouser**\n1. {top['label']}: {100 * top['prob']:.1f}%") for v in md)
    assert any("each layer's two maps share one colour scale" in v for v in md)
    assert len(at.get("plotly_chart")) == 2 and len(at.dataframe) == 3  # fc without / with the cue; two layer tables
    at.slider(key="gx1").set_value(5).run()  # move the bag
    assert not at.exception and not at.error
    assert [s.value for s in at.subheader] == ["scene: Trouser at (0, 0) + Bag at (5, 20)"]
    top = by_hand(0, 0, 5, 20)
    assert any(m.value.startswith(f"**Pass 2 cued: Trouser**\n1. {top['label']}: {100 * top['prob']:.1f}%") for m in at.markdown)
    at.checkbox(key="compose").uncheck().run()
    assert not at.exception and not at.error and [s.value for s in at.subheader] == []
    # back to a 28x28 model: the single-image flow, its cue reset to none
    at.selectbox(key="model").set_value(gv.DEFAULT_MODEL).run()
    at.multiselect(key="samples").set_value(["fashion-mnist/bag_test00018.png"]).run()
    assert not at.exception and not at.error
    assert at.selectbox(key="cue").value == text.NO_CUE and captions(at, "cued: ") == []
    assert [s.value for s in at.subheader] == ["fashion-mnist/bag\\_test00018.png"]


def test_sample_list_leaves_item_masks_out(tmp_path):
    (tmp_path / "clutter").mkdir()
    for name in ("clutter_00000.png", "clutter_00000_mask.png", "scene_00001_item0_mask.png", "notes.txt"):
        Image.new("L", (4, 4)).save(tmp_path / "clutter" / name) if name.endswith(".png") else (tmp_path / "clutter" / name).write_text("x")
    assert uploads.list_samples(str(tmp_path)) == ["clutter/clutter_00000.png"]
    os.symlink("..", tmp_path / "clutter" / "loop")  # a linked folder is followed, a loop only once
    os.symlink(tmp_path / "clutter", tmp_path / "linked")
    assert uploads.list_samples(str(tmp_path)) == ["clutter/clutter_00000.png"]


def test_a_composed_scene_is_named_boxed_and_outlined_by_class():
    folder = os.path.join(os.path.dirname(APP), "..", "sample_images", "fashion-mnist")
    classes = gv.load_model().classes
    scene = composer.compose_from_samples(["trouser_test00002.png", "bag_test00018.png"], [(0, 0), (20, 20)], (48, 48),
                                          classes, folder)
    trouser, bag = (np.asarray(Image.open(os.path.join(folder, f)).convert("L")) for f in
                    ("trouser_test00002.png", "bag_test00018.png"))
    want = np.zeros((48, 48), np.uint8)
    want[:28, :28] = trouser
    want[20:, 20:] = np.maximum(want[20:, 20:], bag)
    assert np.array_equal(scene.image, want) and scene.name == "scene: Trouser at (0, 0) + Bag at (20, 20)"
    rows, cols = np.nonzero(trouser > 16)
    assert scene.outlines()[0] == ((int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1),
                                   "Trouser", gv.OUTLINE_COLOURS[0])
    assert [o[1:] for o in scene.outlines()] == [("Trouser", gv.OUTLINE_COLOURS[0]), ("Bag", gv.OUTLINE_COLOURS[1])]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(scene.png()))), want)
    with pytest.raises(ValueError, match="unknown garment '../x.png'"):
        composer.compose_from_samples(["../x.png", "bag_test00018.png"], [(0, 0), (1, 1)], (48, 48), classes, folder)


@pytest.mark.parametrize("argv, message", [
    (["--port", "70000"], "argument --port: a TCP port must be between 1 and 65535, got 70000"),
    (["--port", "0"], "argument --port: a TCP port must be between 1 and 65535, got 0"),
    (["--address", "999.1.1.1"], "argument --address: not a valid IP address: '999.1.1.1'"),
])
def test_cli_app_refuses_a_bad_port_or_address_with_one_line(argv, message, capsys):
    from gatta_viz.cli import main

    with pytest.raises(SystemExit) as e:
        main(["app", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_cli_serves_the_page_shipped_in_the_package():
    from gatta_viz.cli import app as cli_app

    assert cli_app.APP_PATH == os.path.join(os.path.dirname(gv.__file__), "app", "streamlit_page.py")
    assert os.path.isfile(cli_app.APP_PATH)
    assert cli_app.app_command(8600)[3:5] == ["run", cli_app.APP_PATH]


def test_thin_images_and_a_failing_render_are_named_while_the_others_render(samples, monkeypatch):
    """Per-file errors while explaining, not only while decoding: 1xN, Nx1 and 2x3000 images are refused with the
    reason, an upload whose explanation fails inside the library is named with the error's type, and every good
    upload next to them still renders."""
    good1, good2 = (samples / "img1.png").read_bytes(), (samples / "img2.png").read_bytes()
    thin = {name: png_bytes(Image.new("L", size, 200)) for name, size in
            [("column.png", (1, 400)), ("row.png", (400, 1)), ("sliver.png", (2, 3000))]}
    boom = png_bytes(Image.new("L", (28, 28), 77))  # an image no other test renders: not in the render cache
    real = rendering.render_prepared

    def failing(lm, name, *args, **kwargs):
        if name == "boom.png":
            raise KeyError("a bug inside the library")
        return real(lm, name, *args, **kwargs)

    monkeypatch.setattr(rendering, "render_prepared", failing)
    at = AppTest.from_file(APP, default_timeout=120).run()
    files = [("first.png", good1), *thin.items(), ("boom.png", boom), ("last.png", good2)]
    at.file_uploader(key="uploads").set_value([(n, d, "image/png") for n, d in files]).run()
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader] == ["first.png", "last.png"]
    assert len(captions(at, "alpha x agreement layer")) == 6 and len(at.get("download_button")) == 4
    errors = [e.value for e in at.error]
    assert errors == [
        "Skipped column.png: image is 1x400: too thin for the model's 28x28 input (its short side would shrink to 0.07 "
        "pixels); crop it to a less extreme aspect ratio",
        "Skipped row.png: image is 400x1: too thin for the model's 28x28 input (its short side would shrink to 0.07 "
        "pixels); crop it to a less extreme aspect ratio",
        "Skipped sliver.png: image is 2x3000: too thin for the model's 28x28 input (its short side would shrink to "
        "0.028 pixels); crop it to a less extreme aspect ratio",  # the file's size, though decoded at 1x1000
        "boom.png: could not explain this image (internal error: KeyError)",
    ], errors


def test_cli_app_without_streamlit_says_how_to_install_it(monkeypatch, capsys):
    import importlib.util

    from gatta_viz.cli import app as cli_app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "streamlit" else real(name, *a))
    assert cli_app.run(cli_app.build_parser().parse_args([])) == 2
    assert capsys.readouterr().err == ("error: the app needs streamlit, which is not installed: "
                                       "pip install 'gatta_viz[app]'\n")


def test_the_app_s_downloads_are_the_files_gatta_viz_explain_writes(samples, tmp_path):
    """One writer: the figure, overlays and maps the page offers for an image are those of `gatta-viz explain`."""
    from gatta_viz.cli import main

    path = samples / "img1.png"
    assert main(["explain", str(path), "--out", str(tmp_path / "out")]) == 0
    r = rendering.render(models.load_model(gv.DEFAULT_MODEL), "img1.png", gv.load_image(str(path)),
                         gv.MapOptions(gradcam=False), gv.FigureOptions())
    files = r.files()
    assert {"figure", "maps", "summary", "overlay_layer1"} <= set(files) and r.figure_png() is files["figure"]

    def pixels(data):
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    assert np.array_equal(pixels(files["figure"]), pixels((tmp_path / "out" / "img1_fig3.png").read_bytes()))
    for n in ("layer1", "layer2", "layer3"):
        assert np.array_equal(pixels(files[f"overlay_{n}"]),
                              pixels((tmp_path / "out" / f"img1_overlay_{n}.png").read_bytes()))
    app_maps, cli_maps = np.load(io.BytesIO(files["maps"])), np.load(tmp_path / "out" / "img1_maps.npz")
    assert sorted(app_maps.files) == sorted(cli_maps.files) and len(app_maps.files) > 10
    for key in cli_maps.files:
        assert np.array_equal(app_maps[key], cli_maps[key]), key


def test_no_layer_chosen_says_so_instead_of_failing(samples):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.multiselect(key="samples").set_value(["img1.png"]).run()
    at.multiselect(key="layers").set_value([]).run()
    assert not at.exception and not at.error
    assert [s.value for s in at.subheader] == [] and captions(at, "alpha x agreement") == []
    assert "Choose at least one layer in the sidebar to see its maps." in [i.value for i in at.info]


def test_the_package_ships_the_sample_garments(monkeypatch):
    """A wheel has no sample_images/: the page then uses the Fashion-MNIST samples inside the package (a link to the
    clone's folder, copied into the wheel), so samples and the scene composer work in an installed app too."""
    packaged = os.path.join(os.path.dirname(settings.__file__), "samples")
    clone = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_images")
    assert composer.garment_files(os.path.join(packaged, "fashion-mnist")) == \
        composer.garment_files(os.path.join(clone, "fashion-mnist")) and len(composer.garment_files()) == 30
    monkeypatch.delenv("GATTA_VIZ_SAMPLES", raising=False)
    assert settings.samples_dir() == clone
    monkeypatch.setattr(settings, "_REPO", "/nonexistent")
    assert settings.samples_dir() == packaged
    assert uploads.list_samples() == [f"fashion-mnist/{n}" for n in composer.garment_files()]


# ---------------------------------------------------------------- the composer and cued renders (from test_cue_interfaces)
GARMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_images", "fashion-mnist")


@pytest.fixture
def scene_lm(tmp_path):
    save_scene_checkpoint(tmp_path / "scene.pt")
    return gv.load_model(str(tmp_path / "scene.pt"))


def test_composer_composites_exactly_like_make_scenes():
    from gatta_viz.data.scenes import compose_items, make_scenes

    source = gv.load_fashion_mnist("test").subset(300)
    s = make_scenes(source, 40, seed=11)
    for i in range(40):
        tiles = [source.images[int(j), 0].numpy() for j in s.sources[i]]
        # the offsets make_scenes used: each box minus the box of the tile's own bright pixels
        offsets = []
        for k, tile in enumerate(tiles):
            ys, xs = np.nonzero(tile > 16)
            offsets.append((int(s.boxes[i, k, 0]) - xs.min(), int(s.boxes[i, k, 1]) - ys.min()))
        scene = compose_items(tiles, offsets, (48, 48))
        assert np.array_equal(scene.image, s.images[i, 0].numpy())
        assert np.array_equal(scene.boxes, s.boxes[i].numpy())
        visible = (scene.layers > 16) & (scene.layers >= scene.layers[::-1])
        assert np.array_equal(visible, s.masks[i].numpy()) and np.array_equal(scene.masks, s.masks[i].numpy())
    # the sample garment files are the Fashion-MNIST test images they are named after
    test = gv.load_fashion_mnist("test")
    files = ["trouser_test00002.png", "bag_test00018.png"]
    scene = composer.compose_from_samples(files, [(3, 7), (20, 15)], (48, 48), SCENE_CLASSES, GARMENTS)
    by_hand = compose_items([test.images[2, 0].numpy(), test.images[18, 0].numpy()], [(3, 7), (20, 15)], (48, 48))
    assert np.array_equal(scene.image, by_hand.image) and np.array_equal(scene.composite.boxes, by_hand.boxes)
    assert scene.labels == ["Trouser", "Bag"] and scene.name == "scene: Trouser at (3, 7) + Bag at (20, 15)"
    boxes = scene.composite.boxes
    assert list(scene.outlines()) == [(tuple(boxes[0].tolist()), "Trouser", gv.OUTLINE_COLOURS[0]),
                                      (tuple(boxes[1].tolist()), "Bag", gv.OUTLINE_COLOURS[1])]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(scene.png()))), scene.image)
    with pytest.raises(ValueError, match=r"^item 2 \(28x28\) at x=30, y=0 does not fit the 48x48 canvas"):
        compose_items(tiles, [(0, 0), (30, 0)], (48, 48))


def test_composer_names_bad_choices_and_knows_where_it_applies(scene_lm, monkeypatch):
    monkeypatch.delenv("GATTA_VIZ_SAMPLES", raising=False)
    with pytest.raises(ValueError, match=r"garment 2 \(28x28\) at x=21, y=0 does not fit the 48x48 canvas: x must be in "
                                         r"0\.\.20 and y in 0\.\.20"):
        composer.compose_from_samples(["trouser_test00002.png", "bag_test00018.png"], [(0, 0), (21, 0)], (48, 48),
                                      SCENE_CLASSES, GARMENTS)
    with pytest.raises(ValueError, match="unknown garment '../photos/rocket.jpg'"):
        composer.load_garment("../photos/rocket.jpg", GARMENTS)
    assert composer.garment_label("t-shirt-top_test00019.png", SCENE_CLASSES) == "T-shirt/top"
    assert composer.garment_label("ankle-boot_test00000.png", SCENE_CLASSES) == "Ankle boot"
    assert composer.garment_label("mystery.png", SCENE_CLASSES) == "mystery"
    assert composer.composer_canvas(scene_lm) == (48, 48) and composer.composer_canvas(gv.load_model()) is None
    assert text.cue_options(scene_lm) == [text.NO_CUE] + SCENE_CLASSES
    assert text.cue_options(gv.load_model("fmnist-resnet")) == []
    assert len(composer.garment_files()) == 30


def test_app_render_under_a_cue_with_outlines(scene_lm):
    lm = scene_lm
    scene = composer.compose_from_samples(["trouser_test00002.png", "bag_test00018.png"], [(0, 0), (20, 20)], (48, 48),
                                          SCENE_CLASSES, GARMENTS)
    img = Image.open(io.BytesIO(scene.png()))
    r = rendering.render(lm, "scene.png", img, gv.MapOptions(cue="Trouser"), outlines=scene.outlines())
    x = gv.prepare_image(img, lm.preprocess).tensor
    with torch.no_grad():
        cued, plain = lm.model.trace(x, query=lm.cue("Trouser")), lm.model.trace(x)
    assert r.cue == "Trouser" and r.cued_top_pass2[0]["index"] == int(cued.logits_pass2.argmax())
    assert r.top_pass2[0]["index"] == int(plain.logits_pass2.argmax())
    assert set(r.cued_overlays) == set(r.overlays) == {"layer1", "layer2", "layer3"}
    assert all(o.size == (192, 192) for o in list(r.overlays.values()) + list(r.cued_overlays.values()))
    assert r.shown_image.size == (192, 192) and r.outline_caption() == "outlines: Trouser (green), Bag (yellow)"
    np.testing.assert_allclose(r.cued_dense["fc"], (1 + cued.layers["fc"].alpha * cued.agreement("fc"))[0].numpy(), atol=1e-6)
    npz = np.load(io.BytesIO(r.npz))
    assert "uncued/raw/layer1" in npz.files and "q_pass1" in npz.files
    assert Image.open(io.BytesIO(r.figure_png())).size[0] > 500
    plain_r = rendering.render(lm, "scene.png", img, gv.MapOptions(cue=text.cue_of(text.NO_CUE)))
    assert plain_r.cue is None and plain_r.cued_overlays == {} and plain_r.top_pass2 == r.top_pass2
    with pytest.raises(ValueError, match="a top-down cue needs a GAttA model"):
        rendering.render(gv.load_model("fmnist-resnet"), "x.png", img, gv.MapOptions(cue="Trouser"))
