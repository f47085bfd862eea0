"""The GAttA wrapper: equivalence at alpha = 0, gradients, hooks, modes, configuration errors, builders."""
import copy

import pytest
import torch
from torch import nn

import gatta_viz as gv



def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture
def resnet_small():
    torch.manual_seed(0)
    return gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), d=8)


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1)), (3, 1, 28, 28)),
        (lambda: gv.gatta_toy(in_channels=3), (2, 3, 32, 32)),
        (lambda: gv.gatta_resnet18(num_classes=10, input_size=64), (2, 3, 64, 48)),
    ],
)
def test_alpha_zero_equals_backbone_and_alpha_nonzero_changes_logits(build, shape):
    torch.manual_seed(1)
    model = build().eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        base = model.backbone(x)
        out = model(x)
        t = model.trace(x)
    assert torch.allclose(out, base, atol=1e-6, rtol=0)
    assert torch.allclose(t.logits_pass1, base, atol=1e-6, rtol=0)
    with torch.no_grad():
        for p in model.alpha.values():
            p.fill_(1.0)
        changed = model(x)
    assert (changed - base).abs().max() > 1e-3 * base.abs().max()


def test_alpha_zero_equals_backbone_in_train_mode(resnet_small):
    model = resnet_small.train()
    twin = copy.deepcopy(model.backbone)  # same running stats before the call
    x = torch.randn(4, 1, 28, 28)
    out = model(x)
    assert torch.allclose(out, twin(x), atol=1e-5, rtol=0)


def test_gradients_reach_keys_queries_and_alpha_of_every_layer():
    torch.manual_seed(0)
    model = gv.gatta_toy(in_channels=1, input_size=28, alpha_init=0.1)
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    nn.functional.cross_entropy(model(x), y).backward()
    for name in model.layer_names:
        kq = model.kq[name]
        kw = kq.key.weight if isinstance(kq, gv.ConvKeyQuery) else kq.key
        qw = kq.query.weight if isinstance(kq, gv.ConvKeyQuery) else kq.query
        assert kw.grad is not None and kw.grad.abs().sum() > 0, name
        assert qw.grad is not None and qw.grad.abs().sum() > 0, name
        assert model.alpha_of(name).grad.abs() > 0, name


def test_alpha_gets_gradient_from_zero_init():
    """With alpha = 0, K and Q have zero gradient (the model is its backbone) but alpha does not: training can start."""
    torch.manual_seed(0)
    model = gv.gatta_toy(in_channels=1, input_size=28)
    nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3])).backward()
    assert all(model.alpha_of(n).grad.abs() > 0 for n in model.layer_names)


def test_hooks_removed_after_forward_trace_and_errors(resnet_small):
    before = hook_count(resnet_small)
    x = torch.randn(2, 1, 28, 28)
    resnet_small(x)
    with torch.no_grad():
        resnet_small.trace(x, return_keys=True)
    assert hook_count(resnet_small) == before
    # an error inside a hook (pass 1) must not leave hooks behind
    kq = resnet_small.kq["layer2"]
    original = kq.keys
    kq.keys = lambda a: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        resnet_small(x)
    kq.keys = original
    assert hook_count(resnet_small) == before
    with pytest.raises(ValueError):
        resnet_small(torch.randn(2, 3, 28, 28))
    assert hook_count(resnet_small) == before


def test_trace_and_forward_keep_train_eval_flags(resnet_small):
    resnet_small.train()
    resnet_small.backbone.layer2.eval()  # a mixed state a caller might set up on purpose
    flags = {n: m.training for n, m in resnet_small.named_modules()}
    with torch.no_grad():
        resnet_small.trace(torch.randn(2, 1, 28, 28))
    resnet_small(torch.randn(2, 1, 28, 28))
    assert {n: m.training for n, m in resnet_small.named_modules()} == flags


def test_trace_contents_shapes_and_order():
    torch.manual_seed(0)
    model = gv.gatta_toy(in_channels=1, input_size=28, alpha_init=0.2).eval()
    x = torch.randn(5, 1, 28, 36)  # non-square
    with torch.no_grad():
        t = model.trace(x, return_keys=True)
    assert t.layer_names == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert tuple(t.agreement("conv1").shape) == (5, 28, 36)
    assert tuple(t.agreement("conv3").shape) == (5, 7, 9)
    assert tuple(t.agreement("fc2").shape) == (5, 10)
    assert tuple(t.layers["fc1"].keys.shape) == (5, 128, 16)
    assert tuple(t.layers["conv2"].keys.shape) == (5, 16, 14, 18)
    assert tuple(t.q_avg.shape) == (5, 16)
    # q_avg is the mean of the layers' mean queries
    mean_q = torch.stack([t.layers[n].mean_query for n in t.layer_names]).mean(0)
    assert torch.allclose(t.q_avg, mean_q, atol=1e-6)
    one = t[2]
    assert len(one) == 1 and torch.equal(one.agreement("conv1")[0], t.agreement("conv1")[2])
    with pytest.raises(KeyError, match="conv9"):
        t.agreement("conv9")
    assert t.prediction_changed.dtype == torch.bool and t.prediction_changed.shape == (5,)


def test_batch_of_one_and_layer_order_independent_of_given_order():
    torch.manual_seed(0)
    a = gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), layers=["fc", "layer3", "layer1"])
    assert a.layer_names == ["layer1", "layer3", "fc"]
    assert a(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_keys_from_pass2():
    torch.manual_seed(0)
    model = gv.gatta_toy(in_channels=1, input_size=28, keys_from="pass2").eval()
    ref = copy.deepcopy(model)
    ref.keys_from = "pass1"
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        a, b = model.trace(x), ref.trace(x)
        assert all(torch.allclose(a.agreement(n), b.agreement(n), atol=1e-5) for n in a.layer_names)  # alpha = 0
        for m in (model, ref):
            for p in m.alpha.values():
                p.fill_(0.3)
        a, b = model.trace(x), ref.trace(x)
    assert torch.allclose(a.agreement("conv1"), b.agreement("conv1"), atol=1e-6)  # nothing below conv1 is modulated
    assert not torch.allclose(a.agreement("conv3"), b.agreement("conv3"), atol=1e-4)


def test_alpha_override_only_for_that_call(resnet_small):
    with torch.no_grad():
        for p in resnet_small.alpha.values():
            p.fill_(0.1)
    resnet_small.eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        all_off = resnet_small.trace(x, alpha_override={n: 0.0 for n in resnet_small.layer_names})
        assert torch.allclose(all_off.logits_pass2, resnet_small.backbone(x), atol=1e-6)
        assert all_off.layers["layer1"].alpha == 0.0
    assert resnet_small.alphas["layer1"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="layer9"):
        resnet_small.trace(x, alpha_override={"layer9": 0.0})


def test_freeze_backbone_and_parameter_count():
    model = gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), d=4, freeze_backbone=True)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.gatta_parameters())
    # 2 * C * d + 1 per layer: C = 8, 16, 32 (conv stages) and 10 (class units)
    assert model.extra_parameter_count() == sum(2 * c * 4 + 1 for c in (8, 16, 32, 10))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layers": ["layer7"]}, "unknown layer name 'layer7'"),
        ({"layers": ["layer1"], "d": 0}, "d \\(key/query dimension\\) must be a positive integer"),
        ({"layers": ["layer1"], "d": -3}, "positive integer"),
        ({"layers": []}, "at least one"),
        ({"layers": ["layer1.0.relu"]}, "ran 2 times"),
        ({"layers": ["layer1"], "keys_from": "pass3"}, "keys_from"),
    ],
)
def test_bad_configuration_raises_value_error(kwargs, match):
    backbone = gv.CompactResNet(widths=(8, 16, 32), blocks=(1, 1, 1))
    kw = {"input_shape": (1, 28, 28), **kwargs}
    with pytest.raises(ValueError, match=match):
        gv.GAttANet(backbone, **kw)


def test_bad_input_raises_value_error_naming_problem(resnet_small):
    with pytest.raises(ValueError, match="rank 4"):
        resnet_small(torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match="3 channels but the model expects 1"):
        resnet_small(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="torch.Tensor"):
        resnet_small.trace([[1.0]])


def test_layer_whose_output_is_not_2d_or_4d_is_refused():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(2), nn.Flatten(), nn.Linear(2 * 26 * 26, 3))
    with pytest.raises(ValueError, match=r"outputs shape \(2, 2, 676\)"):
        gv.GAttANet(net, ["1"], input_shape=(1, 28, 28))


def test_any_cnn_by_layer_name_three_channel_input():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    )
    model = gv.GAttANet(net, ["1", "3", "6"], input_shape=(3, 20, 20), d=3, alpha_init=0.5)
    assert model.layer_kinds == {"1": "conv", "3": "conv", "6": "dense"}
    with torch.no_grad():
        t = model.trace(torch.randn(2, 3, 17, 23))
    assert tuple(t.agreement("3").shape) == (2, 9, 12)


def test_device_agnostic_cuda_if_available():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    model = gv.gatta_toy(in_channels=1, input_size=28, alpha_init=0.1).cuda()
    t = model.trace(torch.randn(2, 1, 28, 28, device="cuda"))
    assert t.logits_pass2.is_cuda and t.agreement("conv1").is_cuda


def test_builders_resnet34_50_layer_kinds():
    for fn, fc_in in ((gv.gatta_resnet34, 512), (gv.gatta_resnet50, 2048)):
        m = fn(num_classes=7, input_size=64, d=4)
        assert m.layer_kinds == {"layer1": "conv", "layer2": "conv", "layer3": "conv", "layer4": "conv", "fc": "dense"}
        assert m.backbone.fc.in_features == fc_in and m.backbone.fc.out_features == 7


def test_resnet_local_weights_file_and_unknown_weight_name(tmp_path):
    torch.manual_seed(0)
    ref = gv.resnet("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    model = gv.gatta_resnet18(weights=str(path), input_size=64)
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)
    with pytest.raises(ValueError, match="unknown torchvision weights 'NOPE'"):
        gv.gatta_resnet18(weights="NOPE")
    with pytest.raises(ValueError, match="not found"):
        gv.gatta_resnet18(weights=str(tmp_path / "missing.pth"))


def test_detach_pass1_same_outputs_and_gatta_gradients_but_backbone_learns_through_pass2_only():
    torch.manual_seed(0)
    model = gv.gatta_toy(in_channels=1, input_size=28, alpha_init=0.1)
    twin = copy.deepcopy(model)
    twin.detach_pass1 = True
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    model.eval(), twin.eval()
    out_a, out_b = model(x), twin(x)
    assert torch.allclose(out_a, out_b, atol=1e-6)
    nn.functional.cross_entropy(out_a, y).backward()
    nn.functional.cross_entropy(out_b, y).backward()
    for name in model.layer_names:
        assert twin.alpha_of(name).grad.abs() > 0
        kq = twin.kq[name]
        kw = kq.key.weight if isinstance(kq, gv.ConvKeyQuery) else kq.key
        assert kw.grad.abs().sum() > 0
        # K, Q and alpha gradients are the same: they never depended on backprop through the backbone in pass 1
        ref = model.kq[name].key.weight if isinstance(kq, gv.ConvKeyQuery) else model.kq[name].key
        assert torch.allclose(kw.grad, ref.grad, atol=1e-6)
    # the backbone's gradient differs (pass-1 path cut) but exists
    g_full = model.backbone.conv1[0].weight.grad
    g_trunc = twin.backbone.conv1[0].weight.grad
    assert g_trunc.abs().sum() > 0 and not torch.allclose(g_full, g_trunc)


class InPlaceNet(nn.Module):
    """The hooked module's output is changed in place afterwards (as in ResNet blocks: out += identity)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        out = self.bn(self.conv(x))
        out += 5.0
        return self.fc(torch.relu_(out).mean((2, 3)))


def test_agreement_uses_the_layer_output_before_later_in_place_ops():
    torch.manual_seed(0)
    net = InPlaceNet().eval()
    model = gv.GAttANet(net, ["bn"], input_shape=(1, 8, 8), d=2, alpha_init=0.5).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        bn_out = net.bn(net.conv(x))
        t = model.trace(x, return_keys=True)
        assert torch.allclose(t.layers["bn"].keys, model.kq["bn"].keys(bn_out), atol=1e-6)
        assert torch.allclose(t.logits_pass1, net(x), atol=1e-6)
    model.train()
    model(x).sum().backward()  # no "modified by an inplace operation" error from autograd
    assert model.kq["bn"].key.weight.grad.abs().sum() > 0


def test_sign_of_agreement_is_a_gauge_only_alpha_times_agreement_is_identifiable():
    """Flipping one layer's keys and its alpha gives the same network: raw agreement flips, gain does not."""
    torch.manual_seed(0)
    model = gv.gatta_toy(in_channels=1).eval()
    with torch.no_grad():
        for p in model.alpha.values():
            p.fill_(0.3)
    flipped = copy.deepcopy(model)
    with torch.no_grad():
        for name in ("conv2", "fc1"):
            kq = flipped.kq_of(name)
            (kq.key.weight if isinstance(kq.key, nn.Conv2d) else kq.key).neg_()
            flipped.alpha_of(name).neg_()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        a, b = model.trace(x), flipped.trace(x)
    assert torch.allclose(a.logits_pass2, b.logits_pass2, atol=1e-5)
    for name in model.layer_names:
        sign = -1.0 if name in ("conv2", "fc1") else 1.0
        assert torch.allclose(b.agreement(name), sign * a.agreement(name), atol=1e-5)
        assert torch.allclose(b.layers[name].alpha * b.agreement(name), a.layers[name].alpha * a.agreement(name), atol=1e-5)
    for method in ("gain", "total_gain"):
        gain_a = gv.explain_func(model, x, [0, 1, 2], method=method)
        gain_b = gv.explain_func(flipped, x, [0, 1, 2], method=method)
        assert abs(gain_a - gain_b).max() < 1e-4
