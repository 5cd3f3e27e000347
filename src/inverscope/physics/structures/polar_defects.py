"""Defects in polar (K,Na)NbO3 supercells, with truth masks on the probe-scan grid (Martinc et al.).

Builds pseudo-cubic (pc) supercells of ``nx x ny x nz`` pc cells (beam along z = [001]pc)
column by column from a map of the 12 <110> polarization variants of
:mod:`inverscope.physics.structures.polar`, and adds the defects an anomaly detector should
flag: 180- and 90-degree domain walls, an inclined wall, A-site / B-site / O vacancy columns,
a small rhombohedral (<111>) region, an amorphous surface layer and a thickness step. Every
step records itself in ``atoms.info['defects']`` so that the truth masks on the probe grid
can be regenerated from the structure alone (:func:`truth_masks_from_info`).

Conventions
-----------
* Column ``(ix, iy)`` is the pc cell whose A site sits at ``(ix, iy)`` (in pc cells from
  the supercell origin) and whose B site sits at ``(ix + 1/2, iy + 1/2)``; the cell spans
  ``[ix, ix + 1) x [iy, iy + 1)``. Variant maps are indexed ``variant_map[ix, iy]`` (shape
  ``(nx, ny)``, x first); masks are in scan order, shape ``(ny * ppc, nx * ppc)`` (row = y,
  column = x).
* Projected columns down [001]pc: A at ``(ix, iy)``; B and O_z at ``(ix+1/2, iy+1/2)``
  (one mixed BO column); O_y at ``(ix+1/2, iy)`` and O_x at ``(ix, iy+1/2)`` (pure O
  columns).
* Probe position ``(i, j)`` of a grid with ``ppc`` positions per pc cell lies at
  ``((j + 0.5) / ppc, (i + 0.5) / ppc)`` pc cells (x, y); times the cell's x and y lengths
  per pc cell for Å.
* "Top" is the largest z (the exit surface for a beam along +z); layer ``iz`` is pc cell
  ``iz`` along z (its atoms lie at ``(iz + z_offset_fraction + {0, 1/2}) c``).
* The cell is orthogonal (``strain='orthogonal'``: the mean over columns of each variant's
  diagonal pc strain, cubic columns counting as unstrained; ``strain='none'``: cubic), so
  the multislice code accepts it. Columns of different variants share that one lattice: a
  coherent, unrelaxed model of the walls (atoms sit on their variant's displaced sites
  right up to the wall).
* Every function returns a new Atoms object; its input is left unchanged. Per-atom arrays
  ``pc_cell`` (ix, iy, iz), ``pc_site`` (0..4 = A, B, O_z, O_y, O_x) and ``site_position``
  (the undisplaced lattice site [Å]) travel with the atoms.

Defect records (``atoms.info['defects']``, also the ``defect_spec`` of :func:`truth_masks`)
are JSON-like dicts with a ``type``:

* ``{'type': 'domains', 'nx', 'ny', 'nz', 'variant_map': [[name or None] * ny] * nx,
  'walls': [wall, ...] or None, ...}`` -- the first record. ``walls`` None means: walls
  are inferred from the map (every edge between columns of different variants). A wall is
  ``{'kind', 'point': [x, y], 'normal': [nx, ny], 'variants': [v1, v2], 'charged': bool}``
  in pc cells: the line through ``point`` normal to the unit ``normal``.
* ``{'type': 'vacancy_column', 'site': 'A'|'B'|'O_z'|'O_y'|'O_x', 'cell_xy': [ix, iy],
  'column_xy': [x, y], 'n_removed'}``
* ``{'type': 'rhombohedral', 'region': [x0, x1, y0, y1], 'direction': [u, v, w]}``
* ``{'type': 'amorphous', 'thickness_angstrom', 'mode', 'sigma_angstrom',
  'min_distance_angstrom', 'side', 'region': [x0, x1, y0, y1] or None, 'seed', 'n_atoms'}``
* ``{'type': 'thickness_step', 'region': [x0, x1, y0, y1], 'remove_cells', 'n_removed'}``

Regions are half-open ranges of pc columns, ``x0 <= ix < x1``, ``y0 <= iy < y1``.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass, field

import numpy as np
from ase import Atoms

from inverscope.core.errors import StructureError, field_error
from inverscope.physics.structures.polar import (
    _SITE_FRAC,
    _SITE_NAMES,
    A_SITE_MODES,
    PolarAmplitudes,
    knbo3_amplitudes,
    parse_variant,
    projection_classes,
    variant_displacements,
    variant_strain,
)

#: Lattice strain models of :func:`polar_domains` (orthogonal cells only).
DOMAIN_STRAIN_MODES = ("orthogonal", "none")
#: Modes of :func:`amorphous_layer`.
AMORPHOUS_MODES = ("displace", "jammed")

_HALF = 0.5 + 1e-9  # "within half a cell", inclusive, of a wall line or vacancy column
_SITE_XY = {"A": (0.0, 0.0), "B": (0.5, 0.5), "O_z": (0.5, 0.5), "O_y": (0.5, 0.0), "O_x": (0.0, 0.5)}


# --------------------------------------------------------------------------- variant maps


@dataclass(frozen=True)
class DomainMap:
    """A variant map with the geometry of its walls (what the wall helpers return).

    Attributes
    ----------
    variants : ndarray of object, shape (nx, ny)
        Variant name ('[110]', ...) or None (cubic) of column ``(ix, iy)``.
    walls : tuple of dict
        The wall lines (see the module docstring), in pc cells.

    Indexing, ``shape`` and ``np.asarray`` act on ``variants``.
    """

    variants: np.ndarray
    walls: tuple = field(default_factory=tuple)

    @property
    def shape(self) -> tuple[int, int]:
        return self.variants.shape

    def __getitem__(self, key):
        return self.variants[key]

    def __array__(self, dtype=None, copy=None):
        return self.variants if dtype is None else self.variants.astype(dtype)


def _check_grid(nx, ny) -> tuple[int, int]:
    out = []
    for name, v in (("nx", nx), ("ny", ny)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise field_error(name, v, "must be an integer >= 1", StructureError)
        out.append(int(v))
    return out[0], out[1]


def _axis_index(axis) -> int:
    if axis in ("x", 0):
        return 0
    if axis in ("y", 1):
        return 1
    raise field_error("axis", axis, "allowed: 'x' or 'y' (the wall normal)", StructureError)


def _finite(name, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not np.isfinite(v):
        raise field_error(name, value, "must be a finite number", StructureError)
    return v


def _wall_record(kind, point, normal, v1, v2) -> dict:
    n = np.asarray(normal, dtype=float)
    n = n / np.linalg.norm(n)
    p1, p2 = (parse_variant(v)[1] / np.sqrt(2.0) for v in (v1, v2))
    charged = bool(abs((p1 - p2)[:2] @ n) > 1e-9)  # bound charge n.(P1 - P2) on the wall plane
    return {"kind": kind, "point": [float(c) for c in point], "normal": [float(c) for c in n],
            "variants": [parse_variant(v1)[0], parse_variant(v2)[0]], "charged": charged}


def _planar_wall(nx, ny, v1, v2, position, axis, kind) -> DomainMap:
    nx, ny = _check_grid(nx, ny)
    ax = _axis_index(axis)
    size = (nx, ny)[ax]
    position = _finite("position", position)
    if not 0.0 < position < size:
        raise field_error("position", position, f"must lie inside the cell, 0 < position < {size} [pc cells]",
                          StructureError)
    centers = np.arange(size) + 0.5
    side = centers < position
    if side.all() or not side.any():
        raise field_error("position", position, "must leave at least one column on each side", StructureError)
    grid = np.empty((nx, ny), dtype=object)
    for i, first in enumerate(side):
        idx = (i, slice(None)) if ax == 0 else (slice(None), i)
        grid[idx] = v1 if first else v2
    point = [position, 0.0] if ax == 0 else [0.0, position]
    normal = [1.0, 0.0] if ax == 0 else [0.0, 1.0]
    return DomainMap(grid, (_wall_record(kind, point, normal, v1, v2),))


def wall_180(nx: int, ny: int, variant="[110]", position: float | None = None, axis="x") -> DomainMap:
    """A 180-degree wall: `variant` on the low side of the plane ``axis = position``, ``-variant`` beyond.

    Parameters
    ----------
    nx, ny : int
        Map size in pc columns.
    variant : str or 3 ints
        Polarization of the low side (columns whose centre coordinate is < `position`).
    position : float, optional
        Wall plane along `axis`, in pc cells (default: the middle, rounded down to a cell
        boundary). An integer puts the wall on a cell boundary.
    axis : {'x', 'y'}
        The wall normal.

    Returns
    -------
    DomainMap
        The periodic cell holds a second wall at the seam (masked as ``seam_wall``).
    """
    name, vec = parse_variant(variant)
    ax = _axis_index(axis)
    if position is None:
        position = float(max(1, (_check_grid(nx, ny)[ax]) // 2))
    return _planar_wall(nx, ny, name, parse_variant(-vec)[0], position, axis, "180")


def wall_90(nx: int, ny: int, variant="[110]", position: float | None = None, axis="x",
            partner=None) -> DomainMap:
    """A wall between two variants whose polarizations projected down [001]pc are 90 degrees apart.

    Parameters
    ----------
    variant : str or 3 ints
        Low-side variant.
    partner : str or 3 ints, optional
        High-side variant. Default: `variant` with its in-plane component parallel to the
        wall flipped (the uncharged head-to-tail partner, e.g. [110] | [1-10] across a
        wall normal to x); that needs a variant in the xy plane (z component 0).
    position, axis : see :func:`wall_180`.

    Raises
    ------
    StructureError
        If the projections of the two variants are not 90 degrees apart.
    """
    name, vec = parse_variant(variant)
    ax = _axis_index(axis)
    if partner is None:
        other = vec.copy()
        other[1 - ax] *= -1
        if vec[2] != 0 or vec[1 - ax] == 0:
            raise field_error("variant", name, "needs an in-plane <110> (z component 0) when no partner is "
                              "given", StructureError)
        partner = other
    pname, pvec = parse_variant(partner)
    a, b = vec[:2].astype(float), pvec[:2].astype(float)
    if abs(a @ b) > 1e-9:
        raise field_error("partner", pname, f"its [001]pc projection must be 90 deg from that of {name}",
                          StructureError)
    if position is None:
        position = float(max(1, (_check_grid(nx, ny)[ax]) // 2))
    return _planar_wall(nx, ny, name, pname, position, axis, "90")


def inclined_wall(nx: int, ny: int, v1="[110]", v2="[-1-10]", angle_deg: float = 30.0,
                  offset: float = 0.0) -> DomainMap:
    """A straight wall in the xy plane at `angle_deg` to x (through the full thickness).

    The wall line runs along ``(cos a, sin a)`` (a = `angle_deg`, counterclockwise from +x)
    through the map centre ``(nx/2, ny/2)`` shifted by `offset` pc cells along its normal
    ``(-sin a, cos a)``. Columns whose centre lies on the normal's negative side get `v1`,
    the rest `v2`. The wall is perpendicular to the xy plane (parallel to the beam); walls
    inclined to the beam cannot be expressed column by column.
    """
    nx, ny = _check_grid(nx, ny)
    a = np.radians(_finite("angle_deg", angle_deg))
    offset = _finite("offset", offset)
    n1, _ = parse_variant(v1)
    n2, _ = parse_variant(v2)
    normal = np.array([-np.sin(a), np.cos(a)])
    point = np.array([nx / 2.0, ny / 2.0]) + offset * normal
    ix, iy = np.meshgrid(np.arange(nx) + 0.5, np.arange(ny) + 0.5, indexing="ij")
    dist = (ix - point[0]) * normal[0] + (iy - point[1]) * normal[1]
    low = dist < 0
    if low.all() or not low.any():
        raise field_error("offset", offset, "puts the wall outside the map (one domain only)", StructureError)
    grid = np.where(low, n1, n2).astype(object)
    return DomainMap(grid, (_wall_record("inclined", point, normal, n1, n2),))


def _normalize_map(variant_map) -> tuple[np.ndarray, list | None]:
    walls = None
    if isinstance(variant_map, DomainMap):
        walls = [dict(w) for w in variant_map.walls]
        variant_map = variant_map.variants
    try:
        arr = np.array(variant_map, dtype=object)
    except Exception:  # noqa: BLE001 - ragged input
        arr = np.empty(0, dtype=object)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise StructureError("variant_map: must be a 2-D (nx, ny) array of variant names or None")
    out = np.empty(arr.shape, dtype=object)
    for (ix, iy), v in np.ndenumerate(arr):
        if v is None or (isinstance(v, str) and v.strip().lower() in ("", "none", "cubic")):
            out[ix, iy] = None
            continue
        try:
            out[ix, iy] = parse_variant(v)[0]
        except StructureError:
            raise StructureError(f"variant_map[{ix}, {iy}]: got {v!r}; allowed: one of the 12 <110> variants "
                                 f"('[110]', '[1-10]', ...) or None (cubic)") from None
    return out, walls


# --------------------------------------------------------------------------- the builder


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _seed_record(seed):
    return int(seed) if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else None


def polar_domains(variant_map, nz: int, amplitudes: PolarAmplitudes | None = None, na_fraction: float = 0.0,
                  seed: int | np.random.Generator | None = 0, a_site: str = "random",
                  strain: str = "orthogonal", b_species: str = "Nb", z_offset_fraction: float = 0.25) -> Atoms:
    """A pc-aligned supercell of ``nx x ny x nz`` pc cells, built column by column from a variant map.

    Parameters
    ----------
    variant_map : DomainMap or array-like (nx, ny)
        Variant name (or 3 ints) per column, ``variant_map[ix, iy]``; None (or 'cubic') for a
        cubic, paraelectric column. A :class:`DomainMap` (from :func:`wall_180`,
        :func:`wall_90`, :func:`inclined_wall`) also brings its wall lines for the masks;
        for a plain array the walls are the edges between columns of different variants.
    nz : int
        Thickness in pc cells (>= 1).
    amplitudes, na_fraction, seed, a_site, b_species, z_offset_fraction
        As in :func:`~inverscope.physics.structures.polar.polar_perovskite`; the Na sites
        are drawn over the whole supercell.
    strain : {'orthogonal', 'none'}
        'orthogonal' (default): the cell is the cubic one times the mean, over columns, of
        each variant's diagonal pc strain (a single-variant map gives exactly
        ``polar_perovskite(..., strain='orthogonal')``); 'none': the cube of side a_pc.

    Returns
    -------
    ase.Atoms
        Periodic, orthogonal; atoms ordered column by column (ix, then iy, then iz, then
        site A, B, O_z, O_y, O_x). ``atoms.info`` holds ``defects`` (a list starting with the
        'domains' record), ``pc_grid`` ``[nx, ny, nz]``, ``amplitudes``, ``strain_model``,
        ``na_fraction``, ``seed`` and ``z_offset_fraction``.
    """
    vmap, walls = _normalize_map(variant_map)
    nx, ny = vmap.shape
    if isinstance(nz, (bool, np.bool_)) or not isinstance(nz, (int, np.integer)) or nz < 1:
        raise field_error("nz", nz, "must be an integer >= 1", StructureError)
    nz = int(nz)
    amps = (amplitudes or knbo3_amplitudes()).validate()
    if strain not in DOMAIN_STRAIN_MODES:
        raise field_error("strain", strain, f"allowed: {', '.join(DOMAIN_STRAIN_MODES)} (orthogonal cells only)",
                          StructureError)
    if a_site not in A_SITE_MODES:
        raise field_error("a_site", a_site, f"allowed: {', '.join(A_SITE_MODES)}", StructureError)
    if not (0.0 <= na_fraction <= 1.0):
        raise field_error("na_fraction", na_fraction, "must be in [0, 1]", StructureError)
    z_offset_fraction = _finite("z_offset_fraction", z_offset_fraction)

    names = sorted({v for v in vmap.flat if v is not None})
    disp_table = {None: np.zeros((5, 3))}
    diag_table = {None: np.ones(3)}
    for v in names:
        disp_table[v] = variant_displacements(v, amps)
        diag_table[v] = np.diag(variant_strain(v, amps, "orthogonal"))
    scale = (np.mean([diag_table[v] for v in vmap.flat], axis=0) if strain == "orthogonal" else np.ones(3))
    lengths = amps.a_pc_angstrom * scale  # one pc cell along x, y, z [Å]

    cells = np.array(list(itertools.product(range(nx), range(ny), range(nz))), dtype=int)
    n_cells = len(cells)
    frac = (cells[:, None, :] + _SITE_FRAC[None, :, :]).reshape(-1, 3)  # cell-major, 5 sites per cell
    frac[:, 2] += z_offset_fraction
    sites = frac * lengths
    disp = np.concatenate([disp_table[vmap[ix, iy]] for ix, iy, _ in cells])
    pos = sites + disp
    a_symbols = np.full(n_cells, "K", dtype=object)
    k_na = int(round(na_fraction * n_cells))
    if a_site == "random":
        if k_na:
            a_symbols[_rng(seed).choice(n_cells, size=k_na, replace=False)] = "Na"
        realized = k_na / n_cells
    else:
        a_symbols[:] = "Na" if na_fraction > 0.5 else "K"
        realized = float(na_fraction)
    symbols = np.empty(5 * n_cells, dtype=object)
    symbols[0::5] = a_symbols
    symbols[1::5] = b_species
    for k in (2, 3, 4):
        symbols[k::5] = "O"
    try:
        atoms = Atoms(list(symbols), positions=pos, cell=np.diag(lengths * [nx, ny, nz]), pbc=True)
    except KeyError as err:
        raise StructureError(f"polar_domains: unknown element {err.args[0]!r}") from None
    atoms.wrap()
    atoms.set_array("pc_cell", np.repeat(cells, 5, axis=0))
    atoms.set_array("pc_site", np.tile(np.arange(5), n_cells))
    atoms.set_array("site_position", sites)
    record = {"type": "domains", "nx": nx, "ny": ny, "nz": nz,
              "variant_map": [[vmap[ix, iy] for iy in range(ny)] for ix in range(nx)],
              "walls": walls}
    atoms.info.update(
        defects=[record],
        pc_grid=[nx, ny, nz],
        amplitudes=asdict(amps),
        strain_model=strain,
        a_site_model=a_site,
        na_fraction=realized,
        na_fraction_requested=float(na_fraction),
        seed=_seed_record(seed),
        z_offset_fraction=z_offset_fraction,
        b_species=b_species,
    )
    return atoms


# --------------------------------------------------------------------------- helpers on built atoms


def _require(atoms, who: str) -> tuple[int, int, int]:
    if not isinstance(atoms, Atoms) or "pc_cell" not in atoms.arrays or "defects" not in atoms.info:
        raise StructureError(f"{who}: atoms must come from polar_domains (pc_cell array and info['defects'])")
    return tuple(int(c) for c in atoms.info["pc_grid"])


def _copy(atoms: Atoms) -> Atoms:
    out = atoms.copy()
    out.info = copy.deepcopy(atoms.info)
    return out


def _region(region_xy, nx, ny, name="region_xy") -> list[int]:
    try:
        vals = [int(v) for v in region_xy]
        ok = len(vals) == 4 and np.allclose(np.asarray(region_xy, dtype=float), vals)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise field_error(name, region_xy, "must be 4 integers (x0, x1, y0, y1), half-open pc column ranges",
                          StructureError)
    x0, x1, y0, y1 = vals
    if not (0 <= x0 < x1 <= nx and 0 <= y0 < y1 <= ny):
        raise field_error(name, region_xy, f"must satisfy 0 <= x0 < x1 <= {nx}, 0 <= y0 < y1 <= {ny}",
                          StructureError)
    return vals


def _in_region(pc_cell: np.ndarray, region) -> np.ndarray:
    x0, x1, y0, y1 = region
    return (pc_cell[:, 0] >= x0) & (pc_cell[:, 0] < x1) & (pc_cell[:, 1] >= y0) & (pc_cell[:, 1] < y1)


def _place(atoms: Atoms, idx, new_positions) -> None:
    """Set the positions of atoms `idx`: x, y wrapped into the cell, z clipped into [0, c) (no atom of a
    surface layer is carried to the other surface); the other atoms keep theirs bit for bit."""
    lengths = np.diag(atoms.cell[:])
    new = np.array(new_positions, dtype=float).reshape(-1, 3)
    new[:, :2] = np.mod(new[:, :2], lengths[:2])
    new[:, 2] = np.clip(new[:, 2], 0.0, lengths[2] * (1 - 1e-12))
    pos = atoms.positions
    pos[idx] = new
    atoms.positions = pos


def _site_displacements(atoms: Atoms) -> np.ndarray:
    d = atoms.positions - atoms.arrays["site_position"]
    lengths = np.diag(atoms.cell[:])
    return d - np.round(d / lengths) * lengths


def _resolve_site(atoms: Atoms, species, site) -> str:
    roles = {"A": "A", "B": "B", "O": "O"}
    sym = np.array(atoms.get_chemical_symbols())
    pc_site = atoms.arrays["pc_site"]
    if species not in roles and isinstance(species, str):
        held = {_SITE_NAMES[int(k)][0] for k in np.unique(pc_site[sym == species])}
        if len(held) == 1:
            roles[species] = held.pop()
    if species not in roles:
        raise field_error("species", species, "allowed: 'A', 'B', 'O' or an element on one of those sites",
                          StructureError)
    role = roles[species]
    if role != "O":
        if site not in (None, role):
            raise field_error("site", site, f"only for O (species {species!r} is on the {role} site)",
                              StructureError)
        return role
    site = "O_x" if site is None else site
    if site not in ("O_x", "O_y", "O_z"):
        raise field_error("site", site, "allowed for O: 'O_x' (column at (ix, iy+1/2)), 'O_y' "
                          "(ix+1/2, iy) or 'O_z' (with B at (ix+1/2, iy+1/2))", StructureError)
    return site


def remove_column(atoms: Atoms, species="A", cell_xy=(0, 0), site: str | None = None) -> Atoms:
    """A vacancy column: remove every atom of one site of pc column `cell_xy`, through the thickness.

    Parameters
    ----------
    atoms : ase.Atoms
        From :func:`polar_domains` (possibly with other defects).
    species : str
        'A', 'B', 'O', or an element held by one site ('K'/'Na' mean the A site: all A atoms
        of the column go, whatever their species).
    cell_xy : (int, int)
        The pc column ``(ix, iy)``.
    site : {'O_x', 'O_y', 'O_z'}, optional
        For O: which O column. Default 'O_x', the pure O column at ``(ix, iy + 1/2)``;
        'O_y' is the pure O column at ``(ix + 1/2, iy)``; 'O_z' shares its projected
        position with B.

    Returns
    -------
    ase.Atoms
        A copy without those atoms (``nz`` of them unless some were removed before).
    """
    nx, ny, _ = _require(atoms, "remove_column")
    try:
        ix, iy = (int(c) for c in cell_xy)
        ok = np.allclose(np.asarray(cell_xy, dtype=float), (ix, iy))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise field_error("cell_xy", cell_xy, "must be 2 integers (ix, iy)", StructureError)
    if not (0 <= ix < nx and 0 <= iy < ny):
        raise field_error("cell_xy", cell_xy, f"outside the cell: need 0 <= ix < {nx}, 0 <= iy < {ny}",
                          StructureError)
    site_name = _resolve_site(atoms, species, site)
    k = _SITE_NAMES.index(site_name)
    pc = atoms.arrays["pc_cell"]
    hit = (pc[:, 0] == ix) & (pc[:, 1] == iy) & (atoms.arrays["pc_site"] == k)
    if not hit.any():
        raise field_error("cell_xy", cell_xy, f"no {site_name} atoms left in that column", StructureError)
    out = _copy(atoms)
    del out[np.flatnonzero(hit)]
    sx, sy = _SITE_XY[site_name]
    out.info["defects"].append({"type": "vacancy_column", "site": site_name, "cell_xy": [ix, iy],
                                "column_xy": [ix + sx, iy + sy], "n_removed": int(hit.sum())})
    return out


def _direction_111(direction) -> np.ndarray:
    if isinstance(direction, str):
        import re

        parts = re.findall(r"-?\d", direction)
        vec = [int(p) for p in parts] if len(parts) == 3 else None
    else:
        try:
            vec = [int(c) for c in direction]
            vec = vec if len(vec) == 3 and np.allclose(np.asarray(direction, dtype=float), vec) else None
        except (TypeError, ValueError):
            vec = None
    if vec is None or sorted(abs(c) for c in vec) != [1, 1, 1]:
        raise field_error("direction", direction, "must be a <111>pc direction, e.g. '[111]' or (1, -1, 1)",
                          StructureError)
    return np.array(vec)


def rhombohedral_region(atoms: Atoms, region_xy, direction="[111]") -> Atoms:
    """Turn the polarization of a region of columns onto a <111>pc direction (an R3m-like inclusion).

    Crude model: every atom of the region (all layers) keeps the length of its displacement
    from its lattice site and is turned onto ``±direction`` (the sign of its projection on
    the column's old P; for cubic columns the [110] variant's displacements are the "old"
    ones). So B, A and O all move along ±<111> with the Amm2 magnitudes; this is not a
    relaxed R3m structure (the oxygen pattern is not R3m's and the O centroid moves by a
    few mÅ). Apply it before :func:`amorphous_layer`.

    Parameters
    ----------
    region_xy : (x0, x1, y0, y1)
        Half-open pc column ranges.
    direction : str or 3 ints
        One of the eight <111>pc.
    """
    nx, ny, _ = _require(atoms, "rhombohedral_region")
    region = _region(region_xy, nx, ny)
    u_int = _direction_111(direction)
    u = u_int / np.sqrt(3.0)
    out = _copy(atoms)
    sel = np.flatnonzero(_in_region(out.arrays["pc_cell"], region))
    vmap = out.info["defects"][0]["variant_map"]
    amps = PolarAmplitudes(**out.info["amplitudes"])
    ref = variant_displacements("[110]", amps)
    d_all = _site_displacements(out)
    pos = np.empty((len(sel), 3))
    for row, i in enumerate(sel):
        ix, iy, _ = out.arrays["pc_cell"][i]
        v = vmap[ix][iy]
        k = int(out.arrays["pc_site"][i])
        if v is None:
            d, p = ref[k], np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0)
        else:
            d, p = d_all[i], parse_variant(v)[1] / np.sqrt(2.0)
        s = -1.0 if d @ p < 0 else 1.0
        pos[row] = out.arrays["site_position"][i] + s * np.linalg.norm(d) * u
    _place(out, sel, pos)
    out.info["defects"].append({"type": "rhombohedral", "region": region,
                                "direction": [int(c) for c in u_int]})
    return out


def _layer_selection(atoms, thickness, side, region):
    """Atoms within `thickness` Å of the surface of their own pc column (by lattice-site z)."""
    pc = atoms.arrays["pc_cell"]
    zsite = atoms.arrays["site_position"][:, 2]
    c = atoms.cell[2, 2] / atoms.info["pc_grid"][2]
    off = atoms.info.get("z_offset_fraction", 0.0) * c
    key = pc[:, 0] * 1_000_003 + pc[:, 1]
    sel = np.zeros(len(atoms), dtype=bool)
    bounds = {}
    cand = _in_region(pc, region) if region is not None else np.ones(len(atoms), dtype=bool)
    for col in np.unique(key[cand]):
        m = cand & (key == col)
        if side == "top":
            surf = (pc[m, 2].max() + 1) * c + off
            hit = m & (zsite > surf - thickness)
            bounds[col] = (surf - thickness, surf)
        else:
            surf = pc[m, 2].min() * c + off
            hit = m & (zsite < surf + thickness)
            bounds[col] = (surf, surf + thickness)
        sel |= hit
    return sel, bounds, key


def _jam(atoms, idx, bounds, key, min_dist, rng, max_tries=200):
    """Random sequential placement of atoms `idx`, each in its own column box, >= min_dist apart (periodic)."""
    lengths = np.diag(atoms.cell[:])
    a_cell = lengths[:2] / np.array(atoms.info["pc_grid"][:2])
    pos = atoms.positions.copy()
    pc = atoms.arrays["pc_cell"]
    moving = np.zeros(len(atoms), dtype=bool)
    moving[idx] = True
    bin_size = max(min_dist, 0.5)
    nb = np.maximum((lengths // bin_size).astype(int), 1)
    bins: dict[tuple, list[int]] = {}

    def bin_of(r):
        b = np.floor(r / lengths * nb).astype(int)
        return (int(b[0] % nb[0]), int(b[1] % nb[1]), int(b[2] % nb[2]))

    def too_close(r, dmin):
        b = bin_of(r)
        seen = set()
        for dx, dy, dz in itertools.product((-1, 0, 1), repeat=3):
            nbin = ((b[0] + dx) % nb[0], (b[1] + dy) % nb[1], (b[2] + dz) % nb[2])
            if nbin in seen:  # fewer than 3 bins along an axis
                continue
            seen.add(nbin)
            for j in bins.get(nbin, ()):
                d = pos[j] - r
                d -= np.round(d / lengths) * lengths
                if d @ d < dmin * dmin:
                    return True
        return False

    for j in np.flatnonzero(~moving):
        bins.setdefault(bin_of(pos[j]), []).append(j)
    for i in rng.permutation(idx):
        lo_z, hi_z = bounds[key[i]]
        lo_z, hi_z = max(lo_z, 0.0), min(hi_z, lengths[2])  # inside the cell: no wrap to the other surface
        lo = np.array([pc[i, 0] * a_cell[0], pc[i, 1] * a_cell[1], lo_z])
        hi = np.array([(pc[i, 0] + 1) * a_cell[0], (pc[i, 1] + 1) * a_cell[1], hi_z])
        dmin = min_dist
        while True:
            for _ in range(max_tries):
                r = lo + rng.random(3) * (hi - lo)
                if not too_close(r, dmin):
                    break
            else:
                dmin *= 0.9
                continue
            break
        pos[i] = r
        bins.setdefault(bin_of(r), []).append(i)
    return pos


def amorphous_layer(atoms: Atoms, thickness_angstrom: float, seed: int | np.random.Generator | None = 0,
                    mode: str = "displace", sigma_angstrom: float = 0.3, min_distance_angstrom: float = 1.7,
                    side: str = "top", region_xy=None) -> Atoms:
    """Disorder a surface layer: every atom within `thickness_angstrom` of its column's surface.

    An atom belongs to the layer if its lattice site lies within `thickness_angstrom` of the
    surface face of its own pc column (the top face of the column's highest remaining pc
    cell for ``side='top'``, so the layer follows a thickness step; the bottom face of its
    lowest one for ``'bottom'``). Cell faces are those of the pc cells shifted by
    ``z_offset_fraction``.

    Modes (seeded by `seed`, same seed same result):

    * ``'displace'``: independent Gaussian displacements, ``sigma_angstrom`` (default 0.3 Å)
      per Cartesian component, around the current positions -- a strongly disordered but
      still crystal-derived layer.
    * ``'jammed'``: a jammed random arrangement -- the layer atoms are placed one by one in
      random order, each uniformly at random in its own column's slab of the layer, and
      rejected while closer than ``min_distance_angstrom`` (default 1.7 Å) to any atom
      placed or kept so far (periodic images included, z too); after 200 rejections that
      atom's distance shrinks by 10 %. Composition and density per column are kept; the
      slab is cut to the cell, ``0 <= z < c``.

    Moved atoms are wrapped in x, y and clipped into ``0 <= z < c`` (a surface atom is never
    carried to the other surface).

    Atoms outside the layer are not moved.
    """
    nx, ny, _ = _require(atoms, "amorphous_layer")
    thickness = _finite("thickness_angstrom", thickness_angstrom)
    if not thickness > 0:
        raise field_error("thickness_angstrom", thickness_angstrom, "must be > 0 [Å]", StructureError)
    if mode not in AMORPHOUS_MODES:
        raise field_error("mode", mode, f"allowed: {', '.join(AMORPHOUS_MODES)}", StructureError)
    if side not in ("top", "bottom"):
        raise field_error("side", side, "allowed: top, bottom", StructureError)
    sigma = _finite("sigma_angstrom", sigma_angstrom)
    dmin = _finite("min_distance_angstrom", min_distance_angstrom)
    if sigma < 0:
        raise field_error("sigma_angstrom", sigma_angstrom, "must be >= 0 [Å]", StructureError)
    if not dmin > 0:
        raise field_error("min_distance_angstrom", min_distance_angstrom, "must be > 0 [Å]", StructureError)
    region = _region(region_xy, nx, ny) if region_xy is not None else None
    sel, bounds, key = _layer_selection(atoms, thickness, side, region)
    rng = _rng(seed)
    out = _copy(atoms)
    idx = np.flatnonzero(sel)
    if mode == "displace":
        new = out.positions[idx] + rng.normal(0.0, sigma, size=(len(idx), 3))
    else:
        new = _jam(out, idx, bounds, key, dmin, rng)[idx]
    _place(out, idx, new)
    out.info["defects"].append({"type": "amorphous", "thickness_angstrom": thickness, "mode": mode,
                                "sigma_angstrom": sigma, "min_distance_angstrom": dmin, "side": side,
                                "region": region, "seed": _seed_record(seed), "n_atoms": int(len(idx))})
    return out


def thickness_step(atoms: Atoms, region_xy, remove_cells: int = 1) -> Atoms:
    """Remove the top `remove_cells` pc layers (``iz >= nz - remove_cells``) of a region of columns.

    Parameters
    ----------
    region_xy : (x0, x1, y0, y1)
        Half-open pc column ranges.
    remove_cells : int
        1 .. nz - 1 (at least one layer stays).
    """
    nx, ny, nz = _require(atoms, "thickness_step")
    region = _region(region_xy, nx, ny)
    if (isinstance(remove_cells, (bool, np.bool_)) or not isinstance(remove_cells, (int, np.integer))
            or not 1 <= remove_cells <= nz - 1):
        raise field_error("remove_cells", remove_cells, f"must be an integer in 1..{nz - 1} (nz = {nz})",
                          StructureError)
    pc = atoms.arrays["pc_cell"]
    hit = _in_region(pc, region) & (pc[:, 2] >= nz - int(remove_cells))
    out = _copy(atoms)
    del out[np.flatnonzero(hit)]
    out.info["defects"].append({"type": "thickness_step", "region": region, "remove_cells": int(remove_cells),
                                "n_removed": int(hit.sum())})
    return out


# --------------------------------------------------------------------------- truth masks


@dataclass
class TruthMasks:
    """Truth on the probe grid: masks and the projected-polarization class of each position.

    Attributes
    ----------
    masks : dict of str -> bool ndarray (ny * ppc, nx * ppc)
        ``wall`` (within half a cell of a wall line, inclusive; walls of a DomainMap, else
        edges between columns of different variants in the same row/column of cells),
        ``seam_wall`` (the wall at the periodic seam, where the edge columns differ),
        ``a_vacancy``, ``b_vacancy``, ``o_vacancy`` (within half a cell of the vacancy
        column, periodic), ``rhombohedral``, ``amorphous``, ``thickness_step``,
        ``paraelectric`` (cubic columns) and ``defect`` (their union). Every name is
        present (all False if absent).
    classes : int ndarray (ny * ppc, nx * ppc)
        Index into ``class_labels`` (:func:`projection_classes` down [001]pc) of the variant
        of the column holding each position (column ``floor(x), floor(y)``); -1 for cubic
        columns and rhombohedral regions.
    class_labels : tuple of str
    positions_per_cell : int
    """

    masks: dict
    classes: np.ndarray
    class_labels: tuple
    positions_per_cell: int

    def positions_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """x, y (each (ny*ppc, nx*ppc)) of every probe position in pc cells."""
        ny_p, nx_p = self.classes.shape
        ppc = self.positions_per_cell
        return np.meshgrid((np.arange(nx_p) + 0.5) / ppc, (np.arange(ny_p) + 0.5) / ppc)

    def equals(self, other: "TruthMasks") -> bool:
        return (self.masks.keys() == other.masks.keys()
                and all(np.array_equal(self.masks[k], other.masks[k]) for k in self.masks)
                and np.array_equal(self.classes, other.classes) and self.class_labels == other.class_labels
                and self.positions_per_cell == other.positions_per_cell)


MASK_NAMES = ("wall", "seam_wall", "a_vacancy", "b_vacancy", "o_vacancy", "rhombohedral", "amorphous",
              "thickness_step", "paraelectric")


def _region_mask(x, y, region):
    x0, x1, y0, y1 = region
    return (x >= x0) & (x < x1) & (y >= y0) & (y < y1)


def truth_masks(defect_spec, nx: int, ny: int, positions_per_cell: int = 4) -> TruthMasks:
    """Truth masks and class labels on the probe grid from defect records (see the module docstring).

    Parameters
    ----------
    defect_spec : list of dict
        Records as in ``atoms.info['defects']``; the first (or any) 'domains' record gives
        the variant map (a :class:`DomainMap` is accepted in its place). Without one, every
        column counts as cubic.
    nx, ny : int
        Map size in pc columns.
    positions_per_cell : int
        Probe positions per pc cell along x and y (>= 1); position ``(i, j)`` sits at
        ``((j + 0.5) / ppc, (i + 0.5) / ppc)`` pc cells.
    """
    nx, ny = _check_grid(nx, ny)
    ppc = positions_per_cell
    if isinstance(ppc, (bool, np.bool_)) or not isinstance(ppc, (int, np.integer)) or ppc < 1:
        raise field_error("positions_per_cell", ppc, "must be an integer >= 1", StructureError)
    ppc = int(ppc)
    x, y = np.meshgrid((np.arange(nx * ppc) + 0.5) / ppc, (np.arange(ny * ppc) + 0.5) / ppc)
    cx, cy = np.floor(x).astype(int), np.floor(y).astype(int)
    masks = {k: np.zeros(x.shape, dtype=bool) for k in MASK_NAMES}
    vmap = np.full((nx, ny), None, dtype=object)
    walls = None
    if not isinstance(defect_spec, (list, tuple)):
        raise field_error("defect_spec", type(defect_spec).__name__, "must be a list of defect records",
                          StructureError)
    for rec in defect_spec:
        if isinstance(rec, DomainMap):
            rec = {"type": "domains", "variant_map": rec.variants.tolist(), "walls": [dict(w) for w in rec.walls]}
        if not isinstance(rec, dict) or "type" not in rec:
            raise field_error("defect_spec", rec, "each record must be a dict with a 'type'", StructureError)
        t = rec["type"]
        if t == "domains":
            vmap, walls = _normalize_map(rec["variant_map"])
            if vmap.shape != (nx, ny):
                raise field_error("variant_map", f"shape {vmap.shape}", f"must have shape ({nx}, {ny})",
                                  StructureError)
            walls = rec.get("walls")
        elif t == "vacancy_column":
            site = rec["site"]
            kx, ky = rec.get("column_xy") or (np.asarray(rec["cell_xy"], dtype=float) + _SITE_XY[site])
            dx = x - kx
            dy = y - ky
            dx -= np.round(dx / nx) * nx
            dy -= np.round(dy / ny) * ny
            name = {"A": "a_vacancy", "B": "b_vacancy"}.get(site, "o_vacancy")
            masks[name] |= dx * dx + dy * dy <= _HALF * _HALF
        elif t in ("rhombohedral", "thickness_step"):
            masks[t] |= _region_mask(x, y, _region(rec["region"], nx, ny))
        elif t == "amorphous":
            reg = rec.get("region")
            masks["amorphous"] |= True if reg is None else _region_mask(x, y, _region(reg, nx, ny))
        else:
            raise field_error("type", t, "allowed: domains, vacancy_column, rhombohedral, amorphous, "
                              "thickness_step", StructureError)
    if walls is None:  # edges between differing neighbour columns, interior and seam
        for ax, size in ((0, nx), (1, ny)):
            coord, row = (x, cy) if ax == 0 else (y, cx)
            for k in range(size + 1):
                lo, hi = (k - 1) % size, k % size
                if size < 2 and k in (0, size):
                    continue
                a = vmap[lo, :] if ax == 0 else vmap[:, lo]
                b = vmap[hi, :] if ax == 0 else vmap[:, hi]
                differ = np.array([va != vb for va, vb in zip(a, b)])
                near = np.abs(coord - k) <= _HALF
                masks["seam_wall" if k in (0, size) else "wall"] |= near & differ[row]
    else:
        for w in walls:
            n, p = np.asarray(w["normal"], dtype=float), np.asarray(w["point"], dtype=float)
            masks["wall"] |= np.abs((x - p[0]) * n[0] + (y - p[1]) * n[1]) <= _HALF
        # seam: the periodic images meet at x = 0 and y = 0
        for ax, size in ((0, nx), (1, ny)):
            if size < 2:
                continue
            a = vmap[size - 1, :] if ax == 0 else vmap[:, size - 1]
            b = vmap[0, :] if ax == 0 else vmap[:, 0]
            differ = np.array([va != vb for va, vb in zip(a, b)])
            coord, row = (x, cy) if ax == 0 else (y, cx)
            near = (coord <= _HALF) | (coord >= size - _HALF)
            masks["seam_wall"] |= near & differ[row]
    pc = projection_classes((0, 0, 1))
    col_class = np.array([[-1 if v is None else pc.class_of(v) for v in row] for row in vmap], dtype=int)
    classes = col_class[cx, cy]
    masks["paraelectric"] = np.array([[v is None for v in row] for row in vmap], dtype=bool)[cx, cy]
    classes[masks["rhombohedral"]] = -1
    masks["defect"] = np.logical_or.reduce([masks[k] for k in MASK_NAMES])
    return TruthMasks(masks=masks, classes=classes, class_labels=pc.labels, positions_per_cell=ppc)


def truth_masks_from_info(atoms: Atoms, positions_per_cell: int = 4) -> TruthMasks:
    """:func:`truth_masks` of the records in ``atoms.info['defects']`` (atoms from :func:`polar_domains`)."""
    nx, ny, _ = _require(atoms, "truth_masks_from_info")
    return truth_masks(atoms.info["defects"], nx, ny, positions_per_cell)
