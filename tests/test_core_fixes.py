"""Core behaviour found by wrapping real CNNs: BatchNorms shared by both passes update once per train-mode call,
alphas stay tensors (no host sync, exportable), a non-finite pass 2 is named as such, typos in layer names get a
"did you mean", a ScriptModule is refused with the documented ValueError."""
import copy
import warnings

import pytest
import torch
from torch import nn

import gatta_viz as gv
from gatta_viz import GAttANet
from gatta_viz.core.pass_statistics import is_batchnorm


def wrapped(norm_stats="per_pass", alpha=0.0):
    torch.manual_seed(0)
    return gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), d=8, alpha_init=alpha, norm_stats=norm_stats)


def prefix_bns(model):
    """BatchNorms that finish before the first GAttA layer is modulated (same input in both passes)."""
    return [n for n, m in model.backbone.named_modules() if is_batchnorm(m) and n.startswith(("stem", "layer1"))]


def buffers(module):
    return {k: v.clone() for k, v in module.named_buffers()}


@pytest.mark.parametrize("norm_stats", ["per_pass", "shared"])
def test_shared_batchnorms_update_once_per_train_call(norm_stats):
    model = wrapped(norm_stats)
    plain = copy.deepcopy(model.backbone).train()
    model.train()
    torch.manual_seed(1)
    batches = [torch.randn(8, 1, 28, 28) * 2 + 0.3 for _ in range(3)]
    for x in batches[:2]:  # with autograd (as in training): pass 2 recomputes the prefix
        model(x)
        plain(x)
    with torch.no_grad():  # without autograd: pass 2 may reuse the prefix; same rule
        model(batches[2])
        plain(batches[2])
    named, ref = dict(model.backbone.named_modules()), dict(plain.named_modules())
    assert prefix_bns(model)
    for n in prefix_bns(model):
        assert int(named[n].num_batches_tracked) == 3, n
        torch.testing.assert_close(named[n].running_mean, ref[n].running_mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(named[n].running_var, ref[n].running_var, atol=1e-6, rtol=0)
    if norm_stats == "per_pass":  # every pass keeps its own statistics: at alpha = 0 each equals the backbone's
        for n in model.pass2_stats.names:
            assert int(named[n].num_batches_tracked) == 3 and int(model.pass2_stats.of(n).num_batches_tracked) == 3
            torch.testing.assert_close(model.pass2_stats.of(n).running_mean, ref[n].running_mean, atol=1e-6, rtol=0)


def test_at_alpha_zero_training_the_wrapped_model_trains_its_backbone_the_same_way():
    """SGD on the backbone's weights with train-mode calls: the wrapped model (alpha = 0, frozen) and a copy of
    its backbone trained alone on the same batches end equal, in eval mode, to 1e-5."""
    model = wrapped("per_pass")
    for p in model.gatta_parameters():
        p.requires_grad_(False)
    plain = copy.deepcopy(model.backbone)
    opt_a = torch.optim.SGD(model.backbone.parameters(), lr=0.05)
    opt_b = torch.optim.SGD(plain.parameters(), lr=0.05)
    model.train(), plain.train()
    torch.manual_seed(2)
    for _ in range(3):
        x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
        for net, opt in ((model, opt_a), (plain, opt_b)):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    model.eval(), plain.eval()
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), atol=1e-5, rtol=0)
    for k, v in buffers(plain).items():
        torch.testing.assert_close(buffers(model.backbone)[k], v, atol=1e-6, rtol=0)


class HostReads:
    """Counts host reads (``.item()``, ``float()``, ``int()``, ``bool()``, ``.tolist()``) of any tensor."""

    NAMES = ("item", "__float__", "__int__", "__bool__", "tolist")

    def __init__(self, monkeypatch):
        self.calls = []
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def spy(t, *a, _name=name, _orig=original, **k):
                self.calls.append((_name, tuple(t.shape), isinstance(t, nn.Parameter)))
                return _orig(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, spy)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_forward_reads_no_tensor_on_the_host(monkeypatch, mode):
    model = wrapped(alpha=0.3)
    getattr(model, mode)()
    x = torch.randn(4, 1, 28, 28)
    reads = HostReads(monkeypatch)
    model(x)
    t = model.trace(x)
    assert reads.calls == [], reads.calls[:5]
    # the trace keeps alphas as tensors until read; reading gives the parameter's value
    assert torch.is_tensor(t.layers["layer2"].alpha_tensor)
    assert t.layers["layer2"].alpha == pytest.approx(0.3)
    assert t.alphas == {n: pytest.approx(0.3) for n in model.layer_names}


def test_torch_export_of_a_wrapped_resnet_works_and_matches():
    model = wrapped(alpha=0.3).eval()
    x = torch.randn(2, 1, 28, 28)
    exported = torch.export.export(model, (x,))
    y = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(y), model(y), atol=1e-5, rtol=1e-5)


def test_a_non_finite_pass_2_is_named_as_such():
    model = wrapped(alpha=0.3).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ok = model.trace(x)
        assert ok.finite and ok.nonfinite() == []
        ok.check_finite()  # no error
        for n in ("layer2", "layer3"):  # pass 2 overflows; pass 1 and every map stay finite
            model.alpha_of(n).fill_(1e38)
        bad = model.trace(x)
    assert torch.isfinite(bad.logits_pass1).all() and all(torch.isfinite(lt.agreement).all() for lt in bad.layers.values())
    assert not bad.finite
    problems = bad.nonfinite()
    assert len(problems) == 1 and "pass 2" in problems[0] and "layer2" in problems[0] and "layer3" in problems[0]
    with pytest.raises(ValueError, match="pass 2") as e:
        bad.check_finite()
    assert "layer1" not in str(e.value).split("largest")[0]  # a finite map is not blamed
    with torch.no_grad():
        model.alpha_of("layer2").fill_(0.3), model.alpha_of("layer3").fill_(0.3)
        model.kq_of("layer1").key.weight.fill_(float("nan"))
        nan_map = model.trace(x)
    assert "layer1" in nan_map.nonfinite()[0] and "agreement" in nan_map.nonfinite()[0]


@pytest.mark.parametrize("accessor", ["alpha_of", "kq_of"])
def test_a_misspelled_layer_gets_did_you_mean(accessor):
    model = wrapped()
    with pytest.raises(KeyError) as e:
        getattr(model, accessor)("layr2")
    assert isinstance(e.value, ValueError)  # a KeyError for old callers, a ValueError like every other name check
    assert "did you mean" in str(e.value) and "'layer2'" in str(e.value)
    assert str(e.value).startswith("unknown")  # a message, not a bare repr of the key
    t = model.trace(torch.randn(1, 1, 28, 28))
    with pytest.raises(KeyError, match="did you mean"):
        t.agreement("layer 2")


def test_wrapping_a_script_module_is_the_documented_value_error():
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with warnings.catch_warnings():  # torch deprecates TorchScript; users still hand us scripted models
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(backbone)
    with pytest.raises(ValueError, match="ScriptModule"):
        GAttANet(scripted, ["0"], input_shape=(1, 8, 8), d=4)
    GAttANet(backbone, ["0"], input_shape=(1, 8, 8), d=4)  # the same network, not scripted, wraps
    assert "ValueError" in GAttANet.__doc__.split("Raises:")[1] and "ScriptModule" in GAttANet.__doc__
