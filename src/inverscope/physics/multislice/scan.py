"""Probe positions: grids, lines and explicit lists [Å]."""

from __future__ import annotations

import numpy as np

from inverscope.core.errors import ScanError, field_error


class Scan:
    """A set of probe positions with the shape they are reported in.

    Parameters
    ----------
    positions_angstrom : array (N, 2)
        Probe positions (x, y) [Å].
    shape : tuple of int
        Shape of the scan axes of the result, prod(shape) == N.
    """

    def __init__(self, positions_angstrom, shape: tuple[int, ...] | None = None):
        pos = np.asarray(positions_angstrom, dtype=np.float64)
        if pos.size == 0:
            raise ScanError("scan: no probe positions; give at least one position")
        if pos.ndim != 2 or pos.shape[1] != 2:
            raise ScanError(f"scan.positions_angstrom: got shape {pos.shape}; need (N, 2) pairs of x, y [Å]")
        if not np.all(np.isfinite(pos)):
            raise ScanError("scan.positions_angstrom: contains NaN or infinite values")
        self.positions_angstrom = pos
        self.shape = tuple(shape) if shape is not None else (len(pos),)
        if int(np.prod(self.shape)) != len(pos):
            raise ScanError(f"scan.shape: got {self.shape} for {len(pos)} positions")

    def __len__(self) -> int:
        return len(self.positions_angstrom)

    def validate(self, extent_angstrom) -> None:
        """Raise ``ScanError`` if a position lies outside the cell [0, extent]."""
        ext = np.asarray(extent_angstrom, dtype=np.float64)
        bad = np.any((self.positions_angstrom < -1e-9) | (self.positions_angstrom > ext[None] + 1e-9), axis=1)
        if np.any(bad):
            p = self.positions_angstrom[np.argmax(bad)].tolist()
            raise ScanError(f"scan: probe position {p} Å lies outside the cell [0, {ext[0]:.3f}] x [0, {ext[1]:.3f}] Å")


def grid_scan(start_angstrom, end_angstrom, gpts, endpoint: bool = False) -> Scan:
    """Raster of gpts[0] x gpts[1] positions from `start` towards `end` [Å]."""
    gpts = (int(gpts), int(gpts)) if np.isscalar(gpts) else tuple(int(g) for g in gpts)
    if min(gpts) < 1:
        raise field_error("scan.gpts", gpts, "need at least one position per axis")
    axes = [np.linspace(s, e, n, endpoint=endpoint) for s, e, n in zip(start_angstrom, end_angstrom, gpts)]
    xx, yy = np.meshgrid(axes[0], axes[1], indexing="ij")
    return Scan(np.stack([xx.ravel(), yy.ravel()], axis=1), gpts)


def line_scan(start_angstrom, end_angstrom, num_points: int, endpoint: bool = True) -> Scan:
    """`num_points` positions on the segment from `start` to `end` [Å]."""
    if int(num_points) < 1:
        raise field_error("scan.num_points", num_points, "need at least one position")
    t = np.linspace(0.0, 1.0, int(num_points), endpoint=endpoint)[:, None]
    start, end = np.asarray(start_angstrom, float), np.asarray(end_angstrom, float)
    return Scan(start[None] + t * (end - start)[None], (int(num_points),))
