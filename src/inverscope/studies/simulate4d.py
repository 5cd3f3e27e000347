"""The 4D-STEM simulation job: config -> structure -> multislice -> Zarr + montage + summary.

`inverscope simulate CONFIG.yaml --out DIR` runs :func:`run_simulation`. Every
field carries its unit in its name. The job validates everything before it
writes anything; outputs are staged and appear in DIR only when complete.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
from ase import Atoms
from pydantic import Field, model_validator

from inverscope.core.config import StrictModel
from inverscope.core.device import machine_info, resolve_device
from inverscope.core.errors import StructureError
from inverscope.core.grid import Grid
from inverscope.core.io import check_output_path, staged_output, write_json_atomic
from inverscope.core.resources import Estimate, multislice_memory
from inverscope.datasets.store import ZarrCBEDWriter
from inverscope.physics.multislice.detectors import PixelatedDetector
from inverscope.physics.multislice.phonons import FrozenPhonons
from inverscope.physics.multislice.potentials import PotentialBuilder
from inverscope.physics.multislice.probe import Probe
from inverscope.physics.multislice.scan import Scan, grid_scan, line_scan
from inverscope.physics.multislice.simulate import MultisliceSimulation
from inverscope.physics.structures import perovskite_slab
from inverscope.physics.structures.perovskite import LATTICE_ANGSTROM


class StructureConfig(StrictModel):
    """The specimen: a built-in perovskite slab or any file ASE reads (CIF, XYZ, POSCAR...)."""

    builder: Literal["perovskite", "file"] = "perovskite"
    compound: Literal["SrTiO3", "BaTiO3", "LaAlO3", "KNbO3"] = Field("SrTiO3", description="perovskite compound")
    repeat_xy: int = Field(3, ge=1, description="perovskite: unit cells across the beam")
    thickness_angstrom: float = Field(40.0, gt=0, description="perovskite: specimen thickness along the beam [Å]")
    file: Optional[Path] = Field(None, description="file: path of a structure ASE can read")
    repeat: tuple[int, int, int] = Field((1, 1, 1), description="file: repetitions of the cell along x, y, z")

    @model_validator(mode="after")
    def _file_given(self):
        if self.builder == "file" and self.file is None:
            raise ValueError("builder 'file' needs structure.file")
        if min(self.repeat) < 1:
            raise ValueError("repeat must be >= 1 along every axis")
        return self


class GridConfig(StrictModel):
    """Lateral grid: give sampling_angstrom or gpts; sizes are rounded up to FFT-friendly numbers."""

    sampling_angstrom: Optional[float] = Field(0.05, gt=0, description="pixel size [Å]")
    gpts: Optional[int] = Field(None, ge=8, description="grid points per side (overrides sampling)")


class PotentialConfig(StrictModel):
    slice_thickness_angstrom: float = Field(1.9525, gt=0, description="slice thickness [Å]")
    parametrization: Literal["lobato", "kirkland"] = "lobato"
    structure_factor: Literal["hybrid", "exact"] = "hybrid"


class ProbeConfig(StrictModel):
    energy_kev: float = Field(200.0, gt=0, description="accelerating voltage [kV]")
    semiangle_mrad: float = Field(20.0, gt=0, description="convergence semiangle [mrad]")
    soft_edge: bool = True
    defocus_angstrom: float = Field(0.0, description="defocus [Å] (= -C10)")
    aberrations: dict[str, float] = Field(default_factory=dict, description="polar C_nm [Å] and phi_nm [rad]")
    tilt_mrad: tuple[float, float] = Field((0.0, 0.0), description="specimen tilt relative to the beam, x and y [mrad]")


class ScanConfig(StrictModel):
    kind: Literal["grid", "line", "list"] = "grid"
    start_angstrom: tuple[float, float] = (0.0, 0.0)
    end_angstrom: Optional[tuple[float, float]] = Field(None, description="default: one unit cell / the cell")
    gpts: tuple[int, int] = Field((8, 8), description="grid: positions along x, y")
    num_points: int = Field(16, description="line: number of positions")
    positions_angstrom: list[tuple[float, float]] = Field(default_factory=list, description="list: (x, y) [Å]")
    endpoint: bool = False


class DetectorConfig(StrictModel):
    max_angle_mrad: Optional[float] = Field(None, gt=0, description="half-width of the patterns [mrad]")
    sampling_mrad: Optional[float] = Field(None, gt=0, description="output pixel size [mrad]")
    shape: Optional[tuple[int, int]] = None


class PhononConfig(StrictModel):
    num_configs: int = Field(0, ge=0, description="frozen-phonon configurations; 0 = static lattice")
    sigmas_angstrom: float | dict[str, float] = Field(0.08, description="RMS displacement per axis [Å]")
    seed: int = 0


class ComputeConfig(StrictModel):
    device: str = "auto"
    memory_budget_mb: float = Field(512.0, gt=0, description="working-set bound per batch [MiB]")
    batch_size: Optional[int] = Field(None, ge=1)


class SimulateConfig(StrictModel):
    """A complete 4D-STEM simulation."""

    structure: StructureConfig = Field(default_factory=StructureConfig)
    grid: GridConfig = Field(default_factory=GridConfig)
    potential: PotentialConfig = Field(default_factory=PotentialConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    scan: ScanConfig = Field(default_factory=ScanConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    phonons: PhononConfig = Field(default_factory=PhononConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    thicknesses_angstrom: Optional[list[float]] = Field(None, description="exit thicknesses to record [Å]")


def build_atoms(cfg: StructureConfig) -> Atoms:
    """Atoms of the configured structure (periodic, beam along z)."""
    if cfg.builder == "perovskite":
        return perovskite_slab(cfg.compound, cfg.repeat_xy, cfg.thickness_angstrom)
    from ase.io import read

    if not cfg.file.is_file():
        raise StructureError(f"structure.file: {cfg.file} does not exist")
    try:
        atoms = read(str(cfg.file))
    except Exception as err:  # ASE raises many types for unreadable files
        raise StructureError(f"structure.file: ASE cannot read {cfg.file} ({type(err).__name__})") from None
    atoms = atoms.repeat(cfg.repeat)
    atoms.pbc = True
    return atoms


def _scan_count(cfg: ScanConfig) -> int:
    if cfg.kind == "list":
        return max(1, len(cfg.positions_angstrom))
    return max(1, cfg.num_points) if cfg.kind == "line" else max(1, cfg.gpts[0]) * max(1, cfg.gpts[1])


def estimate_resources(cfg: SimulateConfig) -> Estimate:
    """Memory of the job's large arrays [bytes], from the config alone (builds nothing big).

    Counts the atoms, the transmission functions of one (or every cached) phonon
    configuration, one batch of probe waves and the probe positions. The disk the result
    needs is added by :func:`run_simulation` once the detector plan is known.
    """
    s = cfg.structure
    if s.builder == "perovskite":
        a = LATTICE_ANGSTROM[s.compound]
        nz = max(1, int(round(s.thickness_angstrom / a)))
        n_atoms, extent, depth = 5.0 * s.repeat_xy ** 2 * nz, (s.repeat_xy * a,) * 2, nz * a
    else:
        base = build_atoms(s.model_copy(update={"repeat": (1, 1, 1)}))
        cell = np.diag(np.asarray(base.cell)) * np.asarray(s.repeat)
        n_atoms, extent, depth = float(len(base)) * np.prod(s.repeat, dtype=float), (cell[0], cell[1]), cell[2]
    g = cfg.grid
    gpts = [float(g.gpts)] * 2 if g.gpts else [e / g.sampling_angstrom for e in extent]
    num_slices = max(1, int(np.ceil(depth / cfg.potential.slice_thickness_angstrom)))
    per_probe = gpts[0] * gpts[1] * 8 * 3
    batch = cfg.compute.batch_size or max(1, int(cfg.compute.memory_budget_mb * 2**20 // per_probe))
    est = Estimate("simulate")
    multislice_memory(est, gpts, num_slices, int(min(n_atoms, 2**62)), min(batch, _scan_count(cfg.scan)))
    est.add_memory("probe positions", 16.0 * _scan_count(cfg.scan))
    return est


def build_simulation(cfg: SimulateConfig, check_resources: bool = True) -> MultisliceSimulation:
    """Validate the whole config and assemble the simulation (writes nothing).

    With `check_resources`, refuses (:class:`~inverscope.core.resources.ResourceError`)
    a job whose arrays would not fit in this machine's memory, before building them.
    """
    if check_resources:
        estimate_resources(cfg).check()
    atoms = build_atoms(cfg.structure)
    extent = tuple(float(x) for x in np.diag(np.asarray(atoms.cell))[:2])
    if any(e <= 0 for e in extent):
        raise StructureError(f"structure: cell sides {extent} must be > 0 [Å]")
    grid = Grid.from_gpts(extent, cfg.grid.gpts) if cfg.grid.gpts else Grid.from_sampling(extent, cfg.grid.sampling_angstrom)
    pot = PotentialBuilder(atoms, grid, cfg.potential.slice_thickness_angstrom, cfg.potential.parametrization,
                           cfg.potential.structure_factor)
    p = cfg.probe
    probe = Probe(p.energy_kev * 1e3, p.semiangle_mrad, p.soft_edge, p.defocus_angstrom, p.aberrations)
    scan = build_scan(cfg.scan, extent)
    det = PixelatedDetector(cfg.detector.max_angle_mrad, cfg.detector.sampling_mrad, cfg.detector.shape)
    ph = None
    if cfg.phonons.num_configs > 0:
        ph = FrozenPhonons(cfg.phonons.sigmas_angstrom, cfg.phonons.num_configs, cfg.phonons.seed)
        ph.sigma_per_atom(atoms)
    device = resolve_device(cfg.compute.device)
    return MultisliceSimulation(pot, probe, scan, det, cfg.thicknesses_angstrom, ph, str(device),
                                cfg.compute.memory_budget_mb, cfg.compute.batch_size, tilt_mrad=p.tilt_mrad)


def build_scan(cfg: ScanConfig, extent) -> Scan:
    """Probe positions of the configured scan; `end_angstrom` defaults to the cell extent [Å]."""
    if cfg.kind == "list":
        return Scan(np.asarray(cfg.positions_angstrom, dtype=float).reshape(-1, 2) if cfg.positions_angstrom else np.zeros((0, 2)))
    if cfg.kind == "line":
        end = cfg.end_angstrom or extent
        return line_scan(cfg.start_angstrom, end, cfg.num_points, cfg.endpoint)
    end = cfg.end_angstrom or extent
    return grid_scan(cfg.start_angstrom, end, cfg.gpts, cfg.endpoint)


class _Collector:
    """Forwards batches to the Zarr writer and keeps what the figures need (bounded)."""

    def __init__(self, writer: ZarrCBEDWriter, n: int, keep: np.ndarray, plan_shape, sampling_mrad, semiangle_mrad):
        self.writer, self.keep = writer, set(int(k) for k in keep)
        self.kept: dict[int, np.ndarray] = {}
        self.totals = np.zeros(n, np.float64)
        kx = (np.arange(plan_shape[0]) - plan_shape[0] // 2) * sampling_mrad[0]
        ky = (np.arange(plan_shape[1]) - plan_shape[1] // 2) * sampling_mrad[1]
        r = np.sqrt(kx[:, None] ** 2 + ky[None] ** 2)
        self.bf_mask = r <= semiangle_mrad
        self.adf_mask = r >= 2.5 * semiangle_mrad
        self.bf = np.zeros(n)
        self.adf = np.zeros(n)

    def __call__(self, start, stop, batch):
        self.writer(start, stop, batch)
        last = batch[:, -1]
        self.totals[start:stop] = batch[:, -1].sum(axis=(-1, -2))
        self.bf[start:stop] = last[:, self.bf_mask].sum(-1)
        self.adf[start:stop] = last[:, self.adf_mask].sum(-1) if self.adf_mask.any() else 0.0
        for i in range(start, stop):
            if i in self.keep:
                self.kept[i] = batch[i - start, -1]


def run_simulation(cfg: SimulateConfig, out_dir, progress: Callable[[int, int], None] | None = None,
                   config_text: str | None = None, check_resources: bool = True) -> dict:
    """Run the job into `out_dir`: cbed.zarr, montage.png and summary.json. Returns the summary.

    `out_dir` is checked before any work (not a file, writable); with `check_resources`
    the job is refused when its memory or the result's disk space [4 bytes per pixel]
    exceeds what the machine has.
    """
    from inverscope.report.figures import cbed_montage

    check_output_path(out_dir)
    sim = build_simulation(cfg, check_resources)
    if check_resources:
        est = Estimate("simulate")
        est.add_disk("result (float32)", 4.0 * math.prod(sim.output_shape))
        est.check(disk_path=out_dir)
    n = len(sim.scan)
    keep = np.unique(np.linspace(0, n - 1, min(n, 16)).round().astype(int))
    meta = sim.metadata()
    attrs = {"calibration": {"sampling_mrad": list(sim.plan.sampling_mrad), "thicknesses_angstrom": meta["thicknesses_angstrom"],
                             "scan_shape": list(sim.scan.shape)},
             "positions_angstrom": sim.scan.positions_angstrom.tolist(), "simulation": meta,
             "config": cfg.model_dump(mode="json"), "inverscope_version": machine_info()["inverscope"]}
    t0 = time.perf_counter()
    with staged_output(out_dir) as stage:
        writer = ZarrCBEDWriter(stage / "cbed.zarr", sim.scan.shape, sim.output_shape[len(sim.scan.shape):], attrs)
        col = _Collector(writer, n, keep, sim.plan.shape, sim.plan.sampling_mrad, sim.probe.semiangle_mrad)
        result = sim.run(sink=col, progress=progress)
        writer.close()
        wall = time.perf_counter() - t0
        cbed_montage(stage / "montage.png", col.kept, sim.scan, sim.plan.sampling_mrad, col.bf, col.adf,
                     title=f"{cfg.structure.compound if cfg.structure.builder == 'perovskite' else cfg.structure.file}, "
                           f"{sim.thicknesses_angstrom[-1]:.2f} Å, {cfg.probe.energy_kev:g} kV, {cfg.probe.semiangle_mrad:g} mrad")
        summary = {
            "outputs": {"cbed": "cbed.zarr", "montage": "montage.png"},
            "shape": list(sim.output_shape), "axes": [*(f"scan_{i}" for i in range(len(sim.scan.shape))), "thickness", "kx", "ky"],
            "simulation": {**result.metadata, "wall_s": wall},
            "seconds_per_pattern": wall / n, "num_atoms": len(sim.potential.atoms),
            "total_intensity": {"min": float(col.totals.min()), "mean": float(col.totals.mean()), "max": float(col.totals.max())},
            "virtual_bf_mean": float(col.bf.mean()), "virtual_adf_mean": float(col.adf.mean()),
            "machine": machine_info(), "config": cfg.model_dump(mode="json"),
        }
        if config_text is not None:
            (stage / "config.yaml").write_text(config_text)
        write_json_atomic(stage / "summary.json", summary)
    return summary


def demo_config() -> SimulateConfig:
    """The built-in default job, identical to recipes/srtio3_demo.yaml (a test keeps them equal)."""
    return SimulateConfig(
        structure=StructureConfig(builder="perovskite", compound="SrTiO3", repeat_xy=3, thickness_angstrom=40.0),
        grid=GridConfig(sampling_angstrom=0.05),
        potential=PotentialConfig(slice_thickness_angstrom=1.9525),
        probe=ProbeConfig(energy_kev=200.0, semiangle_mrad=20.0),
        scan=ScanConfig(kind="grid", start_angstrom=(0.0, 0.0), end_angstrom=(3.905, 3.905), gpts=(8, 8)),
        detector=DetectorConfig(max_angle_mrad=60.0),
        phonons=PhononConfig(num_configs=4, sigmas_angstrom={"Sr": 0.08, "Ti": 0.065, "O": 0.085}, seed=0),
        thicknesses_angstrom=[19.525, 39.05],
    )
