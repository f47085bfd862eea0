"""Summary statistics shared by the metrics: mean and standard error of the finite values."""
from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["mean_se"]


def mean_se(values) -> Tuple[float, float, int]:
    """Mean, standard error of the mean and count of the finite values of ``values``.

    Args:
        values: any array-like of numbers (NaN and infinities are left out).
    Returns:
        (mean, se, n); (NaN, NaN, 0) when nothing is finite; se is 0 for a single value.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    return float(v.mean()), se, int(len(v))
