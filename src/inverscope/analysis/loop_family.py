"""A hysteresis-loop family: simulated loops plus cheap measurement nuisances, on the experiment's axis.

A simulated loop ``m_up(H), m_down(H)`` (mean spin on an increasing, uniform field grid, e.g. from
:func:`inverscope.physics.ising.simulate_loops`) becomes a loop as the experiment would record it
by nuisances applied in the aligned space, without re-running the simulation:

    y(H) = (1 - w) m_branch( f_branch (H - h0) ) + w m_branch( f_branch (H - h0 - d) ) + b H,
    f_up = f (1 + a),  f_down = f (1 - a)

with H the waveform's model field (:class:`inverscope.analysis.hysteresis.Axis`), then the
alignment rule's per-loop normalization (rule step 4, the same as for measured loops), then white
noise of standard deviation ``sigma``:

- ``slope``: b, linear (dielectric / electrostatic) background added to both branches [response per J];
- ``imprint``: h0, horizontal shift of the loop (built-in field) [J of model field; ``h0 / axis.scale`` in V];
- ``field_scale``: f, stretch of the model field, f > 1 makes the loop narrower on the axis [1];
- ``asymmetry``: a, the up branch is read at f (1 + a), the down branch at f (1 - a) [1];
- ``split_weight``: w, fraction of a second population of switching regions [1] ...
- ``split_shift``: d, ... whose loop is shifted by d: two-step loops, e.g. mixed domains [J];
- ``noise``: sigma, standard deviation of the white noise on the normalized loop [normalized response].

The response amplitude and offset are removed exactly by the normalization (it is invariant to
``y -> A y + c``, A > 0), so they are not parameters of the family; the alignment reports them.
Beyond the simulated field range a branch is held at its end value (saturated).
"""

from __future__ import annotations

import numpy as np
from pydantic import model_validator

from inverscope.analysis.hysteresis import AlignmentConfig, Axis, normalize
from inverscope.core.config import StrictModel
from inverscope.core.errors import InverscopeError

NUISANCES = ("slope", "imprint", "field_scale", "asymmetry", "split_weight", "split_shift", "noise")


class NuisanceConfig(StrictModel):
    """Uniform prior ranges of the nuisances (see the module docstring for units)."""

    slope_range: tuple[float, float] = (-0.1, 0.6)        # response per unit model field [1/J]
    imprint_range: tuple[float, float] = (-0.5, 0.5)      # model field [J]
    field_scale_range: tuple[float, float] = (0.5, 1.5)   # dimensionless stretch
    asymmetry_range: tuple[float, float] = (-0.6, 0.4)    # dimensionless; |a| < 1
    split_weight_range: tuple[float, float] = (0.0, 0.5)  # fraction of the second population
    split_shift_range: tuple[float, float] = (-1.0, 1.0)  # its extra shift, model field [J]
    noise_range: tuple[float, float] = (0.003, 0.05)      # std of the normalized loop's white noise

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("slope_range", "imprint_range", "field_scale_range", "asymmetry_range", "split_weight_range",
                     "split_shift_range", "noise_range"):
            lo, hi = getattr(self, name)
            if not hi > lo:
                raise ValueError(f"{name}: upper end {hi} must be above lower end {lo}")
        if self.field_scale_range[0] <= 0:
            raise ValueError(f"field_scale_range: must be positive (got {self.field_scale_range[0]})")
        if not (-1 < self.asymmetry_range[0] and self.asymmetry_range[1] < 1):
            raise ValueError(f"asymmetry_range: must lie inside (-1, 1) (got {self.asymmetry_range})")
        if not (0 <= self.split_weight_range[0] and self.split_weight_range[1] <= 1):
            raise ValueError(f"split_weight_range: must lie inside [0, 1] (got {self.split_weight_range})")
        if self.noise_range[0] < 0:
            raise ValueError(f"noise_range: a standard deviation cannot be negative (got {self.noise_range[0]})")
        return self

    def ranges(self) -> np.ndarray:
        """(7, 2) low and high of each nuisance, in the order of :data:`NUISANCES`."""
        return np.array([self.slope_range, self.imprint_range, self.field_scale_range, self.asymmetry_range,
                         self.split_weight_range, self.split_shift_range, self.noise_range], dtype=np.float64)


def _read(field: np.ndarray, m: np.ndarray, rows: np.ndarray, h: np.ndarray) -> np.ndarray:
    """m[rows[i]] read at fields h[i] (n, steps) by linear interpolation on the uniform grid `field`, ends held."""
    n = len(field)
    pos = np.clip((h - field[0]) / (field[1] - field[0]), 0.0, n - 1.0)
    k = np.minimum(pos.astype(np.int64), n - 2)
    w = pos - k
    r = rows[:, None]
    return m[r, k] * (1 - w) + m[r, k + 1] * w


class LoopFamily:
    """Simulated loops (a library) x nuisances, rendered on a measured waveform's axis.

    Parameters
    ----------
    field : (grid,) increasing, uniformly spaced model field of the simulated branches [J]
    m_up, m_down : (loops, grid) simulated branches (mean spin, -1..1)
    core : (loops, k) the simulator parameters of each library loop (e.g. J0, dJ, dh)
    core_ranges : (k, 2) their prior ranges (uniform)
    axis : the waveform on the model's field axis (:func:`inverscope.analysis.hysteresis.waveform_axis`)
    alignment : the normalization rule shared with the measured loops
    nuisance : prior ranges of the nuisances
    core_names : names of the core parameters
    """

    def __init__(self, field, m_up, m_down, core, core_ranges, axis: Axis, alignment: AlignmentConfig,
                 nuisance: NuisanceConfig | None = None, core_names: tuple[str, ...] = ()):
        self.field = np.asarray(field, np.float64)
        d = np.diff(self.field)
        if self.field.ndim != 1 or len(self.field) < 2 or not np.allclose(d, d[0], rtol=1e-6) or d[0] <= 0:
            raise InverscopeError("loop family: the simulated field grid must be increasing and uniformly spaced")
        self.m_up, self.m_down = np.asarray(m_up), np.asarray(m_down)
        self.core = np.atleast_2d(np.asarray(core, np.float64))
        self.core_ranges = np.asarray(core_ranges, np.float64)
        if self.m_up.shape != self.m_down.shape or self.m_up.shape != (len(self.core), len(self.field)):
            raise InverscopeError(f"loop family: branches {self.m_up.shape}/{self.m_down.shape} must be "
                                  f"(loops={len(self.core)}, grid={len(self.field)})")
        self.axis, self.alignment = axis, alignment
        self.nuisance = nuisance or NuisanceConfig()
        k = self.core.shape[1]
        self.core_names = tuple(core_names) or tuple(f"p{i}" for i in range(k))
        self.names = self.core_names + NUISANCES
        self.ranges = np.vstack([self.core_ranges, self.nuisance.ranges()])
        self.low, self.high = self.ranges[:, 0], self.ranges[:, 1]
        self.k = k
        self._tree = None

    # -- rendering ---------------------------------------------------------------------------
    def render_branches(self, field, m_up, m_down, rows, nuis) -> np.ndarray:
        """Clean normalized loops (n, steps): branches m_up[rows[i]], m_down[rows[i]] on grid `field`
        with nuisances ``nuis[i]`` in the order of :data:`NUISANCES` (the noise, if given, is ignored)."""
        nuis = np.atleast_2d(np.asarray(nuis, np.float64))
        b, h0, f, a, w, dsh = (nuis[:, i:i + 1] for i in range(6))
        h = self.axis.field[None, :] - h0
        fu, fd = f * (1 + a), f * (1 - a)
        up = (1 - w) * _read(field, m_up, rows, fu * h) + w * _read(field, m_up, rows, fu * (h - dsh))
        down = (1 - w) * _read(field, m_down, rows, fd * h) + w * _read(field, m_down, rows, fd * (h - dsh))
        y = np.where(self.axis.up, up, down) + b * self.axis.field[None, :]
        return normalize(y, self.axis, self.alignment)[0]

    def render(self, rows, nuis) -> np.ndarray:
        """Clean loops (n, steps) of library loops `rows` under nuisances `nuis` (n, >= 6)."""
        return self.render_branches(self.field, self.m_up, self.m_down, np.asarray(rows), nuis)

    def draw(self, rows, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Training pairs: library loops `rows` with nuisances drawn from their uniform prior.

        Returns (theta (n, k + 7): core then nuisance parameters, x (n, steps): noisy normalized loops).
        """
        rows = np.asarray(rows)
        r = self.nuisance.ranges()
        nuis = r[:, 0] + (r[:, 1] - r[:, 0]) * rng.random((len(rows), len(r)))
        x = self.render(rows, nuis) + nuis[:, -1:] * rng.standard_normal((len(rows), len(self.axis.field)))
        return np.hstack([self.core[rows], nuis]), x

    # -- lookup: the posterior predictive from library loops ----------------------------------
    def nearest(self, core, rank: int = 1) -> np.ndarray:
        """Index of the `rank`-th nearest library loop to each row of `core` (distances in units of the prior ranges)."""
        from scipy.spatial import cKDTree

        span = np.where(self.core_ranges[:, 1] > self.core_ranges[:, 0], self.core_ranges[:, 1] - self.core_ranges[:, 0], 1)
        if self._tree is None:
            self._tree = cKDTree(self.core / span)
        return self._tree.query(np.atleast_2d(core) / span, k=[rank])[1][:, 0]

    def predict(self, theta) -> np.ndarray:
        """Clean loops (n, steps) for parameters `theta` (n, k + 7): nearest library loop + nuisances."""
        theta = np.atleast_2d(np.asarray(theta, np.float64))
        return self.render(self.nearest(theta[:, :self.k]), theta[:, self.k:])

    def replicate(self, theta, rng: np.random.Generator) -> np.ndarray:
        """Replicated noisy loops (n, steps) for `theta`: the *second* nearest library loop (another
        disorder realization at nearly the same parameters) with the same nuisances, plus white
        noise of the row's ``noise``. Compared with :meth:`predict`, the difference is what the
        simulator's own randomness, the library spacing and the noise give at fixed parameters."""
        theta = np.atleast_2d(np.asarray(theta, np.float64))
        loops = self.render(self.nearest(theta[:, :self.k], rank=2), theta[:, self.k:])
        return loops + theta[:, -1:] * rng.standard_normal((len(theta), len(self.axis.field)))
