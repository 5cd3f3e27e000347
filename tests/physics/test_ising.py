"""Random-bond random-field Ising model: analytic limits, symmetry, trends, and the numpy reference."""

import numpy as np
import pytest
from scipy.special import erf

from inverscope.core.errors import InverscopeError
from inverscope.physics.ising import IsingConfig, simulate_loops
from inverscope.physics.ising.hysteresis import _draws
from inverscope.physics.ising.lattice import lattice
from inverscope.physics.ising.reference import reference_loops

CFG = IsingConfig(lattice=[16, 16], field_max=8.0, field_steps=161, realizations=4)


def coercive(field, m):
    """Field where a branch crosses m = 0 (linear interpolation)."""
    k = int(np.argmax(m >= 0))
    return field[k - 1] + (0 - m[k - 1]) * (field[k] - field[k - 1]) / (m[k] - m[k - 1])


def test_lattice_tables_are_consistent():
    for shape in ((4, 6), (3, 4, 5)):
        lat = lattice(shape)
        n = lat.sites
        for k in range(lat.coordination):            # the neighbour's table points back through the same bond
            back = k ^ 1
            j = lat.neighbours[:, k]
            assert np.array_equal(lat.neighbours[j, back], np.arange(n))
            assert np.array_equal(lat.bonds[j, back], lat.bonds[:, k])
        assert np.array_equal(np.bincount(lat.bonds.ravel(), minlength=lat.n_bonds), np.full(lat.n_bonds, 2))


@pytest.mark.parametrize("shape,z", [([16, 16], 4), ([6, 6, 6], 6)])
def test_clean_ferromagnet_switches_at_z_times_j0(shape, z):
    cfg = IsingConfig(lattice=shape, field_max=8.0, field_steps=321, realizations=1)
    r = simulate_loops([[1.0, 0.0, 0.0]], cfg)
    h = r.field
    # all down: local field -z J0 + H, so every spin flips once H > z J0 (and back once H < -z J0)
    np.testing.assert_array_equal(r.m_up[0], np.where(h > z, 1.0, -1.0))
    np.testing.assert_array_equal(r.m_down[0], np.where(h < -z, -1.0, 1.0))


def test_free_spins_follow_the_random_field_distribution():
    # J = 0: each spin follows its own field, flips at H = -h_i on both branches: m(H) = erf(H / (dh sqrt 2))
    cfg = IsingConfig(lattice=[32, 32], field_max=4.0, field_steps=81, realizations=10)
    r = simulate_loops([[0.0, 0.0, 1.0]], cfg, seed=3)
    expected = erf(r.field / np.sqrt(2))
    np.testing.assert_array_equal(r.m_up, r.m_down)          # no hysteresis without bonds
    assert np.max(np.abs(r.m_up[0] - expected)) < 0.03       # 10240 spins: binomial spread < 0.01


def test_matches_the_checkerboard_reference_for_ferromagnetic_bonds():
    params = [(1.0, 0.15, 0.6), (0.5, 0.1, 1.2), (1.5, 0.2, 0.3)]
    lat = lattice((16, 16))
    for b, (j0, dj, dh) in enumerate(params):
        r = simulate_loops([[j0, dj, dh]], CFG, seed=7, first_index=b)
        zb, zf = _draws(7, b, CFG.realizations, lat.n_bonds, lat.sites)
        assert (j0 + dj * zb).min() > 0                       # order-independent avalanches
        up, down = reference_loops((16, 16), j0, dj, dh, r.field, zb, zf)
        np.testing.assert_allclose(r.m_up[0], up, atol=1e-12)
        np.testing.assert_allclose(r.m_down[0], down, atol=1e-12)


def test_agrees_statistically_with_the_reference_for_frustrated_bonds():
    # bonds of both signs: flip order matters, so only the realization average must agree
    cfg = CFG.model_copy(update={"realizations": 12, "field_steps": 81})
    lat = lattice((16, 16))
    j0, dj, dh = 0.2, 1.0, 0.5
    r = simulate_loops([[j0, dj, dh]], cfg, seed=5)
    zb, zf = _draws(5, 0, cfg.realizations, lat.n_bonds, lat.sites)
    up, down = reference_loops((16, 16), j0, dj, dh, r.field, zb, zf)
    assert np.mean(np.abs(r.m_up[0] - up)) < 0.02
    assert np.mean(np.abs(r.m_down[0] - down)) < 0.02
    assert r.m_up[0, -1] == up[-1] and r.m_down[0, 0] == down[0]


def test_symmetric_loop_without_random_field():
    # dh = 0: S -> -S, H -> -H maps the up sweep from saturation onto the down sweep exactly
    r = simulate_loops([[0.8, 0.6, 0.0], [0.2, 1.0, 0.0], [-0.3, 0.8, 0.0]], CFG, seed=1)
    np.testing.assert_allclose(r.m_down, -r.m_up[:, ::-1], atol=1e-12)


def test_saturation_at_large_field():
    # saturated once |H| exceeds z max|J| + max|h| (here about 4 * 4.5 + 4.5 for the random-bond row)
    cfg = CFG.model_copy(update={"field_max": 25.0})
    r = simulate_loops([[1.0, 0.2, 0.5], [0.0, 1.0, 1.0]], cfg, seed=2)
    assert np.all(r.m_up[:, -1] == 1.0) and np.all(r.m_down[:, 0] == -1.0)
    assert np.all(r.m_up[:, 0] == -1.0) and np.all(r.m_down[:, -1] == 1.0)
    assert np.all(np.diff(r.m_up[0]) >= 0)                   # ferromagnetic bonds: the up branch only rises


def test_coercive_field_grows_with_j0_and_loops_narrow_with_dh():
    j0s = [0.25, 0.5, 1.0, 1.5]
    r = simulate_loops([[j, 0.3, 1.0] for j in j0s], CFG, seed=4)
    hc = [coercive(r.field, m) for m in r.m_up]
    assert np.all(np.diff(hc) > 0), hc
    dhs = [0.5, 1.5, 3.0]
    r = simulate_loops([[0.5, 0.2, d] for d in dhs], CFG, seed=4)
    area = np.trapezoid(r.m_down - r.m_up, r.field, axis=1)
    assert np.all(np.diff(area) < 0), area


def test_seeded_and_independent_of_chunking_and_threads():
    p = np.random.default_rng(0).uniform([-0.5, 0, 0], [1.5, 1.0, 1.5], (7, 3))
    a = simulate_loops(p, CFG, seed=11, threads=1, chunk=7)
    b = simulate_loops(p, CFG, seed=11, threads=2, chunk=2)
    c = simulate_loops(p[3:], CFG, seed=11, first_index=3)
    np.testing.assert_array_equal(a.m_up, b.m_up)
    np.testing.assert_array_equal(a.m_down[3:], c.m_down)
    d = simulate_loops(p, CFG, seed=12)
    assert not np.array_equal(a.m_up, d.m_up)


@pytest.mark.parametrize("kwargs,match", [({"lattice": [-4, 32]}, "lattice: got size -4"),
                                          ({"lattice": [32]}, "lattice: got 1 axes"),
                                          ({"field_steps": 0}, "field_steps"),
                                          ({"field_max": -1}, "field_max")])
def test_unphysical_config_is_one_line_error(kwargs, match):
    from inverscope.core.config import validate

    with pytest.raises(InverscopeError, match=match) as e:
        validate(IsingConfig, kwargs, "ising")
    assert "\n" not in str(e.value)


def test_negative_spread_is_refused():
    with pytest.raises(InverscopeError, match="dJ and dh are spreads"):
        simulate_loops([[1.0, -0.1, 0.2]], CFG)
