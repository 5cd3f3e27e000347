"""Simulation campaigns: seeded structure families -> 4D-STEM line stacks in a Zarr store, on Dask.

A campaign is a config (family and its parameter sampling, microscope, probe lines,
exit thicknesses, seed, number of samples). Sample ``i`` depends on ``(seed, i)`` only,
so samples can run in any order, on any worker, and an interrupted campaign resumes by
simulating the samples whose ``done`` flag is still false.

Store layout (Zarr v3 group)::

    patterns           (N, lines, thicknesses, positions, ky, kx) float32, one chunk per sample
    class_index        (N,) int16      -1 until simulated
    step_cells         (N,) int16      -1 when there is no step
    intermix_fraction  (N,) float32
    checksum           (N,) uint32     CRC-32 of the sample's patterns, checked on resume
    done               (N,) bool       set after the sample's data is written
    attrs: schema, config, config_hash, code version, class_names, thicknesses_angstrom,
           positions_angstrom, sampling_mrad, complete

Running, resuming, locking and verifying are those of every store job
(:mod:`inverscope.datasets.jobstore`); this module says what a sample is.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable, Iterable, Literal

import numpy as np
import zarr
from pydantic import Field, model_validator

import inverscope
from inverscope.core.config import StrictModel
from inverscope.core.device import resolve_device
from inverscope.core.errors import ConfigError, InverscopeError
from inverscope.core.grid import Grid
from inverscope.core.resources import Estimate, multislice_memory
from inverscope.datasets.families import DEFAULT_SIGMAS_ANGSTROM, FamilyConfig, sample_rng
from inverscope.datasets.jobstore import (StoreJob, check_store, connect_scheduler, create_store, open_store,
                                          pattern_checksum, pending_indices, run_store_job, verify_items, write_item)
from inverscope.physics.multislice.detectors import PixelatedDetector
from inverscope.physics.multislice.phonons import FrozenPhonons
from inverscope.physics.multislice.potentials import PotentialBuilder
from inverscope.physics.multislice.probe import Probe
from inverscope.physics.multislice.scan import Scan
from inverscope.physics.multislice.simulate import MultisliceSimulation

SCHEMA = "inverscope.campaign/1"


class MicroscopeConfig(StrictModel):
    """Probe, sampling, detector and frozen phonons of a campaign."""

    energy_ev: float = Field(200e3, gt=0)
    semiangle_mrad: float = Field(20.0, gt=0)
    defocus_angstrom: float = 0.0
    tilt_mrad: tuple[float, float] = (0.0, 0.0)   # specimen tilt relative to the beam, x and y [mrad]
    sampling_angstrom: float = Field(0.065, gt=0)
    slices_per_cell: int = Field(2, ge=1)
    parametrization: str = "lobato"
    detector_sampling_mrad: float = Field(3.5, gt=0)
    detector_shape: tuple[int, int] = (13, 13)
    phonon_configs: int = Field(4, ge=0)
    phonon_sigmas_angstrom: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SIGMAS_ANGSTROM))


class LinesConfig(StrictModel):
    """Lines of probe positions across the interface; each line is one training example.

    x positions are fractions of a unit cell along the interface; y runs from
    ``y_start_cells`` to ``y_stop_cells`` unit cells relative to the interface plane.
    """

    x_cells: list[float] = Field(default_factory=lambda: [0.0, 0.5], min_length=1)
    y_start_cells: float = -1.0
    y_stop_cells: float = 1.5
    num_positions: int = Field(16, ge=1)


class ComputeConfig(StrictModel):
    device: str = "auto"
    torch_threads: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)


class CampaignConfig(StrictModel):
    """Everything that defines a campaign's data (the compute section does not)."""

    kind: Literal["lao_sto"] = "lao_sto"
    name: str = "campaign"
    seed: int = 0
    num_samples: int = Field(ge=1)
    structure: FamilyConfig = Field(default_factory=FamilyConfig)
    microscope: MicroscopeConfig = Field(default_factory=MicroscopeConfig)
    lines: LinesConfig = Field(default_factory=LinesConfig)
    thicknesses_cells: list[int] | None = None
    compute: ComputeConfig = Field(default_factory=ComputeConfig)

    @model_validator(mode="after")
    def _check_thickness(self):
        depth = self.structure.depth_cells
        for t in self.thicknesses_cells or []:
            if not 1 <= t <= depth:
                raise ConfigError(f"thicknesses_cells: got {t}; each must be between 1 and structure.depth_cells ({depth})")
        return self

    def exit_cells(self) -> list[int]:
        return sorted(set(self.thicknesses_cells or [self.structure.depth_cells]))

    def data_dict(self) -> dict:
        """The parts of the config that determine the data (not how it is computed).

        An untilted specimen is left out, so stores written before tilts existed keep their hash.
        """
        data = self.model_dump(mode="json", exclude={"compute", "name", "kind"})
        if not any(data["microscope"]["tilt_mrad"]):
            del data["microscope"]["tilt_mrad"]
        return data

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.data_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def positions_angstrom(self) -> np.ndarray:
        """(lines, positions, 2) probe positions [Å]."""
        a = self.structure.unit_angstrom
        y = self.structure.interface_y_angstrom + np.linspace(self.lines.y_start_cells, self.lines.y_stop_cells,
                                                               self.lines.num_positions) * a
        return np.stack([np.stack([np.full_like(y, x * a), y], -1) for x in self.lines.x_cells])


# --------------------------------------------------------------------------- one sample
def build_sample_simulation(cfg: CampaignConfig, index: int, device: str | None = None,
                            phonon_configs: int | None = None) -> tuple[MultisliceSimulation, dict]:
    """The multislice simulation of sample `index` and its labels (validates, simulates nothing)."""
    atoms, labels = cfg.structure.build(cfg.seed, index)
    m = cfg.microscope
    a = cfg.structure.unit_angstrom
    grid = Grid.from_sampling(atoms.cell.lengths()[:2], m.sampling_angstrom)
    potential = PotentialBuilder(atoms, grid, slice_thickness_angstrom=a / m.slices_per_cell,
                                 parametrization=m.parametrization)
    n_conf = m.phonon_configs if phonon_configs is None else phonon_configs
    phonons = None
    if n_conf > 0:
        phonon_seed = int(sample_rng(cfg.seed, index, 1).integers(2**31))
        phonons = FrozenPhonons(m.phonon_sigmas_angstrom, n_conf, phonon_seed)
    pos = cfg.positions_angstrom()
    sim = MultisliceSimulation(potential, Probe(m.energy_ev, m.semiangle_mrad, defocus_angstrom=m.defocus_angstrom),
                               Scan(pos.reshape(-1, 2)), PixelatedDetector(sampling_mrad=m.detector_sampling_mrad,
                                                                           shape=m.detector_shape),
                               thicknesses_angstrom=[c * a for c in cfg.exit_cells()], phonons=phonons,
                               device=str(resolve_device(device or cfg.compute.device)), batch_size=cfg.compute.batch_size,
                               tilt_mrad=m.tilt_mrad)
    return sim, labels


def simulate_sample(cfg: CampaignConfig, index: int, device: str | None = None,
                    phonon_configs: int | None = None) -> tuple[np.ndarray, dict]:
    """Simulate sample `index`: patterns (lines, thicknesses, positions, ky, kx) and labels.

    ``phonon_configs`` overrides the config (0 = static), for domain-shift checks.
    """
    sim, labels = build_sample_simulation(cfg, index, device, phonon_configs)
    out = sim.run().array  # (L*P, T, ky, kx)
    n_l, n_p = len(cfg.lines.x_cells), cfg.lines.num_positions
    patterns = out.reshape(n_l, n_p, *out.shape[1:]).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(patterns, dtype=np.float32), labels


def estimate_resources(cfg: CampaignConfig, n_workers: int = 0) -> Estimate:
    """Memory [bytes] of the simulating processes and disk of the finished store, from the config alone."""
    f, m = cfg.structure, cfg.microscope
    cell = f.cell_angstrom
    gpts = [cell[0] / m.sampling_angstrom, cell[1] / m.sampling_angstrom]
    cells = f.width_cells * (f.n_sto + f.n_lao) * f.depth_cells
    n_pos = len(cfg.lines.x_cells) * cfg.lines.num_positions
    per_probe = gpts[0] * gpts[1] * 8 * 3
    batch = min(n_pos, cfg.compute.batch_size or max(1, int(512 * 2**20 // per_probe)))
    est = Estimate("campaign")
    per = Estimate("sample")
    multislice_memory(per, gpts, f.depth_cells * m.slices_per_cell, 5 * cells, batch)
    for name, value in per.memory_parts.items():
        est.add_memory(name, value * max(1, n_workers))
    pattern_bytes = 4.0 * math.prod(_pattern_shape(cfg))
    est.add_memory("one sample's patterns", pattern_bytes * max(1, n_workers) * 2)
    est.add_memory("sample flags and labels", 16.0 * cfg.num_samples)
    est.add_disk("stored patterns (float32, uncompressed)", pattern_bytes * cfg.num_samples)
    return est


# --------------------------------------------------------------------------- store
def _pattern_shape(cfg: CampaignConfig) -> tuple[int, ...]:
    return (len(cfg.lines.x_cells), len(cfg.exit_cells()), cfg.lines.num_positions, *cfg.microscope.detector_shape)


class CampaignJob(StoreJob):
    """A campaign as a resumable store job: one item per sample (:mod:`inverscope.datasets.jobstore`)."""

    schema, what, item = SCHEMA, "campaign store", "sample"
    labels = {"class_index": ("int16", -1), "step_cells": ("int16", -1), "intermix_fraction": ("float32", np.nan)}
    verify_label = "class_index"
    config_type = CampaignConfig

    def num_items(self) -> int:
        return self.cfg.num_samples

    def item_shape(self) -> tuple[int, ...]:
        return _pattern_shape(self.cfg)

    def attrs(self) -> dict:
        cfg = self.cfg
        a = cfg.structure.unit_angstrom
        grid = Grid.from_sampling(cfg.structure.cell_angstrom[:2], cfg.microscope.sampling_angstrom)
        return {"name": cfg.name, "inverscope_version": inverscope.__version__, "seed": cfg.seed,
                "class_names": list(cfg.structure.classes), "thicknesses_angstrom": [c * a for c in cfg.exit_cells()],
                "thicknesses_cells": cfg.exit_cells(), "positions_angstrom": cfg.positions_angstrom().tolist(),
                "sampling_mrad": [cfg.microscope.detector_sampling_mrad] * 2, "gpts": list(grid.gpts),
                "axes": ["sample", "line", "thickness", "position", "ky", "kx"]}

    def precheck(self) -> None:
        build_sample_simulation(self.cfg, 0)

    def estimate(self, n_workers: int) -> Estimate:
        return estimate_resources(self.cfg, n_workers)

    def simulate(self, index: int) -> tuple[np.ndarray, dict]:
        return simulate_sample(self.cfg, index)


def check_campaign_store(path, cfg: CampaignConfig) -> str:
    """Judge, reading only, an existing `path` for campaign `cfg` (:func:`jobstore.check_store`)."""
    return check_store(path, CampaignJob(cfg))


def open_campaign_store(path, cfg: CampaignConfig):
    """Create the store at `path`, or open it to resume when it holds the same campaign.

    A store of another campaign is refused, unless it holds no finished sample (a run that
    stopped before its first sample): then it is replaced, since nothing can be lost.
    """
    return open_store(path, CampaignJob(cfg))


def _create_store(path: Path, cfg: CampaignConfig):
    return create_store(Path(path), CampaignJob(cfg))


def _write_sample(group, index: int, patterns: np.ndarray, labels: dict) -> None:
    write_item(group, index, patterns, labels)


def verify_samples(group, indices: Iterable[int] | None = None, block: int = 64) -> list[int]:
    """Samples flagged done whose stored data is missing or damaged (patterns finite, CRC-32 as
    recorded, class label written); see :func:`inverscope.datasets.jobstore.verify_items`."""
    return verify_items(group, indices, block, label="class_index")


def run_campaign(cfg: CampaignConfig, path, scheduler: str | None = None, n_workers: int = 0,
                 indices: Iterable[int] | None = None, phonon_configs: int | None = None,
                 progress: Callable[[int, int], None] | None = None, check_resources: bool = True,
                 log: Callable[[str], None] | None = None) -> dict:
    """Simulate the campaign's pending samples into the store at `path`.

    Before anything is written, the config is checked in full (sample 0's simulation is
    assembled), the destination and, with `check_resources`, the memory and disk
    estimates; an unreachable scheduler is reported. The store is locked while the
    campaign runs (a second campaign on it is refused). On resume, every sample already
    flagged done is verified (:func:`verify_samples`); damaged ones are simulated again.

    Parameters
    ----------
    scheduler, n_workers, indices, progress, check_resources, log
        As for :func:`inverscope.datasets.jobstore.run_store_job` (items are samples).
    phonon_configs : int, optional
        Must be None for regular campaigns; studies use 0 on a second store for static twins.

    Returns
    -------
    dict with ``simulated``, ``skipped``, ``repaired`` (indices of damaged samples
    simulated again), ``verify_s`` and ``wall_s``.
    """
    if phonon_configs is not None:
        cfg = cfg.model_copy(update={"microscope": cfg.microscope.model_copy(update={"phonon_configs": phonon_configs})})
    return run_store_job(CampaignJob(cfg), path, scheduler, n_workers, indices, progress, check_resources, log)


def open_campaign(path) -> "zarr.Group":
    """Open a finished or partial campaign store read-only, checking its schema."""
    path = Path(path)
    if not path.exists():
        raise InverscopeError(f"{path}: no such campaign store")
    try:
        group = zarr.open_group(str(path), mode="r")
        schema = group.attrs.get("schema")
        _ = group["done"], group["patterns"]
    except Exception:
        raise InverscopeError(f"{path}: not a readable inverscope campaign store (missing arrays or metadata)") from None
    if schema != SCHEMA:
        raise InverscopeError(f"{path}: schema {schema!r}, expected {SCHEMA!r}")
    return group


__all__ = ["CampaignConfig", "MicroscopeConfig", "LinesConfig", "ComputeConfig", "simulate_sample", "run_campaign",
           "open_campaign", "open_campaign_store", "pending_indices", "verify_samples", "estimate_resources",
           "build_sample_simulation", "pattern_checksum", "check_campaign_store", "connect_scheduler", "CampaignJob"]
