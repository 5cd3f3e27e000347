"""Seeded ASE structures for atom finding in atomically resolved (HAADF) STEM images.

Every builder returns an :class:`ase.Atoms` whose atoms carry an integer site class in
``atoms.arrays["site_class"]`` indexing the class names in ``atoms.info["site_classes"]``.
The scheme is *one class per projected column* (projection along z): all atoms of one
column carry the same class, named after what the column looks like in projection,
for example

* graphene: ``["C", "Si"]`` (every Si atom is its own column);
* MoS2 (2H): ``["Mo", "S2", "S1", "W"]``: metal column, the usual two-S column, a column
  left with a single S (one S vacancy) and the substituted metal (W on a Mo site; for WS2
  the roles swap: ``["W", "S2", "S1", "Mo"]``);
* perovskite [001]: ``["Sr", "Ti", "O"]`` (A, B, O columns); [110]: ``["SrO", "Ti", "O"]``
  (mixed A-O, pure B and pure O columns);
* heavy atoms on amorphous carbon: ``["C_support", "Pt"]``; the support class is listed in
  ``atoms.info["ignore_classes"]`` (not a target of atom finding).

Empty columns (vacancies) are recorded in ``atoms.info["vacancies"]``: a list of dicts
``{"x", "y" [Å], "site_class": name of the vacated column class, "label": "V_<class>"}`` so
that truth tables can include them as defect sites. ``atoms.info["params"]`` records every
option used (rotation, strain, seed ...).

Geometry: a lattice is built over a square larger than the requested ``extent``, rotated in
plane about the extent centre by ``rotation_deg``, strained by the uniform strain
``[[1 + exx, exy], [exy, 1 + eyy]]`` and cut to ``0 <= x < extent[0], 0 <= y < extent[1]``
[Å]; then defects are placed (inside, away from the edges) and finally every atom is shifted
by Gaussian thermal jitter ``jitter_angstrom`` (standard deviation per axis [Å]). The cell is
``extent x (thickness + vacuum)`` without periodicity: the cut is not periodic.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from inverscope.core.errors import StructureError, field_error

#: Graphene C-C bond length [Å].
GRAPHENE_CC_ANGSTROM = 1.42
#: 2H TMD monolayers: lattice constant a [Å] and chalcogen height above/below the metal plane [Å].
TMD_PARAMETERS = {"MoS2": (3.16, 1.585), "WS2": (3.18, 1.57), "MoSe2": (3.29, 1.67), "WSe2": (3.28, 1.68)}
#: Cubic perovskite lattice constants [Å].
PEROVSKITE_LATTICE_ANGSTROM = {"SrTiO3": 3.905, "BaTiO3": 4.00, "LaAlO3": 3.79, "KNbO3": 4.02}
#: Kinds of Si defect in graphene and the number of Si atoms each holds.
SI_DEFECT_ATOMS = {"Si1C3": 1, "Si1C4": 1, "Si2": 2, "Si3": 3}


# --------------------------------------------------------------------------- helpers

def as_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A ``numpy.random.Generator`` from an int seed (or the generator itself)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _extent(extent) -> tuple[float, float]:
    ex = (float(extent), float(extent)) if np.isscalar(extent) else tuple(float(e) for e in extent)
    if len(ex) != 2 or not all(e > 0 and math.isfinite(e) for e in ex):
        raise field_error("extent", extent, "two positive sizes [Å]")
    return ex


def _strain_matrix(strain) -> np.ndarray:
    if np.isscalar(strain):
        e = (float(strain), float(strain), 0.0)
    else:
        e = tuple(float(s) for s in strain)
        if len(e) != 3:
            raise field_error("strain", strain, "a number (isotropic) or (exx, eyy, exy)")
    if max(abs(v) for v in e) > 0.1:
        raise field_error("strain", strain, "components must lie within +-0.1 (uniform strain of a few %)")
    return np.array([[1 + e[0], e[2]], [e[2], 1 + e[1]]])


def _rotation(rotation_deg, rng: np.random.Generator) -> float:
    if isinstance(rotation_deg, str):
        if rotation_deg != "random":
            raise field_error("rotation_deg", rotation_deg, "a number [deg] or 'random'")
        return float(rng.uniform(0.0, 360.0))
    if not math.isfinite(float(rotation_deg)):
        raise field_error("rotation_deg", rotation_deg, "a finite number [deg] or 'random'")
    return float(rotation_deg)


def _tile(cell_xy: tuple[float, float], basis: Sequence[tuple], half_size: float, centre):
    """Tile a rectangular cell with `basis` entries (x, y, z, symbol, class, column_key) over a square.

    Returns positions (N, 3), symbols, classes (N,) and column ids (N,) (atoms sharing a
    column key in one cell share the id).
    """
    lx, ly = cell_xy
    nx = int(math.ceil(half_size / lx)) + 1
    ny = int(math.ceil(half_size / ly)) + 1
    ix, iy = np.meshgrid(np.arange(-nx, nx + 1), np.arange(-ny, ny + 1), indexing="ij")
    origins = np.stack([ix.ravel() * lx, iy.ravel() * ly], axis=1)
    keys = sorted({b[5] for b in basis})
    key_index = {k: i for i, k in enumerate(keys)}
    pos, sym, cls, col = [], [], [], []
    for x, y, z, s, c, k in basis:
        p = np.empty((len(origins), 3))
        p[:, 0] = origins[:, 0] + x + centre[0]
        p[:, 1] = origins[:, 1] + y + centre[1]
        p[:, 2] = z
        pos.append(p)
        sym += [s] * len(origins)
        cls.append(np.full(len(origins), c))
        col.append(np.arange(len(origins)) * len(keys) + key_index[k])
    return np.concatenate(pos), np.array(sym), np.concatenate(cls), np.concatenate(col)


def _transform_crop(pos, arrays: dict, ext, rotation_deg: float, strain_m: np.ndarray):
    """Rotate about the extent centre, strain, and keep atoms inside the extent."""
    c = np.array([ext[0] / 2, ext[1] / 2])
    t = math.radians(rotation_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    xy = (pos[:, :2] - c) @ (strain_m @ rot).T + c
    keep = (xy[:, 0] >= 0) & (xy[:, 0] < ext[0]) & (xy[:, 1] >= 0) & (xy[:, 1] < ext[1])
    out = np.column_stack([xy[keep], pos[keep, 2]])
    return out, {k: v[keep] for k, v in arrays.items()}


def _pick_sites(rng, candidates: np.ndarray, xy: np.ndarray, k: int, min_separation: float,
                taken: list, what: str) -> list[int]:
    """Pick `k` random candidate indices at least `min_separation` [Å] from each other and `taken`."""
    chosen = []
    for i in rng.permutation(candidates):
        if len(chosen) == k:
            break
        if taken and np.min(np.hypot(*(np.asarray(taken) - xy[i]).T)) < min_separation:
            continue
        chosen.append(int(i))
        taken.append(xy[i].copy())
    if len(chosen) < k:
        raise StructureError(f"{what}: only {len(chosen)} of {k} defects fit {min_separation} Å apart; "
                             "use a larger extent or fewer defects")
    return chosen


def _finish(pos, symbols, classes, class_names, ext, thickness, rng, jitter, info: dict,
            column_id=None, ignore_classes=()) -> Atoms:
    if jitter < 0 or not math.isfinite(jitter):
        raise field_error("jitter_angstrom", jitter, "must be >= 0 [Å]")
    pos = pos.copy()
    if jitter > 0:
        pos += rng.normal(0.0, jitter, pos.shape)
    vac = 10.0
    pos[:, 2] += vac / 2 - (pos[:, 2].min() if len(pos) else 0.0)
    atoms = Atoms(list(symbols), positions=pos, cell=[ext[0], ext[1], thickness + vac], pbc=False)
    atoms.arrays["site_class"] = np.asarray(classes, dtype=np.int64)
    if column_id is not None:
        atoms.arrays["column_id"] = np.asarray(column_id, dtype=np.int64)
    atoms.info["site_classes"] = list(class_names)
    atoms.info["ignore_classes"] = list(ignore_classes)
    atoms.info.setdefault("vacancies", [])
    atoms.info.update(info)
    return atoms


def _check_count(name, value):
    if int(value) != value or value < 0:
        raise field_error(name, value, "must be a whole number >= 0")
    return int(value)


# --------------------------------------------------------------------------- graphene

def _graphene_lattice(half_size, centre, angle_deg=0.0):
    d = GRAPHENE_CC_ANGSTROM
    h = math.sqrt(3) / 2 * d
    basis = [(0, 0, 0, "C", 0, 0), (d, 0, 0, "C", 0, 1), (1.5 * d, h, 0, "C", 0, 2), (2.5 * d, h, 0, "C", 0, 3)]
    pos, sym, cls, _ = _tile((3 * d, 2 * h), basis, half_size, (0.0, 0.0))
    t = math.radians(angle_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    pos[:, :2] = pos[:, :2] @ rot.T + np.asarray(centre)
    return pos, sym, cls


def graphene(extent=(40.0, 40.0), si_defects: dict | None = None, n_vacancies: int = 0,
             grain_boundary_deg: float | None = None, rotation_deg: float | str = 0.0, strain=0.0,
             jitter_angstrom: float = 0.0, defect_separation_angstrom: float = 5.0,
             seed: int | np.random.Generator | None = None) -> Atoms:
    """Graphene with Si dopants, single vacancies and optionally a grain boundary.

    Parameters
    ----------
    extent : float or (float, float)
        Size of the field along x and y [Å].
    si_defects : dict
        Number of each Si defect: ``Si1C3`` (Si substituting one C: three-fold), ``Si1C4``
        (Si at the centre of a divacancy: four-fold; the two C are removed, no relaxation),
        ``Si2`` (two neighbouring C replaced) and ``Si3`` (a bent chain of three). The Si atom
        count is ``Si1C3 + Si1C4 + 2 Si2 + 3 Si3``.
    n_vacancies : int
        Single C vacancies (recorded in ``info["vacancies"]`` with label ``V_C``).
    grain_boundary_deg : float or None
        Misorientation [deg] of a crude tilt boundary along the line ``x = extent[0] / 2`` (before
        the global rotation): the left grain is turned by +angle/2, the right by -angle/2 and right-
        grain atoms closer than 1.1 Å to a left-grain atom are dropped. No 5-7 ring
        reconstruction, no relaxation: the boundary has gaps and odd rings.
    rotation_deg : float or "random"
        In-plane rotation [deg] ("random": uniform in [0, 360)).
    strain : float or (exx, eyy, exy)
        Uniform in-plane strain (fractions, within +-0.1).
    jitter_angstrom : float
        Thermal displacement (Gaussian standard deviation per axis) [Å].
    defect_separation_angstrom : float
        Minimum distance between defect centres [Å].
    seed : int or numpy.random.Generator

    Returns
    -------
    ase.Atoms with site classes ``["C", "Si"]``.
    """
    rng = as_generator(seed)
    ext = _extent(extent)
    si_defects = dict(si_defects or {})
    for k, v in si_defects.items():
        if k not in SI_DEFECT_ATOMS:
            raise field_error(f"si_defects.{k}", v, f"allowed kinds: {', '.join(SI_DEFECT_ATOMS)}")
        si_defects[k] = _check_count(f"si_defects.{k}", v)
    n_vacancies = _check_count("n_vacancies", n_vacancies)
    rot = _rotation(rotation_deg, rng)
    sm = _strain_matrix(strain)
    half = 0.5 * math.hypot(*ext) * 1.15 + 5.0
    centre = (ext[0] / 2, ext[1] / 2)
    if grain_boundary_deg is None or grain_boundary_deg == 0:
        pos, sym, cls = _graphene_lattice(half, centre)
    else:
        g = float(grain_boundary_deg)
        if not (0 < abs(g) < 60):
            raise field_error("grain_boundary_deg", grain_boundary_deg, "must lie within (-60, 60) [deg], not 0")
        pa, sa, ca = _graphene_lattice(half, centre, +g / 2)
        pb, sb, cb = _graphene_lattice(half, centre, -g / 2)
        ka = pa[:, 0] < centre[0]
        kb = pb[:, 0] >= centre[0]
        pa, sa, ca = pa[ka], sa[ka], ca[ka]
        pb, sb, cb = pb[kb], sb[kb], cb[kb]
        near = cKDTree(pa[:, :2]).query(pb[:, :2], distance_upper_bound=1.1)[0] < 1.1
        pos = np.concatenate([pa, pb[~near]])
        sym = np.concatenate([sa, sb[~near]])
        cls = np.concatenate([ca, cb[~near]])
    pos, arr = _transform_crop(pos, {"sym": sym, "cls": cls}, ext, rot, sm)
    sym, cls = arr["sym"].astype(object), arr["cls"].copy()

    xy = pos[:, :2]
    tree = cKDTree(xy)
    neigh = tree.query_ball_point(xy, r=GRAPHENE_CC_ANGSTROM * 1.15)
    neigh = [[j for j in n if j != i] for i, n in enumerate(neigh)]
    margin = 2.5
    interior = np.flatnonzero((xy[:, 0] > margin) & (xy[:, 0] < ext[0] - margin)
                              & (xy[:, 1] > margin) & (xy[:, 1] < ext[1] - margin)
                              & np.array([len(n) == 3 for n in neigh]))
    taken: list = []
    remove: list[int] = []
    vacancies = []
    for kind in ("Si1C4", "Si3", "Si2", "Si1C3"):
        k = si_defects.get(kind, 0)
        if k == 0:
            continue
        for i in _pick_sites(rng, interior, xy, k, defect_separation_angstrom, taken, f"si_defects.{kind}"):
            nb = list(rng.permutation(neigh[i]))
            if kind == "Si1C3":
                members = [i]
            elif kind == "Si2":
                members = [i, nb[0]]
            elif kind == "Si3":
                members = [i, nb[0], nb[1]]
            else:  # Si1C4: Si at the centre of the divacancy (i, j)
                j = nb[0]
                pos[i, :2] = 0.5 * (pos[i, :2] + pos[j, :2])
                remove.append(j)
                members = [i]
            for m in members:
                sym[m] = "Si"
                cls[m] = 1
    if n_vacancies:
        for i in _pick_sites(rng, interior, xy, n_vacancies, defect_separation_angstrom, taken, "n_vacancies"):
            remove.append(i)
            vacancies.append({"x": float(xy[i, 0]), "y": float(xy[i, 1]), "site_class": "C", "label": "V_C"})
    keep = np.ones(len(pos), bool)
    keep[remove] = False
    params = {"structure": "graphene", "rotation_deg": rot, "strain": sm.tolist(), "jitter_angstrom": float(jitter_angstrom),
              "si_defects": si_defects, "n_vacancies": n_vacancies, "grain_boundary_deg": grain_boundary_deg,
              "extent": ext}
    return _finish(pos[keep], sym[keep], cls[keep], ["C", "Si"], ext, 0.0, rng, jitter_angstrom,
                   {"vacancies": vacancies, "params": params})


# --------------------------------------------------------------------------- TMD monolayers

def tmd_monolayer(compound: str = "MoS2", extent=(40.0, 40.0), n_metal_vacancies: int = 0,
                  n_chalcogen_vacancies: int = 0, n_chalcogen_divacancies: int = 0, n_antisites: int = 0,
                  rotation_deg: float | str = 0.0, strain=0.0, jitter_angstrom: float = 0.0,
                  defect_separation_angstrom: float = 4.0, seed: int | np.random.Generator | None = None) -> Atoms:
    """A 2H transition-metal dichalcogenide monolayer (MoS2, WS2, MoSe2, WSe2).

    Parameters
    ----------
    compound : str
        One of :data:`TMD_PARAMETERS`.
    extent : float or (float, float)
        Field size [Å].
    n_metal_vacancies : int
        Metal columns removed (recorded as vacancies, label ``V_<M>``).
    n_chalcogen_vacancies : int
        Chalcogen columns that lose one of their two atoms (they become class ``<X>1``).
    n_chalcogen_divacancies : int
        Chalcogen columns removed entirely (recorded as vacancies, label ``V_<X>2``).
    n_antisites : int
        Metal sites whose metal is swapped for the other metal (W on Mo in MoS2, Mo on W in
        WS2): class ``<M'>``.
    rotation_deg, strain, jitter_angstrom, seed
        As in :func:`graphene`.

    Returns
    -------
    ase.Atoms with site classes ``[M, X2, X1, M']``, e.g. ``["Mo", "S2", "S1", "W"]``.
    """
    if compound not in TMD_PARAMETERS:
        raise field_error("compound", compound, f"allowed: {', '.join(TMD_PARAMETERS)}")
    rng = as_generator(seed)
    ext = _extent(extent)
    counts = {n: _check_count(n, v) for n, v in (("n_metal_vacancies", n_metal_vacancies),
                                                  ("n_chalcogen_vacancies", n_chalcogen_vacancies),
                                                  ("n_chalcogen_divacancies", n_chalcogen_divacancies),
                                                  ("n_antisites", n_antisites))}
    a, dz = TMD_PARAMETERS[compound]
    metal = "Mo" if compound.startswith("Mo") else "W"
    other = "W" if metal == "Mo" else "Mo"
    chal = compound[len(metal):-1]
    names = tmd_class_names(compound)
    r3 = math.sqrt(3)
    basis = [(0, 0, 0, metal, 0, "m1"), (a / 2, r3 * a / 2, 0, metal, 0, "m2"),
             (a / 2, r3 * a / 6, dz, chal, 1, "x1"), (a / 2, r3 * a / 6, -dz, chal, 1, "x1"),
             (0, 2 * r3 * a / 3, dz, chal, 1, "x2"), (0, 2 * r3 * a / 3, -dz, chal, 1, "x2")]
    rot = _rotation(rotation_deg, rng)
    sm = _strain_matrix(strain)
    half = 0.5 * math.hypot(*ext) * 1.15 + 5.0
    pos, sym, cls, col = _tile((a, r3 * a), basis, half, (ext[0] / 2, ext[1] / 2))
    pos, arr = _transform_crop(pos, {"sym": sym, "cls": cls, "col": col}, ext, rot, sm)
    sym, cls, col = arr["sym"].astype(object), arr["cls"].copy(), arr["col"]
    xy = pos[:, :2]
    margin = 2.0
    inside = (xy[:, 0] > margin) & (xy[:, 0] < ext[0] - margin) & (xy[:, 1] > margin) & (xy[:, 1] < ext[1] - margin)
    metals = np.flatnonzero(inside & (cls == 0))
    upper = np.flatnonzero(inside & (cls == 1) & (pos[:, 2] > 0))  # one index per chalcogen column
    taken: list = []
    remove: list[int] = []
    vacancies = []
    for i in _pick_sites(rng, metals, xy, counts["n_metal_vacancies"], defect_separation_angstrom, taken, "n_metal_vacancies"):
        remove.append(i)
        vacancies.append({"x": float(xy[i, 0]), "y": float(xy[i, 1]), "site_class": names[0], "label": f"V_{names[0]}"})
    for i in _pick_sites(rng, metals, xy, counts["n_antisites"], defect_separation_angstrom, taken, "n_antisites"):
        sym[i] = other
        cls[i] = 3
    for i in _pick_sites(rng, upper, xy, counts["n_chalcogen_divacancies"], defect_separation_angstrom, taken,
                         "n_chalcogen_divacancies"):
        both = np.flatnonzero(col == col[i])
        remove += list(both)
        vacancies.append({"x": float(xy[i, 0]), "y": float(xy[i, 1]), "site_class": names[1], "label": f"V_{names[1]}"})
    for i in _pick_sites(rng, upper, xy, counts["n_chalcogen_vacancies"], defect_separation_angstrom, taken,
                         "n_chalcogen_vacancies"):
        both = np.flatnonzero(col == col[i])
        gone = both[rng.integers(len(both))]
        remove.append(gone)
        cls[both] = 2
    keep = np.ones(len(pos), bool)
    keep[remove] = False
    params = {"structure": compound, "rotation_deg": rot, "strain": sm.tolist(), "jitter_angstrom": float(jitter_angstrom),
              "lattice_angstrom": a, "extent": ext, **counts}
    return _finish(pos[keep], sym[keep], cls[keep], names, ext, 2 * dz, rng, jitter_angstrom,
                   {"vacancies": vacancies, "params": params}, column_id=col[keep])


def tmd_class_names(compound: str = "MoS2") -> list[str]:
    """Site class names of :func:`tmd_monolayer` for `compound`."""
    metal = "Mo" if compound.startswith("Mo") else "W"
    chal = compound[len(metal):-1]
    return [metal, f"{chal}2", f"{chal}1", "W" if metal == "Mo" else "Mo"]


# --------------------------------------------------------------------------- perovskites

def perovskite_class_names(compound: str = "SrTiO3", zone: str = "001") -> list[str]:
    """Site class names of :func:`perovskite_projection`: [A, B, O] or [AO, B, O] for [110]."""
    a_site, b_site = _perovskite_species(compound)
    return [a_site if zone == "001" else a_site + "O", b_site, "O"]


def _perovskite_species(compound):
    if compound not in PEROVSKITE_LATTICE_ANGSTROM:
        raise field_error("compound", compound, f"allowed: {', '.join(PEROVSKITE_LATTICE_ANGSTROM)}")
    a_site = [s for s in ("Sr", "Ba", "La", "K") if compound.startswith(s)][0]
    return a_site, compound[len(a_site):-2]


def perovskite_projection(compound: str = "SrTiO3", zone: str = "001", extent=(40.0, 40.0), thickness_cells: int = 4,
                          b_displacement_angstrom=(0.0, 0.0), b_displacement_sigma_angstrom: float = 0.0,
                          vacancy_columns: dict | None = None, rotation_deg: float | str = 0.0, strain=0.0,
                          jitter_angstrom: float = 0.0, defect_separation_angstrom: float = 3.0,
                          column_sigma_angstrom: dict | None = None,
                          seed: int | np.random.Generator | None = None) -> Atoms:
    """A cubic ABO3 perovskite slab seen along [001] or [110].

    [001]: projected cell a x a; A columns at (0, 0), B at (a/2, a/2), O at (a/2, 0) and (0, a/2).
    The B column also holds the apical O (it is a B-O column, called "B" by convention).
    [110]: projected cell a sqrt(2) x a (x along [1-10], y along [001]); mixed A-O columns
    every a sqrt(2) / 2 along x at y = 0, pure B columns at y = a/2 above them and pure O
    columns halfway between the B columns.

    Parameters
    ----------
    compound : str
        One of :data:`PEROVSKITE_LATTICE_ANGSTROM`.
    zone : "001" or "110"
    extent : float or (float, float)
        Field size [Å].
    thickness_cells : int
        Repeats along the beam (of a for [001], of a sqrt2 for [110]).
    b_displacement_angstrom : (float, float)
        In-plane shift of every B column in the crystal frame [Å] (a polar displacement).
    b_displacement_sigma_angstrom : float
        Random extra shift of each B column (Gaussian, per axis) [Å].
    vacancy_columns : dict
        Whole columns removed per class, keys ``"A"``, ``"B"``, ``"O"`` (recorded as vacancies).
    column_sigma_angstrom : dict, optional
        Random rigid in-plane shift of each whole column (Gaussian, per axis) [Å] per class, keys
        ``"A"``, ``"O"`` (``"B"`` columns have ``b_displacement_sigma_angstrom``). Unlike
        ``jitter_angstrom`` (independent per atom, so a column of N atoms moves by about
        jitter / sqrt(N)), every atom of a column moves together: what a diffusing column looks
        like. Nothing is drawn for classes left out or at 0.
    rotation_deg, strain, jitter_angstrom, seed
        As in :func:`graphene`.
    """
    if zone not in ("001", "110"):
        raise field_error("zone", zone, "allowed: '001', '110'")
    a_site, b_site = _perovskite_species(compound)
    names = perovskite_class_names(compound, zone)
    thickness_cells = _check_count("thickness_cells", thickness_cells)
    if thickness_cells < 1:
        raise field_error("thickness_cells", thickness_cells, "must be >= 1")
    vacancy_columns = dict(vacancy_columns or {})
    for k, v in vacancy_columns.items():
        if k not in ("A", "B", "O"):
            raise field_error(f"vacancy_columns.{k}", v, "keys allowed: A, B, O")
        vacancy_columns[k] = _check_count(f"vacancy_columns.{k}", v)
    rng = as_generator(seed)
    ext = _extent(extent)
    a = PEROVSKITE_LATTICE_ANGSTROM[compound]
    if zone == "001":
        cell = (a, a)
        period = a
        unit = [(0, 0, 0, a_site, 0, "a"), (a / 2, a / 2, a / 2, b_site, 1, "b"),
                (a / 2, 0, a / 2, "O", 2, "o1"), (0, a / 2, a / 2, "O", 2, "o2"), (a / 2, a / 2, 0, "O", 1, "b")]
        # The apical O at (a/2, a/2, 0) sits in the B column: that column is "B" (TiO in
        # composition, but conventionally called the B column).
    else:
        s = a * math.sqrt(2)
        cell = (s, a)
        period = s
        # fractional (f1 along [1-10], f2 along [001], f3 along [110]) of the 10-atom cell
        frac = [(0, 0, 0, a_site, 0, "ao1"), (0.5, 0, 0.5, a_site, 0, "ao2"),
                (0, 0, 0.5, "O", 0, "ao1"), (0.5, 0, 0, "O", 0, "ao2"),
                (0, 0.5, 0.5, b_site, 1, "b1"), (0.5, 0.5, 0, b_site, 1, "b2"),
                (0.25, 0.5, 0.25, "O", 2, "o1"), (0.75, 0.5, 0.75, "O", 2, "o2"),
                (0.75, 0.5, 0.25, "O", 2, "o2"), (0.25, 0.5, 0.75, "O", 2, "o1")]
        unit = [(f1 * s, f2 * a, f3 * s, sym, c, k) for f1, f2, f3, sym, c, k in frac]
    basis = [(x, y, z + iz * period, sym, c, k) for iz in range(thickness_cells) for x, y, z, sym, c, k in unit]
    rot = _rotation(rotation_deg, rng)
    sm = _strain_matrix(strain)
    half = 0.5 * math.hypot(*ext) * 1.15 + 5.0
    pos, sym, cls, col = _tile(cell, basis, half, (ext[0] / 2, ext[1] / 2))
    # B-site displacements in the crystal frame, one per column
    bmask = cls == 1
    shift = np.asarray(b_displacement_angstrom, dtype=float).reshape(2)
    if b_displacement_sigma_angstrom < 0:
        raise field_error("b_displacement_sigma_angstrom", b_displacement_sigma_angstrom, "must be >= 0 [Å]")
    ucol, inv = np.unique(col[bmask], return_inverse=True)
    dcol = shift + (rng.normal(0.0, b_displacement_sigma_angstrom, (len(ucol), 2)) if b_displacement_sigma_angstrom > 0
                    else np.zeros((len(ucol), 2)))
    pos[np.flatnonzero(bmask), :2] += dcol[inv]
    column_sigma = dict(column_sigma_angstrom or {})
    for key, c in (("A", 0), ("O", 2)):
        sig = float(column_sigma.pop(key, 0.0))
        if not (sig >= 0 and math.isfinite(sig)):
            raise field_error(f"column_sigma_angstrom.{key}", sig, "must be >= 0 [Å]")
        if sig > 0:
            m = cls == c
            ucol_c, inv_c = np.unique(col[m], return_inverse=True)
            pos[np.flatnonzero(m), :2] += rng.normal(0.0, sig, (len(ucol_c), 2))[inv_c]
    if column_sigma:
        raise field_error("column_sigma_angstrom", sorted(column_sigma), "keys allowed: A, O")
    pos, arr = _transform_crop(pos, {"sym": sym, "cls": cls, "col": col}, ext, rot, sm)
    sym, cls, col = arr["sym"], arr["cls"], arr["col"]
    xy = pos[:, :2]
    margin = 1.5
    inside = (xy[:, 0] > margin) & (xy[:, 0] < ext[0] - margin) & (xy[:, 1] > margin) & (xy[:, 1] < ext[1] - margin)
    _, first = np.unique(col, return_index=True)
    taken: list = []
    remove = np.zeros(len(pos), bool)
    vacancies = []
    for key, c in (("A", 0), ("B", 1), ("O", 2)):
        k = vacancy_columns.get(key, 0)
        cand = first[inside[first] & (cls[first] == c)]
        for i in _pick_sites(rng, cand, xy, k, defect_separation_angstrom, taken, f"vacancy_columns.{key}"):
            members = col == col[i]
            remove |= members
            vacancies.append({"x": float(xy[members, 0].mean()), "y": float(xy[members, 1].mean()),
                              "site_class": names[c], "label": f"V_{names[c]}"})
    keep = ~remove
    params = {"structure": f"{compound}[{zone}]", "rotation_deg": rot, "strain": sm.tolist(),
              "jitter_angstrom": float(jitter_angstrom), "lattice_angstrom": a, "thickness_cells": thickness_cells,
              "b_displacement_angstrom": shift.tolist(), "b_displacement_sigma_angstrom": float(b_displacement_sigma_angstrom),
              "vacancy_columns": vacancy_columns, "extent": ext,
              "column_sigma_angstrom": {k: float(v) for k, v in (column_sigma_angstrom or {}).items()}}
    return _finish(pos[keep], sym[keep], cls[keep], names, ext, thickness_cells * period, rng, jitter_angstrom,
                   {"vacancies": vacancies, "params": params}, column_id=col[keep])


# --------------------------------------------------------------------------- adatoms on amorphous support

def _random_packing(rng, n: int, box, min_distance: float, max_rounds: int = 60) -> np.ndarray:
    """`n` random points in `box` (3,) [Å] no closer than `min_distance` (random sequential addition in rounds)."""
    box = np.asarray(box, float)
    pts = np.empty((0, 3))
    for _ in range(max_rounds):
        need = n - len(pts)
        if need <= 0:
            break
        cand = rng.random((int(need * 1.5) + 16, 3)) * box
        if len(pts):
            d = cKDTree(pts).query(cand, distance_upper_bound=min_distance)[0]
            cand = cand[d >= min_distance]
        pairs = cKDTree(cand).query_pairs(min_distance, output_type="ndarray")
        bad = np.zeros(len(cand), bool)
        bad[np.maximum(pairs[:, 0], pairs[:, 1])] = True  # drop the later candidate of each close pair
        cand = cand[~bad][:need]
        pts = np.concatenate([pts, cand])
    if len(pts) < n:
        raise StructureError(f"support: only {len(pts)} of {n} atoms fit {min_distance} Å apart; "
                             "lower density_g_cm3 or min_distance_angstrom")
    return pts


def adatoms_on_amorphous(extent=(40.0, 40.0), heavy: str = "Pt", n_heavy: int = 10, support: str = "C",
                         support_thickness_angstrom: float = 10.0, density_g_cm3: float = 2.0,
                         min_distance_angstrom: float = 1.3, heavy_separation_angstrom: float = 3.0,
                         jitter_angstrom: float = 0.0, seed: int | np.random.Generator | None = None, **_ignored) -> Atoms:
    """Single heavy atoms (Pt, Au ...) on top of an amorphous light support.

    The support is a random packing (random sequential addition) of `support` atoms at
    `density_g_cm3` with no two closer than `min_distance_angstrom`; the heavy atoms sit
    2 Å above its top surface at random xy, at least `heavy_separation_angstrom` apart and
    1.5 Å from the edges. Site classes ``["<support>_support", heavy]``; the support class is
    listed in ``info["ignore_classes"]``. Options ``rotation_deg`` / ``strain`` are accepted and
    ignored (an amorphous support has no orientation).
    """
    rng = as_generator(seed)
    ext = _extent(extent)
    n_heavy = _check_count("n_heavy", n_heavy)
    for name, v in (("support_thickness_angstrom", support_thickness_angstrom), ("density_g_cm3", density_g_cm3),
                    ("min_distance_angstrom", min_distance_angstrom)):
        if not (v > 0):
            raise field_error(name, v, "must be > 0")
    if heavy not in atomic_numbers or support not in atomic_numbers:
        raise StructureError(f"adatoms_on_amorphous: unknown element {heavy!r} or {support!r}")
    from ase.data import atomic_masses
    mass = atomic_masses[atomic_numbers[support]]
    n_per_a3 = density_g_cm3 / (mass * 1.66053907e-24) * 1e-24
    box = (ext[0], ext[1], float(support_thickness_angstrom))
    n_sup = int(round(n_per_a3 * np.prod(box)))
    sup = _random_packing(rng, n_sup, box, float(min_distance_angstrom))
    hxy = np.empty((0, 2))
    for _ in range(200):
        if len(hxy) >= n_heavy:
            break
        c = rng.uniform([1.5, 1.5], [ext[0] - 1.5, ext[1] - 1.5])
        if len(hxy) == 0 or np.min(np.hypot(*(hxy - c).T)) >= heavy_separation_angstrom:
            hxy = np.vstack([hxy, c])
    if len(hxy) < n_heavy:
        raise StructureError(f"n_heavy: only {len(hxy)} of {n_heavy} atoms fit {heavy_separation_angstrom} Å apart; "
                             "use a larger extent or fewer atoms")
    hpos = np.column_stack([hxy, np.full(len(hxy), box[2] + 2.0)])
    pos = np.concatenate([sup, hpos])
    sym = [support] * len(sup) + [heavy] * len(hpos)
    cls = np.r_[np.zeros(len(sup), int), np.ones(len(hpos), int)]
    params = {"structure": f"{heavy}_on_a{support}", "n_heavy": n_heavy, "support_thickness_angstrom": box[2],
              "density_g_cm3": float(density_g_cm3), "jitter_angstrom": float(jitter_angstrom), "extent": ext,
              "rotation_deg": 0.0}
    return _finish(pos, sym, cls, [f"{support}_support", heavy], ext, box[2] + 2.0, rng, jitter_angstrom,
                   {"params": params}, ignore_classes=[f"{support}_support"])


# --------------------------------------------------------------------------- projection

def projected_columns(atoms: Atoms, tol: float = 0.3, z_exponent: float = 1.7) -> dict[str, np.ndarray]:
    """Project `atoms` along z and merge atoms closer than `tol` [Å] in xy into columns.

    Parameters
    ----------
    atoms : ase.Atoms
        With ``arrays["site_class"]`` (else every atom is class 0).
    tol : float
        Linking distance in the xy plane [Å] (single linkage: chains of close atoms merge).
    z_exponent : float
        Exponent n of the Z-weight ``sum_i Z_i^n`` over the column's atoms.

    Returns
    -------
    dict of numpy arrays, one entry per column: ``x``, ``y`` (mean position [Å]),
    ``site_class`` (int; the most common class of the column's atoms), ``z_weight``
    (sum of Z^n), ``z_sum`` (sum of Z) and ``n_atoms``.
    """
    if not (tol > 0):
        raise field_error("tol", tol, "must be > 0 [Å]")
    n = len(atoms)
    if n == 0:
        empty = np.empty(0)
        return {"x": empty, "y": empty, "site_class": np.empty(0, np.int64), "z_weight": empty, "z_sum": empty,
                "n_atoms": np.empty(0, np.int64)}
    xy = atoms.positions[:, :2]
    z = atoms.numbers.astype(float)
    cls = atoms.arrays.get("site_class", np.zeros(n, np.int64)).astype(np.int64)
    pairs = cKDTree(xy).query_pairs(tol, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)) if len(pairs) else coo_matrix((n, n))
    ncol, label = connected_components(graph, directed=False)
    count = np.bincount(label, minlength=ncol)
    x = np.bincount(label, xy[:, 0], ncol) / count
    y = np.bincount(label, xy[:, 1], ncol) / count
    ncls = int(cls.max()) + 1
    votes = np.zeros((ncol, ncls))
    np.add.at(votes, (label, cls), 1.0)
    return {"x": x, "y": y, "site_class": votes.argmax(1).astype(np.int64),
            "z_weight": np.bincount(label, z ** float(z_exponent), ncol), "z_sum": np.bincount(label, z, ncol),
            "n_atoms": count.astype(np.int64)}


#: Builders by name, for :class:`inverscope.datasets.atom_images.AtomImageGenerator`.
BUILDERS = {
    "graphene": graphene,
    "MoS2": lambda **kw: tmd_monolayer("MoS2", **kw),
    "WS2": lambda **kw: tmd_monolayer("WS2", **kw),
    "SrTiO3_001": lambda **kw: perovskite_projection("SrTiO3", "001", **kw),
    "SrTiO3_110": lambda **kw: perovskite_projection("SrTiO3", "110", **kw),
    "Pt_on_aC": lambda **kw: adatoms_on_amorphous(heavy="Pt", **kw),
    "Au_on_aC": lambda **kw: adatoms_on_amorphous(heavy="Au", **kw),
}


def builder_class_names(name: str) -> list[str]:
    """Site class names of the builder `name` in :data:`BUILDERS`."""
    table = {"graphene": ["C", "Si"], "MoS2": tmd_class_names("MoS2"), "WS2": tmd_class_names("WS2"),
             "SrTiO3_001": perovskite_class_names("SrTiO3", "001"), "SrTiO3_110": perovskite_class_names("SrTiO3", "110"),
             "Pt_on_aC": ["C_support", "Pt"], "Au_on_aC": ["C_support", "Au"]}
    if name not in table:
        raise field_error("structure", name, f"allowed: {', '.join(table)}")
    return table[name]
