"""Frozen phonons: seeded Einstein-model displacements.

Every atom is displaced independently along x, y and z by a normal deviate whose
standard deviation is the element's RMS displacement per axis [Å] (the Einstein
model; for a Debye-Waller factor B, sigma = sqrt(B / (8 pi^2))).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from inverscope.core.errors import field_error


class FrozenPhonons:
    """N seeded configurations of thermally displaced atoms.

    Parameters
    ----------
    sigmas_angstrom : float or dict
        RMS displacement per axis [Å], one value for all atoms or one per element symbol.
    num_configs : int
        Number of configurations whose intensities are averaged.
    seed : int
        Seed of the displacements; configuration i uses the i-th spawned child stream.

    Examples
    --------
    Room-temperature RMS displacements of SrTiO3 [Å], four configurations:

    >>> import inverscope as isc
    >>> atoms = isc.perovskite_slab("SrTiO3", 1, 3.905)   # 5 atoms
    >>> phonons = isc.FrozenPhonons({"Sr": 0.088, "Ti": 0.073, "O": 0.084}, num_configs=4, seed=0)
    >>> positions = phonons.positions(atoms)   # one (N, 3) array [Å] per configuration
    >>> len(positions), positions[0].shape
    (4, (5, 3))

    Pass it as ``phonons=`` to ``MultisliceSimulation``, ``PRISMSimulation``, ``stem_image``
    or ``pacbed``; the intensities are averaged over the configurations.
    """

    def __init__(self, sigmas_angstrom: float | dict[str, float], num_configs: int = 8, seed: int = 0):
        if int(num_configs) < 1:
            raise field_error("num_configs", num_configs, "must be >= 1")
        values = sigmas_angstrom.values() if isinstance(sigmas_angstrom, dict) else [sigmas_angstrom]
        if any(not (float(v) >= 0) for v in values):
            raise field_error("sigmas_angstrom", sigmas_angstrom, "RMS displacements must be >= 0 [Å]")
        self.sigmas_angstrom = sigmas_angstrom
        self.num_configs = int(num_configs)
        self.seed = int(seed)

    def sigma_per_atom(self, atoms: Atoms) -> np.ndarray:
        if not isinstance(self.sigmas_angstrom, dict):
            return np.full(len(atoms), float(self.sigmas_angstrom))
        symbols = atoms.get_chemical_symbols()
        missing = sorted(set(symbols) - set(self.sigmas_angstrom))
        if missing:
            raise field_error("sigmas_angstrom", self.sigmas_angstrom, f"give a value for every element; missing {missing}")
        return np.array([float(self.sigmas_angstrom[s]) for s in symbols])

    def positions(self, atoms: Atoms) -> list[np.ndarray]:
        """Displaced positions (N, 3) [Å] of every configuration."""
        sigma = self.sigma_per_atom(atoms)[:, None]
        streams = np.random.SeedSequence(self.seed).spawn(self.num_configs)
        return [atoms.positions + np.random.default_rng(s).normal(size=(len(atoms), 3)) * sigma for s in streams]

    def configurations(self, atoms: Atoms) -> list[Atoms]:
        """Displaced copies of `atoms`, one per configuration."""
        out = []
        for pos in self.positions(atoms):
            a = atoms.copy()
            a.positions = pos
            out.append(a)
        return out
