"""PACBED: the mean of CBED over one unit cell, a thickness series in one pass, crystal symmetry."""

import numpy as np
import pytest
import torch

from inverscope.core.errors import InverscopeError
from inverscope.core.grid import Grid
from inverscope.physics.multislice.detectors import PixelatedDetector
from inverscope.physics.multislice.pacbed import pacbed, unit_cell_positions
from inverscope.physics.multislice.potentials import PotentialBuilder
from inverscope.physics.multislice.probe import Probe
from inverscope.physics.multislice.simulate import MultisliceSimulation
from inverscope.physics.structures import perovskite_slab

A = 3.905


@pytest.fixture(scope="module")
def sto():
    atoms = perovskite_slab("SrTiO3", 2, 8 * A)
    grid = Grid(tuple(np.diag(atoms.cell)[:2]), (96, 96))
    return PotentialBuilder(atoms, grid, A / 2)


def run(pot, **kw):
    kw.setdefault("detector", PixelatedDetector(max_angle_mrad=40))
    return pacbed(pot, Probe(200e3, 13.6), (A, A), dtype=torch.float64, **kw)


def test_pacbed_is_the_mean_of_cbed_over_the_cell_at_every_slice(sto):
    res = run(sto, positions_per_cell=4)
    assert res.array.shape[0] == sto.num_slices == 16
    assert np.allclose(res.thicknesses_angstrom, np.arange(1, 17) * A / 2)
    scan = unit_cell_positions((A, A), 4)
    cbed = MultisliceSimulation(sto, Probe(200e3, 13.6), scan, PixelatedDetector(max_angle_mrad=40),
                                thicknesses_angstrom=[3 * A, 8 * A], dtype=torch.float64).run().array
    assert np.allclose(res.array[[5, 15]], cbed.reshape(16, 2, *cbed.shape[-2:]).mean(0), rtol=1e-5, atol=1e-9)
    assert res.metadata["num_positions"] == 16 and len(scan) == 16


def test_on_zone_pacbed_has_the_4mm_symmetry_of_srtio3_001(sto):
    p = run(sto, positions_per_cell=4, thicknesses_angstrom=[8 * A]).array[0]
    assert p.shape[0] % 2 == 1
    scale = p.max()
    for image in (p[::-1, :], p[:, ::-1], p.T):
        assert np.abs(p - image).max() <= 1e-5 * scale
    tilted = run(sto, positions_per_cell=4, thicknesses_angstrom=[8 * A], tilt_mrad=(4.0, 0.0)).array[0]
    assert np.abs(tilted - tilted[:, ::-1]).max() <= 1e-5 * scale  # the mirror across the tilt axis stays
    assert np.abs(tilted - tilted[::-1, :]).max() > 1e-2 * scale   # the one across it is broken
    assert np.abs(tilted - p).max() > 1e-2 * scale


def test_thickness_changes_the_pattern_and_positions_must_cover_the_cell(sto):
    res = run(sto, positions_per_cell=3, thicknesses_angstrom=[2 * A, 8 * A])
    a, b = res.array
    assert np.abs(a - b).sum() > 0.05 * a.sum() and 0.5 < a.sum() <= 1.0 + 1e-6
    with pytest.raises(InverscopeError, match="positions_per_cell"):
        run(sto, positions_per_cell=0)
    with pytest.raises(InverscopeError, match="thicknesses_angstrom"):
        run(sto, thicknesses_angstrom="some")
