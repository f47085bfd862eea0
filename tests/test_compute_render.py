"""The compute layer's options and records, the render layer's typed figure geometry, its one outline model and its
one writer of an explanation's files."""
import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import gatta_viz as gv
from gatta_viz.render.fig3 import fig3_spec
from gatta_viz.render.fig3_layout import ColorbarBox, DenseChart, HeaderBox, LegendText, MapPanel, RowTitle, layout_fig3
from gatta_viz.render.outlines import Outline, outline_shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, "sample_images", "fashion-mnist")


@pytest.fixture(scope="module")
def toy():
    return gv.load_model("fmnist-gatta-toy")


@pytest.fixture(scope="module")
def bag(toy):
    return gv.prepare_image(gv.load_image(os.path.join(SAMPLES, "bag_test00018.png")), toy.preprocess)


# ------------------------------------------------------------------ options
def test_map_options_validate_and_replace():
    o = gv.MapOptions()
    assert (o.gain, o.signed, o.joint, o.layers, o.cue, o.compare, o.gradcam, o.k) == (True, True, False, None, None,
                                                                                       True, True, 3)
    assert o.replace(layers=["layer2"]).layers == ("layer2",) and o.layers is None  # a copy; lists become tuples
    assert o.replace(gain=False).map_kind == "raw agreement (sign set by training)"
    for bad, message in [({"k": 0}, "k must be a whole number >= 1"), ({"gain": "yes"}, "gain must be True or False"),
                         ({"layers": "layer2"}, "list of layer names"), ({"layers": []}, "layers is empty"),
                         ({"gradcam_target": -1}, "class index >= 0")]:
        with pytest.raises(ValueError, match=message):
            gv.MapOptions(**bad)
    with pytest.raises(ValueError, match=r"unknown map option\(s\) \['gian'\]"):
        o.replace(gian=False)
    q = torch.ones(8)
    assert o.replace(cue=q) == o.replace(cue=q.clone()) != o.replace(cue=2 * q)  # query tensors compare by value
    assert o.replace(cue="Bag") != o.replace(cue=q) and o == gv.MapOptions() and hash(o) == hash(gv.MapOptions())


def test_figure_options_validate_and_replace():
    f = gv.FigureOptions()
    assert (f.cmap, f.opacity, f.layout, f.dpi, f.fmt, f.outlines) == ("RdBu_r", 0.5, "double", 150, "png", False)
    assert f.replace(layout="single").layout == "single"
    for bad, message in [({"cmap": "viridus"}, "did you mean"), ({"opacity": 1.5}, r"opacity must be a number in \[0, 1\]"),
                         ({"opacity": float("nan")}, "opacity"), ({"layout": "a4"}, "layout must be one of"),
                         ({"dpi": 9}, "dpi must be a whole number from 10 to 1200"), ({"dpi": 1201}, "dpi"),
                         ({"fmt": "jpg"}, "figure format must be one of")]:
        with pytest.raises(ValueError, match=message):
            gv.FigureOptions(**bad)
    with pytest.raises(ValueError, match="unknown figure option"):
        f.replace(colour="red")


def test_explain_takes_an_options_object_or_keywords_alike(toy, bag):
    a = gv.explain(toy, bag, gv.MapOptions(gain=False, joint=True), gradcam=False)
    b = gv.explain(toy, bag, gain=False, joint=True, gradcam=False)
    assert a.options == b.options and a.options.joint and not a.options.gain
    for n in a.heatmaps:
        assert np.array_equal(a.heatmaps[n], b.heatmaps[n])
    with pytest.raises(ValueError, match="options must be a gatta_viz.MapOptions"):
        gv.explain(toy, bag, ["layer2"])


# ------------------------------------------------------------------ records
def test_the_record_holds_uncued_and_cued_results_explicitly(bag):
    scene_lm = gv.load_model("fmnist-pairs-gatta-resnet")
    prep = gv.prepare_image(gv.load_image(os.path.join(REPO, "sample_images", "scenes", "scene_00000.png")),
                            scene_lm.preprocess)
    ex = gv.explain(scene_lm, prep, cue="Trouser", gradcam=False)
    assert ex.compare and ex.rows == [ex.uncued, ex.cued] and ex.shown is ex.cued
    assert ex.cued.cue == "Trouser" and ex.uncued.cue is None and ex.trace is ex.cued.trace
    with torch.no_grad():
        plain = scene_lm.model.trace(prep.tensor)
        cued = scene_lm.model.trace(prep.tensor, query=scene_lm.cue("Trouser"))
    np.testing.assert_array_equal(ex.uncued.raw["layer2"], plain.agreement("layer2")[0].numpy())
    np.testing.assert_array_equal(ex.cued.raw["layer2"], cued.agreement("layer2")[0].numpy())
    np.testing.assert_array_equal(ex.cued.native["fc"], (cued.layers["fc"].alpha * cued.agreement("fc"))[0].numpy())
    alone = gv.explain(scene_lm, prep, cue="Trouser", compare=False, gradcam=False)
    assert alone.uncued is None and alone.rows == [alone.cued] and not alone.compare
    none = gv.explain(scene_lm, prep, gradcam=False)
    assert none.cued is None and none.rows == [none.uncued] and none.cue is None


def test_a_plain_cnn_is_explained_by_the_library(bag):
    lm = gv.load_model("fmnist-resnet")
    assert not gv.is_gatta(lm) and not gv.is_gatta(lm.model) and gv.is_gatta(gv.load_model("fmnist-gatta-toy"))
    assert gv.is_gatta(gv.load_model("fmnist-gatta-resnet").model) and not gv.is_gatta(torch.nn.Linear(2, 2))
    assert gv.gradcam_layers(lm) == ["layer1", "layer2", "layer3"]
    ex = gv.explain(lm, bag, gradcam_target=3)
    assert not ex.is_gatta and ex.uncued.trace is None and ex.heatmaps == {} and ex.top_pass1 == ex.top_pass2
    with torch.no_grad():
        logits = lm.model(bag.tensor)[0]
    assert ex.prediction["index"] == int(logits.argmax())
    want = gv.normalize({n: gv.upsample(gv.gradcam(lm.model, bag.tensor, n, 3)[0], (28, 28)) for n in ex.gradcam})
    for n in ("layer1", "layer2", "layer3"):
        np.testing.assert_allclose(ex.gradcam[n], want[n], atol=1e-6)
    s = ex.summary()
    assert "plain CNN" in s["model_kind"] and "maps" not in s and s["alphas"] == {}
    npz = np.load(io.BytesIO(ex.to_npz()))
    assert sorted(npz.files) == ["gradcam/layer1", "gradcam/layer2", "gradcam/layer3", "image", "logits"]
    files = {f.key: f for f in gv.explanation_files(ex, "bag")}
    assert "figure" not in files and set(files) == {"overlay_layer1", "overlay_layer2", "overlay_layer3", "maps",
                                                    "summary"}
    with pytest.raises(ValueError, match=r"gradcam_target 10 is not a class of this model \(0..9\)"):
        gv.explain(lm, bag, gradcam_target=10)
    with pytest.raises(ValueError, match=r"gradcam_target 10 is not a class of this model \(0..9\)"):
        gv.explain(gv.load_model("fmnist-gatta-toy"), bag, gradcam_target=10)
    with pytest.raises(ValueError, match="a top-down cue needs a GAttA model: fmnist_resnet"):
        gv.explain(lm, bag, cue="Bag")
    with pytest.raises(ValueError, match="Fig. 3 draws GAttA maps"):
        gv.fig3(ex)


def test_explanation_from_a_trace_equals_explain_without_gradcam(toy, bag):
    ex = gv.explain(toy, bag, gradcam=False, ablation=False)
    with torch.no_grad():
        t = toy.model.trace(bag.tensor)
    rec = gv.explanation_from_trace(t, bag.shown, 0, classes=toy.classes)
    for n in ex.heatmaps:
        np.testing.assert_array_equal(rec.heatmaps[n], ex.heatmaps[n])
    assert rec.top_pass2 == ex.top_pass2 and rec.scales == ex.scales
    with pytest.raises(ValueError, match="fig3 draws an explanation record"):
        gv.fig3(bag.shown)


# ------------------------------------------------------------------ render: geometry, outlines, writer
def test_fig3_geometry_is_typed_and_follows_the_record(toy, bag):
    ex = gv.explain(toy, bag, gradcam=False)
    spec = fig3_spec(ex, gv.FigureOptions(layout="single"))
    lay = layout_fig3(spec)
    kinds = [type(i) for i in lay.items]
    assert kinds[0] is HeaderBox and kinds.count(ColorbarBox) == 1 and kinds.count(LegendText) == 1
    panels = [i for i in lay.items if isinstance(i, MapPanel)]
    assert [p.layer for p in panels] == [None, "conv1", "conv2", "conv3"] and {p.row for p in panels} == {0}
    assert [c.layer for c in lay.items if isinstance(c, DenseChart)] == ["fc1", "fc2"]
    assert not any(isinstance(i, RowTitle) for i in lay.items) and lay.width == 3.5
    for i in lay.items:  # every part inside the page
        assert 0 <= i.left and i.left + i.width <= lay.width + 1e-9 and 0 <= i.top and i.top + i.height <= lay.height
    fig = gv.fig3(ex, layout="single")
    assert tuple(fig.get_size_inches()) == pytest.approx((3.5, lay.height))


def test_one_outline_model_places_lines_for_pil_and_matplotlib_alike():
    o = [Outline((2, 3, 10, 12), "a")]
    pil = outline_shapes(o, (4.0, 4.0))[0]  # an image enlarged 4x
    assert pil.rect == (8.0, 12.0, 40.0, 48.0) and pil.colour == "#00e676" and pil.segments is None
    mpl = outline_shapes(o, (0.5, 0.5), shift=-0.5)[0]  # a 14x14 map of a 28x28 input, pixel centres on integers
    assert mpl.rect == (0.5, 1.0, 4.5, 5.5)
    photo = outline_shapes(o, (2.0, 2.0), origin=(1.0, 0.0))[0]  # an original photo: content box at x = 1
    assert photo.rect == (2.0, 6.0, 18.0, 24.0)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    m = outline_shapes([Outline((1, 1, 3, 3), "m", mask=mask)], (2.0, 2.0))[0]
    assert m.rect == (2.0, 2.0, 6.0, 6.0) and m.segments.shape == (8, 2, 2) and m.segments.min() == 2 and m.segments.max() == 6
    drawn = np.asarray(gv.draw_outlines(np.zeros((28, 28)), o, scale=4, labels=False))
    assert (drawn[12 + 5, 8] == [0, 230, 118]).all()  # the left edge, in the outline's colour


def test_the_writer_writes_what_explanation_files_makes(toy, bag, tmp_path):
    ex = gv.explain(toy, bag, gradcam=False)
    opts = gv.FigureOptions(fmt="svg", dpi=72)
    files = gv.explanation_files(ex, "bag", opts, source="bag.png", extra={"note": 1})
    assert [f.key for f in files] == ["figure", "overlay_conv1", "overlay_conv2", "overlay_conv3", "maps", "summary"]
    assert files[0].name == "bag_fig3.svg" and files[0].data.lstrip().startswith(b"<?xml")
    paths = gv.write_explanation(ex, str(tmp_path), "bag", opts, source="bag.png", extra={"note": 1})
    assert list(paths) == [f.key for f in files]
    for f in files[1:]:  # the same bytes on disk as in memory (the figure's SVG carries a date: not compared)
        assert open(paths[f.key], "rb").read() == f.data
    summary = json.load(open(paths["summary"]))
    assert summary["source"] == "bag.png" and summary["note"] == 1 and summary["maps"] == "alpha x agreement"
    with Image.open(paths["overlay_conv2"]) as im:
        assert im.size == (28, 28)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths.values())


def test_a_failed_write_leaves_no_file_behind(toy, bag, tmp_path, monkeypatch):
    ex = gv.explain(toy, bag, gradcam=False)
    from gatta_viz.render import write as writer

    (tmp_path / "taken.json").mkdir()  # a folder where the summary should go: refused before anything is written
    with pytest.raises(IsADirectoryError, match="taken.json is a folder"):
        gv.write_explanation(ex, str(tmp_path), "taken")
    assert os.listdir(tmp_path) == ["taken.json"]
    real, calls = writer.atomic_write, []

    def fails_at_the_third(path, mode="w", encoding=None):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("no space left on device")
        return real(path, mode, encoding)

    monkeypatch.setattr(writer, "atomic_write", fails_at_the_third)
    with pytest.raises(OSError, match="no space"):
        gv.write_explanation(ex, str(tmp_path / "o"), "bag")
    assert len(calls) == 3 and os.listdir(tmp_path / "o") == []  # the two files written first are removed too


# ------------------------------------------------------------------ where the original lies in the input
def test_placement_follows_the_preprocessing_by_hand():
    pad = gv.placement_of((56, 28), None, (28, 28))  # a 2:1 image padded into 28x28: content rows 7..21
    assert pad.crop is None and pad.to_original() == ((2.0, 2.0), (0.0, -14.0))
    crop = gv.placement_of((64, 48), {"crop": "center", "resize": 32}, (28, 28))
    # shorter side 48 -> 32, so 64 -> int(32 * 64 / 48) = 42; crop 28x28 from (7, 2) of the 42x32 image, whose
    # pixels are 64/42 original pixels wide and 48/32 high
    sx, sy = 64 / 42, 48 / 32
    assert crop.crop == pytest.approx((7 * sx, 2 * sy, 35 * sx, 30 * sy))
    assert crop.to_original() == (pytest.approx((sx, sy)), pytest.approx((7 * sx, 2 * sy)))


def test_a_centre_crop_model_overlays_and_outlines_the_cropped_part_of_the_original(toy):
    lm = gv.LoadedModel(toy.model, toy.builder, toy.kwargs, toy.classes,
                        {**toy.preprocess, "crop": "center", "resize": 32}, toy.meta, toy.path)
    rng = np.random.default_rng(1)
    photo = Image.fromarray((rng.random((48, 64)) * 255).astype(np.uint8), "L")
    prep = gv.prepare_image(photo, lm.preprocess)
    ex = gv.explain(lm, prep, gradcam=False)
    sx, sy = 64 / 42, 48 / 32
    assert ex.placement.crop == pytest.approx((7 * sx, 2 * sy, 35 * sx, 30 * sy))  # x 10.7..53.3, y 3..45 of 64x48
    over = np.asarray(gv.explanation_overlays(ex, on="original")["conv2"]).astype(int)
    plain = np.asarray(photo.convert("RGB")).astype(int)
    assert over.shape == plain.shape
    assert np.array_equal(over[:, :10], plain[:, :10]) and np.array_equal(over[:, 54:], plain[:, 54:])  # not shown
    assert np.array_equal(over[:3], plain[:3]) and np.array_equal(over[45:], plain[45:])
    assert (over[5:44, 12:51] != plain[5:44, 12:51]).any(-1).mean() > 0.9  # the map is blended over the crop
    # an item given in the photo's pixels lands in the input through the crop (clipped to it)
    (box,) = [o.box for o in gv.rescale_outlines([((16, 6, 40, 48), "x")], photo.size, (28, 28), ex.placement)]
    assert box == pytest.approx(((16 - 7 * sx) / sx, (6 - 3) / sy, (40 - 7 * sx) / sx, 28.0))  # bottom clipped
    assert gv.rescale_outlines([((0, 0, 8, 8), "outside")], photo.size, (28, 28), ex.placement) == []
    # outlines given in input pixels land on the original through the crop: the whole input is the crop's box
    drawn = np.asarray(gv.explanation_overlays(ex, on="original", outlines=[((0, 0, 28, 28), "")])["conv2"])
    assert drawn.shape == (3 * 48, 3 * 64, 3)  # enlarged 3x (to about 192 pixels)
    left = round(3 * 7 * sx)
    assert (drawn[72, left] == [0, 230, 118]).all() and not (drawn[72, left - 3] == [0, 230, 118]).all()


def test_a_non_finite_pass_2_is_named_as_such_not_blamed_on_a_map():
    torch.manual_seed(0)
    m = gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), d=8).eval()
    x = torch.randn(3, 1, 28, 28)
    with pytest.warns(gv.UntrainedGAttAWarning):  # alphas start at 0: finite, explained, and said to be untrained
        assert len(gv.explain(m, x, gradcam=False)) == 3
    m.alpha_of("layer2").data.fill_(1e38)
    m.alpha_of("layer3").data.fill_(1e38)
    with pytest.raises(ValueError, match=r"^image 0 of the batch \(and 2 more\): non-finite trace: pass 2") as e:
        gv.explain(m, x, gradcam=False)
    assert "contains NaN" not in str(e.value)
    with pytest.raises(ValueError, match=r"^non-finite trace: pass 2"):
        gv.explain(m, x[:1], gradcam=False)
