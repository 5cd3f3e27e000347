"""Position-averaged CBED (PACBED): the incoherent mean of CBED patterns over probe positions
that cover one unit cell, frozen phonons averaged, a whole thickness series in one pass.

A PACBED does not depend on where the probe is, only on the crystal, its thickness, its tilt
and the probe, which is what makes it a thickness and tilt gauge for experiments (LeBeau et al.,
Ultramicroscopy 110 (2010) 118; Xu & LeBeau, Ultramicroscopy 188 (2018) 59). The positions are
an ``n x n`` grid over one cell (``endpoint=False``, so the periodic images are not counted
twice); every slice boundary can be an exit, so one propagation gives the pattern at every
thickness a slice boundary reaches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from inverscope.core.errors import field_error
from inverscope.physics.multislice.detectors import PixelatedDetector
from inverscope.physics.multislice.phonons import FrozenPhonons
from inverscope.physics.multislice.potentials import PotentialBuilder
from inverscope.physics.multislice.probe import Probe
from inverscope.physics.multislice.scan import grid_scan
from inverscope.physics.multislice.simulate import MultisliceSimulation


@dataclass
class PACBEDResult:
    """PACBED patterns with their calibration.

    Attributes
    ----------
    array : np.ndarray
        (n_thickness, nkx, nky) mean intensity over the probe positions; each sums to <= 1.
    thicknesses_angstrom : np.ndarray
        Exit thicknesses [Å] (slice boundaries).
    sampling_mrad : tuple
        Pixel size [mrad]; the undiffracted beam is at pixel ``(n // 2, n // 2)``.
    metadata : dict
        Simulation parameters, positions per cell and timings.
    """

    array: np.ndarray
    thicknesses_angstrom: np.ndarray
    sampling_mrad: tuple
    metadata: dict = field(default_factory=dict)


def unit_cell_positions(cell_angstrom: Sequence[float], positions_per_cell: int | tuple[int, int],
                        origin_angstrom: Sequence[float] = (0.0, 0.0)):
    """An ``n x n`` scan over one unit cell of sides `cell_angstrom` (x, y) [Å], endpoints excluded."""
    n = (positions_per_cell, positions_per_cell) if np.isscalar(positions_per_cell) else tuple(positions_per_cell)
    if len(n) != 2 or min(int(v) for v in n) < 1:
        raise field_error("positions_per_cell", positions_per_cell, "must be >= 1 (or two such numbers)")
    start = np.asarray(origin_angstrom, dtype=float)
    return grid_scan(tuple(start), tuple(start + np.asarray(cell_angstrom[:2], dtype=float)),
                     (int(n[0]), int(n[1])), endpoint=False)


def pacbed_simulation(potential: PotentialBuilder, probe: Probe, cell_angstrom: Sequence[float], *,
                      positions_per_cell: int | tuple[int, int] = 8, detector: PixelatedDetector | None = None,
                      thicknesses_angstrom: Sequence[float] | str = "all", phonons: FrozenPhonons | None = None,
                      tilt_mrad: tuple[float, float] = (0.0, 0.0), device: str = "cpu", memory_budget_mb: float = 512.0,
                      dtype=torch.float32) -> MultisliceSimulation:
    """The multislice simulation of a PACBED (checks everything, simulates nothing); see ``pacbed``."""
    scan = unit_cell_positions(cell_angstrom, positions_per_cell)
    exits = potential.edges[1:] if isinstance(thicknesses_angstrom, str) and thicknesses_angstrom == "all" \
        else thicknesses_angstrom
    if isinstance(exits, str):
        raise field_error("thicknesses_angstrom", exits, "a list of thicknesses [Å] or 'all'")
    return MultisliceSimulation(potential, probe, scan, detector, thicknesses_angstrom=exits, phonons=phonons,
                                device=device, memory_budget_mb=memory_budget_mb, dtype=dtype, tilt_mrad=tilt_mrad)


def average_over_positions(sim: MultisliceSimulation, progress: Callable[[int, int], None] | None = None,
                           cell_angstrom: Sequence[float] | None = None) -> PACBEDResult:
    """Run `sim` batch by batch and return the mean pattern over its probe positions."""
    t0 = time.perf_counter()
    n = len(sim.scan)
    total = np.zeros(sim.output_shape[len(sim.scan.shape):], np.float64)
    for _, stop, batch in sim.iter_batches():
        total += batch.sum(axis=0, dtype=np.float64)
        if progress is not None:
            progress(stop, n)
    meta = {**sim.metadata(time.perf_counter() - t0), "positions_per_cell": list(sim.scan.shape), "num_positions": n,
            "cell_angstrom": None if cell_angstrom is None else list(cell_angstrom[:2])}
    return PACBEDResult((total / n).astype(np.float32), sim.thicknesses_angstrom, sim.plan.sampling_mrad, meta)


def pacbed(potential: PotentialBuilder, probe: Probe, cell_angstrom: Sequence[float], *,
           positions_per_cell: int | tuple[int, int] = 8, detector: PixelatedDetector | None = None,
           thicknesses_angstrom: Sequence[float] | str = "all", phonons: FrozenPhonons | None = None,
           tilt_mrad: tuple[float, float] = (0.0, 0.0), device: str = "cpu", memory_budget_mb: float = 512.0,
           dtype=torch.float32, progress: Callable[[int, int], None] | None = None) -> PACBEDResult:
    """Simulate PACBED patterns over a thickness series in one pass.

    Parameters
    ----------
    potential : PotentialBuilder
        The specimen (its thickness is the largest exit).
    probe : Probe
        Energy, convergence semiangle and aberrations.
    cell_angstrom : (float, float)
        The unit cell the probe positions cover, x and y [Å] (one cell of the crystal, not the
        supercell the potential may span).
    positions_per_cell : int or (int, int)
        Probe positions along x and y within the cell.
    detector : PixelatedDetector, optional
        Output pixels (e.g. ``PixelatedDetector(max_angle_mrad=3 * alpha)``).
    thicknesses_angstrom : sequence of float or "all"
        Exits to record [Å]; ``"all"`` records after every slice.
    phonons : FrozenPhonons, optional
        Frozen-phonon configurations to average (incoherently, as the positions).
    tilt_mrad : (float, float)
        Specimen tilt relative to the beam [mrad].
    device, memory_budget_mb, dtype
        As for ``MultisliceSimulation``.
    progress : callable, optional
        ``progress(done_positions, total_positions)``.

    Returns
    -------
    PACBEDResult
        ``array`` (n_thickness, nkx, nky): the mean intensity over the positions, a fraction of
        the incident beam (sums to <= 1), undiffracted beam at pixel ``(n // 2, n // 2)``;
        ``thicknesses_angstrom`` [Å] (slice boundaries); ``sampling_mrad`` [mrad];
        ``metadata``.

    Examples
    --------
    A thickness series of SrTiO3 [001] up to 4 cells (15.6 Å), 2 x 2 positions per cell:

    >>> import inverscope as isc
    >>> atoms = isc.perovskite_slab("SrTiO3", 1, 4 * 3.905)
    >>> grid = isc.Grid.from_sampling((3.905, 3.905), 0.1)
    >>> potential = isc.PotentialBuilder(atoms, grid, 3.905 / 2)   # 8 slices
    >>> result = isc.pacbed(potential, isc.Probe(200e3, 20.0), (3.905, 3.905), positions_per_cell=2,
    ...                     detector=isc.PixelatedDetector(max_angle_mrad=40.0))
    >>> result.array.shape, round(result.sampling_mrad[0], 3)   # (thickness, kx, ky), [mrad]
    ((8, 13, 13), 6.422)
    >>> result.thicknesses_angstrom[[0, -1]].round(2).tolist()   # [Å]
    [1.95, 15.62]
    >>> result.array.sum(axis=(1, 2))[[0, -1]].round(3)   # fraction of the beam within 40 mrad
    array([0.995, 0.959], dtype=float32)
    """
    sim = pacbed_simulation(potential, probe, cell_angstrom, positions_per_cell=positions_per_cell, detector=detector,
                            thicknesses_angstrom=thicknesses_angstrom, phonons=phonons, tilt_mrad=tilt_mrad,
                            device=device, memory_budget_mb=memory_budget_mb, dtype=dtype)
    return average_over_positions(sim, progress, cell_angstrom)


__all__ = ["PACBEDResult", "pacbed", "pacbed_simulation", "average_over_positions", "unit_cell_positions"]
