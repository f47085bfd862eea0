"""Pass 2 reuses pass 1's outputs for the modules before the first GAttA layer: same numbers, fewer calls."""
import pytest
import torch
from torch import nn

import gatta_viz as gv


def set_alphas(model, value=0.4):
    with torch.no_grad():
        for n in model.layer_names:
            model.alpha_of(n).fill_(value)
    model.hook_passes = "both"  # these tests count and record calls of both passes with hooks
    return model


def counting(module: nn.Module) -> list:
    """Count the module's forward calls (a pre-hook: fires even when forward is replaced)."""
    n = [0]
    module.register_forward_pre_hook(lambda *_: n.__setitem__(0, n[0] + 1))
    return n


def no_patched_forwards(model: nn.Module) -> bool:
    return all("forward" not in m.__dict__ for m in model.modules())


def assert_same_trace(a, b):
    assert torch.equal(a.logits_pass1, b.logits_pass1)
    assert torch.equal(a.logits_pass2, b.logits_pass2)
    for n in a.layers:
        assert torch.equal(a.layers[n].agreement, b.layers[n].agreement)


class InplaceVGG(nn.Module):
    """conv -> ReLU(inplace) stacks: each conv's output is modified in place after it returns."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.parametrize(
    "build, shape, plan",
    [
        (lambda: gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), d=8), (3, 1, 28, 28),
         {"stem": False, "layer1": False}),
        (lambda: gv.gatta_toy(in_channels=1), (2, 1, 28, 28), {"conv1": False}),
        # torchvision ResNet: bn1's output is changed in place by the inplace ReLU, so it is copied
        (lambda: gv.gatta_resnet18(num_classes=10, input_size=64), (2, 3, 64, 48),
         {"conv1": False, "bn1": True, "relu": False, "maxpool": False, "layer1": False}),
        (lambda: gv.GAttANet(InplaceVGG(), ["features.3", "features.6", "head.2"], input_shape=(3, 16, 16), d=4),
         (2, 3, 16, 16),
         {"features.0": True, "features.1": False, "features.2": True, "features.3": False}),
    ],
)
def test_reuse_gives_identical_traces_and_the_expected_plan(build, shape, plan):
    torch.manual_seed(0)
    model = set_alphas(build().eval())
    x = torch.randn(*shape)
    with torch.no_grad():
        model.reuse_prefix = False
        ref = model.trace(x)
        assert model._prefix.plan(x) is None
        model.reuse_prefix = True
        first, second, third = model.trace(x), model.trace(x), model.trace(x)
    assert model._prefix.plan(x) == plan
    for t in (first, second, third):
        assert_same_trace(ref, t)
    assert no_patched_forwards(model)
    assert not ref.layers[model.layer_names[0]].agreement.eq(0).all()


def test_pass2_skips_the_stem_and_first_layer_only_under_no_grad_in_eval():
    torch.manual_seed(0)
    model = set_alphas(gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), d=8).eval())
    stem_conv, l1_conv, l2_conv = counting(model.backbone.stem[0]), counting(model.backbone.layer1[0].conv1), \
        counting(model.backbone.layer2[0].conv1)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        model.trace(x)  # builds the plan; nothing here is modified in place, so it is used at once
        assert (stem_conv[0], l1_conv[0], l2_conv[0]) == (1, 1, 2)  # pass 2 ran from layer2 on
        model.trace(x)
        assert (stem_conv[0], l1_conv[0], l2_conv[0]) == (2, 2, 4)
        model(x)
        assert (stem_conv[0], l1_conv[0], l2_conv[0]) == (3, 3, 6)
        model.reuse_prefix = False
        model(x)
        assert (stem_conv[0], l1_conv[0], l2_conv[0]) == (5, 5, 8)
    model.reuse_prefix = True
    out = model(x)  # autograd on: pass 2 must recompute so gradients reach the stem through it
    assert (stem_conv[0], l2_conv[0]) == (7, 10)
    out.sum().backward()
    assert model.backbone.stem[0].weight.grad is not None
    with torch.inference_mode():
        model(x)  # no version counters in inference mode: no reuse, still correct
    assert stem_conv[0] == 9


def test_train_mode_under_no_grad_recomputes_so_batchnorm_statistics_match():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 28, 28)
    stats = []
    for reuse in (False, True):
        torch.manual_seed(0)
        model = set_alphas(gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), d=8))
        model.reuse_prefix = reuse
        with torch.no_grad():
            model.eval()
            model.trace(x)
            model.train()
            model.trace(x)
            model.trace(x)
        stats.append(model.backbone.stem[1].running_mean.clone())
    assert torch.equal(stats[0], stats[1])
    assert not torch.equal(stats[0], torch.zeros_like(stats[0]))


class Switch(nn.Module):
    """A backbone whose path before its GAttA layer depends on an attribute (control flow that can change)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(1, 4, 3, padding=1)
        self.layer = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.use_b = False

    def forward(self, x):
        h = self.b(x) if self.use_b else self.a(x)
        return self.fc(self.layer(torch.relu(h)).mean((2, 3)))


def test_changed_control_flow_falls_back_to_a_full_pass_2_and_rebuilds_the_plan():
    torch.manual_seed(0)
    model = set_alphas(gv.GAttANet(Switch(), ["layer", "fc"], input_shape=(1, 8, 8), d=4).eval())
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        model.trace(x)
        assert model._prefix.plan(x) == {"a": False, "layer": False}
        model.backbone.use_b = True
        got = model.trace(x)  # planned module "a" did not run: this call recomputes in full
        assert model._prefix.plan(x) is None
        model.reuse_prefix = False
        want = model.trace(x)
        model.reuse_prefix = True
        model.trace(x)
        assert model._prefix.plan(x) == {"b": False, "layer": False}
        again = model.trace(x)
    assert_same_trace(want, got)
    assert_same_trace(want, again)


def test_user_hooks_on_reused_modules_see_the_same_output_in_both_passes_and_patches_are_undone_on_error():
    torch.manual_seed(0)
    model = set_alphas(gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), d=8).eval())
    seen = []
    h = model.backbone.stem.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        model.trace(x)
        seen.clear()
        model.trace(x)
    h.remove()
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])

    def boom(*_):
        raise RuntimeError("boom")

    h = model.backbone.layer3.register_forward_hook(boom)
    with torch.no_grad(), pytest.raises(RuntimeError, match="boom"):
        model.trace(x)
    h.remove()
    assert no_patched_forwards(model)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


class AddInPlace(nn.Module):
    """A module output changed in place by the parent's own code (not by a module that could be reused)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))
        self.layer = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.a(x)
        h.add_(1.0)  # replaying a's output without a copy would add 1 twice
        return self.fc(self.layer(h).mean((2, 3)))


def test_an_output_modified_in_place_later_is_replayed_from_a_copy():
    torch.manual_seed(0)
    model = set_alphas(gv.GAttANet(AddInPlace(), ["layer", "fc"], input_shape=(1, 8, 8), d=4).eval())
    calls = counting(model.backbone.a[0])  # runs only when a really computes
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        model.reuse_prefix = False
        want = model.trace(x)
        model.reuse_prefix = True
        got = [model.trace(x) for _ in range(3)]
    assert model._prefix.plan(x) == {"a": True, "layer": False}
    for t in got:
        assert_same_trace(want, t)
    # reference 2; first call with reuse: a recomputed in pass 2 (no copy yet); then pass 1 only.
    # (Without the copy the version check would catch the change and recompute: 2 + 2 + 2 + 2.)
    assert calls[0] == 2 + 2 + 1 + 1
