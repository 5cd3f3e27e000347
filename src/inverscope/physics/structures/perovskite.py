"""Cubic ABO3 perovskites viewed along [001] (SrTiO3, BaTiO3, LaAlO3 pseudo-cubic).

Atomic planes are placed a quarter lattice constant off z = 0 so that with slices
of half a lattice constant no atom sits exactly on a slice boundary, where the
slice it belongs to would depend on rounding.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from inverscope.core.errors import StructureError, field_error

#: Lattice constants [Å] at room temperature.
LATTICE_ANGSTROM = {"SrTiO3": 3.905, "BaTiO3": 4.00, "LaAlO3": 3.79, "KNbO3": 4.02}


def perovskite_cell(a_site: str = "Sr", b_site: str = "Ti", a_angstrom: float = 3.905, z_offset_fraction: float = 0.25) -> Atoms:
    """One cubic ABO3 unit cell: A at the corner, B at the body centre, O at face centres."""
    if not (a_angstrom > 0):
        raise field_error("a_angstrom", a_angstrom, "must be > 0 [Å]")
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], dtype=float)
    frac[:, 2] = (frac[:, 2] + z_offset_fraction) % 1.0
    try:
        return Atoms([a_site, b_site, "O", "O", "O"], scaled_positions=frac, cell=[a_angstrom] * 3, pbc=True)
    except KeyError as err:
        raise StructureError(f"perovskite: unknown element {err.args[0]!r}") from None


def perovskite_slab(compound: str = "SrTiO3", repeat_xy: int | tuple[int, int] = 3, thickness_angstrom: float = 100.0) -> Atoms:
    """A [001] slab `repeat_xy` cells wide, as many cells deep as come nearest `thickness_angstrom`.

    Parameters
    ----------
    compound : {'SrTiO3', 'BaTiO3', 'LaAlO3', 'KNbO3'}
        The cubic (pseudo-cubic) perovskite; lattice constants [Å] are ``LATTICE_ANGSTROM``
        (3.905, 4.00, 3.79, 4.02).
    repeat_xy : int or (int, int)
        Unit cells along x and y (one number: the same along both).
    thickness_angstrom : float
        Target thickness along the beam (z) [Å]; rounded to a whole number of cells (at least one).

    Returns
    -------
    ase.Atoms
        Orthogonal periodic cell ``(repeat_x a, repeat_y a, n_z a)`` [Å]; the A-site column at
        the cell corner, atomic planes a quarter lattice constant off z = 0.

    Examples
    --------
    >>> import inverscope as isc
    >>> atoms = isc.perovskite_slab("SrTiO3", repeat_xy=3, thickness_angstrom=20.0)   # 5 cells deep
    >>> len(atoms), atoms.get_chemical_formula()
    (225, 'O135Sr45Ti45')
    >>> atoms.cell.lengths().round(3).tolist()   # [Å]
    [11.715, 11.715, 19.525]
    """
    if compound not in LATTICE_ANGSTROM:
        raise field_error("compound", compound, f"allowed: {', '.join(LATTICE_ANGSTROM)}")
    if not (thickness_angstrom > 0):
        raise field_error("thickness_angstrom", thickness_angstrom, "must be > 0 [Å]")
    rx, ry = (repeat_xy, repeat_xy) if np.isscalar(repeat_xy) else repeat_xy
    if min(rx, ry) < 1:
        raise field_error("repeat_xy", repeat_xy, "must be >= 1")
    a = LATTICE_ANGSTROM[compound]
    symbols = [s for s in ("Sr", "Ba", "La", "K") if compound.startswith(s)][0]
    b = compound[len(symbols):-2]
    nz = max(1, int(round(thickness_angstrom / a)))
    return perovskite_cell(symbols, b, a).repeat((int(rx), int(ry), nz))
