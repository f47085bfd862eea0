"""pytorch-grad-cam and torchcam on a GAttA model give captum's pass-2 map; hooks of other code see pass 2 only.

The reference is captum's record of a layer on a GAttA model: its last call, i.e. pass 2 (checked against a
hand-made Grad-CAM in test_captum_target.py). It is computed with ``hook_passes(model, "both")``, the behaviour
before hooks were hidden in pass 1, and captum gives the same numbers either way (tested below).
"""
import copy
import functools

import numpy as np
import pytest
import torch
from captum.attr import LayerActivation, LayerGradCam, LayerGradientXActivation, LayerIntegratedGradients
from pytorch_grad_cam import GradCAM as PgcGradCAM
from pytorch_grad_cam import LayerCAM as PgcLayerCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torch.nn.utils import prune
from torchcam.methods import GradCAM as TcGradCAM
from torchcam.methods import LayerCAM as TcLayerCAM

import gatta_viz as gv
from gatta_viz.core.hook_scope import HOOK_KINDS, is_torch_hook, others_hooks_hidden

LAYER = "layer3"


@pytest.fixture(scope="module")
def bundled():
    """The bundled GAttA ResNet, the first four test images and its predictions (= their labels)."""
    model = gv.load_model().model.eval()
    x, _ = gv.load_fashion_mnist("test").tensors(4)
    with torch.no_grad():
        target = model(x).argmax(1)
    return model, x, target


@pytest.fixture(scope="module")
def small():
    """A small random GAttA compact ResNet with nonzero alphas; keys and queries x5 so that pass 2 differs visibly
    from pass 1 (gains up to about 1.9 in layer1; logits change by about 4%)."""
    torch.manual_seed(0)
    model = gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), d=8, alpha_init=0.5).eval()
    with torch.no_grad():
        for p in model.kq.parameters():
            p.mul_(5.0)
    return model, torch.randn(3, 1, 28, 28), torch.tensor([1, 4, 7])


@pytest.fixture(params=["bundled", "small"])
def case(request):
    return request.getfixturevalue(request.param)


def pass2_record(model, x, target):
    """captum's activation and gradient of the target logit at the layer (its last call: pass 2)."""
    layer = model.backbone.layer3
    with gv.hook_passes(model, "both"):
        act = LayerActivation(model, layer).attribute(x)
        grad = LayerGradientXActivation(model, layer, multiply_by_inputs=False).attribute(x, target=target)
    return act.detach(), grad.detach()


def reference(method, model, x, target):
    """captum's pass-2 map at layer resolution, rectified as both libraries do: (B, h, w)."""
    if method == "GradCAM":
        with gv.hook_passes(model, "both"):
            return torch.from_numpy(gv.gradcam(model, x, LAYER, target, relu=True))
    act, grad = pass2_record(model, x, target)
    return (grad.clamp(min=0) * act).sum(1).clamp(min=0)  # LayerCAM (Jiang et al. 2021)


def as_pytorch_grad_cam_shows_it(cam, size):
    """pytorch-grad-cam's post-processing of one layer's map: ReLU, min-max scaling, resize, then scaling again."""
    return scale_cam_image(np.maximum(scale_cam_image(np.maximum(cam, 0), size), 0))


def hook_state(model):
    """Every module's hook dictionaries, as (module name, kind, hook ids in order)."""
    return [(n, k, list(getattr(m, k))) for n, m in model.named_modules() for k in HOOK_KINDS]


def spearman(a, b):
    return [gv.rank_correlation(a[i], b[i]) for i in range(len(a))]


PGC = {"GradCAM": PgcGradCAM, "LayerCAM": PgcLayerCAM}
TC = {"GradCAM": TcGradCAM, "LayerCAM": TcLayerCAM}


# ----------------------------------------------------------------------------- the libraries give pass 2's map
@pytest.mark.parametrize("method", ["GradCAM", "LayerCAM"])
def test_pytorch_grad_cam_records_pass2_and_gives_captums_map(case, method):
    model, x, target = case
    act, grad = pass2_record(model, x, target)
    want = as_pytorch_grad_cam_shows_it(reference(method, model, x, target).numpy(), (x.shape[-1], x.shape[-2]))
    with PGC[method](model, target_layers=[model.backbone.layer3]) as cam:
        got = cam(x, targets=[ClassifierOutputTarget(int(c)) for c in target])
        recorded = cam.activations_and_grads
        # one forward per call: one activation and one gradient, both of pass 2
        assert len(recorded.activations) == 1 and len(recorded.gradients) == 1
        assert torch.equal(recorded.activations[0], act)
        assert torch.allclose(recorded.gradients[0], grad, rtol=1e-5, atol=1e-7)
    # The same numbers through numpy's float32 sums and cv2's resize: at most 3e-7 apart (measured on both
    # models); the wrong activation/gradient pair is more than 0.5 apart on these [0, 1] maps (next test).
    assert got.shape == want.shape == (x.shape[0], x.shape[-2], x.shape[-1])
    assert np.abs(got - want).max() < 1e-4
    assert want.max() == pytest.approx(1.0, abs=1e-5)  # the maps are not all zero


@pytest.mark.parametrize("method", ["GradCAM", "LayerCAM"])
def test_torchcam_gives_captums_map(case, method):
    model, x, target = case
    want = reference(method, model, x, target)
    with TC[method](model, model.backbone.layer3, input_shape=tuple(x.shape[1:])) as extractor:
        scores = model(x)
        got = extractor(class_idx=target.tolist(), scores=scores, normalized=False)[0]
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * want.abs().max().item())  # measured: equal bit for bit
    assert want.abs().max() > 0


# ----------------------------------------------------------------------------- without the fix
def test_without_hiding_pytorch_grad_cam_uses_pass1_and_disagrees_with_captum(bundled):
    """With both passes visible it records two activations and two gradients and uses the first of each:
    pass 1's activation with the gradient that reaches pass 1 only through the keys and q_avg."""
    model, x, target = bundled
    layer = model.backbone.layer3
    seen = []

    def keep(_m, _i, out):
        out.retain_grad()
        seen.append(out)

    with gv.hook_passes(model, "both"):
        handle = layer.register_forward_hook(keep)
        try:
            model(x)[torch.arange(len(x)), target].sum().backward()
        finally:
            handle.remove()
    model.zero_grad()
    (pass1, pass2) = seen
    want = as_pytorch_grad_cam_shows_it(reference("GradCAM", model, x, target).numpy(), (28, 28))
    targets = [ClassifierOutputTarget(int(c)) for c in target]
    with gv.hook_passes(model, "both"), PgcGradCAM(model, target_layers=[layer]) as cam:
        wrong = cam(x, targets=targets)
        rec = cam.activations_and_grads
        assert len(rec.activations) == 2 and len(rec.gradients) == 2
        assert torch.equal(rec.activations[0], pass1.detach()) and torch.equal(rec.activations[1], pass2.detach())
        assert torch.allclose(rec.gradients[0], pass1.grad) and torch.allclose(rec.gradients[1], pass2.grad)
    by_hand = (pass1.grad.mean((2, 3), keepdim=True) * pass1).sum(1).detach().numpy()
    assert np.abs(wrong - as_pytorch_grad_cam_shows_it(by_hand, (28, 28))).max() < 1e-4
    # the numbers: negative rank correlation with captum's pass-2 map on every image
    assert max(spearman(wrong, want)) < -0.5
    assert np.abs(wrong - want).max() > 0.5
    with PgcGradCAM(model, target_layers=[layer]) as cam:  # default: pass 2 only
        right = cam(x, targets=targets)
    assert min(spearman(right, want)) > 0.99


def test_torchcam_keeps_the_last_call_so_it_was_right_before_too(small):
    model, x, target = small
    with gv.hook_passes(model, "both"), TcGradCAM(model, "backbone.layer3") as extractor:
        got = extractor(class_idx=target.tolist(), scores=model(x), normalized=False)[0]
    assert torch.allclose(got, reference("GradCAM", model, x, target), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- nothing else changes
def test_library_hooks_are_removed_and_the_output_is_unchanged(case):
    model, x, target = case
    before = hook_state(model)
    with torch.no_grad():
        plain = model(x)
    with PgcGradCAM(model, target_layers=[model.backbone.layer3]) as cam:
        cam(x, targets=[ClassifierOutputTarget(int(c)) for c in target])
        assert torch.equal(cam.outputs.detach(), plain)
        assert hook_state(model) != before  # its hooks are there while it is alive...
    assert hook_state(model) == before  # ...and gone after
    with TcLayerCAM(model, model.backbone.layer3) as extractor:
        scores = model(x)
        extractor(class_idx=target.tolist(), scores=scores)
    assert torch.equal(scores.detach(), plain)
    assert hook_state(model) == before
    with torch.no_grad(), gv.hook_passes(model, "both"):
        assert torch.equal(model(x), plain)
    assert model.hook_passes == "pass2"


def test_captum_layer_methods_give_the_same_numbers_in_both_settings(small):
    model, x, target = small
    layer = model.backbone.layer3
    out = {}
    for passes in ("both", "pass2"):
        with gv.hook_passes(model, passes):
            out[passes] = [
                LayerGradCam(model, layer).attribute(x, target=target),
                LayerGradCam(model, layer).attribute(x, target=target, attribute_to_layer_input=True),
                LayerActivation(model, model.backbone.stem).attribute(x),
                LayerGradientXActivation(model, layer).attribute(x, target=target),
            ]
    for a, b in zip(out["both"], out["pass2"]):
        assert torch.equal(a, b)


def test_layer_integrated_gradients_path_ends_at_the_models_output_only_in_pass2_setting(bundled):
    """LayerIntegratedGradients replaces the layer's output by a path from its baseline value to its value at x
    (captum records the value at pass 2). With both passes visible it also replaces pass 1's output, so the path
    does not end at the model's output; with pass 2 only it does, and the attributions add up to
    F(x) - F(x with pass 2's layer output at its baseline value). (After layer3 this model has only pooling and
    the fc layer, and pass 2's gains are fixed by pass 1, so the logit is linear along the path: 8 steps are exact.)"""
    model, x, target = bundled
    x, target = x[:2], target[:2]
    layer = model.backbone.layer3
    rows = torch.arange(len(x))

    def logit_with(value, passes):
        handle = layer.register_forward_hook(lambda *_: value)
        try:
            with torch.no_grad(), gv.hook_passes(model, passes):
                return model(x)[rows, target]
        finally:
            handle.remove()

    with torch.no_grad():
        f_x = model(x)[rows, target]
    top, bottom = (LayerActivation(model, layer).attribute(v) for v in (x, torch.zeros_like(x)))
    assert torch.equal(logit_with(top, "pass2"), f_x)
    assert (logit_with(top, "both") - f_x).abs().min() > 1e-2  # 0.078 and 0.055 on these two images
    attr = LayerIntegratedGradients(model, layer).attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=8)
    gap = f_x - logit_with(bottom, "pass2")
    assert torch.allclose(attr.sum((1, 2, 3)), gap, rtol=0, atol=1e-5 * gap.abs().max().item())


# ----------------------------------------------------------------------------- the mechanism
def test_hidden_hooks_come_back_in_order_with_their_flags_and_handles(small):
    model, x, target = small
    model = copy.deepcopy(model)  # pruned below
    conv = model.backbone.layer2[0].conv1
    calls = []
    handles = [
        conv.register_forward_hook(lambda *_: calls.append("a")),
        conv.register_forward_pre_hook(lambda *_: calls.append("pre1")),
    ]
    prune.l1_unstructured(conv, "weight", amount=0.3)  # torch's own pre-hook, between two others: stays visible
    handles += [
        conv.register_forward_pre_hook(lambda *_: calls.append("pre2")),
        conv.register_forward_hook(lambda m, a, k, o: calls.append("kw"), with_kwargs=True),
        conv.register_forward_hook(lambda *_: calls.append("first"), prepend=True),
        conv.register_full_backward_hook(lambda *_: calls.append("bw")),
        conv.register_full_backward_pre_hook(lambda *_: calls.append("bwpre")),
    ]
    state = hook_state(model)
    flags = dict(conv._forward_hooks_with_kwargs)
    model(x)[torch.arange(len(x)), target].sum().backward()
    model.zero_grad()
    # one forward and one backward: each hook once, forward hooks in their registration order (prepend first)
    assert calls == ["pre1", "pre2", "first", "a", "kw", "bwpre", "bw"]
    assert hook_state(model) == state and dict(conv._forward_hooks_with_kwargs) == flags
    calls.clear()
    with gv.hook_passes(model, "both"):
        model(x)[torch.arange(len(x)), target].sum().backward()
    assert calls == ["pre1", "pre2", "first", "a", "kw"] * 2 + ["bwpre", "bw"] * 2
    for h in handles:
        h.remove()
    prune.remove(conv, "weight")
    assert all(not getattr(conv, k) for k in HOOK_KINDS)


def test_hooks_come_back_after_an_error_in_either_pass(small):
    model, x, _ = small
    layer = model.backbone.layer3
    counted = []
    h1 = layer.register_forward_hook(lambda *_: counted.append(1))
    h2 = model.backbone.register_forward_pre_hook(lambda *_: None)
    state = hook_state(model)

    def boom(*_):
        raise RuntimeError("boom in pass 1")

    layer.forward = boom  # an instance attribute: raises in pass 1
    try:
        with pytest.raises(RuntimeError, match="boom in pass 1"):
            model(x)
    finally:
        del layer.forward
    assert hook_state(model) == state and counted == []
    h3 = layer.register_forward_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("boom in pass 2")))
    with pytest.raises(RuntimeError, match="boom in pass 2"):
        model(x)
    assert counted == [1]  # the hooks before it ran once: in pass 2
    h3.remove()
    assert hook_state(model) == state
    h1.remove()
    h2.remove()


def test_hooks_registered_inside_the_block_are_kept_and_a_module_listed_twice_is_fine():
    seq = nn.Sequential(nn.Linear(2, 2))
    calls = []
    seq[0].register_forward_hook(lambda *_: calls.append("old"))
    with others_hooks_hidden([seq[0], seq, seq[0]]) as n:
        assert n == 1
        seq(torch.zeros(1, 2))
        new = seq[0].register_forward_hook(lambda *_: calls.append("new"))
    seq(torch.zeros(1, 2))
    assert calls == ["old", "new"]
    new.remove()
    assert len(seq[0]._forward_hooks) == 1


def test_is_torch_hook():
    def mine(*_):
        return None

    class Tool:
        def hook(self, *_):
            return None

    conv = nn.Conv2d(1, 1, 1)
    prune.random_unstructured(conv, "weight", amount=0.5)
    assert [is_torch_hook(h) for h in conv._forward_pre_hooks.values()] == [True]
    assert is_torch_hook(functools.partial(torch.nn.functional.relu))
    assert is_torch_hook(functools.partial(functools.partial(torch.nn.functional.relu), inplace=False))
    assert not any(is_torch_hook(h) for h in (mine, lambda *_: None, Tool().hook, functools.partial(mine, 1)))


def test_torchs_own_hooks_run_in_both_passes(small):
    """A pruned conv recomputes weight = weight_orig * mask in a pre-hook; hidden in pass 1, pass 1 would use the
    weight of the previous call."""
    model, x, _ = small
    model, twin = copy.deepcopy(model), copy.deepcopy(model)
    conv = model.backbone.layer2[0].conv1
    prune.l1_unstructured(conv, "weight", amount=0.3)
    with torch.no_grad():
        conv.weight_orig.mul_(2.0)  # as an optimiser step would: conv.weight is now stale until the next forward
        twin.backbone.layer2[0].conv1.weight.copy_(conv.weight_orig * conv.weight_mask)  # the same weights, no hook
        assert torch.allclose(model(x), twin(x), rtol=0, atol=1e-6)
        assert not torch.allclose(model(x), copy.deepcopy(small[0])(x), rtol=0, atol=1e-3)  # pruning mattered


def test_global_hooks_see_both_passes_and_backward_hooks_see_pass2(small):
    """The backward hook is on layer3's block, whose output is layer3's output before GAttA modulates it
    (a backward hook on layer3 itself gets the gradient of the modulated output, G / (1 + alpha * gatta))."""
    model, x, target = small
    layer = model.backbone.layer3
    global_calls, grads = [], []
    g = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: global_calls.append(1) if m is layer else None)
    b = layer[0].register_full_backward_hook(lambda m, gi, go: grads.append(go[0]))
    try:
        model(x)[torch.arange(len(x)), target].sum().backward()
    finally:
        g.remove()
        b.remove()
    model.zero_grad()
    assert len(global_calls) == 2  # global hooks are not hidden
    assert len(grads) == 1 and torch.allclose(grads[0], pass2_record(model, x, target)[1], rtol=1e-5, atol=1e-7)


def test_prefix_reuse_stays_right_when_hooks_run_in_pass2_only(small):
    """A hook that changes the stem's output in pass 2 only changes what the stem and layer1 give pass 2,
    so pass 2 must not take them from pass 1."""
    model, x, _ = small
    stem_calls = []
    h = model.backbone.stem.register_forward_hook(lambda m, i, o: stem_calls.append(1) or o + 0.5)
    try:
        with torch.no_grad():
            model.reuse_prefix = False
            want = model.trace(x)
            model.reuse_prefix = True
            got = [model.trace(x), model.trace(x)]  # plan built, then (normally) used
    finally:
        h.remove()
        model.reuse_prefix = True
    assert model._prefix.plan(x)  # reuse was possible, not used while a hook was hidden
    assert stem_calls == [1, 1, 1]
    for t in got:
        assert torch.equal(t.logits_pass2, want.logits_pass2)
        assert torch.equal(t.logits_pass1, want.logits_pass1)
    with torch.no_grad():
        assert not torch.allclose(want.logits_pass2, model(x))  # the hook mattered


def test_hook_passes_restores_the_setting_and_rejects_bad_values(small):
    model, x, _ = small
    assert model.hook_passes == "pass2"
    with pytest.raises(RuntimeError, match="inside"):
        with gv.hook_passes(model, "both") as m:
            assert m is model and model.hook_passes == "both"
            raise RuntimeError("inside")
    assert model.hook_passes == "pass2"
    with pytest.raises(ValueError, match="passes must be one of"):
        with gv.hook_passes(model, "pass1"):
            pass
    with pytest.raises(ValueError, match="needs a GAttA model"):
        with gv.hook_passes(nn.Linear(2, 2), "both"):
            pass
    model.hook_passes = "all"
    try:
        with pytest.raises(ValueError, match="hook_passes must be one of"):
            model(x)
    finally:
        model.hook_passes = "pass2"
