"""Layer contributions, captum comparisons, faithfulness curves, embedding, figures."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import gatta_viz as gv
from gatta_viz.metrics import faithfulness as fa


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    model = gv.gatta_toy(in_channels=1, input_size=28, alpha_init=0.3).eval()
    return model


def test_layer_statistics_by_hand(toy):
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        t = toy.trace(x)
    rows = gv.layer_statistics(t, index=1)
    r = {row["layer"]: row for row in rows}["conv2"]
    g = t.agreement("conv2")[1].double()
    gain = 1 + 0.3 * g
    assert r["alpha"] == pytest.approx(0.3)
    assert r["mean"] == pytest.approx(float(g.mean()))
    assert r["std"] == pytest.approx(float(g.std(unbiased=False)))
    assert r["frac_up"] == pytest.approx(float((g > 0).double().mean()))  # alpha > 0: up where gatta > 0
    assert r["frac_up"] + r["frac_down"] <= 1.0
    assert r["mean_gain"] == pytest.approx(float(gain.mean()))


def test_ablation_score_is_exactly_zero_for_a_layer_with_alpha_zero(toy):
    with torch.no_grad():
        toy.alpha_of("conv2").fill_(0.0)
    try:
        x = torch.randn(3, 1, 28, 28)
        scores = gv.ablation_scores(toy, x, target=torch.tensor([0, 3, 7]))
        assert np.all(scores["conv2"] == 0.0)
        assert np.abs(scores["conv1"]).max() > 0  # alpha != 0: switching it off changes something
        # by hand for one layer: p(full) - p(conv1 off)
        with torch.no_grad():
            full = torch.softmax(toy(x).double(), 1)[[0, 1, 2], [0, 3, 7]]
            off = torch.softmax(toy.trace(x, alpha_override={"conv1": 0.0}).logits.double(), 1)[[0, 1, 2], [0, 3, 7]]
        assert np.allclose(scores["conv1"], (full - off).numpy(), atol=1e-12)
        table = gv.contribution_table(toy, x, targets=[0, 3, 7])
        assert [r["layer"] for r in table] == toy.layer_names
        assert {r["layer"]: r["dprob_true"] for r in table}["conv2"] == 0.0
    finally:
        with torch.no_grad():
            toy.alpha_of("conv2").fill_(0.3)


def test_rank_correlation_by_hand():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert gv.rank_correlation(a, a * 10 + 3) == pytest.approx(1.0)
    assert gv.rank_correlation(a, -a) == pytest.approx(-1.0)
    # ranks [1,2,3,4] vs [2,1,4,3]: rho = 1 - 6*sum(d^2)/(n(n^2-1)) = 1 - 6*4/60 = 0.6
    assert gv.rank_correlation(a, np.array([[2.0, 1.0], [4.0, 3.0]])) == pytest.approx(0.6)
    # ties get average ranks: [1, 2.5, 2.5, 4] vs [1, 2, 3, 4] -> Pearson of ranks
    ra, rb = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4])
    assert gv.rank_correlation(np.array([[0, 1], [1, 2.0]]), a) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert np.isnan(gv.rank_correlation(np.ones((2, 2)), a))
    # different sizes are upsampled to a common one
    assert gv.rank_correlation(np.array([[0.0, 1.0]]), np.tile(np.linspace(0, 1, 8), (2, 1))) > 0.9


def test_captum_maps_and_comparison_table(toy):
    x = torch.randn(2, 1, 28, 28)
    cam = gv.gradcam(toy, x, "conv3", [1, 2])
    assert cam.shape == (2, 7, 7)
    ig = gv.integrated_gradients(toy, x, [1, 2], n_steps=8)
    sal = gv.saliency(toy, x, [1, 2])
    assert ig.shape == sal.shape == (2, 28, 28) and sal.min() >= 0
    rows = gv.compare_with_captum(toy, x, [1, 2], ig_steps=8)
    assert len(rows) == 2 * 3 and {r["layer"] for r in rows} == {"conv1", "conv2", "conv3"}
    assert all(-1 <= r["gradcam"] <= 1 for r in rows)
    with pytest.raises(ValueError, match="no layer"):
        gv.gradcam(toy, x, "conv9", 0)


class PixelModel(nn.Module):
    """logit_1 = sum of w * x (a known set of important pixels), logit_0 = 0."""

    def __init__(self, w):
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x):
        s = (x[:, 0] * self.w).sum((1, 2))
        return torch.stack([torch.zeros_like(s), s], 1)


def test_oracle_map_beats_random_on_insertion_and_deletion():
    torch.manual_seed(0)
    w = torch.zeros(8, 8)
    w[2:4, 5:7] = 0.5  # four pixels carry the class (logit ~2: not saturated)
    model = PixelModel(w).eval()
    x = torch.ones(6, 1, 8, 8) + 0.1 * torch.rand(6, 1, 8, 8)
    oracle = w.expand(6, 8, 8).numpy()
    rand = np.random.default_rng(0).random((6, 8, 8))
    ins_o = gv.auc(gv.perturbation_curve(model, x, oracle, 1, "insertion", steps=16))
    ins_r = gv.auc(gv.perturbation_curve(model, x, rand, 1, "insertion", steps=16))
    del_o = gv.auc(gv.perturbation_curve(model, x, oracle, 1, "deletion", steps=16))
    del_r = gv.auc(gv.perturbation_curve(model, x, rand, 1, "deletion", steps=16))
    assert ins_o.mean() > ins_r.mean() + 0.1
    assert del_o.mean() < del_r.mean() - 0.1
    # endpoints: deletion starts at the clean probability and ends at the baseline's (0.5 with 0-logits)
    curve = gv.perturbation_curve(model, x, oracle, 1, "deletion", steps=16)
    assert np.allclose(curve[:, -1], 0.5) and np.all(curve[:, 0] > 0.88)
    # a baseline of -1: everything deleted gives logit_1 = -1 * sum(w) = -2, p = sigmoid(-2); insertion starts there
    for mode, end in (("deletion", -1), ("insertion", 0)):
        c = gv.perturbation_curve(model, x, oracle, 1, mode, steps=16, baseline=-1.0)
        assert np.allclose(c[:, end], 1 / (1 + np.exp(2.0)))
    x3 = x.expand(-1, 3, -1, -1)  # per-channel baseline: the model reads channel 0 only, which gets -1
    c = gv.perturbation_curve(model, x3, oracle, 1, "deletion", steps=16, baseline=[-1.0, 5.0, 5.0])
    assert np.allclose(c[:, -1], 1 / (1 + np.exp(2.0)))
    with pytest.raises(ValueError, match="baseline has 3 values, input has 1 channels"):
        gv.perturbation_curve(model, x, oracle, 1, "deletion", steps=4, baseline=[0.0, 0.0, 0.0])


class DeletedMaskModel(nn.Module):
    """For x in {0, 1}: logits (0, s), s = sum over zero pixels i of 2**(i - n); p(class 1) = sigmoid(s) encodes them."""

    def forward(self, x):
        d = (1 - x[:, 0].double()).flatten(1)
        n = d.shape[1]
        s = d @ (2.0 ** (torch.arange(n, dtype=torch.float64) - n))
        return torch.stack([torch.zeros_like(s), s], 1)


def _zero_masks(curve, shape):
    """Decode DeletedMaskModel probabilities (B, steps+1) into boolean masks of zeroed pixels (B, steps+1, H, W)."""
    n = shape[0] * shape[1]
    codes = np.rint(np.log(curve / (1 - curve)) * 2.0 ** n).astype(np.int64)
    bits = (codes[..., None] >> np.arange(n)) & 1
    return bits.astype(bool).reshape(*curve.shape, *shape)


def test_patch_1_is_the_pixel_default_and_deletes_pixels_in_saliency_order():
    torch.manual_seed(0)
    w = torch.randn(8, 8)
    x = torch.rand(3, 1, 8, 8)
    sal = np.random.default_rng(1).random((3, 8, 8))
    sal[:, :2] = 0.25  # ties
    for mode in ("deletion", "insertion"):
        a = gv.perturbation_curve(PixelModel(w), x, sal, 1, mode, steps=16, baseline=-0.5)
        b = gv.perturbation_curve(PixelModel(w), x, sal, 1, mode, steps=16, baseline=-0.5, patch=1)
        assert np.array_equal(a, b)
    # 3x3: pixels in saliency order, ties (the two 5s) in raster order, one pixel per step
    sal = np.array([[1.0, 5.0, 0.0], [9.0, 5.0, 2.0], [3.0, 8.0, 4.0]])
    order = [3, 7, 1, 4, 8, 6, 5, 0, 2]
    curve = gv.perturbation_curve(DeletedMaskModel(), torch.ones(1, 1, 3, 3), sal[None], 1, "deletion", steps=9, patch=1)
    masks = _zero_masks(curve, (3, 3))[0].reshape(10, 9)
    for k in range(10):
        assert sorted(np.flatnonzero(masks[k])) == sorted(order[:k])


def test_region_perturbation_2x2_by_hand():
    w = torch.tensor([[0.3, -0.2, 0.1, 0.4], [0.5, 0.2, -0.3, 0.1], [-0.1, 0.6, 0.2, -0.4], [0.3, 0.1, 0.2, 0.5]])
    x = torch.tensor([[0.9, 0.2, 0.4, 0.7], [0.1, 0.8, 0.6, 0.3], [0.5, 0.3, 0.9, 0.2], [0.7, 0.4, 0.1, 0.6]])
    x = x.expand(2, 1, 4, 4).contiguous()
    # cells (raster): TL mean 2, TR mean -4.5 (but the single highest pixel, 9), BL mean 3, BR mean 1
    sal0 = np.array([[2, 2, 9, -9], [2, 2, -9, -9], [3, 3, 1, 1], [3, 3, 1, 1]], dtype=float)
    sal1 = np.ones((4, 4))  # all cells tie: raster order
    sal = np.stack([sal0, sal1])
    cells = {"TL": (slice(0, 2), slice(0, 2)), "TR": (slice(0, 2), slice(2, 4)),
             "BL": (slice(2, 4), slice(0, 2)), "BR": (slice(2, 4), slice(2, 4))}
    orders = [["BL", "TL", "BR", "TR"], ["TL", "TR", "BL", "BR"]]
    base = -0.5
    wn, xn = w.numpy().astype(np.float64), x[0, 0].numpy().astype(np.float64)
    for mode in ("deletion", "insertion"):
        # PixelModel(2w): p(class 1) = sigmoid(2 s) with s = sum of w * x
        curve = gv.perturbation_curve(PixelModel(2 * w), x, sal, 1, mode, steps=4, baseline=base, patch=2)
        expected = np.zeros((2, 5))
        for i, order in enumerate(orders):
            for k in range(5):
                top = np.zeros((4, 4), dtype=bool)
                for c in order[:k]:
                    top[cells[c]] = True
                gone = top if mode == "deletion" else ~top
                s = (wn * np.where(gone, base, xn)).sum()
                expected[i, k] = 1 / (1 + np.exp(-2 * s))
        np.testing.assert_allclose(curve, expected, rtol=1e-6)
    # the same map at pixel level deletes TR's 9 first: a different curve
    px = gv.perturbation_curve(PixelModel(2 * w), x[:1], sal0[None], 1, "deletion", steps=4, baseline=base)
    assert not np.allclose(px[0, 1], expected[0, 1])


def test_region_perturbation_non_divisible_size_deletes_one_cell_per_step():
    # 5x7 with patch 2: a 3x4 grid; cell heights 2, 2, 1 and widths 2, 2, 2, 1
    v = np.array([[5, 11, 0, 7], [3, 9, 1, 10], [2, 6, 4, 8]], dtype=float)  # one value per cell
    sal = np.kron(v, np.ones((2, 2)))[:5, :7]
    order = [(0, 1), (1, 3), (1, 1), (2, 3), (0, 3), (2, 1), (0, 0), (2, 2), (1, 0), (2, 0), (1, 2), (0, 2)]  # 11, 10, ..., 0
    sizes = [4, 2, 4, 1, 2, 2, 4, 2, 4, 2, 4, 4]  # of the cells in that order
    model, x = DeletedMaskModel(), torch.ones(1, 1, 5, 7)
    curve = gv.perturbation_curve(model, x, sal[None], 1, "deletion", steps=12, patch=2)
    masks = _zero_masks(curve, (5, 7))[0]
    assert [int(masks[k].sum() - masks[k - 1].sum()) for k in range(1, 13)] == sizes
    for k, (r, c) in enumerate(order, start=1):
        cell = np.zeros((5, 7), dtype=bool)
        cell[2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = True
        assert np.array_equal(masks[k] & ~masks[k - 1], cell) and np.all(masks[k] >= masks[k - 1])
    assert not masks[0].any() and masks[12].all()
    with torch.no_grad():
        p_gone = float(torch.softmax(model(torch.zeros(1, 1, 5, 7)), 1)[0, 1])
    assert curve[0, -1] == pytest.approx(p_gone, abs=1e-12)
    ins = gv.perturbation_curve(model, x, sal[None], 1, "insertion", steps=12, patch=2)
    assert ins[0, 0] == pytest.approx(p_gone, abs=1e-12) and ins[0, -1] == pytest.approx(0.5, abs=1e-12)
    ins_masks = _zero_masks(ins, (5, 7))[0]
    assert [int(ins_masks[k - 1].sum() - ins_masks[k].sum()) for k in range(1, 13)] == sizes


def test_region_score_is_the_mean_over_the_real_pixels_of_an_edge_cell():
    # 3x3 with patch 2: cells TL (2x2), TR (2x1), BL (1x2), BR (1x1)
    # real means: TR 3.5 > BR 3.2 > TL 3 > BL 0; zero-padded to 2x2 they would be TL 3 > TR 1.75 > BR 0.8 > BL 0
    sal = np.array([[3.0, 3.0, 7.0], [3.0, 3.0, 0.0], [0.0, 0.0, 3.2]])
    curve = gv.perturbation_curve(DeletedMaskModel(), torch.ones(1, 1, 3, 3), sal[None], 1, "deletion", steps=4, patch=2)
    masks = _zero_masks(curve, (3, 3))[0]
    tr = np.zeros((3, 3), dtype=bool)
    tr[0:2, 2] = True
    assert np.array_equal(masks[1], tr)
    br = tr.copy()
    br[2, 2] = True
    assert np.array_equal(masks[2], br) and masks[3].sum() == 7 and masks[4].all()


@pytest.mark.parametrize("patch", [0, -2, 1.5, True])
def test_patch_must_be_a_positive_int(patch):
    x, sal = torch.ones(1, 1, 4, 4), np.ones((1, 4, 4))
    with pytest.raises(ValueError, match="patch"):
        gv.perturbation_curve(PixelModel(torch.ones(4, 4)), x, sal, 1, "deletion", steps=4, patch=patch)
    with pytest.raises(ValueError, match="patch"):
        gv.faithfulness_report(PixelModel(torch.ones(4, 4)), x, methods=("random",), steps=4, patch=patch)


def test_faithfulness_report_passes_patch_through_and_labels_the_plot(tmp_path, monkeypatch):
    from gatta_viz.analysis import metric_plots
    from gatta_viz.cli import faithfulness as fa_cli

    torch.manual_seed(0)
    w = torch.randn(6, 6)
    x = torch.rand(3, 1, 6, 6)
    rep = gv.faithfulness_report(PixelModel(w), x, methods=("random",), steps=5, batch_size=10, seed=4, patch=3)
    assert rep["patch"] == 3
    pred = PixelModel(w)(x).argmax(1)
    sal = np.random.default_rng(4).random((3, 6, 6)).astype(np.float32)  # the random map of images 0..2 (seed + 0)
    for mode in ("deletion", "insertion"):
        c = gv.perturbation_curve(PixelModel(w), x, sal, pred, mode, steps=5, patch=3)
        np.testing.assert_allclose(rep["methods"]["random"][f"{mode}_curve"], c.mean(0), rtol=1e-12)
        assert rep["methods"]["random"][f"{mode}_auc"] == pytest.approx(float(gv.auc(c).mean()))
    assert fa_cli.build_parser().parse_args([]).patch == 1 and fa_cli.build_parser().parse_args(["--patch", "4"]).patch == 4
    labels = []
    monkeypatch.setattr(metric_plots, "save_figure", lambda fig, path: labels.append([a.get_xlabel() for a in fig.axes]) or path)
    metric_plots.plot_curves(rep, str(tmp_path / "f.png"))
    metric_plots.plot_curves({**rep, "patch": 1}, str(tmp_path / "g.png"))
    del rep["patch"]
    metric_plots.plot_curves(rep, str(tmp_path / "h.png"))
    assert labels == [["fraction of 3x3 regions deleted", "fraction of 3x3 regions inserted"],
                      ["fraction of pixels deleted", "fraction of pixels inserted"],
                      ["fraction of pixels deleted", "fraction of pixels inserted"]]
    metric_plots.plt.close("all")


def test_auc_trapezoid_by_hand():
    assert gv.auc(np.array([0.0, 1.0])) == pytest.approx(0.5)
    assert gv.auc(np.array([1.0, 1.0, 0.0])) == pytest.approx(0.75)


def test_explain_func_shapes_like_input(toy):
    x = torch.randn(3, 1, 28, 28)
    for method in ("agreement", "gain", "total_gain", "gradcam", "random", "saliency"):
        out = gv.explain_func(toy, x, [0, 1, 2], method=method)
        assert out.shape == (3, 1, 28, 28) and out.dtype == np.float32 and np.isfinite(out).all()
    with pytest.raises(ValueError, match="unknown method"):
        gv.explain_func(toy, x, [0, 1, 2], method="magic")


def test_pca_embedding_by_hand():
    v = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 2.0, 0], [0, -2.0, 0]])
    coords, explained = gv.pca_2d(v)
    assert explained == pytest.approx([0.8, 0.2])  # variances 8 and 2 along y and x
    assert np.allclose(np.abs(coords[:, 0]), [0, 0, 2, 2], atol=1e-6)


def _bars_of(ax):
    """(bases, heights, face colours) of the bars drawn by fig3 in one dense-layer axes."""
    coll = ax.collections[0]
    verts = np.array([p.vertices[:4] for p in coll.get_paths()])
    return verts[:, 0, 1], verts[:, 1, 1] - verts[:, 0, 1], coll.get_facecolors()


def test_fig3_bars_show_gains_coloured_like_the_maps_and_mark_classes_by_outline(toy, tmp_path):
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        t = toy.trace(x)
    classes = [f"c{i}" for i in range(10)]
    pred = int(t.logits_pass2[0].argmax())
    true = (pred + 3) % 10
    fig = gv.fig3(gv.explanation_from_trace(t, x[0], 0, classes=classes, true_label=true))
    # input + 3 conv maps + 1 colourbar + 2 dense bar charts
    assert len(fig.axes) == 1 + 3 + 1 + 2
    ax = fig.axes[6]  # fc2, the class layer
    base, height, faces = _bars_of(ax)
    v = (t.layers["fc2"].alpha * t.agreement("fc2")[0]).numpy()
    np.testing.assert_allclose(base, 1.0)  # bars start at gain 1 ...
    np.testing.assert_allclose(height, v, rtol=1e-5, atol=1e-7)  # ... and end at the gain 1 + alpha x agreement
    cm = colormaps["RdBu_r"]
    k = int(np.argmax(v))
    assert faces[k][:3] == pytest.approx(cm(1.0)[:3])  # the most boosted unit has the maps' "most boosted" colour
    boxes = [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill() and p.get_visible()]
    by_style = {p.get_linestyle(): p for p in boxes}
    assert len(boxes) == 2 and set(by_style) == {"-", "--"}
    assert by_style["-"].get_x() == pytest.approx(pred - 0.4)  # predicted: solid outline
    assert by_style["--"].get_x() == pytest.approx(true - 0.4)  # true class: dashed outline
    assert by_style["-"].get_height() == pytest.approx(float(v[pred]), rel=1e-5)
    # raw agreement: bars from 0, one neutral colour (red keeps meaning "boosted")
    raw = gv.fig3(gv.explanation_from_trace(t, x[0], 0, classes=classes, true_label=pred, gain=False))
    base, height, faces = _bars_of(raw.axes[6])
    np.testing.assert_allclose(base, 0.0)
    np.testing.assert_allclose(height, t.agreement("fc2")[0].numpy(), rtol=1e-5, atol=1e-7)
    assert len({tuple(f) for f in faces}) == 1
    assert len([p for p in raw.axes[6].patches if isinstance(p, Rectangle) and not p.get_fill() and p.get_visible()]) == 1
    path = gv.save_figure(fig, str(tmp_path / "f.png"))
    assert Image.open(path).size[0] > 500
    svg = gv.save_figure(gv.alpha_bars(t.alphas), str(tmp_path / "a.svg"))
    assert open(svg).read().lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match=".png"):
        gv.save_figure(gv.alpha_bars(t.alphas), str(tmp_path / "a.txt"))


def test_alpha_bars_use_one_neutral_colour_whatever_the_sign(toy):
    from gatta_viz.render.style import NEUTRAL
    from matplotlib.colors import to_rgba

    fig = gv.alpha_bars({"a": 0.5, "b": -0.7, "c": 0.0})
    faces = {tuple(np.round(p.get_facecolor(), 6)) for p in fig.axes[0].patches}
    assert faces == {tuple(np.round(to_rgba(NEUTRAL), 6))}
    assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted(["+0.5", "-0.7", "+0"])


def test_plotly_slider_and_class_bars(toy):
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        t = toy.trace(x)
    hm = gv.conv_heatmaps(t, 0, (28, 28))
    fig = gv.layer_slider(np.zeros((28, 28)), hm, alphas=t.alphas)
    assert len(fig.data) == 3 and len(fig.layout.sliders[0].steps) == 3
    assert [d.visible for d in fig.data] == [True, False, False]
    assert fig.layout.title.text.startswith("α × agreement: conv1") and "boosted" in fig.layout.title.text
    raw_fig = gv.layer_slider(np.zeros((28, 28)), gv.conv_heatmaps(t, 0, (28, 28), gain=False), gain=False)
    assert raw_fig.layout.title.text.startswith("raw agreement (sign set by training): conv1")
    bars = gv.class_bars(t, 0, [str(i) for i in range(10)], true_label=1)
    gain = (t.layers["fc2"].alpha * t.agreement("fc2")[0]).tolist()
    assert list(bars.data[0].y) == pytest.approx(gain, rel=1e-5) and bars.data[0].base == 1.0
    pred = int(t.logits_pass2[0].argmax())
    widths = list(bars.data[0].marker.line.width)
    assert widths[pred] == 3.0 and sum(w > 0 for w in widths) == (1 if pred == 1 else 2)
    assert len(set(bars.data[0].marker.color)) > 1  # coloured by value, not by class
    raw = gv.class_bars(t, 0, [str(i) for i in range(10)], gain=False)
    assert list(raw.data[0].y) == pytest.approx(t.agreement("fc2")[0].tolist(), rel=1e-5) and raw.data[0].base == 0.0


def test_gain_map_is_agreement_signed_by_alpha(toy):
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        toy.alpha_of("conv2").fill_(-0.5)
    try:
        raw = gv.agreement_saliency(toy, x, layer="conv2", gain=False)
        gain = gv.agreement_saliency(toy, x, layer="conv2")  # the gain map is the default
        assert np.allclose(gain, -raw, atol=1e-6)  # alpha < 0: boosted where the agreement is negative
        assert np.allclose(gv.agreement_saliency(toy, x, layer="conv1", gain=True),
                           gv.agreement_saliency(toy, x, layer="conv1", gain=False), atol=1e-6)  # alpha = 0.3 > 0
        # explain_func leads with the gain map; "agreement" stays the raw map (the name published tables use)
        np.testing.assert_array_equal(gv.explain_func(toy, x, [0, 1], layer="conv2")[:, 0], gain)
        np.testing.assert_array_equal(gv.explain_func(toy, x, [0, 1], method="agreement", layer="conv2")[:, 0], raw)
    finally:
        with torch.no_grad():
            toy.alpha_of("conv2").fill_(0.3)


def test_road_fill_hides_the_mask_of_a_constant_image_and_only_the_empty_image_moves_the_probability():
    # ROAD imputes deleted pixels from the kept ones: a constant image stays that constant whatever is deleted,
    # until nothing is kept (the all-zero image). With a fixed fill value every step would move p.
    w = torch.full((6, 6), 0.1)
    model = PixelModel(w)
    x = torch.full((2, 1, 6, 6), 0.5)
    sal = np.random.default_rng(0).random((2, 6, 6))
    p_clean = 1 / (1 + np.exp(-0.1 * 36 * 0.5))
    dele = gv.perturbation_curve(model, x, sal, 1, "deletion", steps=6, baseline="road", noise=0)
    ins = gv.perturbation_curve(model, x, sal, 1, "insertion", steps=6, baseline="road", noise=0)
    np.testing.assert_allclose(dele[:, :-1], p_clean, rtol=1e-6)
    np.testing.assert_allclose(dele[:, -1], 0.5, rtol=1e-12)
    np.testing.assert_allclose(ins[:, 0], 0.5, rtol=1e-12)
    np.testing.assert_allclose(ins[:, 1:], p_clean, rtol=1e-6)
    fixed = gv.perturbation_curve(model, x, sal, 1, "deletion", steps=6, baseline=0.0)
    assert np.all(np.diff(fixed, axis=1) < 0)  # the same deletions with a fixed fill lower p at every step
    # noise is seeded: same seed, same curve; another seed, another curve
    a, b, c = (gv.perturbation_curve(model, x, sal, 1, "deletion", steps=6, baseline="road", noise=0.3, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="baseline must be a number, one number per channel or 'road', got 'blur'"):
        gv.perturbation_curve(model, x, sal, 1, "deletion", steps=6, baseline="blur")


def test_road_curve_uses_the_imputed_image_step_by_step():
    from gatta_viz.metrics.imputation import noisy_linear_impute

    torch.manual_seed(1)
    w = torch.randn(5, 5)
    x = torch.rand(1, 1, 5, 5)
    sal = np.arange(25, dtype=np.float32)[::-1].reshape(1, 5, 5).copy()  # raster order: pixel i deleted at step i+1
    dele = gv.perturbation_curve(PixelModel(w), x, sal, 1, "deletion", steps=25, baseline="road", noise=0)
    for k in (0, 3, 12, 24):
        known = torch.ones(25, dtype=torch.bool)
        known[:k] = False
        img = noisy_linear_impute(x[0], known.view(5, 5), noise=0)
        p = torch.softmax(PixelModel(w)(img[None]).double(), 1)[0, 1]
        assert dele[0, k] == pytest.approx(float(p), abs=1e-7)


def test_report_pairs_every_map_with_random_and_takes_one_layer_maps(toy):
    torch.manual_seed(0)
    x = torch.randn(4, 1, 28, 28)
    rep = gv.faithfulness_report(toy, x, methods=("agreement:conv2", "random"), steps=4, batch_size=2, seed=7)
    pred = toy(x).argmax(1)
    sal = gv.agreement_saliency(toy, x, layer="conv2")
    for mode in ("deletion", "insertion"):
        c = np.concatenate([gv.perturbation_curve(toy, x[i : i + 2], sal[i : i + 2], pred[i : i + 2], mode, steps=4) for i in (0, 2)])
        np.testing.assert_allclose(rep["methods"]["agreement:conv2"][f"{mode}_aucs"], gv.auc(c), rtol=1e-12)
        d = np.array(rep["methods"]["agreement:conv2"][f"{mode}_aucs"]) - np.array(rep["methods"]["random"][f"{mode}_aucs"])
        r = rep["methods"]["agreement:conv2"]
        assert r[f"{mode}_minus_random"] == pytest.approx(d.mean())
        assert r[f"{mode}_minus_random_se"] == pytest.approx(d.std(ddof=1) / 2)
    assert "deletion_minus_random" not in rep["methods"]["random"]
    table = fa.report_table(rep)
    assert "insertion - random (paired)" in table and f"{rep['methods']['agreement:conv2']['deletion_minus_random']:+.3f}" in table
    assert fa.parse_method("gradcam:layer3") == ("gradcam", "layer3")
    with pytest.raises(ValueError, match="only agreement, gain and gradcam take a layer"):
        fa.parse_method("random:conv1")
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        gv.faithfulness_report(toy, x, methods=("magic",), steps=4)


def test_faithfulness_cli_per_layer_road_on_the_bundled_toy(tmp_path, capsys):
    import json

    from gatta_viz.cli import faithfulness as fa

    out = tmp_path / "f"
    assert fa.main(["--model", "fmnist-gatta-toy", "--n", "3", "--steps", "4", "--methods", "random", "--per-layer",
                    "--baseline", "road", "--out", str(out)]) == 0
    rep = json.loads((out / "faithfulness.json").read_text())
    convs = [n for n, k in gv.load_model("fmnist-gatta-toy").model.layer_kinds.items() if k == "conv"]
    assert list(rep["methods"]) == ["random"] + [f"gain:{n}" for n in convs] and len(convs) >= 2  # gain by default
    assert rep["baseline"] == "road" and rep["noise"] == 0.01 and rep["n"] == 3
    with Image.open(out / "examples.png") as im:  # test image 0 as each map's curves show it: 4 rows of 6 panels
        assert im.size[0] > 400 and im.size[1] > 400
    # the per-layer maps follow the kinds asked for: raw agreement:LAYER when agreement is among the methods
    assert fa.main(["--model", "fmnist-gatta-toy", "--n", "2", "--steps", "2", "--methods", "agreement", "--per-layer",
                    "--out", str(out)]) == 0
    rep = json.loads((out / "faithfulness.json").read_text())
    assert list(rep["methods"]) == ["agreement"] + [f"agreement:{n}" for n in convs]
    assert fa.build_parser().parse_args([]).methods[0] == "gain"
    assert fa.main(["--model", "fmnist-gatta-toy", "--n", "3", "--methods", "agreement:fc", "--out", str(out)]) == 2
    assert "'fc' is not a GAttA conv layer of fmnist_gatta_toy" in capsys.readouterr().err


def test_total_gain_is_the_unscaled_mean_of_alpha_times_agreement_so_strong_layers_weigh_more(toy):
    torch.manual_seed(2)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        t = toy.trace(x)
    convs = [n for n, lt in t.layers.items() if lt.kind == "conv"]
    by_hand = np.mean([gv.upsample(float(t.layers[n].alpha) * t.agreement(n).numpy(), (28, 28)) for n in convs], axis=0)
    np.testing.assert_allclose(gv.explain_func(toy, x, [0, 1], method="total_gain")[:, 0], by_hand, rtol=1e-5, atol=1e-6)
    # the equal-vote "gain" map scales each layer to max |.| = 1 first: a different ranking in general
    scaled = np.mean([v for v in gv.normalize({n: gv.upsample(float(t.layers[n].alpha) * t.agreement(n)[0].numpy(), (28, 28))
                                                 for n in convs}).values()], axis=0)
    np.testing.assert_allclose(gv.explain_func(toy, x, [0, 1], method="gain")[0, 0], scaled, rtol=1e-5, atol=1e-6)
    assert not np.allclose(scaled / np.abs(scaled).max(), by_hand[0] / np.abs(by_hand[0]).max(), atol=1e-3)


def test_perturbed_images_are_what_the_curve_scores_and_examples_print_those_probabilities(tmp_path, monkeypatch):
    from gatta_viz.analysis import metric_plots

    torch.manual_seed(3)
    w = 0.3 * torch.randn(4, 4)
    x = torch.rand(2, 1, 4, 4)
    sal = np.arange(16, dtype=np.float32)[::-1].reshape(1, 4, 4).repeat(2, 0)  # raster order
    imgs = gv.perturbed_images(x, sal, "deletion", [0.0, 0.25, 1.0], baseline=-1.0)
    assert imgs.shape == (2, 3, 1, 4, 4)
    assert torch.equal(imgs[:, 0], x)
    assert torch.equal(imgs[:, 1, 0, 0], torch.full((2, 4), -1.0)) and torch.equal(imgs[:, 1, 0, 1:], x[:, 0, 1:])
    assert torch.equal(imgs[:, 2], torch.full_like(x, -1.0))
    ins = fa.perturbed_images(x, sal, "insertion", [0.25], baseline=-1.0)[:, 0]
    assert torch.equal(ins[:, 0, 0], x[:, 0, 0]) and torch.equal(ins[:, 0, 1:], torch.full((2, 3, 4), -1.0))
    model = PixelModel(w)
    for mode in ("deletion", "insertion"):
        for base in (0.0, "road"):
            curve = gv.perturbation_curve(model, x, sal, 1, mode, steps=4, baseline=base, noise=0)
            im = fa.perturbed_images(x, sal, mode, [0.25, 0.5, 0.75], baseline=base, noise=0)
            p = torch.softmax(model(im.flatten(0, 1)).double(), 1)[:, 1].view(2, 3).numpy()
            np.testing.assert_allclose(p, curve[:, 1:4], rtol=1e-7)
    with pytest.raises(ValueError, match=r"fractions must lie in \[0, 1\]"):
        fa.perturbed_images(x, sal, "deletion", [1.5])
    titles = []

    def grab(fig, path):
        titles.append([a.get_title() for a in fig.axes])
        return path

    monkeypatch.setattr(metric_plots, "save_figure", grab)
    panels = fa.example_panels(model, x[:1], {"raster": sal[0], "flat": np.zeros((4, 4))}, 1, fractions=(0.25, 0.5), baseline=-1.0)
    metric_plots.plot_image_grid(panels, str(tmp_path / "e.png"))
    c_del = gv.perturbation_curve(model, x[:1], sal[:1], 1, "deletion", steps=4, baseline=-1.0)[0]
    c_ins = gv.perturbation_curve(model, x[:1], sal[:1], 1, "insertion", steps=4, baseline=-1.0)[0]
    assert titles[0][:4] == [f"del 25%: p={c_del[1]:.2f}", f"del 50%: p={c_del[2]:.2f}",
                             f"ins 25%: p={c_ins[1]:.2f}", f"ins 50%: p={c_ins[2]:.2f}"]
    assert len(titles[0]) == 8
    metric_plots.plt.close("all")


def test_compare_with_captum_ranks_the_gain_map_by_default(toy):
    torch.manual_seed(5)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        toy.alpha_of("conv2").fill_(-0.5)
    try:
        gain = gv.compare_with_captum(toy, x, [1, 2], layers=["conv1", "conv2"], ig_steps=4)
        raw = gv.compare_with_captum(toy, x, [1, 2], layers=["conv1", "conv2"], ig_steps=4, gain=False)
    finally:
        with torch.no_grad():
            toy.alpha_of("conv2").fill_(0.3)
    assert {r["map"] for r in gain} == {"gain"} and {r["map"] for r in raw} == {"agreement"}
    for g, r in zip(gain, raw):
        sign = -1.0 if g["layer"] == "conv2" else 1.0  # alpha < 0 reverses the ranking; alpha > 0 keeps it
        for k in ("gradcam", "integrated_gradients", "saliency"):
            assert g[k] == pytest.approx(sign * r[k], abs=1e-9)
