"""Convergent electron probes: aperture with a soft edge, phase aberrations, scans.

The aberration function follows the polar convention of Krivanek (Kirkland 2010,
eq. 2.22; abTEM):

``chi(a, p) = 2 pi / lambda * sum_nm a^(n+1)/(n+1) C_nm cos(m (p - phi_nm))``

and the probe is ``A(a) exp(-i chi)`` in reciprocal space, normalized so that
its intensity sums to one. Defocus is ``-C10`` (positive defocus = underfocus
in abTEM's convention). Lengths [Å], angles [mrad] (aperture) and [rad]
(aberration angles), energies [eV].
"""

from __future__ import annotations

import math

import numpy as np
import torch

from inverscope.core.errors import field_error
from inverscope.core.grid import Grid
from inverscope.core.units import wavelength_angstrom
from inverscope.physics.multislice.potentials import spatial_frequencies

#: Polar aberration coefficients supported: (name, n, m). Magnitudes in Å, angles phi_nm in rad.
ABERRATIONS = (
    ("C10", 1, 0), ("C12", 1, 2),
    ("C21", 2, 1), ("C23", 2, 3),
    ("C30", 3, 0), ("C32", 3, 2), ("C34", 3, 4),
    ("C41", 4, 1), ("C43", 4, 3), ("C45", 4, 5),
    ("C50", 5, 0), ("C52", 5, 2), ("C54", 5, 4), ("C56", 5, 6),
)
ABERRATION_NAMES = tuple(a[0] for a in ABERRATIONS)
ANGLE_NAMES = tuple("phi" + a[0][1:] for a in ABERRATIONS if a[2] > 0)


def polar_frequencies(grid: Grid, wavelength: float) -> tuple[np.ndarray, np.ndarray]:
    """Scattering angle alpha [rad] and azimuth phi [rad] of every reciprocal pixel."""
    kx, ky = spatial_frequencies(grid)
    alpha = np.sqrt(kx[:, None] ** 2 + ky[None] ** 2) * wavelength
    phi = np.arctan2(ky[None], kx[:, None]) * np.ones_like(alpha)
    return alpha, phi


def soft_aperture(alpha: np.ndarray, phi: np.ndarray, semiangle_rad: float, angular_sampling_rad) -> np.ndarray:
    """Aperture of radius `semiangle_rad` whose edge is linearly smoothed over one pixel."""
    dx, dy = angular_sampling_rad
    denom = np.sqrt((np.cos(phi) * dx) ** 2 + (np.sin(phi) * dy) ** 2)
    denom[0, 0] = 1.0
    out = np.clip((semiangle_rad - alpha) / denom + 0.5, 0.0, 1.0)
    out[0, 0] = 1.0
    return out


def aberration_phase(alpha: torch.Tensor, phi: torch.Tensor, wavelength: float,
                     coefficients: dict[str, torch.Tensor | float]) -> torch.Tensor:
    """Aberration function chi(alpha, phi) [rad]; differentiable in the coefficients."""
    chi = torch.zeros_like(alpha)
    for name, n, m in ABERRATIONS:
        c = coefficients.get(name, 0.0)
        if not torch.is_tensor(c) and c == 0.0:
            continue
        angle = coefficients.get("phi" + name[1:], 0.0) if m > 0 else 0.0
        term = torch.cos(m * (phi - angle)) if m > 0 else 1.0
        chi = chi + alpha ** (n + 1) / (n + 1) * c * term
    return chi * (2 * math.pi / wavelength)


class Probe:
    """A convergent electron probe (builder: parameters only).

    Parameters
    ----------
    energy_ev : float
        Accelerating voltage times e [eV], e.g. 200e3.
    semiangle_mrad : float
        Convergence semiangle [mrad].
    soft_edge : bool
        Smooth the aperture edge over one pixel (reduces ringing).
    defocus_angstrom : float
        Defocus [Å] (= -C10).
    aberrations : dict, optional
        Polar coefficients ``C12 .. C56`` [Å] and angles ``phi12 ..`` [rad];
        ``C10`` here adds to ``-defocus_angstrom``.

    Attributes
    ----------
    wavelength_angstrom : float
        Relativistic electron wavelength [Å] at `energy_ev`.

    Examples
    --------
    A 200 kV, 20 mrad probe 50 Å defocused, built at two positions of a 10 Å cell:

    >>> import inverscope as isc
    >>> probe = isc.Probe(200e3, 20.0, defocus_angstrom=50.0)
    >>> round(probe.wavelength_angstrom, 5)   # [Å]
    0.02508
    >>> probe.coefficients()   # C10 = -defocus [Å]
    {'C10': -50.0}
    >>> grid = isc.Grid.from_sampling((10.0, 10.0), 0.1)
    >>> waves = probe.build(grid, [[5.0, 5.0], [2.0, 3.0]])   # positions (x, y) [Å]
    >>> waves.shape, waves.dtype
    (torch.Size([2, 100, 100]), torch.complex64)
    >>> round(float((probe.fourier_array(grid).abs() ** 2).sum()), 4)   # normalized in k-space
    1.0
    """

    def __init__(self, energy_ev: float, semiangle_mrad: float, soft_edge: bool = True,
                 defocus_angstrom: float = 0.0, aberrations: dict | None = None):
        if not (energy_ev > 0):
            raise field_error("energy_ev", energy_ev, "must be > 0 [eV]")
        if not (semiangle_mrad > 0):
            raise field_error("semiangle_mrad", semiangle_mrad, "must be > 0 [mrad]")
        aberrations = dict(aberrations or {})
        for key in aberrations:
            if key not in ABERRATION_NAMES + ANGLE_NAMES:
                raise field_error(f"aberrations.{key}", aberrations[key], f"allowed names: {', '.join(ABERRATION_NAMES + ANGLE_NAMES)}")
        self.energy_ev = float(energy_ev)
        self.semiangle_mrad = float(semiangle_mrad)
        self.soft_edge = bool(soft_edge)
        self.defocus_angstrom = float(defocus_angstrom)
        self.aberrations = aberrations

    @property
    def wavelength_angstrom(self) -> float:
        return wavelength_angstrom(self.energy_ev)

    def coefficients(self, overrides: dict | None = None) -> dict:
        """All aberration coefficients with C10 including defocus; `overrides` may hold tensors."""
        coeffs = dict(self.aberrations)
        coeffs["C10"] = coeffs.get("C10", 0.0) - self.defocus_angstrom
        coeffs.update(overrides or {})
        return coeffs

    def fourier_array(self, grid: Grid, device="cpu", dtype=torch.float32, overrides: dict | None = None) -> torch.Tensor:
        """Probe in reciprocal space (nx, ny), FFT order, sum |psi(k)|^2 = 1."""
        lam = self.wavelength_angstrom
        alpha, phi = polar_frequencies(grid, lam)
        if self.soft_edge:
            ang = tuple(lam / e for e in grid.extent)
            ap = soft_aperture(alpha, phi, self.semiangle_mrad * 1e-3, ang)
        else:
            ap = (alpha <= self.semiangle_mrad * 1e-3).astype(np.float64)
        ap_t = torch.as_tensor(ap, dtype=dtype, device=device)
        chi = aberration_phase(torch.as_tensor(alpha, dtype=dtype, device=device),
                               torch.as_tensor(phi, dtype=dtype, device=device), lam, self.coefficients(overrides))
        psi = torch.polar(ap_t, -chi)
        norm = torch.sqrt((psi.abs() ** 2).sum())
        return psi / norm

    def build(self, grid: Grid, positions_angstrom, device="cpu", dtype=torch.float32,
              fourier: torch.Tensor | None = None, overrides: dict | None = None) -> torch.Tensor:
        """Real-space probes centred at `positions_angstrom` (B, 2): (B, nx, ny) complex."""
        if fourier is None:
            fourier = self.fourier_array(grid, device, dtype, overrides)
        pos = torch.as_tensor(positions_angstrom, dtype=dtype, device=device).reshape(-1, 2)
        kx, ky = (torch.as_tensor(k, dtype=dtype, device=device) for k in spatial_frequencies(grid))
        sx = torch.polar(torch.ones_like(pos[:, :1] * kx[None]), -2 * math.pi * pos[:, :1] * kx[None])
        sy = torch.polar(torch.ones_like(pos[:, 1:] * ky[None]), -2 * math.pi * pos[:, 1:] * ky[None])
        return torch.fft.ifft2(fourier[None] * sx[:, :, None] * sy[:, None, :])
