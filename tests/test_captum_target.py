"""The wrapped model is a plain logits function: captum's LayerGradCam and IntegratedGradients work on it."""
import torch
from captum.attr import IntegratedGradients, LayerGradCam

import gatta_viz as gv


def _model():
    torch.manual_seed(0)
    model = gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), d=8, alpha_init=0.2).eval()
    return model


def test_integrated_gradients_completeness_on_gatta_model():
    model = _model()
    x = torch.randn(2, 1, 28, 28)
    ig = IntegratedGradients(model)
    attr, delta = ig.attribute(x, target=[3, 5], n_steps=64, return_convergence_delta=True)
    assert attr.shape == x.shape
    with torch.no_grad():
        gap = model(x)[[0, 1], [3, 5]] - model(torch.zeros_like(x))[[0, 1], [3, 5]]
    # completeness: attributions sum to F(x) - F(baseline), up to the convergence delta
    assert torch.allclose(attr.sum(dim=(1, 2, 3)), gap, atol=2e-2 * gap.abs().max().item() + 1e-3)
    assert delta.abs().max() < 2e-2 * gap.abs().max().item() + 1e-3


def test_layer_gradcam_equals_hand_made_gradcam_on_pass_two_activation():
    """captum records the layer's last call, i.e. its pass-2 output (before GAttA's modulation hook)."""
    model = _model()
    x = torch.randn(2, 1, 28, 28)
    cam = LayerGradCam(model, model.backbone.layer3).attribute(x, target=[1, 2], relu_attributions=False)
    assert cam.shape == (2, 1, 7, 7)

    calls = []
    handle = model.backbone.layer3.register_forward_hook(lambda m, i, o: calls.append(o))
    try:
        out = model(x)
    finally:
        handle.remove()
    assert len(calls) == 1  # other code's hooks see pass 2 only (hook_passes="pass2", the default)
    act = calls[-1]
    grads = torch.autograd.grad(out[[0, 1], [1, 2]].sum(), act)[0]
    manual = (grads.mean(dim=(2, 3), keepdim=True) * act).sum(1, keepdim=True)
    assert torch.allclose(cam, manual.detach(), atol=1e-6)
