"""The user-facing side of top-down cues and two-garment scenes: explain(cue=...), the uncued-vs-cued figure,
item outlines (API, figures, overlays, export indexes), `gatta-viz explain --cue/--boxes`, and the app's scene
composer (composites exactly like make_scenes) and cued renders. Checked against the model's own trace by hand."""
import io
import itertools
import json
import os

import matplotlib.text as mtext
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Rectangle
from PIL import Image

import gatta_viz as gv
from gatta_viz.compute.cue import CUSTOM_QUERY, resolve_cue
from gatta_viz.compute.maps import normalize_shared, upsample
from gatta_viz.render.fig3 import Fig3Renderer
from gatta_viz.render.fig3_text import FONT_PT
from gatta_viz.render.outline_draw import draw_outlines
from gatta_viz.render.outlines import OUTLINE_COLOURS, Outline, as_outlines, outlines_from_index, rescale_outlines
from gatta_viz.render.overlays import outlined_input
from gatta_viz.cli import main
from gatta_viz.data.clutter import export_clutter
from gatta_viz.data.scenes import export_scenes, make_scenes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GARMENTS = os.path.join(REPO, "sample_images", "fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SCENE_PRE = {"size": [48, 48], "channels": 1, "mean": [0.17], "std": [0.31], "background": "dark"}
KWARGS = {"in_channels": 1, "num_classes": 10, "input_size": [48, 48], "widths": [8, 16, 32], "blocks": [1, 1, 1],
          "d": 8, "stem_stride": 2, "alpha_init": 0.3}


def save_scene_checkpoint(path, queries=True, seed=0):
    """A small 48x48 GAttA scene model (alphas 0.3, random keys) with random stored class queries (or none)."""
    torch.manual_seed(seed)
    model = gv.gatta_compact_resnet(**KWARGS).eval()
    q = torch.randn(10, 8) if queries else None
    gv.save_checkpoint(str(path), model, "gatta_compact_resnet", KWARGS, CLASSES, SCENE_PRE,
                       meta={"dataset": "fmnist-pairs"}, class_queries=q)
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"scene": save_scene_checkpoint(d / "scene.pt"), "noq": save_scene_checkpoint(d / "noq.pt", queries=False)}


@pytest.fixture(scope="module")
def lm(ckpts):
    return gv.load_model(ckpts["scene"])


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(gv.load_fashion_mnist("test").subset(300), 24, seed=5)


def scene_prep(lm, scenes, i):
    return gv.prepare_image(Image.fromarray(scenes.images[i, 0].numpy(), "L"), lm.preprocess)


def scene_outlines(scenes, i):
    return [(scenes.boxes[i, k].tolist(), CLASSES[int(scenes.labels[i, k])]) for k in range(2)]


# ---------------------------------------------------------------- explain under a cue = the trace under the query
def test_a_48x48_scene_goes_in_at_its_own_size(lm, scenes):
    prep = scene_prep(lm, scenes, 0)
    assert prep.tensor.shape == (1, 1, 48, 48) and not prep.inverted
    assert np.array_equal(np.round(prep.shown[:, :, 0] * 255).astype(np.uint8), scenes.images[0, 0].numpy())


def test_cued_explanation_is_the_trace_under_the_stored_query(lm, scenes):
    prep = scene_prep(lm, scenes, 1)
    x = prep.tensor
    ex = gv.explain(lm, prep, cue="Trouser")
    q = lm.cue("Trouser")
    with torch.no_grad():
        cued, plain = lm.model.trace(x, query=q), lm.model.trace(x)
    assert ex.cue == "Trouser" and ex.trace.meta["cued"] and ex.uncued.cue is None and not ex.uncued.trace.meta["cued"]
    assert torch.equal(ex.trace.q_avg[0], q) and torch.allclose(ex.trace.q_pass1[0], plain.q_avg[0])
    for n in cued.layers:
        np.testing.assert_array_equal(ex.raw[n], cued.agreement(n)[0].numpy())
        np.testing.assert_array_equal(ex.uncued.raw[n], plain.agreement(n)[0].numpy())
    assert not np.allclose(ex.raw["layer2"], ex.uncued.raw["layer2"])  # the cue changed the maps
    p2 = torch.softmax(cued.logits_pass2[0].double(), 0)
    assert ex.top_pass2[0]["index"] == int(p2.argmax()) and ex.top_pass2[0]["prob"] == pytest.approx(float(p2.max()))
    assert [r["index"] for r in ex.top_pass1] == [r["index"] for r in ex.uncued.top_pass1]  # pass 1 is not cued
    # one colour scale per layer for both: the larger max |gain map| of the two, at input size
    for n in ex.heatmaps:
        mc = upsample((cued.layers[n].alpha * cued.agreement(n))[0].numpy(), (48, 48))
        mu = upsample((plain.layers[n].alpha * plain.agreement(n))[0].numpy(), (48, 48))
        s = max(np.abs(mc).max(), np.abs(mu).max())
        assert ex.scales[n] == ex.uncued.scales[n] == pytest.approx(s, rel=1e-6)
        np.testing.assert_allclose(ex.heatmaps[n] * s, mc, atol=1e-5 * s)
        np.testing.assert_allclose(ex.uncued.heatmaps[n] * s, mu, atol=1e-5 * s)
        assert max(np.abs(ex.heatmaps[n]).max(), np.abs(ex.uncued.heatmaps[n]).max()) == pytest.approx(1.0)
    # the layer table's ablation is computed under the cue too
    pred = ex.prediction["index"]
    with torch.no_grad():
        for r in ex.table:
            off = torch.softmax(lm.model.trace(x, alpha_override={r["layer"]: 0.0}, query=q).logits_pass2[0].double(), 0)
            assert r["dprob_pred"] == pytest.approx(float(p2[pred] - off[pred]), abs=1e-9)
    # Grad-CAM of the prediction under the cue: captum on the cued forward, by hand
    from captum.attr import LayerGradCam

    cams = []
    for fwd, t in ((lambda inp: lm.model.trace(inp, query=q).logits_pass2, cued), (lm.model, plain)):
        cams.append({n: upsample(LayerGradCam(fwd, dict(lm.model.backbone.named_modules())[n]).attribute(
            x, target=int(t.logits_pass2.argmax()), relu_attributions=False).detach().sum(1)[0].numpy(), (48, 48))
            for n in ex.heatmaps})
    (gc_c, gc_u), _ = normalize_shared(cams)
    for n in ex.heatmaps:
        np.testing.assert_allclose(ex.gradcam[n], gc_c[n], atol=1e-5)
        np.testing.assert_allclose(ex.uncued.gradcam[n], gc_u[n], atol=1e-5)


def test_a_cue_by_tensor_by_any_letter_case_and_in_batches(lm, scenes):
    preps = [scene_prep(lm, scenes, i) for i in (2, 3, 4)]
    by_name = gv.explain(lm, preps[0], cue="Trouser", gradcam=False)
    by_tensor = gv.explain(lm, preps[0], cue=lm.cue("Trouser"), gradcam=False, compare=False)
    assert by_tensor.cue == CUSTOM_QUERY and by_tensor.uncued is None
    assert gv.explain(lm, preps[0], cue="trouser", gradcam=False).cue == "Trouser"
    bare = gv.explain(lm.model, preps[0].tensor, cue=lm.cue("Trouser"), classes=CLASSES)  # a bare GAttA model, Grad-CAM too
    assert bare.cue == CUSTOM_QUERY and bare.uncued is not None and set(bare.gradcam) == {"layer1", "layer2", "layer3"}
    for n in by_name.raw:
        np.testing.assert_array_equal(by_name.raw[n], by_tensor.raw[n])
        np.testing.assert_array_equal(by_name.raw[n], bare.raw[n])
    batch = gv.explain_batch(lm, preps, cue="Bag", gradcam=False)
    x = torch.cat([p.tensor for p in preps])
    with torch.no_grad():
        t = lm.model.trace(x, query=lm.cue("Bag"))
    for i, ex in enumerate(batch):
        assert ex.cue == "Bag" and ex.uncued is not None
        np.testing.assert_allclose(ex.raw["layer3"], t.agreement("layer3")[i].numpy(), atol=1e-6)
        assert ex.prediction["index"] == int(t.logits_pass2[i].argmax())
    # one query per image, (B, d)
    per_image = gv.explain_batch(lm, x, cue=lm.class_queries[[0, 1, 2]], gradcam=False, ablation=False)
    with torch.no_grad():
        t3 = lm.model.trace(x, query=lm.class_queries[[0, 1, 2]])
    for i, ex in enumerate(per_image):
        np.testing.assert_allclose(ex.raw["fc"], t3.agreement("fc")[i].numpy(), atol=1e-6)


def test_cued_explain_restores_train_mode_and_leaves_no_hooks(lm, scenes):
    x = scene_prep(lm, scenes, 5).tensor
    lm.model.train()
    try:
        gv.explain(lm, x, cue="Coat", gradcam=True)
        assert lm.model.training and all(m.training for m in lm.model.modules())
    finally:
        lm.model.eval()
    for m in lm.model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def test_bad_cues_are_named(lm, ckpts):
    x = torch.zeros(1, 1, 48, 48)
    cases = [
        (gv.load_model("fmnist-resnet"), "Trouser",
         "a top-down cue needs a GAttA model: fmnist_resnet has no GAttA layers, so there is no global query to replace"),
        (lm, "Trousers", "unknown class 'Trousers' to cue with; did you mean 'Trouser'? Classes of scene: T-shirt/top, "
                         "Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot"),
        (gv.load_model(ckpts["noq"]), "Trouser", "model noq has no stored class queries to cue with: store them with "
                                                 "`gatta-viz cues CHECKPOINT OUT`"),
        (lm.model, "Trouser", "a cue given by class name ('Trouser') needs a model loaded with its class queries"),
        (lm, torch.zeros(5), "a cue query must be a float tensor of shape (8,) or (B, 8), got float32 (5,)"),
        (lm, torch.full((8,), float("nan")), "the cue query contains NaN or infinite values"),
        (lm, 3, "cue must be a class name or a query tensor of shape (8,), got int"),
    ]
    for model, cue, message in cases:
        with pytest.raises(ValueError) as e:
            gv.explain(model, x, cue=cue, gradcam=False)
        assert message in str(e.value), (cue, str(e.value))
    assert resolve_cue(lm, None) == (None, None)
    with pytest.raises(ValueError, match=r"query must have shape \(8,\) or \(1, 8\)"):
        gv.explain(lm, x, cue=torch.zeros(2, 8), gradcam=False)  # two queries for one image


# ---------------------------------------------------------------- the uncued-vs-cued figure
def drawn_texts(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    return [(t, t.get_window_extent(r)) for t in fig.findobj(mtext.Text) if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize("layout", ["double", "single"])
def test_uncued_vs_cued_figure_has_two_rows_on_one_scale_per_layer(lm, scenes, layout):
    i = 6
    ex = gv.explain(lm, scene_prep(lm, scenes, i), cue="Sneaker", gradcam=False)
    fig = gv.fig3(ex, gv.FigureOptions(layout=layout), outlines=scene_outlines(scenes, i))
    convs = ["layer1", "layer2", "layer3"]
    # axes: per row the input and three maps, then the colourbar, then fc without and with the cue
    assert len(fig.axes) == 2 * (1 + len(convs)) + 1 + 2
    texts = drawn_texts(fig)
    words = [t.get_text() for t, _ in texts]
    assert "without cue: the query pass 1 pooled from the image" in words and "cued: Sneaker" in words
    header = next(w for w in words if w.startswith("pass 1:"))
    u2, c2 = ex.uncued.prediction, ex.prediction
    assert f"pass 2 without cue: {u2['label']} {100 * u2['prob']:.0f}%" in header
    assert f"cued: Sneaker → pass 2: {c2['label']} {100 * c2['prob']:.0f}%" in header.replace("\n", " ")
    assert sum(w.startswith("without cue\nfc") for w in words) == 1 and sum(w.startswith("cued: Sneaker\nfc") for w in words) == 1
    assert any("each layer's two maps share one scale" in w.replace("\n", " ") for w in words)
    # printed scales: one per map, the same in both rows, each the larger max |alpha x agreement| of the two
    scales = [w for w in words if w.startswith("scale ±")]
    assert len(scales) == 6 and scales[:3] == scales[3:]
    for n, s in zip(convs, scales):
        top = max(float((t.layers[n].alpha * t.agreement(n)[0]).abs().max()) for t in (ex.trace, ex.uncued.trace))
        assert float(s.split("±")[1]) == pytest.approx(top, rel=0.05)
    # the maps shown are the raw gain maps over that shared scale
    rows, shared = normalize_shared([{n: t.layers[n].map(True)[0].numpy() for n in convs} for t in (ex.uncued.trace, ex.trace)])
    for k, n in enumerate(convs):
        np.testing.assert_allclose(fig.axes[1 + k].images[0].get_array(), rows[0][n], atol=1e-6)
        np.testing.assert_allclose(fig.axes[5 + k].images[0].get_array(), rows[1][n], atol=1e-6)
    assert fig.axes[-1].get_ylim() == pytest.approx(fig.axes[-2].get_ylim())  # fc charts on one y-scale
    # outlines: both items on every panel, at the map's resolution, in two colours; a legend with their classes
    for ax, side in [(fig.axes[0], 48), (fig.axes[1], 24), (fig.axes[3], 6), (fig.axes[4], 48), (fig.axes[7], 6)]:
        rects = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(rects) == 2
        for rect, k in zip(rects, range(2)):
            x0, y0, x1, y1 = scenes.boxes[i, k].tolist()
            f = side / 48
            assert rect.get_xy() == pytest.approx((x0 * f - 0.5, y0 * f - 0.5))
            assert rect.get_width() == pytest.approx((x1 - x0) * f)
        assert [r.get_edgecolor()[:3] for r in rects] != [rects[0].get_edgecolor()[:3]] * 2
    labels = [CLASSES[int(c)] for c in scenes.labels[i]]
    assert "outlines:" in words and all(lb in words for lb in labels)
    # journal rules: >= 7 pt, nothing outside the page, no upright texts overlapping
    assert min(t.get_fontsize() for t, _ in texts) >= FONT_PT
    box = fig.bbox
    for t, b in texts:
        assert box.x0 - 0.5 <= b.x0 and b.x1 <= box.x1 + 0.5 and box.y0 - 0.5 <= b.y0 and b.y1 <= box.y1 + 0.5, t.get_text()
    upright = [(t, b) for t, b in texts if t.get_rotation() == 0]
    for (a, ba), (c, bc) in itertools.combinations(upright, 2):
        assert not ba.shrunk(0.98, 0.9).overlaps(bc.shrunk(0.98, 0.9)), (a.get_text(), c.get_text())


def test_a_cued_explanation_alone_says_so_and_the_plain_figure_is_unchanged(lm, scenes):
    prep = scene_prep(lm, scenes, 7)
    ex = gv.explain(lm, prep, cue="Bag", gradcam=False, compare=False)
    words = [t.get_text() for t, _ in drawn_texts(gv.fig3(ex))]
    assert any(w.replace("\n", " ").startswith("cued: Bag   pass 2 (output): " + ex.prediction["label"]) for w in words)
    plain = gv.explain(lm, prep, gradcam=False)
    fig = gv.fig3(plain)
    assert len(fig.axes) == 1 + 3 + 1 + 1 and not any("cue" in t.get_text() for t, _ in drawn_texts(fig))


def test_the_fast_png_of_a_compare_renderer_forgets_the_last_image_and_its_outlines(lm, scenes):
    preps = [scene_prep(lm, scenes, i) for i in (8, 9)]
    x = torch.cat([p.tensor for p in preps])
    with torch.no_grad():
        plain, cued = lm.model.trace(x), lm.model.trace(x, query=lm.cue("Dress"))
    recs = [gv.explanation_from_trace(plain, preps[i].shown, i, classes=CLASSES, cued_trace=cued, cue="Dress")
            for i in range(2)]
    assert recs[0].compare and recs[0].cued.cue == "Dress" and recs[0].uncued.cue is None
    r = Fig3Renderer(recs[0], gv.FigureOptions(layout="single", outlines=True))
    r.update(recs[0], outlines=scene_outlines(scenes, 8))
    first = r.to_png(dpi=80)
    r.update(recs[1], outlines=scene_outlines(scenes, 9))
    second = r.to_png(dpi=80)
    r.update(recs[0], outlines=scene_outlines(scenes, 8))
    assert r.to_png(dpi=80) == first != second
    full = io.BytesIO()
    r.fig.savefig(full, format="png", dpi=80)
    a = np.asarray(Image.open(io.BytesIO(first)).convert("RGB")).astype(int)
    b = np.asarray(Image.open(io.BytesIO(full.getvalue())).convert("RGB")).astype(int)
    diff = np.abs(a - b).max(2)
    assert a.shape == b.shape and diff.max() <= 2 and (diff > 0).mean() < 1e-3
    one_row = gv.explanation_from_trace(plain, preps[0].shown, 0, classes=CLASSES)
    with pytest.raises(ValueError, match="another kind of explanation"):  # a two-row renderer gets a one-row record
        r.update(one_row)
    bare = Fig3Renderer(one_row)
    with pytest.raises(ValueError, match="built without room for outlines"):
        bare.update(one_row, outlines=scene_outlines(scenes, 8))
    with pytest.raises(ValueError, match="another kind of explanation"):  # and the other way round
        bare.update(recs[0])


# ---------------------------------------------------------------- outlines: API, overlays, indexes
def test_outlined_overlays_show_each_box_in_its_colour(lm, scenes):
    i = 10
    ex = gv.explain(lm, scene_prep(lm, scenes, i), cue="Shirt", gradcam=False)
    items = scene_outlines(scenes, i)
    for overlays in (gv.explanation_overlays(ex, outlines=items), gv.explanation_overlays(ex, outlines=items, result=ex.uncued)):
        assert set(overlays) == {"layer1", "layer2", "layer3"}
        for img in overlays.values():
            a = np.asarray(img)
            assert a.shape == (192, 192, 3)  # enlarged 4x: the lines do not hide the 48x48 map
            for k in range(2):
                x0, y0, x1, y1 = scenes.boxes[i, k].tolist()
                colour = np.array([int(OUTLINE_COLOURS[k][j : j + 2], 16) for j in (1, 3, 5)])
                ym = 4 * (y0 + y1) // 2
                assert np.array_equal(a[ym, 4 * x0], colour) or np.array_equal(a[ym, 4 * x1 - 1], colour)
    plain = gv.explanation_overlays(ex)  # without outlines: the model input's own size, as before
    assert all(o.size == (48, 48) for o in plain.values())
    assert np.array_equal(np.asarray(outlined_input(ex, items))[::4, ::4][:2, :2], np.asarray(
        Image.fromarray(np.round(ex.image[:, :, 0] * 255).astype(np.uint8)).convert("RGB"))[:2, :2])


def test_mask_outlines_follow_the_mask_boundary():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:7] = True
    out = np.asarray(draw_outlines(np.zeros((10, 10)), [Outline((3, 2, 7, 5), "m", "#ff0000", mask)], scale=5, labels=False))
    assert np.array_equal(out[17, 15], [255, 0, 0]) and np.array_equal(out[10, 20], [255, 0, 0])  # left and top edges
    assert out[40, 40].sum() == 0 and out[17, 25].sum() == 0  # far away and inside: untouched


def test_outline_inputs_are_checked_and_named():
    assert as_outlines(None) == [] and as_outlines([((0, 0, 0, 0), "empty")]) == []
    a, b = as_outlines([((1, 2, 3, 4), "a"), {"box_xyxy": [5, 6, 7, 8], "class": "b", "mask": "x_mask.png"}])
    assert (a.box, a.label, a.colour, b.box, b.label, b.colour) == ((1, 2, 3, 4), "a", OUTLINE_COLOURS[0], (5, 6, 7, 8),
                                                                    "b", OUTLINE_COLOURS[1])
    for items, message in [
        ([((1, 2, 3), "a")], "outline 1: box must be four numbers"),
        ([((3, 2, 1, 4), "a")], "outline 1: box must have 0 <= x0 < x1"),
        ([((0, 0, 4, 4), "a"), ((40, 40, 50, 49), "b")], "outline 2: box [40, 40, 50, 49] reaches outside the 48x48 image"),
        ([((0, 0, 4, 4), "a", "not-a-colour")], "outline 1: colour must be a matplotlib colour"),
        (["box"], "outline 1: expected an Outline"),
    ]:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            as_outlines(items, (48, 48))
    # boxes of a 48x48 file moved onto a 28x28 model input
    (r,) = rescale_outlines([((12, 0, 36, 24), "x")], (48, 48), (28, 28))
    assert r.box == pytest.approx((7, 0, 21, 14))


def test_outlines_from_the_export_indexes(tmp_path, scenes, clutter_test_set):
    export_scenes(scenes, str(tmp_path / "s"), limit=3)
    found = outlines_from_index(str(tmp_path / "s" / "index.json"))
    assert sorted(found) == ["scene_00000.png", "scene_00001.png", "scene_00002.png"]
    for i in range(3):
        items = found[f"scene_{i:05d}.png"]
        assert [o.box for o in items] == [tuple(b) for b in scenes.boxes[i].tolist()]
        assert [o.label for o in items] == [CLASSES[int(c)] for c in scenes.labels[i]]
        assert [o.colour for o in items] == list(OUTLINE_COLOURS[:2])
    clutter = clutter_test_set.subset(2)
    export_clutter(clutter, str(tmp_path / "c"))
    found = outlines_from_index(str(tmp_path / "c" / "index.json"))
    assert [o.box for o in found["clutter_00001.png"]] == [tuple(clutter.boxes[1].tolist())]
    assert [o.label for o in found["clutter_00001.png"]] == [clutter.classes[int(clutter.labels[1])]]
    (tmp_path / "bad.json").write_text('{"models": []}')
    with pytest.raises(ValueError, match="not an index written by export_scenes or export_clutter"):
        outlines_from_index(str(tmp_path / "bad.json"))
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(ValueError, match="not a JSON file"):
        outlines_from_index(str(tmp_path / "text.json"))


# ---------------------------------------------------------------- the command line
def test_cli_explain_cue_and_boxes(tmp_path, ckpts, lm, scenes, capsys):
    export_scenes(scenes, str(tmp_path / "in"), limit=2)
    out = tmp_path / "out"
    code = main(["explain", str(tmp_path / "in" / "scene_00000.png"), str(tmp_path / "in" / "scene_00001.png"),
                 "--checkpoint", ckpts["scene"], "--cue", "sneaker", "--boxes", str(tmp_path / "in" / "index.json"),
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    index = json.load(open(out / "index.json"))
    assert index["cue"] == "Sneaker" and index["boxes"] == str(tmp_path / "in" / "index.json")
    q = lm.cue("Sneaker")
    for i, rec in enumerate(index["written"]):
        x = scene_prep(lm, scenes, i).tensor
        with torch.no_grad():
            cued, plain = lm.model.trace(x, query=q), lm.model.trace(x)
        assert rec["prediction"]["index"] == int(cued.logits_pass2.argmax())
        assert rec["prediction_without_cue"]["index"] == int(plain.logits_pass2.argmax())
        assert rec["outlined"] == [CLASSES[int(c)] for c in scenes.labels[i]]
        stem = f"scene_{i:05d}"
        summary = json.load(open(out / f"{stem}.json"))
        assert summary["cue"] == "Sneaker" and summary["uncued"]["prediction"] == rec["prediction_without_cue"]
        assert [o["box_xyxy"] for o in summary["outlines"]] == scenes.boxes[i].tolist()
        maps = np.load(out / f"{stem}_maps.npz")
        np.testing.assert_allclose(maps["raw/layer2"], cued.agreement("layer2")[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(maps["uncued/raw/layer2"], plain.agreement("layer2")[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(maps["q_avg"], q.numpy())
        np.testing.assert_allclose(maps["q_pass1"], plain.q_avg[0].numpy(), atol=1e-6)
        for layer in ("layer1", "layer2", "layer3"):
            for tag in ("", "_cued"):
                with Image.open(out / f"{stem}_overlay_{layer}{tag}.png") as im:
                    assert im.size == (192, 192)  # outlined, enlarged
        with Image.open(out / f"{stem}_fig3.png") as im:
            assert im.size[0] == round(7.2 * 150)


def test_cli_cue_errors_are_named_before_any_image_is_explained(tmp_path, ckpts, capsys):
    img = os.path.join(GARMENTS, "bag_test00018.png")
    (tmp_path / "not_an_index.json").write_text('{"scenes": 3}')
    cases = [
        (["--checkpoint", ckpts["scene"], "--cue", "Jacket"],
         "error: --cue: unknown class 'Jacket' to cue with Classes of scene: T-shirt/top, Trouser"),
        (["--checkpoint", ckpts["noq"], "--cue", "Bag"], "error: --cue: model noq has no stored class queries to cue "
                                                         "with: store them with `gatta-viz cues CHECKPOINT OUT`"),
        (["--model", "fmnist-resnet", "--cue", "Bag"], "has no GAttA layers; choose a GAttA model"),
        (["--boxes", str(tmp_path / "missing.json")], "error: argument --boxes: no such file"),
        (["--boxes", str(tmp_path / "not_an_index.json")], "error: --boxes: " + str(tmp_path / "not_an_index.json")
         + ": not an index written by export_scenes or export_clutter"),
    ]
    for extra, message in cases:
        try:
            code = main(["explain", img, "--out", str(tmp_path / "o")] + extra)
        except SystemExit as e:  # a bad argument is refused while parsing
            code = e.code
        assert code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--cue CLASS explain under a top-down cue" in text and "--boxes INDEX.json" in text
