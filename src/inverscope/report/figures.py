"""Figures: matplotlib, written atomically as PNG."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path) -> None:
    """Save `fig` to `path` through a temporary file and a rename; closes the figure."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def cbed_montage(path, patterns: dict[int, np.ndarray], scan, sampling_mrad, bf: np.ndarray, adf: np.ndarray, title: str = "") -> None:
    """Montage of CBED patterns (log scale, mrad axes) beside virtual BF/ADF images of the scan."""
    keys = sorted(patterns)
    ncols = 4
    nrows = max(1, int(np.ceil(len(keys) / ncols)))
    two_d = len(scan.shape) == 2 and min(scan.shape) > 1
    fig = plt.figure(figsize=(3.0 * ncols + 3.4, 3.1 * nrows + 0.6), layout="constrained")
    gs = fig.add_gridspec(max(nrows, 2), ncols + 1)
    for n, k in enumerate(keys):
        ax = fig.add_subplot(gs[n // ncols, n % ncols])
        p = patterns[k]
        ext = [-(p.shape[1] // 2) * sampling_mrad[1], (p.shape[1] - p.shape[1] // 2) * sampling_mrad[1],
               (p.shape[0] - p.shape[0] // 2) * sampling_mrad[0], -(p.shape[0] // 2) * sampling_mrad[0]]
        top = np.log10(max(float(p.max()), 1e-12))
        ax.imshow(np.log10(np.maximum(p, 1e-12)), cmap="inferno", extent=ext, vmin=top - 5, vmax=top)
        x, y = scan.positions_angstrom[k]
        ax.set_title(f"#{k} at ({x:.2f}, {y:.2f}) Å", fontsize=8)
        ax.set_xlabel("k_y [mrad]", fontsize=7)
        ax.set_ylabel("k_x [mrad]", fontsize=7)
        ax.tick_params(labelsize=6)
    for row, (img, name) in enumerate(((bf, "virtual BF"), (adf, "virtual ADF"))):
        ax = fig.add_subplot(gs[row, ncols])
        if two_d:
            ax.imshow(img.reshape(scan.shape), cmap="gray")
            ax.set_xlabel("scan y", fontsize=7)
            ax.set_ylabel("scan x", fontsize=7)
        else:
            ax.plot(img, ".-")
            ax.set_xlabel("position index", fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle(title + "  (log10 intensity)")
    save_figure(fig, path)
