"""Figures of PACBED predictions: thickness maps over a scan, and frames beside their registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_maps(path: Path, maps: dict, grid: tuple[int, int], name: str, window: int) -> None:
    """Thickness and its uncertainty over a scan's windows (`grid` windows of `window` positions)."""
    import matplotlib.pyplot as plt

    from inverscope.report.figures import save_figure

    path.parent.mkdir(exist_ok=True)
    ny, nx = grid
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
    for ax, key, title in zip(axes, ("thickness_nm", "thickness_sd_nm"), ("thickness [nm]", "thickness sd [nm]")):
        im = ax.imshow(maps[key], cmap="viridis" if key == "thickness_nm" else "magma", interpolation="nearest",
                       extent=(0, nx * window, ny * window, 0))
        fig.colorbar(im, ax=ax, shrink=0.85)
        ax.set(title=title, xlabel="scan column", ylabel="scan row")
    fig.suptitle(f"{name}: {window} x {window} positions per PACBED", fontsize=9)
    save_figure(fig, path)


def _text(row: dict) -> str:
    def pm(v, s, unit):
        return "n/a" if v is None or not np.isfinite(v) else (
            f"{v:.1f}{'' if s is None or not np.isfinite(s) else f' ± {s:.1f}'} {unit}").rstrip()
    return (f"t = {pm(row['thickness_nm'], row['thickness_sd_nm'], 'nm')}\n"
            f"tilt = ({pm(row['tilt_x_mrad'], row['tilt_x_sd_mrad'], '')}, "
            f"{pm(row['tilt_y_mrad'], row['tilt_y_sd_mrad'], 'mrad')})")


def plot_patterns(path: Path, title: str, entries: list) -> None:
    """Rows of (frame with the disc found, registered pattern, library pattern at the prediction)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    from inverscope.report.figures import save_figure

    path.parent.mkdir(exist_ok=True)
    cols = 3 if any(e[3] is not None for e in entries) else 2
    fig, axes = plt.subplots(len(entries), cols, figsize=(3.1 * cols, 3.0 * len(entries)), squeeze=False,
                             layout="constrained")
    for ax_row, (label, frame, reg, sim, row) in zip(axes, entries):
        ax_row[0].imshow(np.sqrt(np.clip(frame, 0, None)), cmap="gray")
        ax_row[0].add_patch(Circle(reg.centre_px[::-1], reg.radius_px, fill=False, color="tab:red", lw=0.8))
        ax_row[0].plot(reg.centre_px[1], reg.centre_px[0], "+", color="tab:red")
        ax_row[0].set_title(f"{label}: frame, disc {reg.radius_px:.1f} px", fontsize=8)
        ax_row[1].imshow(np.sqrt(np.clip(reg.pattern, 0, None)), cmap="inferno")
        ax_row[1].set_title(f"registered (rot {reg.rotation_deg:.1f} deg)", fontsize=8)
        ax_row[1].text(0.02, 0.02, _text(row), transform=ax_row[1].transAxes, color="w", fontsize=7, va="bottom")
        if cols == 3:
            if sim is not None:
                ax_row[2].imshow(np.sqrt(np.clip(sim, 0, None)), cmap="inferno")
                ax_row[2].set_title(f"library {row['library_thickness_nm']:.0f} nm, ({row['library_tilt_x_mrad']:.1f}, "
                                    f"{row['library_tilt_y_mrad']:.1f}) mrad; r = {row['library_correlation']:.2f}",
                                    fontsize=7)
            else:
                ax_row[2].set_visible(False)
        for ax in ax_row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


__all__ = ["plot_maps", "plot_patterns"]
