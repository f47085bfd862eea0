"""Per-pass BatchNorm statistics: which layers get a second set, training updates each pass's own,
eval normalises each pass with its own, shared mode and old checkpoints, recalibration."""
import copy

import pytest
import torch
from torch import nn

import gatta_viz as gv
from gatta_viz.core.pass_statistics import PassStatistics, SharedStatisticsError, is_batchnorm
from gatta_viz.training.recalibrate import recalibrate_checkpoint, recalibrate_statistics


def small_resnet(**kw):
    torch.manual_seed(0)
    return gv.gatta_compact_resnet(widths=(8, 16, 32), blocks=(1, 1, 1), d=8, alpha_init=0.5, **kw)


def bn_names(model):
    return [n for n, m in model.backbone.named_modules() if is_batchnorm(m)]


def test_only_batchnorms_after_the_first_gatta_layer_get_pass2_statistics():
    model = small_resnet()
    names = bn_names(model)
    # the stem's BatchNorm and those inside layer1 (the first GAttA layer) see the same input in both passes
    shared = [n for n in names if n.startswith(("stem", "layer1"))]
    assert shared and set(model.pass2_stats.names) == set(names) - set(shared)
    toy = gv.gatta_toy(in_channels=1, input_size=28)
    assert toy.pass2_stats.names == ["conv2.2", "conv3.2"]
    assert len(small_resnet(norm_stats="shared").pass2_stats) == 0
    with pytest.raises(ValueError, match="norm_stats"):
        small_resnet(norm_stats="blend")


def test_training_steps_update_each_pass_own_statistics_and_counts():
    model = small_resnet().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    torch.manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    named = dict(model.backbone.named_modules())
    for n in model.pass2_stats.names:
        bn, st = named[n], model.pass2_stats.of(n)
        assert int(bn.num_batches_tracked) == 3 and int(st.num_batches_tracked) == 3
        assert not torch.allclose(bn.running_mean, st.running_mean), n
    # a BatchNorm with the same input in both passes counts each batch once (in pass 1), as in the backbone
    assert int(named["stem.1"].num_batches_tracked) == 3


def test_eval_pass1_is_the_backbone_and_pass2_uses_pass2_statistics():
    model = small_resnet().train()
    with torch.no_grad():
        for _ in range(4):  # make the two sets of statistics differ
            model(torch.randn(16, 1, 28, 28) * 2 + 0.5)
    model.eval()
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        t = model.trace(x)
        assert torch.equal(t.logits_pass1, model.backbone_forward(x))
        # pass 2 by hand: a copy of the backbone holding pass 2's statistics, each layer's output multiplied
        twin = copy.deepcopy(model.backbone)
        named = dict(twin.named_modules())
        for n in model.pass2_stats.names:
            for b in ("running_mean", "running_var"):
                getattr(named[n], b).copy_(getattr(model.pass2_stats.of(n), b))
        handles = [
            named[n].register_forward_hook(
                lambda m, i, o, n=n: o * (1 + t.alphas[n] * (t.agreement(n).unsqueeze(1) if o.dim() == 4 else t.agreement(n)))
            )
            for n in model.layer_names
        ]
        by_hand = twin(x)
        for h in handles:
            h.remove()
        assert torch.allclose(t.logits_pass2, by_hand, atol=1e-5, rtol=0)
        # and the blend would differ: shared statistics give another pass 2
        shared = copy.deepcopy(model)
        shared.pass2_stats = PassStatistics({})
        assert (shared(x) - t.logits_pass2).abs().max() > 1e-3
    # swapped back: the backbone holds pass 1's statistics again, pass 2's are where they were
    assert all(model.pass2_stats.of(n).running_mean is not dict(model.backbone.named_modules())[n].running_mean
               for n in model.pass2_stats.names)


def test_prefix_reuse_stays_bit_identical_with_per_pass_statistics():
    model = small_resnet().train()
    with torch.no_grad():
        model(torch.randn(16, 1, 28, 28))
    model.eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        a = model.trace(x)
        model.reuse_prefix = False
        b = model.trace(x)
    assert torch.equal(a.logits_pass2, b.logits_pass2)


def test_old_checkpoint_is_never_silently_mixed_and_recalibrates(tmp_path):
    shared = small_resnet(norm_stats="shared")
    kwargs = {"widths": [8, 16, 32], "blocks": [1, 1, 1], "d": 8, "alpha_init": 0.5}  # no norm_stats: an old file
    path = str(tmp_path / "old.pt")
    gv.save_checkpoint(path, shared, "gatta_compact_resnet", kwargs, [str(i) for i in range(10)],
                       {"size": [28, 28], "channels": 1, "mean": [0.286], "std": [0.353]})
    with pytest.raises(SharedStatisticsError, match="gatta-viz recalibrate"):
        gv.load_checkpoint(path)
    as_was = gv.load_checkpoint(path, norm_stats="shared")
    assert as_was.model.norm_stats == "shared"

    new = str(tmp_path / "new.pt")
    info = recalibrate_checkpoint(path, new, images=256, batch_size=128, progress=False)
    assert info["batches"] == 2
    lm = gv.load_checkpoint(new)
    assert lm.model.norm_stats == "per_pass" and lm.meta["recalibrated"]["images"] == 256
    named = dict(lm.model.backbone.named_modules())
    for n in lm.model.pass2_stats.names:
        assert int(lm.model.pass2_stats.of(n).num_batches_tracked) == 2
        assert int(named[n].num_batches_tracked) == 2
    # weights untouched
    old_sd = shared.state_dict()
    for k, v in lm.model.state_dict().items():
        if not k.startswith("pass2_stats") and not k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(v, old_sd[k]), k


def test_recalibration_equals_the_average_of_batch_statistics():
    """A plain CNN: each running mean becomes the mean over batches of the batch means, by hand."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    data = gv.ImageData(images, torch.zeros(64, dtype=torch.long), ["a", "b"], (0.5,), (0.25,))
    net(torch.zeros(1, 1, 8, 8))
    net.eval()
    batches = recalibrate_statistics(net, data, images=64, batch_size=32, augment=False, seed=3, progress=False)
    assert batches == 2 and not net.training and net[1].momentum == 0.1
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        means = [net[0](data.normalize(images[perm[i:i + 32]])).mean(dim=(0, 2, 3)) for i in (0, 32)]
    assert torch.allclose(net[1].running_mean, (means[0] + means[1]) / 2, atol=1e-6)


def test_detach_pass1_still_updates_pass1_statistics_and_gives_the_same_outputs():
    a, b = small_resnet().train(), small_resnet().train()
    b.detach_pass1 = True
    x = torch.randn(8, 1, 28, 28)
    assert torch.allclose(a(x), b(x), atol=1e-6)
    named_a, named_b = dict(a.backbone.named_modules()), dict(b.backbone.named_modules())
    for n in a.pass2_stats.names:
        assert int(named_b[n].num_batches_tracked) == 1 and int(b.pass2_stats.of(n).num_batches_tracked) == 1
        assert torch.equal(named_a[n].running_mean, named_b[n].running_mean)
        assert torch.equal(a.pass2_stats.of(n).running_mean, b.pass2_stats.of(n).running_mean)
