"""Public names that only notebooks (or nothing) reached: q_avg_embedding, collect_q_avg, QEmbedding, cue_examples,
randomized_copies, load_singles. Each against a hand computation or an invariant."""
import copy

import numpy as np
import pytest
import torch

import gatta_viz as gv


@pytest.fixture(scope="module")
def toy():
    return gv.load_model("fmnist-gatta-toy")


@pytest.fixture(scope="module")
def fmnist_test():
    return gv.load_fashion_mnist("test").subset(60)


def test_collect_q_avg_is_the_traces_q_avg_in_any_batch_size_and_keeps_the_mode(toy, fmnist_test):
    model = toy.model
    with torch.no_grad():
        by_hand = model.trace(fmnist_test.normalize(fmnist_test.images[:25])).q_avg.numpy()
    q = gv.collect_q_avg(model, fmnist_test, n=25, batch_size=7, progress=False)
    assert q.shape == (25, model.d)
    np.testing.assert_allclose(q, by_hand, atol=1e-5)
    model.train()
    try:
        gv.collect_q_avg(model, fmnist_test, n=3, progress=False)
        assert model.training  # the caller's mode is kept
    finally:
        model.eval()
    with pytest.raises(ValueError, match="GAttA"):
        gv.collect_q_avg(gv.load_model("fmnist-toy").model, fmnist_test, n=3, progress=False)


def test_q_avg_embedding_is_the_pca_of_q_avg(toy, fmnist_test):
    emb = gv.q_avg_embedding(toy.model, fmnist_test, n=40, batch_size=16)
    assert isinstance(emb, gv.QEmbedding)
    assert emb.coords.shape == (40, 2) and emb.q_avg.shape == (40, toy.model.d)
    np.testing.assert_array_equal(emb.labels, fmnist_test.labels[:40].numpy())
    # by hand: eigen-decomposition of the covariance; the coordinates are projections on its top-2 eigenvectors
    q = emb.q_avg.astype(np.float64)
    c = q - q.mean(0)
    vals, vecs = np.linalg.eigh(c.T @ c)
    top = vecs[:, ::-1][:, :2]
    proj = c @ top
    for k in range(2):  # eigenvectors have no sign: compare up to it
        sign = np.sign(proj[:, k] @ emb.coords[:, k])
        np.testing.assert_allclose(emb.coords[:, k], sign * proj[:, k], atol=1e-3 * np.abs(proj).max())
    np.testing.assert_allclose(emb.explained, vals[::-1][:2] / vals.sum(), rtol=1e-4)
    assert emb.explained[0] >= emb.explained[1] > 0
    whole = gv.q_avg_embedding(toy.model, fmnist_test.subset(10), n=None)
    assert whole.coords.shape == (10, 2)  # n=None: every image


def test_cue_examples_picks_separated_scenes_and_measures_shares_by_hand():
    from gatta_viz.data.scenes import make_scenes
    from gatta_viz.metrics.faithfulness import trace_saliency
    from gatta_viz.metrics.localization import energy_in_mask

    lm = gv.load_model("fmnist-pairs-gatta-resnet")
    scenes = make_scenes(gv.load_fashion_mnist("test").subset(200), 40, seed=4)
    scenes.mean, scenes.std = tuple(lm.preprocess["mean"]), tuple(lm.preprocess["std"])
    ex = gv.cue_examples(lm.model, scenes, lm.class_queries, n=3, max_overlap=0.1)
    want = [i for i in range(len(scenes)) if float(scenes.overlap[i]) <= 0.1][:3]
    assert ex["index"] == want and len(want) == 3
    assert ex["names"] == [[scenes.classes[int(c)] for c in scenes.labels[i]] for i in want]
    np.testing.assert_array_equal(ex["images"], scenes.images[want, 0].numpy())
    assert len(ex["maps"]) == 3 and all(m.shape == (3, 48, 48) for m in ex["maps"])
    x = scenes.normalize(scenes.images[want])
    with torch.no_grad():
        uncued = trace_saliency(lm.model.trace(x), (48, 48))
    np.testing.assert_allclose(ex["maps"][0], uncued, atol=1e-5)
    for m, share in zip(ex["maps"], ex["shares"]):
        for k in range(2):
            np.testing.assert_allclose(share[:, k], energy_in_mask(m, ex["masks"][:, k]), atol=1e-9)
        ok = np.isfinite(share)
        assert np.all((share[ok] >= 0) & (share[ok] <= 1))
        # NaN exactly where a map has no positive value (it points nowhere)
        np.testing.assert_array_equal(~ok, np.repeat((m.reshape(len(m), -1).max(1) <= 0)[:, None], 2, 1))
    assert not np.allclose(ex["maps"][1], ex["maps"][0])  # a cue changes the maps


def test_randomized_copies_leave_the_model_alone_and_randomise_more_each_step(toy):
    from gatta_viz.metrics.sanity import changed_parameters

    before = copy.deepcopy(toy.model.state_dict())
    steps = list(gv.randomized_copies(toy.model, "cascade", seed=0))
    assert all(torch.equal(before[k], v) for k, v in toy.model.state_dict().items())  # never modified
    assert len(steps) >= 2 and all(not m.training for _, m in steps)
    changed = [set(changed_parameters(toy.model, m)) for _, m in steps]
    assert all(changed) and all(a < b for a, b in zip(changed, changed[1:]))  # a cascade: each step adds layers
    again = list(gv.randomized_copies(toy.model, "cascade", seed=0))
    assert [n for n, _ in again] == [n for n, _ in steps]
    assert all(not changed_parameters(a, b) for (_, a), (_, b) in zip(steps, again))  # seeded
    names = [n for n, _ in gv.randomized_copies(toy.model, "gatta", seed=0)]
    assert names and len(set(names)) == len(names)
    with pytest.raises(ValueError, match="GAttA"):
        list(gv.randomized_copies(gv.load_model("fmnist-toy").model, "gatta"))


def test_load_singles_holds_each_test_garment_alone_on_the_scene_canvas():
    from gatta_viz.data.scenes import SCENE_NORMALIZATION

    src = gv.load_fashion_mnist("test")
    singles = gv.load_singles("fmnist-pairs", "test")
    assert singles.images.shape == (10_000, 1, 48, 48)
    assert torch.equal(singles.labels, src.labels)
    # each garment is placed whole on a black canvas: the same pixels, so the same pixel sum
    assert torch.equal(singles.images.long().sum((1, 2, 3)), src.images.long().sum((1, 2, 3)))
    assert (singles.mean, singles.std) == tuple(map(tuple, SCENE_NORMALIZATION["fmnist-pairs"]))
    own = gv.load_singles("fmnist-pairs", "test", mean=[0.5], std=[0.25])
    assert own.mean == (0.5,) and own.std == (0.25,) and torch.equal(own.images, singles.images)
    with pytest.raises(ValueError, match="unknown scene data set"):
        gv.load_singles("fmnist-triplets")
