"""Hysteresis loops of the random-bond random-field Ising model (RBRF IM), batched and seeded.

Model (Ovchinnikov et al., PRL 103, 157203 (2009)): spins S_i = ±1 on a periodic square (2D) or
simple cubic (3D) lattice, nearest-neighbour bonds J_ij = J0 + dJ·N(0,1), random fields
h_i = dh·N(0,1), energy E = -Σ J_ij S_i S_j - Σ (H + h_i) S_i, zero-temperature Glauber dynamics
with avalanches run to completion at every field step (:mod:`.dynamics`). The loop is the mean
spin along an up sweep of H (from the all-down state) and the following down sweep, averaged
over disorder realizations. Fields and couplings are in the same (dimensionless) energy unit.

Loop ``b`` of a call depends only on ``(seed, first_index + b)``: its realizations are drawn from
``numpy.random.SeedSequence([seed, first_index + b])``, so a dataset can be simulated in any
chunking, on any number of threads, and give the same numbers.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from pydantic import Field, field_validator

from inverscope.core.config import StrictModel
from inverscope.core.errors import InverscopeError
from inverscope.physics.ising.dynamics import sweep_chunk
from inverscope.physics.ising.lattice import check_shape, lattice

PARAMETERS = ("J0", "dJ", "dh")


class IsingConfig(StrictModel):
    """Lattice and field sweep of the simulated loops."""

    lattice: list[int] = Field(default_factory=lambda: [32, 32])   # sites per axis: 2 axes (square) or 3 (cubic)
    field_max: float = Field(8.0, gt=0)        # sweep from -field_max to +field_max and back [J units]
    field_steps: int = Field(200, ge=1)        # field values per branch (up and down each)
    realizations: int = Field(10, ge=1)        # disorder realizations averaged per loop

    @field_validator("lattice")
    @classmethod
    def _shape(cls, v):
        check_shape(v)
        return v

    @field_validator("field_steps")
    @classmethod
    def _steps(cls, v):
        if v < 2:
            raise ValueError("a loop needs at least 2 field steps per branch")
        return v

    def fields(self) -> np.ndarray:
        """(field_steps,) increasing external fields of the up branch."""
        return np.linspace(-self.field_max, self.field_max, self.field_steps)


@dataclass
class IsingLoops:
    """Simulated loops: ``m_up[b, k]`` and ``m_down[b, k]`` are the mean spin at ``field[k]``.

    Attributes
    ----------
    field : (steps,) increasing external field [J units]
    m_up, m_down : (loops, steps) mean spin on the up and the down sweep, in [-1, 1]
    params : (loops, 3) J0, dJ, dh of each loop
    """

    field: np.ndarray
    m_up: np.ndarray
    m_down: np.ndarray
    params: np.ndarray

    def sequence(self) -> tuple[np.ndarray, np.ndarray]:
        """The loop as visited: (2 * steps,) field (up, then down) and (loops, 2 * steps) mean spin."""
        return (np.concatenate([self.field, self.field[::-1]]),
                np.concatenate([self.m_up, self.m_down[:, ::-1]], axis=1))


def _check_params(params) -> np.ndarray:
    p = np.atleast_2d(np.asarray(params, dtype=np.float64))
    if p.ndim != 2 or p.shape[1] != 3:
        raise InverscopeError(f"params: got shape {p.shape}; expected (loops, 3) columns J0, dJ, dh")
    if not np.all(np.isfinite(p)):
        raise InverscopeError("params: non-finite J0, dJ or dh")
    if np.any(p[:, 1:] < 0):
        bad = p[np.any(p[:, 1:] < 0, axis=1)][0]
        raise InverscopeError(f"params: dJ and dh are spreads and must be >= 0; got dJ={bad[1]:g}, dh={bad[2]:g}")
    return p


def _draws(seed: int, index: int, reals: int, n_bonds: int, sites: int):
    g = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index)])))
    return g.standard_normal((reals, n_bonds)), g.standard_normal((reals, sites))


def _run_chunk(lat, p, h, cfg, seed, first):
    n = len(p)
    zb = np.empty((n, cfg.realizations, lat.n_bonds))
    zf = np.empty((n, cfg.realizations, lat.sites))
    for b in range(n):
        zb[b], zf[b] = _draws(seed, first + b, cfg.realizations, lat.n_bonds, lat.sites)
    m_up, m_down = np.empty((n, len(h))), np.empty((n, len(h)))
    sweep_chunk(lat.neighbours, lat.bonds, p[:, 0].copy(), p[:, 1].copy(), p[:, 2].copy(), zb, zf, h, m_up, m_down)
    return m_up, m_down


def simulate_loops(params, config: IsingConfig | None = None, seed: int = 0, first_index: int = 0,
                   threads: int | None = None, chunk: int = 16, progress=None) -> IsingLoops:
    """Hysteresis loops for each row (J0, dJ, dh) of `params`.

    Parameters
    ----------
    params : (loops, 3) array-like
        J0 (mean bond, may be negative), dJ >= 0 (bond spread), dh >= 0 (random-field spread).
    config : IsingConfig
        Lattice, field range and steps, realizations per loop.
    seed, first_index : int
        Loop b uses the disorder of ``SeedSequence([seed, first_index + b])``.
    threads : int, optional
        Python threads, each running the compiled kernel on its own chunk of loops (default: CPU count).
    chunk : int
        Loops per kernel call.
    progress : callable, optional
        ``progress(done, total)`` after each chunk.
    """
    cfg = config or IsingConfig()
    p = _check_params(params)
    lat = lattice(tuple(cfg.lattice))
    h = cfg.fields()
    starts = list(range(0, len(p), chunk))
    threads = max(1, min(threads or os.cpu_count() or 1, len(starts) or 1))
    m_up, m_down = np.empty((len(p), len(h))), np.empty((len(p), len(h)))
    done = 0

    def work(s):
        return s, _run_chunk(lat, p[s:s + chunk], h, cfg, seed, first_index + s)

    with ThreadPoolExecutor(threads) as pool:
        for s, (u, d) in pool.map(work, starts):
            m_up[s:s + len(u)], m_down[s:s + len(d)] = u, d
            done += len(u)
            if progress is not None:
                progress(done, len(p))
    return IsingLoops(h, m_up, m_down, p)
