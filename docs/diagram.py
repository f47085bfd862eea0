"""Draw the GAttANet mechanism diagram used in the README: ``.venv/bin/python docs/diagram.py`` -> docs/gattanet.png."""
import os

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch


def box(ax, x, y, w, h, text, color):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=color, ec="black", lw=0.8))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5)


def arrow(ax, a, b, style="-|>", color="black", ls="-"):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=10, color=color, lw=1, linestyle=ls))


def main(path=os.path.join(os.path.dirname(os.path.abspath(__file__)), "gattanet.png")):
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 4.4)
    ax.axis("off")
    names = ["image", "conv layer 1", "conv layer 2", "conv layer 3", "dense (classes)"]
    xs = [0.2, 2.0, 4.0, 6.0, 8.0]
    for y0, label, col in ((3.3, "pass 1 (unmodulated)", "#e8eef7"), (0.3, "pass 2 (output)", "#fbe9e7")):
        ax.text(0.2, y0 + 0.85, label, fontsize=9, weight="bold")
        for i, (x, n) in enumerate(zip(xs, names)):
            box(ax, x, y0, 1.5, 0.6, n if y0 > 1 or i == 0 else f"{n}\nx (1 + alpha g)", col)
            if i:
                arrow(ax, (xs[i - 1] + 1.55, y0 + 0.3), (x - 0.05, y0 + 0.3))
    box(ax, 4.0, 1.85, 1.5, 0.55, "q_avg = mean over\nlayers of mean q", "#fff3c4")
    for x in xs[1:]:
        arrow(ax, (x + 0.75, 3.27), (4.75, 2.43), color="#3366aa", ls="--")  # queries up to q_avg
        arrow(ax, (4.75, 1.82), (x + 0.75, 0.93), color="#aa3333")  # agreement maps down
    ax.text(6.6, 2.45, "queries q (1x1 conv / row x unit)", fontsize=7.5, color="#3366aa")
    ax.text(6.6, 1.55, "g = key . q_avg  (signed agreement)", fontsize=7.5, color="#aa3333")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    return path


if __name__ == "__main__":
    print(main())
