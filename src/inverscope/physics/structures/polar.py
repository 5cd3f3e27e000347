"""Polar ABO3 perovskites with polarization along <110>pc: (K,Na)NbO3 in Amm2 (Martinc et al.).

Room-temperature KNbO3 (and K-rich (K,Na)NbO3) is orthorhombic Amm2 (No. 38) with the
polarization P along one of the 12 <110> directions of the pseudo-cubic (pc) perovskite
cell. This module builds any of these 12 polarization variants from the cubic perovskite
and a few symmetry-adapted amplitudes, in a supercell aligned with the pc axes, and groups
the variants into the classes a viewing direction can tell apart (the paper's 8 classes at
45 degrees down [001]pc).

Frames and conventions
----------------------
* Cartesian x, y, z are the pc axes [100], [010], [001]; the cell of ``n x n x m`` pc cells
  is the cubic one deformed by a symmetric strain (no rigid rotation). Lengths are in Å.
* Reference variant [110]: polar unit vector ``p = [110]/sqrt(2)``, transverse in-plane
  unit vector ``t = p x n = [1-10]/sqrt(2)``, non-polar axis ``n = [001]``. Every other
  variant is this one turned by a cubic rotation ``R`` with ``R p = p'`` (all 12 are
  therefore symmetry-equivalent; the stabilizer of [110] is the structure's own mm2, so
  the choice of ``R`` does not matter).
* Sites of the ideal pc cell (fractions of a_pc): A (0, 0, 0), B (1/2, 1/2, 1/2),
  O_z (1/2, 1/2, 0), O_y (1/2, 0, 1/2), O_x (0, 1/2, 1/2). For the reference variant O_z
  (the oxygen on the non-polar axis, Amm2 site O1, 2a) and O_x, O_y (Amm2 O2, 4e) differ.
* Displacements are measured from the centroid of the oxygen sublattice, which stays at
  its ideal place (per formula unit: (d(O_x) + d(O_y) + d(O_z)) / 3 = 0):

  ========  ===============================================
  site      displacement [Å] (reference variant)
  ========  ===============================================
  A         ``a_shift * p``
  B         ``b_shift * p``
  O_z       ``+2/3 * o_polar * p``
  O_y       ``-1/3 * o_polar * p + o_transverse * t``
  O_x       ``-1/3 * o_polar * p - o_transverse * t``
  ========  ===============================================

  ``b_shift`` is the off-centring of Nb in its O6 octahedron (the octahedron has 2 O_z and
  4 O_x/O_y, so its centroid is the sublattice centroid), ``a_shift`` the A-site shift
  against the same O frame, ``o_polar`` the polar deformation of the octahedron (O1 against
  O2 along P) and ``o_transverse`` the antiphase shift of the two O2 along ``t`` (Amm2's
  free O2 y). With the cell's Nb at z = 1/2 this is all the freedom of Amm2: 4 internal
  coordinates (K z, O1 z, O2 y, O2 z) and 3 lattice lengths.
* Strain: ``F = I + e_p p p^T + e_t t t^T + e_n n n^T`` turns the cubic cell of side
  ``a_pc`` into the orthorhombic one: Amm2 ``a = a_pc (1 + e_n)``, ``b = sqrt(2) a_pc (1 + e_t)``,
  ``c = sqrt(2) a_pc (1 + e_p)`` (``c`` polar). In the pc frame this is a shear of the two
  pc axes spanning the polar plane (cell angle 90 deg - about (e_p - e_t) rad, ~0.26 deg
  for KNbO3). ``strain='orthogonal'`` keeps only the strain's diagonal in the pc frame, an
  orthogonal cell that the multislice code accepts; ``strain='none'`` keeps the cube.

Defaults come from the bundled CIF (Hewat 1973 KNbO3, see
``inverscope/data/structures/README.md``) through :func:`amplitudes_from_cif`, so the [110]
variant with default amplitudes and ``strain='full'`` is that structure up to setting and
origin.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from math import gcd

import numpy as np
from ase import Atoms

from inverscope.core.errors import StructureError, field_error

#: The bundled reference structure (inside the ``inverscope.data`` package).
KNBO3_CIF = "structures/KNbO3_Amm2.cif"

STRAIN_MODES = ("full", "orthogonal", "none")
A_SITE_MODES = ("random", "virtual")

# Ideal sites of one pc cell, fractions of a_pc, in this order: A, B, O_z, O_y, O_x.
_SITE_NAMES = ("A", "B", "O_z", "O_y", "O_x")
_SITE_FRAC = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5],
                       [0.0, 0.5, 0.5]])

_P0 = np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0)
_T0 = np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0)
_N0 = np.array([0.0, 0.0, 1.0])


def _variant_vectors() -> tuple[tuple[int, int, int], ...]:
    out = []
    for i, j in ((0, 1), (0, 2), (1, 2)):
        for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            v = [0, 0, 0]
            v[i], v[j] = si, sj
            out.append(tuple(v))
    return tuple(out)


def _name(v) -> str:
    return "[" + "".join(str(int(c)) for c in v) + "]"


#: The 12 polarization variants as integer <110>pc vectors, and their names ('[1-10]', ...).
VARIANT_VECTORS: tuple[tuple[int, int, int], ...] = _variant_vectors()
VARIANTS: tuple[str, ...] = tuple(_name(v) for v in VARIANT_VECTORS)


@dataclass(frozen=True)
class PolarAmplitudes:
    """Symmetry-adapted amplitudes of the Amm2 distortion of a cubic ABO3 perovskite.

    Attributes
    ----------
    a_pc_angstrom : float
        Pseudo-cubic lattice constant [Å] (> 0); for the CIF defaults the cube root of the
        volume per formula unit.
    b_shift_angstrom : float
        B-site (Nb) shift along P relative to the centroid of its O6 octahedron [Å] (>= 0).
    a_shift_angstrom : float
        A-site shift along P relative to the same oxygen frame [Å] (>= 0).
    o_polar_angstrom : float
        Polar deformation of the octahedron: shift of the apical O1 (on the non-polar axis)
        minus that of the four O2, along P [Å]; signed.
    o_transverse_angstrom : float
        Antiphase shift of the two O2 sites along ``t = p x n`` [Å]; signed.
    strain_polar, strain_transverse, strain_normal : float
        Linear strains ``e_p, e_t, e_n`` along P, along ``t`` and along the non-polar axis
        ``n`` (dimensionless, each > -0.5).
    """

    a_pc_angstrom: float
    b_shift_angstrom: float = 0.0
    a_shift_angstrom: float = 0.0
    o_polar_angstrom: float = 0.0
    o_transverse_angstrom: float = 0.0
    strain_polar: float = 0.0
    strain_transverse: float = 0.0
    strain_normal: float = 0.0

    def validate(self) -> "PolarAmplitudes":
        """Return self, or raise :class:`StructureError` naming the first bad field."""
        for name, value in asdict(self).items():
            if not np.isfinite(value):
                raise field_error(name, value, "must be a finite number", StructureError)
        if not self.a_pc_angstrom > 0:
            raise field_error("a_pc_angstrom", self.a_pc_angstrom, "must be > 0 [Å]", StructureError)
        for name in ("b_shift_angstrom", "a_shift_angstrom"):
            if getattr(self, name) < 0:
                raise field_error(name, getattr(self, name),
                                  "must be >= 0 [Å] (the sense of P is set by the variant)", StructureError)
        for name in ("strain_polar", "strain_transverse", "strain_normal"):
            if not getattr(self, name) > -0.5:
                raise field_error(name, getattr(self, name), "must be > -0.5", StructureError)
        return self

    def replace(self, **changes) -> "PolarAmplitudes":
        """A copy with `changes` applied (e.g. ``amps.replace(b_shift_angstrom=0.1)``)."""
        return PolarAmplitudes(**{**asdict(self), **changes})

    def scaled(self, factor: float) -> "PolarAmplitudes":
        """Displacements and strains times `factor` (0 gives the cubic parent), same a_pc."""
        d = asdict(self)
        return PolarAmplitudes(a_pc_angstrom=self.a_pc_angstrom,
                               **{k: v * factor for k, v in d.items() if k != "a_pc_angstrom"})


# --------------------------------------------------------------------------- CIF -> modes


def _cif_path():
    return resources.files("inverscope.data").joinpath(KNBO3_CIF)


def read_knbo3_cif() -> Atoms:
    """The bundled KNbO3 Amm2 structure (conventional cell, 10 atoms), as ASE Atoms."""
    import ase.io

    with resources.as_file(_cif_path()) as path:
        return ase.io.read(path, format="cif")


def amplitudes_from_structure(atoms: Atoms, tol_angstrom: float = 1e-4) -> PolarAmplitudes:
    """Decompose an ABO3 Amm2 structure in the standard setting into :class:`PolarAmplitudes`.

    Parameters
    ----------
    atoms : ase.Atoms
        The conventional Amm2 cell (``a`` non-polar ~ a_pc, ``b, c`` ~ sqrt(2) a_pc, polar
        axis ``c``, cell axes along x, y, z), with 2 formula units ABO3.
    tol_angstrom : float
        Largest tolerated departure [Å] from the Amm2 pattern (equivalent atoms displaced
        differently, or displacements along the non-polar axis).

    Returns
    -------
    PolarAmplitudes
        In the frame of the reference variant [110]; the sense of P is taken from the B-site
        shift (the cell is turned by 180 degrees about ``a`` if that points along -c).
    """
    cellpar = atoms.cell.cellpar()
    if not np.allclose(cellpar[3:], 90.0, atol=1e-6):
        raise StructureError(f"amplitudes_from_structure: cell angles {cellpar[3:].tolist()} must all be 90 deg")
    a_vec, b_vec, c_vec = np.asarray(atoms.cell[:], dtype=float)
    a_len, b_len, c_len = cellpar[:3]
    basis = np.array([(c_vec + b_vec) / 2, (c_vec - b_vec) / 2, a_vec])  # pc cell vectors (rows)
    frac = atoms.positions @ np.linalg.inv(basis)
    if len(atoms) != 10:
        raise StructureError(f"amplitudes_from_structure: expected 10 atoms (2 ABO3), got {len(atoms)}")
    symbols = np.array(atoms.get_chemical_symbols())
    disp: dict[str, list[np.ndarray]] = {s: [] for s in _SITE_NAMES}
    species: dict[str, str] = {}
    for f, sym in zip(frac, symbols):
        delta = f[None, :] - _SITE_FRAC
        delta -= np.round(delta)
        site = int(np.argmin(np.linalg.norm(delta @ basis, axis=1)))
        disp[_SITE_NAMES[site]].append(delta[site] @ basis)
        species.setdefault(_SITE_NAMES[site], sym)
        if species[_SITE_NAMES[site]] != sym:
            raise StructureError(f"amplitudes_from_structure: site {_SITE_NAMES[site]} holds both "
                                 f"{species[_SITE_NAMES[site]]} and {sym}")
    if any(len(v) != 2 for v in disp.values()):
        raise StructureError("amplitudes_from_structure: atoms do not map one-to-one onto 2 perovskite cells")
    mean = {}
    for s, v in disp.items():
        v = np.asarray(v)
        if np.abs(v - v.mean(axis=0)).max() > tol_angstrom:
            raise StructureError(f"amplitudes_from_structure: the two {s} sites move differently; not Amm2")
        mean[s] = v.mean(axis=0)
    shift = (mean["O_x"] + mean["O_y"] + mean["O_z"]) / 3.0
    mean = {s: v - shift for s, v in mean.items()}
    c_hat, b_hat, a_hat = c_vec / c_len, b_vec / b_len, a_vec / a_len
    sense = 1.0 if mean["B"] @ c_hat >= 0 else -1.0  # 2-fold about a: b -> -b, c -> -c
    if max(abs(v @ a_hat) for v in mean.values()) > tol_angstrom:
        raise StructureError("amplitudes_from_structure: displacements along the non-polar axis a; not Amm2")
    for s in ("A", "B", "O_z"):
        if abs(mean[s] @ b_hat) > tol_angstrom:
            raise StructureError(f"amplitudes_from_structure: {s} moves along b; not Amm2")
    if abs(mean["O_x"] @ b_hat + mean["O_y"] @ b_hat) > tol_angstrom:
        raise StructureError("amplitudes_from_structure: the O2 shifts along b are not antiphase; not Amm2")
    a_pc = float((a_len * b_len * c_len / 2.0) ** (1.0 / 3.0))
    return PolarAmplitudes(
        a_pc_angstrom=a_pc,
        b_shift_angstrom=float(sense * mean["B"] @ c_hat),
        a_shift_angstrom=float(sense * mean["A"] @ c_hat),
        o_polar_angstrom=float(sense * (mean["O_z"] - mean["O_y"]) @ c_hat),
        o_transverse_angstrom=float(sense * mean["O_y"] @ b_hat),
        strain_polar=float(c_len / (np.sqrt(2.0) * a_pc) - 1.0),
        strain_transverse=float(b_len / (np.sqrt(2.0) * a_pc) - 1.0),
        strain_normal=float(a_len / a_pc - 1.0),
    )


@lru_cache(maxsize=1)
def _cif_amplitudes() -> PolarAmplitudes:
    return amplitudes_from_structure(read_knbo3_cif())


def amplitudes_from_cif(path) -> PolarAmplitudes:
    """Symmetry-mode amplitudes of an ABO3 Amm2 (No. 38) structure read from the CIF at `path`.

    Raises one line (:class:`StructureError`) for a missing or unparseable file, a structure
    spglib does not find in space group 38, or one that does not decompose into the Amm2
    pattern (see :func:`amplitudes_from_structure`: standard setting, polar axis c).
    """
    import warnings
    from pathlib import Path

    import ase.io
    import spglib

    p = Path(path)
    if not p.is_file():
        raise StructureError(f"cif: {p}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atoms = ase.io.read(p, format="cif")
    except Exception as err:  # ase raises many types on malformed CIFs
        raise StructureError(f"cif: {p}: not a readable CIF ({type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else 'no detail'})") from None
    cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
    sg = spglib.get_symmetry_dataset(cell, symprec=1e-3)
    number = getattr(sg, "number", None) if sg is not None else None
    if number != 38:
        name = getattr(sg, "international", "?") if sg is not None else "?"
        raise StructureError(f"cif: {p}: space group {name} (No. {number}); the polar builder needs Amm2 (No. 38)")
    try:
        return amplitudes_from_structure(atoms)
    except StructureError as err:
        raise StructureError(f"cif: {p}: {err}") from None


def knbo3_amplitudes() -> PolarAmplitudes:
    """Amplitudes of the bundled KNbO3 Amm2 CIF (the builder's defaults).

    For the bundled numbers: a_pc ≈ 4.014 Å, Nb shift ≈ 0.170 Å, K shift ≈ 0.072 Å,
    O1-O2 ≈ 0.074 Å, O2 transverse ≈ -0.020 Å, strains (e_p, e_t, e_n) ≈
    (+0.76 %, +0.31 %, -1.07 %).
    """
    return _cif_amplitudes()


# --------------------------------------------------------------------------- variants


def parse_variant(variant) -> tuple[str, np.ndarray]:
    """Name ('[1-10]') and integer pc vector of a <110> variant given as name or 3 integers."""
    if isinstance(variant, str):
        name = variant.strip().replace(" ", "")
        if not name.startswith("["):
            name = f"[{name}]"
        if name in VARIANTS:
            return name, np.array(VARIANT_VECTORS[VARIANTS.index(name)])
        raise field_error("variant", variant, f"allowed: {', '.join(VARIANTS)}", StructureError)
    try:
        vec = tuple(int(c) for c in variant)
        ok = len(vec) == 3 and np.allclose(np.asarray(variant, dtype=float), vec)
    except (TypeError, ValueError):
        ok = False
    if not ok or vec not in VARIANT_VECTORS:
        raise field_error("variant", variant, f"allowed: {', '.join(VARIANTS)} (or those as 3 integers)",
                          StructureError)
    return _name(vec), np.array(vec)


@lru_cache(maxsize=None)
def _rotation_to(vec: tuple[int, int, int]) -> np.ndarray:
    """A proper cubic rotation (signed permutation matrix, det +1) with R [110] = `vec`."""
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            r = np.zeros((3, 3))
            for row, (col, s) in enumerate(zip(perm, signs)):
                r[row, col] = s
            if np.linalg.det(r) > 0 and np.array_equal(r @ np.array([1, 1, 0]), np.array(vec)):
                return r
    raise AssertionError(f"no cubic rotation maps [110] onto {vec}")  # unreachable for <110>


def _reference_displacements(amps: PolarAmplitudes) -> np.ndarray:
    """Displacements [Å] of the five pc sites (A, B, O_z, O_y, O_x) for variant [110]."""
    up, wt = amps.o_polar_angstrom, amps.o_transverse_angstrom
    return np.array([amps.a_shift_angstrom * _P0,
                     amps.b_shift_angstrom * _P0,
                     (2.0 / 3.0) * up * _P0,
                     -(1.0 / 3.0) * up * _P0 + wt * _T0,
                     -(1.0 / 3.0) * up * _P0 - wt * _T0])


def variant_displacements(variant, amplitudes: PolarAmplitudes | None = None) -> np.ndarray:
    """Displacements [Å] (5, 3) of the pc sites A, B, O_z, O_y, O_x for one variant."""
    _, vec = parse_variant(variant)
    amps = (amplitudes or knbo3_amplitudes()).validate()
    rot = _rotation_to(tuple(int(c) for c in vec))
    ref = _reference_displacements(amps)
    out = np.empty_like(ref)
    for k, f in enumerate(_SITE_FRAC):
        back = (rot.T @ f) % 1.0  # the reference site that R carries onto site k
        j = int(np.argmin(np.linalg.norm(((_SITE_FRAC - back + 0.5) % 1.0) - 0.5, axis=1)))
        out[k] = rot @ ref[j]
    return out


def variant_strain(variant, amplitudes: PolarAmplitudes | None = None, strain: str = "full") -> np.ndarray:
    """Deformation gradient F (3, 3) of the pc cell for one variant (symmetric, pc frame)."""
    if strain not in STRAIN_MODES:
        raise field_error("strain", strain, f"allowed: {', '.join(STRAIN_MODES)}", StructureError)
    _, vec = parse_variant(variant)
    amps = (amplitudes or knbo3_amplitudes()).validate()
    if strain == "none":
        return np.eye(3)
    f0 = (np.eye(3) + amps.strain_polar * np.outer(_P0, _P0)
          + amps.strain_transverse * np.outer(_T0, _T0) + amps.strain_normal * np.outer(_N0, _N0))
    rot = _rotation_to(tuple(int(c) for c in vec))
    f = rot @ f0 @ rot.T
    return np.diag(np.diag(f)) if strain == "orthogonal" else f


def _check_count(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise field_error(name, value, "must be an integer >= 1", StructureError)
    return int(value)


def polar_perovskite(variant="[110]", n: int = 1, m: int = 1, amplitudes: PolarAmplitudes | None = None,
                     na_fraction: float = 0.0, seed: int | np.random.Generator | None = 0,
                     a_site: str = "random", strain: str = "full", b_species: str = "Nb",
                     z_offset_fraction: float = 0.25) -> Atoms:
    """One <110> polarization variant of (K,Na)NbO3 in an ``n x n x m`` pc supercell.

    Parameters
    ----------
    variant : str or sequence of 3 ints
        The polar direction, one of :data:`VARIANTS` ('[110]', '[1-10]', ..., '[0-1-1]') or
        the same as integers, e.g. ``(1, -1, 0)``.
    n, m : int
        Supercell size in pc cells along x, y (``n``) and z (``m``), each >= 1.
    amplitudes : PolarAmplitudes, optional
        Distortion amplitudes; default :func:`knbo3_amplitudes` (the bundled CIF).
        ``amplitudes.scaled(0)`` gives the cubic parent Pm-3m.
    na_fraction : float
        Fraction of A sites that are Na (the rest K), 0 to 1.
    seed : int, Generator or None
        Chooses the Na sites (``a_site='random'``).
    a_site : {'random', 'virtual'}
        'random': exactly ``round(na_fraction * n_A)`` A sites, chosen at random, are Na (one
        frozen configuration). 'virtual': every A site is the majority species (K at 0.5)
        and the mix is only recorded in ``atoms.info['a_site_mix']`` (the multislice
        potentials have no mixed-occupancy atoms).
    strain : {'full', 'orthogonal', 'none'}
        'full' (default): the exact Amm2 cell, sheared in the pc frame (not accepted by the
        multislice code, which needs an orthogonal cell); 'orthogonal': the strain's
        diagonal in the pc frame only (drops a shear of ~0.13 deg per axis pair for KNbO3);
        'none': the cubic cell of side a_pc.
    b_species : str
        The B-site element.
    z_offset_fraction : float
        Shift of all atoms along z, in pc cells, so that atom planes sit off the boundaries of
        half-cell slices (as in :func:`~inverscope.physics.structures.perovskite.perovskite_cell`).

    Returns
    -------
    ase.Atoms
        Periodic, cell vectors the (strained) pc axes times ``n, n, m``. ``atoms.info`` holds
        ``polar_variant`` (name), ``polarization_unit`` (unit P, pc = Cartesian frame),
        ``amplitudes`` (dict of :class:`PolarAmplitudes`), ``supercell`` ``(n, n, m)``,
        ``strain_model``, ``a_site_model``, ``na_fraction`` (realized),
        ``na_fraction_requested``, ``a_site_mix`` and ``seed`` (an int seed, else None).
    """
    name, vec = parse_variant(variant)
    n, m = _check_count("n", n), _check_count("m", m)
    amps = (amplitudes or knbo3_amplitudes()).validate()
    if a_site not in A_SITE_MODES:
        raise field_error("a_site", a_site, f"allowed: {', '.join(A_SITE_MODES)}", StructureError)
    if not (0.0 <= na_fraction <= 1.0):
        raise field_error("na_fraction", na_fraction, "must be in [0, 1]", StructureError)
    if not np.isfinite(z_offset_fraction):
        raise field_error("z_offset_fraction", z_offset_fraction, "must be finite", StructureError)
    f = variant_strain(vec, amps, strain)
    disp = variant_displacements(vec, amps)
    cells = np.array(list(itertools.product(range(n), range(n), range(m))), dtype=float)
    frac = (cells[None, :, :] + _SITE_FRAC[:, None, :]).reshape(-1, 3)  # site-major order
    frac[:, 2] += z_offset_fraction
    pos = (amps.a_pc_angstrom * frac) @ f.T + np.repeat(disp, len(cells), axis=0)
    n_a = len(cells)
    a_symbols = np.full(n_a, "K", dtype=object)
    k_na = int(round(na_fraction * n_a))
    if a_site == "random":
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        if k_na:
            a_symbols[rng.choice(n_a, size=k_na, replace=False)] = "Na"
        realized = k_na / n_a
    else:
        a_symbols[:] = "Na" if na_fraction > 0.5 else "K"
        realized = float(na_fraction)
    symbols = list(a_symbols) + [b_species] * n_a + ["O"] * (3 * n_a)
    cell = (amps.a_pc_angstrom * f @ np.diag([n, n, m])).T  # rows: strained pc axes times n, n, m
    try:
        atoms = Atoms(symbols, positions=pos, cell=cell, pbc=True)
    except KeyError as err:
        raise StructureError(f"polar_perovskite: unknown element {err.args[0]!r}") from None
    atoms.wrap()
    p_unit = vec / np.linalg.norm(vec)
    atoms.info.update(
        polar_variant=name,
        polarization_unit=[float(c) for c in p_unit],
        amplitudes=asdict(amps),
        supercell=(n, n, m),
        strain_model=strain,
        a_site_model=a_site,
        na_fraction=realized,
        na_fraction_requested=float(na_fraction),
        a_site_mix={"K": 1.0 - float(na_fraction), "Na": float(na_fraction)},
        seed=int(seed) if isinstance(seed, (int, np.integer)) else None,
    )
    return atoms


def all_variants(n: int = 1, m: int = 1, **kwargs) -> dict[str, Atoms]:
    """All 12 variants, ``{name: atoms}``, built with the same arguments (see :func:`polar_perovskite`)."""
    return {name: polar_perovskite(name, n, m, **kwargs) for name in VARIANTS}


# --------------------------------------------------------------------------- projection classes


@dataclass(frozen=True)
class ProjectionClasses:
    """The variants that a viewing direction can tell apart, grouped by projected polarization.

    Attributes
    ----------
    zone : tuple of int
        The viewing direction [uvw]pc.
    in_plane_x, in_plane_y : ndarray
        Unit vectors (pc frame) of the image plane; ``(in_plane_x, in_plane_y, zone)`` is
        right-handed. Angles are counterclockwise from ``in_plane_x`` towards ``in_plane_y``
        when looking along the zone axis from its tip, in [0, 360). For zone [001]
        (the beam along +z of the multislice convention) ``in_plane_x = [100]``,
        ``in_plane_y = [010]``, so [110] is at 45 deg and [101] at 0 deg.
    labels : tuple of str
        One per class: the projected direction as a reduced integer pc vector ('[100]',
        '[11-2]', '[000]' for P along the zone), with ``|P|=...`` appended only if two
        classes share a direction.
    angles_deg : tuple of float
        In-plane angle of each class's projected P (NaN for a zero projection).
    magnitudes : tuple of float
        Length of the projected unit polarization of each class (0..1).
    members : tuple of tuple of str
        The variant names in each class.
    """

    zone: tuple[int, int, int]
    in_plane_x: np.ndarray
    in_plane_y: np.ndarray
    labels: tuple[str, ...]
    angles_deg: tuple[float, ...]
    magnitudes: tuple[float, ...]
    members: tuple[tuple[str, ...], ...]

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def class_of(self, variant) -> int:
        """Index of the class holding `variant`."""
        name, _ = parse_variant(variant)
        return next(i for i, mem in enumerate(self.members) if name in mem)

    def variant_labels(self) -> dict[str, str]:
        """``{variant name: class label}`` for all 12 variants."""
        return {v: self.labels[i] for i, mem in enumerate(self.members) for v in mem}


def _reduced(v: np.ndarray) -> tuple[int, ...]:
    g = 0
    for c in v:
        g = gcd(g, int(c))
    return tuple(int(c) // g for c in v) if g else (0, 0, 0)


def projection_classes(zone=(0, 0, 1), tol: float = 1e-6, in_plane_x=None) -> ProjectionClasses:
    """Group the 12 <110> variants by their polarization projected onto the plane normal to `zone`.

    Variants whose projected unit polarization vectors differ by less than `tol` are one
    class: down [001]pc this gives 8 classes 45 deg apart ([101] and [10-1] both project onto
    [100], ...); down [111]pc all 12 are distinct (30 deg apart, two different lengths).

    Parameters
    ----------
    zone : sequence of 3 ints
        Viewing direction [uvw]pc, not all zero.
    tol : float
        Tolerance on the projected unit vectors (dimensionless, > 0).
    in_plane_x : sequence of 3 numbers, optional
        Reference direction of angle 0 (projected onto the image plane). Default: the first
        of [100], [010] whose projection is not shorter than 0.1.

    Returns
    -------
    ProjectionClasses
        Classes ordered by angle; a class of zero projection (P along the zone), if any, last.
    """
    try:
        z_int = tuple(int(c) for c in zone)
        ok = len(z_int) == 3 and np.allclose(np.asarray(zone, dtype=float), z_int) and any(z_int)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise field_error("zone", zone, "must be 3 integers, not all zero", StructureError)
    if not (tol > 0):
        raise field_error("tol", tol, "must be > 0", StructureError)
    v = np.array(z_int, dtype=float)
    v_hat = v / np.linalg.norm(v)
    candidates = [np.asarray(in_plane_x, dtype=float)] if in_plane_x is not None else [np.eye(3)[0], np.eye(3)[1]]
    x_axis = None
    for c in candidates:
        if c.shape != (3,) or not np.all(np.isfinite(c)):
            break
        proj = c - (c @ v_hat) * v_hat
        if np.linalg.norm(proj) >= 0.1 * max(np.linalg.norm(c), 1e-12):
            x_axis = proj / np.linalg.norm(proj)
            break
    if x_axis is None:
        raise field_error("in_plane_x", in_plane_x, "must be 3 numbers not parallel to the zone", StructureError)
    y_axis = np.cross(v_hat, x_axis)
    groups: list[dict] = []
    v2 = int(np.dot(z_int, z_int))
    for name, vec in zip(VARIANTS, VARIANT_VECTORS):
        p = np.array(vec, dtype=float) / np.sqrt(2.0)
        proj = p - (p @ v_hat) * v_hat
        for g in groups:
            if np.linalg.norm(g["proj"] - proj) < tol:
                g["members"].append(name)
                break
        else:
            exact = np.array(vec) * v2 - int(np.dot(vec, z_int)) * np.array(z_int)  # integer, ∥ proj
            groups.append({"proj": proj, "members": [name], "dir": _reduced(exact)})
    for g in groups:
        mag = float(np.linalg.norm(g["proj"]))
        g["mag"] = mag
        g["angle"] = (round(float(np.degrees(np.arctan2(g["proj"] @ y_axis, g["proj"] @ x_axis))), 9) % 360.0
                      if mag >= tol else float("nan"))
        if mag < tol:
            g["mag"], g["dir"] = 0.0, (0, 0, 0)
    groups.sort(key=lambda g: (np.isnan(g["angle"]), 0.0 if np.isnan(g["angle"]) else g["angle"], -g["mag"]))
    dirs = [g["dir"] for g in groups]
    labels = tuple(_name(g["dir"]) + (f"|P|={g['mag']:.3f}" if dirs.count(g["dir"]) > 1 else "") for g in groups)
    return ProjectionClasses(
        zone=z_int,
        in_plane_x=x_axis,
        in_plane_y=y_axis,
        labels=labels,
        angles_deg=tuple(g["angle"] for g in groups),
        magnitudes=tuple(g["mag"] for g in groups),
        members=tuple(tuple(g["members"]) for g in groups),
    )
