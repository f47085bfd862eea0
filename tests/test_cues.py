"""Top-down cues: a given global query replaces the pooled one, by hand; per-image queries do not mix; class
queries are per-class means of pass-1 q_avg; stored with a checkpoint and read back by class name."""
import numpy as np
import pytest
import torch

import gatta_viz as gv
from gatta_viz.cli import main
from gatta_viz.training.cues import class_queries


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), d=8, alpha_init=0.7).eval()
    return m


def test_the_pooled_query_as_cue_changes_nothing(model):
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        t = model.trace(x)
        c = model.trace(x, query=t.q_avg)
    assert torch.equal(c.logits_pass2, t.logits_pass2) and torch.equal(c.q_pass1, t.q_avg)
    assert c.meta["cued"] and not t.meta["cued"] and t.q_pass1 is None


def test_a_cue_sets_every_map_to_keys_dot_cue_and_leaves_pass1_alone(model):
    x = torch.randn(2, 1, 28, 28)
    q = torch.randn(8)
    with torch.no_grad():
        t = model.trace(x, return_keys=True)
        c = model.trace(x, query=q, return_keys=True)
    assert torch.equal(c.logits_pass1, t.logits_pass1)
    for n, lt in c.layers.items():
        keys = lt.keys
        by_hand = torch.einsum("bdhw,d->bhw", keys, q) if lt.kind == "conv" else torch.einsum("bcd,d->bc", keys, q)
        assert torch.allclose(lt.agreement, by_hand, atol=1e-5), n
    assert (c.logits_pass2 - t.logits_pass2).abs().max() > 1e-4
    with torch.no_grad():  # alpha = 0: nothing is modulated, so no cue changes the output
        off = {n: 0.0 for n in model.layer_names}
        assert torch.allclose(model.trace(x, query=q, alpha_override=off).logits_pass2, t.logits_pass1, atol=1e-6)


def test_one_query_per_image_does_not_mix_across_the_batch(model):
    x = torch.randn(3, 1, 28, 28)
    q = torch.randn(3, 8)
    with torch.no_grad():
        batch = model.trace(x, query=q)
        for i in range(3):
            alone = model.trace(x[i : i + 1], query=q[i])
            assert torch.allclose(batch.logits_pass2[i], alone.logits_pass2[0], atol=1e-5)


@pytest.mark.parametrize("query, message", [
    (torch.randn(7), r"shape \(8,\) or \(2, 8\)"),
    (torch.randn(3, 8), r"shape \(8,\) or \(2, 8\)"),
    (torch.full((8,), float("nan")), "NaN"),
    ([0.0] * 8, "torch.Tensor"),
])
def test_bad_queries_are_named(model, query, message):
    with pytest.raises(ValueError, match=message):
        model.trace(torch.randn(2, 1, 28, 28), query=query)


def test_class_queries_are_per_class_means_of_pass1_q_avg(model):
    data = gv.load_fashion_mnist("test").subset(120)
    q = class_queries(model, data, batch_size=50, progress=False)
    with torch.no_grad():
        pooled = model.trace(data.tensors()[0]).q_avg
    for c in range(10):
        assert torch.allclose(q[c], pooled[data.labels == c].mean(0), atol=1e-5)
    assert not model.training


def test_cues_are_stored_with_the_checkpoint_and_read_by_class_name(tmp_path, capsys):
    src = str(tmp_path / "m.pt")
    toy = gv.load_model("fmnist-gatta-toy")
    gv.save_checkpoint(src, toy.model, "gatta_toy", toy.kwargs, toy.classes, toy.preprocess)
    with pytest.raises(ValueError, match="no stored class queries"):
        gv.load_checkpoint(src).cue("Trouser")
    assert main(["cues", src, str(tmp_path / "cued.pt"), "--dataset", "fashion-mnist", "--images", "1000"]) == 0
    lm = gv.load_checkpoint(str(tmp_path / "cued.pt"))
    assert lm.class_queries.shape == (10, lm.model.d) and lm.meta["class_queries"]["images"] == 1000
    assert torch.equal(lm.cue("Trouser"), lm.class_queries[1])
    with pytest.raises(ValueError, match="unknown class 'Socks'"):
        lm.cue("Socks")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # refused while parsing: the source must be an existing file
        main(["cues", str(tmp_path / "nope.pt"), str(tmp_path / "x.pt")])
    assert e.value.code == 2 and "no such file" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_steering_queries_by_hand_and_the_default_definition(tmp_path):
    from gatta_viz.models.checkpoint import steering_queries

    means = torch.tensor([[3.0, 0.0], [1.0, 2.0], [2.0, 4.0]])
    centred = means - torch.tensor([2.0, 2.0])
    want = -centred * (means.norm(dim=1, keepdim=True) / centred.norm(dim=1, keepdim=True))
    assert torch.allclose(steering_queries(means, -1), want)
    assert torch.allclose(steering_queries(means, 1).norm(dim=1), means.norm(dim=1))
    # a checkpoint with a calibrated sign cues with the steering definition by default, the mean on request
    torch.manual_seed(0)
    model = gv.build_model("gatta_compact_resnet", in_channels=1, num_classes=3, widths=[8, 16, 32], input_size=48,
                           stem_stride=2)
    pre = {"size": [48, 48], "channels": 1, "mean": [0.2], "std": [0.3]}
    kw = {"in_channels": 1, "num_classes": 3, "widths": [8, 16, 32], "input_size": 48, "stem_stride": 2}
    path = str(tmp_path / "m.pt")
    gv.save_checkpoint(path, model, "gatta_compact_resnet", kw, ["a", "b", "c"], pre,
                       {"class_queries": {"sign": -1}}, class_queries=torch.randn(3, model.d))
    lm = gv.load_checkpoint(path)
    assert lm.cue_definition == "steering"
    assert torch.allclose(lm.cue("b"), steering_queries(lm.class_queries, -1)[1])
    assert torch.equal(lm.cue("b", "mean"), lm.class_queries[1])
    with pytest.raises(ValueError, match="definition"):
        lm.cue("b", "median")
    gv.save_checkpoint(path, model, "gatta_compact_resnet", kw, ["a", "b", "c"], pre, {},
                       class_queries=torch.randn(3, model.d))
    lm = gv.load_checkpoint(path)
    assert lm.cue_definition == "mean" and torch.equal(lm.cue("c"), lm.class_queries[2])
    with pytest.raises(ValueError, match="calibrated cue sign"):
        lm.cue("c", "steering")


def test_calibration_picks_the_sign_that_puts_more_energy_on_the_cued_item():
    from gatta_viz.data.scenes import make_scenes
    from gatta_viz.metrics.cueing import calibrate_cue_sign, measure_cues
    from gatta_viz.models.checkpoint import steering_queries

    torch.manual_seed(1)
    model = gv.build_model("gatta_compact_resnet", in_channels=1, num_classes=10, widths=[8, 16, 32], input_size=48,
                           stem_stride=2, alpha_init=0.5).eval()
    scenes = make_scenes(gv.load_fashion_mnist("test").subset(200), 10, seed=2)
    means = torch.randn(10, model.d)
    res = calibrate_cue_sign(model, means, scenes, n=10)
    labels = scenes.labels.numpy()
    rates = {}
    for sign in (1, -1):
        m = measure_cues(model, scenes, steering_queries(means, sign), n=None, progress=False)
        own = np.stack([m.cued_share[np.arange(10), labels[:, k], 0, k] for k in range(2)], 1)
        other = np.stack([m.cued_share[np.arange(10), labels[:, k], 0, 1 - k] for k in range(2)], 1)
        rates[sign] = float((own > other).mean())
    assert res["success_plus"] == rates[1] and res["success_minus"] == rates[-1]
    assert res["sign"] == (1 if rates[1] >= rates[-1] else -1) and res["scenes"] == 10
