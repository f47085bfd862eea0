"""The GAttA building blocks, one equation each (see ``shared/GATTA.md``).

Conv layer i, activations a_i of shape (B, C, H, W):
    k_i(x, y, :) = sum_c a_i(x, y, c) K_i(c, :)      (bias-free 1x1 conv C -> d)
    q_i(x, y, :) = sum_c a_i(x, y, c) Q_i(c, :)
Dense layer j, activations a_j of shape (B, C):
    k_j(c, :) = a_j(c) K_j(c, :),  q_j(c, :) = a_j(c) Q_j(c, :)
Global query:  q_avg = mean over layers of (mean over positions/units of q)
Agreement:     gatta(pos) = k(pos, :) . q_avg          (signed, no softmax)
Modulation:    a' = a * (1 + alpha * gatta)
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = [
    "ConvKeyQuery",
    "DenseKeyQuery",
    "global_query",
    "agreement",
    "modulate",
]


class ConvKeyQuery(nn.Module):
    """Keys and queries of a conv layer: two bias-free 1x1 convolutions C -> d.

    Args:
        channels: number of channels C of the layer's output.
        d: dimension of keys and queries.
    """

    kind = "conv"

    def __init__(self, channels: int, d: int) -> None:
        super().__init__()
        self.channels, self.d = int(channels), int(d)
        self.key = nn.Conv2d(channels, d, kernel_size=1, bias=False)
        self.query = nn.Conv2d(channels, d, kernel_size=1, bias=False)

    def keys(self, a: torch.Tensor) -> torch.Tensor:
        """Args: a (B, C, H, W). Returns: keys (B, d, H, W)."""
        return self.key(a)

    def queries(self, a: torch.Tensor) -> torch.Tensor:
        """Args: a (B, C, H, W). Returns: queries (B, d, H, W)."""
        return self.query(a)

    def mean_query(self, a: torch.Tensor) -> torch.Tensor:
        """Mean query over spatial positions.

        Args: a (B, C, H, W). Returns: (B, d). Uses linearity: Q(mean a) = mean Q(a).
        """
        return torch.einsum("bc,dc->bd", a.mean(dim=(2, 3)), self.query.weight[:, :, 0, 0])

    def agreement(self, a: torch.Tensor, q_avg: torch.Tensor) -> torch.Tensor:
        """Args: a (B, C, H, W), q_avg (B, d). Returns: agreement map (B, H, W)."""
        return agreement(self.keys(a), q_avg)


class DenseKeyQuery(nn.Module):
    """Keys and queries of a dense layer: one learned row per unit, scaled by its activation.

    Args:
        units: number of units C of the layer's output.
        d: dimension of keys and queries.
    """

    kind = "dense"

    def __init__(self, units: int, d: int) -> None:
        super().__init__()
        self.channels, self.d = int(units), int(d)
        bound = 1.0 / (units ** 0.5)
        self.key = nn.Parameter(torch.empty(units, d).uniform_(-bound, bound))
        self.query = nn.Parameter(torch.empty(units, d).uniform_(-bound, bound))

    def keys(self, a: torch.Tensor) -> torch.Tensor:
        """Args: a (B, C). Returns: keys (B, C, d) with k[b, c] = a[b, c] * K[c]."""
        return a.unsqueeze(-1) * self.key

    def queries(self, a: torch.Tensor) -> torch.Tensor:
        """Args: a (B, C). Returns: queries (B, C, d) with q[b, c] = a[b, c] * Q[c]."""
        return a.unsqueeze(-1) * self.query

    def mean_query(self, a: torch.Tensor) -> torch.Tensor:
        """Args: a (B, C). Returns: mean over units of the queries, (B, d)."""
        return a @ self.query / a.shape[1]

    def agreement(self, a: torch.Tensor, q_avg: torch.Tensor) -> torch.Tensor:
        """Args: a (B, C), q_avg (B, d). Returns: agreement per unit (B, C)."""
        return a * (q_avg @ self.key.t())


def global_query(mean_queries: Sequence[torch.Tensor]) -> torch.Tensor:
    """Average the per-layer mean queries into the global query.

    Args:
        mean_queries: one (B, d) tensor per selected layer (conv and dense alike).
    Returns:
        q_avg of shape (B, d).
    """
    if len(mean_queries) == 0:
        raise ValueError("global_query needs at least one layer's mean query")
    return torch.stack(list(mean_queries), dim=0).mean(dim=0)


def agreement(keys: torch.Tensor, q_avg: torch.Tensor) -> torch.Tensor:
    """Signed dot product of each key with the global query.

    Args:
        keys: conv keys (B, d, H, W) or dense keys (B, C, d).
        q_avg: global query (B, d).
    Returns:
        (B, H, W) for conv keys, (B, C) for dense keys.
    """
    if keys.dim() == 4:
        return torch.einsum("bdhw,bd->bhw", keys, q_avg)
    if keys.dim() == 3:
        return torch.einsum("bcd,bd->bc", keys, q_avg)
    raise ValueError(f"keys must be (B,d,H,W) or (B,C,d), got shape {tuple(keys.shape)}")


def modulate(a: torch.Tensor, alpha: torch.Tensor, gatta: torch.Tensor) -> torch.Tensor:
    """Multiplicative modulation a' = a * (1 + alpha * gatta).

    Args:
        a: activations (B, C, H, W) or (B, C).
        alpha: scalar (0-dim tensor) for the layer.
        gatta: agreement (B, H, W) for conv, (B, C) for dense.
    Returns:
        Modulated activations, same shape as ``a``.
    """
    if a.dim() == 4:
        return a * (1 + alpha * gatta.unsqueeze(1))
    return a * (1 + alpha * gatta)
