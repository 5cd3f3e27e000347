"""NNLS unmixing, noise rules, PCA and NMF (analysis.unmixing)."""

import numpy as np
import pytest

from inverscope.analysis.unmixing import (class_mean_spectra, counting_noise_sigma, estimate_noise_sigma,
                                          nmf_decomposition, nnls_unmix, pca_decomposition)
from inverscope.core.errors import InverscopeError

CH = 120


def gaussians(centers, width=6.0, channels=CH):
    c = np.arange(channels)
    return np.stack([np.exp(-0.5 * ((c - m) / width) ** 2) for m in centers])


@pytest.fixture
def mixture():
    rng = np.random.default_rng(1)
    w = gaussians([25, 60, 95]) + 0.05
    coef = rng.uniform(0, 2, (10, 12, 3))
    coef[coef < 0.4] = 0.0                       # some coefficients exactly at the bound
    return coef, w


def test_nnls_recovers_noise_free_coefficients_exactly(mixture):
    coef, w = mixture
    r = nnls_unmix(coef @ w, w, noise_sigma=1.0)
    np.testing.assert_allclose(r.coefficients, coef, atol=1e-10)
    np.testing.assert_allclose(r.fitted, coef @ w, atol=1e-10)
    assert r.coefficients.shape == (10, 12, 3) and r.residual.shape == r.chi2.shape == (10, 12)
    assert r.residual.max() < 1e-10


def test_nnls_keeps_coefficients_non_negative_with_signed_end_members():
    v = np.linspace(-1, 1, 64)
    w = np.stack([np.tanh(4 * v), np.sin(3 * v)])
    data = np.stack([0.7 * w[0] + 0.2 * w[1], -0.5 * w[0] + 0.3 * w[1]])   # second needs a negative coefficient
    r = nnls_unmix(data, w, noise_sigma=0.1)
    np.testing.assert_allclose(r.coefficients[0], [0.7, 0.2], atol=1e-10)
    assert (r.coefficients >= 0).all() and r.coefficients[1, 0] == 0.0
    assert r.residual[1] > 0.1                    # the constraint costs a visible misfit there


def test_chi2_is_one_for_known_gaussian_noise(mixture):
    coef, w = mixture
    rng = np.random.default_rng(2)
    sigma = 0.05
    data = np.tile(coef, (4, 1, 1)) @ w + rng.normal(0, sigma, (40, 12, CH))
    r = nnls_unmix(data, w, noise_sigma=sigma)
    assert abs(r.chi2.mean() - 1.0) < 0.03        # E[chi2] = 1 with dof = channels - k
    per_channel = nnls_unmix(data, w, noise_sigma=np.full(CH, sigma))
    np.testing.assert_allclose(per_channel.chi2, r.chi2)
    assert not r.sigma_estimated


def test_second_difference_rule_estimates_white_noise(mixture):
    coef, w = mixture
    rng = np.random.default_rng(3)
    sigma = 0.05
    data = coef @ w + rng.normal(0, sigma, (10, 12, CH))
    est = estimate_noise_sigma(data)
    assert est.shape == (10, 12)
    assert abs(np.median(est) / sigma - 1) < 0.08
    r = nnls_unmix(data, w)                       # sigma from the rule
    assert r.sigma_estimated and abs(np.median(r.chi2) - 1) < 0.2


def test_counting_noise_sigma():
    np.testing.assert_allclose(counting_noise_sigma([0.0, 4.0, 100.0], read_noise=3.0), np.sqrt([10, 13, 109]))


def test_class_mean_spectra():
    cube = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    mask = np.array([[0, 0, -1], [1, -1, 1]])
    w = class_mean_spectra(cube, mask)
    np.testing.assert_allclose(w[0], cube[0, :2].mean(0))
    np.testing.assert_allclose(w[1], (cube[1, 0] + cube[1, 2]) / 2)


def one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_wrong_length_end_members_name_both_lengths():
    with pytest.raises(InverscopeError) as e:
        nnls_unmix(np.ones((4, 96)), np.ones((2, 120)))
    assert one_line(e) == "end members have 120 channels but the cube has 96"


@pytest.mark.parametrize("cube, w, sigma, words", [
    (np.full((2, 10), np.nan), np.ones((2, 10)), None, "non-finite"),
    (np.ones((2, 10)), np.array([[1.0] * 9 + [np.inf]]), None, "non-finite"),
    (np.ones((2, 4)), np.eye(4), None, "fewer end members than channels"),
    (np.ones((2, 10)), np.stack([np.ones(10), np.zeros(10)]), None, "end member 1 has zero norm"),
    (np.ones((2, 10)), np.ones((1, 10)), np.ones(7), "noise_sigma has shape"),
    (np.ones((2, 10)), np.ones((1, 10)), 0.0, "must be > 0"),
])
def test_bad_input_is_one_line_error(cube, w, sigma, words):
    with pytest.raises(InverscopeError) as e:
        nnls_unmix(cube, w, noise_sigma=sigma)
    assert words in one_line(e)


def test_pca_shapes_sorted_variance_and_exact_low_rank(mixture):
    coef, w = mixture
    data = coef[..., :2] @ w[:2] + 3.0            # rank 2 around a non-zero mean
    p = pca_decomposition(data, 2)
    assert p.loadings.shape == (2, CH) and p.maps.shape == (10, 12, 2)
    evr = p.explained_variance_ratio
    assert np.all(np.diff(evr) <= 0) and abs(evr.sum() - 1) < 1e-9
    np.testing.assert_allclose(p.maps @ p.loadings + p.mean, data, atol=1e-9)
    p4 = pca_decomposition(coef @ w, 4)
    assert np.all(np.diff(p4.explained_variance_ratio) <= 0)
    with pytest.raises(InverscopeError, match="PCA components: got 200"):
        pca_decomposition(data, 200)


def test_nmf_shapes_shift_rule_and_unit_independence(mixture):
    coef, w = mixture
    data = coef @ w
    n = nmf_decomposition(data, 3)
    assert n.loadings.shape == (3, CH) and n.maps.shape == (10, 12, 3) and n.shift == 0.0
    assert (n.loadings >= 0).all() and (n.maps >= 0).all() and n.converged
    assert n.mse < 1e-4 * np.mean(data ** 2)      # exactly non-negative rank-3 data
    signed = data - 1.0
    s = nmf_decomposition(signed, 3)
    assert s.shift == pytest.approx(signed.min())
    np.testing.assert_allclose(s.maps @ s.loadings + s.shift, signed, atol=0.05)
    tiny = nmf_decomposition(data * 1e-4, 3)       # same fit in other units
    np.testing.assert_allclose(tiny.loadings, n.loadings * 1e-4, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(tiny.maps, n.maps, rtol=1e-6, atol=1e-9)
