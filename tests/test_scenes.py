"""Two-garment scenes: deterministic, different classes, max compositing, masks, boxes and overlap by hand."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import gatta_viz as gv
from gatta_viz.data.scenes import ITEM_THRESHOLD, export_scenes, make_scenes


def block_source():
    """Three classes, each a full 28x28 block of one brightness (200, 100, 50): boxes are the tiles' places."""
    images = torch.tensor([200, 100, 50], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 28, 28).clone()
    return gv.ImageData(images, torch.tensor([0, 1, 2]), ["a", "b", "c"], (0.5,), (0.5,), "blocks")


def test_scenes_are_deterministic_and_pair_different_classes():
    src = gv.load_fashion_mnist("test").subset(500)
    a, b = make_scenes(src, 64, seed=3), make_scenes(src, 64, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, make_scenes(src, 64, seed=4).images)
    assert (a.labels[:, 0] != a.labels[:, 1]).all()
    assert torch.equal(a.labels, src.labels[a.sources])
    assert a.images.shape == (64, 1, 48, 48) and a.images.dtype == torch.uint8
    pix = a.images.double() / 255
    assert a.mean[0] == pytest.approx(float(pix.mean()), rel=1e-9) and a.std[0] == pytest.approx(float(pix.std(unbiased=False)), rel=1e-9)


def test_composite_is_the_pixelwise_max_and_masks_cover_what_each_item_supplies():
    src = gv.load_fashion_mnist("test").subset(300)
    s = make_scenes(src, 32, seed=1)
    for i in range(32):
        img = s.images[i, 0].int()
        for k in range(2):
            x0, y0, x1, y1 = s.boxes[i, k].tolist()
            # every item pixel lies inside its box and never exceeds the composite
            m = s.masks[i, k]
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert (xs >= x0).all() and (xs < x1).all() and (ys >= y0).all() and (ys < y1).all()
        # every bright composite pixel is supplied by at least one item
        covered = s.masks[i, 0] | s.masks[i, 1]
        assert torch.equal(covered, img > ITEM_THRESHOLD)


def test_boxes_and_overlap_by_hand_on_blocks():
    s = make_scenes(block_source(), 200, canvas=64, seed=0)
    for i in range(200):
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = s.boxes[i].tolist()
        assert ax1 - ax0 == 28 and ay1 - ay0 == 28 and bx1 - bx0 == 28 and by1 - by0 == 28
        inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
        assert float(s.overlap[i]) == pytest.approx(inter / 784)
        # the brighter block wins the shared pixels: the dimmer item's mask loses exactly the intersection
        dim = int(torch.argmax(s.labels[i]))  # class 1 (100) or 2 (50) is dimmer than 0 (200); higher class = dimmer
        assert int(s.masks[i, dim].sum()) == 784 - inter
    assert 0.0 in s.overlap.tolist() and s.overlap.max() > 0.5  # from none to heavy (on 64x64 full blocks can be apart)


def test_multimnist_preset_shifts_by_at_most_4_pixels_on_36x36():
    s = make_scenes(block_source(), 200, preset="multimnist", seed=0)
    assert s.images.shape[-2:] == (36, 36)
    starts = s.boxes[:, :, :2]
    assert starts.min() == 0 and starts.max() == 8  # centre 4, shifts -4..4
    with pytest.raises(ValueError, match="36x36"):
        make_scenes(block_source(), 2, preset="multimnist", canvas=40)
    with pytest.raises(ValueError, match="unknown scene preset"):
        make_scenes(block_source(), 2, preset="triplets")
    with pytest.raises(ValueError, match="at least 28"):
        make_scenes(block_source(), 2, canvas=20)


def test_export_writes_pngs_and_a_json_index_that_round_trip(tmp_path):
    s = make_scenes(gv.load_fashion_mnist("test").subset(100), 5, seed=2)
    index = json.loads(open(export_scenes(s, str(tmp_path), limit=3)).read())
    assert len(index["scenes"]) == 3 and index["classes"] == s.classes
    for i, rec in enumerate(index["scenes"]):
        assert np.array_equal(np.asarray(Image.open(tmp_path / rec["image"])), s.images[i, 0].numpy())
        for k, item in enumerate(rec["items"]):
            assert item["label"] == int(s.labels[i, k]) and item["class"] == s.classes[item["label"]]
            assert item["box_xyxy"] == s.boxes[i, k].tolist()
            assert np.array_equal(np.asarray(Image.open(tmp_path / item["mask"])) > 0, s.masks[i, k].numpy())
        assert rec["overlap"] == pytest.approx(float(s.overlap[i]), abs=1e-4)
    t = s.multi_hot()
    assert t.shape == (5, 10) and torch.equal(t.sum(1), torch.full((5,), 2.0))


def test_hits_and_the_soft_target_loss_by_hand():
    from gatta_viz.training.train import hits, loss_fn

    logits = torch.tensor([[3.0, 2.0, 0.0, -1.0], [3.0, 0.0, 2.5, 1.0], [0.0, 1.0, 2.0, 3.0]])
    pairs = torch.tensor([[1, 0], [0, 1], [3, 2]])
    assert hits(logits, pairs).tolist() == [True, False, True]
    assert hits(logits, torch.tensor([0, 0, 3])).tolist() == [True, True, True]
    logp = torch.log_softmax(logits, 1)
    by_hand = -(0.5 * logp[torch.arange(3), pairs[:, 0]] + 0.5 * logp[torch.arange(3), pairs[:, 1]]).mean()
    assert float(loss_fn(logits, pairs)) == pytest.approx(float(by_hand), rel=1e-6)


def test_training_on_scenes_records_the_scene_set_and_scores_both_items(tmp_path, pairs_test_set):
    from gatta_viz.cli import train as train_cli
    from gatta_viz.training.train import accuracy, train

    args = train_cli.build_parser().parse_args([
        "--dataset", "fmnist-pairs", "--out", str(tmp_path), "--epochs", "1", "--subset", "256", "--test-subset", "64",
        "--widths", "8", "16", "32", "--blocks", "1", "1", "1", "--key-dim", "8", "--quiet", "--threads", "1"])
    res = train(args)
    lm = gv.load_checkpoint(str(tmp_path / "final.pt"))
    assert lm.meta["dataset"] == "fmnist-pairs" and lm.preprocess["size"] == [48, 48]
    assert res["history"][0]["test_acc"] == pytest.approx(accuracy(lm.model, pairs_test_set.subset(64))["acc"])


def test_augmented_single_channel_batches_have_standard_strides():
    """Ambiguous strides (channel stride 1 on a 1-channel batch) crashed torch's CPU conv backward at 48x48."""
    from gatta_viz.data.datasets import augment_batch

    x = augment_batch(torch.randn(4, 1, 48, 48), generator=torch.Generator().manual_seed(0))
    assert x.stride() == (48 * 48, 48 * 48, 48, 1)


def test_singles_place_each_garment_alone_as_a_scene_would():
    from gatta_viz.data.scenes import make_singles

    src = block_source()
    s = make_singles(src, "random", seed=0)
    assert s.images.shape == (3, 1, 48, 48) and torch.equal(s.labels, src.labels)
    for i, v in enumerate((200, 100, 50)):
        ys, xs = torch.nonzero(s.images[i, 0], as_tuple=True)
        assert len(ys) == 28 * 28 and (s.images[i, 0][ys, xs] == v).all()  # the whole tile, nothing else
        assert ys.max() - ys.min() == 27 and xs.max() - xs.min() == 27


def test_stem_stride_two_halves_every_feature_map():
    m1 = gv.build_model("gatta_compact_resnet", in_channels=1, num_classes=10, widths=[8, 16, 32], input_size=48)
    m2 = gv.build_model("gatta_compact_resnet", in_channels=1, num_classes=10, widths=[8, 16, 32], input_size=48,
                        stem_stride=2)
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        t1, t2 = m1.trace(x), m2.trace(x)
    for name in ("layer1", "layer2", "layer3"):
        h1, h2 = t1.layers[name].agreement.shape[-1], t2.layers[name].agreement.shape[-1]
        assert h2 * 2 == h1
    assert t2.logits.shape == (2, 10)
    with pytest.raises(ValueError, match="stem_stride"):
        gv.build_model("compact_resnet", stem_stride=3)
