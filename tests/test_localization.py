"""Localization metrics: energy in mask and pointing game by hand on tiny arrays, invariances, agreement with
Quantus 0.6.0 (RelevanceMassAccuracy, PointingGame), and the report on a tiny GAttA model and clutter images."""
import json

import numpy as np
import pytest
import torch

from gatta_viz.data.clutter import TEST_BACKGROUNDS, make_clutter
from gatta_viz.data.datasets import load_fashion_mnist
from gatta_viz.metrics.faithfulness import explain_func
from gatta_viz.metrics.localization import (centre_prior, energy_in_mask, localization_report, mask_share,
                                            pointing_hit, random_maps, report_text)
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


@pytest.fixture(scope="module")
def tiny_report():
    torch.manual_seed(0)
    model = build_model("gatta_compact_resnet", in_channels=1, num_classes=10, widths=[8, 16, 32], input_size=48,
                        stem_stride=2, alpha_init=0.5).eval()  # alpha 0 would make every gain map zero
    data = make_clutter(load_fashion_mnist("test"), 8, TEST_BACKGROUNDS, seed=1)
    rep = localization_report(model, data, methods=("gain", "gradcam", "random", "centre"), n=8, batch_size=4, seed=5)
    return model, data, rep


def test_report_structure_and_reference_maps_equal_the_functions(tiny_report):
    model, data, rep = tiny_report
    assert list(rep["methods"]) == ["gain", "gain:layer1", "gain:layer2", "gain:layer3", "gradcam", "random", "centre"]
    assert rep["n"] == 8 and rep["gradcam_layer"] == "layer3" and rep["skipped"] == []
    masks = data.masks.numpy()
    assert rep["mask_share"] == pytest.approx(mask_share(masks).mean())
    for name, maps in (("random", random_maps(8, 48, 48, seed=5)), ("centre", centre_prior(8, 48, 48))):
        r = rep["methods"][name]
        assert r["energy_per_image"] == pytest.approx(energy_in_mask(maps, masks).tolist())
        assert r["hit_per_image"] == pointing_hit(maps, masks).tolist()
        assert r["energy"] == pytest.approx(np.mean(r["energy_per_image"]))
    x, _ = data.tensors()
    gain = explain_func(model, x, rep["predicted"], method="gain")[:, 0]
    assert rep["methods"]["gain"]["hit_per_image"] == pointing_hit(gain, masks).tolist()
    d = rep["methods"]["gain"]["energy_minus"]
    assert set(d) == {"random", "centre", "gradcam"} and set(rep["methods"]["random"]["energy_minus"]) == {"centre", "gradcam"}
    e = np.array(rep["methods"]["centre"]["energy_per_image"]) - np.array(rep["methods"]["random"]["energy_per_image"])
    assert rep["methods"]["centre"]["energy_minus"]["random"]["mean"] == pytest.approx(e.mean())
    assert rep["methods"]["centre"]["energy_minus"]["random"]["se"] == pytest.approx(e.std(ddof=1) / np.sqrt(8))
    assert set(rep["verdict"]) >= {"passes", "gain_minus_random_lower95", "gain_minus_centre_lower95",
                                   "gain_minus_gradcam_upper95"}
    assert json.loads(json.dumps(rep))["methods"]["random"]["energy"] == pytest.approx(rep["methods"]["random"]["energy"])
    text = report_text(rep)
    assert "gain:layer2" in text and "energy - centre" in text and "verdict" in text


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
    from gatta_viz.analysis.figures import save_figure
    from gatta_viz.analysis.localization_plots import localization_examples

    rng = np.random.default_rng(0)
    masks = np.zeros((2, 12, 12), dtype=bool)
    masks[:, 3:8, 4:9] = True
    maps = {"gain": rng.normal(size=(2, 12, 12)), "centre": centre_prior(2, 12, 12)}
    fig = localization_examples(rng.random((2, 12, 12)), masks, maps, {"gain": [0.5, float("nan")], "centre": [0.1, 0.2]},
                                ["a", "b"])
    assert len(fig.axes) == 6 and fig.axes[1].get_title() == "gain\nE=0.50" and fig.axes[4].get_title() == "gain\nno +"
    assert save_figure(fig, str(tmp_path / "ex.png")).endswith("ex.png")
