"""A plain numpy reference for the zero-temperature dynamics: checkerboard sweeps over all realizations.

At each field step it flips every unstable spin of one sublattice at once (they share no bond),
alternating sublattices until no spin is unstable. With ferromagnetic bonds (all J_ij > 0) the
state an avalanche ends in does not depend on the order of the flips, so this must agree exactly
with the stack kernel of :mod:`.dynamics`; with bonds of both signs the order matters and only
the statistics agree. It is also the speed anchor of ``benchmarks/ising_loops.py``: every field
step waits for the slowest realization's avalanche.
"""

from __future__ import annotations

import numpy as np

from inverscope.core.errors import InverscopeError
from inverscope.physics.ising.lattice import lattice


def reference_loops(shape, j0: float, dj: float, dh: float, fields: np.ndarray, z_bonds: np.ndarray,
                    z_fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean spin of the up and down sweeps, averaged over the realizations in `z_bonds`/`z_fields`.

    Parameters
    ----------
    shape : tuple of int
        Lattice shape; every size must be even (bipartite with periodic boundaries).
    fields : (steps,) increasing external fields of the up sweep.
    z_bonds, z_fields : (realizations, n_bonds) and (realizations, sites) standard normal draws.
    """
    lat = lattice(tuple(shape))
    if any(s % 2 for s in lat.shape):
        raise InverscopeError(f"reference_loops: lattice {list(lat.shape)} needs even sizes for the checkerboard")
    coords = np.indices(lat.shape).reshape(len(lat.shape), -1).sum(axis=0)
    colours = [coords % 2 == 0, coords % 2 == 1]
    couplings = (j0 + dj * z_bonds)[:, lat.bonds]               # (reals, sites, z)
    h = dh * z_fields
    spins = -np.ones_like(h)

    def relax(field):
        while True:
            flipped = False
            for colour in colours:
                local = np.einsum("rsk,rsk->rs", couplings, spins[:, lat.neighbours]) + h + field
                unstable = (spins * local < 0) & colour
                if unstable.any():
                    spins[unstable] *= -1
                    flipped = True
            if not flipped:
                return

    up, down = np.empty(len(fields)), np.empty(len(fields))
    for k, f in enumerate(fields):
        relax(f)
        up[k] = spins.mean()
    for k in range(len(fields) - 1, -1, -1):
        relax(fields[k])
        down[k] = spins.mean()
    return up, down
