"""Spearman (gv.rank_correlation) of pytorch-grad-cam / torchcam maps with captum's pass-2 LayerGradCam, bundled model,
first four test images, with other code's hooks seeing both passes and pass 2 only (the default).

Run:  .venv/bin/python benchmarks/cam_interop.py
"""
import torch, gatta_viz as gv
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchcam.methods import GradCAM as TcGradCAM
torch.set_num_threads(1)
model = gv.load_model().model.eval()
x, y = gv.load_fashion_mnist("test").tensors(4)
with torch.no_grad():
    pred = model(x).argmax(1)
ref = gv.gradcam(model, x, "layer3", pred)  # captum LayerGradCam, signed, 7x7
for passes in ("both", "pass2"):
    with gv.hook_passes(model, passes):
        with GradCAM(model, target_layers=[model.backbone.layer3]) as cam:
            m = cam(x, targets=[ClassifierOutputTarget(int(c)) for c in pred])
        with TcGradCAM(model, "backbone.layer3") as ex:
            t = ex(class_idx=pred.tolist(), scores=model(x))[0]
    print(f"hook_passes={passes!r:8} pytorch-grad-cam:", [round(gv.rank_correlation(m[i], ref[i]), 3) for i in range(4)],
          " torchcam:", [round(gv.rank_correlation(t[i].numpy(), ref[i]), 3) for i in range(4)])
