"""The bundled checkpoints: small, safe to load, rebuildable from the file alone, and accurate."""
import os

import pytest
import torch

import gatta_viz as gv
from gatta_viz.data.datasets import FASHION_MNIST_CLASSES
from gatta_viz.models.checkpoint import CHECKPOINT_FORMAT


@pytest.mark.parametrize("name", sorted(gv.BUNDLED))
def test_bundled_checkpoint_loads_from_file_alone_and_is_small(name):
    path = gv.bundled_path(name)
    assert os.path.getsize(path) < 10 * 1024 * 1024
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain data only
    assert raw["format"] == CHECKPOINT_FORMAT and "train_state" not in raw
    lm = gv.load_model(name)
    assert lm.classes == FASHION_MNIST_CLASSES
    assert lm.preprocess == {"size": [28, 28], "channels": 1, "mean": [0.286], "std": [0.353], "background": "dark"}
    assert lm.is_gatta == ("gatta" in name)
    assert not lm.model.training
    if lm.is_gatta:  # trained: the attention is switched on
        assert all(abs(a) > 1e-3 for a in lm.model.alphas.values())


@pytest.mark.parametrize("name, minimum", [("fmnist-gatta-resnet", 0.90), ("fmnist-resnet", 0.90),
                                           ("fmnist-gatta-toy", 0.85), ("fmnist-toy", 0.85)])
def test_bundled_models_classify_200_fixed_test_images(name, minimum):
    x, y = gv.load_fashion_mnist("test").tensors(200)  # the first 200 test images
    lm = gv.load_model(name)
    with torch.no_grad():
        acc = (lm.model(x).argmax(1) == y).float().mean().item()
    assert acc >= minimum, f"{name}: {acc:.3f}"
