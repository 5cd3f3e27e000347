"""Integrating (virtual) detectors in the diffraction plane: annular and segmented.

A detector is a set of weights over the diffraction-plane pixels; its signals are
the weighted sums of the intensities. Angles are scattering angles [mrad] measured
from the optical axis; the azimuth is measured from the grid's first (x) axis towards
its second (y) axis [deg]. A pixel belongs to an annulus when
``inner_mrad <= alpha < outer_mrad`` (so adjacent annuli partition the plane).

Intensities may be given centred (zero frequency at index ``(n // 2, m // 2)``, the
layout of ``PixelatedDetector`` and of
``CBEDResult``) or in FFT order
(``centered=False``, the raw ``|FFT(psi)|^2`` layout). With intensities normalized as in
the multislice engine (a pattern sums to one when nothing is lost), an annular signal is
the fraction of the incident beam that reaches the detector.

``stem_image`` runs a plain multislice or a PRISM simulation over a scan and returns
one image per detector signal (and per exit thickness).

Preset angles (documented choices, 200-300 kV conventions):

* ``AnnularDetector.haadf`` -- 70 to 200 mrad (inner well above 3x a typical
  20-30 mrad convergence semiangle, outer at the usual collection limit).
* ``AnnularDetector.maadf`` -- 30 to 70 mrad (from just outside a ~25 mrad bright
  field disc up to the HAADF inner angle).
* ``AnnularDetector.abf`` -- semiangle/2 to semiangle (Findlay et al., Appl. Phys.
  Lett. 95 (2009) 191913).
* ``AnnularDetector.bf`` -- 0 to semiangle/2, the inner disc of the bright field
  cone; ``bf`` and ``abf`` together cover the whole bright field disc.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from inverscope.core.errors import GridError, field_error
from inverscope.core.grid import Grid


def angular_coordinates(shape: tuple[int, int], sampling_mrad: tuple[float, float],
                        centered: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Scattering angle [mrad] and azimuth [rad, in (-pi, pi]] of every diffraction pixel.

    Parameters
    ----------
    shape : (int, int)
        Pattern shape (x, y).
    sampling_mrad : (float, float)
        Pixel size along x and y [mrad].
    centered : bool
        True: zero angle at ``(n // 2, m // 2)``; False: FFT order (zero at ``(0, 0)``).
    """
    axes = []
    for n, d in zip(shape, sampling_mrad):
        idx = np.arange(n) - n // 2 if centered else np.fft.fftfreq(n, 1.0 / n)
        axes.append(idx * float(d))
    ax, ay = axes[0][:, None], axes[1][None, :]
    alpha = np.sqrt(ax ** 2 + ay ** 2)
    phi = np.arctan2(ay, ax) * np.ones_like(alpha)
    return alpha, phi


def _check_angles(inner_mrad, outer_mrad, name: str) -> tuple[float, float]:
    try:
        inner, outer = float(inner_mrad), float(outer_mrad)
    except (TypeError, ValueError):
        raise field_error(f"{name}.inner_mrad/outer_mrad", (inner_mrad, outer_mrad), "must be numbers [mrad]") from None
    if not (math.isfinite(inner) and math.isfinite(outer)) or inner < 0 or outer <= inner:
        raise field_error(f"{name}.inner_mrad/outer_mrad", (inner_mrad, outer_mrad),
                          "need 0 <= inner < outer, both finite [mrad]")
    return inner, outer


class _IntegratingDetector:
    """Common machinery: weights (n_base, nx, ny), validation against the grid, integration."""

    name: str
    inner_mrad: float
    outer_mrad: float

    @property
    def signal_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def weights(self, shape, sampling_mrad, centered: bool = True) -> np.ndarray:
        raise NotImplementedError

    def _derive(self, base: torch.Tensor) -> torch.Tensor:
        return base

    def validate(self, grid: Grid, wavelength_angstrom: float) -> None:
        """Raise ``GridError`` if the outer angle lies beyond the grid's anti-aliasing cutoff."""
        check_cutoff(self, grid, wavelength_angstrom)

    def integrate(self, intensities: torch.Tensor, sampling_mrad, centered: bool = True) -> torch.Tensor:
        """Signals (..., n_signals) from intensities (..., nx, ny) sampled at `sampling_mrad` [mrad]."""
        shape = tuple(intensities.shape[-2:])
        w = torch.as_tensor(self.weights(shape, tuple(sampling_mrad), centered).reshape(-1, shape[0] * shape[1]).T,
                            dtype=intensities.dtype, device=intensities.device)
        base = intensities.reshape(*intensities.shape[:-2], -1) @ w
        return self._derive(base)


def check_cutoff(detector, grid: Grid, wavelength_angstrom: float) -> None:
    """Raise a one-line ``GridError`` if `detector` reaches beyond the anti-aliasing cutoff."""
    cutoff = grid.antialias_cutoff_mrad(wavelength_angstrom)
    if detector.outer_mrad > cutoff * (1 + 1e-9):
        need = max(grid.sampling) * cutoff / detector.outer_mrad
        raise GridError(f"detector {detector.name}: outer angle {detector.outer_mrad:g} mrad exceeds the largest angle "
                        f"available, {cutoff:.1f} mrad (anti-aliasing cutoff at sampling {max(grid.sampling):.4f} Å); "
                        f"use sampling_angstrom <= {need:.4f} Å or a smaller outer angle")


class AnnularDetector(_IntegratingDetector):
    """An annular (or disc) detector: total intensity with ``inner_mrad <= alpha < outer_mrad``.

    Parameters
    ----------
    inner_mrad, outer_mrad : float
        Collection angles [mrad], 0 <= inner < outer.
    name : str, optional
        Name of its signal; default ``"annular_<inner>_<outer>"``.

    Notes
    -----
    Presets: ``AnnularDetector.haadf()`` (70-200 mrad), ``.maadf()`` (30-70 mrad),
    ``.abf(semiangle_mrad)`` (semiangle/2 to semiangle) and ``.bf(semiangle_mrad)`` (0 to
    semiangle/2). With patterns normalized as the simulations write them, the signal is the
    fraction of the incident beam that reaches the detector.

    Examples
    --------
    >>> import inverscope as isc
    >>> isc.AnnularDetector.haadf()
    AnnularDetector(70, 200, name='haadf')
    >>> bf = isc.AnnularDetector(0.0, 10.0, name="bf")
    >>> bf.signal_names
    ('bf',)

    Integrated over a flat pattern of 41 x 41 pixels at 1 mrad, the 10 mrad disc collects the
    fraction of the pixels it covers:

    >>> import torch
    >>> pattern = torch.ones(41, 41) / 41 ** 2
    >>> round(float(bf.integrate(pattern, (1.0, 1.0))[0]), 4)
    0.1814

    In a simulation, pass detectors to ``stem_image`` or ``PRISMSimulation``.
    """

    def __init__(self, inner_mrad: float, outer_mrad: float, name: str | None = None):
        self.inner_mrad, self.outer_mrad = _check_angles(inner_mrad, outer_mrad, "AnnularDetector")
        self.name = name or f"annular_{self.inner_mrad:g}_{self.outer_mrad:g}"

    def __repr__(self) -> str:
        return f"AnnularDetector({self.inner_mrad:g}, {self.outer_mrad:g}, name={self.name!r})"

    @classmethod
    def haadf(cls, inner_mrad: float = 70.0, outer_mrad: float = 200.0) -> "AnnularDetector":
        """High-angle annular dark field, 70-200 mrad by default."""
        return cls(inner_mrad, outer_mrad, name="haadf")

    @classmethod
    def maadf(cls, inner_mrad: float = 30.0, outer_mrad: float = 70.0) -> "AnnularDetector":
        """Medium-angle annular dark field, 30-70 mrad by default."""
        return cls(inner_mrad, outer_mrad, name="maadf")

    @classmethod
    def abf(cls, semiangle_mrad: float) -> "AnnularDetector":
        """Annular bright field: semiangle/2 to the convergence semiangle [mrad]."""
        return cls(semiangle_mrad / 2.0, semiangle_mrad, name="abf")

    @classmethod
    def bf(cls, semiangle_mrad: float) -> "AnnularDetector":
        """Bright field: 0 to semiangle/2 [mrad] (the inner half of the bright field cone)."""
        return cls(0.0, semiangle_mrad / 2.0, name="bf")

    @property
    def signal_names(self) -> tuple[str, ...]:
        return (self.name,)

    def weights(self, shape, sampling_mrad, centered: bool = True) -> np.ndarray:
        """(1, nx, ny) 0/1 mask of the annulus on a pattern of `shape` at `sampling_mrad` [mrad]."""
        alpha, _ = angular_coordinates(tuple(shape), tuple(sampling_mrad), centered)
        tol = 1e-9 * max(sampling_mrad)
        return ((alpha >= self.inner_mrad - tol) & (alpha < self.outer_mrad - tol)).astype(np.float64)[None]


class SegmentedDetector(_IntegratingDetector):
    """An annulus cut into equal azimuthal segments, with a differential phase contrast pair.

    Segment ``i`` spans azimuths ``[rotation + i * 360 / n, rotation + (i + 1) * 360 / n)``
    [deg]; a pixel exactly on a boundary is shared equally by its two segments and the
    central pixel (alpha = 0, when ``inner_mrad == 0``) equally by all, so a centred,
    symmetric pattern gives equal segments. The DPC pair is
    ``dpc_x = sum_i S_i cos(theta_i)``, ``dpc_y = sum_i S_i sin(theta_i)`` with theta_i the
    mid-azimuth of segment i (for 4 segments at 0 deg: ``(S0 - S1 - S2 + S3) / sqrt(2)``
    and ``(S0 + S1 - S2 - S3) / sqrt(2)``); it points along the shift of the pattern.

    Parameters
    ----------
    inner_mrad, outer_mrad : float
        Collection angles [mrad].
    n_segments : int
        Number of segments (>= 2).
    rotation_deg : float
        Azimuth of the start of segment 0 [deg].
    name : str
        Prefix of the signal names (``<name>_0 .. <name>_{n-1}``, ``<name>_dpc_x``, ``<name>_dpc_y``).

    Examples
    --------
    >>> import inverscope as isc
    >>> seg = isc.SegmentedDetector(10.0, 30.0)   # 4 segments, 10-30 mrad
    >>> seg.signal_names
    ('segmented_0', 'segmented_1', 'segmented_2', 'segmented_3', 'segmented_dpc_x', 'segmented_dpc_y')

    A 15 mrad disc shifted by +3 mrad along x (41 x 41 pixels at 1 mrad) gives a positive
    ``dpc_x``:

    >>> import numpy as np, torch
    >>> kx, ky = np.mgrid[-20:21, -20:21]   # pixel offsets from the centre, (x, y)
    >>> disc = ((kx - 3) ** 2 + ky ** 2 < 15 ** 2).astype(float)
    >>> signals = seg.integrate(torch.as_tensor(disc / disc.sum()), (1.0, 1.0))
    >>> round(float(signals[0]), 3), round(float(signals[1]), 3), round(float(signals[4]), 3)
    (0.203, 0.078, 0.177)
    """

    def __init__(self, inner_mrad: float, outer_mrad: float, n_segments: int = 4, rotation_deg: float = 0.0,
                 name: str = "segmented"):
        self.inner_mrad, self.outer_mrad = _check_angles(inner_mrad, outer_mrad, "SegmentedDetector")
        if int(n_segments) != n_segments or n_segments < 2:
            raise field_error("SegmentedDetector.n_segments", n_segments, "must be an integer >= 2")
        if not math.isfinite(float(rotation_deg)):
            raise field_error("SegmentedDetector.rotation_deg", rotation_deg, "must be finite [deg]")
        self.n_segments = int(n_segments)
        self.rotation_deg = float(rotation_deg)
        self.name = name

    def __repr__(self) -> str:
        return (f"SegmentedDetector({self.inner_mrad:g}, {self.outer_mrad:g}, n_segments={self.n_segments}, "
                f"rotation_deg={self.rotation_deg:g}, name={self.name!r})")

    @property
    def signal_names(self) -> tuple[str, ...]:
        return tuple(f"{self.name}_{i}" for i in range(self.n_segments)) + (f"{self.name}_dpc_x", f"{self.name}_dpc_y")

    @property
    def mid_azimuths_rad(self) -> np.ndarray:
        """Mid-azimuth of each segment [rad]."""
        width = 2 * np.pi / self.n_segments
        return np.deg2rad(self.rotation_deg) + width * (np.arange(self.n_segments) + 0.5)

    def weights(self, shape, sampling_mrad, centered: bool = True) -> np.ndarray:
        """(n_segments, nx, ny) weights; each pixel of the annulus has weights summing to one."""
        alpha, phi = angular_coordinates(tuple(shape), tuple(sampling_mrad), centered)
        tol = 1e-9 * max(sampling_mrad)
        ring = (alpha >= self.inner_mrad - tol) & (alpha < self.outer_mrad - tol)
        n = self.n_segments
        pos = ((phi - np.deg2rad(self.rotation_deg)) % (2 * np.pi)) / (2 * np.pi / n)  # in [0, n)
        seg = np.floor(pos + 1e-9).astype(int) % n
        on_edge = np.abs(pos - np.round(pos)) < 1e-9
        out = np.zeros((n, *alpha.shape))
        for k in range(n):
            own = seg == k
            out[k] = np.where(on_edge, 0.5 * (own + ((seg - 1) % n == k)), own)
        out[:, alpha == 0.0] = 1.0 / n
        return out * ring[None]

    def _derive(self, base: torch.Tensor) -> torch.Tensor:
        th = torch.as_tensor(self.mid_azimuths_rad, dtype=base.dtype, device=base.device)
        dpc_x = (base * torch.cos(th)).sum(-1, keepdim=True)
        dpc_y = (base * torch.sin(th)).sum(-1, keepdim=True)
        return torch.cat([base, dpc_x, dpc_y], dim=-1)


Detector = AnnularDetector | SegmentedDetector


def validate_detectors(detectors: Sequence[_IntegratingDetector], grid: Grid, wavelength_angstrom: float) -> list:
    """Check types, unique signal names and the anti-aliasing cutoff; return the list."""
    if isinstance(detectors, _IntegratingDetector):
        detectors = [detectors]
    detectors = list(detectors)
    if not detectors:
        raise field_error("detectors", detectors, "give at least one AnnularDetector or SegmentedDetector")
    names: list[str] = []
    for d in detectors:
        if not isinstance(d, _IntegratingDetector):
            raise field_error("detectors", type(d).__name__, "each must be an AnnularDetector or SegmentedDetector")
        d.validate(grid, wavelength_angstrom)
        names.extend(d.signal_names)
    if len(set(names)) != len(names):
        raise field_error("detectors", names, "signal names must be unique; give each detector its own name")
    return detectors


class DetectorBank:
    """Several detectors resolved for one pattern shape and sampling: one matrix product.

    Parameters
    ----------
    detectors : sequence of AnnularDetector / SegmentedDetector
    shape : (int, int)
        Pattern shape.
    sampling_mrad : (float, float)
        Pattern pixel size [mrad].
    centered : bool
        Layout of the intensities (see ``angular_coordinates``).
    device, dtype
        Where and in which precision the weights live.
    """

    def __init__(self, detectors, shape, sampling_mrad, centered: bool = True, device="cpu", dtype=torch.float32):
        self.detectors = list(detectors)
        self.shape = tuple(shape)
        self.sampling_mrad = tuple(sampling_mrad)
        blocks = [d.weights(self.shape, self.sampling_mrad, centered).reshape(-1, self.shape[0] * self.shape[1])
                  for d in self.detectors]
        self.sizes = [b.shape[0] for b in blocks]
        self.matrix = torch.as_tensor(np.concatenate(blocks, 0).T, dtype=dtype, device=device)

    @property
    def signal_names(self) -> tuple[str, ...]:
        return tuple(n for d in self.detectors for n in d.signal_names)

    def __call__(self, intensities: torch.Tensor) -> torch.Tensor:
        """Signals (..., n_signals) from intensities (..., nx, ny)."""
        base = intensities.reshape(*intensities.shape[:-2], -1) @ self.matrix
        out, start = [], 0
        for d, n in zip(self.detectors, self.sizes):
            out.append(d._derive(base[..., start:start + n]))
            start += n
        return torch.cat(out, dim=-1)


@dataclass
class STEMImages:
    """Integrated-detector images over a scan.

    Attributes
    ----------
    images : dict of str to np.ndarray
        One array (*scan_shape, n_thickness) per detector signal, in fractions of the
        incident beam.
    scan_shape : tuple
        Shape of the scan axes.
    thicknesses_angstrom : np.ndarray
        Exit thicknesses recorded [Å].
    metadata : dict
        Simulation parameters and timings.
    patterns : np.ndarray or None
        Diffraction patterns (*scan_shape, n_thickness, px, py), centred, when asked for
        (PRISM's ``store_patterns=True``); sampled at ``metadata["pattern_sampling_mrad"]``.
    """

    images: dict
    scan_shape: tuple
    thicknesses_angstrom: np.ndarray
    metadata: dict = field(default_factory=dict)
    patterns: np.ndarray | None = None

    def image(self, name: str, thickness_index: int = -1) -> np.ndarray:
        """The image of signal `name` at one exit thickness, shape `scan_shape`."""
        if name not in self.images:
            raise field_error("name", name, f"available: {', '.join(self.images)}")
        return self.images[name][..., thickness_index]


def stem_image(potential, probe, scan, detectors, method: str = "multislice", interpolation: int = 1,
               thicknesses_angstrom=None, phonons=None, device: str = "cpu", dtype=torch.float32,
               tilt_mrad: tuple[float, float] = (0.0, 0.0), batch_size: int | None = None,
               memory_budget_mb: float = 512.0) -> STEMImages:
    """Integrated-detector STEM images by plain multislice or PRISM.

    Parameters
    ----------
    potential : PotentialBuilder
        The sliced specimen; its grid sets the real-space sampling [Å].
    probe : Probe
        Energy [eV], convergence semiangle [mrad], defocus and aberrations.
    scan : Scan
        Probe positions [Å], inside the cell.
    detectors : AnnularDetector, SegmentedDetector or a sequence of them
        Integrating detectors [mrad]; their signal names must be unique.
    method : {'multislice', 'prism'}
        Plain multislice (one propagation per probe position) or PRISM
        (``PRISMSimulation``).
    interpolation : int
        PRISM interpolation factor (1-4); ignored by plain multislice.
    thicknesses_angstrom : sequence of float, optional
        Exit thicknesses [Å]; default the full specimen.
    phonons : FrozenPhonons or list of (N, 3) arrays, optional
        Frozen-phonon configurations; images are averaged over them.
    device : str
        'cpu', 'cuda', ...
    dtype : torch.dtype
        torch.float32 (complex64 waves) or torch.float64.
    tilt_mrad : (float, float)
        Specimen tilt [mrad].
    batch_size : int, optional
        Probe positions per batch.
    memory_budget_mb : float
        Bound on the working set of one batch [MiB].

    Returns
    -------
    STEMImages
        ``images``: one array (*scan.shape, n_thickness) per detector signal, in fractions of
        the incident beam (``image(name)``: one thickness); ``thicknesses_angstrom`` [Å];
        ``metadata``: simulation parameters and timings.

    Examples
    --------
    Bright field and annular dark field over a 2 x 2 raster on one SrTiO3 cell:

    >>> import inverscope as isc
    >>> atoms = isc.perovskite_slab("SrTiO3", 1, 3.905)
    >>> grid = isc.Grid.from_sampling((3.905, 3.905), 0.1)
    >>> potential = isc.PotentialBuilder(atoms, grid, 3.905 / 2)
    >>> scan = isc.grid_scan((0.0, 0.0), (3.905, 3.905), (2, 2))
    >>> detectors = [isc.AnnularDetector(0, 10, name="bf"), isc.AnnularDetector(30, 80, name="adf")]
    >>> result = isc.stem_image(potential, isc.Probe(200e3, 20.0), scan, detectors)
    >>> result.images["adf"].shape, result.thicknesses_angstrom.tolist()   # (*scan, thickness)
    ((2, 2, 1), [3.905])
    >>> result.image("adf").round(3)   # fraction of the beam; the Sr column at (0, 0)
    array([[0.03 , 0.002],
           [0.002, 0.025]])
    """
    from inverscope.physics.multislice.detectors import PixelatedDetector
    from inverscope.physics.multislice.simulate import MultisliceSimulation

    if method == "prism":
        from inverscope.physics.multislice.prism import PRISMSimulation

        sim = PRISMSimulation(potential, probe, scan, detectors, interpolation=interpolation,
                              thicknesses_angstrom=thicknesses_angstrom, phonons=phonons, device=device, dtype=dtype,
                              tilt_mrad=tilt_mrad, batch_size=batch_size, memory_budget_mb=memory_budget_mb)
        return sim.run()
    if method != "multislice":
        raise field_error("method", method, "allowed: multislice, prism")
    detectors = validate_detectors(detectors, potential.grid, probe.wavelength_angstrom)
    sim = MultisliceSimulation(potential, probe, scan, PixelatedDetector(), thicknesses_angstrom=thicknesses_angstrom,
                               phonons=phonons, device=device, dtype=dtype, tilt_mrad=tilt_mrad,
                               batch_size=batch_size, memory_budget_mb=memory_budget_mb)
    bank = DetectorBank(detectors, sim.plan.shape, sim.plan.sampling_mrad, centered=True, device=sim.device,
                        dtype=dtype)
    out = np.empty((len(scan), len(sim.exit_slices), len(bank.signal_names)), np.float64)
    import time

    t0 = time.perf_counter()
    for start, stop, batch in sim.iter_batches():
        with torch.inference_mode():
            out[start:stop] = bank(torch.as_tensor(batch, device=sim.device)).cpu().numpy()
    wall = time.perf_counter() - t0
    images = {name: out[..., i].reshape(*scan.shape, -1) for i, name in enumerate(bank.signal_names)}
    meta = sim.metadata(wall)
    meta.update(method="multislice", detectors=[repr(d) for d in detectors])
    return STEMImages(images, tuple(scan.shape), sim.thicknesses_angstrom, meta)
