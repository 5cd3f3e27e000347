"""Amortized posterior estimation for simulator parameters, with calibration and predictive checks.

Neural posterior estimation (NPE; Papamakarios & Murray 2016, Greenberg et al. 2019) with a
normalizing flow from the `sbi` package: a conditional density q(theta | x) is trained on
simulated pairs (theta ~ prior, x ~ simulator(theta)) and then gives posterior samples for any
measured curve in one pass, so a 60x60 map costs one batched call.

- Prior: independent uniform (a box) on each parameter. The flow is trained on the logit of each
  parameter's position in its box, so every sample maps back strictly inside the box: no
  rejection, no clipping, no estimate outside the prior.
- Features: the curve's PCA scores (fitted on the training curves, divided by their spread) plus
  the log RMS of what the PCA does not explain (informs the noise level), or the raw curve.
- Calibration (:func:`central_coverage`, :func:`sbc_ranks`): on held-out simulations, the fraction
  of true parameters inside the central 50 % and 90 % credible intervals (simulation-based
  calibration, Talts et al. 2018) should equal 0.5 and 0.9.
- Posterior-predictive check (:func:`posterior_predictive_check`, :func:`calibrate_ppc`): a curve
  the family cannot produce is flagged when its misfit to curves predicted from its own posterior
  samples, relative to the misfit of replicated data at those samples, exceeds what held-out
  simulations of the family reach (their 99th percentile, say).

Nothing here knows about hysteresis loops or the Ising model: the simulator enters only through
the training pairs and, for the predictive check, two callables.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import Field

from inverscope.core.config import StrictModel
from inverscope.core.errors import InverscopeError

_EPS = 1e-6


class PosteriorConfig(StrictModel):
    """Settings of the neural posterior estimator (sbi NPE with a normalizing flow)."""

    density_estimator: Literal["nsf", "maf", "mdn"] = "nsf"   # neural spline flow, masked autoregressive flow, mixture
    features: int = Field(24, ge=0)           # PCA components of the curve (0: the raw curve)
    hidden_features: int = Field(64, ge=1)
    num_transforms: int = Field(4, ge=1)
    batch_size: int = Field(512, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    max_epochs: int = Field(150, ge=1)
    stop_after_epochs: int = Field(10, ge=1)  # early stopping on the validation loss
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    num_samples: int = Field(200, ge=10)      # posterior samples per curve


@dataclass
class FitInfo:
    epochs: int
    wall_s: float
    best_validation_loss: float
    n_train: int


def _logit_box(theta: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    u = np.clip((theta - low) / (high - low), _EPS, 1 - _EPS)
    return np.log(u) - np.log1p(-u)


def _sigmoid_box(z: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return low + (high - low) / (1 + np.exp(-np.clip(z, -30.0, 30.0)))     # strictly inside, no overflow


class _NoTracking:
    """An sbi training tracker that records nothing (the default writes TensorBoard logs into ./sbi-logs)."""

    log_dir = None

    def log_metric(self, name, value, step=None):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_params(self, params):
        pass

    def add_figure(self, name, figure, step=None):
        pass

    def flush(self):
        pass


def _logistic_prior(d: int):
    """The uniform box pushed through the logit: independent standard logistic distributions."""
    from torch.distributions import Independent, SigmoidTransform, TransformedDistribution, Uniform

    return Independent(TransformedDistribution(Uniform(torch.zeros(d), torch.ones(d)), SigmoidTransform().inv), 1)


class AmortizedPosterior:
    """q(theta | curve) for parameters with a uniform box prior.

    Parameters
    ----------
    low, high : (d,) the prior box, in the parameters' own units
    names : parameter names (for tables)
    config : estimator settings
    """

    def __init__(self, low, high, names: tuple[str, ...] = (), config: PosteriorConfig | None = None):
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        if self.low.shape != self.high.shape or self.low.ndim != 1 or not np.all(self.high > self.low):
            raise InverscopeError(f"posterior: prior box needs low < high per parameter (got {self.low}, {self.high})")
        self.d = len(self.low)
        self.names = tuple(names) or tuple(f"theta{i}" for i in range(self.d))
        self.config = config or PosteriorConfig()

    # -- features ---------------------------------------------------------------------------
    def _fit_features(self, x: np.ndarray, seed: int) -> None:
        k = self.config.features
        self.steps_ = x.shape[1]
        if k == 0:
            self.pca_components_ = None
            return
        rng = np.random.default_rng(seed)
        sub = x[rng.choice(len(x), min(len(x), 20000), replace=False)]
        self.pca_mean_ = sub.mean(axis=0)
        _, s, vt = np.linalg.svd(sub - self.pca_mean_, full_matrices=False)
        k = min(k, len(s))
        self.pca_components_ = vt[:k]
        self.score_scale_ = np.maximum(s[:k] / np.sqrt(len(sub) - 1), 1e-12)

    def features(self, x) -> np.ndarray:
        """(n, features + 1) PCA scores / spread and log RMS residual, or the raw curve (n, steps)."""
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != self.steps_:
            raise InverscopeError(f"curves: got shape {x.shape}; this posterior takes (n, {self.steps_})")
        if self.pca_components_ is None:
            return x.astype(np.float32)
        c = x - self.pca_mean_
        scores = c @ self.pca_components_.T
        resid = np.sqrt(np.mean((c - scores @ self.pca_components_) ** 2, axis=1))
        return np.hstack([scores / self.score_scale_, np.log(resid + 1e-6)[:, None]]).astype(np.float32)

    # -- training and sampling ----------------------------------------------------------------
    def fit(self, theta, x, seed: int = 0) -> "AmortizedPosterior":
        """Train on simulated pairs: theta (n, d) inside the box, x (n, steps) curves."""
        from sbi.inference import NPE
        from sbi.neural_nets import posterior_nn

        theta, x = np.asarray(theta, np.float64), np.asarray(x, np.float64)
        if theta.ndim != 2 or theta.shape[1] != self.d or x.ndim != 2 or len(x) != len(theta):
            raise InverscopeError(f"fit: parameters {theta.shape} and curves {x.shape} must be (n, {self.d}) and (n, steps)")
        if np.any(theta < self.low) or np.any(theta > self.high):
            raise InverscopeError("fit: training parameters must lie inside the prior box")
        cfg = self.config
        t0 = time.perf_counter()
        self._fit_features(x, seed)
        feats = torch.as_tensor(self.features(x))
        z = torch.as_tensor(_logit_box(theta, self.low, self.high), dtype=torch.float32)
        kw = {"hidden_features": cfg.hidden_features}
        if cfg.density_estimator == "mdn":
            kw["num_components"] = 10
        else:
            kw["num_transforms"] = cfg.num_transforms
        with torch.random.fork_rng(), warnings.catch_warnings():
            # PCA scores of loops far out in the family have long tails; z-scoring them is what we want
            warnings.filterwarnings("ignore", message=".*extreme outliers.*")
            torch.manual_seed(seed)
            inference = NPE(prior=_logistic_prior(self.d), density_estimator=posterior_nn(cfg.density_estimator, **kw),
                            device="cpu", tracker=_NoTracking(), show_progress_bars=False)
            inference.append_simulations(z, feats)
            with contextlib.redirect_stdout(io.StringIO()):             # sbi prints "converged after N epochs"
                self.net_ = inference.train(training_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                                            validation_fraction=cfg.validation_fraction,
                                            stop_after_epochs=cfg.stop_after_epochs, max_num_epochs=cfg.max_epochs,
                                            show_train_summary=False)
        self.net_.eval()
        summ = inference._summary
        self.fit_ = FitInfo(int(summ["epochs_trained"][-1]), time.perf_counter() - t0,
                            float(summ["best_validation_loss"][-1]), len(theta))
        return self

    def sample(self, x, num_samples: int | None = None, seed: int = 0, batch: int = 256) -> np.ndarray:
        """Posterior samples (n_curves, num_samples, d), every one strictly inside the prior box."""
        n = num_samples or self.config.num_samples
        feats = torch.as_tensor(self.features(x))
        out = np.empty((len(feats), n, self.d))
        with torch.random.fork_rng(), torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*triangular_solve.*")      # inside the flow library
            torch.manual_seed(seed)
            for s in range(0, len(feats), batch):
                z = self.net_.sample((n,), condition=feats[s:s + batch])      # (n, batch, d)
                out[s:s + batch] = np.swapaxes(z.numpy().astype(np.float64), 0, 1)
        return _sigmoid_box(out, self.low, self.high)


# -- summaries and calibration -----------------------------------------------------------------

def summarize(samples: np.ndarray, levels=(0.5, 0.9)) -> dict:
    """Posterior median and central credible intervals from samples (n, s, d).

    Returns {"median": (n, d), "interval": {level: ((n, d) lower, (n, d) upper)}}.
    """
    out = {"median": np.median(samples, axis=1), "interval": {}}
    for lev in levels:
        lo, hi = np.quantile(samples, [(1 - lev) / 2, (1 + lev) / 2], axis=1)
        out["interval"][float(lev)] = (lo, hi)
    return out


def central_coverage(theta, samples, levels=(0.5, 0.9), names: tuple[str, ...] = ()) -> dict:
    """Fraction of true parameters theta (n, d) inside the central credible interval of samples (n, s, d).

    A calibrated posterior gives ``level`` for every level and parameter. Returns
    {name: {str(level): fraction}}.
    """
    theta = np.asarray(theta)
    names = names or tuple(f"theta{i}" for i in range(theta.shape[1]))
    s = summarize(samples, levels)
    out = {n: {} for n in names}
    for lev, (lo, hi) in s["interval"].items():
        inside = (theta >= lo) & (theta <= hi)
        for i, n in enumerate(names):
            out[n][f"{lev:g}"] = float(inside[:, i].mean())
    return out


def sbc_ranks(theta, samples) -> np.ndarray:
    """(n, d) rank of each true parameter among its posterior samples (uniform on 0..s if calibrated)."""
    return np.sum(samples < np.asarray(theta)[:, None, :], axis=1)


# -- posterior-predictive check -----------------------------------------------------------------

@dataclass
class PPCResult:
    """Per curve: misfit to its posterior-predictive, the misfit expected of the family's own data, the flag."""

    discrepancy: np.ndarray          # (n,) mean RMSE of the curve to curves predicted from its posterior samples
    expected: np.ndarray             # (n,) RMS misfit expected of a curve of the family (replicas and posterior spread)
    ratio: np.ndarray                # (n,) RMS misfit / expected (about 1 for a curve of the family)
    pvalue: np.ndarray               # (n,) fraction of replicated RMSEs >= the curve's mean RMSE
    threshold: float                 # the ratio above which a curve is flagged (nan: per-curve replicate quantile)
    flagged: np.ndarray              # (n,) bool: the family does not produce this curve
    best_rmse: np.ndarray            # (n,) smallest RMSE over the predicted curves
    best_theta: np.ndarray           # (n, d) the posterior sample giving it


def posterior_predictive_check(x, samples, predict: Callable[[np.ndarray], np.ndarray],
                               replicate: Callable[[np.ndarray, np.random.Generator], np.ndarray],
                               draws: int = 32, replicas: int = 2, threshold: float | None = None,
                               quantile: float = 0.99, seed: int = 0, batch: int = 256) -> PPCResult:
    """Is each curve x[i] something its posterior would produce?

    For K = ``draws`` posterior samples theta_k of curve i, the predicted (noise-free) curves
    c_k = predict(theta_k) give the curve's misfits D_k = RMSE(x_i, c_k). Replicated data
    r = replicate(theta_k, rng) at the same samples (``replicas`` per sample) give the misfits that
    data from the family at those parameters have, RMSE(r, c_k): noise and simulator randomness.
    A curve of the family also differs from the predictions by the posterior's spread: for a
    calibrated posterior the true parameters are like one more sample, so E[D_k^2] is about
    E[RMSE(r, c_k)^2] + E[RMSE(c_k, c_k')^2] / 2 (k' another sample). The statistic is
    ``ratio = sqrt(mean_k D_k^2 / that)``: about 1 for a curve of the family whatever its noise
    level or posterior width, large for a curve the family cannot make.

    An amortized posterior is not exactly the true one, so the flag level is calibrated on
    held-out simulations: pass ``threshold=calibrate_ppc(heldout_result, 0.99)``. Without a
    threshold, a curve is flagged when its mean misfit exceeds the ``quantile`` of its replicas'
    misfits (the classical check, Gelman, Meng & Stern 1996; strict, since it ignores the spread).

    Parameters
    ----------
    x : (n, steps) curves
    samples : (n, s, d) posterior samples (s >= draws)
    predict : theta (m, d) -> (m, steps) noise-free curves
    replicate : (theta (m, d), rng) -> (m, steps) curves as the simulator and its noise give them,
        independent of the realization ``predict`` returns
    draws, replicas : posterior samples used per curve, replicated curves per sample
    threshold : flag curves whose ratio exceeds it (see above)
    quantile : the per-curve level used when ``threshold`` is None

    Returns
    -------
    PPCResult (RMSEs in the curves' units)
    """
    x = np.asarray(x, np.float64)
    n, s, d = samples.shape
    k = min(draws, s)
    rng = np.random.default_rng(seed)
    disc, expd, ratio, pval, qrep, best = (np.empty(n) for _ in range(6))
    best_t = np.empty((n, d))
    for b0 in range(0, n, batch):
        sl = slice(b0, min(n, b0 + batch))
        m = sl.stop - sl.start
        th = samples[sl, :k].reshape(-1, d)
        c = predict(th).reshape(m, k, -1)
        d_obs = np.sqrt(np.mean((x[sl, None, :] - c) ** 2, axis=2))                # (m, k)
        d_rep = np.concatenate([np.sqrt(np.mean((replicate(th, rng).reshape(m, k, -1) - c) ** 2, axis=2))
                                for _ in range(replicas)], axis=1)                  # (m, k * replicas)
        d_pair = np.sqrt(np.mean((c - np.roll(c, 1, axis=1)) ** 2, axis=2))        # (m, k) between samples
        disc[sl] = d_obs.mean(axis=1)
        ms_obs = np.mean(d_obs ** 2, axis=1)
        expd[sl] = np.sqrt(np.mean(d_rep ** 2, axis=1) + 0.5 * np.mean(d_pair ** 2, axis=1))
        ratio_sl = np.sqrt(ms_obs) / np.maximum(expd[sl], 1e-12)
        ratio[sl] = ratio_sl
        qrep[sl] = np.quantile(d_rep, quantile, axis=1)
        pval[sl] = np.mean(d_rep >= disc[sl, None], axis=1)
        j = np.argmin(d_obs, axis=1)
        best[sl] = d_obs[np.arange(m), j]
        best_t[sl] = samples[sl, :k][np.arange(m), j]
    flagged = disc > qrep if threshold is None else ratio > threshold
    return PPCResult(disc, expd, ratio, pval, float("nan") if threshold is None else float(threshold), flagged,
                     best, best_t)


def calibrate_ppc(reference: PPCResult, quantile: float = 0.99) -> float:
    """Flag level of the misfit ratio: its `quantile` over curves simulated from the family (held out)."""
    return float(np.quantile(reference.ratio, quantile))
