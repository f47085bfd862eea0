"""Heatmaps and overlays: orientation, signed/rectified and joint/per-layer normalisation, colours, no NaN."""
import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

import gatta_viz as gv


def test_upsample_keeps_orientation_on_non_square_asymmetric_map():
    m = np.zeros((2, 3), dtype=np.float32)
    m[0, 2] = 1.0  # top-right cell only
    up = gv.upsample(m, (20, 45))
    assert up.shape == (20, 45)
    r, c = np.unravel_index(np.argmax(up), up.shape)
    assert r < 10 and c >= 30  # still top-right
    assert up[:10, 30:].mean() > 0.5 and up[10:, :15].max() == 0.0  # bottom-left stays empty
    # batch and tensor input give the same result
    b = gv.upsample(torch.stack([torch.from_numpy(m), torch.from_numpy(m[::-1].copy())]), (20, 45))
    assert np.allclose(b[0], up) and np.allclose(b[1], up[::-1], atol=1e-6)
    # a constant map stays constant (bilinear, align_corners=False)
    assert np.allclose(gv.upsample(np.full((3, 5), 2.5), (7, 11)), 2.5)
    with pytest.raises(ValueError, match="must be"):
        gv.upsample(np.zeros((1, 2, 3, 4)), (4, 4))


def test_signed_normalisation_per_layer_and_joint():
    maps = {"a": np.array([[2.0, -1.0], [0.0, 1.0]]), "b": np.array([[0.5, -0.25], [0.0, 0.0]])}
    per = gv.normalize(maps, signed=True, joint=False)
    assert np.allclose(per["a"], [[1.0, -0.5], [0.0, 0.5]])
    assert np.allclose(per["b"], [[1.0, -0.5], [0.0, 0.0]])
    joint = gv.normalize(maps, signed=True, joint=True)  # one scale: max |x| over both = 2
    assert np.allclose(joint["b"], [[0.25, -0.125], [0.0, 0.0]])
    rect = gv.normalize(maps, signed=False)
    assert np.allclose(rect["a"], [[1.0, 0.0], [0.0, 0.5]])
    assert rect["a"].min() >= 0


def test_constant_and_zero_maps_give_zeros_not_nan():
    out = gv.normalize({"zero": np.zeros((3, 3)), "neg": -np.ones((2, 2))}, signed=False)
    assert np.all(out["zero"] == 0) and np.all(out["neg"] == 0)
    out = gv.normalize({"c": np.full((3, 3), 4.0)}, signed=True)
    assert np.allclose(out["c"], 1.0) and not np.isnan(out["c"]).any()
    with pytest.raises(ValueError, match="NaN"):
        gv.normalize({"bad": np.array([np.nan, 1.0])})


def test_zero_agreement_maps_to_colormap_centre():
    img = Image.new("L", (4, 3), 200)
    heat = np.array([[0.0, 1.0, -1.0, 0.0]] * 3, dtype=np.float32)
    out = np.asarray(gv.overlay(img, heat, cmap="RdBu_r", opacity=1.0, signed=True)).astype(int)
    cm = colormaps["RdBu_r"]
    centre = np.round(np.array(cm(0.5)[:3]) * 255).astype(int)
    assert np.array_equal(out[1, 0], centre)
    assert np.array_equal(out[1, 1], np.round(np.array(cm(1.0)[:3]) * 255).astype(int))
    assert np.array_equal(out[1, 2], np.round(np.array(cm(0.0)[:3]) * 255).astype(int))
    # opacity 0: the image itself; 0.5: the exact blend
    assert np.all(np.asarray(gv.overlay(img, heat, opacity=0.0)) == 200)
    half = np.asarray(gv.overlay(img, heat, opacity=0.5)).astype(float)
    assert np.allclose(half[0, 0], np.round(0.5 * 200 + 0.5 * centre), atol=1)


def test_overlay_resizes_heat_to_image_and_checks_arguments():
    img = np.zeros((30, 50, 3), dtype=np.uint8)
    out = gv.overlay(img, np.ones((3, 5)), opacity=0.3)
    assert out.size == (50, 30) and out.mode == "RGB"
    with pytest.raises(ValueError, match="opacity"):
        gv.overlay(img, np.ones((3, 5)), opacity=1.5)
    with pytest.raises(ValueError, match="colormap"):
        gv.overlay(img, np.ones((3, 5)), cmap="not-a-cmap")


def test_conv_heatmaps_from_trace_in_range_and_at_input_size():
    torch.manual_seed(0)
    model = gv.gatta_toy(in_channels=1, input_size=28, alpha_init=0.1).eval()
    with torch.no_grad():
        t = model.trace(torch.randn(2, 1, 28, 40))
    hm = gv.conv_heatmaps(t, 1, (28, 40), signed=True)
    assert list(hm) == ["conv1", "conv2", "conv3"]
    for v in hm.values():
        assert v.shape == (28, 40) and np.abs(v).max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="fc1"):
        gv.conv_heatmaps(t, 0, (28, 40), layers=["fc1"])
