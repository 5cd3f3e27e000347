"""PRISM: STEM by a plane-wave scattering matrix (Ophus, Adv. Struct. Chem. Imaging 3 (2017) 13).

A probe is a superposition of plane waves inside its aperture, and multislice is linear
in the incident wave. PRISM therefore propagates each plane wave once (the S-matrix)
and forms the exit wave of any probe position as the coefficient-weighted sum of the
propagated plane waves:

``psi_exit(r; r0) = sum_k c_k exp(-2 pi i k.r0) S_k(r)``,
``c_k = A(k) exp(-i chi(k)) / norm``

With interpolation factor ``f`` only every f-th reciprocal lattice point is used, i.e.
the beams of the f-times-smaller cell ``(Lx / f, Ly / f)``. The probe they build is
periodic with that period, so each exit wave is cut to one period, a window of
``(Lx / f, Ly / f)`` centred on the probe, before it is Fourier transformed and
integrated by the detectors. At f = 1 PRISM equals plain multislice up to rounding;
at f > 1 the cut (and the coarser k-sampling of aperture and detectors) is the
approximation, whose error grows with f and shrinks with the cell size relative to
the spread of the probe.

Conventions are those of plain multislice (``.simulate``): the same potential
slices, band-limited propagators (tilt included) and probe aperture (soft edge smoothed
over one beam spacing, ``f * lambda / L``), so intensities sum to one for a probe that
loses nothing. After propagation the S-matrix is Fourier-cropped to the anti-aliasing
cutoff (as abTEM's ``downsample="cutoff"``), which changes nothing inside the cutoff
and shrinks the windows by about 2/3.

Lengths [Å], angles [mrad], energies [eV].
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import torch

from inverscope.core.errors import GridError, field_error
from inverscope.core.grid import is_fft_friendly
from inverscope.physics.multislice.annular import DetectorBank, STEMImages, validate_detectors
from inverscope.physics.multislice.detectors import DetectorPlan
from inverscope.physics.multislice.phonons import FrozenPhonons
from inverscope.physics.multislice.potentials import PotentialBuilder, antialias_aperture
from inverscope.physics.multislice.probe import Probe, aberration_phase
from inverscope.physics.multislice.propagate import fresnel_propagator
from inverscope.physics.multislice.scan import Scan
from inverscope.physics.multislice.simulate import _available_memory_bytes, check_tilt, exit_slice_indices

#: interpolation factors supported
INTERPOLATIONS = (1, 2, 3, 4)


def _fitting_gpts(n: int, m: int) -> str:
    lo, hi = (n // m) * m, (n // m + 1) * m
    return f"{lo} or {hi}" if lo >= 2 else f"{hi}"


def prism_beams(probe: Probe, extent: Sequence[float], interpolation: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer reciprocal-lattice indices (n_beams, 2) of the PRISM beams and their aperture weights.

    Beams sit at ``k = (n f / Lx, m f / Ly)`` [1/Å]; a beam is kept when the probe's
    aperture (soft edge smoothed over one beam spacing when ``probe.soft_edge``) is
    non-zero there. Returned indices are on the full grid (``(n f, m f)``).
    """
    lam, f = probe.wavelength_angstrom, int(interpolation)
    semi = probe.semiangle_mrad * 1e-3
    dk = [f / e for e in extent]
    nmax = [int(math.ceil(semi / lam / d)) + 1 for d in dk]
    n = np.arange(-nmax[0], nmax[0] + 1)
    m = np.arange(-nmax[1], nmax[1] + 1)
    nn, mm = np.meshgrid(n, m, indexing="ij")
    kx, ky = nn * dk[0], mm * dk[1]
    alpha = np.sqrt(kx ** 2 + ky ** 2) * lam
    phi = np.arctan2(ky, kx)
    if probe.soft_edge:
        denom = np.sqrt((np.cos(phi) * dk[0] * lam) ** 2 + (np.sin(phi) * dk[1] * lam) ** 2)
        ap = np.clip((semi - alpha) / denom + 0.5, 0.0, 1.0)
        ap[alpha == 0] = 1.0
    else:
        ap = (alpha <= semi).astype(np.float64)
    keep = ap > 0
    idx = np.stack([nn[keep] * f, mm[keep] * f], axis=1)
    return idx, ap[keep]


def _configurations(phonons, atoms) -> list[np.ndarray | None]:
    if phonons is None:
        return [None]
    if isinstance(phonons, FrozenPhonons):
        return phonons.positions(atoms)
    configs = [np.asarray(p, dtype=np.float64) for p in phonons]
    n = len(atoms)
    if not configs or any(c.shape != (n, 3) for c in configs):
        raise field_error("phonons", f"{len(configs)} configurations", f"each must be an ({n}, 3) array of positions [Å]")
    return configs


class PRISMSimulation:
    """Integrated-detector STEM images (and optionally 4D patterns) by PRISM (builder).

    Parameters
    ----------
    potential : PotentialBuilder
        The sliced specimen; its grid sets the real-space sampling [Å].
    probe : Probe
        Aperture, defocus and aberrations enter the plane-wave coefficients.
    scan : Scan
        Probe positions [Å], inside the cell.
    detectors : AnnularDetector, SegmentedDetector or a sequence of them
        Integrating detectors [mrad]; their signal names must be unique.
    interpolation : int
        PRISM interpolation factor f in (1, 2, 3, 4); the grid's gpts must be divisible by 2 f.
    thicknesses_angstrom : sequence of float, optional
        Exit thicknesses [Å]; the S-matrix is kept at each (memory x n_thickness).
    phonons : FrozenPhonons or list of (N, 3) arrays, optional
        Frozen-phonon configurations, each with its own S-matrix; results are averaged.
    device : str
        'cpu', 'cuda', ...
    dtype : torch.dtype
        torch.float32 (complex64 waves) or torch.float64.
    tilt_mrad : (float, float)
        Specimen tilt [mrad], in the propagator as in plain multislice; the windows follow
        the lateral drift ``z tan(tilt)`` of the wave.
    batch_size : int, optional
        Most probe positions per reduction batch; default from `memory_budget_mb`.
    memory_budget_mb : float
        Bound on the working set of one batch of plane waves or probe positions [MiB]
        (the S-matrix itself comes on top: n_thickness * n_beams * gpts' * 8 bytes).
    downsample : bool
        Fourier-crop the S-matrix to the anti-aliasing cutoff after propagation.
    store_patterns : bool
        Also keep the diffraction patterns of every position (cut to the cutoff disc).

    Notes
    -----
    ``run()`` returns ``STEMImages`` as ``stem_image`` does: ``images``, one array
    (*scan.shape, n_thickness) per detector signal in fractions of the incident beam,
    ``thicknesses_angstrom`` [Å], ``metadata`` and, with ``store_patterns=True``,
    ``patterns`` (*scan.shape, n_thickness, px, py) at ``metadata["pattern_sampling_mrad"]``.

    Examples
    --------
    At interpolation 1 PRISM gives the plain multislice images (see ``stem_image``); at 2
    it uses every second beam:

    >>> import inverscope as isc
    >>> atoms = isc.perovskite_slab("SrTiO3", 1, 3.905)
    >>> grid = isc.Grid.from_sampling((3.905, 3.905), 0.1)   # 40 x 40 points
    >>> potential = isc.PotentialBuilder(atoms, grid, 3.905 / 2)
    >>> scan = isc.grid_scan((0.0, 0.0), (3.905, 3.905), (2, 2))
    >>> adf = isc.AnnularDetector(30, 80, name="adf")
    >>> sim = isc.PRISMSimulation(potential, isc.Probe(200e3, 20.0), scan, adf, interpolation=1)
    >>> sim.num_beams
    45
    >>> sim.run().image("adf").round(3)   # fraction of the beam
    array([[0.03 , 0.002],
           [0.002, 0.025]])
    >>> sim = isc.PRISMSimulation(potential, isc.Probe(200e3, 20.0), scan, adf, interpolation=2)
    >>> sim.num_beams, sim.run().images["adf"].shape   # (*scan, thickness)
    (13, (2, 2, 1))
    """

    def __init__(self, potential: PotentialBuilder, probe: Probe, scan: Scan, detectors, interpolation: int = 2,
                 thicknesses_angstrom=None, phonons: FrozenPhonons | Sequence[np.ndarray] | None = None,
                 device: str = "cpu", dtype=torch.float32, tilt_mrad: tuple[float, float] = (0.0, 0.0),
                 batch_size: int | None = None, memory_budget_mb: float = 512.0, downsample: bool = True,
                 store_patterns: bool = False):
        if interpolation not in INTERPOLATIONS or isinstance(interpolation, bool):
            raise field_error("interpolation", interpolation, f"allowed: {', '.join(map(str, INTERPOLATIONS))}")
        if dtype not in (torch.float32, torch.float64):
            raise field_error("dtype", dtype, "allowed: torch.float32, torch.float64")
        if batch_size is not None and int(batch_size) < 1:
            raise field_error("batch_size", batch_size, "must be >= 1 or null")
        if not (memory_budget_mb > 0):
            raise field_error("memory_budget_mb", memory_budget_mb, "must be > 0 [MiB]")
        self.potential, self.probe, self.scan = potential, probe, scan
        self.f = int(interpolation)
        self.device, self.dtype = torch.device(device), dtype
        self.ctype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self.tilt_mrad = check_tilt(tilt_mrad)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.memory_budget_mb = float(memory_budget_mb)
        self.store_patterns = bool(store_patterns)
        grid, lam = potential.grid, probe.wavelength_angstrom
        for axis, n in zip("xy", grid.gpts):
            if n % (2 * self.f):
                raise GridError(f"potential.grid.gpts: got {tuple(grid.gpts)}; PRISM at interpolation {self.f} needs "
                                f"gpts divisible by {2 * self.f} (along {axis}: {_fitting_gpts(n, 2 * self.f)} fit)")
        cutoff = grid.antialias_cutoff_mrad(lam)
        if probe.semiangle_mrad >= cutoff:
            raise GridError(f"sampling_angstrom: {max(grid.sampling):.4f} Å gives an anti-aliasing cutoff of {cutoff:.1f} "
                            f"mrad, below the {probe.semiangle_mrad} mrad probe; use <= "
                            f"{max(grid.sampling) * cutoff / probe.semiangle_mrad / 1.05:.4f} Å")
        scan.validate(grid.extent)
        self.detectors = validate_detectors(detectors, grid, lam)
        self.exit_slices = exit_slice_indices(potential.edges, thicknesses_angstrom)
        self.configs = _configurations(phonons, potential.atoms)
        self.beam_indices, self._aperture = prism_beams(probe, grid.extent, self.f)
        beam_mrad = float(np.sqrt(((self.beam_indices / np.asarray(grid.extent)[None]) ** 2).sum(1)).max()) * lam * 1e3
        if beam_mrad >= cutoff:
            raise GridError(f"interpolation: got {self.f}; its outermost beam ({beam_mrad:.1f} mrad, soft aperture edge) "
                            f"lies beyond the {cutoff:.1f} mrad anti-aliasing cutoff; use a finer sampling_angstrom, "
                            f"soft_edge=False or a smaller interpolation")
        self.gpts_s = self._downsampled_gpts() if downsample else tuple(grid.gpts)
        self.window_gpts = tuple(n // self.f for n in self.gpts_s)
        if self.device.type == "cpu" and self.s_matrix_nbytes() > 0.8 * _available_memory_bytes():
            raise field_error("thicknesses_angstrom", len(self.exit_slices),
                              f"the S-matrix needs {self.s_matrix_nbytes() / 2**30:.1f} GiB ({self.num_beams} beams x "
                              f"{self.gpts_s} x {len(self.exit_slices)} exits), more than 80 % of the free memory; "
                              "use fewer exit thicknesses, a larger interpolation or a smaller cell")

    # -- geometry -------------------------------------------------------------------------------
    def _downsampled_gpts(self) -> tuple[int, int]:
        """Smallest multiple of 2 f per axis holding every frequency inside the anti-aliasing cutoff,
        with an FFT-friendly window (gpts / f)."""
        grid = self.potential.grid
        kcut = 1.0 / 3.0 / max(grid.sampling)  # 2/3 of the Nyquist frequency [1/Å]
        out = []
        for n, e in zip(grid.gpts, grid.extent):
            h = int(math.ceil(kcut * e - 1e-9)) - 1  # highest index inside the cutoff (zero at the cutoff)
            m = 2 * self.f
            size = m * int(math.ceil((2 * h + 2) / m))
            while size < n and not is_fft_friendly(size // self.f):
                size += m
            out.append(min(n, size))
        return tuple(out)

    @property
    def num_beams(self) -> int:
        return len(self.beam_indices)

    @property
    def sampling_s(self) -> tuple[float, float]:
        """Real-space pixel size of the (downsampled) S-matrix [Å]."""
        return tuple(e / n for e, n in zip(self.potential.grid.extent, self.gpts_s))

    @property
    def pattern_sampling_mrad(self) -> tuple[float, float]:
        """Diffraction-plane pixel size of a window [mrad] (f times the full grid's)."""
        lam = self.probe.wavelength_angstrom
        return tuple(lam * self.f / e * 1e3 for e in self.potential.grid.extent)

    @property
    def thicknesses_angstrom(self) -> np.ndarray:
        return self.potential.edges[1:][self.exit_slices]

    @property
    def signal_names(self) -> tuple[str, ...]:
        return tuple(n for d in self.detectors for n in d.signal_names)

    def s_matrix_nbytes(self) -> int:
        """Memory of one S-matrix with all exits [bytes]."""
        item = 8 if self.dtype == torch.float32 else 16
        return len(self.exit_slices) * self.num_beams * math.prod(self.gpts_s) * item

    # -- coefficients ---------------------------------------------------------------------------
    def _beam_vectors(self) -> np.ndarray:
        """Wave vectors of the beams (n_beams, 2) [1/Å]."""
        return self.beam_indices / np.asarray(self.potential.grid.extent)[None]

    def _aperture_coefficients(self) -> torch.Tensor:
        """c_k = A(k) exp(-i chi(k)), normalized to sum |c|^2 = 1, complex128 on the device."""
        k = self._beam_vectors()
        lam = self.probe.wavelength_angstrom
        alpha = torch.as_tensor(np.sqrt((k ** 2).sum(1)) * lam, dtype=torch.float64, device=self.device)
        phi = torch.as_tensor(np.arctan2(k[:, 1], k[:, 0]), dtype=torch.float64, device=self.device)
        chi = aberration_phase(alpha, phi, lam, self.probe.coefficients())
        c = torch.polar(torch.as_tensor(self._aperture, dtype=torch.float64, device=self.device), -chi)
        return c / torch.sqrt((c.abs() ** 2).sum())

    def _position_coefficients(self, positions: np.ndarray) -> torch.Tensor:
        """(B, n_beams) coefficients of probes at `positions` [Å], in the working complex dtype."""
        k = torch.as_tensor(self._beam_vectors(), dtype=torch.float64, device=self.device)
        pos = torch.as_tensor(positions, dtype=torch.float64, device=self.device)
        phase = -2 * math.pi * (pos @ k.T)
        shift = torch.polar(torch.ones_like(phase), phase)
        return (shift * self._coef[None]).to(self.ctype)

    # -- S-matrix -------------------------------------------------------------------------------
    def _propagators(self) -> list[torch.Tensor]:
        grid, lam = self.potential.grid, self.probe.wavelength_angstrom
        cache, out = {}, []
        for d in np.diff(self.potential.edges):
            key = round(float(d), 12)
            if key not in cache:
                cache[key] = fresnel_propagator(grid, float(d), lam, self.device, self.dtype, self.tilt_mrad)
            out.append(cache[key])
        return out

    def _crop_indices(self) -> list[torch.Tensor]:
        return [torch.as_tensor(np.r_[0:m // 2, n - m // 2:n], device=self.device)
                for m, n in zip(self.gpts_s, self.potential.grid.gpts)]

    def build_s_matrix(self, config: np.ndarray | None = None) -> torch.Tensor:
        """S-matrix (n_exit, n_beams, *gpts_s) complex, real space, for one atom configuration.

        Plane waves of amplitude ``f^2 / prod(gpts_s)`` per beam are run through the
        slices; each exit thickness keeps a snapshot, Fourier-cropped to ``gpts_s``.
        """
        grid = self.potential.grid
        aa = torch.as_tensor(antialias_aperture(grid), dtype=self.dtype, device=self.device)
        t = self.potential.transmission_functions(self.probe.energy_ev, positions=config, device=self.device,
                                                  dtype=self.dtype, antialias=aa)
        props = self._propagators()
        exits = {int(e): j for j, e in enumerate(self.exit_slices)}
        last = max(exits)
        crop = None if tuple(self.gpts_s) == tuple(grid.gpts) else self._crop_indices()
        out = torch.empty((len(exits), self.num_beams, *self.gpts_s), dtype=self.ctype, device=self.device)
        per_beam = math.prod(grid.gpts) * (8 if self.dtype == torch.float32 else 16) * 3
        bb = max(1, int(self.memory_budget_mb * 2**20 // per_beam))
        ix = torch.as_tensor(self.beam_indices[:, 0] % grid.gpts[0], device=self.device)
        iy = torch.as_tensor(self.beam_indices[:, 1] % grid.gpts[1], device=self.device)
        for b0 in range(0, self.num_beams, bb):
            b1 = min(self.num_beams, b0 + bb)
            fourier = torch.zeros((b1 - b0, *grid.gpts), dtype=self.ctype, device=self.device)
            fourier[torch.arange(b1 - b0, device=self.device), ix[b0:b1], iy[b0:b1]] = float(self.f ** 2)
            waves = torch.fft.ifft2(fourier, out=fourier)
            for i in range(last + 1):
                waves.mul_(t[i])
                fk = torch.fft.fft2(waves, out=waves)
                fk.mul_(props[i])
                if i in exits:
                    sub = fk if crop is None else fk.index_select(-2, crop[0]).index_select(-1, crop[1])
                    out[exits[i], b0:b1] = torch.fft.ifft2(sub)
                if i < last:
                    waves = torch.fft.ifft2(fk, out=fk)
        return out

    # -- reduction ------------------------------------------------------------------------------
    #: fixed cost of one reduction batch (kernel launches, Python), in complex multiply-adds
    BATCH_OVERHEAD_MACS = 2e6

    def _tile_groups(self, pix: np.ndarray, tile: int) -> tuple[list[np.ndarray], np.ndarray, float]:
        """Group positions (pixels of the S-matrix grid) by square tiles of `tile` pixels.

        Returns the groups, the box (window plus spread) of each group, and the estimated
        cost of reducing them [complex multiply-adds].
        """
        key = np.floor(pix / tile).astype(np.int64)
        key -= key.min(0)
        tiles = key[:, 0] * (int(key[:, 1].max()) + 1) + key[:, 1]
        order = np.argsort(tiles, kind="stable")
        starts = np.r_[0, np.flatnonzero(np.diff(tiles[order])) + 1]
        p = pix[order]
        spread = np.maximum.reduceat(p, starts, axis=0) - np.minimum.reduceat(p, starts, axis=0)
        boxes = np.asarray(self.window_gpts)[None] + np.ceil(spread).astype(np.int64) + 1
        sizes = np.diff(np.r_[starts, len(p)])
        area = boxes.prod(1).astype(np.float64)
        cost = float((self.BATCH_OVERHEAD_MACS + (sizes + 1) * self.num_beams * area).sum())
        return np.split(order, starts[1:]), boxes, cost

    def _batches(self) -> list[np.ndarray]:
        """Index arrays of probe positions grouped into spatial tiles (compact windows per batch).

        The tile size is the one (of w/8 .. 2w, w the window) with the least estimated
        cost: larger tiles mean fewer, larger matrix products over a larger box.
        """
        n = len(self.scan)
        w = np.asarray(self.window_gpts)
        if self.f == 1:
            groups, boxes = [np.arange(n)], w[None]
        else:
            pix = self.scan.positions_angstrom / np.asarray(self.sampling_s)[None]
            best = None
            for tile in sorted({max(1, int(min(w)) * k // 8) for k in (1, 2, 4, 8, 16)}):
                cand = self._tile_groups(pix, tile)
                if best is None or cand[2] < best[2]:
                    best = cand
            groups, boxes = best[0], best[1]
        item = 8 if self.dtype == torch.float32 else 16
        budget = self.memory_budget_mb * 2**20
        out = []
        for group, box in zip(groups, boxes):
            area = int(np.prod(box))
            per_pos = (area + 3 * math.prod(w) + self.num_beams) * item
            copied = 0 if self.f == 1 else self.num_beams * area * item  # the box cut from the S-matrix
            free = max(budget - copied, per_pos)
            cap = self.batch_size or max(1, int(free // per_pos))
            out.extend(group[i:i + cap] for i in range(0, len(group), cap))
        return out

    def _windows(self, s: torch.Tensor, coef: torch.Tensor, positions: np.ndarray, offset: np.ndarray) -> torch.Tensor:
        """Exit waves (B, *window_gpts) cut around each probe from one exit's S-matrix `s`."""
        nb = s.shape[0]
        ns, w = np.asarray(self.gpts_s), np.asarray(self.window_gpts)
        if np.array_equal(w, ns):
            return (coef @ s.reshape(nb, -1)).reshape(-1, *self.gpts_s)
        pix = (positions + offset[None]) / np.asarray(self.sampling_s)[None]
        start = np.rint(pix).astype(np.int64) - w[None] // 2
        lo = start.min(0)
        size = start.max(0) - lo + w
        ix = torch.as_tensor((lo[0] + np.arange(size[0])) % ns[0], device=self.device)
        iy = torch.as_tensor((lo[1] + np.arange(size[1])) % ns[1], device=self.device)
        box = s.index_select(-2, ix).index_select(-1, iy)
        waves = (coef @ box.reshape(nb, -1)).reshape(-1, int(size[0]), int(size[1]))
        rx = torch.as_tensor((start[:, 0] - lo[0])[:, None] + np.arange(w[0])[None], device=self.device)
        ry = torch.as_tensor((start[:, 1] - lo[1])[:, None] + np.arange(w[1])[None], device=self.device)
        b = torch.arange(len(positions), device=self.device)
        return waves[b[:, None, None], rx[:, :, None], ry[:, None, :]]

    def _pattern_plan(self) -> DetectorPlan:
        grid = self.potential.grid
        kcut = 2.0 / 3.0 / max(grid.sampling)  # diameter of the anti-aliased disc [1/Å], as _cutoff_gpts
        crop = []
        for e, w in zip(grid.extent, self.window_gpts):
            m = int(math.floor(kcut * e / self.f + 1e-9))
            m -= (m % 2) != (w % 2)
            crop.append(max(min(m, w), 1))
        return DetectorPlan(self.window_gpts, tuple(crop), None, self.pattern_sampling_mrad)

    def run(self) -> STEMImages:
        """Simulate every position and configuration; images (*scan_shape, n_thickness) per signal."""
        t0 = time.perf_counter()
        n_exit = len(self.exit_slices)
        bank = DetectorBank(self.detectors, self.window_gpts, self.pattern_sampling_mrad, centered=False,
                            device=self.device, dtype=self.dtype)
        names = bank.signal_names
        signals = np.zeros((len(self.scan), n_exit, len(names)), np.float64)
        plan = self._pattern_plan() if self.store_patterns else None
        patterns = np.zeros((len(self.scan), n_exit, *plan.shape), np.float32) if plan is not None else None
        tx, ty = (math.tan(t * 1e-3) for t in self.tilt_mrad)
        offsets = [np.array([z * tx, z * ty]) for z in self.thicknesses_angstrom]
        timings = {"s_matrix_s": 0.0, "reduce_s": 0.0}
        with torch.inference_mode():
            self._coef = self._aperture_coefficients()
            batches = self._batches()
            for config in self.configs:
                t1 = time.perf_counter()
                smat = self.build_s_matrix(config)
                t2 = time.perf_counter()
                timings["s_matrix_s"] += t2 - t1
                for idx in batches:
                    pos = self.scan.positions_angstrom[idx]
                    coef = self._position_coefficients(pos)
                    for j in range(n_exit):
                        fk = torch.fft.fft2(self._windows(smat[j], coef, pos, offsets[j]))
                        inten = fk.real ** 2 + fk.imag ** 2
                        signals[idx, j] += bank(inten).double().cpu().numpy()
                        if plan is not None:
                            patterns[idx, j] += plan(fk).cpu().numpy()
                timings["reduce_s"] += time.perf_counter() - t2
                del smat
        signals /= len(self.configs)
        if patterns is not None:
            patterns /= len(self.configs)
            patterns = patterns.reshape(*self.scan.shape, n_exit, *plan.shape)
        images = {name: signals[..., i].reshape(*self.scan.shape, n_exit) for i, name in enumerate(names)}
        meta = self.metadata(time.perf_counter() - t0)
        meta.update(timings)
        return STEMImages(images, tuple(self.scan.shape), self.thicknesses_angstrom, meta, patterns)

    def metadata(self, wall_s: float | None = None) -> dict:
        g = self.potential.grid
        return {
            "method": "prism", "interpolation": self.f, "num_beams": self.num_beams,
            "energy_ev": self.probe.energy_ev, "semiangle_mrad": self.probe.semiangle_mrad,
            "defocus_angstrom": self.probe.defocus_angstrom, "aberrations": dict(self.probe.aberrations),
            "tilt_mrad": list(self.tilt_mrad), "gpts": list(g.gpts), "extent_angstrom": list(g.extent),
            "s_matrix_gpts": list(self.gpts_s), "window_gpts": list(self.window_gpts),
            "pattern_sampling_mrad": list(self.pattern_sampling_mrad),
            "num_slices": self.potential.num_slices, "num_configs": len(self.configs),
            "thicknesses_angstrom": self.thicknesses_angstrom.tolist(),
            "detectors": [repr(d) for d in self.detectors], "device": str(self.device), "wall_s": wall_s,
        }
