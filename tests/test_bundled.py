"""The bundled checkpoints: small, safe to load, rebuildable from the file alone, and accurate."""
import os

import pytest
import torch

import gatta_viz as gv
from gatta_viz.data.datasets import FASHION_MNIST_CLASSES
from gatta_viz.data.clutter import CLUTTER_NORMALIZATION
from gatta_viz.data.scenes import SCENE_NORMALIZATION
from gatta_viz.models.checkpoint import CHECKPOINT_FORMAT


# floors a little under what the bundled scene / clutter models score on these 200 images (regression guards)
MIN_PAIRS, MIN_CLUTTER = 0.68, 0.78
PREPROCESS = {  # what each bundled model expects: the normalisation of the set it was trained on
    "fmnist-resnet": {"size": [28, 28], "channels": 1, "mean": [0.286], "std": [0.353], "background": "dark"},
    "fmnist-toy": {"size": [28, 28], "channels": 1, "mean": [0.286], "std": [0.353], "background": "dark"},
    "fmnist-pairs-resnet": {"size": [48, 48], "channels": 1, "mean": list(SCENE_NORMALIZATION["fmnist-pairs"][0]),
                            "std": list(SCENE_NORMALIZATION["fmnist-pairs"][1]), "background": "dark"},
    "fmnist-clutter-resnet": {"size": [48, 48], "channels": 1, "mean": list(CLUTTER_NORMALIZATION[0]),
                              "std": list(CLUTTER_NORMALIZATION[1])},  # no "dark": photos are never inverted
}


@pytest.mark.parametrize("name", sorted(gv.BUNDLED))
def test_bundled_checkpoint_loads_from_file_alone_and_is_small(name):
    path = gv.bundled_path(name)
    assert os.path.getsize(path) < 10 * 1024 * 1024
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain data only
    assert raw["format"] == CHECKPOINT_FORMAT and "train_state" not in raw
    lm = gv.load_model(name)
    assert lm.classes == FASHION_MNIST_CLASSES
    assert lm.preprocess == PREPROCESS[name.replace("-gatta", "")]
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


@pytest.mark.parametrize("name, minimum", [("fmnist-pairs-gatta-resnet", MIN_PAIRS), ("fmnist-pairs-resnet", MIN_PAIRS)])
def test_bundled_scene_models_name_both_garments_of_200_fixed_test_scenes(name, minimum, pairs_test_set):
    from gatta_viz.metrics.cueing import both_items_correct

    scenes = pairs_test_set.subset(200)
    lm = gv.load_model(name)
    with torch.no_grad():
        logits = lm.model(scenes.normalize(scenes.images)).numpy()
    acc = both_items_correct(logits, scenes.labels.numpy()).mean()
    assert acc >= minimum, f"{name}: {acc:.3f}"
    if lm.is_gatta:  # the stored cues: one per class, from garments alone on the scene canvas
        assert lm.class_queries.shape == (10, lm.model.d)
        assert lm.meta["class_queries"]["dataset"] == "fmnist-pairs-singles"


@pytest.mark.parametrize("name, minimum", [("fmnist-clutter-gatta-resnet", MIN_CLUTTER), ("fmnist-clutter-resnet", MIN_CLUTTER)])
def test_bundled_clutter_models_classify_200_fixed_test_images(name, minimum, clutter_test_set):
    x, y = clutter_test_set.tensors(200)
    lm = gv.load_model(name)
    with torch.no_grad():
        acc = (lm.model(x).argmax(1) == y).float().mean().item()
    assert acc >= minimum, f"{name}: {acc:.3f}"
