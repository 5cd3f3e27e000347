"""PACBED libraries: a thickness series for every specimen tilt on a grid, in a resumable store.

One item of the store is one tilt: a single multislice pass over the slab gives the PACBED at
every requested thickness (nearest slice boundary), averaged over an ``n x n`` grid of probe
positions in one unit cell and over frozen-phonon configurations. The library is stored once
and reused for training, template matching and reports. Running, resuming, locking and
verification are those of every store job (:mod:`inverscope.datasets.jobstore`).

Store layout (Zarr v3 group)::

    patterns     (tilts, thicknesses, ky, kx) float32, one chunk per tilt; beam at (n//2, n//2)
    tilt_x_mrad  (tilts,) float32,  tilt_y_mrad (tilts,) float32
    checksum     (tilts,) uint32,   done (tilts,) bool
    attrs: schema, config, config_hash, thicknesses_angstrom (recorded), sampling_mrad, tilts_mrad,
           compound, energy_ev, semiangle_mrad, complete

With ``tilt_octant`` (default) only tilts with 0 <= ty <= tx are simulated: the 4mm symmetry of
a cubic perovskite along [001] maps them to every other direction.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Literal

import numpy as np
from pydantic import Field, model_validator

import inverscope
from inverscope.core.config import StrictModel
from inverscope.core.device import resolve_device
from inverscope.core.errors import ConfigError
from inverscope.core.grid import Grid
from inverscope.core.resources import Estimate, multislice_memory
from inverscope.datasets.families import DEFAULT_SIGMAS_ANGSTROM, sample_rng
from inverscope.datasets.jobstore import StoreJob, run_store_job
from inverscope.physics.multislice.detectors import PixelatedDetector
from inverscope.physics.multislice.pacbed import average_over_positions, pacbed_simulation
from inverscope.physics.multislice.phonons import FrozenPhonons
from inverscope.physics.multislice.potentials import PotentialBuilder
from inverscope.physics.multislice.probe import Probe
from inverscope.physics.structures import perovskite_slab
from inverscope.physics.structures.perovskite import LATTICE_ANGSTROM

SCHEMA = "inverscope.pacbed_library/1"


class LibraryCompute(StrictModel):
    device: str = "auto"
    torch_threads: int | None = Field(None, ge=1)
    memory_budget_mb: float = Field(512.0, gt=0)


class PACBEDLibraryConfig(StrictModel):
    """A PACBED library of a perovskite along [001]; every field that shapes the data."""

    kind: Literal["pacbed_library"] = "pacbed_library"
    name: str = "pacbed_library"
    compound: Literal["SrTiO3", "BaTiO3", "LaAlO3", "KNbO3"] = "SrTiO3"
    energy_kev: float = Field(200.0, gt=0, description="accelerating voltage [kV]")
    semiangle_mrad: float = Field(13.6, gt=0, le=100, description="convergence semiangle [mrad]")
    thickness_nm: tuple[float, float, float] = Field((1.0, 130.0, 1.0), description="start, stop, step [nm]")
    tilt_max_mrad: float = Field(4.0, ge=0, le=50, description="largest tilt component [mrad]")
    tilt_step_mrad: float = Field(1.0, gt=0, description="tilt grid step [mrad]")
    tilt_octant: bool = True
    phonon_configs: int = Field(8, ge=0)
    phonon_sigmas_angstrom: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SIGMAS_ANGSTROM))
    repeat_xy: int = Field(3, ge=1, description="unit cells across the supercell")
    sampling_angstrom: float = Field(0.05, gt=0)
    slices_per_cell: int = Field(2, ge=1)
    positions_per_cell: int = Field(8, ge=1)
    detector_alpha: float = Field(2.5, gt=0, description="detector half-width in units of the semiangle")
    detector_pixels: int = Field(65, ge=3, description="odd number of pixels per side")
    seed: int = 0
    compute: LibraryCompute = Field(default_factory=LibraryCompute)

    @model_validator(mode="after")
    def _check(self):
        start, stop, step = self.thickness_nm
        if not (0 < start <= stop and step > 0):
            raise ConfigError(f"thickness_nm: got {self.thickness_nm}; need 0 < start <= stop and step > 0 [nm]")
        if self.detector_pixels % 2 == 0:
            raise ConfigError(f"detector_pixels: got {self.detector_pixels}; must be odd (the beam on the centre pixel)")
        return self

    def data_dict(self) -> dict:
        return self.model_dump(mode="json", exclude={"compute", "name", "kind"})

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.data_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def thicknesses_angstrom(self) -> np.ndarray:
        """Requested thicknesses [Å] (recorded at the nearest slice boundary)."""
        start, stop, step = self.thickness_nm
        return 10.0 * np.arange(start, stop + step / 2, step)

    def slab_cells(self) -> int:
        return max(1, int(np.ceil(self.thicknesses_angstrom()[-1] / LATTICE_ANGSTROM[self.compound] - 1e-9)))

    def tilts_mrad(self) -> np.ndarray:
        """(n, 2) tilts (tx, ty) [mrad] on the grid (the octant 0 <= ty <= tx when ``tilt_octant``)."""
        axis = np.arange(0.0, self.tilt_max_mrad + self.tilt_step_mrad / 2, self.tilt_step_mrad)
        if not self.tilt_octant:
            axis = np.concatenate([-axis[:0:-1], axis])
        t = [(x, y) for x in axis for y in axis if not self.tilt_octant or y <= x + 1e-9]
        return np.round(np.asarray(t, dtype=np.float64), 9)

    def detector(self) -> PixelatedDetector:
        half = self.detector_alpha * self.semiangle_mrad
        n = self.detector_pixels
        return PixelatedDetector(sampling_mrad=2 * half / (n - 1), shape=(n, n))


def build_tilt_simulation(cfg: PACBEDLibraryConfig, index: int, device: str | None = None):
    """The PACBED simulation of tilt `index` (checks everything, simulates nothing)."""
    a = LATTICE_ANGSTROM[cfg.compound]
    atoms = perovskite_slab(cfg.compound, cfg.repeat_xy, cfg.slab_cells() * a)
    grid = Grid.from_sampling(tuple(np.diag(atoms.cell)[:2]), cfg.sampling_angstrom)
    potential = PotentialBuilder(atoms, grid, slice_thickness_angstrom=a / cfg.slices_per_cell)
    phonons = None
    if cfg.phonon_configs > 0:
        phonons = FrozenPhonons(cfg.phonon_sigmas_angstrom, cfg.phonon_configs,
                                int(sample_rng(cfg.seed, index, 1).integers(2**31)))
    tilt = tuple(float(t) for t in cfg.tilts_mrad()[index])
    return pacbed_simulation(potential, Probe(cfg.energy_kev * 1e3, cfg.semiangle_mrad), (a, a),
                             positions_per_cell=cfg.positions_per_cell, detector=cfg.detector(),
                             thicknesses_angstrom=cfg.thicknesses_angstrom(), phonons=phonons, tilt_mrad=tilt,
                             device=str(resolve_device(device or cfg.compute.device)),
                             memory_budget_mb=cfg.compute.memory_budget_mb)


class PACBEDLibraryJob(StoreJob):
    """A PACBED library as a resumable store job: one item per tilt."""

    schema, what, item = SCHEMA, "PACBED library store", "tilt"
    labels = {"tilt_x_mrad": ("float32", np.nan), "tilt_y_mrad": ("float32", np.nan)}
    config_type = PACBEDLibraryConfig

    def num_items(self) -> int:
        return len(self.cfg.tilts_mrad())

    def item_shape(self) -> tuple[int, ...]:
        n = self.cfg.detector_pixels
        return (len(self.cfg.thicknesses_angstrom()), n, n)

    def attrs(self) -> dict:
        sim = build_tilt_simulation(self.cfg, 0, device="cpu")
        return {"name": self.cfg.name, "inverscope_version": inverscope.__version__, "compound": self.cfg.compound,
                "energy_ev": self.cfg.energy_kev * 1e3, "semiangle_mrad": self.cfg.semiangle_mrad,
                "thicknesses_angstrom": sim.thicknesses_angstrom.tolist(),
                "sampling_mrad": list(sim.plan.sampling_mrad), "tilts_mrad": self.cfg.tilts_mrad().tolist(),
                "axes": ["tilt", "thickness", "kx", "ky"]}

    def precheck(self) -> None:
        build_tilt_simulation(self.cfg, 0, device="cpu")

    def estimate(self, n_workers: int) -> Estimate:
        return estimate_resources(self.cfg, n_workers)

    def simulate(self, index: int) -> tuple[np.ndarray, dict]:
        res = average_over_positions(build_tilt_simulation(self.cfg, index))
        tx, ty = self.cfg.tilts_mrad()[index]
        return res.array, {"tilt_x_mrad": tx, "tilt_y_mrad": ty}


def estimate_resources(cfg: PACBEDLibraryConfig, n_workers: int = 0) -> Estimate:
    """Memory [bytes] of the simulating processes and disk of the finished library, from the config."""
    a = LATTICE_ANGSTROM[cfg.compound]
    side = cfg.repeat_xy * a / cfg.sampling_angstrom
    gpts = (side, side)
    per_probe = side * side * 8 * 3
    batch = min(cfg.positions_per_cell ** 2, max(1, int(cfg.compute.memory_budget_mb * 2**20 // per_probe)))
    per = Estimate("tilt")
    multislice_memory(per, gpts, cfg.slab_cells() * cfg.slices_per_cell, 5 * cfg.repeat_xy ** 2 * cfg.slab_cells(),
                      batch)
    est = Estimate("PACBED library")
    for name, value in per.memory_parts.items():
        est.add_memory(name, value * max(1, n_workers))
    item = 4.0 * len(cfg.thicknesses_angstrom()) * cfg.detector_pixels ** 2
    est.add_memory("outputs per probe batch", item * batch * max(1, n_workers))
    est.add_disk("stored patterns (float32, uncompressed)", item * len(cfg.tilts_mrad()))
    return est


def run_library(cfg: PACBEDLibraryConfig, path, scheduler: str | None = None, n_workers: int = 0,
                progress: Callable[[int, int], None] | None = None, check_resources: bool = True,
                log: Callable[[str], None] | None = None) -> dict:
    """Simulate the library's pending tilts into the store at `path` (create, resume, verify).

    Returns the statistics of :func:`inverscope.datasets.jobstore.run_store_job`.
    """
    return run_store_job(PACBEDLibraryJob(cfg), path, scheduler, n_workers, None, progress, check_resources, log)


def load_library(path) -> dict:
    """A finished PACBED library store, read into memory.

    Parameters
    ----------
    path : str or Path
        A store written by ``run_library`` (or ``inverscope campaign`` with a
        ``kind: pacbed_library`` config).

    Returns
    -------
    dict
        ``patterns`` float32 (tilts, thicknesses, kx, ky): the PACBED of each tilt at each exit,
        zero angle at pixel ``(n // 2, n // 2)``, each summing to at most 1; ``tilts_mrad`` (tilts,
        2): (tx, ty) [mrad]; ``thicknesses_angstrom`` (thicknesses,) [Å]; ``sampling_mrad``
        [mrad/px]; ``semiangle_mrad``; ``energy_ev``; ``compound``.

    Raises
    ------
    InverscopeError
        One line: not a readable Zarr store, not a PACBED library, or not finished (how many
        tilts are missing; rerunning ``run_library`` finishes it).

    Examples
    --------
    >>> from inverscope.datasets.pacbed_library import load_library
    >>> lib = load_library("out/pacbed/library.zarr")          # doctest: +SKIP
    >>> lib["patterns"].shape, lib["sampling_mrad"]            # doctest: +SKIP
    ((6, 60, 65, 65), 1.0625)
    """
    import zarr

    from inverscope.core.errors import InverscopeError

    try:
        g = zarr.open_group(str(path), mode="r")
        schema = g.attrs.get("schema")
    except Exception:
        raise InverscopeError(f"{path}: not a readable Zarr store") from None
    if schema != SCHEMA:
        raise InverscopeError(f"{path}: not a PACBED library store (schema {schema!r}, expected {SCHEMA!r})")
    done = np.asarray(g["done"][:], bool)
    if not done.all():
        raise InverscopeError(f"{path}: {int((~done).sum())} of {done.size} tilts not simulated yet; rerun "
                              "run_library (or inverscope campaign) on it to finish the library")
    return {"patterns": np.asarray(g["patterns"][:], np.float32),
            "tilts_mrad": np.stack([g["tilt_x_mrad"][:], g["tilt_y_mrad"][:]], -1),
            "thicknesses_angstrom": np.asarray(g.attrs["thicknesses_angstrom"], np.float64),
            "sampling_mrad": float(g.attrs["sampling_mrad"][0]), "semiangle_mrad": float(g.attrs["semiangle_mrad"]),
            "energy_ev": float(g.attrs["energy_ev"]), "compound": str(g.attrs["compound"])}


__all__ = ["PACBEDLibraryConfig", "PACBEDLibraryJob", "build_tilt_simulation", "estimate_resources", "run_library",
           "load_library", "SCHEMA"]
