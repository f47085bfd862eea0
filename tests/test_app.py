"""The Streamlit app driven by streamlit's AppTest: predictions, layer panels, downloads, bad files, other models."""
import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

import gatta_viz as gv

APP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app", "streamlit_app.py")


def captions(at, prefix):
    out = []
    for el in at.get("image"):
        for img in el.proto.imgs:
            if img.caption.startswith(prefix):
                out.append(img.caption)
    return out


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
    monkeypatch.delenv("GATTA_VIZ_FILES", raising=False)
    return folder


def expected_top1(path, name="fmnist-gatta-resnet"):
    lm = gv.load_model(name)
    x = gv.prepare_image(gv.load_image(str(path)), lm.preprocess).tensor
    with torch.no_grad():
        t = lm.model.trace(x) if lm.is_gatta else None
        logits = t.logits_pass2[0] if t is not None else lm.model(x)[0]
        logits1 = t.logits_pass1[0] if t is not None else None
    return gv.topk(logits, lm.classes, 1)[0], (gv.topk(logits1, lm.classes, 1)[0] if logits1 is not None else None)


def test_sample_image_predictions_panels_and_downloads(samples):
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception and not at.error
    at.multiselect(key="samples").set_value(["img1.png"]).run()
    assert not at.exception and not at.error
    top2, top1 = expected_top1(samples / "img1.png")
    md = [m.value for m in at.markdown]
    assert any(v.startswith("**Pass 2 (model output)**\n1. " + f"{top2['label']}: {100 * top2['prob']:.1f}%") for v in md)
    assert any(v.startswith("**Pass 1 (no attention)**\n1. " + f"{top1['label']}: {100 * top1['prob']:.1f}%") for v in md)
    assert len(captions(at, "agreement ")) == 3  # layer1, layer2, layer3
    assert len(captions(at, "Grad-CAM ")) == 3
    assert len(captions(at, "what the model saw")) == 1
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download figure (PNG)", "Download raw maps (.npz)"]
    assert any("Fashion-MNIST" in i.value or "fashion-mnist" in i.value for i in at.info)  # the model's domain

    at.multiselect(key="layers").set_value(["layer2", "layer3"]).run()
    assert [c.split(",")[0] for c in captions(at, "agreement ")] == ["agreement layer2", "agreement layer3"]

    at.radio(key="map").set_value("alpha x agreement (what each layer boosts)").run()
    assert not at.exception and not at.error
    assert [c.split(",")[0] for c in captions(at, "alpha x agreement ")] == ["alpha x agreement layer2", "alpha x agreement layer3"]


def test_bad_files_are_named_and_good_file_still_renders(samples, tmp_path, monkeypatch):
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
    big.write_bytes(b"BM" + b"\x00" * (11 * 1024 * 1024))  # over the 10 MB upload limit
    files = [empty, text, good, trunc, bomb, big]
    monkeypatch.setenv("GATTA_VIZ_FILES", os.pathsep.join(str(f) for f in files))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("empty.png" in e and "empty (0 bytes)" in e for e in errors), errors
    assert any("notes.png" in e and "not a recognised image format" in e for e in errors), errors
    assert any("truncated.jpg" in e and "truncated or corrupt" in e for e in errors), errors
    assert any("bomb.png" in e and "pixel limit" in e for e in errors), errors
    assert any("big.bmp" in e and "limit" in e for e in errors), errors
    assert len(errors) == 5
    assert [s.value for s in at.subheader] == ["img2.png"]
    top2, _ = expected_top1(good)
    assert any(m.value.startswith(f"**Pass 2 (model output)**\n1. {top2['label']}") for m in at.markdown)


def test_plain_model_shows_gradcam_and_says_no_agreement(samples):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.selectbox(key="model").set_value("fmnist-resnet").run()
    at.multiselect(key="samples").set_value(["img1.png"]).run()
    assert not at.exception and not at.error
    assert any("no agreement maps" in w.value for w in at.warning)
    assert captions(at, "agreement ") == []
    assert len(captions(at, "Grad-CAM ")) == 3
    top, _ = expected_top1(samples / "img1.png", "fmnist-resnet")
    assert any(m.value.startswith(f"**Prediction**\n1. {top['label']}") for m in at.markdown)


def test_bad_checkpoint_path_shows_error(samples, tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"garbage")
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.selectbox(key="model").set_value("checkpoint file...").run()
    at.text_input(key="ckpt_path").input(str(bad)).run()
    assert not at.exception
    assert any("Could not load the model" in e.value and "corrupt" in e.value for e in at.error)


def test_renders_from_concurrent_sessions_take_turns_and_match_one_at_a_time(samples, monkeypatch):
    """Streamlit sessions are threads sharing the cached model; its hooks must not see another session's trace."""
    import threading

    monkeypatch.syspath_prepend(os.path.dirname(APP))
    import logic

    lm = logic.load_model(gv.DEFAULT_MODEL)
    imgs = [gv.load_image(str(p)) for p in sorted(samples.glob("*.png"))]
    alone = [logic.render(lm, f"{i}.png", img, gradcam=True) for i, img in enumerate(imgs)]

    # the lock is what makes them take turns: a render waits while it is held
    done = threading.Event()
    with logic.RENDER_LOCK:
        t = threading.Thread(target=lambda: (logic.render(lm, "0.png", imgs[0], gradcam=False), done.set()))
        t.start()
        assert not done.wait(0.5)
    t.join(30)
    assert done.is_set()

    results, errors = {}, []

    def work(j):
        try:
            for rep in range(2):
                results[(j, rep)] = logic.render(lm, f"{j % 2}.png", imgs[j % 2], gradcam=True)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(j,)) for j in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors
    for (j, _), r in results.items():
        want = alone[j % 2]
        assert r.top_pass2 == want.top_pass2 and r.top_pass1 == want.top_pass1
        got_maps, want_maps = np.load(io.BytesIO(r.npz)), np.load(io.BytesIO(want.npz))
        assert sorted(got_maps.files) == sorted(want_maps.files)
        for key in want_maps.files:
            assert np.array_equal(got_maps[key], want_maps[key]), key
