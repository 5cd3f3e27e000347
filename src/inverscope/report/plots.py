"""Matplotlib figures shared by the studies' reports (each returns a Figure)."""

from __future__ import annotations

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curves(histories: dict[str, list[dict]], metric: str = "loss"):
    """Train and validation `metric` per epoch, one panel per run."""
    n = max(len(histories), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False, layout="constrained")
    for ax, (name, hist) in zip(axes[0], histories.items()):
        for split, style in (("train", "-"), ("val", "--")):
            pts = [(h["epoch"], h[f"{split}_{metric}"]) for h in hist if f"{split}_{metric}" in h]
            if pts:
                e, v = zip(*pts)
                ax.plot(e, v, style, label=split)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
    return fig


def confusion_matrices(matrices: dict[str, tuple[np.ndarray, list[str]]]):
    """Confusion matrices (counts, rows = true class) side by side."""
    n = max(len(matrices), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), squeeze=False, layout="constrained")
    for ax, (name, (m, labels)) in zip(axes[0], matrices.items()):
        m = np.asarray(m)
        ax.imshow(m, cmap="Blues", vmin=0)
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        acc = np.trace(m) / max(m.sum(), 1)
        ax.set_title(f"{name}: {100 * acc:.1f} %", fontsize=9)
    return fig


def regression_scatter(panels: dict[str, tuple[np.ndarray, np.ndarray]], tolerance: float = 0.1):
    """Predicted vs true step fraction, one panel per thickness, with the ±tolerance band."""
    n = max(len(panels), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.3 * n, 3.3), squeeze=False, layout="constrained")
    for ax, (name, (t, p)) in zip(axes[0], panels.items()):
        ax.plot([0, 1], [0, 1], "r-", lw=1)
        ax.fill_between([0, 1], [-tolerance, 1 - tolerance], [tolerance, 1 + tolerance], color="r", alpha=0.1)
        ax.scatter(t, p, s=12)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.1, 1.1)
        ax.set_xlabel("true step position / thickness")
        ax.set_ylabel("predicted")
        ax.set_title(name, fontsize=9)
    return fig


def error_vs_thickness(curves: dict[str, tuple[list[float], list[float]]], trained_at: dict[str, float] | None = None):
    """MAE [Å] vs specimen thickness [Å], one curve per model (transferability)."""
    fig, ax = plt.subplots(figsize=(4.8, 3.4), layout="constrained")
    for name, (t, e) in curves.items():
        line, = ax.plot(t, e, "o-", label=name)
        if trained_at and name in trained_at:
            ax.axvline(trained_at[name], color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("thickness [Å]")
    ax.set_ylabel("step position MAE [Å]")
    ax.legend(fontsize=8)
    return fig


def image_grid(images: list[np.ndarray], titles: list[str], cmap: str = "magma", ncols: int = 4, log: bool = False):
    """Small images (patterns, saliency maps) in a grid."""
    n = max(len(images), 1)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.4 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(np.log10(np.maximum(img, 1e-8)) if log else img, cmap=cmap)
        ax.set_title(title, fontsize=8)
    return fig


def stack_montage(stack: np.ndarray, title: str = ""):
    """All patterns of one stack (positions, ky, kx), log scale, in a row-wrapped grid."""
    fig = image_grid(list(stack), [f"position {i}" for i in range(len(stack))], cmap="inferno", ncols=8, log=True)
    fig.suptitle(title, fontsize=9)
    return fig
