"""Structure families for simulation campaigns: index -> (atoms, labels), reproducibly.

A family draws the parameters of sample ``index`` from ``SeedSequence([seed, index])``
alone, so any sample can be rebuilt without the others. Labels are a fixed set of
numeric fields (declared in :attr:`LABEL_FIELDS`) so a store can hold them as arrays.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from ase import Atoms
from pydantic import Field, model_validator

from inverscope.core.config import StrictModel
from inverscope.core.errors import ConfigError
from inverscope.physics.structures.lao_sto import A_STO_ANGSTROM, lao_sto_interface

#: Room-temperature RMS displacements [Å] for frozen phonons (from Debye-Waller factors of
#: SrTiO3 and LaAlO3; sigma = sqrt(B / 8 pi^2), B ~ 0.4-0.6 Å^2).
DEFAULT_SIGMAS_ANGSTROM = {"Sr": 0.088, "Ti": 0.069, "La": 0.080, "Al": 0.075, "O": 0.085}


def sample_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of sample `index` (stream 0: structure, 1: phonons, ...)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


class LaoStoFamily(StrictModel):
    """LaAlO3/SrTiO3 interfaces: rough (buried step), intermixed or composition-matched.

    Classes cycle with the sample index (index % len(classes)), so every prefix of a
    campaign is balanced; the step depth is drawn uniformly over whole cells and the
    intermixing fraction uniformly in ``intermix_range``; ``step_range`` bounds the step
    depth as a fraction of ``depth_cells``.
    """

    family: Literal["lao_sto"] = "lao_sto"
    classes: list[Literal["rough", "intermixed", "matched"]] = Field(
        default_factory=lambda: ["rough", "intermixed", "matched"], min_length=1)
    n_sto: int = Field(3, ge=1)
    n_lao: int = Field(3, ge=1)
    width_cells: int = Field(2, ge=1)
    depth_cells: int = Field(26, ge=2)
    intermix_range: tuple[float, float] = (0.0, 0.5)
    step_range: tuple[float, float] = (0.0, 1.0)

    LABEL_FIELDS: tuple[str, ...] = ("class_index", "step_cells", "intermix_fraction")

    @model_validator(mode="after")
    def _check(self):
        lo, hi = self.intermix_range
        if not (0.0 <= lo <= hi <= 0.5):
            raise ConfigError(f"structure.intermix_range: got {self.intermix_range}; need 0 <= min <= max <= 0.5")
        slo, shi = self.step_range
        if not (0.0 <= slo < shi <= 1.0) or self._step_bounds()[0] > self._step_bounds()[1]:
            raise ConfigError(f"structure.step_range: got {self.step_range}; need 0 <= min < max <= 1 with at least "
                              f"one whole cell of {self.depth_cells} inside")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"structure.classes: got {self.classes}; each class at most once")
        return self

    def _step_bounds(self) -> tuple[int, int]:
        """Smallest and largest step depth [cells] allowed by ``step_range``."""
        lo = max(1, int(np.ceil(self.step_range[0] * self.depth_cells - 1e-9)))
        hi = min(self.depth_cells - 1, int(np.floor(self.step_range[1] * self.depth_cells + 1e-9)))
        return lo, hi

    @property
    def cell_angstrom(self) -> tuple[float, float, float]:
        a = A_STO_ANGSTROM
        return (self.width_cells * a, (self.n_sto + self.n_lao) * a, self.depth_cells * a)

    @property
    def interface_y_angstrom(self) -> float:
        """y of the first LaO plane (the interface) [Å]."""
        return self.n_sto * A_STO_ANGSTROM

    @property
    def unit_angstrom(self) -> float:
        return A_STO_ANGSTROM

    def build(self, seed: int, index: int) -> tuple[Atoms, dict]:
        """Atoms of sample `index` and its labels (class_index, step_cells or -1, intermix_fraction)."""
        rng = sample_rng(seed, index, 0)
        name = self.classes[index % len(self.classes)]
        lo, hi = self._step_bounds()
        step_cells = int(rng.integers(lo, hi + 1))
        p = float(rng.uniform(*self.intermix_range))
        atoms, params = lao_sto_interface(name, step_fraction=step_cells / self.depth_cells, intermix_fraction=p,
                                          seed=rng, n_sto=self.n_sto, n_lao=self.n_lao,
                                          width_cells=self.width_cells, depth_cells=self.depth_cells)
        labels = {"class_index": index % len(self.classes),
                  "step_cells": params["step_cells"] if params["step_cells"] is not None else -1,
                  "intermix_fraction": params["intermix_fraction"]}
        return atoms, labels


FamilyConfig = LaoStoFamily
