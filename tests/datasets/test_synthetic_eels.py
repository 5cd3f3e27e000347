"""Synthetic EELS line scan: ground truth, noise statistics, seeding, validation."""

import numpy as np
import pytest
from scipy.stats import norm

from inverscope.core.errors import InverscopeError
from inverscope.datasets.synthetic import (MATERIALS, MaterialSpectrum, eels_line_scan, layer_fractions,
                                           material_spectrum)


def test_abundances_are_fractions_that_sum_to_one():
    s = eels_line_scan(rows=5, positions=100, interface_width=3.0, interface_roughness=2.0, seed=1)
    assert s.abundances.shape == (5, 100, 3) and s.names == ["STO", "LSMO", "BFO"]
    np.testing.assert_allclose(s.abundances.sum(-1), 1.0, atol=1e-12)
    assert s.abundances.min() >= 0 and s.abundances.max() <= 1
    assert np.array_equal(s.labels, s.abundances.argmax(-1))
    flat = eels_line_scan(rows=1, positions=200, interface_width=3.0, seed=1)
    mixed = (flat.abundances.max(-1) < 0.99).mean()
    # a layer's fraction is below 0.99 within |x - b| < 2.326 w of each of the four interfaces
    assert abs(mixed - 4 * 2 * norm.ppf(0.99) * 3.0 / 200) < 0.02


def test_noise_free_cube_is_the_linear_mixture_scaled_by_dose():
    s = eels_line_scan(rows=2, positions=50, channels=64, poisson=False, dose_counts=5e3, seed=0)
    np.testing.assert_allclose(s.endmembers.sum(axis=1), 5e3)
    np.testing.assert_allclose(s.cube, s.abundances @ s.endmembers, rtol=1e-12)
    np.testing.assert_array_equal(s.cube, s.clean)
    double = eels_line_scan(rows=2, positions=50, channels=64, poisson=False, dose_counts=1e4, seed=0)
    np.testing.assert_allclose(double.endmembers, 2 * s.endmembers, rtol=1e-12)
    assert np.all(s.endmembers > 0)
    np.testing.assert_allclose(s.energy_ev[[0, -1]], [5.0, 150.0])


def test_sharp_interfaces_put_each_position_in_its_layer():
    s = eels_line_scan(rows=1, positions=100, layers=["STO", "BFO", "STO"], layer_widths=[30, 40, 30],
                       interface_width=0.0, poisson=False, seed=0)
    expected = np.r_[np.zeros(30), np.ones(40), np.zeros(30)].astype(int)
    assert np.array_equal(s.labels[0], expected) and set(np.unique(s.abundances)) == {0.0, 1.0}


def test_interface_profile_is_a_normal_cdf():
    x = np.array([10.0, 12.0, 7.0])
    f = layer_fractions(x, np.array([10.0]), 2.0)
    np.testing.assert_allclose(f[:, 1], norm.cdf([0.0, 1.0, -1.5]))
    np.testing.assert_allclose(f.sum(1), 1.0)


def test_plasmon_peak_sits_near_the_plasmon_energy():
    e = np.linspace(5, 60, 2000)
    m = MaterialSpectrum(plasmon_ev=22.0, plasmon_width_ev=6.0, background=0.0, background_exponent=3.0, edges=())
    spec = material_spectrum(m, e)
    assert abs(e[np.argmax(spec)] - 22.0) < 1.0 and abs(spec.max() - 1.0) < 0.02   # Im(-1/eps) = Ep/G at Ep


def test_edges_appear_only_above_their_onsets():
    e = np.linspace(5, 150, 1000)
    sto = MATERIALS["STO"]
    bare = MaterialSpectrum(sto.plasmon_ev, sto.plasmon_width_ev, sto.background, sto.background_exponent, ())
    diff = material_spectrum(sto, e) - material_spectrum(bare, e)
    onset = sto.edges[0].onset_ev
    assert np.all(diff[e < onset - 5] < 1e-6) and diff[(e > onset + 5) & (e < onset + 20)].min() > 0.01


def test_poisson_variance_equals_the_mean():
    s = eels_line_scan(rows=400, positions=2, channels=64, layers=["LSMO"], dose_counts=3e3, seed=5)
    resid = s.cube - s.clean
    assert abs(resid.mean()) < 0.02 * np.sqrt(s.clean.mean())
    assert abs((resid ** 2).sum() / s.clean.sum() - 1) < 0.03
    r = eels_line_scan(rows=400, positions=2, channels=64, layers=["LSMO"], dose_counts=3e3, read_noise_counts=4.0,
                       seed=5)
    var = ((r.cube - r.clean) ** 2).mean()
    assert abs(var / (r.clean.mean() + 16.0) - 1) < 0.03


def test_same_seed_same_bytes():
    a = eels_line_scan(rows=3, positions=40, interface_roughness=1.0, read_noise_counts=1.0, seed=7)
    b = eels_line_scan(rows=3, positions=40, interface_roughness=1.0, read_noise_counts=1.0, seed=7)
    c = eels_line_scan(rows=3, positions=40, interface_roughness=1.0, read_noise_counts=1.0, seed=8)
    assert a.cube.tobytes() == b.cube.tobytes() and np.array_equal(a.boundaries, b.boundaries)
    assert not np.array_equal(a.cube, c.cube) and not np.array_equal(a.boundaries, c.boundaries)


@pytest.mark.parametrize("kw, words", [
    ({"layers": ["STO", "GaAs"]}, "layers: got 'GaAs'"),
    ({"layer_widths": [10, 10]}, "layer_widths"),
    ({"positions": 100, "layers": ["STO", "BFO"], "layer_widths": [50, 40]}, "summing to positions = 100"),
    ({"energy_min_ev": 200.0}, "energy_min_ev"),
    ({"dose_counts": 0.0}, "dose_counts"),
    ({"interface_width": -1.0}, "interface_width"),
])
def test_bad_arguments_are_one_line_errors(kw, words):
    with pytest.raises(InverscopeError) as e:
        eels_line_scan(**kw)
    assert words in str(e.value) and "\n" not in str(e.value)
