"""LAO/STO interface structures: stacking, composition per column, seeding."""

import numpy as np
import pytest

from inverscope.core.errors import ConfigError
from inverscope.physics.multislice.potentials import slice_edges
from inverscope.physics.structures.lao_sto import A_STO_ANGSTROM, column_composition, lao_sto_interface

A = A_STO_ANGSTROM


def _planes_y(atoms):
    ys = np.unique(np.round(atoms.positions[:, 1], 4))
    return ys


def test_no_doubled_sro_plane_and_stacking():
    atoms, _ = lao_sto_interface("rough", 0.5, n_sto=3, n_lao=3, depth_cells=4)
    ys = _planes_y(atoms)
    gaps = np.diff(np.concatenate([ys, [ys[0] + atoms.cell[1, 1]]]))  # including the periodic wrap
    assert np.allclose(gaps, A / 2), "planes must be a/2 apart everywhere, also across the SrO cap"
    sym = np.array(atoms.get_chemical_symbols())
    y = atoms.positions[:, 1]
    # TiO2 termination of the substrate, AlO2 at the film top, SrO at y = 0 (the cap's periodic image)
    assert set(sym[np.isclose(y, 2.5 * A)]) == {"Ti", "O"}
    assert set(sym[np.isclose(y, 5.5 * A)]) == {"Al", "O"}
    assert set(sym[np.isclose(y, 0.0)]) == {"Sr", "O"}


def test_atoms_never_on_slice_boundaries():
    atoms, _ = lao_sto_interface("intermixed", intermix_fraction=0.3, depth_cells=6)
    edges = slice_edges(atoms.cell[2, 2], A / 2)
    d = np.abs(atoms.positions[:, 2][:, None] - edges[None])
    assert d.min() > 0.2 * A


@pytest.mark.parametrize("step", [0.25, 0.5, 0.75])
def test_rough_step_depth_and_composition(step):
    depth = 8
    atoms, p = lao_sto_interface("rough", step, depth_cells=depth)
    assert p["step_cells"] == round(step * depth)
    comp = column_composition(atoms)
    assert comp["A_Sr"] == pytest.approx(1 - p["step_cells"] / depth)
    assert comp["B_Ti"] == pytest.approx(1 - p["step_cells"] / depth)
    tags, sym, z = atoms.get_tags(), np.array(atoms.get_chemical_symbols()), atoms.positions[:, 2]
    shallow = (tags == 1) & (z < p["step_cells"] * A)
    assert set(sym[shallow]) == {"La"}, "the film is intact above the step depth"


def test_intermixed_never_touches_a_sites():
    atoms, p = lao_sto_interface("intermixed", intermix_fraction=0.4, depth_cells=10, seed=3)
    comp = column_composition(atoms)
    assert comp["A_Sr"] == 0.0
    assert comp["B_Ti"] == pytest.approx(p["intermix_fraction"]) and abs(comp["B_Ti"] - 0.4) <= 0.05


def test_matched_has_the_steps_composition_per_column_but_random_depths():
    depth = 12
    rough, pr = lao_sto_interface("rough", 0.25, depth_cells=depth)
    matched, pm = lao_sto_interface("matched", 0.25, depth_cells=depth, seed=5)
    for atoms in (rough, matched):
        tags, sym, x = atoms.get_tags(), np.array(atoms.get_chemical_symbols()), atoms.positions[:, 0]
        for tag, new in ((1, "Sr"), (2, "Ti")):
            for col in np.unique(np.round(x[tags == tag], 4)):
                m = (tags == tag) & np.isclose(x, col)
                assert (sym[m] == new).sum() == depth - pr["step_cells"]
    z = matched.positions[:, 2]
    swapped = (matched.get_tags() == 1) & (np.array(matched.get_chemical_symbols()) == "Sr")
    assert z[swapped].min() < pr["step_cells"] * A, "matched swaps are not all below the step depth"


def test_seeded_and_validated():
    a1, _ = lao_sto_interface("matched", 0.5, depth_cells=8, seed=11)
    a2, _ = lao_sto_interface("matched", 0.5, depth_cells=8, seed=11)
    a3, _ = lao_sto_interface("matched", 0.5, depth_cells=8, seed=12)
    assert a1.get_chemical_symbols() == a2.get_chemical_symbols() != a3.get_chemical_symbols()
    with pytest.raises(ConfigError, match="intermix_fraction"):
        lao_sto_interface("intermixed", intermix_fraction=0.7)
    with pytest.raises(ConfigError, match="family"):
        lao_sto_interface("stepped")
