"""Fresnel propagation and the multislice loop.

One step is ``psi <- IFFT[ P(k) FFT[ t(r) psi(r) ] ]`` with the Fresnel propagator
``P(k) = exp(-i pi lambda dz k^2)`` multiplied by the 2/3 anti-aliasing aperture.

A small specimen (or beam) tilt ``(tx, ty)`` [mrad] enters the propagator as the extra phase
``exp(-2 pi i dz (kx tan tx + ky tan ty))``: between slices the wave moves laterally by
``dz tan t``, so deeper slices are seen shifted, as in a tilted crystal (the convention of
abTEM 1.0, against which it is tested).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch.autograd.profiler import record_function

from inverscope.core.grid import Grid
from inverscope.physics.multislice.potentials import antialias_aperture, spatial_frequencies


def fresnel_propagator(grid: Grid, thickness_angstrom: float, wavelength_angstrom: float,
                       device="cpu", dtype=torch.float32, tilt_mrad: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Band-limited Fresnel propagator over `thickness_angstrom` [Å], (nx, ny) complex.

    `tilt_mrad` (x, y) [mrad] tilts the specimen relative to the beam (see the module notes).
    """
    kx, ky = spatial_frequencies(grid)
    k2 = kx[:, None] ** 2 + ky[None] ** 2
    phase = -math.pi * thickness_angstrom * wavelength_angstrom * k2
    tx, ty = (math.tan(float(t) * 1e-3) for t in tilt_mrad)
    if tx or ty:
        phase = phase - 2 * math.pi * thickness_angstrom * (kx[:, None] * tx + ky[None] * ty)
    p = np.exp(1j * phase) * antialias_aperture(grid)
    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    return torch.as_tensor(p, dtype=cdtype, device=device)


def multislice(waves: torch.Tensor, transmissions: torch.Tensor, propagators: Sequence[torch.Tensor],
               exit_slices: Sequence[int], detect: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """Run `waves` (B, nx, ny) through the slices and detect after each slice in `exit_slices`.

    Parameters
    ----------
    waves : torch.Tensor
        Entrance waves, real space.
    transmissions : torch.Tensor
        (S, nx, ny) transmission functions.
    propagators : sequence of torch.Tensor
        One propagator per slice (the same tensor may repeat).
    exit_slices : sequence of int
        0-based slice indices after which `detect` is called (sorted).
    detect : callable
        Maps exit waves in *reciprocal* space (B, nx, ny) to measurements.

    Returns
    -------
    list of torch.Tensor
        One measurement per exit slice.
    """
    out = []
    exits = set(int(e) for e in exit_slices)
    last = max(exits)
    differentiable = waves.requires_grad or transmissions.requires_grad
    for i in range(last + 1):
        if differentiable:
            fourier = torch.fft.fft2(waves * transmissions[i]) * propagators[i]
        else:
            waves.mul_(transmissions[i])
            fourier = torch.fft.fft2(waves, out=waves)
            fourier.mul_(propagators[i])
        if i in exits:
            with record_function("inverscope.detector"):
                out.append(detect(fourier))
        if i < last:
            waves = torch.fft.ifft2(fourier) if differentiable else torch.fft.ifft2(fourier, out=fourier)
    return out
