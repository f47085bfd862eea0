"""Each GAttA equation against a hand computation on small tensors (loops in numpy, not the same einsums)."""
import numpy as np
import pytest
import torch
from torch import nn

from gatta_viz import ConvKeyQuery, DenseKeyQuery, GAttANet, agreement, global_query, modulate


def test_conv_keys_queries_match_hand_computation():
    torch.manual_seed(0)
    kq = ConvKeyQuery(channels=3, d=2)
    a = torch.randn(1, 3, 2, 4)
    K = kq.key.weight[:, :, 0, 0].detach().numpy()  # (d, C)
    Q = kq.query.weight[:, :, 0, 0].detach().numpy()
    an = a.numpy()
    keys = kq.keys(a).detach().numpy()
    qs = kq.queries(a).detach().numpy()
    for x in range(2):
        for y in range(4):
            for j in range(2):
                assert keys[0, j, x, y] == pytest.approx(sum(an[0, c, x, y] * K[j, c] for c in range(3)), abs=1e-6)
                assert qs[0, j, x, y] == pytest.approx(sum(an[0, c, x, y] * Q[j, c] for c in range(3)), abs=1e-6)
    # the mean query is the mean over positions of q(x, y)
    assert np.allclose(kq.mean_query(a).detach().numpy()[0], qs[0].mean(axis=(1, 2)), atol=1e-6)
    assert kq.key.bias is None and kq.query.bias is None


def test_dense_keys_queries_match_hand_computation():
    kq = DenseKeyQuery(units=3, d=2)
    with torch.no_grad():
        kq.key.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]]))
        kq.query.copy_(torch.tensor([[0.5, 0.0], [1.0, 1.0], [-2.0, 1.0]]))
    a = torch.tensor([[2.0, -1.0, 0.5]])
    # k(c,:) = a(c) K(c,:)
    assert torch.allclose(kq.keys(a)[0], torch.tensor([[2.0, 4.0], [0.0, 1.0], [1.5, 0.25]]))
    # q(c,:) = a(c) Q(c,:); mean over c: ([1,0] + [-1,-1] + [-1,0.5]) / 3 = [-1/3, -1/6]
    assert torch.allclose(kq.queries(a)[0], torch.tensor([[1.0, 0.0], [-1.0, -1.0], [-1.0, 0.5]]))
    assert torch.allclose(kq.mean_query(a)[0], torch.tensor([-1 / 3, -1 / 6]))
    q_avg = torch.tensor([[1.0, -2.0]])
    # agreement per unit: k(c,:) . q_avg = [2-8, 0-2, 1.5-0.5] = [-6, -2, 1]
    assert torch.allclose(kq.agreement(a, q_avg), torch.tensor([[-6.0, -2.0, 1.0]]))
    assert torch.allclose(agreement(kq.keys(a), q_avg), torch.tensor([[-6.0, -2.0, 1.0]]))


def test_global_query_agreement_and_modulation_by_hand():
    q1 = torch.tensor([[1.0, 2.0]])
    q2 = torch.tensor([[3.0, -4.0]])
    q3 = torch.tensor([[2.0, 5.0]])
    assert torch.allclose(global_query([q1, q2, q3]), torch.tensor([[2.0, 1.0]]))
    with pytest.raises(ValueError):
        global_query([])
    keys = torch.zeros(1, 2, 1, 2)
    keys[0, :, 0, 0] = torch.tensor([1.0, 1.0])
    keys[0, :, 0, 1] = torch.tensor([-1.0, 0.5])
    g = agreement(keys, torch.tensor([[2.0, 1.0]]))
    assert torch.allclose(g, torch.tensor([[[3.0, -1.5]]]))  # signed, no softmax
    a = torch.ones(1, 3, 1, 2)
    out = modulate(a, torch.tensor(0.5), g)
    # (1 + 0.5*3) = 2.5 ; (1 + 0.5*-1.5) = 0.25, for every channel
    assert torch.allclose(out, torch.tensor([2.5, 0.25]).view(1, 1, 1, 2).expand(1, 3, 1, 2))
    dense = modulate(torch.tensor([[2.0, -1.0]]), torch.tensor(-1.0), torch.tensor([[0.5, 3.0]]))
    assert torch.allclose(dense, torch.tensor([[1.0, 2.0]]))


class TinyNet(nn.Module):
    """conv 1x1 (1->2) + relu, global average, dense 2->3: small enough to do by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)))


def test_two_pass_forward_matches_hand_computation_over_mixed_layers():
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():
        net.conv[0].weight.copy_(torch.tensor([1.0, -0.5]).view(2, 1, 1, 1))
        net.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.5, 1.0], [-1.0, 2.0]]))
        net.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.0]))
    model = GAttANet(net, ["conv", "fc"], input_shape=(1, 1, 2), d=2, alpha_init=0.0)
    with torch.no_grad():
        model.kq["conv"].key.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1))
        model.kq["conv"].query.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, -1.0]]).view(2, 2, 1, 1))
        model.kq["fc"].key.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        model.kq["fc"].query.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, -1.0]]))
        model.alpha["conv"].fill_(0.1)
        model.alpha["fc"].fill_(-0.2)
    x = torch.tensor([[[[2.0, -1.0]]]])  # (1, 1, 1, 2)

    # Pass 1 by hand. conv out (relu): position 0: relu([2, -1]) = [2, 0]; position 1: relu([-1, 0.5]) = [0, 0.5]
    a_conv = np.array([[2.0, 0.0], [0.0, 0.5]])  # [position, channel]
    pooled = a_conv.mean(axis=0)  # [1, 0.25]
    W = np.array([[1.0, 0.0], [0.5, 1.0], [-1.0, 2.0]])
    b = np.array([0.1, -0.2, 0.0])
    logits1 = W @ pooled + b  # [1.1, 0.55, -0.5]
    Kc, Qc = np.eye(2), np.array([[1.0, 1.0], [0.0, -1.0]])  # rows = output dim j, cols = channel c
    keys_conv = [Kc @ a_conv[p] for p in range(2)]
    mq_conv = np.mean([Qc @ a_conv[p] for p in range(2)], axis=0)
    Kd = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    Qd = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, -1.0]])
    mq_fc = np.mean([logits1[c] * Qd[c] for c in range(3)], axis=0)
    q_avg = (mq_conv + mq_fc) / 2
    g_conv = np.array([keys_conv[p] @ q_avg for p in range(2)])
    g_fc = np.array([logits1[c] * Kd[c] @ q_avg for c in range(3)])
    # Pass 2 by hand: conv output modulated per position, then pooled, dense, dense modulated
    a2 = a_conv * (1 + 0.1 * g_conv)[:, None]
    logits2 = (W @ a2.mean(axis=0) + b) * (1 + -0.2 * g_fc)

    with torch.no_grad():
        t = model.trace(x, return_keys=True)
    assert np.allclose(t.logits_pass1[0].numpy(), logits1, atol=1e-6)
    assert np.allclose(t.q_avg[0].numpy(), q_avg, atol=1e-6)
    assert np.allclose(t.agreement("conv")[0, 0].numpy(), g_conv, atol=1e-6)
    assert np.allclose(t.agreement("fc")[0].numpy(), g_fc, atol=1e-6)
    assert np.allclose(t.logits_pass2[0].numpy(), logits2, atol=1e-6)
    assert np.allclose(model(x)[0].detach().numpy(), logits2, atol=1e-6)
    assert np.allclose(t.layers["conv"].gain[0, 0].numpy(), 1 + 0.1 * g_conv, atol=1e-6)
    assert t.layers["conv"].kind == "conv" and t.layers["fc"].kind == "dense"
    assert t.alphas == pytest.approx({"conv": 0.1, "fc": -0.2})
