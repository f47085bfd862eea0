"""Localization metrics: energy in mask, pointing game, pixel ROC-AUC, average precision and top-k share by hand on
tiny arrays (ties included), invariances, agreement with scikit-learn and Quantus 0.6.0 (RelevanceMassAccuracy,
PointingGame, AUC, RelevanceRankAccuracy, TopKIntersection, AttributionLocalisation), the fitted priors, and the
report on a tiny GAttA model and clutter images."""
import json

import numpy as np
import pytest
import torch

from gatta_viz.data.clutter import TEST_BACKGROUNDS, make_clutter
from gatta_viz.data.datasets import load_fashion_mnist
from gatta_viz.metrics.faithfulness import explain_func
from gatta_viz.metrics.localization import (SIGMA_GRID, average_precision_in_mask, centre_prior, energy_in_mask,
                                            fit_priors, mask_share, pointing_hit, random_maps, region_gain,
                                            roc_auc_in_mask, topk_in_mask)
from gatta_viz.metrics.localization_report import localization_report, report_text
from gatta_viz.models.builders import build_model


def test_energy_in_mask_by_hand_counts_only_positive_energy():
    sal = np.array([[[1.0, 2.0], [3.0, -4.0]]])
    mask = np.array([[[True, False], [False, True]]])
    # positive energy 1 + 2 + 3 = 6; inside the mask: 1 (the -4 counts as 0)
    assert energy_in_mask(sal, mask) == pytest.approx([1 / 6])
    assert energy_in_mask(sal, ~mask) == pytest.approx([5 / 6])
    assert energy_in_mask(sal[:, None], mask) == pytest.approx([1 / 6])  # (N, 1, H, W) maps too


def test_energy_in_mask_is_nan_without_positive_energy():
    sal = np.stack([np.zeros((3, 3)), -np.ones((3, 3)), np.eye(3)])
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[:, 0, 0] = True
    e = energy_in_mask(sal, mask)
    assert np.isnan(e[0]) and np.isnan(e[1]) and e[2] == pytest.approx(1 / 3)


def test_energy_and_pointing_reject_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        energy_in_mask(np.ones((1, 3, 3)), np.ones((1, 3, 4), dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        pointing_hit(np.full((1, 2, 2), np.nan), np.ones((1, 2, 2), dtype=bool))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_hit(np.ones((1, 2, 2)), np.ones((1, 2, 2), dtype=bool), tolerance=-1)


def test_pointing_with_tolerance_is_chebyshev_dilation():
    sal = np.zeros((1, 7, 7))
    sal[0, 1, 1] = 1.0  # the maximum
    mask = np.zeros((1, 7, 7), dtype=bool)
    mask[0, 3, 3] = True  # 2 rows and 2 columns away: Chebyshev distance 2
    assert not pointing_hit(sal, mask)[0]
    assert not pointing_hit(sal, mask, tolerance=1)[0]
    assert pointing_hit(sal, mask, tolerance=2)[0]
    mask[0, 3, 3], mask[0, 1, 1] = False, True
    assert pointing_hit(sal, mask)[0]


def test_pointing_ties_hit_if_any_maximum_is_in_the_mask_and_empty_masks_miss():
    sal = np.zeros((2, 3, 3))
    sal[:, 0, 0] = sal[:, 2, 2] = 1.0  # two tied maxima
    mask = np.zeros((2, 3, 3), dtype=bool)
    mask[0, 2, 2] = True  # only the second maximum is in image 0's mask; image 1's mask is empty
    assert pointing_hit(sal, mask).tolist() == [True, False]


def test_centre_prior_peaks_at_the_centre():
    odd = centre_prior(2, 5, 7)
    assert odd.shape == (2, 5, 7) and odd.dtype == np.float32
    assert np.unravel_index(odd[0].argmax(), (5, 7)) == (2, 3) and odd[0, 2, 3] == pytest.approx(1.0)
    assert np.array_equal(odd[0], odd[1])
    even = centre_prior(1, 4, 4, sigma=1.0)[0]  # the 4 central pixels tie
    assert np.allclose(even[1:3, 1:3], even.max()) and even[0, 0] < even[1, 1]
    assert even[0, 0] == pytest.approx(np.exp(-(1.5 ** 2 * 2) / 2))
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 2, 2] = True
    assert pointing_hit(even[None], mask)[0]


def test_random_maps_and_mask_share():
    r = random_maps(3, 4, 5, seed=1)
    assert r.shape == (3, 4, 5) and r.dtype == np.float32 and 0 <= r.min() and r.max() < 1
    assert np.array_equal(r, random_maps(3, 4, 5, seed=1)) and not np.array_equal(r, random_maps(3, 4, 5, seed=2))
    assert np.array_equal(random_maps(2, 4, 5, seed=1), r[:2])  # the first maps do not depend on n
    mask = np.zeros((2, 4, 5), dtype=bool)
    mask[0, :2] = True
    assert mask_share(mask).tolist() == [0.5, 0.0]
    big = np.zeros((1, 100, 100), dtype=bool)
    big[0, :30] = True  # a uniform map's energy share is about the mask's share
    assert energy_in_mask(random_maps(1, 100, 100), big)[0] == pytest.approx(0.3, abs=0.02)


def test_scaling_a_map_by_a_positive_constant_changes_nothing():
    rng = np.random.default_rng(0)
    sal = rng.normal(size=(6, 9, 9))
    mask = rng.random((6, 9, 9)) < 0.4
    for c in (1e-3, 7.0):
        assert np.allclose(energy_in_mask(c * sal, mask), energy_in_mask(sal, mask))
        assert np.array_equal(pointing_hit(c * sal, mask, 1), pointing_hit(sal, mask, 1))


def test_agrees_with_quantus_relevance_mass_accuracy_and_pointing_game():
    """Quantus's RMA is sum(a * s) / sum(a) over *signed* relevance, ours over the positive part only: they are
    the same on non-negative maps, which is what we compare (abs and normalise off so Quantus sees the raw maps).
    Quantus's PointingGame checks every maximal pixel, as ours does (it gives NaN for an empty mask; none here)."""
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(3)
    n, h, w = 24, 12, 12
    a = rng.random((n, 1, h, w)).astype(np.float32)
    a[:4] = np.round(a[:4] * 3) / 3  # coarse values: ties at the maximum
    s = rng.random((n, 1, h, w)) < rng.uniform(0.05, 0.6, (n, 1, 1, 1))
    s[:, 0, 0, 0] = True  # no empty mask
    x = rng.random((n, 1, h, w)).astype(np.float32)
    y = np.zeros(n, dtype=np.int64)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(h * w, 2))
    kw = dict(model=model, x_batch=x, y_batch=y, a_batch=a, s_batch=s.astype(np.float32))
    rma = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)(**kw)
    game = quantus.PointingGame(abs=False, normalise=False, disable_warnings=True)(**kw)
    assert energy_in_mask(a, s[:, 0]) == pytest.approx(np.asarray(rma, dtype=np.float64), abs=1e-6)
    assert pointing_hit(a, s[:, 0]).tolist() == [bool(v) for v in game]
    # with signed maps they differ exactly where a map has negative values (ours ignores them)
    signed = a - 0.5
    rma_signed = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)(**{**kw, "a_batch": signed})
    assert not np.allclose(energy_in_mask(signed, s[:, 0]), rma_signed)
    assert energy_in_mask(signed, s[:, 0]) == pytest.approx(energy_in_mask(np.maximum(signed, 0), s[:, 0]))


def _row(values, mask):
    """One (1, 1, len) map and mask from flat lists."""
    return np.array(values, dtype=np.float64)[None, None], np.array(mask, dtype=bool)[None, None]


def test_roc_auc_by_hand_with_ties_counting_one_half():
    sal, mask = _row([3, 1, 2, 0], [1, 0, 0, 1])
    # mask {3, 0} against background {1, 2}: 3 beats both, 0 beats none -> 2 of 4 pairs
    assert roc_auc_in_mask(sal, mask) == pytest.approx([0.5])
    sal, mask = _row([1, 1, 0, 1], [1, 0, 0, 0])
    # mask {1} against {1, 0, 1}: tie (1/2) + win + tie (1/2) -> 2 of 3
    assert roc_auc_in_mask(sal, mask) == pytest.approx([2 / 3])
    assert roc_auc_in_mask(np.ones((1, 2, 2)), np.eye(2, dtype=bool)[None]) == pytest.approx([0.5])  # constant map
    perfect, mask = _row([5, 4, 1, 0], [1, 1, 0, 0])
    assert roc_auc_in_mask(perfect, mask) == pytest.approx([1.0]) and roc_auc_in_mask(-perfect, mask) == pytest.approx([0.0])


def test_roc_auc_is_nan_for_an_empty_or_full_mask():
    sal = np.arange(8.0).reshape(2, 2, 2)
    mask = np.stack([np.zeros((2, 2), bool), np.ones((2, 2), bool)])
    assert np.isnan(roc_auc_in_mask(sal, mask)).all()
    assert np.isnan(average_precision_in_mask(sal, mask)[0]) and average_precision_in_mask(sal, mask)[1] == 1.0
    assert np.isnan(topk_in_mask(sal, mask)[0]) and topk_in_mask(sal, mask)[1] == 1.0


def test_average_precision_by_hand_with_tied_values_entering_together():
    sal, mask = _row([4, 3, 2, 1], [1, 0, 1, 0])
    # hits at ranks 1 and 3: precision 1 and 2/3, each for half the recall
    assert average_precision_in_mask(sal, mask) == pytest.approx([(1 + 2 / 3) / 2])
    sal, mask = _row([2, 2, 1, 0], [1, 0, 0, 1])
    # threshold 2: 1 hit of 2 pixels (precision 1/2, recall 1/2); threshold 0: 2 hits of 4 (precision 1/2)
    assert average_precision_in_mask(sal, mask) == pytest.approx([0.5])


def test_topk_share_by_hand_with_ties_sharing_the_places_left():
    sal, mask = _row([4, 3, 2, 1], [1, 0, 1, 0])
    assert topk_in_mask(sal, mask) == pytest.approx([0.5])  # k = 2: {4, 3}, one in the mask
    assert topk_in_mask(sal, mask, k=1) == pytest.approx([1.0]) and topk_in_mask(sal, mask, k=3) == pytest.approx([2 / 3])
    sal, mask = _row([2, 2, 2, 1], [1, 1, 0, 0])
    # k = 2 places for 3 tied pixels, 2 of them in the mask: 2 * 2/3 hits expected
    assert topk_in_mask(sal, mask) == pytest.approx([2 / 3])
    sal, mask = _row([3, 2, 2, 2], [0, 1, 0, 0])
    assert topk_in_mask(sal, mask) == pytest.approx([0.0])  # k = 1: the single maximum misses
    with pytest.raises(ValueError, match="k must be"):
        topk_in_mask(sal, mask, k=5)


def test_rank_measures_ignore_sparsity_and_monotone_transforms_while_energy_does_not():
    rng = np.random.default_rng(1)
    sal = rng.normal(size=(20, 10, 10))
    mask = rng.random((20, 10, 10)) < 0.3
    mask[:, 0, 0], mask[:, 0, 1] = True, False
    sparse = sal - 1.5  # positive on few pixels: the same ranking, a different positive part
    for f in (roc_auc_in_mask, average_precision_in_mask, topk_in_mask):
        assert np.allclose(f(sparse, mask), f(sal, mask)) and np.allclose(f(np.exp(3 * sal), mask), f(sal, mask))
    e_dense, e_sparse = energy_in_mask(sal, mask), energy_in_mask(sparse, mask)
    assert not np.allclose(np.nan_to_num(e_dense), np.nan_to_num(e_sparse))


def test_rank_measures_agree_with_scikit_learn_on_maps_with_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    sal = np.round(rng.random((40, 7, 9)) * 5) / 5  # 6 levels: many ties
    mask = rng.random((40, 7, 9)) < rng.uniform(0.05, 0.7, (40, 1, 1))
    mask[:, 0, 0], mask[:, 0, 1] = True, False
    auc = [metrics.roc_auc_score(m.ravel(), s.ravel()) for s, m in zip(sal, mask)]
    ap = [metrics.average_precision_score(m.ravel(), s.ravel()) for s, m in zip(sal, mask)]
    assert roc_auc_in_mask(sal, mask) == pytest.approx(auc, abs=1e-12)
    assert average_precision_in_mask(sal, mask) == pytest.approx(ap, abs=1e-12)


def test_rank_measures_agree_with_quantus_auc_topk_rank_accuracy_and_attribution_localisation():
    """Quantus's AUC is scikit-learn's ROC curve (ties as ours); RelevanceRankAccuracy is the top-k share with
    k = the mask's area and TopKIntersection with a fixed k (both break ties by sort order, so the maps here
    have none); AttributionLocalisation with positive_attributions is the energy of the positive part (its
    ``+ 1e-9`` in the denominator aside)."""
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(4)
    n, h, w = 16, 12, 12
    a = rng.normal(size=(n, 1, h, w)).astype(np.float32)  # continuous: no ties
    s = rng.random((n, 1, h, w)) < rng.uniform(0.1, 0.5, (n, 1, 1, 1))
    s[:, 0, 0, 0], s[:, 0, 0, 1] = True, False
    x = rng.random((n, 1, h, w)).astype(np.float32)
    y = np.zeros(n, dtype=np.int64)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(h * w, 2))
    kw = dict(model=model, x_batch=x, y_batch=y, a_batch=a, s_batch=s.astype(np.float32))
    common = dict(abs=False, normalise=False, disable_warnings=True)
    auc = quantus.AUC(**common)(**kw)
    rra = quantus.RelevanceRankAccuracy(**common)(**kw)
    tki = quantus.TopKIntersection(k=30, **common)(**kw)
    loc = quantus.AttributionLocalisation(positive_attributions=True, weighted=False, max_size=1.0, **common)(**kw)
    assert roc_auc_in_mask(a, s[:, 0]) == pytest.approx(np.asarray(auc, dtype=np.float64), abs=1e-6)
    assert topk_in_mask(a, s[:, 0]) == pytest.approx(np.asarray(rra, dtype=np.float64), abs=1e-9)
    assert topk_in_mask(a, s[:, 0], k=30) == pytest.approx(np.asarray(tki, dtype=np.float64), abs=1e-9)
    assert energy_in_mask(a, s[:, 0]) == pytest.approx(np.asarray(loc, dtype=np.float64), abs=1e-6)


def test_fit_priors_mean_mask_and_centre_width_chosen_on_energy():
    masks = np.zeros((3, 6, 6), dtype=bool)
    masks[0, 2:4, 2:4] = True  # central block
    masks[1, 1:5, 1:5] = True  # bigger central block
    masks[2, 0:2, 0:3] = True  # off-centre corner
    pr = fit_priors(masks, sigmas=(0.5, 1, 2, 4))
    assert np.allclose(pr["mean_mask"].rank_map, masks.mean(0)) and np.allclose(pr["mean_mask"].energy_map, masks.mean(0))
    fit = pr["centre"].fit
    d2 = ((np.arange(6) - 2.5)[:, None] ** 2 + (np.arange(6) - 2.5)[None, :] ** 2)
    by_hand = {sg: np.mean([(np.exp(-d2 / (2 * sg ** 2)) * m).sum() / np.exp(-d2 / (2 * sg ** 2)).sum() for m in masks])
               for sg in (0.5, 1, 2, 4)}
    assert fit["energy_by_sigma"] == pytest.approx(by_hand)
    assert fit["sigma_energy"] == max(by_hand, key=by_hand.get)
    assert np.allclose(pr["centre"].energy_map, np.exp(-d2 / (2 * fit["sigma_energy"] ** 2)))
    # the rank measures of a centred Gaussian do not depend on its width: the rank map is minus the distance
    g = np.broadcast_to(np.exp(-d2 / 8.0), masks.shape)
    assert np.allclose(roc_auc_in_mask(g, masks), roc_auc_in_mask(np.broadcast_to(pr["centre"].rank_map, masks.shape), masks))
    assert fit["train"]["pointing"] == pytest.approx(2 / 3)  # the 4 central pixels: in masks 0 and 1
    assert list(SIGMA_GRID) == sorted(SIGMA_GRID) and fit_priors(masks)["centre"].fit["sigmas"] == list(map(float, SIGMA_GRID))
    with pytest.raises(ValueError, match="positive"):
        fit_priors(masks, sigmas=(0, 1))


def test_region_gain_by_hand():
    sal = np.array([[[2.0, -1.0], [0.0, -3.0]]])
    mask = np.array([[[True, True], [False, False]]])
    r = region_gain(sal, mask)
    assert r["mean_in"] == pytest.approx([0.5]) and r["mean_out"] == pytest.approx([-1.5])
    assert r["pos_in"] == pytest.approx([0.5]) and r["pos_out"] == pytest.approx([0.0])


@pytest.fixture(scope="module")
def tiny_report():
    torch.manual_seed(0)
    model = build_model("gatta_compact_resnet", in_channels=1, num_classes=10, widths=[8, 16, 32], input_size=48,
                        stem_stride=2, alpha_init=0.5).eval()  # alpha 0 would make every gain map zero
    data = make_clutter(load_fashion_mnist("test"), 8, TEST_BACKGROUNDS, seed=1)
    priors = fit_priors(make_clutter(load_fashion_mnist("test").subset(300), 40, TEST_BACKGROUNDS, seed=2).masks.numpy(),
                        sigmas=(1, 4, 12))
    rep = localization_report(model, data, methods=("gain", "gradcam", "random", "centre", "mean_mask"), n=8,
                              batch_size=4, seed=5, priors=priors)
    return model, data, rep, priors


def test_report_structure_and_reference_maps_equal_the_functions(tiny_report):
    model, data, rep, priors = tiny_report
    assert list(rep["methods"]) == ["gain", "gain:layer1", "gain:layer2", "gain:layer3", "gradcam", "random", "centre",
                                    "mean_mask"]
    assert rep["n"] == 8 and rep["gradcam_layer"] == "layer3" and rep["skipped"] == []
    assert rep["centre_sigma"] == priors["centre"].fit["sigma_energy"]
    masks = data.masks.numpy()
    assert rep["mask_share"] == pytest.approx(mask_share(masks).mean())
    rnd = random_maps(8, 48, 48, seed=5)
    r = rep["methods"]["random"]
    assert r["energy_per_image"] == pytest.approx(energy_in_mask(rnd, masks).tolist())
    assert r["auc_per_image"] == pytest.approx(roc_auc_in_mask(rnd, masks).tolist())
    assert r["hit_per_image"] == pointing_hit(rnd, masks).tolist()
    c, mm = rep["methods"]["centre"], rep["methods"]["mean_mask"]
    rank = np.broadcast_to(priors["centre"].rank_map, masks.shape)
    assert c["topk_per_image"] == pytest.approx(topk_in_mask(rank, masks).tolist())
    assert c["energy_per_image"] == pytest.approx(energy_in_mask(np.broadcast_to(priors["centre"].energy_map, masks.shape), masks).tolist())
    mean_map = np.broadcast_to(priors["mean_mask"].rank_map, masks.shape)
    assert mm["ap_per_image"] == pytest.approx(average_precision_in_mask(mean_map, masks).tolist())
    x, _ = data.tensors()
    gain = explain_func(model, x, rep["predicted"], method="gain")[:, 0]
    g = rep["methods"]["gain"]
    assert g["hit_per_image"] == pointing_hit(gain, masks).tolist()
    assert g["auc_per_image"] == pytest.approx(roc_auc_in_mask(gain, masks).tolist(), abs=1e-9)
    assert g["auc"] == pytest.approx(np.mean(g["auc_per_image"])) and g["share_positive"] == pytest.approx((gain > 0).mean())
    assert set(g["minus"]["auc"]) == {"random", "centre", "mean_mask", "gradcam"} and g["energy_minus"] == g["minus"]["energy"]
    d = np.array(g["auc_per_image"]) - np.array(mm["auc_per_image"])
    assert g["minus"]["auc"]["mean_mask"]["mean"] == pytest.approx(d.mean())
    assert g["minus"]["auc"]["mean_mask"]["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(8))
    # the rule, recomputed from the paired lower bounds
    lows = [g["minus"][m][ref]["ci95"][0] for m in ("auc", "topk") for ref in ("random", "mean_mask", "centre")]
    v = rep["verdict"]
    assert v["beyond_priors"] == all(lo > 0 for lo in lows)
    assert v["as_good_as_gradcam"] == (g["minus"]["auc"]["gradcam"]["ci95"][1] >= 0)
    assert v["passes"] == (v["beyond_priors"] and v["as_good_as_gradcam"])
    assert rep["energy_rule"] is not None and "passes" in rep["energy_rule"]
    assert set(rep["layer_regions"]) == {"layer1", "layer2", "layer3"} and rep["layer_regions"]["layer1"]["alpha"] == 0.5
    assert json.loads(json.dumps(rep))["methods"]["random"]["auc"] == pytest.approx(r["auc"])
    text = report_text(rep)
    assert "gain:layer2" in text and "ROC-AUC minus" in text and "top-k share" in text and "verdict" in text
    assert "mean_mask" in text and "mean on mask" in text


def test_mean_mask_reference_needs_fitted_priors():
    model = build_model("compact_resnet", in_channels=1, num_classes=10, widths=[8, 16], blocks=[1, 1], input_size=48,
                        stem_stride=2).eval()
    data = make_clutter(load_fashion_mnist("test"), 2, TEST_BACKGROUNDS, seed=1)
    with pytest.raises(ValueError, match="priors"):
        localization_report(model, data, methods=("gradcam", "mean_mask"), n=2)


def test_report_on_a_plain_model_skips_gatta_maps():
    torch.manual_seed(0)
    model = build_model("compact_resnet", in_channels=1, num_classes=10, widths=[8, 16], blocks=[1, 1], input_size=48,
                        stem_stride=2).eval()
    data = make_clutter(load_fashion_mnist("test"), 4, TEST_BACKGROUNDS, seed=1)
    rep = localization_report(model, data, methods=("gain", "total_gain", "gradcam", "random"), n=4)
    assert list(rep["methods"]) == ["gradcam", "random"] and rep["skipped"] == ["gain", "total_gain"]
    assert rep["gradcam_layer"] == "layer2" and rep["verdict"] is None
    assert "skipped" in report_text(rep)


def test_examples_figure_draws_one_row_per_image(tmp_path):
    from gatta_viz.render.save import save_figure
    from gatta_viz.analysis.localization_plots import localization_examples

    rng = np.random.default_rng(0)
    masks = np.zeros((2, 12, 12), dtype=bool)
    masks[:, 3:8, 4:9] = True
    maps = {"gain": rng.normal(size=(2, 12, 12)), "centre": centre_prior(2, 12, 12)}
    fig = localization_examples(rng.random((2, 12, 12)), masks, maps, {"gain": [0.5, float("nan")], "centre": [0.1, 0.2]},
                                ["a", "b"])
    assert len(fig.axes) == 6 and fig.axes[1].get_title() == "gain\nAUC=0.50" and fig.axes[4].get_title() == "gain\n-"
    assert "ROC-AUC" in fig._suptitle.get_text()
    assert save_figure(fig, str(tmp_path / "ex.png")).endswith("ex.png")
