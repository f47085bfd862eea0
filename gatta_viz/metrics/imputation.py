"""Noisy linear imputation (ROAD; Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML): removed pixels are filled from the pixels that remain instead of a fixed value.

Every removed pixel becomes the weighted mean of its in-image 8 neighbours (weight 1/6 for the 4 direct,
1/12 for the 4 diagonal ones; the weights of neighbours outside the image are dropped and the rest
renormalised), known neighbours entering with their values and removed ones as unknowns. That is one sparse
linear system per image (a discrete Laplace equation with the kept pixels as boundary), solved exactly;
then Gaussian noise of std ``noise`` is added to the filled pixels. A removed pixel thus tells the model
little about *where* pixels were removed (a fixed fill value draws the mask into the image, which is what
makes scattered single-pixel deletion by a random map so destructive).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

__all__ = ["NEIGHBOUR_WEIGHTS", "noisy_linear_impute"]

# (row offset, column offset) -> weight; the weights sum to 1.
NEIGHBOUR_WEIGHTS = {(-1, -1): 1 / 12, (-1, 0): 1 / 6, (-1, 1): 1 / 12, (0, -1): 1 / 6,
                     (0, 1): 1 / 6, (1, -1): 1 / 12, (1, 0): 1 / 6, (1, 1): 1 / 12}


def noisy_linear_impute(x: torch.Tensor, known: torch.Tensor, noise: float = 0.01,
                        generator: Optional[torch.Generator] = None, fill_if_empty: float = 0.0) -> torch.Tensor:
    """Fill the pixels where ``known`` is False from the others (ROAD's noisy linear imputation).

    Args:
        x: (C, H, W) image.
        known: (H, W) bool, True where the pixel is kept.
        noise: std of the Gaussian noise added to filled pixels (0: none).
        generator: torch generator for the noise (reproducible runs).
        fill_if_empty: value of every pixel when nothing is kept (the system then has no unique solution:
            every constant image solves it).
    Returns:
        (C, H, W) tensor, equal to ``x`` where ``known``.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import spsolve

    if x.dim() != 3:
        raise ValueError(f"x must be (C, H, W), got shape {tuple(x.shape)}")
    c, h, w = x.shape
    known = torch.as_tensor(known, dtype=torch.bool)
    if tuple(known.shape) != (h, w):
        raise ValueError(f"known must be (H, W) = {(h, w)}, got {tuple(known.shape)}")
    k = known.cpu().numpy().reshape(-1)
    unknown = np.flatnonzero(~k)
    out = x.detach().clone(memory_format=torch.contiguous_format)
    if len(unknown) == 0:
        return out
    flat, idx = out.view(c, -1), torch.from_numpy(unknown)  # flat shares out's storage
    if not k.any():
        out.fill_(fill_if_empty)
    else:
        vals = x.detach().cpu().double().numpy().reshape(c, -1)
        n = len(unknown)
        var = np.full(h * w, -1)
        var[unknown] = np.arange(n)  # pixel -> unknown index
        r, col = unknown // w, unknown % w
        diag = np.zeros(n)
        rhs = np.zeros((n, c))
        rows, cols, data = [np.arange(n)], [np.arange(n)], []
        for (dr, dc), wt in NEIGHBOUR_WEIGHTS.items():
            rr, cc = r + dr, col + dc
            inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            diag[inside] += wt
            nb = np.where(inside, rr * w + cc, 0)
            is_known = inside & k[nb]
            rhs[is_known] += wt * vals[:, nb[is_known]].T
            is_var = inside & ~k[nb]
            rows.append(np.flatnonzero(is_var))
            cols.append(var[nb[is_var]])
            data.append(np.full(int(is_var.sum()), -wt))
        # diag * x_i - sum_{unknown j} w_ij x_j = sum_{known j} w_ij v_j
        a = csr_matrix((np.concatenate([diag, *data]), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        sol = np.asarray(spsolve(a.tocsc(), rhs)).reshape(n, c)
        flat[:, idx] = torch.from_numpy(sol.T.copy()).to(out.dtype)
    if noise:
        flat[:, idx] += noise * torch.randn(c, len(unknown), generator=generator, dtype=out.dtype)
    return out
