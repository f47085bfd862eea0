"""ROAD's noisy linear imputation, by hand."""
import numpy as np
import pytest
import torch

from gatta_viz.metrics.imputation import NEIGHBOUR_WEIGHTS, noisy_linear_impute


def ramp(c=2, h=7, w=9):
    """A different linear function of (row, col) per channel: the weighted neighbour mean reproduces it inside."""
    r = torch.arange(h, dtype=torch.float64)[:, None]
    q = torch.arange(w, dtype=torch.float64)[None, :]
    return torch.stack([1.5 * r - 0.25 * q + 3, -2 * r + q])[:c]


def test_weights_are_rooks_one_sixth_and_diagonals_one_twelfth():
    assert sum(NEIGHBOUR_WEIGHTS.values()) == pytest.approx(1.0)
    for (dr, dc), wt in NEIGHBOUR_WEIGHTS.items():
        assert wt == pytest.approx(1 / 12 if dr and dc else 1 / 6)


def test_a_hole_inside_a_linear_image_is_filled_exactly_and_kept_pixels_are_untouched():
    x = ramp()
    known = torch.ones(7, 9, dtype=torch.bool)
    known[1:6, 2:8] = False  # interior block: every filled pixel has all 8 neighbours
    known[3, 4] = True  # an island of kept pixel inside the hole
    y = noisy_linear_impute(x, known, noise=0)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-12)
    x2 = x.clone()
    x2[:, ~known] = 100.0  # the removed values themselves must not matter
    torch.testing.assert_close(noisy_linear_impute(x2, known, noise=0), x, rtol=0, atol=1e-12)


def test_single_pixels_get_the_weighted_mean_of_their_neighbours_renormalised_at_the_border():
    torch.manual_seed(0)
    x = torch.rand(1, 4, 5, dtype=torch.float64)
    v = x[0]
    known = torch.ones(4, 5, dtype=torch.bool)
    known[2, 2] = False  # interior
    known[0, 0] = False  # corner: neighbours (0,1), (1,0) at 1/6 and (1,1) at 1/12
    known[3, 2] = False  # bottom edge: 5 neighbours
    y = noisy_linear_impute(x, known, noise=0)[0]
    interior = (v[1, 2] + v[3, 2] + v[2, 1] + v[2, 3]) / 6 + (v[1, 1] + v[1, 3] + v[3, 1] + v[3, 3]) / 12
    corner = (v[0, 1] / 6 + v[1, 0] / 6 + v[1, 1] / 12) / (5 / 12)
    assert float(y[0, 0]) == pytest.approx(float(corner), abs=1e-12)
    # (2,2) and (3,2) are neighbours of each other: solve their 2x2 system by hand
    # s_a a - w b = r_a, s_b b - w a = r_b with w = 1/6 (rook neighbours)
    r_a = interior - v[3, 2] / 6
    s_b = 1 / 6 + 1 / 6 + 1 / 6 + 1 / 12 + 1 / 12  # (3,1), (3,3), (2,2) rooks; (2,1), (2,3) diagonals
    r_b = (v[3, 1] + v[3, 3]) / 6 + (v[2, 1] + v[2, 3]) / 12
    a = (r_a + r_b / (6 * s_b)) / (1 - 1 / (36 * s_b))
    b = (r_b + a / 6) / s_b
    assert float(y[2, 2]) == pytest.approx(float(a), abs=1e-12)
    assert float(y[3, 2]) == pytest.approx(float(b), abs=1e-12)
    assert torch.equal(y[known], v[known])


def test_nothing_kept_gives_the_fill_value_and_noise_is_seeded_with_the_given_std():
    x = ramp(1, 40, 40)
    none = torch.zeros(40, 40, dtype=torch.bool)
    assert torch.equal(noisy_linear_impute(x, none, noise=0, fill_if_empty=-0.5), torch.full_like(x, -0.5))
    known = torch.ones(40, 40, dtype=torch.bool)
    known[1:39, 1:39] = False
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    y1 = noisy_linear_impute(x, known, noise=0.5, generator=g())
    y2 = noisy_linear_impute(x, known, noise=0.5, generator=g())
    assert torch.equal(y1, y2)
    resid = (y1 - x)[:, ~known]
    assert float(resid.std()) == pytest.approx(0.5, rel=0.05) and abs(float(resid.mean())) < 0.03
    assert torch.equal(y1[:, known], x[:, known])
    assert torch.equal(noisy_linear_impute(x, torch.ones(40, 40, dtype=torch.bool), noise=0.5), x)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"x must be \(C, H, W\)"):
        noisy_linear_impute(torch.zeros(1, 1, 3, 3), torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"known must be \(H, W\) = \(3, 3\), got \(3, 4\)"):
        noisy_linear_impute(torch.zeros(1, 3, 3), torch.ones(3, 4, dtype=torch.bool))
