"""Labeled 4D-STEM of the 12 <110> polarization variants of (K,Na)NbO3, in a resumable store.

Polarization mapping from 4D-STEM (Martinc et al.) needs CBED patterns at many probe
positions over each polar variant, with the variant and its projected polarization as
labels. One item of the store is one variant: a single multislice pass down [001]pc through
an ``n x n x m`` pc supercell of :func:`~inverscope.physics.structures.polar.polar_perovskite`
gives the CBED at every probe position and every requested exit thickness; frozen-phonon
configurations (``phonon_configs > 0``) are averaged incoherently inside the item
(``phonon_configs: 0`` gives the static patterns). Running, resuming, locking and
verification are those of every store job (:mod:`inverscope.datasets.jobstore`).

Geometry
--------
* Beam along +z = [001]pc; x, y are [100]pc, [010]pc (the frame of
  :func:`~inverscope.physics.structures.polar.projection_classes`).
* Probe positions: a ``k x k`` grid (``endpoint=False``) over the scan area, with
  ``k = positions_per_cell`` for ``scan_area: cell`` (one pc cell at the origin, an A site)
  and ``k = positions_per_cell * repeat_xy`` for ``scan_area: supercell`` (the whole supercell,
  so every cell's own A-site configuration is seen). Positions are the same fractions of
  the scan area for every variant; in Å they follow the variant's (strained) cell, so they
  are stored per variant (``attrs.positions_angstrom``, order: x-major, as ``grid_scan``).
* Exits: each requested thickness [nm] becomes a whole number of pc cells,
  ``round(10 t / a_pc)`` (>= 1), the same for every variant; in Å it is that number times the
  variant's strained cell height (``attrs.exits_angstrom``, and ``cell_z_angstrom`` per item).
  The slab is as thick as the last exit; all exits come from one pass.
* Detector: the patterns are the anti-aliased diffraction plane cropped and area-weighted
  binned (intensity conserving) to ``pattern_pixels x pattern_pixels`` pixels of
  ``detector_sampling_mrad`` each, the same calibration for every variant (the strained cells
  differ by ~1 %, so their native pixels differ: a fixed detector sees that as it would in
  an experiment). The half-width is ``pattern_pixels / 2 * detector_sampling_mrad``
  (defaults: 64 px x 3.2 mrad = +-102.4 mrad, 4.3 times the 24 mrad semiangle); the
  undiffracted beam is at pixel ``(P // 2, P // 2)``. The pixel must not be finer than the
  simulated grid's (``lambda / supercell side``: 3.12 mrad for 2 x 2 KNbO3 cells at 200 kV),
  so a finer detector needs a larger ``repeat_xy``; and the pattern must lie inside the
  anti-aliasing cutoff (2/3 of Nyquist, set by ``sampling_angstrom``). Each pattern holds
  the fraction of the incident intensity scattered into it (<= 1; the rest went beyond the
  pattern's edge or the anti-aliasing cutoff).

Store layout (Zarr v3 group)::

    patterns          (variants, exits, positions, P, P) float32, one chunk per variant
    variant_index     (variants,) int16   index into polar.VARIANTS
    class_index       (variants,) int16   index into projection_classes((0, 0, 1)) (8 classes)
    p_x, p_y, p_z     (variants,) float32 polarization unit vector (pc = Cartesian frame)
    cell_x_angstrom, cell_y_angstrom, cell_z_angstrom (variants,) float32  strained pc cell
    checksum          (variants,) uint32,  done (variants,) bool
    attrs: schema, config, config_hash, variants, class_labels, class_angles_deg, exit_cells,
           exits_angstrom {variant: [...]}, positions_fraction, positions_angstrom {variant:
           [[x, y], ...]}, gpts {variant: [nx, ny]}, sampling_mrad, energy_ev, semiangle_mrad, axes,
           complete

Limits of the data
------------------
The multislice projects the potential within each slice (half a pc cell by default), and the
polar displacements (< 0.2 Å) keep every atom in its slice, so the component of P along the
beam is invisible: variants in one projection class ([101] and [10-1], ...) give identical
static patterns (checked: equal to the last bit). Along [001]pc the learnable label is
``class_index`` (8 classes); ``variant_index`` is recorded for bookkeeping. Variants of
opposite in-plane P ([110], [-1-10]) are the 180 degree rotation of each other about the beam,
so their patterns are related exactly by ``k -> -k`` with the probe at ``-r``; at one probe
position a polar crystal breaks Friedel's law (by 15-40 % of the brightest pixel here).

:func:`read_item` returns one variant's patterns with all its labels as arrays.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

import inverscope
from inverscope.core.config import StrictModel
from inverscope.core.device import resolve_device
from inverscope.core.errors import ConfigError, GridError, InverscopeError
from inverscope.core.grid import Grid
from inverscope.core.resources import Estimate, multislice_memory
from inverscope.datasets.families import sample_rng
from inverscope.datasets.jobstore import StoreJob, run_store_job
from inverscope.physics.multislice.detectors import PixelatedDetector, _cutoff_gpts
from inverscope.physics.multislice.phonons import FrozenPhonons
from inverscope.physics.multislice.potentials import PotentialBuilder
from inverscope.physics.multislice.probe import Probe
from inverscope.physics.multislice.scan import Scan
from inverscope.physics.multislice.simulate import MultisliceSimulation
from inverscope.physics.structures.polar import (VARIANTS, amplitudes_from_cif, knbo3_amplitudes, parse_variant, polar_perovskite,
                                                 projection_classes)

SCHEMA = "inverscope.polar_4d/1"

#: RMS thermal displacements per axis [Å] at room temperature for the frozen phonons:
#: sigma = sqrt(B / 8 pi^2) with B ~ 0.7 (K), 0.9 (Na), 0.35 (Nb), 0.6 (O) Å^2, typical of
#: KNbO3 / (K,Na)NbO3 refinements. These B values are an estimate, not taken from a cited
#: refinement: check them against one before quoting phonon results (override ``phonon_sigmas_angstrom``).
DEFAULT_SIGMAS_ANGSTROM = {"K": 0.094, "Na": 0.107, "Nb": 0.067, "O": 0.087}


class PolarCompute(StrictModel):
    device: str = "auto"
    torch_threads: int | None = Field(None, ge=1)
    memory_budget_mb: float = Field(512.0, gt=0, le=1e6, description="working set of one probe batch [MiB]")


class PolarCampaignConfig(StrictModel):
    """4D-STEM of polar (K,Na)NbO3 variants down [001]pc; every field that shapes the data."""

    kind: Literal["polar_4d"] = "polar_4d"
    name: str = "polar_4d"
    # ---- specimen (see polar.polar_perovskite)
    variants: list[str] = Field(default_factory=lambda: list(VARIANTS),
                                description="polarization variants, names of polar.VARIANTS ('[110]', '[1-10]', ...)")
    cif: str | None = Field(None, description="an Amm2 CIF whose symmetry-mode amplitudes replace the bundled "
                            "KNbO3 (path; checked with spglib)")
    na_fraction: float = Field(0.0, ge=0, le=1, description="fraction of A sites that are Na, 0..1")
    a_site: Literal["random", "virtual"] = "random"
    strain: Literal["orthogonal", "none"] = Field("orthogonal", description="cell model of polar.polar_perovskite")
    repeat_xy: int = Field(2, ge=1, le=16, description="pc cells along x and y of the supercell, 1..16")
    thicknesses_nm: list[float] = Field(default_factory=lambda: [20.0, 50.0], min_length=1,
                                        description="exit thicknesses [nm], each in (0, 500], increasing; one pass")
    slices_per_cell: int = Field(2, ge=1, le=8, description="slices per pc cell along z, 1..8")
    # ---- microscope
    energy_kev: float = Field(200.0, gt=0, le=1000, description="accelerating voltage [kV], (0, 1000]")
    semiangle_mrad: float = Field(24.0, gt=0, le=100, description="convergence semiangle [mrad], (0, 100]")
    defocus_angstrom: float = Field(0.0, ge=-5000, le=5000, description="probe defocus [Å] (positive: underfocus, "
                                    "the engine's convention), [-5000, 5000]")
    tilt_mrad: tuple[float, float] = Field((0.0, 0.0), description="crystal tilt (x, y) [mrad] off [001]pc, "
                                           "each within the engine's limit")
    # ---- scan
    positions_per_cell: int = Field(4, ge=1, le=64, description="probe positions per pc cell along x and y, 1..64")
    scan_area: Literal["cell", "supercell"] = Field("supercell", description="one pc cell or the whole supercell")
    # ---- frozen phonons
    phonon_configs: int = Field(0, ge=0, le=256, description="frozen-phonon configurations, 0 (static)..256")
    phonon_sigmas_angstrom: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SIGMAS_ANGSTROM),
                                                     description="RMS displacement per axis [Å], per element, 0..0.5")
    # ---- grid and detector
    sampling_angstrom: float = Field(0.08, gt=0, le=1, description="real-space pixel [Å], (0, 1]")
    gpts: int | None = Field(None, ge=16, le=4096, description="grid points per side, overrides sampling_angstrom")
    pattern_pixels: int = Field(64, ge=4, le=1024, description="output pattern side [px], 4..1024")
    detector_sampling_mrad: float = Field(3.2, gt=0, le=100, description="output pixel [mrad], (0, 100]")
    seed: int = Field(0, ge=0, description="seeds the Na sites (stream 0) and the phonons (stream 1) of each variant")
    compute: PolarCompute = Field(default_factory=PolarCompute)

    @field_validator("variants")
    @classmethod
    def _variants(cls, value):
        if not value:
            raise ValueError("give at least one variant")
        names = []
        for v in value:
            try:
                names.append(parse_variant(v)[0])
            except InverscopeError:
                raise ValueError(f"unknown variant {v!r}; allowed: {', '.join(VARIANTS)}") from None
        if len(set(names)) != len(names):
            raise ValueError(f"variants repeat: {names}")
        return names

    @field_validator("cif")
    @classmethod
    def _cif(cls, value):
        if value is not None:
            amplitudes_from_cif(value)  # one line for a missing, unparseable or non-Amm2 file
        return value

    def amplitudes(self):
        """The symmetry-mode amplitudes: of ``cif`` when given, else the bundled KNbO3."""
        return amplitudes_from_cif(self.cif) if self.cif else knbo3_amplitudes()

    @field_validator("phonon_sigmas_angstrom")
    @classmethod
    def _sigmas(cls, value):
        bad = {k: v for k, v in value.items() if not 0 <= v <= 0.5}
        if bad:
            raise ValueError(f"RMS displacements must be in [0, 0.5] Å; got {bad}")
        return value

    @model_validator(mode="after")
    def _check(self):
        t = self.thicknesses_nm
        if any(not 0 < x <= 500 for x in t) or any(b <= a for a, b in zip(t, t[1:])):
            raise ConfigError(f"thicknesses_nm: got {t}; need increasing values in (0, 500] [nm]")
        cells = self.exit_cells()
        if len(set(cells)) != len(cells):
            raise ConfigError(f"thicknesses_nm: {t} nm round to the same whole pc cells {cells}; space them further")
        if self.phonon_configs > 0:
            need = {"K", "Nb", "O"} | ({"Na"} if self.na_fraction > 0 else set())
            missing = sorted(need - set(self.phonon_sigmas_angstrom))
            if missing:
                raise ConfigError(f"phonon_sigmas_angstrom: no value for {missing} [Å]")
        return self

    # ---- derived
    def data_dict(self) -> dict:
        return self.model_dump(mode="json", exclude={"compute", "name", "kind"})

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.data_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def exit_cells(self) -> list[int]:
        """Exits as whole pc cells (the same for every variant)."""
        a = knbo3_amplitudes().a_pc_angstrom
        return [max(1, int(round(10.0 * x / a))) for x in self.thicknesses_nm]

    def scan_fractions(self) -> np.ndarray:
        """(N, 2) probe positions as fractions of the supercell (x-major order, as ``grid_scan``)."""
        k = self.positions_per_cell * (self.repeat_xy if self.scan_area == "supercell" else 1)
        span = 1.0 if self.scan_area == "supercell" else 1.0 / self.repeat_xy
        axis = np.arange(k) * (span / k)
        xx, yy = np.meshgrid(axis, axis, indexing="ij")
        return np.stack([xx.ravel(), yy.ravel()], axis=1)

    def detector(self) -> PixelatedDetector:
        p = self.pattern_pixels
        return PixelatedDetector(sampling_mrad=self.detector_sampling_mrad, shape=(p, p))


def build_atoms(cfg: PolarCampaignConfig, index: int):
    """The supercell of variant `index` (``cfg.variants[index]``), as thick as the last exit."""
    return polar_perovskite(cfg.variants[index], cfg.repeat_xy, max(cfg.exit_cells()), amplitudes=cfg.amplitudes(),
                            na_fraction=cfg.na_fraction,
                            seed=sample_rng(cfg.seed, index, 0), a_site=cfg.a_site, strain=cfg.strain)


def _cell(atoms, cfg: PolarCampaignConfig) -> np.ndarray:
    """Strained pc cell (x, y, z) [Å] of `atoms`."""
    n, m = cfg.repeat_xy, max(cfg.exit_cells())
    return np.diag(np.asarray(atoms.cell[:], dtype=float)) / np.array([n, n, m])


def _check_detector(cfg: PolarCampaignConfig, grid: Grid, wavelength: float, variant: str) -> None:
    native = max(grid.angular_sampling_mrad(wavelength))
    if cfg.detector_sampling_mrad < native * (1 - 1e-9):
        need = int(np.ceil(cfg.repeat_xy * native / cfg.detector_sampling_mrad))
        raise GridError(f"detector_sampling_mrad: got {cfg.detector_sampling_mrad}; finer than the simulated "
                        f"{native:.3f} mrad/px of variant {variant} (lambda / supercell side); use repeat_xy >= {need} "
                        f"or a coarser detector")
    cut = min(_cutoff_gpts(grid))
    cutoff_mrad = (cut // 2 + 0.5) * native
    half = (cfg.pattern_pixels // 2) * cfg.detector_sampling_mrad
    if half > cutoff_mrad + 1e-9:
        dx = max(grid.sampling) * cutoff_mrad / half
        raise GridError(f"pattern_pixels: {cfg.pattern_pixels} px of {cfg.detector_sampling_mrad} mrad reach "
                        f"{half:.1f} mrad, beyond the simulated grid's anti-aliasing cutoff of {cutoff_mrad:.1f} mrad "
                        f"({grid.gpts[0]} x {grid.gpts[1]} points); use fewer pixels, a finer sampling_angstrom "
                        f"(<= {dx:.4f} Å) or more gpts")


def build_simulation(cfg: PolarCampaignConfig, index: int, device: str | None = None) -> MultisliceSimulation:
    """The 4D-STEM simulation of variant `index` (checks everything, simulates nothing)."""
    atoms = build_atoms(cfg, index)
    cell = _cell(atoms, cfg)
    extent = np.asarray(cell[:2] * cfg.repeat_xy)
    k = int(round(np.sqrt(len(cfg.scan_fractions()))))
    scan = Scan(cfg.scan_fractions() * extent[None], (k, k))
    phonon_seed = int(sample_rng(cfg.seed, index, 1).integers(2**31))
    return _simulation(cfg, atoms, cell, scan, phonon_seed, cfg.variants[index], device)


def _simulation(cfg: PolarCampaignConfig, atoms, cell, scan: Scan, phonon_seed: int, what: str,
                device: str | None) -> MultisliceSimulation:
    extent = tuple(np.diag(np.asarray(atoms.cell[:], float))[:2])
    grid = Grid.from_gpts(extent, cfg.gpts) if cfg.gpts else Grid.from_sampling(extent, cfg.sampling_angstrom)
    probe = Probe(cfg.energy_kev * 1e3, cfg.semiangle_mrad, defocus_angstrom=cfg.defocus_angstrom)
    _check_detector(cfg, grid, probe.wavelength_angstrom, what)
    potential = PotentialBuilder(atoms, grid, slice_thickness_angstrom=cell[2] / cfg.slices_per_cell)
    phonons = None
    if cfg.phonon_configs > 0:
        phonons = FrozenPhonons(cfg.phonon_sigmas_angstrom, cfg.phonon_configs, phonon_seed)
    exits = np.asarray(cfg.exit_cells(), float) * cell[2]
    return MultisliceSimulation(potential, probe, scan, cfg.detector(), thicknesses_angstrom=exits, phonons=phonons,
                                device=str(resolve_device(device or cfg.compute.device)),
                                memory_budget_mb=cfg.compute.memory_budget_mb, tilt_mrad=cfg.tilt_mrad)


def simulate_structure(cfg: PolarCampaignConfig, atoms, positions_per_cell: int, *, seed: int = 0,
                       device: str | None = None) -> np.ndarray:
    """4D-STEM of any pc supercell (a defect scene of :mod:`~inverscope.physics.structures.polar_defects`).

    `atoms` has an orthogonal cell of ``nx x ny x nz`` pc cells (``atoms.info['defects'][0]``
    names them, as :func:`~inverscope.physics.structures.polar_defects.polar_domains` writes) and
    is at least as thick as the last exit of `cfg`. The probe visits the positions of
    :func:`~inverscope.physics.structures.polar_defects.truth_masks`: ``((j + 0.5) / ppc, (i + 0.5) /
    ppc)`` pc cells for scan row ``i`` (y) and column ``j`` (x). Microscope, detector, exits and
    phonons are those of `cfg` (its specimen fields are not used); `seed` seeds the phonons.

    Returns
    -------
    float32 ``(exits, ny * ppc, nx * ppc, P, P)``
    """
    rec = (atoms.info.get("defects") or [{}])[0]
    try:
        nx, ny, nz = int(rec["nx"]), int(rec["ny"]), int(rec["nz"])
    except (KeyError, TypeError, ValueError):
        raise InverscopeError("atoms: no 'domains' record in atoms.info['defects']; build it with "
                              "polar_defects.polar_domains") from None
    if nz < max(cfg.exit_cells()):
        raise InverscopeError(f"atoms: {nz} pc cells thick; the last exit of the config needs {max(cfg.exit_cells())}")
    cell = np.diag(np.asarray(atoms.cell[:], float)) / np.array([nx, ny, nz])
    ppc = int(positions_per_cell)
    rows, cols = ny * ppc, nx * ppc
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    pos = np.stack([(jj.ravel() + 0.5) / ppc * cell[0], (ii.ravel() + 0.5) / ppc * cell[1]], axis=1)
    sim = _simulation(cfg, atoms, cell, Scan(pos), int(seed), "the structure", device)
    out = np.empty((len(sim.exit_slices), len(pos), *sim.plan.shape), np.float32)
    for start, stop, batch in sim.iter_batches():
        out[:, start:stop] = np.swapaxes(batch, 0, 1)
    return out.reshape(len(sim.exit_slices), rows, cols, *sim.plan.shape)


def simulate_variant(cfg: PolarCampaignConfig, index: int, device: str | None = None) -> np.ndarray:
    """Patterns (exits, positions, P, P) float32 of variant `index`."""
    sim = build_simulation(cfg, index, device)
    out = np.empty((len(sim.exit_slices), len(sim.scan), *sim.plan.shape), np.float32)
    for start, stop, batch in sim.iter_batches():
        out[:, start:stop] = np.swapaxes(batch, 0, 1)
    return out


class PolarCampaignJob(StoreJob):
    """4D-STEM of polar variants as a resumable store job: one item per variant."""

    schema, what, item = SCHEMA, "polar 4D-STEM store", "variant"
    labels = {"variant_index": ("int16", -1), "class_index": ("int16", -1),
              "p_x": ("float32", np.nan), "p_y": ("float32", np.nan), "p_z": ("float32", np.nan),
              "cell_x_angstrom": ("float32", np.nan), "cell_y_angstrom": ("float32", np.nan),
              "cell_z_angstrom": ("float32", np.nan)}
    verify_label = "variant_index"
    config_type = PolarCampaignConfig

    def num_items(self) -> int:
        return len(self.cfg.variants)

    def item_shape(self) -> tuple[int, ...]:
        p = self.cfg.pattern_pixels
        return (len(self.cfg.exit_cells()), len(self.cfg.scan_fractions()), p, p)

    def attrs(self) -> dict:
        cfg = self.cfg
        classes = projection_classes((0, 0, 1))
        exits, positions, gpts = {}, {}, {}
        for i, v in enumerate(cfg.variants):  # each variant has its own (strained) cell, so its own grid
            sim = build_simulation(cfg, i, device="cpu")
            exits[v] = sim.thicknesses_angstrom.tolist()
            positions[v] = sim.scan.positions_angstrom.tolist()
            gpts[v] = list(sim.potential.grid.gpts)
        return {"name": cfg.name, "inverscope_version": inverscope.__version__, "variants": list(cfg.variants),
                "all_variants": list(VARIANTS), "class_labels": list(classes.labels),
                "class_angles_deg": [None if np.isnan(a) else a for a in classes.angles_deg],
                "zone": [0, 0, 1], "energy_ev": cfg.energy_kev * 1e3, "semiangle_mrad": cfg.semiangle_mrad,
                "exit_cells": cfg.exit_cells(), "exits_angstrom": exits, "positions_fraction": cfg.scan_fractions().tolist(),
                "positions_angstrom": positions, "sampling_mrad": list(sim.plan.sampling_mrad),
                "gpts": gpts, "pattern_center_px": [cfg.pattern_pixels // 2] * 2,
                "axes": ["variant", "exit", "position", "kx", "ky"]}

    def precheck(self) -> None:
        for i in range(len(self.cfg.variants)):  # cheap (atoms, grids, detector plan); each variant has its own cell
            build_simulation(self.cfg, i, device="cpu")

    def estimate(self, n_workers: int) -> Estimate:
        return estimate_resources(self.cfg, n_workers)

    def simulate(self, index: int) -> tuple[np.ndarray, dict]:
        cfg = self.cfg
        atoms = build_atoms(cfg, index)
        cell = _cell(atoms, cfg)
        name = cfg.variants[index]
        p = np.asarray(atoms.info["polarization_unit"], float)
        labels = {"variant_index": VARIANTS.index(name), "class_index": projection_classes((0, 0, 1)).class_of(name),
                  "p_x": p[0], "p_y": p[1], "p_z": p[2],
                  "cell_x_angstrom": cell[0], "cell_y_angstrom": cell[1], "cell_z_angstrom": cell[2]}
        return simulate_variant(cfg, index), labels


def estimate_resources(cfg: PolarCampaignConfig, n_workers: int = 0) -> Estimate:
    """Memory [bytes] of the simulating processes and disk of the finished store, from the config."""
    a = knbo3_amplitudes().a_pc_angstrom * 1.02  # largest strained side
    side = cfg.gpts or cfg.repeat_xy * a / cfg.sampling_angstrom
    gpts = (side, side)
    m = max(cfg.exit_cells())
    n_pos = len(cfg.scan_fractions())
    item = 4.0 * len(cfg.exit_cells()) * n_pos * cfg.pattern_pixels ** 2
    batch = min(n_pos, max(1, int(cfg.compute.memory_budget_mb * 2**20 // (side * side * 8 * 3))))
    per = Estimate("variant")
    multislice_memory(per, gpts, m * cfg.slices_per_cell, 5 * cfg.repeat_xy ** 2 * m, batch,
                      max(1, cfg.phonon_configs))
    est = Estimate("polar 4D-STEM campaign")
    for name, value in per.memory_parts.items():
        est.add_memory(name, value * max(1, n_workers))
    est.add_memory("patterns of one variant", 2 * item * max(1, n_workers))
    est.add_disk("stored patterns (float32, uncompressed)", item * len(cfg.variants))
    return est


def read_item(path, index: int) -> dict:
    """Variant `index` of the store at `path`: patterns (exits, positions, P, P) and its labels as arrays."""
    import zarr

    g = zarr.open_group(str(path), mode="r")
    name = g.attrs["variants"][index]
    return {"patterns": g["patterns"][index], "variant": name, "variant_index": int(g["variant_index"][index]),
            "class_index": int(g["class_index"][index]),
            "class_label": g.attrs["class_labels"][int(g["class_index"][index])],
            "polarization": np.array([g[k][index] for k in ("p_x", "p_y", "p_z")], np.float32),
            "positions_angstrom": np.asarray(g.attrs["positions_angstrom"][name]),
            "exits_angstrom": np.asarray(g.attrs["exits_angstrom"][name]),
            "sampling_mrad": tuple(g.attrs["sampling_mrad"])}


def run_polar_campaign(cfg: PolarCampaignConfig, path, *, scheduler: str | None = None, n_workers: int = 0,
                       progress: Callable[[int, int], None] | None = None, check_resources: bool = True,
                       log: Callable[[str], None] | None = print) -> dict:
    """Simulate the pending variants into the store at `path` (create, resume, verify).

    Returns the statistics of :func:`inverscope.datasets.jobstore.run_store_job`
    (``simulated``, ``skipped``, ``repaired``, ``verify_s``, ``wall_s``).
    """
    return run_store_job(PolarCampaignJob(cfg), path, scheduler, n_workers, None, progress, check_resources, log)


__all__ = ["PolarCampaignConfig", "PolarCampaignJob", "DEFAULT_SIGMAS_ANGSTROM", "build_atoms", "build_simulation",
           "simulate_variant", "simulate_structure", "estimate_resources", "read_item", "run_polar_campaign", "SCHEMA"]
