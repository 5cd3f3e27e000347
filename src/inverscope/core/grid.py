"""A 2D simulation grid whose extent, number of points and sampling agree.

Grid sizes are rounded up to FFT-friendly numbers (products of 2, 3 and 5):
FFT libraries are several times slower on sizes with large prime factors
(a 235-point grid, 5 x 47, is about 11x slower than 240).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from inverscope.core.errors import GridError


def is_fft_friendly(n: int) -> bool:
    """True if `n` has no prime factor other than 2, 3 and 5."""
    if n < 1:
        return False
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def next_fft_size(n: int) -> int:
    """Smallest even FFT-friendly size >= `n` (even keeps the zero frequency centred)."""
    m = max(int(n), 2)
    while not (m % 2 == 0 and is_fft_friendly(m)):
        m += 1
    return m


@dataclass(frozen=True)
class Grid:
    """Real-space grid of a periodic cell.

    Parameters
    ----------
    extent : (float, float)
        Size of the cell along x and y [Å].
    gpts : (int, int)
        Number of grid points along x and y.

    Attributes
    ----------
    sampling : (float, float)
        Pixel size ``extent / gpts`` [Å].
    reciprocal_sampling : (float, float)
        Pixel size in reciprocal space ``1 / extent`` [1/Å].

    Examples
    --------
    A 11.7 Å cell (3 x 3 unit cells of SrTiO3) at no more than 0.05 Å per pixel; the
    number of points is rounded up to an FFT-friendly size:

    >>> import inverscope as isc
    >>> grid = isc.Grid.from_sampling((11.7, 11.7), 0.05)
    >>> grid
    Grid(extent=(11.7, 11.7), gpts=(240, 240))
    >>> round(grid.sampling[0], 4)
    0.0487
    >>> round(grid.antialias_cutoff_mrad(0.02508), 1)   # largest angle at 200 kV [mrad]
    171.5
    """

    extent: tuple[float, float]
    gpts: tuple[int, int]

    def __post_init__(self):
        if any(not (e > 0 and math.isfinite(e)) for e in self.extent):
            raise GridError(f"extent: got {self.extent}; both sides must be positive [Å]")
        if any(int(g) < 2 for g in self.gpts):
            raise GridError(f"gpts: got {self.gpts}; need at least 2 points per side")

    @classmethod
    def from_sampling(cls, extent, sampling: float | tuple[float, float], fft_friendly: bool = True) -> "Grid":
        """Grid with at most `sampling` [Å] per pixel, rounded up to FFT-friendly sizes."""
        if isinstance(sampling, (int, float)):
            sampling = (float(sampling), float(sampling))
        if any(not (s > 0) for s in sampling):
            raise GridError(f"sampling_angstrom: got {sampling}; must be positive")
        gpts = []
        for e, s in zip(extent, sampling):
            n = math.ceil(e / s - 1e-9)
            gpts.append(next_fft_size(n) if fft_friendly else n)
        return cls(tuple(float(e) for e in extent), tuple(gpts))

    @classmethod
    def from_gpts(cls, extent, gpts: int | tuple[int, int], fft_friendly: bool = True) -> "Grid":
        """Grid with at least `gpts` points, rounded up to FFT-friendly sizes if asked."""
        if isinstance(gpts, int):
            gpts = (gpts, gpts)
        gpts = tuple(next_fft_size(g) if fft_friendly else int(g) for g in gpts)
        return cls(tuple(float(e) for e in extent), gpts)

    @property
    def sampling(self) -> tuple[float, float]:
        """Pixel size [Å]."""
        return (self.extent[0] / self.gpts[0], self.extent[1] / self.gpts[1])

    @property
    def reciprocal_sampling(self) -> tuple[float, float]:
        """Pixel size in reciprocal space [1/Å]."""
        return (1 / self.extent[0], 1 / self.extent[1])

    def angular_sampling_mrad(self, wavelength_angstrom: float) -> tuple[float, float]:
        """Pixel size of the diffraction plane [mrad]."""
        return tuple(wavelength_angstrom / e * 1e3 for e in self.extent)

    def antialias_cutoff_mrad(self, wavelength_angstrom: float) -> float:
        """Largest scattering angle kept by the 2/3 anti-aliasing aperture [mrad]."""
        kmax = 2.0 / 3.0 / max(self.sampling) / 2.0
        return kmax * wavelength_angstrom * 1e3
