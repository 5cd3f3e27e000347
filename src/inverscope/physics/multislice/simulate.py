"""4D-STEM simulation: probes scanned over a sliced potential, CBED at each position.

The driver batches probe positions so the working set fits a memory budget,
averages intensities over frozen-phonon configurations, and records patterns at
several exit thicknesses in one propagation. It yields batches, so a caller can
write a result larger than memory chunk by chunk (see
``inverscope.datasets.store``) or stream it into training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.autograd.profiler import record_function

from inverscope.core.errors import GridError, field_error
from inverscope.physics.multislice.detectors import PixelatedDetector
from inverscope.physics.multislice.phonons import FrozenPhonons
from inverscope.physics.multislice.potentials import PotentialBuilder, antialias_aperture
from inverscope.physics.multislice.probe import Probe
from inverscope.physics.multislice.propagate import fresnel_propagator, multislice
from inverscope.physics.multislice.scan import Scan


@dataclass
class CBEDResult:
    """A 4D-STEM result with its calibration.

    Attributes
    ----------
    array : np.ndarray
        Intensities (*scan_shape, n_thickness, nkx, nky); each pattern sums to <= 1.
    scan_shape : tuple
        Shape of the scan axes.
    positions_angstrom : np.ndarray
        (N, 2) probe positions [Å].
    thicknesses_angstrom : np.ndarray
        Exit thicknesses actually recorded [Å] (nearest slice boundaries).
    sampling_mrad : tuple
        Diffraction-plane pixel size [mrad].
    metadata : dict
        Simulation parameters and timings.
    """

    array: np.ndarray | None
    scan_shape: tuple
    positions_angstrom: np.ndarray
    thicknesses_angstrom: np.ndarray
    sampling_mrad: tuple
    metadata: dict = field(default_factory=dict)


def _available_memory_bytes() -> int:
    """Free physical memory [bytes] (Linux/macOS sysconf), or a large number if unknown."""
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**62


#: largest tilt accepted [mrad]: the propagator's small-tilt form is tested up to here
MAX_TILT_MRAD = 100.0


def check_tilt(tilt_mrad) -> tuple[float, float]:
    """`tilt_mrad` as two finite floats [mrad] within +-MAX_TILT_MRAD, or a one-line error."""
    try:
        tx, ty = (float(t) for t in tilt_mrad)
    except (TypeError, ValueError):
        raise field_error("tilt_mrad", tilt_mrad, "must be two numbers (x, y) [mrad]") from None
    if not all(np.isfinite([tx, ty])) or max(abs(tx), abs(ty)) > MAX_TILT_MRAD:
        raise field_error("tilt_mrad", tilt_mrad, f"each component must be finite and within +-{MAX_TILT_MRAD:g} mrad")
    return (tx, ty)


def exit_slice_indices(edges: np.ndarray, thicknesses_angstrom: Sequence[float] | None) -> np.ndarray:
    """0-based slice after which each requested thickness [Å] is reached (nearest boundary)."""
    if thicknesses_angstrom is None:
        return np.array([len(edges) - 2])
    t = np.asarray(thicknesses_angstrom, dtype=np.float64).ravel()
    dz = float(np.max(np.diff(edges)))
    if t.size == 0 or np.any(~np.isfinite(t)) or np.any(t <= 0) or np.any(t > edges[-1] + dz / 2):
        raise field_error("thicknesses_angstrom", t.tolist(), f"each must be in (0, {edges[-1]:.2f}] Å, the specimen thickness")
    idx = np.abs(edges[1:][None] - t[:, None]).argmin(axis=1)
    return np.maximum(idx, 0)


def auto_batch_size(gpts, n_out_pixels: int, n_thick: int, memory_budget_mb: float) -> int:
    """Probes per batch so that waves, FFT scratch and outputs fit `memory_budget_mb` [MiB]."""
    per_probe = math.prod(gpts) * 8 * 3 + n_out_pixels * 4 * (n_thick + 1)
    return max(1, int(memory_budget_mb * 2**20 // per_probe))


class MultisliceSimulation:
    """Everything needed to simulate CBED patterns over a scan (builder).

    Parameters
    ----------
    potential : PotentialBuilder
        The sliced specimen; its grid sets the real-space sampling [Å].
    probe : Probe
        Energy [eV], convergence semiangle [mrad], defocus and aberrations.
    scan : Scan
        Probe positions [Å], inside the cell.
    detector : PixelatedDetector, optional
        Output pixels; default ``PixelatedDetector()`` (the whole anti-aliased disc at the
        simulation's own sampling [mrad]).
    thicknesses_angstrom : sequence of float, optional
        Exit thicknesses to record in one pass [Å] (each rounded to the nearest slice
        boundary); default the full specimen.
    phonons : FrozenPhonons or list of (N, 3) arrays, optional
        Either a seeded Einstein model or explicit displaced positions per configuration [Å].
    device : str
        'cpu', 'cuda', 'cuda:1', ...
    memory_budget_mb : float
        Bound on the working set of one batch of probes [MiB].
    batch_size : int, optional
        Probes per batch; overrides the memory budget.
    dtype : torch.dtype
        torch.float32 (complex64 waves, default) or torch.float64.
    tilt_mrad : (float, float)
        Specimen tilt relative to the beam, x and y [mrad] (in the Fresnel propagator).

    Notes
    -----
    ``run()`` returns a ``CBEDResult``: ``array`` of intensities (*scan.shape, n_thickness,
    nkx, nky), each pattern a fraction of the incident beam (sums to <= 1), with
    ``sampling_mrad`` [mrad], ``thicknesses_angstrom`` [Å] and ``positions_angstrom`` [Å].
    ``run(sink=...)`` hands each batch to `sink` instead (results larger than memory);
    ``iter_batches()`` yields them.

    Examples
    --------
    A 2 x 2 raster over one SrTiO3 cell, recorded after each of its two slices:

    >>> import inverscope as isc
    >>> atoms = isc.perovskite_slab("SrTiO3", 1, 3.905)
    >>> grid = isc.Grid.from_sampling((3.905, 3.905), 0.1)
    >>> potential = isc.PotentialBuilder(atoms, grid, 3.905 / 2)
    >>> scan = isc.grid_scan((0.0, 0.0), (3.905, 3.905), (2, 2))
    >>> sim = isc.MultisliceSimulation(potential, isc.Probe(200e3, 20.0), scan,
    ...                                isc.PixelatedDetector(max_angle_mrad=40.0),
    ...                                thicknesses_angstrom=[1.95, 3.905])
    >>> result = sim.run()
    >>> result.array.shape   # (scan x, scan y, thickness, kx, ky)
    (2, 2, 2, 13, 13)
    >>> result.thicknesses_angstrom.tolist(), round(result.sampling_mrad[0], 3)   # [Å], [mrad]
    ([1.9525, 3.905], 6.422)
    >>> round(float(result.array[1, 1, -1].sum()), 2)   # fraction of the beam within 40 mrad
    0.99
    """

    def __init__(self, potential: PotentialBuilder, probe: Probe, scan: Scan, detector: PixelatedDetector | None = None,
                 thicknesses_angstrom=None, phonons: FrozenPhonons | Sequence[np.ndarray] | None = None,
                 device: str = "cpu", memory_budget_mb: float = 512.0, batch_size: int | None = None,
                 dtype=torch.float32, tilt_mrad: tuple[float, float] = (0.0, 0.0)):
        self.potential, self.probe, self.scan = potential, probe, scan
        self.tilt_mrad = check_tilt(tilt_mrad)
        self.detector = detector or PixelatedDetector()
        self.device, self.dtype = torch.device(device), dtype
        scan.validate(potential.grid.extent)
        self._check_sampling()
        self.plan = self.detector.plan(potential.grid, probe.wavelength_angstrom)
        self.exit_slices = exit_slice_indices(potential.edges, thicknesses_angstrom)
        self.configs = self._configurations(phonons)
        if batch_size is not None and int(batch_size) < 1:
            raise field_error("batch_size", batch_size, "must be >= 1 or null")
        n_out = math.prod(self.plan.shape)
        self.batch_size = int(batch_size) if batch_size else auto_batch_size(
            potential.grid.gpts, n_out, len(self.exit_slices), memory_budget_mb)
        self.memory_budget_mb = float(memory_budget_mb)

    def _check_sampling(self):
        grid, lam = self.potential.grid, self.probe.wavelength_angstrom
        cutoff = grid.antialias_cutoff_mrad(lam)
        if self.probe.semiangle_mrad >= cutoff:
            raise GridError(f"sampling_angstrom: {max(grid.sampling):.4f} Å gives an anti-aliasing cutoff of {cutoff:.1f} mrad, "
                            f"below the {self.probe.semiangle_mrad} mrad probe; use <= "
                            f"{max(grid.sampling) * cutoff / self.probe.semiangle_mrad / 1.05:.4f} Å")

    def _configurations(self, phonons) -> list[np.ndarray | None]:
        if phonons is None:
            return [None]
        if isinstance(phonons, FrozenPhonons):
            return phonons.positions(self.potential.atoms)
        configs = [np.asarray(p, dtype=np.float64) for p in phonons]
        n = len(self.potential.atoms)
        if not configs or any(c.shape != (n, 3) for c in configs):
            raise field_error("phonons", f"{len(configs)} configurations", f"each must be an ({n}, 3) array of positions [Å]")
        return configs

    @property
    def output_shape(self) -> tuple:
        return (*self.scan.shape, len(self.exit_slices), *self.plan.shape)

    @property
    def thicknesses_angstrom(self) -> np.ndarray:
        return self.potential.edges[1:][self.exit_slices]

    def _transmissions(self, config) -> torch.Tensor:
        return self.potential.transmission_functions(self.probe.energy_ev, positions=config, device=self.device,
                                                     dtype=self.dtype, antialias=self._antialias)

    def _setup(self):
        grid, lam = self.potential.grid, self.probe.wavelength_angstrom
        self._antialias = torch.as_tensor(antialias_aperture(grid), dtype=self.dtype, device=self.device)
        dz = self.potential.edges[1:] - self.potential.edges[:-1]
        cache = {}
        self._propagators = []
        for d in dz:
            key = round(float(d), 12)
            if key not in cache:
                cache[key] = fresnel_propagator(grid, float(d), lam, self.device, self.dtype, self.tilt_mrad)
            self._propagators.append(cache[key])
        self._probe_k = self.probe.fourier_array(grid, self.device, self.dtype)
        per_config_mb = self.potential.num_slices * math.prod(grid.gpts) * 8 / 2**20
        self._cache_all = per_config_mb * len(self.configs) <= max(self.memory_budget_mb, 256.0)
        with record_function("inverscope.potential"):
            self._tcache = [self._transmissions(c) for c in self.configs] if self._cache_all else None

    def iter_batches(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield (start, stop, intensities[stop - start, n_thick, nkx, nky]) over the flat scan.

        Inference mode is entered per batch, never held across a yield, so code that
        consumes the batches (a training step) runs with autograd as usual.
        """
        with torch.inference_mode():
            self._setup()
        n = len(self.scan)
        for start in range(0, n, self.batch_size):
            stop = min(n, start + self.batch_size)
            with torch.inference_mode():
                batch = self._simulate_batch(self.scan.positions_angstrom[start:stop])
            yield start, stop, batch

    def _simulate_batch(self, pos: np.ndarray) -> np.ndarray:
        acc = None
        for ci, config in enumerate(self.configs):
            if self._cache_all:
                t = self._tcache[ci]
            else:
                with record_function("inverscope.potential"):
                    t = self._transmissions(config)
            with record_function("inverscope.probe"):
                waves = self.probe.build(self.potential.grid, pos, self.device, self.dtype, fourier=self._probe_k)
            with record_function("inverscope.multislice"):
                stacked = torch.stack(multislice(waves, t, self._propagators, self.exit_slices, self.plan), dim=1)
            acc = stacked if acc is None else acc.add_(stacked)
        return (acc / len(self.configs)).cpu().numpy()

    def run(self, sink: Callable[[int, int, np.ndarray], None] | None = None,
            progress: Callable[[int, int], None] | None = None) -> CBEDResult:
        """Simulate every position; hold the result in memory or hand each batch to `sink`."""
        if sink is None:
            need = 4 * math.prod(self.output_shape)
            if need > 0.5 * _available_memory_bytes():
                raise field_error("sink", None, f"the result needs {need / 2**30:.1f} GiB, more than half the free memory; "
                                  "stream it to disk with inverscope.datasets.store.ZarrCBEDWriter (run(sink=writer))")
        t0 = time.perf_counter()
        flat = None if sink is not None else np.empty((len(self.scan), *self.output_shape[len(self.scan.shape):]), np.float32)
        done = 0
        for start, stop, batch in self.iter_batches():
            if sink is None:
                flat[start:stop] = batch
            else:
                sink(start, stop, batch)
            done = stop
            if progress is not None:
                progress(done, len(self.scan))
        wall = time.perf_counter() - t0
        array = None if flat is None else flat.reshape(self.output_shape)
        return CBEDResult(array, self.scan.shape, self.scan.positions_angstrom, self.thicknesses_angstrom,
                          self.plan.sampling_mrad, self.metadata(wall))

    def metadata(self, wall_s: float | None = None) -> dict:
        g = self.potential.grid
        return {
            "energy_ev": self.probe.energy_ev, "semiangle_mrad": self.probe.semiangle_mrad,
            "defocus_angstrom": self.probe.defocus_angstrom, "aberrations": dict(self.probe.aberrations),
            "tilt_mrad": list(self.tilt_mrad),
            "gpts": list(g.gpts), "extent_angstrom": list(g.extent), "sampling_angstrom": list(g.sampling),
            "num_slices": self.potential.num_slices, "slice_thickness_angstrom": float(np.diff(self.potential.edges)[0]),
            "parametrization": self.potential.parametrization, "structure_factor": self.potential.structure_factor,
            "num_configs": len(self.configs), "thicknesses_angstrom": self.thicknesses_angstrom.tolist(),
            "pattern_shape": list(self.plan.shape), "sampling_mrad": list(self.plan.sampling_mrad),
            "batch_size": self.batch_size, "device": str(self.device), "wall_s": wall_s,
        }


def cbed_patterns(potential: PotentialBuilder, probe: Probe, positions_angstrom, detector: PixelatedDetector | None = None,
                  atom_positions: torch.Tensor | None = None, aberrations: dict | None = None,
                  thicknesses_angstrom=None, device="cpu", dtype=torch.float64,
                  tilt_mrad: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Differentiable CBED patterns (B, n_thick, nkx, nky) for one atom configuration.

    `atom_positions` (N, 3) [Å] and the values of `aberrations` (e.g. ``{"C10": tensor}``)
    may require grad; gradients flow through potential, probe and propagation.

    Parameters
    ----------
    potential : PotentialBuilder
        The sliced specimen; its grid sets the real-space sampling [Å].
    probe : Probe
        Energy [eV], convergence semiangle [mrad], defocus and aberrations.
    positions_angstrom : array-like (B, 2)
        Probe positions (x, y) [Å].
    detector : PixelatedDetector, optional
        Output pixels; default ``PixelatedDetector()`` (the whole anti-aliased disc at the
        simulation's own sampling, ``detector.plan(grid, wavelength).sampling_mrad`` [mrad]).
    atom_positions : torch.Tensor (N, 3), optional
        Atom positions [Å] replacing those of ``potential.atoms`` (wrapped into the cell); may
        require grad.
    aberrations : dict, optional
        Aberration coefficients [Å] and angles [rad] that override the probe's (``C10``
        includes the defocus: ``C10 = -defocus``); values may be tensors that require grad.
    thicknesses_angstrom : sequence of float, optional
        Exit thicknesses [Å] (nearest slice boundaries); default the full specimen.
    device : str
        'cpu', 'cuda', ...
    dtype : torch.dtype
        torch.float64 (default, complex128 waves) or torch.float32.
    tilt_mrad : (float, float)
        Specimen tilt relative to the beam, x and y [mrad].

    Returns
    -------
    torch.Tensor
        (B, n_thick, nkx, nky) intensities, centred, each pattern a fraction of the incident
        beam (sums to <= 1); real, of `dtype`, on `device`.

    Examples
    --------
    >>> import torch
    >>> import inverscope as isc
    >>> atoms = isc.perovskite_slab("SrTiO3", 1, 3.905)
    >>> grid = isc.Grid.from_sampling((3.905, 3.905), 0.1)
    >>> potential = isc.PotentialBuilder(atoms, grid, 3.905 / 2)
    >>> probe = isc.Probe(200e3, 20.0)
    >>> patterns = isc.cbed_patterns(potential, probe, [[1.0, 1.0], [2.0, 2.0]])
    >>> patterns.shape, round(float(patterns[0].sum()), 4)   # intensity conserved
    (torch.Size([2, 1, 26, 26]), 1.0)

    Gradients with respect to the atom positions:

    >>> positions = torch.tensor(atoms.positions, requires_grad=True)
    >>> isc.cbed_patterns(potential, probe, [[1.0, 1.0]], atom_positions=positions)[0, 0, 13, 13].backward()
    >>> positions.grad.shape   # d(central pixel) / d(positions) [1/Å]
    torch.Size([5, 3])
    """
    grid, lam = potential.grid, probe.wavelength_angstrom
    plan = (detector or PixelatedDetector()).plan(grid, lam)
    exits = exit_slice_indices(potential.edges, thicknesses_angstrom)
    aa = torch.as_tensor(antialias_aperture(grid), dtype=dtype, device=device)
    t = potential.transmission_functions(probe.energy_ev, positions=atom_positions, device=device, dtype=dtype, antialias=aa)
    props = [fresnel_propagator(grid, float(d), lam, device, dtype, check_tilt(tilt_mrad)) for d in np.diff(potential.edges)]
    fourier = probe.fourier_array(grid, device, dtype, overrides=aberrations)
    waves = probe.build(grid, positions_angstrom, device, dtype, fourier=fourier)
    return torch.stack(multislice(waves, t, props, exits, plan), dim=1)
