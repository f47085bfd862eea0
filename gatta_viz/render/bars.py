"""Bar charts of dense layers in Fig. 3: bar corners and the y ticks (the baseline and a round distance either side)."""
from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

__all__ = ["bar_verts", "set_bar_ticks"]


def bar_verts(v: np.ndarray, base: float) -> np.ndarray:
    """(units, 4, 2) corners of bars of width 0.8 centred on 0, 1, ..., from ``base`` to ``base + v``."""
    x = np.arange(len(v), dtype=np.float64)
    lo, hi = np.full(len(v), base), base + np.asarray(v, dtype=np.float64)
    return np.stack([np.stack([x - 0.4, lo], 1), np.stack([x - 0.4, hi], 1), np.stack([x + 0.4, hi], 1),
                     np.stack([x + 0.4, lo], 1)], 1)


def set_bar_ticks(ax, base: float, span: float) -> None:
    """Y limits ``base ± 1.15 span`` and three ticks: the baseline and a round distance either side, printed with
    the fewest decimals that show them exactly (tiny spans as ``1+2e−08``)."""
    ax.set_ylim(base - 1.15 * span, base + 1.15 * span)
    d = max((t for t in MaxNLocator(nbins=2, steps=[1, 2, 2.5, 5, 10]).tick_values(0, span) if 0 < t <= 1.1 * span),
            default=span)
    ticks = np.array([base - d, base, base + d])
    step = d
    dec = next((k for k in range(9) if np.allclose(np.round(ticks, k), ticks, rtol=0, atol=step * 1e-6)), 9)
    ax.set_yticks(ticks)
    if dec <= 4:
        labels = [f"{t:.{dec}f}".replace("-", "\u2212") for t in ticks]
    else:  # tiny spans: the base and a short offset ("1+2e-08"), not eight decimals
        labels = [f"{base:g}" if abs(t - base) < step / 2 else
                  f"{base:g}{'+' if t > base else chr(0x2212)}{abs(t - base):.1g}".replace("e-", "e\u2212")
                  for t in ticks]
        labels = [lb[2:] if lb.startswith("0+") else ("\u2212" + lb[2:] if lb.startswith("0\u2212") else lb)
                  for lb in labels]
    ax.set_yticklabels(labels)
