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
    shape : tuple of int, optional
        Shape of the scan axes of the result, prod(shape) == N; default ``(N,)``.

    Attributes
    ----------
    positions_angstrom : np.ndarray
        (N, 2) probe positions (x, y) [Å], float64.
    shape : tuple of int
        Shape of the scan axes of the result.

    Raises
    ------
    ScanError
        No positions, not (N, 2), NaN or infinite values, or a shape that does not hold N.

    Examples
    --------
    Four explicit positions reported as a 2 x 2 map:

    >>> import inverscope as isc
    >>> scan = isc.Scan([[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 2.0]], shape=(2, 2))
    >>> len(scan), scan.shape, scan.positions_angstrom.shape
    (4, (2, 2), (4, 2))
    >>> scan.validate((3.905, 3.905))   # inside the cell: no error
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
    """Raster of gpts[0] x gpts[1] positions from `start` towards `end` [Å].

    Parameters
    ----------
    start_angstrom : (float, float)
        First position (x, y) [Å].
    end_angstrom : (float, float)
        Corner the raster runs towards (x, y) [Å]; reached only with ``endpoint=True``.
    gpts : int or (int, int)
        Positions along x and y (one number: the same along both).
    endpoint : bool
        Include `end_angstrom`. The default False spaces the positions by
        ``(end - start) / gpts``, so a raster over one periodic cell counts no position twice.

    Returns
    -------
    Scan
        ``gpts[0] * gpts[1]`` positions [Å] with ``shape == (gpts[0], gpts[1])``; x varies along
        the first axis (position ``i * gpts[1] + j`` is the i-th x and the j-th y).

    Examples
    --------
    >>> import inverscope as isc
    >>> scan = isc.grid_scan((0.0, 0.0), (3.905, 3.905), (4, 3))   # one SrTiO3 cell
    >>> scan.shape, scan.positions_angstrom.shape
    ((4, 3), (12, 2))
    >>> scan.positions_angstrom[:4].round(4).tolist()
    [[0.0, 0.0], [0.0, 1.3017], [0.0, 2.6033], [0.9762, 0.0]]
    """
    gpts = (int(gpts), int(gpts)) if np.isscalar(gpts) else tuple(int(g) for g in gpts)
    if min(gpts) < 1:
        raise field_error("scan.gpts", gpts, "need at least one position per axis")
    axes = [np.linspace(s, e, n, endpoint=endpoint) for s, e, n in zip(start_angstrom, end_angstrom, gpts)]
    xx, yy = np.meshgrid(axes[0], axes[1], indexing="ij")
    return Scan(np.stack([xx.ravel(), yy.ravel()], axis=1), gpts)


def line_scan(start_angstrom, end_angstrom, num_points: int, endpoint: bool = True) -> Scan:
    """`num_points` positions on the segment from `start` to `end` [Å].

    Parameters
    ----------
    start_angstrom : (float, float)
        First position (x, y) [Å].
    end_angstrom : (float, float)
        End of the segment (x, y) [Å].
    num_points : int
        Number of positions (>= 1).
    endpoint : bool
        Include `end_angstrom` (default True); False spaces the positions by
        ``(end - start) / num_points``.

    Returns
    -------
    Scan
        `num_points` equally spaced positions [Å] with ``shape == (num_points,)``.

    Examples
    --------
    >>> import inverscope as isc
    >>> scan = isc.line_scan((0.0, 1.0), (3.905, 1.0), 5)
    >>> scan.shape
    (5,)
    >>> scan.positions_angstrom[:, 0].round(4).tolist()   # x [Å]
    [0.0, 0.9762, 1.9525, 2.9288, 3.905]
    """
    if int(num_points) < 1:
        raise field_error("scan.num_points", num_points, "need at least one position")
    t = np.linspace(0.0, 1.0, int(num_points), endpoint=endpoint)[:, None]
    start, end = np.asarray(start_angstrom, float), np.asarray(end_angstrom, float)
    return Scan(start[None] + t * (end - start)[None], (int(num_points),))
