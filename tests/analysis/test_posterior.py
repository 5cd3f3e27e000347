"""Amortized posterior: calibrated on a simulator with a known posterior, samples inside the prior,
and a posterior-predictive check that separates loops of the family from loops it cannot produce."""

import numpy as np
import pytest
import torch

from inverscope.analysis.hysteresis import AlignmentConfig, waveform_axis
from inverscope.analysis.loop_family import NUISANCES, LoopFamily, NuisanceConfig
from inverscope.analysis.posterior import (AmortizedPosterior, PosteriorConfig, calibrate_ppc, central_coverage,
                                           posterior_predictive_check, sbc_ranks, summarize)
from inverscope.core.errors import InverscopeError

torch.set_num_threads(1)

LOW, HIGH = np.array([-3.0, -3.0]), np.array([3.0, 3.0])
A = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])      # x = A theta + N(0, SIGMA^2)
SIGMA = 0.6
SMALL = PosteriorConfig(density_estimator="nsf", features=0, hidden_features=32, num_transforms=2, batch_size=256,
                        learning_rate=3e-3, max_epochs=80, stop_after_epochs=8, num_samples=400)


def _gauss(theta, rng):
    return theta @ A.T + SIGMA * rng.standard_normal((len(theta), len(A)))


@pytest.fixture(scope="module")
def gauss_posterior():
    rng = np.random.default_rng(0)
    theta = LOW + (HIGH - LOW) * rng.random((4000, 2))
    return AmortizedPosterior(LOW, HIGH, ("a", "b"), SMALL).fit(theta, _gauss(theta, rng), seed=0)


def test_gaussian_simulator_is_calibrated_and_matches_the_known_posterior(gauss_posterior):
    rng = np.random.default_rng(1)
    theta = LOW + (HIGH - LOW) * rng.random((600, 2))
    s = gauss_posterior.sample(_gauss(theta, rng), seed=2)
    cov = central_coverage(theta, s, (0.5, 0.9), ("a", "b"))
    for name in ("a", "b"):
        assert abs(cov[name]["0.5"] - 0.5) < 0.06 and abs(cov[name]["0.9"] - 0.9) < 0.05, cov
    ranks = sbc_ranks(theta, s)
    assert ranks.shape == (600, 2) and ranks.min() >= 0 and ranks.max() <= 400
    # the analytic posterior (prior box far from this x): N(mean, cov) with cov = SIGMA^2 (A^T A)^-1
    x0 = np.array([[0.5, -0.3, 0.2, 0.8]])
    cov_true = SIGMA ** 2 * np.linalg.inv(A.T @ A)
    mean_true = cov_true @ A.T @ x0[0] / SIGMA ** 2
    s0 = gauss_posterior.sample(x0, 4000, seed=3)[0]
    q05, q25, q50, q75, q95 = np.quantile(s0, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    sd = np.sqrt(np.diag(cov_true))
    assert np.all(np.abs(q50 - mean_true) < 0.1), (q50, mean_true)
    assert np.allclose(q75 - q25, 2 * 0.6745 * sd, rtol=0.2), (q75 - q25, 2 * 0.6745 * sd)
    assert np.allclose(q95 - q05, 2 * 1.6449 * sd, rtol=0.25), (q95 - q05, 2 * 1.6449 * sd)
    summ = summarize(s0[None], (0.9,))
    lo, hi = summ["interval"][0.9]
    assert np.all(lo < summ["median"]) and np.all(summ["median"] < hi)


def test_samples_stay_inside_the_prior_even_for_absurd_curves(gauss_posterior):
    x = np.array([[50.0, -50.0, 0.0, 100.0], [2.9, 2.9, 5.8, 0.0], [-1e3, 1e3, 0.0, 0.0]])
    s = gauss_posterior.sample(x, 500, seed=4)
    assert s.shape == (3, 500, 2)
    assert np.all(s > LOW) and np.all(s < HIGH)
    with pytest.raises(InverscopeError, match="inside the prior"):
        AmortizedPosterior(LOW, HIGH).fit(np.array([[4.0, 0.0]] * 10), np.zeros((10, 4)))


# -- a loop family from analytic "simulated" loops, so no Ising run is needed ------------------

def _tanh_library(n, rng):
    """Loops m = tanh((H -+ hc) / w) on a uniform field grid; core parameters (hc, w)."""
    field = np.linspace(-3, 3, 121)
    core = np.column_stack([rng.uniform(0.1, 1.2, n), rng.uniform(0.1, 0.6, n)])
    up = np.tanh((field[None] - core[:, :1]) / core[:, 1:])
    down = np.tanh((field[None] + core[:, :1]) / core[:, 1:])
    return field, up, down, core


@pytest.fixture(scope="module")
def loop_case():
    v = np.concatenate([np.linspace(16, -16, 49)[:-1], np.linspace(-16, 16, 49)[:-1]])    # like the bundled PZT waveform
    cfg = AlignmentConfig(field_at_vmax=2.0, remove_imprint=False)
    axis = waveform_axis(v, cfg)
    rng = np.random.default_rng(5)
    nuis = NuisanceConfig(noise_range=(0.005, 0.03))
    fam = LoopFamily(*_tanh_library(2500, rng), [[0.1, 1.2], [0.1, 0.6]], axis, cfg, nuis, ("hc", "w"))
    held = LoopFamily(*_tanh_library(300, rng), [[0.1, 1.2], [0.1, 0.6]], axis, cfg, nuis, ("hc", "w"))
    theta, x = fam.draw(np.tile(np.arange(2500), 2), rng)
    config = SMALL.model_copy(update={"features": 12, "hidden_features": 48, "max_epochs": 60, "num_samples": 100})
    post = AmortizedPosterior(fam.low, fam.high, fam.names, config).fit(theta, x, seed=0)
    return fam, held, post, axis, rng


def test_family_renders_nuisances_and_the_posterior_reads_them(loop_case):
    fam, held, post, axis, rng = loop_case
    assert fam.names == ("hc", "w") + NUISANCES and fam.low.shape == (9,)
    rows = np.zeros(1, int)
    base = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    shift, slope, split = (base + np.eye(7)[i] * v for i, v in ((1, 0.3), (0, 0.3), (4, 0.5)))
    loops = fam.render(np.zeros(5, int), np.array([base, shift, slope, split, split + np.eye(7)[5] * 0.8]))
    for i in (1, 2, 4):
        assert not np.allclose(loops[0], loops[i]), i
    assert np.allclose(loops[0], loops[3])                          # a split population without a shift is no split
    assert np.allclose(fam.render(rows[:1], base[None]), fam.predict(np.r_[fam.core[0], base][None]))
    theta, x = held.draw(np.arange(300), rng)
    s = post.sample(x, seed=1)
    assert np.all(s > fam.low) and np.all(s < fam.high)
    cov = central_coverage(theta, s, (0.5, 0.9), fam.names)
    # the coercive field, the slope and the imprint are well determined: the posterior median tracks the truth
    med = summarize(s)["median"]
    for name in ("hc", "slope", "imprint"):
        i = fam.names.index(name)
        assert np.corrcoef(med[:, i], theta[:, i])[0, 1] > 0.8, name
    assert np.mean([c["0.9"] for c in cov.values()]) > 0.8


def test_ppc_flags_a_sine_wave_but_not_loops_of_the_family(loop_case):
    fam, held, post, axis, rng = loop_case
    _, x = held.draw(np.arange(200), rng)
    sine = np.sin(2 * np.pi * np.arange(len(axis.field)) / len(axis.field))[None]
    line = (axis.field / np.abs(axis.field).max())[None]                    # no hysteresis at all
    kw = dict(draws=24, replicas=2, seed=3)
    ref = posterior_predictive_check(x[:100], post.sample(x[:100], seed=2), fam.predict, fam.replicate, **kw)
    thr = calibrate_ppc(ref, 0.99)
    assert ref.flagged.shape == (100,) and np.isnan(ref.threshold)
    curves = np.vstack([x[100:], sine, line])
    s = post.sample(curves, seed=4)
    ppc = posterior_predictive_check(curves, s, fam.predict, fam.replicate, threshold=thr, **kw)
    assert ppc.flagged[100] and ppc.flagged[101], (ppc.ratio[100:], thr)
    assert ppc.flagged[:100].mean() <= 0.05, (np.sort(ppc.ratio[:100])[-6:], thr)
    assert ppc.ratio[100] > 1.3 * thr and ppc.pvalue[100] == 0 and np.median(ppc.ratio[:100]) < 1.2
    assert np.all(ppc.best_rmse <= ppc.discrepancy + 1e-12)
