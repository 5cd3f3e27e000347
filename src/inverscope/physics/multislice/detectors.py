"""Pixelated diffraction detector: crop, bin or resample CBED patterns.

Patterns are ``|FFT(psi_exit)|^2`` with the zero frequency at index
``(n // 2, n // 2)`` (fftshift convention) and intensities that sum to one for a
probe that loses nothing. Cropping keeps the anti-aliased disc by default; a
requested mrad sampling is reached by area-weighted rebinning, which conserves
intensity.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from inverscope.core.errors import GridError, field_error
from inverscope.core.grid import Grid


def _cutoff_gpts(grid: Grid) -> tuple[int, int]:
    """Pixels across the anti-aliasing cutoff, same parity as the grid (abTEM's 'cutoff')."""
    kcut = 2.0 / 3.0 / max(grid.sampling)
    out = []
    for n, e in zip(grid.gpts, grid.extent):
        m = int(math.floor(kcut * e + 1e-9))
        if m % 2 != n % 2:
            m -= 1
        out.append(max(min(m, n), 1))
    return tuple(out)


def _rebin_matrix(n_src: int, d_src: float, n_dst: int, d_dst: float) -> np.ndarray:
    """(n_dst, n_src) matrix of the fraction of each source pixel inside each target pixel."""
    src_c = (np.arange(n_src) - n_src // 2) * d_src
    dst_c = (np.arange(n_dst) - n_dst // 2) * d_dst
    lo = np.maximum(src_c[None] - d_src / 2, dst_c[:, None] - d_dst / 2)
    hi = np.minimum(src_c[None] + d_src / 2, dst_c[:, None] + d_dst / 2)
    return np.clip(hi - lo, 0, None) / d_src


class PixelatedDetector:
    """A pixelated detector in the diffraction plane.

    Parameters
    ----------
    max_angle_mrad : float or None
        Half-width of the recorded pattern [mrad]; None keeps the whole anti-aliased
        region (2/3 of the Nyquist angle).
    sampling_mrad : float or None
        Pixel size of the output [mrad]; None keeps the simulation's own sampling.
    shape : (int, int) or None
        Output pattern size in pixels; overrides the size implied by `max_angle_mrad`.

    Notes
    -----
    Patterns are centred (the undiffracted beam at pixel ``(n // 2, m // 2)``) and are
    fractions of the incident beam: a pattern sums to one when nothing is scattered
    outside it. ``plan(grid, wavelength_angstrom)`` resolves the detector for one grid and
    tells the output shape and pixel size [mrad].

    Examples
    --------
    >>> import inverscope as isc
    >>> grid = isc.Grid.from_sampling((3.905, 3.905), 0.1)
    >>> wavelength = isc.Probe(200e3, 20.0).wavelength_angstrom   # [Å]
    >>> plan = isc.PixelatedDetector(max_angle_mrad=40.0).plan(grid, wavelength)
    >>> plan.shape, round(plan.sampling_mrad[0], 3)   # the simulation's own pixels [mrad]
    ((13, 13), 6.422)
    >>> plan = isc.PixelatedDetector(max_angle_mrad=40.0, sampling_mrad=2.0).plan(grid, wavelength)
    >>> plan.shape, plan.sampling_mrad   # rebinned to 2 mrad pixels
    ((39, 39), (2.0, 2.0))
    """

    def __init__(self, max_angle_mrad: float | None = None, sampling_mrad: float | None = None,
                 shape: tuple[int, int] | None = None):
        if max_angle_mrad is not None and not (max_angle_mrad > 0):
            raise field_error("max_angle_mrad", max_angle_mrad, "must be > 0 [mrad] or null")
        if sampling_mrad is not None and not (sampling_mrad > 0):
            raise field_error("sampling_mrad", sampling_mrad, "must be > 0 [mrad] or null")
        if shape is not None and (len(shape) != 2 or min(shape) < 1):
            raise field_error("shape", shape, "must be two positive integers or null")
        self.max_angle_mrad = max_angle_mrad
        self.sampling_mrad = sampling_mrad
        self.shape = None if shape is None else (int(shape[0]), int(shape[1]))

    def plan(self, grid: Grid, wavelength_angstrom: float) -> "DetectorPlan":
        """Resolve crop indices and rebinning for `grid`; raises if the grid is too coarse."""
        native = grid.angular_sampling_mrad(wavelength_angstrom)
        cut = _cutoff_gpts(grid)
        cutoff_mrad = min((c // 2) * d for c, d in zip(cut, native))
        if self.max_angle_mrad is not None and self.max_angle_mrad > cutoff_mrad + 1e-9:
            raise GridError(
                f"detector.max_angle_mrad: got {self.max_angle_mrad}; the grid's anti-aliasing cutoff is "
                f"{cutoff_mrad:.1f} mrad, so use a finer sampling_angstrom (<= "
                f"{max(grid.sampling) * cutoff_mrad / self.max_angle_mrad:.4f} Å) or a smaller angle")
        out_sampling = self.sampling_mrad or None
        if self.max_angle_mrad is not None:
            crop = tuple(min(c, 2 * int(math.floor(self.max_angle_mrad / d + 1e-9)) + 1) for c, d in zip(cut, native))
        else:
            crop = cut
        if out_sampling is None:
            shape = self.shape or crop
            if any(s > c for s, c in zip(shape, cut)):
                raise GridError(f"detector.shape: got {shape}; at most {cut} pixels lie inside the anti-aliasing "
                                f"cutoff at this sampling; use a finer sampling_angstrom or a smaller shape")
            return DetectorPlan(grid.gpts, shape, None, native)
        half = [(c // 2) * d for c, d in zip(crop, native)]
        shape = self.shape or tuple(2 * int(math.floor(h / out_sampling + 1e-9)) + 1 for h in half)
        if any((s // 2) * out_sampling > (c // 2 + 0.5) * d + 1e-9 for s, c, d in zip(shape, cut, native)):
            raise GridError(f"detector.shape: got {shape} at {out_sampling} mrad; the anti-aliasing cutoff is "
                            f"{cutoff_mrad:.1f} mrad; use a finer sampling_angstrom or fewer pixels")
        mats = tuple(_rebin_matrix(c, d, s, out_sampling) for c, d, s in zip(cut, native, shape))
        return DetectorPlan(grid.gpts, cut, mats, (out_sampling, out_sampling))


class DetectorPlan:
    """Detector resolved for one grid: gathers the centred pixels and rebins them."""

    def __init__(self, gpts, crop, rebin, sampling_mrad):
        self.gpts = tuple(gpts)
        self.crop = tuple(crop)
        self.rebin = rebin
        self.sampling_mrad = tuple(sampling_mrad)
        self._cache: dict = {}

    @property
    def shape(self) -> tuple[int, int]:
        """Output pattern shape (ky-like first axis = x of the grid)."""
        if self.rebin is None:
            return self.crop
        return (self.rebin[0].shape[0], self.rebin[1].shape[0])

    def _tensors(self, device, dtype):
        key = (str(device), dtype)
        if key not in self._cache:
            idx = [torch.as_tensor(np.arange(-(m // 2), m - m // 2) % n, device=device)
                   for m, n in zip(self.crop, self.gpts)]
            mats = None if self.rebin is None else [torch.as_tensor(m, dtype=dtype, device=device) for m in self.rebin]
            self._cache[key] = (idx, mats)
        return self._cache[key]

    def __call__(self, fourier_waves: torch.Tensor) -> torch.Tensor:
        """Intensities (B, *shape) from reciprocal-space exit waves (B, nx, ny)."""
        idx, mats = self._tensors(fourier_waves.device, fourier_waves.real.dtype)
        f = fourier_waves.index_select(-2, idx[0]).index_select(-1, idx[1])
        inten = f.real ** 2 + f.imag ** 2
        if mats is not None:
            inten = mats[0] @ inten @ mats[1].T
        return inten
