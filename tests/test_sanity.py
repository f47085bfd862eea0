"""Model-parameter randomisation sanity checks (gatta_viz.metrics.sanity): which parameters each step
re-initialises, that the caller's model is never touched, the report's structure, and a Quantus cross-check."""
import copy
import json
import math

import numpy as np
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from gatta_viz.metrics import sanity as sa
from gatta_viz.models.builders import build_model

TINY = dict(in_channels=1, num_classes=10, widths=[8, 16, 32], input_size=48, stem_stride=2)


def _trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and BatchNorm statistic (both passes) values no fresh model has, so a reset shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                b.fill_(7)
        for a in getattr(model, "alpha", {}).values():
            a.fill_(-0.4)  # a negative alpha, so the untrained copy must keep its sign
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return _trained_like(build_model("gatta_compact_resnet", **TINY))


@pytest.fixture(scope="module")
def x():
    return torch.randn(4, 1, 48, 48, generator=torch.Generator().manual_seed(1))


def _prefixes(keys):
    """'backbone.layer3.0.conv1.weight' -> 'backbone.layer3', 'kq.fc.key' -> 'kq.fc', 'alpha.fc' -> 'alpha',
    'pass2_stats.stats.layer3__0__bn1.running_mean' -> 'pass2.layer3'."""
    out = set()
    for k in keys:
        parts = k.split(".")
        if parts[0] == "pass2_stats":
            out.add("pass2." + parts[2].split("__")[0])
        elif parts[0] == "alpha":
            out.add("alpha")
        else:
            out.add(".".join(parts[:2]))
    return out


def test_cascade_step_k_changes_exactly_the_blocks_above_it_with_their_keys_queries_and_bn_statistics(tiny):
    blocks = sa.cascade_blocks(tiny)
    assert blocks == [("fc", ["fc"]), ("layer3", ["layer3"]), ("layer2", ["layer2"]), ("layer1", ["layer1"]), ("stem", [])]
    steps = list(sa.randomize(tiny, "cascade", seed=3))
    assert [s[0] for s in steps] == ["cascade:fc", "cascade:layer3", "cascade:layer2", "cascade:layer1", "cascade:stem"]
    state = tiny.state_dict()
    pass2 = set(tiny.pass2_stats.names)
    for k, (name, done, m) in enumerate(steps):
        changed = set(sa.changed_parameters(tiny, m))
        above = [b for b, _ in blocks[: k + 1]]
        expected = {f"backbone.{b}" for b in above} | {f"kq.{b}" for b in above if b != "stem"}
        expected |= {f"pass2.{b}" for b in above if any(n.startswith(b + ".") for n in pass2)}
        assert _prefixes(changed) == expected, name
        # every tensor of a re-initialised block changed (BatchNorm buffers reset too), nothing else did
        for key, v in m.state_dict().items():
            in_block = any(key.startswith((f"backbone.{b}.", f"kq.{b}.", f"pass2_stats.stats.{b}__")) for b in above)
            assert (key in changed) == in_block, key
            if not in_block:
                assert torch.equal(v, state[key])
        assert m.alphas == tiny.alphas  # alphas kept as trained
        assert not m.training
        # cumulative: what step k-1 re-initialised is the same tensor at step k
        if k:
            prev = steps[k - 1][2].state_dict()
            for key in sa.changed_parameters(tiny, steps[k - 1][2]):
                assert torch.equal(prev[key], m.state_dict()[key]), key
    bn = dict(steps[-1][2].backbone.named_modules())["layer3.0.bn1"]
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var)) and float(bn.weight.detach().sum()) == bn.weight.numel()
    st = steps[-1][2].pass2_stats.of("layer3.0.bn1")
    assert torch.equal(st.running_mean, torch.zeros_like(st.running_mean)) and int(st.num_batches_tracked) == 0


def test_independent_mode_changes_one_block_at_a_time(tiny):
    steps = list(sa.randomize(tiny, "independent", seed=0))
    assert [s[0] for s in steps] == [f"independent:{b}" for b, _ in sa.cascade_blocks(tiny)]
    for name, done, m in steps:
        block = name.split(":")[1]
        expected = {f"backbone.{block}"} | ({f"kq.{block}"} if block != "stem" else set())
        expected |= {f"pass2.{block}"} if any(n.startswith(block + ".") for n in tiny.pass2_stats.names) else set()
        assert _prefixes(sa.changed_parameters(tiny, m)) == expected, name


def test_gatta_mode_changes_only_keys_and_queries_and_batchnorm_keep_leaves_bn_trained(tiny):
    (name, done, m), = sa.randomize(tiny, "gatta", seed=0)
    assert name == "gatta" and done == [f"kq.{n}" for n in tiny.layer_names]
    gatta_keys = {f"kq.{k}" for k in dict(tiny.kq.named_parameters())}
    assert set(sa.changed_parameters(tiny, m)) == gatta_keys  # all four layers' keys and queries, dense fc included
    assert m.alphas == tiny.alphas
    (_, _, b), = sa.randomize(tiny, "backbone", seed=0)
    assert all(k.startswith(("backbone.", "pass2_stats.")) for k in sa.changed_parameters(tiny, b))
    (_, _, kept), = sa.randomize(tiny, "backbone", seed=0, batchnorm="keep")
    changed = sa.changed_parameters(tiny, kept)
    bn_keys = {f"backbone.{n}.{p}" for n, mod in tiny.backbone.named_modules() if isinstance(mod, _BatchNorm)
               for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert changed and not (set(changed) & bn_keys) and not any(k.startswith("pass2_stats") for k in changed)
    with pytest.raises(ValueError, match="needs a GAttA model"):
        list(sa.randomize(build_model("compact_resnet", **TINY), "gatta"))
    with pytest.raises(ValueError, match="mode must be one of"):
        list(sa.randomize(tiny, "layerwise"))


def test_untrained_copy_is_fresh_everywhere_with_a_tiny_alpha_of_the_trained_sign(tiny, x):
    (_, done, m), = sa.randomize(tiny, "untrained", seed=0, untrained_alpha=1e-6)
    assert done[-1] == "alpha"
    assert all(math.isclose(a, -1e-6, rel_tol=1e-5) for a in m.alphas.values())
    changed = set(sa.changed_parameters(tiny, m))
    assert {k for k, _ in tiny.named_parameters()} <= changed
    with torch.no_grad():  # pass 2 = pass 1 up to alpha: a fresh network's output
        t = m.trace(x)
    assert torch.allclose(t.logits_pass1, t.logits_pass2, atol=1e-4)


def test_report_leaves_the_callers_model_untouched_and_has_the_right_structure(tiny, x):
    model = copy.deepcopy(tiny).train()  # in train mode: the report must explain in eval mode and restore the flag
    model.backbone.layer1.eval()  # a mixed state, restored module by module
    flags = {n: m.training for n, m in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    rep = sa.randomization_report(model, x, methods=("gain", "gradcam"), seed=0, keep_maps=2)
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)  # seeded randomisation forks the global RNG
    names = [s["name"] for s in rep["steps"]]
    assert names == ["trained", "cascade:fc", "cascade:layer3", "cascade:layer2", "cascade:layer1", "cascade:stem",
                     "gatta", "backbone", "untrained"]
    assert rep["steps"][0]["changed_tensors"] == 0 and rep["steps"][0]["prediction_kept"] == 1.0
    assert rep["n"] == 4 and rep["methods"] == ["gain", "gradcam"]
    for meth in ("gain", "gradcam"):
        assert set(rep["results"][meth]) == set(names)
        ref = rep["results"][meth]["trained"]  # a model against itself: 1
        assert ref["spearman"] == pytest.approx(1.0) and ref["pearson_abs"] == pytest.approx(1.0) and ref["n_valid"] == 4
        for name in names:
            r = rep["results"][meth][name]
            assert len(r["spearman_per_image"]) == 4
            assert r["spearman"] is None or -1 <= r["spearman"] <= 1
        assert rep["maps"][meth]["cascade:layer2"].shape == (2, 48, 48)
    # the gain map is computed from the keys and queries: re-initialising them alone must change it
    assert rep["results"]["gain"]["gatta"]["spearman"] < 0.99
    maps = rep.pop("maps")
    json.dumps(rep, allow_nan=False)
    assert "cascade:layer3" in sa.report_text(rep) and set(maps) == {"gain", "gradcam"}


def test_docs_script_writes_report_and_figures_for_a_clutter_checkpoint(tiny, tmp_path):
    import importlib.util
    import os

    from gatta_viz.models.checkpoint import save_checkpoint

    ck = tmp_path / "tiny.pt"
    save_checkpoint(str(ck), tiny, "gatta_compact_resnet", TINY, [str(i) for i in range(10)],
                    {"size": [48, 48], "channels": 1, "mean": [0.4402], "std": [0.2129]},
                    {"dataset": "fmnist-clutter", "epochs": 6, "history": [{"epoch": 1}]})
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "clutter_sanity.py")
    spec = importlib.util.spec_from_file_location("clutter_sanity", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "out"
    assert script.main(["--checkpoint", str(ck), "--n", "3", "--examples", "2", "--modes", "cascade", "gatta",
                        "untrained", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["dataset"] == "fmnist-clutter" and rep["n"] == 3 and rep["epochs_trained"] == 1
    text = (out / "report.txt").read_text()
    assert "PARTIALLY TRAINED: 1 of 6 epochs" in text and "rule (docs/RESULTS.md 9.4)" in text
    for f in ("sanity.png", "curves.png"):
        assert (out / f).stat().st_size > 10_000


def test_map_similarity_of_a_map_with_itself_is_one_and_constant_maps_are_nan():
    a = np.random.default_rng(0).normal(size=(12, 12))
    s = sa.map_similarity(a, a)
    assert s == pytest.approx({"spearman": 1.0, "spearman_abs": 1.0, "pearson_abs": 1.0})
    assert sa.map_similarity(a, -a)["spearman"] == pytest.approx(-1.0)
    assert all(math.isnan(v) for v in sa.map_similarity(a, np.zeros_like(a)).values())


def test_first_cascade_step_matches_quantus_mprt_on_a_plain_cnn(x):
    quantus = pytest.importorskip("quantus")
    from gatta_viz.metrics.faithfulness import explain_func

    torch.manual_seed(0)
    plain = _trained_like(build_model("compact_resnet", **TINY))
    with torch.no_grad():
        pred = plain(x).argmax(1)

    def ef(model, inputs, targets, **kwargs):
        return explain_func(model, torch.as_tensor(inputs), targets, method="gradcam", layer="layer3")

    seed = 5
    metric = quantus.MPRT(layer_order="top_down", seed=seed - 1, abs=False, normalise=False, disable_warnings=True)
    scores = metric(model=plain, x_batch=x.numpy(), y_batch=pred.numpy(), a_batch=None, explain_func=ef, batch_size=4)
    assert next(k for k in scores if k != "original") == "fc"  # Quantus re-initialises fc first, alone
    rep = sa.randomization_report(plain, x, methods=("gradcam:layer3",), seed=seed, modes=("cascade",))
    ours = rep["results"]["gradcam:layer3"]["cascade:fc"]["spearman_per_image"]
    np.testing.assert_allclose(ours, scores["fc"], atol=1e-5)
    assert max(ours) < 0.99  # re-initialising fc did change the maps: the match is not trivial
    assert scores["original"] == pytest.approx([1.0] * 4)
