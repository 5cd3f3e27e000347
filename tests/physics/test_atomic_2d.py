"""Structures for atom finding: geometry, defect counts, classes, projection, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial import cKDTree

from inverscope.core.errors import InverscopeError
from inverscope.physics.structures.atomic_2d import (adatoms_on_amorphous, graphene, perovskite_projection,
                                                     projected_columns, tmd_monolayer)


def _interior(atoms, margin=3.0):
    xy = atoms.positions[:, :2]
    ext = atoms.info["params"]["extent"]
    return (xy[:, 0] > margin) & (xy[:, 0] < ext[0] - margin) & (xy[:, 1] > margin) & (xy[:, 1] < ext[1] - margin)


@pytest.mark.parametrize("rotation", [0.0, 17.0])
def test_graphene_bond_length_and_three_neighbours(rotation):
    g = graphene(30.0, rotation_deg=rotation, seed=0)
    tree = cKDTree(g.positions)
    d, _ = tree.query(g.positions[_interior(g)], k=4)
    assert np.allclose(d[:, 1:], 1.42, atol=1e-6)  # exactly three neighbours at 1.42 Å
    assert np.all(d[:, 3] < 1.5)
    d5, _ = tree.query(g.positions[_interior(g)], k=5)
    assert np.all(d5[:, 4] > 2.4)  # the 4th neighbour is a second neighbour (2.46 Å)


def test_graphene_strain_scales_bonds():
    g = graphene(30.0, strain=0.02, seed=0)
    d, _ = cKDTree(g.positions).query(g.positions[_interior(g)], k=2)
    assert np.allclose(d[:, 1], 1.42 * 1.02, atol=1e-6)


def test_graphene_si_count_classes_and_vacancies():
    req = {"Si1C3": 3, "Si1C4": 2, "Si2": 1, "Si3": 2}
    g = graphene(50.0, si_defects=req, n_vacancies=3, seed=4, rotation_deg="random", jitter_angstrom=0.03)
    n_si = sum(s == "Si" for s in g.get_chemical_symbols())
    assert n_si == 3 + 2 + 2 * 1 + 3 * 2
    assert g.info["site_classes"] == ["C", "Si"]
    sc = g.arrays["site_class"]
    assert np.all((sc == 1) == (g.numbers == 14))
    assert len(g.info["vacancies"]) == 3 and all(v["label"] == "V_C" for v in g.info["vacancies"])
    # an Si1C4 Si has four C within 1.9 Å (no relaxation: divacancy centre)
    tree = cKDTree(g.positions[:, :2])
    four = [len(tree.query_ball_point(p, 1.95)) - 1 for p in g.positions[g.numbers == 14][:, :2]]
    assert sum(n >= 4 for n in four) >= 2


def test_graphene_grain_boundary_no_overlaps():
    g = graphene(40.0, grain_boundary_deg=21.8, seed=1)
    d, _ = cKDTree(g.positions).query(g.positions, k=2)
    assert d[:, 1].min() >= 1.1 - 1e-9
    assert len(g) > 0.9 * 40 * 40 / 2.62


def test_mos2_lattice_and_columns():
    m = tmd_monolayer("MoS2", 30.0, seed=0)
    mo = m.positions[m.numbers == 42]
    d, _ = cKDTree(mo).query(mo, k=2)
    inner = _interior(m)[m.numbers == 42]
    assert np.allclose(d[inner, 1], 3.16, atol=1e-6)
    s = m.positions[m.numbers == 16]
    d_ms, _ = cKDTree(s).query(mo[inner], k=1)
    assert np.allclose(d_ms, math.sqrt(3.16 ** 2 / 3 + 1.585 ** 2), atol=1e-6)  # Mo-S bond 2.41 Å
    cols = projected_columns(m)
    names = m.info["site_classes"]
    assert names == ["Mo", "S2", "S1", "W"]
    assert np.all(cols["n_atoms"][cols["site_class"] == 1] == 2)
    assert np.all(cols["n_atoms"][cols["site_class"] == 0] == 1)


def test_tmd_defects_recorded():
    m = tmd_monolayer("MoS2", 40.0, n_metal_vacancies=2, n_chalcogen_vacancies=3, n_chalcogen_divacancies=1,
                      n_antisites=4, seed=3, rotation_deg="random")
    cols = projected_columns(m)
    counts = np.bincount(cols["site_class"], minlength=4)
    assert counts[2] == 3 and counts[3] == 4
    assert (m.numbers == 74).sum() == 4
    labels = sorted(v["label"] for v in m.info["vacancies"])
    assert labels == ["V_Mo", "V_Mo", "V_S2"]
    w = tmd_monolayer("WS2", 20.0, seed=0)
    assert w.info["site_classes"] == ["W", "S2", "S1", "Mo"]


def test_perovskite_001_square_lattice_b_at_centre():
    p = perovskite_projection("SrTiO3", "001", 24.0, thickness_cells=3, seed=0)
    cols = projected_columns(p)
    a_xy = np.column_stack([cols["x"], cols["y"]])[cols["site_class"] == 0]
    b_xy = np.column_stack([cols["x"], cols["y"]])[cols["site_class"] == 1]
    d, _ = cKDTree(a_xy).query(a_xy, k=5)
    inner = (a_xy.min(1) > 4) & (a_xy.max(1) < 20)
    assert np.allclose(d[inner, 1:], 3.905, atol=1e-6)  # 4 nearest A at a: square lattice
    d_ab, _ = cKDTree(a_xy).query(b_xy, k=4)
    inner_b = (b_xy.min(1) > 4) & (b_xy.max(1) < 20)
    assert np.allclose(d_ab[inner_b], 3.905 / math.sqrt(2), atol=1e-6)  # B at the cell centre
    assert p.info["site_classes"] == ["Sr", "Ti", "O"]
    assert set(np.unique(cols["n_atoms"][cols["site_class"] == 0])) == {3}


def test_perovskite_110_columns_and_vacancies():
    p = perovskite_projection("SrTiO3", "110", 24.0, thickness_cells=2, vacancy_columns={"A": 1, "O": 2},
                              b_displacement_angstrom=(0.1, 0.0), seed=2)
    assert p.info["site_classes"] == ["SrO", "Ti", "O"]
    cols = projected_columns(p)
    b_xy = np.column_stack([cols["x"], cols["y"]])[cols["site_class"] == 1]
    d, _ = cKDTree(b_xy).query(b_xy, k=2)
    assert np.allclose(np.median(d[:, 1]), 3.905 * math.sqrt(2) / 2, atol=1e-3)
    assert len(p.info["vacancies"]) == 3
    # every column holds one class only
    col = p.arrays["column_id"]
    for c in np.unique(col)[:50]:
        assert len(set(p.arrays["site_class"][col == c])) == 1


def test_adatoms_min_distance_and_classes():
    a = adatoms_on_amorphous((30.0, 30.0), heavy="Au", n_heavy=6, support_thickness_angstrom=8.0, seed=5)
    d, _ = cKDTree(a.positions).query(a.positions, k=2)
    assert d[:, 1].min() >= 1.3 - 1e-9
    assert (a.numbers == 79).sum() == 6
    assert a.info["ignore_classes"] == ["C_support"]
    dens = (a.numbers == 6).sum() * 12.011 * 1.66054 / (30 * 30 * 8.0)
    assert dens == pytest.approx(2.0, rel=0.02)


def test_seeded_reproducible():
    kw = dict(extent=30.0, si_defects={"Si1C3": 2}, n_vacancies=1, rotation_deg="random", strain=(0.01, -0.01, 0.0),
              jitter_angstrom=0.05)
    a, b, c = graphene(seed=7, **kw), graphene(seed=7, **kw), graphene(seed=8, **kw)
    assert np.array_equal(a.positions, b.positions)
    assert len(a) != len(c) or not np.allclose(a.positions, c.positions)
    r = np.random.default_rng(1)
    assert np.array_equal(tmd_monolayer(seed=np.random.default_rng(1)).positions, tmd_monolayer(seed=r).positions)


def test_bad_input_one_line_errors():
    with pytest.raises(InverscopeError, match="strain"):
        graphene(20.0, strain=0.3)
    with pytest.raises(InverscopeError, match="Si1C3"):
        graphene(10.0, si_defects={"Si1C3": 50})
    with pytest.raises(InverscopeError, match="zone"):
        perovskite_projection(zone="111")
    with pytest.raises(InverscopeError, match="compound"):
        tmd_monolayer("NbS2")


def test_perovskite_column_sigma_moves_whole_columns_and_is_opt_in():
    from inverscope.physics.structures.atomic_2d import perovskite_projection

    base = perovskite_projection(extent=20.0, thickness_cells=4, seed=3)
    same = perovskite_projection(extent=20.0, thickness_cells=4, seed=3, column_sigma_angstrom={"O": 0.0})
    assert np.array_equal(base.positions, same.positions)          # nothing drawn at 0
    moved = perovskite_projection(extent=20.0, thickness_cells=4, seed=3, column_sigma_angstrom={"O": 0.15})
    cls, col = moved.arrays["site_class"], moved.arrays["column_id"]
    bcol = base.arrays["column_id"]
    spreads, offsets, others = [], [], []
    for c in np.intersect1d(np.unique(col), np.unique(bcol)):     # columns kept in both crops
        xy = moved.positions[col == c, :2]
        d = xy.mean(0) - base.positions[bcol == c, :2].mean(0)
        if cls[col == c][0] == 2:
            spreads.append(xy.std(0).max())                         # rigid: every atom of a column moves together
            offsets.append(d)
        else:
            others.append(np.abs(d).max())
    assert max(spreads) < 1e-9
    offsets = np.asarray(offsets)
    assert len(offsets) > 20 and 0.10 < offsets.std() < 0.20       # about the sigma asked for
    assert max(others) < 1e-9                                        # A and B columns untouched
    with pytest.raises(InverscopeError, match="column_sigma_angstrom"):
        perovskite_projection(extent=20.0, column_sigma_angstrom={"B": 0.1})
