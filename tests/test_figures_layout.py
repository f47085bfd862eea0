"""Fig. 3 at journal column widths: size in inches, fonts >= 7 pt, nothing cut off or overlapping, a scale per map,
legends that follow every option, fast PNGs identical to a full savefig, PDF/SVG at the same size."""
import io
import itertools
import math
import os
import re

import matplotlib.text as mtext
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

import gatta_viz as gv
from gatta_viz.render.fig3 import Fig3Renderer
from gatta_viz.render.fig3_text import FONT_PT, LAYOUTS

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_images", "fashion-mnist")


@pytest.fixture(scope="module", params=["fmnist-gatta-resnet", "fmnist-gatta-toy"])
def traced(request):
    """(loaded model, prepared sample, its trace) for the bundled ResNet (1 dense layer) and toy (2 dense layers)."""
    lm = gv.load_model(request.param)
    path = os.path.join(SAMPLES, "ankle-boot_test00000.png")
    prep = gv.prepare_image(gv.load_image(path), lm.preprocess)
    with torch.no_grad():
        t = lm.model.trace(prep.tensor)
    return lm, prep, t


def drawn_texts(fig):
    """Every visible non-empty text of a drawn figure with its window extent (pixels)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    return [(t, t.get_window_extent(r)) for t in fig.findobj(mtext.Text) if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize("layout", ["single", "double"])
@pytest.mark.parametrize("gain, signed, joint", [(True, True, False), (False, True, True), (True, False, True)])
def test_size_fonts_and_no_text_cut_off_or_overlapping(traced, layout, gain, signed, joint, tmp_path):
    lm, prep, t = traced
    fig = gv.fig3(gv.explanation_from_trace(t, prep.shown, 0, classes=lm.classes, true_label=3, gain=gain, signed=signed, joint=joint), layout=layout)
    w, h = fig.get_size_inches()
    assert w == pytest.approx(LAYOUTS[layout]) and w == pytest.approx({"single": 3.5, "double": 7.2}[layout])
    assert 2.5 < h < 7.0
    texts = drawn_texts(fig)
    assert len(texts) > 20  # titles, scale labels, legend, ticks, class names
    assert min(t_.get_fontsize() for t_, _ in texts) >= FONT_PT >= 7  # at print size: the figure is never scaled
    box = fig.bbox
    for t_, b in texts:  # nothing drawn outside the page (the size is fixed: no tight crop to rescue it)
        assert box.x0 - 0.5 <= b.x0 and b.x1 <= box.x1 + 0.5 and box.y0 - 0.5 <= b.y0 and b.y1 <= box.y1 + 0.5, t_.get_text()
    upright = [(t_, b) for t_, b in texts if t_.get_rotation() == 0]
    for (a, ba), (c, bc) in itertools.combinations(upright, 2):
        assert not ba.shrunk(0.98, 0.9).overlaps(bc.shrunk(0.98, 0.9)), (a.get_text(), c.get_text())
    rotated = sorted(((t_, b) for t_, b in texts if t_.get_rotation() != 0), key=lambda tb: tb[1].x1)
    assert [t_.get_text() for t_, _ in rotated] == list(lm.classes)
    # parallel 45-degree labels: the distance between neighbours, across the text, exceeds a line of text
    gap = min(b2.x1 - b1.x1 for (_, b1), (_, b2) in zip(rotated, rotated[1:])) * math.sin(math.radians(45))
    assert gap > 1.15 * FONT_PT / 72 * fig.dpi
    # the saved file keeps the size in inches (save_figure does not crop a fixed-size layout)
    with Image.open(gv.save_figure(fig, str(tmp_path / "f.png"), dpi=100)) as im:
        assert im.size[0] == round(w * 100) and abs(im.size[1] - h * 100) <= 1


def test_each_map_prints_its_own_scale_when_scaled_per_layer(traced, tmp_path):
    lm, prep, t = traced
    convs = [n for n, lt in t.layers.items() if lt.kind == "conv"]
    fig = gv.fig3(gv.explanation_from_trace(t, prep.shown, 0, classes=lm.classes))  # gain map, per-layer scale: the defaults
    texts = [t_.get_text() for t_, _ in drawn_texts(fig)]
    scales = [s for s in texts if s.startswith("scale ±")]
    assert len(scales) == len(convs)
    for n, s in zip(convs, scales):  # in forward order, each the max |alpha x agreement| of its own map
        expected = float((t.layers[n].alpha * t.agreement(n)[0]).abs().max())
        assert float(s.split("±")[1].replace("\u2212", "-")) == pytest.approx(expected, rel=0.05)
    colorbar = fig.axes[1 + len(convs)]  # after the input and the maps
    assert [x.get_text() for x in colorbar.get_xticklabels()] == ["\u2212scale", "0", "+scale"]
    legend = next(s for s in texts if "boosted" in s)
    assert legend.startswith("α × agreement: > 0 boosted by pass 2, < 0 suppressed")
    assert "each map scaled to its own max |value|" in legend.replace("\n", " ")
    # one scale for all maps: no per-map labels; the colourbar's ends are the largest |value| over the maps
    joint = [t_.get_text() for t_, _ in drawn_texts(gv.fig3(gv.explanation_from_trace(t, prep.shown, 0, classes=lm.classes, joint=True)))]
    assert not [s for s in joint if s.startswith("scale ±")]
    top = max(float((t.layers[n].alpha * t.agreement(n)[0]).abs().max()) for n in convs)
    assert f"{top:.2g}" in joint and any("one scale for all maps" in s for s in joint)


@pytest.mark.parametrize("gain, signed, words", [
    (True, True, "α × agreement: > 0 boosted by pass 2, < 0 suppressed"),
    (True, False, "α × agreement: boosted by pass 2 only (rectified)"),
    (False, True, "raw agreement (sign set by training): > 0 agrees with q_avg, < 0 disagrees"),
    (False, False, "raw agreement (sign set by training): agreement > 0 only (rectified)"),
])
def test_legend_follows_map_kind_and_sign(traced, gain, signed, words):
    lm, prep, t = traced
    texts = [t_.get_text().replace("\n", " ") for t_, _ in drawn_texts(gv.fig3(gv.explanation_from_trace(t, prep.shown, 0, classes=lm.classes, gain=gain, signed=signed)))]
    assert any(s.startswith(words) for s in texts), texts
    dense_label = "gain 1 + α × agreement" if gain else "raw agreement (sign set by training)"
    assert sum(dense_label in s for s in texts) >= len([lt for lt in t.layers.values() if lt.kind == "dense"])


def test_rectified_maps_use_the_upper_half_of_the_diverging_map(traced):
    from matplotlib import colormaps

    lm, prep, t = traced
    fig = gv.fig3(gv.explanation_from_trace(t, prep.shown, 0, classes=lm.classes, signed=False))
    cmap = fig.axes[1].images[0].get_cmap()
    assert cmap(0.0)[:3] == pytest.approx(colormaps["RdBu_r"](0.5)[:3], abs=0.01)  # 0 is the neutral centre
    assert cmap(1.0)[:3] == pytest.approx(colormaps["RdBu_r"](1.0)[:3], abs=0.01)
    shown = np.asarray(fig.axes[1].images[0].get_array())
    assert shown.min() >= 0 and shown.max() == pytest.approx(1.0)


def test_fast_png_is_the_full_savefig_and_a_reused_renderer_forgets_the_last_image(traced, tmp_path):
    lm, prep, t = traced
    x = torch.cat([gv.prepare_image(gv.load_image(os.path.join(SAMPLES, f)), lm.preprocess).tensor
                   for f in ("bag_test00018.png", "trouser_test00002.png")])
    with torch.no_grad():
        t2 = lm.model.trace(x)
    pred = [int(v) for v in t2.logits_pass2.argmax(1)]
    wrong = [(p + 1) % 10 for p in pred]  # a true class that differs: a dashed outline appears
    rec0 = gv.explanation_from_trace(t2, x[0], 0, classes=lm.classes, true_label=wrong[0])
    rec1 = gv.explanation_from_trace(t2, x[1], 1, classes=lm.classes)
    single = gv.FigureOptions(layout="single")
    r = Fig3Renderer(rec0, single)
    assert r.matches(rec1, single) and not r.matches(rec1, gv.FigureOptions(layout="double"))
    r.update(rec0)
    first = r.to_png(dpi=120)
    r.update(rec1)
    r.to_png(dpi=120)
    r.update(rec0)
    again = r.to_png(dpi=120)
    assert first == again  # nothing of image 1 (maps, bars, outlines, header, ticks) is left over
    fresh = Fig3Renderer(rec0, single)
    fresh.update(rec0)
    assert fresh.to_png(dpi=120) == first
    full = io.BytesIO()
    r.fig.savefig(full, format="png", dpi=120)
    a = np.asarray(Image.open(io.BytesIO(first)).convert("RGB")).astype(int)
    b = np.asarray(Image.open(io.BytesIO(full.getvalue())).convert("RGB")).astype(int)
    assert a.shape == b.shape and a.shape[1] == 420 and abs(a.shape[0] - r.height_in * 120) <= 1
    diff = np.abs(a - b).max(2)
    assert diff.max() <= 2 and (diff > 0).mean() < 1e-3  # the same picture, up to antialiasing rounding
    # image 1's header is not image 0's
    r.update(rec1)
    assert r.to_png(dpi=120) != first
    # a record of another kind (raw agreement) does not fit this renderer: it says so instead of drawing wrong labels
    with pytest.raises(ValueError, match="another kind of explanation"):
        r.update(gv.explanation_from_trace(t2, x[1], 1, classes=lm.classes, gain=False))


def test_pdf_and_svg_keep_the_size_in_inches(traced, tmp_path):
    lm, prep, t = traced
    rec = gv.explanation_from_trace(t, prep.shown, 0, classes=lm.classes)
    r = Fig3Renderer(rec, gv.FigureOptions(layout="single"))
    r.update(rec)
    with open(r.save(str(tmp_path / "f.pdf")), "rb") as f:
        pdf = f.read()
    box = [float(v) for v in re.search(rb"/MediaBox \[\s*([\d.\s]+)\]", pdf).group(1).split()]
    assert box[2] == pytest.approx(3.5 * 72, abs=0.5) and box[3] == pytest.approx(r.height_in * 72, abs=0.5)
    with open(r.save(str(tmp_path / "f.svg"))) as f:
        svg = f.read()
    assert re.search(r'width="252(\.0+)?pt"', svg)
    png = r.save(str(tmp_path / "f.png"), dpi=100)  # the fast path still works after a vector save
    with Image.open(png) as im:
        assert im.size[0] == 350 and abs(im.size[1] - r.height_in * 100) <= 1
    with pytest.raises(ValueError, match="must end in"):
        r.save(str(tmp_path / "f.jpg"))


def test_bad_layout_and_colormap_are_named():
    torch.manual_seed(0)
    toy = gv.gatta_toy(in_channels=1, input_size=28, alpha_init=0.2).eval()
    with torch.no_grad():
        t = toy.trace(torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match="layout must be one of"):
        gv.fig3(gv.explanation_from_trace(t, torch.zeros(1, 28, 28), 0), layout="a4")
    with pytest.raises(ValueError, match=r"unknown colormap 'viridus'; did you mean \['viridis'"):
        gv.fig3(gv.explanation_from_trace(t, torch.zeros(1, 28, 28), 0), cmap="viridus")


def _six_conv_net():
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(*[m for i in range(6) for m in (nn.Conv2d(1 if i == 0 else 4, 4, 3, padding=1), nn.ReLU())],
                        nn.Flatten(), nn.Linear(4 * 16 * 16, 5))
    return net


@pytest.mark.parametrize("layers, classes", [([str(2 * i) for i in range(6)], None), (["12"], list("abcde"))])
@pytest.mark.parametrize("layout", ["single", "double"])
def test_other_layer_structures_fit_too(layers, classes, layout):
    """Six conv maps (two rows at single width) and no dense layer; or a dense layer alone with gains of ~1e-8."""
    model = gv.GAttANet(_six_conv_net(), layers, input_shape=(1, 16, 16), d=4, alpha_init=0.1).eval()
    with torch.no_grad():
        t = model.trace(torch.randn(1, 1, 16, 16))
    fig = gv.fig3(gv.explanation_from_trace(t, torch.randn(1, 16, 16), 0, classes=classes), layout=layout)
    assert fig.get_size_inches()[0] == pytest.approx(LAYOUTS[layout])
    texts = drawn_texts(fig)
    box = fig.bbox
    for t_, b in texts:
        assert box.x0 - 0.5 <= b.x0 and b.x1 <= box.x1 + 0.5 and box.y0 - 0.5 <= b.y0 and b.y1 <= box.y1 + 0.5, t_.get_text()
        assert t_.get_fontsize() >= 7
    upright = [(t_, b) for t_, b in texts if t_.get_rotation() == 0]
    for (a, ba), (c, bc) in itertools.combinations(upright, 2):
        assert not ba.shrunk(0.98, 0.9).overlaps(bc.shrunk(0.98, 0.9)), (a.get_text(), c.get_text())
    assert len([s for s, _ in texts if s.get_text().startswith("scale ±")]) == (6 if len(layers) == 6 else 0)


def _label_value(text: str) -> float:
    """Value printed by a y tick label: "0.95", "−0.5", or a base with a tiny offset such as "1+5e−08"."""
    s = text.replace("\u2212", "-")
    m = re.fullmatch(r"(-?[\d.]+)([+-]\d(?:\.\d+)?e-?\d+)?", s)
    assert m, text
    return float(m.group(1)) + (float(m.group(2)) if m.group(2) else 0.0)


@pytest.mark.parametrize("span", [1.657, 0.25, 0.0031, 4e-8])
def test_dense_axis_ticks_are_the_baseline_and_print_their_values(span):
    """Gains 1 + v for a class layer whose largest |v| is ``span`` (the coffee-cup photo gives 1.657)."""
    from torch import nn

    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 8 * 8, 4))
    model = gv.GAttANet(net, ["0", "2"], input_shape=(1, 8, 8), d=2, alpha_init=1.0).eval()
    with torch.no_grad():
        t = model.trace(torch.randn(1, 1, 8, 8))
    v = torch.tensor([[span, -0.3 * span, 0.0, -span / 7]])
    t.layers["2"].agreement = v  # alpha 1: the gains are 1 + v
    fig = gv.fig3(gv.explanation_from_trace(t, torch.zeros(1, 8, 8), 0, classes=list("abcd")))
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[-1]
    ticks = ax.get_yticks()
    assert ticks[1] == 1.0 and ticks[0] == pytest.approx(2 - ticks[2])  # the baseline, symmetric around it
    assert 0.5 * span <= ticks[2] - 1 <= 1.1 * span
    printed = [_label_value(lb.get_text()) for lb in ax.get_yticklabels()]
    np.testing.assert_allclose(printed, ticks, rtol=0, atol=(ticks[2] - 1) * 0.05)
    assert ax.get_ylim()[0] < ticks[0] and ticks[2] < ax.get_ylim()[1]
