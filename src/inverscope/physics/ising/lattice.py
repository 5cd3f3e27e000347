"""Periodic hypercubic lattices (2D square, 3D simple cubic) as neighbour and bond tables."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from inverscope.core.errors import InverscopeError


@dataclass(frozen=True)
class Lattice:
    """Nearest-neighbour tables of a periodic lattice.

    Attributes
    ----------
    shape : tuple of int
        Sites per axis (2 or 3 axes).
    neighbours : ndarray
        (sites, 2 * dims) int64: flat index of each neighbour (+x, -x, +y, -y[, +z, -z]).
    bonds : ndarray
        (sites, 2 * dims) int64: index of the bond to each neighbour in a (dims * sites,) bond
        array; bond ``a * sites + i`` joins site ``i`` to its + neighbour along axis ``a``, so each
        bond appears twice in the table (once from each end) and J_ij = J_ji.
    """

    shape: tuple[int, ...]
    neighbours: np.ndarray
    bonds: np.ndarray

    @property
    def sites(self) -> int:
        return int(np.prod(self.shape))

    @property
    def n_bonds(self) -> int:
        return len(self.shape) * self.sites

    @property
    def coordination(self) -> int:
        return 2 * len(self.shape)


def check_shape(shape) -> tuple[int, ...]:
    """Validated lattice shape: 2 or 3 axes, each at least 2 sites (one-line error otherwise)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise InverscopeError(f"lattice: got {len(shape)} axes {list(shape)}; allowed: 2 (square) or 3 (cubic)")
    for s in shape:
        if s < 2:
            raise InverscopeError(f"lattice: got size {s} in {list(shape)}; every axis needs at least 2 sites")
    return shape


@lru_cache(maxsize=16)
def lattice(shape: tuple[int, ...]) -> Lattice:
    """The periodic lattice of `shape` (cached; tables are read-only)."""
    shape = check_shape(shape)
    n = int(np.prod(shape))
    idx = np.arange(n).reshape(shape)
    nbr, bond = [], []
    for axis in range(len(shape)):
        plus = np.roll(idx, -1, axis=axis).ravel()
        minus = np.roll(idx, 1, axis=axis).ravel()
        nbr += [plus, minus]
        bond += [axis * n + idx.ravel(), axis * n + minus]   # the bond to the - neighbour is that neighbour's + bond
    neighbours = np.ascontiguousarray(np.stack(nbr, axis=1))
    bonds = np.ascontiguousarray(np.stack(bond, axis=1))
    neighbours.setflags(write=False)
    bonds.setflags(write=False)
    return Lattice(shape, neighbours, bonds)
