"""Draw the book's hand-made figures with matplotlib (the chapters draw their own).

    python scripts/make_figures.py  # writes book/figures/backpack_architecture.svg

backpack_architecture.svg: the Backpack at a glance. Token ids are embedded by E; the
sense network turns each token's embedding into k sense vectors, with no context; the
weight network (a causal Transformer) reads the whole prefix and gives the non-negative
contextualization weights alpha; the output at position i is the alpha-weighted sum of
the senses of tokens j <= i, and the logits are that sum times E transposed. The figure
is deterministic (fixed ids and no date in the SVG), so running the script again changes
the file only when the drawing changes.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

FIGURES = Path(__file__).resolve().parents[1] / "book" / "figures"
TOKENS = ["The", "nurse", "said"]
K = 4  # senses drawn per token (the book's models use 16)
SENSE_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52"]
INK = "#222222"
BOX = dict(boxstyle="round,pad=0.02,rounding_size=0.12", linewidth=1.2)


def box(ax, x, y, w, h, text, face="#F2F2F2", edge=INK, size=11, weight="normal"):
    """A rounded box with centred text; returns its (x, y, w, h)."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, facecolor=face, edgecolor=edge, **BOX))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size,
            color=INK, weight=weight)
    return x, y, w, h


def arrow(ax, start, end, color=INK, style="-|>", lw=1.3, ls="-", rad=0.0):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=13,
            color=color,
            linewidth=lw,
            linestyle=ls,
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=2,
            shrinkB=2,
        )
    )


def draw_architecture(path: Path) -> None:
    plt.rcParams.update(
        {
            "svg.hashsalt": "backpack-book",
            "svg.fonttype": "path",
            "font.family": "DejaVu Sans",
            "mathtext.fontset": "dejavusans",
        }
    )
    fig, ax = plt.subplots(figsize=(11, 8.2))
    ax.set_xlim(0, 14)
    ax.set_ylim(0, 10.6)
    ax.axis("off")

    # 1. token ids and the embedding matrix E
    xs = [4.6, 7.0, 9.4]
    for j, (x, word) in enumerate(zip(xs, TOKENS, strict=True), start=1):
        box(ax, x - 0.75, 0.25, 1.5, 0.7, f"$x_{j}$  {word}", face="white")
    ax.text(
        0.4, 0.6, "token ids", fontsize=11, va="center", color="#555555", style="italic"
    )
    box(
        ax,
        3.6,
        1.55,
        6.8,
        0.75,
        r"embeddings $E x_j$   ($E$: vocabulary $\times$ $d$)",
        face="#EAEAF2",
    )
    for x in xs:
        arrow(ax, (x, 0.95), (x, 1.55))

    # 2a. the sense network: k sense vectors per token, no context
    box(ax, 0.4, 3.0, 5.6, 0.85, "sense network $C$\n(each token alone, no context)",
        face="#E3ECF7", edge="#4C72B0")
    arrow(ax, (5.0, 2.3), (3.4, 3.0), rad=0.15)
    sense_x = [1.0, 2.8, 4.6]
    for j, (x, word) in enumerate(zip(sense_x, TOKENS, strict=True), start=1):
        for ell in range(K):
            y = 4.45 + ell * 0.42
            ax.add_patch(Rectangle((x, y), 1.3, 0.3, facecolor=SENSE_COLORS[ell],
                                   edgecolor="white", linewidth=0.8))
        ax.text(
            x + 0.65, 4.15, f"$C(x_{j})_\\ell$", ha="center", va="center", fontsize=10
        )
        ax.text(
            x + 0.65, 6.2, word, ha="center", va="center", fontsize=9.5, color="#555555"
        )
    ax.text(3.2, 6.72, r"$k$ sense vectors per token, $C(x_j)_\ell \in \mathbb{R}^d$",
            ha="center", fontsize=11, color="#4C72B0")
    for ell in range(K):
        ax.text(
            0.85,
            4.6 + ell * 0.42,
            f"{ell + 1}",
            ha="right",
            va="center",
            fontsize=8.5,
            color=SENSE_COLORS[ell],
        )
    ax.text(
        0.55, 6.2, r"$\ell$", ha="center", va="center", fontsize=10, color="#555555"
    )

    # 2b. the weight network: a causal Transformer gives alpha
    box(
        ax,
        8.0,
        3.0,
        5.6,
        0.85,
        "weight network\n(a causal Transformer reads the prefix)",
        face="#FBE9DD",
        edge="#DD8452",
    )
    arrow(ax, (9.0, 2.3), (10.6, 3.0), rad=-0.15)
    n = len(TOKENS)
    cell = 0.3
    # one n x n matrix per sense: row i (position), column j (token)
    for ell in range(K):
        ox, oy = 8.45 + ell * 1.25, 4.75
        for i in range(n):
            for j in range(n):
                visible = j <= i  # causal: position i weighs only tokens j <= i
                shade = 0.3 + 0.7 * ((i + 2 * j + ell) % 3) / 2
                ax.add_patch(
                    Rectangle(
                        (ox + j * cell, oy + (n - 1 - i) * cell),
                        cell,
                        cell,
                        facecolor=SENSE_COLORS[ell] if visible else "white",
                        alpha=shade if visible else 1.0,
                        edgecolor="#999999",
                        linewidth=0.6,
                    )
                )
        ax.text(
            ox + n * cell / 2,
            4.45,
            f"$\\alpha_{ell + 1}$",
            ha="center",
            va="center",
            fontsize=10,
        )
    ax.text(10.9, 6.72, r"weights $\alpha_\ell[i, j] \geq 0$, only for $j \leq i$",
            ha="center", fontsize=11, color="#B85F22")
    ax.text(
        10.9,
        6.2,
        "one $n \\times n$ matrix per sense $\\ell$ (row $i$, column $j$)",
        ha="center",
        va="center",
        fontsize=9.5,
        color="#555555",
    )
    arrow(ax, (10.8, 3.85), (10.8, 4.25))

    # 3. the weighted sum and the logits
    cx, cy = 7.0, 7.75
    ax.add_patch(
        plt.Circle((cx, cy), 0.42, facecolor="white", edgecolor=INK, linewidth=1.4)
    )
    ax.text(cx, cy, r"$\sum$", ha="center", va="center", fontsize=20)
    ax.text(
        cx + 0.6,
        cy + 0.35,
        r"$o_i = \sum_{\ell=1}^{k}\ \sum_{j \leq i}\ \alpha_\ell[i, j]\ C(x_j)_\ell$",
        ha="left",
        va="center",
        fontsize=13,
    )
    arrow(ax, (3.2, 6.95), (cx - 0.32, cy - 0.3), rad=-0.2, color="#4C72B0", lw=1.6)
    arrow(ax, (10.9, 6.95), (cx + 0.32, cy - 0.3), rad=0.2, color="#DD8452", lw=1.6)
    box(ax, 4.2, 9.1, 5.6, 0.8, r"logits$_i = o_i E^\top$  $\rightarrow$  next token",
        face="#EAEAF2", size=12)
    arrow(ax, (cx, cy + 0.42), (cx, 9.1))
    # E is shared: the same matrix embeds the tokens and maps o_i to the vocabulary
    ax.plot([3.6, 0.12, 0.12, 4.2], [1.92, 1.92, 9.5, 9.5], linestyle=(0, (4, 3)),
            color="#777777", linewidth=1.1)
    ax.text(0.3, 8.55, "the same $E$\n(tied weights)", fontsize=9.5, color="#555555")

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.05, metadata={"Date": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", default=str(FIGURES), help="folder for the figures (book/figures)"
    )
    ap.add_argument(
        "--format", default="svg", choices=["svg", "png"], help="file format"
    )
    args = ap.parse_args(argv)
    path = Path(args.out) / f"backpack_architecture.{args.format}"
    draw_architecture(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
