"""LaAlO3/SrTiO3 (001) interface cross-sections viewed along [100] (Oxley et al. 2020).

Axes of the returned cell (the multislice convention, beam along z):

* x: along the interface, crystal [010], ``width_cells`` unit cells;
* y: across the interface, crystal [001] (growth direction);
* z: along the beam, crystal [100], ``depth_cells`` unit cells.

Stacking along y, from y = 0: ``n_sto`` SrTiO3 cells (SrO then TiO2 planes, so the
substrate is TiO2-terminated), then ``n_lao`` LaAlO3 cells (LaO then AlO2, so the film
ends in AlO2). The SrO cap on the last AlO2 is the periodic image of the substrate's
first SrO plane (the cell is exactly ``n_sto + n_lao`` cells high), which avoids stacking
two SrO planes 1.95 Å apart. All cells use the SrTiO3 lattice constant (a film coherently
strained to the substrate, as in the paper's structures).

Families (the interface layer is the first LaAlO3 cell, planes LaO and AlO2):

* ``rough``: a buried step; beyond depth ``step_fraction * thickness`` along the beam the
  interface sits one cell higher, i.e. the first LaAlO3 cell is SrTiO3 there;
* ``intermixed`` (paper mode): a flat interface with a fraction ``p`` of the Al in the first
  AlO2 plane replaced by Ti at random sites;
* ``matched``: intermixed with the projected composition of a step: in every atomic column
  of the interface cell, the same number of La->Sr and Al->Ti swaps as a step of depth
  ``step_fraction`` gives, placed at random depths. Only the depth distribution differs
  from ``rough``.

Atom planes along the beam sit a quarter cell off the slice boundaries (slices of half a
cell then never cut through an atom).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from inverscope.core.errors import field_error

A_STO_ANGSTROM = 3.905
FAMILIES = ("rough", "intermixed", "matched")

# Fractional positions in one cubic ABO3 cell, as (beam X, along-interface Y, growth Z).
_AO_PLANE = (("A", (0.0, 0.0, 0.0)), ("O", (0.5, 0.5, 0.0)))
_BO2_PLANE = (("B", (0.5, 0.5, 0.5)), ("O", (0.5, 0.0, 0.5)), ("O", (0.0, 0.5, 0.5)))


def _check(name: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise field_error(name, value, allowed)


def interface_cell(n_sto: int = 3, n_lao: int = 3, width_cells: int = 2, depth_cells: int = 26,
                   a_angstrom: float = A_STO_ANGSTROM) -> tuple[list[str], np.ndarray, np.ndarray, dict]:
    """Ideal abrupt interface: symbols, positions [Å], site tags, and the cell geometry.

    Tags mark the interface cell's sites: 1 = A site of the first LaO plane,
    2 = B site of the first AlO2 plane, 0 = every other atom.
    """
    _check("n_sto", n_sto, isinstance(n_sto, int) and n_sto >= 1, "must be an integer >= 1")
    _check("n_lao", n_lao, isinstance(n_lao, int) and n_lao >= 1, "must be an integer >= 1")
    _check("width_cells", width_cells, isinstance(width_cells, int) and width_cells >= 1, "must be an integer >= 1")
    _check("depth_cells", depth_cells, isinstance(depth_cells, int) and depth_cells >= 2, "must be an integer >= 2")
    symbols, frac, tags = [], [], []
    for layer in range(n_sto + n_lao):
        film = layer >= n_sto
        species = {"A": "La" if film else "Sr", "B": "Al" if film else "Ti", "O": "O"}
        for plane in (_AO_PLANE, _BO2_PLANE):
            for site, (fx, fy, fz) in plane:
                tag = 0
                if layer == n_sto and site != "O":
                    tag = 1 if site == "A" else 2
                for i in range(depth_cells):
                    for j in range(width_cells):
                        symbols.append(species[site])
                        frac.append((fy + j, layer + fz, fx + i + 0.25))
                        tags.append(tag)
    pos = np.asarray(frac) * a_angstrom
    cell = np.array([width_cells, n_sto + n_lao, depth_cells], dtype=float) * a_angstrom
    return symbols, pos, np.asarray(tags), {"cell_angstrom": cell.tolist(), "a_angstrom": a_angstrom}


def _depth_index(pos_z: np.ndarray, a: float) -> np.ndarray:
    return np.floor(pos_z / a).astype(int)


def lao_sto_interface(family: str, step_fraction: float = 0.5, intermix_fraction: float = 0.0,
                      seed: int | np.random.Generator | None = 0, n_sto: int = 3, n_lao: int = 3,
                      width_cells: int = 2, depth_cells: int = 26,
                      a_angstrom: float = A_STO_ANGSTROM) -> tuple[Atoms, dict]:
    """Build one interface structure of `family` and return it with its parameters.

    Parameters
    ----------
    family : {'rough', 'intermixed', 'matched'}
    step_fraction : float
        Depth of the buried step as a fraction of the thickness (rough, matched); rounded to
        the nearest whole cell, between 1 and ``depth_cells - 1`` cells.
    intermix_fraction : float
        Fraction of interface Al replaced by Ti (intermixed), 0 to 0.5.
    seed : int or Generator
        Chooses the swapped sites (intermixed, matched).

    Returns
    -------
    atoms : ase.Atoms
    params : dict
        The realized parameters (``step_cells``, ``step_fraction``, counts of swapped atoms).
    """
    _check("family", family, family in FAMILIES, f"allowed: {', '.join(FAMILIES)}")
    _check("intermix_fraction", intermix_fraction, 0.0 <= intermix_fraction <= 0.5, "must be in [0, 0.5]")
    _check("step_fraction", step_fraction, 0.0 < step_fraction < 1.0, "must be in (0, 1)")
    symbols, pos, tags, geo = interface_cell(n_sto, n_lao, width_cells, depth_cells, a_angstrom)
    symbols = np.array(symbols, dtype=object)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    depth = _depth_index(pos[:, 2], a_angstrom)
    params: dict = {"family": family, "depth_cells": depth_cells, "thickness_angstrom": depth_cells * a_angstrom}
    step = int(np.clip(round(step_fraction * depth_cells), 1, depth_cells - 1))
    if family == "rough":
        beyond = depth >= step
        symbols[(tags == 1) & beyond] = "Sr"
        symbols[(tags == 2) & beyond] = "Ti"
        params.update(step_cells=step, step_fraction=step / depth_cells, intermix_fraction=0.0)
    elif family == "intermixed":
        sites = np.flatnonzero(tags == 2)
        k = int(round(intermix_fraction * sites.size))
        symbols[rng.choice(sites, size=k, replace=False)] = "Ti"
        params.update(step_cells=None, step_fraction=None, intermix_fraction=k / sites.size)
    else:
        swaps = depth_cells - step
        for tag, new in ((1, "Sr"), (2, "Ti")):
            for x in np.unique(np.round(pos[tags == tag, 0], 6)):
                column = np.flatnonzero((tags == tag) & (np.abs(pos[:, 0] - x) < 1e-6))
                symbols[rng.choice(column, size=swaps, replace=False)] = new
        params.update(step_cells=step, step_fraction=step / depth_cells,
                      intermix_fraction=swaps / depth_cells)
    atoms = Atoms(list(symbols), positions=pos, cell=geo["cell_angstrom"], pbc=True)
    atoms.set_tags(tags)
    params.update(n_sto=n_sto, n_lao=n_lao, width_cells=width_cells, a_angstrom=a_angstrom,
                  interface_y_angstrom=n_sto * a_angstrom)
    return atoms, params


def column_composition(atoms: Atoms) -> dict[str, float]:
    """Fractions of Sr on the interface A sites and Ti on the interface B sites (tags 1, 2)."""
    tags, sym = atoms.get_tags(), np.array(atoms.get_chemical_symbols())
    return {"A_Sr": float(np.mean(sym[tags == 1] == "Sr")), "B_Ti": float(np.mean(sym[tags == 2] == "Ti"))}
