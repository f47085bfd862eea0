"""Garments in clutter: deterministic, disjoint photos, the garment drawn whole on top, masks and boxes by hand,
clean distractors (no fragment from the label's class) with their classes and boxes recorded."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import gatta_viz as gv
from gatta_viz.data.clutter import (ALPHA_FULL, BACKGROUND_DIR, ITEM_THRESHOLD, TEST_BACKGROUNDS, TRAIN_BACKGROUNDS,
                                    export_clutter, make_clutter)


def block_source(value=200):
    """Two classes of full 28x28 blocks (brightness ``value`` and 120): a placed block is a square of known size."""
    images = torch.tensor([value, 120], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 28, 28).clone()
    return gv.ImageData(images, torch.tensor([0, 1]), ["a", "b"], (0.5,), (0.5,), "blocks")


def test_clutter_is_deterministic_and_labels_are_the_garments_classes():
    src = gv.load_fashion_mnist("test").subset(400)
    a = make_clutter(src, 40, TEST_BACKGROUNDS, seed=3)
    b = make_clutter(src, 40, TEST_BACKGROUNDS, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, make_clutter(src, 40, TEST_BACKGROUNDS, seed=4).images)
    assert torch.equal(a.labels, src.labels[a.sources])
    assert a.images.shape == (40, 1, 48, 48) and a.images.dtype == torch.uint8 and a.masks.shape == (40, 48, 48)
    assert set(a.background.tolist()) <= set(range(len(TEST_BACKGROUNDS)))


def test_block_garment_is_an_opaque_square_of_the_drawn_size_with_its_box_and_mask():
    # a full block of 200 (> ALPHA_FULL) hides whatever lies below it: inside its square the image is 200
    s = make_clutter(block_source(), 30, TRAIN_BACKGROUNDS, seed=0, scale=(24, 34), fragments=0)
    for i in range(30):
        x0, y0, x1, y1 = s.boxes[i].tolist()
        w, h = x1 - x0, y1 - y0
        assert w == h and 24 <= w <= 34  # a square of the drawn size (its edge pixels blend bilinearly)
        inner = s.images[i, 0, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]
        assert (inner == (200 if s.labels[i] == 0 else 120)).all()
        ys, xs = torch.nonzero(s.masks[i], as_tuple=True)
        assert ys.min() == y0 and ys.max() == y1 - 1 and xs.min() == x0 and xs.max() == x1 - 1
    assert ALPHA_FULL < 120


def test_backgrounds_are_photos_with_texture_and_train_and_test_photos_are_disjoint():
    assert not set(TRAIN_BACKGROUNDS) & set(TEST_BACKGROUNDS)
    with open(os.path.join(BACKGROUND_DIR, "LICENSES.md")) as f:
        licences = f.read()
    for name in TRAIN_BACKGROUNDS + TEST_BACKGROUNDS:
        assert f"`{name}.png`" in licences  # every photo's source and licence is listed
    src = gv.load_fashion_mnist("test").subset(200)
    s = make_clutter(src, 50, TEST_BACKGROUNDS, seed=1, fragments=0)
    bg = s.images[:, 0].float()[~s.masks]
    assert bg.std() > 10  # the background is not flat
    with pytest.raises(ValueError, match="unknown background"):
        make_clutter(src, 5, ["not-a-photo"])


def test_fragments_come_from_other_garments_and_do_not_cover_the_item():
    src = block_source()
    # with fragments, the item square is still whole (drawn last)
    s = make_clutter(src, 20, TRAIN_BACKGROUNDS, seed=5, fragments=6)
    for i in range(20):
        x0, y0, x1, y1 = s.boxes[i].tolist()
        assert (s.images[i, 0, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2] == (200 if s.labels[i] == 0 else 120)).all()
    # fragments are the other class's block: 120-valued squares appear outside a 200 item
    s0 = [i for i in range(20) if s.labels[i] == 0]
    assert any(((s.images[i, 0] == 120) & ~s.masks[i]).sum() >= 16 for i in s0)


def test_bad_arguments_are_named():
    src = block_source()
    with pytest.raises(ValueError, match="scale"):
        make_clutter(src, 4, TRAIN_BACKGROUNDS, scale=(40, 60))
    with pytest.raises(ValueError, match="positive"):
        make_clutter(src, 0, TRAIN_BACKGROUNDS)
    with pytest.raises(ValueError, match="28, 28"):
        make_clutter(gv.ImageData(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"], (0.5,), (0.5,)), 2, TRAIN_BACKGROUNDS)


def test_named_set_uses_test_photos_for_test_and_one_normalisation(tmp_path, clutter_test_set):
    test = clutter_test_set
    assert len(test) == 10_000 and type(test).__name__ == "ClutterData"
    assert test.backgrounds == TEST_BACKGROUNDS
    again = gv.load_dataset("fmnist-clutter", "test")
    assert torch.equal(test.images[:50], again.images[:50])
    sub = test.subset(3)
    assert sub.mean == (0.4402,) and torch.equal(sub.masks, test.masks[:3])
    path = export_clutter(test, str(tmp_path), limit=3)
    index = json.load(open(path))
    assert [r["label"] for r in index["images"]] == test.labels[:3].tolist()
    png = np.asarray(Image.open(tmp_path / index["images"][1]["image"]))
    assert np.array_equal(png, test.images[1, 0].numpy())
    mask = np.asarray(Image.open(tmp_path / index["images"][1]["mask"])) > 0
    assert np.array_equal(mask, test.masks[1].numpy())
    assert index["images"][1]["background"] in TEST_BACKGROUNDS and "LICENSES.md" in index["licences"]
    frags = index["images"][2]["fragments"]
    assert [f["label"] for f in frags] == test.fragment_labels[2].tolist()
    assert [f["box_xyxy"] for f in frags] == test.fragment_boxes[2].tolist()
    assert [f["source_index"] for f in frags] == test.fragment_sources[2].tolist()
    assert torch.equal(sub.fragment_labels, test.fragment_labels[:3]) and torch.equal(sub.fragment_boxes, test.fragment_boxes[:3])
    # clean distractors over the whole fixed test set: no fragment is cut from a garment of the label's class
    assert test.fragment_labels.shape == (10_000, 4) and test.fragment_boxes.shape == (10_000, 4, 4)
    assert not (test.fragment_labels == test.labels[:, None]).any()
    source = gv.load_fashion_mnist("test")
    assert torch.equal(test.fragment_labels, source.labels[test.fragment_sources])


def test_fragments_are_drawn_in_their_recorded_boxes_from_the_other_class():
    # block garments: class 0 is 200, class 1 is 120; fragments are full 10x10 squares of the other block
    s = make_clutter(block_source(), 20, TRAIN_BACKGROUNDS, seed=2, fragments=3, fragment_size=10)
    assert s.fragment_labels.shape == (20, 3) and s.fragment_boxes.shape == (20, 3, 4)
    assert (s.fragment_labels == 1 - s.labels[:, None]).all()
    # the garment, drawn last, may cover part of a fragment, and its blended edge reaches a pixel past the mask
    near = torch.nn.functional.max_pool2d(s.masks[:, None].float(), 5, stride=1, padding=2)[:, 0] > 0
    for x0, y0, x1, y1 in s.fragment_boxes.reshape(-1, 4).tolist():
        assert x1 - x0 == 10 and y1 - y0 == 10 and 0 <= x0 and x1 <= 48 and 0 <= y0 and y1 <= 48
    # the last fragment drawn lies on top of everything but the garment: its box holds the other block's value
    checked = 0
    for i in range(20):
        x0, y0, x1, y1 = s.fragment_boxes[i, -1].tolist()
        clear = ~near[i, y0:y1, x0:x1]
        checked += int(clear.sum())
        assert (s.images[i, 0, y0:y1, x0:x1][clear] == (120 if s.labels[i] == 0 else 200)).all()
    assert checked > 500


def test_clean_distractors_change_only_images_with_a_fragment_of_the_labels_class():
    src = gv.load_fashion_mnist("test").subset(2000)
    old = make_clutter(src, 300, TEST_BACKGROUNDS, seed=1, clean_distractors=False)
    new = make_clutter(src, 300, TEST_BACKGROUNDS, seed=1)
    had = (old.fragment_labels == old.labels[:, None]).any(1)
    assert 0.1 < had.float().mean() < 0.6  # the first generator drew fragments of the label's class
    assert not (new.fragment_labels == new.labels[:, None]).any()
    same = (old.images == new.images).flatten(1).all(1)
    assert same[~had].all()  # every image without such a fragment, and every other random choice, is unchanged
    assert (~same[had]).float().mean() > 0.9  # the others change (unless the garment hides the fragment)
    assert torch.equal(old.masks, new.masks) and torch.equal(old.fragment_boxes, new.fragment_boxes)
    keep = ~(old.fragment_labels == old.labels[:, None])
    assert torch.equal(old.fragment_sources[keep], new.fragment_sources[keep])


def test_clean_distractors_need_a_second_class():
    one = gv.ImageData(torch.full((3, 1, 28, 28), 200, dtype=torch.uint8), torch.tensor([0, 0, 0]), ["a"], (0.5,), (0.5,))
    with pytest.raises(ValueError, match="another class"):
        make_clutter(one, 4, TRAIN_BACKGROUNDS, fragments=2)
    assert make_clutter(one, 4, TRAIN_BACKGROUNDS, fragments=0).fragment_labels.shape == (4, 0)
