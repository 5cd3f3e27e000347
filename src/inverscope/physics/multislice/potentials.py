"""Projected, sliced, band-limited atomic potentials on PyTorch.

Each atom is assigned to the slice that contains its z coordinate and its
potential is projected infinitely along z (independent atom model). The
projected potential of a slice is built in Fourier space from the electron
scattering factors of Lobato & Van Dyck (2014) (default) or Kirkland (2010):

``V_z(k) = 2 pi a0 e/(4 pi eps0) * f_e(k) * S(k)``

with the structure factor ``S(k)`` evaluated either by the hybrid real/reciprocal
method of Van den Broek et al., Ultramicroscopy 158, 89 (2015) (``"hybrid"``,
the default and the method abTEM uses: sub-pixel delta functions spread
bilinearly onto the grid, one FFT per element, a pixel-shape correction) or
exactly as ``sum_j exp(-2 pi i k.r_j)`` (``"exact"``).

Units: lengths [Å], potentials [V·Å], spatial frequencies [1/Å].
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from inverscope.core.errors import StructureError, field_error
from inverscope.core.grid import Grid
from inverscope.core.units import SCATTERING_FACTOR_TO_POTENTIAL, interaction_parameter

PARAMETRIZATIONS = ("lobato", "kirkland")
STRUCTURE_FACTOR_METHODS = ("hybrid", "exact")


@functools.lru_cache(maxsize=None)
def load_parametrization(name: str) -> dict[str, np.ndarray]:
    """Published scattering-factor parameters of `name` ('lobato' or 'kirkland') by element."""
    if name not in PARAMETRIZATIONS:
        raise field_error("parametrization", name, f"allowed: {', '.join(PARAMETRIZATIONS)}")
    text = resources.files("inverscope.physics.multislice").joinpath(f"data/{name}.json").read_text()
    return {k: np.asarray(v, dtype=np.float64) for k, v in json.loads(text)["elements"].items()}


def scattering_factor(symbol: str, k2: np.ndarray, parametrization: str = "lobato") -> np.ndarray:
    """Electron scattering factor f_e [Å] at squared spatial frequency `k2` [1/Å^2]."""
    table = load_parametrization(parametrization)
    if symbol not in table:
        raise StructureError(f"atoms: element {symbol!r} has no {parametrization} parameters")
    p = table[symbol]
    k2 = np.asarray(k2, dtype=np.float64)
    if parametrization == "lobato":
        a, b = p[0][:, None], p[1][:, None]
        bk2 = b * k2.ravel()[None]
        return (a * (2.0 + bk2) / (1.0 + bk2) ** 2).sum(0).reshape(k2.shape)
    a, b, c, d = (p[i][:, None] for i in range(4))
    q2 = k2.ravel()[None]
    return (a / (q2 + b) + c * np.exp(-d * q2)).sum(0).reshape(k2.shape)


def spatial_frequencies(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequencies kx, ky [1/Å] of `grid` in FFT order."""
    return (np.fft.fftfreq(grid.gpts[0], grid.sampling[0]), np.fft.fftfreq(grid.gpts[1], grid.sampling[1]))


def antialias_aperture(grid: Grid, cutoff_fraction: float = 2.0 / 3.0, taper_fraction: float = 0.01) -> np.ndarray:
    """Anti-aliasing aperture: 1 inside 2/3 of the Nyquist frequency, cosine taper at the edge.

    The taper is `taper_fraction` / max(sampling) wide [1/Å] (abTEM's default convention).
    """
    kx, ky = spatial_frequencies(grid)
    k = np.sqrt(kx[:, None] ** 2 + ky[None] ** 2)
    cutoff = cutoff_fraction / max(grid.sampling) / 2.0
    taper = taper_fraction / max(grid.sampling)
    if taper <= 0:
        return (k < cutoff).astype(np.float64)
    edge = 0.5 * (1.0 + np.cos(np.pi * (k - cutoff + taper) / taper))
    out = np.where(k > cutoff - taper, edge, 1.0)
    out[k > cutoff] = 0.0
    return out


def pixel_correction(grid: Grid) -> np.ndarray:
    """Pixel-shape correction of the hybrid method, including the 1/pixel-area density factor.

    Same form as abTEM 1.0 (``sin(q)/q`` with ``q = |(kx dx, ky dy)|``) so that the
    two engines agree to 1e-3 on identical input.
    """
    kx, ky = spatial_frequencies(grid)
    dx, dy = grid.sampling
    q = np.sqrt((kx[:, None] * dx) ** 2 + (ky[None] * dy) ** 2)
    q[0, 0] = 1.0
    out = np.sin(q) / q * dx * dy
    out[0, 0] = dx * dy
    return out


def slice_edges(cell_z_angstrom: float, slice_thickness_angstrom: float) -> np.ndarray:
    """Equal slices covering the cell: ceil(cell/thickness) slices, returned as edges [Å]."""
    if not (slice_thickness_angstrom > 0):
        raise field_error("slice_thickness_angstrom", slice_thickness_angstrom, "must be > 0 [Å]")
    n = max(1, math.ceil(cell_z_angstrom / slice_thickness_angstrom - 1e-9))
    return np.linspace(0.0, cell_z_angstrom, n + 1)


def assign_slices(z_angstrom: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the slice containing each z [Å]; an atom on an edge goes to the deeper slice."""
    inner = edges[1:-1] - 1e-12
    return np.digitize(z_angstrom, inner)


def validate_atoms(atoms: Atoms, parametrization: str = "lobato") -> None:
    """Check that `atoms` can be simulated: orthogonal periodic cell, known elements."""
    if len(atoms) == 0:
        raise StructureError("atoms: the structure has no atoms")
    cell = np.asarray(atoms.cell)
    if np.any(np.abs(cell - np.diag(np.diag(cell))) > 1e-8):
        raise StructureError("atoms.cell: must be orthogonal (beam along z); rotate or orthogonalize first")
    if np.any(np.diag(cell) <= 0):
        raise StructureError(f"atoms.cell: got side lengths {np.diag(cell).tolist()}; all must be > 0 [Å]")
    table = load_parametrization(parametrization)
    for symbol in set(atoms.get_chemical_symbols()):
        if symbol not in table:
            raise StructureError(f"atoms: element {symbol!r} has no {parametrization} parameters")


@dataclass(frozen=True)
class SlicedAtoms:
    """Atoms wrapped into the cell and assigned to slices.

    Attributes
    ----------
    positions : np.ndarray
        (N, 3) wrapped positions [Å].
    numbers : np.ndarray
        (N,) atomic numbers.
    slice_index : np.ndarray
        (N,) slice of each atom.
    edges : np.ndarray
        Slice edges along z [Å].
    """

    positions: np.ndarray
    numbers: np.ndarray
    slice_index: np.ndarray
    edges: np.ndarray

    @property
    def num_slices(self) -> int:
        return len(self.edges) - 1

    @property
    def slice_thicknesses(self) -> np.ndarray:
        return np.diff(self.edges)


def slice_atoms(atoms: Atoms, slice_thickness_angstrom: float) -> SlicedAtoms:
    """Wrap `atoms` into their cell and assign each to a slice of ~`slice_thickness_angstrom`."""
    cell = np.diag(np.asarray(atoms.cell))
    pos = np.asarray(atoms.positions, dtype=np.float64) % cell
    pos[np.isclose(pos, cell[None], rtol=0, atol=1e-9)] = 0.0
    edges = slice_edges(float(cell[2]), slice_thickness_angstrom)
    return SlicedAtoms(pos, np.asarray(atoms.numbers), assign_slices(pos[:, 2], edges), edges)


def _deltas(xy_pixels: torch.Tensor, slice_idx: torch.Tensor, num_slices: int, gpts) -> torch.Tensor:
    """Bilinear sub-pixel delta functions, (num_slices, nx, ny) real; differentiable in `xy_pixels`."""
    nx, ny = gpts
    base = torch.floor(xy_pixels.detach())
    frac = xy_pixels - base
    i0 = base[:, 0].long()
    j0 = base[:, 1].long()
    fx, fy = frac[:, 0], frac[:, 1]
    out = torch.zeros(num_slices * nx * ny, dtype=xy_pixels.dtype, device=xy_pixels.device)
    for di, dj, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        flat = slice_idx * (nx * ny) + ((i0 + di) % nx) * ny + (j0 + dj) % ny
        out = out.index_add(0, flat, w)
    return out.reshape(num_slices, nx, ny)


def _exact_structure_factor(xy: torch.Tensor, slice_idx: torch.Tensor, num_slices: int, grid: Grid) -> torch.Tensor:
    """sum_j exp(-2 pi i k.r_j) per slice, (num_slices, nx, ny) complex; `xy` in Å."""
    kx, ky = (torch.as_tensor(k, dtype=xy.dtype, device=xy.device) for k in spatial_frequencies(grid))
    ex = torch.exp(-2j * math.pi * xy[:, :1] * kx[None])
    ey = torch.exp(-2j * math.pi * xy[:, 1:2] * ky[None])
    slices = []
    for s in range(num_slices):
        m = slice_idx == s
        slices.append(ex[m].transpose(0, 1) @ ey[m])
    return torch.stack(slices)


class PotentialBuilder:
    """Parameters of a sliced potential; arrays are made by ``transmission_functions``.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure with an orthogonal periodic cell; the beam runs along z.
    grid : Grid
        Lateral simulation grid; its extent must equal the cell's x and y sides.
    slice_thickness_angstrom : float
        Target slice thickness [Å]; the cell is cut into ceil(c / thickness) equal slices.
    parametrization : {'lobato', 'kirkland'}
        Electron scattering factors.
    structure_factor : {'hybrid', 'exact'}
        How atom positions enter (see module docstring).

    Attributes
    ----------
    num_slices : int
        Number of slices.
    thickness_angstrom : float
        Specimen thickness, the cell's z side [Å].
    edges : np.ndarray
        (num_slices + 1,) slice boundaries along z [Å].

    Examples
    --------
    One SrTiO3 unit cell cut into two slices of half a lattice constant:

    >>> import inverscope as isc
    >>> atoms = isc.perovskite_slab("SrTiO3", 1, 3.905)
    >>> grid = isc.Grid.from_sampling((3.905, 3.905), 0.1)
    >>> potential = isc.PotentialBuilder(atoms, grid, slice_thickness_angstrom=3.905 / 2)
    >>> potential.num_slices, potential.thickness_angstrom
    (2, 3.905)
    >>> potential.projected_potential().shape   # (num_slices, nx, ny) [V·Å]
    torch.Size([2, 40, 40])
    """

    def __init__(self, atoms: Atoms, grid: Grid, slice_thickness_angstrom: float = 2.0,
                 parametrization: str = "lobato", structure_factor: str = "hybrid"):
        if structure_factor not in STRUCTURE_FACTOR_METHODS:
            raise field_error("structure_factor", structure_factor, f"allowed: {', '.join(STRUCTURE_FACTOR_METHODS)}")
        validate_atoms(atoms, parametrization)
        cell = np.diag(np.asarray(atoms.cell))
        if not np.allclose(cell[:2], grid.extent, rtol=1e-9, atol=1e-9):
            raise field_error("grid.extent", grid.extent, f"must equal the cell's x, y sides {cell[:2].tolist()} [Å]")
        self.atoms = atoms
        self.grid = grid
        self.slice_thickness_angstrom = float(slice_thickness_angstrom)
        self.parametrization = parametrization
        self.structure_factor = structure_factor
        self.edges = slice_edges(float(cell[2]), self.slice_thickness_angstrom)

    @property
    def num_slices(self) -> int:
        return len(self.edges) - 1

    @property
    def thickness_angstrom(self) -> float:
        return float(self.edges[-1])

    def _form_factors(self, numbers: np.ndarray, device, dtype) -> dict[int, torch.Tensor]:
        kx, ky = spatial_frequencies(self.grid)
        k2 = kx[:, None] ** 2 + ky[None] ** 2
        corr = pixel_correction(self.grid) if self.structure_factor == "hybrid" else self.grid.sampling[0] * self.grid.sampling[1]
        out = {}
        for z in np.unique(numbers):
            f = scattering_factor(chemical_symbols[z], k2, self.parametrization) * SCATTERING_FACTOR_TO_POTENTIAL
            if self.structure_factor == "hybrid":
                f = f / corr
            else:
                f = f / (self.grid.extent[0] * self.grid.extent[1]) * math.prod(self.grid.gpts)
            out[int(z)] = torch.as_tensor(f, dtype=dtype, device=device)
        return out

    def projected_potential(self, positions: torch.Tensor | np.ndarray | None = None,
                            device: str | torch.device = "cpu", dtype=torch.float32) -> torch.Tensor:
        """Projected potential of every slice, (num_slices, nx, ny) [V·Å].

        `positions` (N, 3) [Å] replaces the atoms' positions (frozen phonons,
        gradients); it may be a tensor that requires grad.
        """
        sliced = slice_atoms(self.atoms, self.slice_thickness_angstrom)
        if positions is None:
            pos = torch.as_tensor(sliced.positions, dtype=dtype, device=device)
        else:
            pos = torch.as_tensor(positions, dtype=dtype, device=device)
            cell = torch.as_tensor(np.diag(np.asarray(self.atoms.cell)).copy(), dtype=dtype, device=device)
            pos = torch.remainder(pos, cell)
        z_index = torch.as_tensor(assign_slices(pos[:, 2].detach().cpu().numpy().astype(np.float64), self.edges),
                                  device=device)
        numbers = np.asarray(self.atoms.numbers)
        forms = self._form_factors(numbers, device, dtype)
        sampling = torch.as_tensor(self.grid.sampling, dtype=dtype, device=device)
        if self.structure_factor == "hybrid":
            # real deltas and real, even form factors: the sum is Hermitian, so half the spectrum
            # (rfft2 / irfft2) carries it all at about half the FFT cost
            half = self.grid.gpts[1] // 2 + 1
            total = None
            for z, form in forms.items():
                mask = torch.as_tensor(numbers == z, device=device)
                d = _deltas(pos[mask, :2] / sampling, z_index[mask], self.num_slices, self.grid.gpts)
                term = torch.fft.rfft2(d) * form[:, :half]
                total = term if total is None else total + term
            return torch.fft.irfft2(total, s=tuple(self.grid.gpts))
        ctype = torch.complex64 if dtype == torch.float32 else torch.complex128
        total = torch.zeros((self.num_slices, *self.grid.gpts), dtype=ctype, device=device)
        for z, form in forms.items():
            mask = torch.as_tensor(numbers == z, device=device)
            total = total + _exact_structure_factor(pos[mask, :2], z_index[mask], self.num_slices, self.grid) * form
        return torch.fft.ifft2(total).real

    def transmission_functions(self, energy_ev: float, positions=None, device="cpu",
                               dtype=torch.float32, antialias: torch.Tensor | None = None) -> torch.Tensor:
        """Band-limited transmission functions exp(i sigma V_z), (num_slices, nx, ny) complex."""
        v = self.projected_potential(positions, device=device, dtype=dtype)
        t = torch.polar(torch.ones_like(v), v * interaction_parameter(energy_ev))
        if antialias is None:
            antialias = torch.as_tensor(antialias_aperture(self.grid), dtype=dtype, device=device)
        return torch.fft.ifft2(torch.fft.fft2(t) * antialias)
