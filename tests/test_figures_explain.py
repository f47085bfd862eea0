"""gv.explain on any GAttA model and on batches, input checks, warnings for untrained GAttA parameters, overlays over
the original image, layer-name suggestions."""
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import gatta_viz as gv
from gatta_viz.compute.checks import UntrainedGAttAWarning
from gatta_viz.compute.explain import explain_batch
from gatta_viz.render.images import content_box, overlay_on_original

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_images", "fashion-mnist")


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), d=8, alpha_init=0.4).eval()


def test_explain_takes_a_plain_gatta_model_and_batches_and_matches_one_image_at_a_time(resnet):
    torch.manual_seed(1)
    x = torch.randn(3, 1, 28, 28)
    exs = gv.explain(resnet, x, gradcam=True, true_label=[1, None, 7])
    assert isinstance(exs, list) and len(exs) == 3
    with torch.no_grad():
        t = resnet.trace(x)
    for i, ex in enumerate(exs):
        assert ex.classes == [str(c) for c in range(10)]
        one = gv.explain(resnet, x[i : i + 1], gradcam=True, true_label=[1, None, 7][i])  # one image: one Explanation
        assert isinstance(one, gv.Explanation)
        for n in t.layers:
            np.testing.assert_allclose(ex.raw[n], t.agreement(n)[i].numpy(), rtol=1e-5, atol=1e-6)
        for n in ex.heatmaps:
            np.testing.assert_allclose(ex.heatmaps[n], one.heatmaps[n], atol=1e-5)
            np.testing.assert_allclose(ex.gradcam[n], one.gradcam[n], atol=1e-4)
            assert np.abs(ex.heatmaps[n]).max() == pytest.approx(1.0)  # gain map, scaled per layer
        for a, b in zip(ex.table, one.table):
            assert a["layer"] == b["layer"] and a["dprob_pred"] == pytest.approx(b["dprob_pred"], abs=1e-6)
        assert [r["index"] for r in ex.top_pass2] == [r["index"] for r in one.top_pass2]
        assert [r["prob"] for r in ex.top_pass2] == pytest.approx([r["prob"] for r in one.top_pass2], abs=1e-6)
    assert exs[0].true_label == 1 and exs[1].true_label is None and exs[2].true_label == 7
    # (C, H, W): one image
    assert isinstance(gv.explain(resnet, x[0], gradcam=False), gv.Explanation)
    assert len(explain_batch(resnet, x[:1], gradcam=False)) == 1  # explain_batch always gives a list


def test_ablation_column_is_the_probability_drop_when_one_alpha_is_zero(resnet):
    torch.manual_seed(2)
    x = torch.randn(2, 1, 28, 28)
    exs = gv.explain(resnet, x, gradcam=False)
    with torch.no_grad():
        full = torch.softmax(resnet(x).double(), 1)
        for i, ex in enumerate(exs):
            pred = ex.prediction["index"]
            for r in ex.table:
                off = torch.softmax(resnet.trace(x, alpha_override={r["layer"]: 0.0}).logits.double(), 1)
                assert r["dprob_pred"] == pytest.approx(float(full[i, pred] - off[i, pred]), abs=1e-9)
    ref = gv.ablation_scores(resnet, x, [0, 1])
    with torch.no_grad():
        logits = resnet(x)
    with_ref = gv.ablation_scores(resnet, x, [0, 1], reference=logits)
    for n in ref:
        np.testing.assert_allclose(ref[n], with_ref[n], atol=1e-12)


def test_explain_restores_train_mode_and_leaves_batchnorm_statistics_alone(resnet):
    x = torch.randn(2, 1, 28, 28)
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    resnet.train()
    try:
        ex = gv.explain(resnet, x, gradcam=True)
        assert resnet.training and all(m.training for m in resnet.modules())
    finally:
        resnet.eval()
    after = resnet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        np.testing.assert_allclose(ex[0].raw["layer2"], resnet.trace(x).agreement("layer2")[0].numpy(), atol=1e-6)


def test_uint8_and_other_bad_inputs_are_named(resnet):
    raw = (torch.rand(1, 1, 28, 28) * 255).to(torch.uint8)
    msg = "expected a float tensor normalised like the training data, got uint8"
    for call in (lambda: gv.explain(resnet, raw), lambda: gv.gradcam(resnet, raw, "layer3", 0),
                 lambda: gv.explain_func(resnet, raw, [0]), lambda: gv.explain_func(resnet, raw.numpy(), [0]),
                 lambda: gv.compare_with_captum(resnet, raw, [0]), lambda: gv.agreement_saliency(resnet, raw)):
        with pytest.raises(ValueError, match=msg):
            call()
    with pytest.raises(ValueError, match="got int64"):
        gv.explain(resnet, torch.zeros(1, 1, 28, 28, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected images \(B, C, H, W\)"):
        gv.explain(resnet, torch.zeros(28, 28))
    with pytest.raises(ValueError, match=r"needs a GAttA model or a classifier returning \(batch, classes\) logits; "
                                         r"Conv2d returned \(1, 1, 28, 28\)"):
        gv.explain(torch.nn.Conv2d(1, 1, 1), torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="needs a model"):
        gv.explain("not a model", torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="true_label has 2 entries for 1 images"):
        gv.explain(resnet, torch.zeros(1, 1, 28, 28), true_label=[1, 2])


def test_layer_names_get_suggestions(resnet):
    x = torch.randn(1, 1, 28, 28)
    with pytest.raises(ValueError, match=r"no layer 'layer9' in CompactResNet; did you mean \['layer3', 'layer2', 'layer1'"):
        gv.gradcam(resnet, x, "layer9", 0)
    with pytest.raises(ValueError, match=r"no conv GAttA layer 'layr2'.*did you mean \['layer2'"):
        gv.explain(resnet, x, layers=["layr2"])


def test_untrained_gatta_parameters_warn_wherever_maps_are_shown():
    torch.manual_seed(0)
    toy = gv.gatta_toy(in_channels=1, input_size=28).eval()  # alphas 0, random keys and queries
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        t = toy.trace(x)
    with pytest.warns(UntrainedGAttAWarning, match="every alpha is 0"):
        ex = gv.explain(toy, x, gradcam=False)
    assert ex.untrained and "every alpha is 0" in ex.summary()["warning"]
    assert all(np.all(h == 0) for h in ex.heatmaps.values())  # the gain map of an untrained model is 0 ...
    with pytest.warns(UntrainedGAttAWarning, match="untrained keys and queries"):
        raw = gv.explain(toy, x, gradcam=False, gain=False)  # ... raw agreement is not, and says why to distrust it
    assert any(np.abs(h).max() > 0 for h in raw.heatmaps.values())
    with pytest.warns(UntrainedGAttAWarning):
        fig = gv.fig3(gv.explanation_from_trace(t, x[0], 0, gain=False))
    texts = [tx.get_text() for tx in fig.texts]
    assert any(s.startswith("WARNING: untrained GAttA parameters") for s in texts)
    hm = gv.conv_heatmaps(t, 0, (28, 28), gain=False)
    with pytest.warns(UntrainedGAttAWarning):
        slider = gv.layer_slider(np.zeros((28, 28)), hm, gain=False, alphas=t.alphas)
    assert "untrained GAttA parameters" in slider.layout.title.text
    with pytest.warns(UntrainedGAttAWarning):
        bars = gv.class_bars(t, 0, [str(i) for i in range(10)])
    assert "every alpha is 0" in bars.layout.title.text
    # a trained model: no warning, no warning text
    with torch.no_grad():
        toy.alpha_of("conv2").fill_(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedGAttAWarning)
        ex = gv.explain(toy, x, gradcam=False)
        fig = gv.fig3(gv.explanation_from_trace(toy.trace(x), x[0], 0))
    assert not ex.untrained and "warning" not in ex.summary()
    assert not any(tx.get_text().startswith("WARNING") for tx in fig.texts)


def test_gatta_resnet18_out_of_the_box_warns():
    model = gv.gatta_resnet18().eval()
    with pytest.warns(UntrainedGAttAWarning):
        gv.explain(model, torch.randn(1, 3, 64, 64), gradcam=False, gain=False)


@pytest.mark.parametrize("size", [(60, 20), (20, 60), (33, 33), (100, 37)])
def test_content_box_is_where_the_preprocessing_puts_the_image(size):
    padded = np.asarray(ImageOps.pad(Image.new("L", size, 255), (28, 28), color=0))
    rows, cols = np.nonzero(padded > 0)
    left, top, w, h = content_box(size, (28, 28))
    assert (left, top, w, h) == (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)


def test_overlay_on_original_lands_on_the_original_pixels():
    # a wide colour photo; a map whose only hot cell is the content's top-left corner in the 28x28 input
    original = Image.new("RGB", (300, 100), (0, 200, 0))
    left, top, w, h = content_box(original.size, (28, 28))  # 28 x 9 rows at the centre
    heat = np.zeros((28, 28), dtype=np.float32)
    heat[top : top + 2, left : left + 3] = 1.0
    heat[:top] = -1.0  # the padding above the content: must not appear
    out = np.asarray(overlay_on_original(original, heat, opacity=1.0)).astype(int)
    assert out.shape == (100, 300, 3)
    red = out[..., 0] - out[..., 2]
    r, c = np.unravel_index(np.argmax(red), red.shape)
    assert r < 25 and c < 40  # the top-left corner of the original
    assert (out[..., 2] - out[..., 0]).max() < 60  # no blue (the padding's -1) reached the original
    half = np.asarray(overlay_on_original(original, heat * 0, opacity=0.5)).astype(int)
    assert np.abs(half[50, 150] - np.round(0.5 * np.array([0, 200, 0]) + 0.5 * 255 * np.array(
        __import__("matplotlib").colormaps["RdBu_r"](0.5)[:3]))).max() <= 1


def test_explanation_overlays_on_the_original_photo():
    lm = gv.load_model()
    photo = os.path.join(os.path.dirname(SAMPLES), "photos", "coffee_cup.jpg")
    img = gv.load_image(photo)
    prep = gv.prepare_image(img, lm.preprocess)
    ex = gv.explain(lm, prep, gradcam=False)
    assert ex.original_differs()
    on_input, on_original = gv.explanation_overlays(ex), gv.explanation_overlays(ex, on="original")
    assert set(on_input) == set(on_original) == {"layer1", "layer2", "layer3"}
    assert all(o.size == (28, 28) for o in on_input.values())
    assert all(o.size == prep.original.size for o in on_original.values())
    sample = gv.explain(lm, gv.prepare_image(gv.load_image(os.path.join(SAMPLES, "bag_test00018.png")), lm.preprocess),
                        gradcam=False)
    assert not sample.original_differs()  # a 28x28 greyscale sample is its own model input
    with pytest.raises(ValueError, match="on must be"):
        gv.explanation_overlays(ex, on="both")
