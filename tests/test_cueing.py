"""Scene measurements: both-items scoring by hand, the cued maps equal cued traces by hand (energy shares and the
ranked cue success), read-out rule."""
import numpy as np
import pytest
import torch

import gatta_viz as gv
from gatta_viz.compute.maps import normalize, upsample
from gatta_viz.data.scenes import make_scenes
from gatta_viz.metrics.cueing import (CueMeasurements, both_items_correct, item_recall, measure_cues, overlap_bins,
                                      readout_by_cueing, scene_report)
from gatta_viz.metrics.faithfulness import trace_saliency
from gatta_viz.metrics.localization import energy_in_mask, roc_auc_in_mask


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = gv.build_model("gatta_compact_resnet", in_channels=1, num_classes=10, widths=[8, 16, 32], input_size=48,
                           stem_stride=2, alpha_init=0.5)
    model.eval()
    scenes = make_scenes(gv.load_fashion_mnist("test").subset(300), 12, seed=0)
    queries = torch.randn(10, model.d)
    return model, scenes, queries


def test_both_items_and_recall_by_hand():
    logits = np.array([[5, 4, 0, 0], [5, 0, 4, 0], [0, 1, 2, 3]], dtype=float)
    labels = np.array([[1, 0], [0, 1], [3, 2]])
    assert both_items_correct(logits, labels).tolist() == [True, False, True]
    assert item_recall(logits, labels).tolist() == [[True, True], [True, False], [True, True]]
    assert overlap_bins(np.array([0.0, 0.05, 0.1, 0.3, 0.5, 1.0])).tolist() == ["none", "low", "low", "mid", "high", "high"]


def test_trace_saliency_is_the_mean_of_per_image_scaled_layer_maps(setup):
    model, scenes, _ = setup
    x = scenes.normalize(scenes.images[:3])
    with torch.no_grad():
        t = model.trace(x)
    got = trace_saliency(t, (48, 48))
    for i in range(3):
        maps = {n: upsample(t.layers[n].map(True)[i], (48, 48)) for n in ("layer1", "layer2", "layer3")}
        want = np.mean(list(normalize(maps, signed=True, joint=False).values()), axis=0)
        assert np.allclose(got[i], want, atol=1e-6)


def test_cued_shares_and_probabilities_equal_cued_traces_by_hand(setup):
    model, scenes, queries = setup
    model.train()  # the caller's flag must survive
    m = measure_cues(model, scenes, queries, n=6, batch_size=4, progress=False)
    assert model.training
    model.eval()
    x = scenes.normalize(scenes.images[:6])
    masks = scenes.masks[:6].numpy()
    with torch.no_grad():
        t = model.trace(x, query=queries[3])
        u = model.trace(x)
    sal = trace_saliency(t, (48, 48))
    for k in range(2):
        assert np.allclose(m.cued_share[:, 3, 0, k], energy_in_mask(sal, masks[:, k]), atol=1e-6, equal_nan=True)
    sal1 = trace_saliency(t, (48, 48), layer="layer1")
    assert np.allclose(m.cued_share[:, 3, 1, 0], energy_in_mask(sal1, masks[:, 0]), atol=1e-6, equal_nan=True)
    assert np.allclose(m.cued_probs[:, 3], torch.softmax(t.logits_pass2, 1).numpy(), atol=1e-6)
    assert np.allclose(m.probs_pass1, torch.softmax(u.logits_pass1, 1).numpy(), atol=1e-6)
    assert m.maps == ["gain", "gain:layer1", "gain:layer2", "gain:layer3"]
    labels = scenes.labels[:6].numpy()
    assert all(a not in labels[i] for i, a in enumerate(m.absent))
    with pytest.raises(ValueError, match="one query per class"):
        measure_cues(model, scenes, queries[:5], n=2, progress=False)


def test_readout_keeps_the_two_candidates_their_own_cue_favours_most():
    n, c = 1, 4
    p1 = np.array([[0.1, 0.5, 0.3, 0.1]])  # pass 1 top 3: classes 1, 2, then 0 (tie with 3 broken by order)
    cued = np.full((n, c, c), 0.25)
    cued[0, 1, 1], cued[0, 2, 2], cued[0, 0, 0] = 0.3, 0.9, 0.8
    m = CueMeasurements(["gain"], *[np.zeros(1)] * 2, np.zeros(1), cued, *[np.zeros(1)] * 3, p1, p1, np.zeros(1),
                        meta={"n": 1})
    assert sorted(readout_by_cueing(m)[0].tolist()) == [0, 2]


def test_report_numbers_match_the_measurements(setup):
    model, scenes, queries = setup
    m = measure_cues(model, scenes, queries, n=12, batch_size=6, progress=False)
    rep = scene_report(m, scenes)
    labels = scenes.labels[:12].numpy()
    own = np.stack([m.cued_share[np.arange(12), labels[:, k], 0, k] for k in range(2)], 1)
    other = np.stack([m.cued_share[np.arange(12), labels[:, k], 0, 1 - k] for k in range(2)], 1)
    assert rep["cue"]["gain"]["success"]["all"]["mean"] == pytest.approx(float((own > other).mean()))
    assert rep["cue"]["gain"]["success"]["all"]["n"] == 24
    assert sum(rep["bins"].values()) == 12
    acc = both_items_correct(m.probs_pass2, labels).mean()
    assert rep["accuracy"]["pass2"]["all"]["mean"] == pytest.approx(float(acc))


def test_roc_auc_within_compares_one_item_with_the_other_by_hand():
    sal = np.array([[[5.0, 1.0, 9.0], [2.0, 3.0, 7.0]]])
    a = np.array([[[True, True, False], [False, False, False]]])  # item A: values 5, 1
    b = np.array([[[False, False, False], [True, True, False]]])  # item B: values 2, 3
    # pairs (5>2, 5>3, 1<2, 1<3): 2 of 4; the pixels of neither item (9, 7) take no part
    assert roc_auc_in_mask(sal, a, within=a | b) == pytest.approx([0.5])
    assert roc_auc_in_mask(sal, a) == pytest.approx([2 / 8])  # against all 4 other pixels: 5 beats only 2 and 3
    tie = np.array([[[2.0, 1.0, 0.0], [2.0, 3.0, 0.0]]])
    assert roc_auc_in_mask(tie, a, within=a | b) == pytest.approx([(0.5 + 0 + 0 + 0) / 4])
    with pytest.raises(ValueError, match="within"):
        roc_auc_in_mask(sal, a, within=np.ones((1, 2, 2), bool))


def test_ranked_cue_success_is_the_cued_items_auc_against_the_other_item(setup):
    model, scenes, queries = setup
    m = measure_cues(model, scenes, queries, n=12, batch_size=6, progress=False)
    x = scenes.normalize(scenes.images[:12])
    masks = scenes.masks[:12].numpy()
    labels = scenes.labels[:12].numpy()
    only0, only1 = masks[:, 0] & ~masks[:, 1], masks[:, 1] & ~masks[:, 0]
    with torch.no_grad():
        t = model.trace(x, query=queries[5])
    want = roc_auc_in_mask(trace_saliency(t, (48, 48)), only0, within=only0 | only1)
    assert np.allclose(m.cued_auc[:, 5, 0], want, atol=1e-9, equal_nan=True)
    rep = scene_report(m, scenes)
    own = np.stack([m.cued_auc[np.arange(12), labels[:, 0], 0], 1 - m.cued_auc[np.arange(12), labels[:, 1], 0]], 1)
    ok = np.isfinite(own)
    assert rep["cue"]["gain"]["ranked_success"]["all"]["mean"] == pytest.approx(float((own[ok] > 0.5).mean()))
    assert rep["cue"]["gain"]["ranked_auc"]["all"]["mean"] == pytest.approx(float(own[ok].mean()))
    assert rep["cue"]["gain"]["ranked_success"]["all"]["n"] == int(ok.sum())
    assert 0 <= rep["cue"]["gradcam"]["ranked_success"]["all"]["mean"] <= 1 and m.gradcam_auc.shape == (12, 2)
