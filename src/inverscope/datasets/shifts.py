"""Domain shifts of simulated 4D-STEM patterns and unsupervised scores of the domain gap.

Issue 13 (Martinc et al., arXiv:2603.15582) measures the gap between training and test data
without real data: train on one condition, test on one shift at a time. Some shifts are
re-simulations (thickness, phonons, voltage: not here); the others are applied to simulated
patterns the way a microscope does, by :func:`apply_shift` with a :class:`ShiftSpec`, in this order:

1. geometry: a detector rotation about the pattern centre, then a descan shift of the whole
   pattern (fixed, plus a linear ramp over the scan), both in one interpolation;
2. dose: Poisson counts at ``dose_e_per_pattern`` electrons for the whole input pattern, divided
   back by the same scale so the result stays in the input's intensity units;
3. detector blur: a Gaussian point spread of ``blur_sigma_px`` (the MTF; the sum is kept);
4. background: a constant offset per pixel.

:data:`SHIFT_GRID` names the standard shifts. :func:`gap_score` is an unsupervised distance between
train and test features (MMD, Fréchet or kNN) and :func:`rank_agreement` says how well such scores
rank the measured accuracy drops (Spearman and Kendall).

Conventions (as :mod:`inverscope.datasets.degrade`): ``(row, col)`` pixel coordinates, row 0 at
the top; the pattern centre (zero angle of a simulated pattern) is ``(ky // 2, kx // 2)``; a
positive rotation turns the pattern counter-clockwise as displayed with row 0 on top (``numpy.rot90``
for +90 deg on an odd-sized pattern); a descan ``(drow, dcol)`` moves the pattern content by
``+drow`` rows (down) and ``+dcol`` columns (right). The shift at scan position ``(i, j)`` (row-major
flat index ``i * cols + j``) is ``descan_px + (i - (rows - 1) / 2) * ramp[0] + (j - (cols - 1) / 2) * ramp[1]``
with ``ramp = descan_ramp_px``: the ramp is measured from the scan centre, so ``descan_px`` is the
mean shift over the scan. Randomness: pattern ``k`` draws from ``numpy.random.default_rng([seed, k])``,
so the same seed gives the same bytes whatever the chunk size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import linalg, ndimage as ndi, stats

from inverscope.core.config import StrictModel, validate
from inverscope.core.errors import InverscopeError, field_error
from inverscope.datasets.degrade import regrid


class ShiftSpec(StrictModel):
    """One microscope-like shift of simulated patterns (all zero = the identity)."""

    descan_px: tuple[float, float] = Field((0.0, 0.0), description="(row, col) shift of the whole pattern [px]; "
                                           "+row moves the content down, +col to the right")
    descan_ramp_px: tuple[tuple[float, float], tuple[float, float]] = Field(
        ((0.0, 0.0), (0.0, 0.0)),
        description="extra (row, col) shift per scan step: (per step along scan rows (y), per step along scan "
                    "columns (x)) [px/step], measured from the scan centre")
    detector_rotation_deg: float = Field(0.0, description="counter-clockwise rotation as displayed about "
                                         "(ky // 2, kx // 2) [deg]")
    dose_e_per_pattern: float | None = Field(None, gt=0, description="electrons in the whole input pattern; "
                                             "null = noiseless")
    blur_sigma_px: float = Field(0.0, ge=0, description="Gaussian detector blur sigma [px]")
    background_fraction: float = Field(0.0, ge=0, description="constant offset per pixel, as a fraction of the "
                                       "input pattern's mean pixel value (adds this fraction of its total)")
    seed: int = Field(0, ge=0, description="seed of the shot noise")

    @property
    def has_geometry(self) -> bool:
        return (any(self.descan_px) or any(self.descan_ramp_px[0]) or any(self.descan_ramp_px[1])
                or self.detector_rotation_deg != 0.0)

    @property
    def has_ramp(self) -> bool:
        return any(self.descan_ramp_px[0]) or any(self.descan_ramp_px[1])


def _grid() -> dict[str, ShiftSpec]:
    grid: dict[str, ShiftSpec] = {"none": ShiftSpec()}
    for d in (0.5, 1, 2, 4, 8):
        grid[f"descan_{d:g}px"] = ShiftSpec(descan_px=(d / math.sqrt(2), d / math.sqrt(2)))
    for a in (1, 2, 5):
        grid[f"rotation_{a:g}deg"] = ShiftSpec(detector_rotation_deg=a)
    for dose in (1e5, 1e4, 1e3):
        grid[f"dose_{dose:.0e}".replace("+0", "")] = ShiftSpec(dose_e_per_pattern=dose)
    for s in (0.5, 1):
        grid[f"blur_{s:g}px"] = ShiftSpec(blur_sigma_px=s)
    for b in (0.01, 0.05):
        grid[f"background_{b:g}"] = ShiftSpec(background_fraction=b)
    grid["descan_ramp_0.05px_per_step"] = ShiftSpec(descan_ramp_px=((0.05, 0.0), (0.0, 0.05)))
    return grid


#: Standard shifts by name (insertion order: ``none``, descan of 0.5-8 px along the diagonal (the
#: length of the vector is the name), rotations of 1, 2, 5 deg, doses of 1e5, 1e4, 1e3 e/pattern,
#: blurs of 0.5 and 1 px, backgrounds of 1 and 5 %, a descan ramp of 0.05 px per scan step).
SHIFT_GRID: dict[str, ShiftSpec] = _grid()


def _as_spec(spec: ShiftSpec | Mapping) -> ShiftSpec:
    if isinstance(spec, ShiftSpec):
        return spec
    if isinstance(spec, Mapping):
        return validate(ShiftSpec, dict(spec), source="shift")
    raise field_error("spec", type(spec).__name__, "must be a ShiftSpec or a mapping of its fields")


def _layout(patterns: np.ndarray, scan_shape, spec: ShiftSpec) -> tuple[int, tuple[int, int] | None]:
    """Number of patterns and the scan shape (None when unknown and not needed)."""
    if patterns.ndim not in (3, 4) or min(patterns.shape[-2:]) < 2:
        raise field_error("patterns", f"shape {patterns.shape}", "must be (n, ky, kx) or (rows, cols, ky, kx) "
                          "with ky, kx >= 2", InverscopeError)
    if not (np.issubdtype(patterns.dtype, np.floating) or np.issubdtype(patterns.dtype, np.integer)):
        raise field_error("patterns", f"dtype {patterns.dtype}", "must be real numbers", InverscopeError)
    n = int(np.prod(patterns.shape[:-2]))
    if patterns.ndim == 4:
        own = (int(patterns.shape[0]), int(patterns.shape[1]))
        if scan_shape is not None and tuple(int(s) for s in scan_shape) != own:
            raise field_error("scan_shape", tuple(scan_shape), f"must match the patterns' scan axes {own}",
                              InverscopeError)
        return n, own
    if scan_shape is None:
        if spec.has_ramp:
            raise field_error("scan_shape", None, "a descan ramp needs the scan shape (rows, cols) for (n, ky, kx) "
                              "patterns", InverscopeError)
        return n, None
    scan_shape = tuple(int(s) for s in scan_shape)
    if len(scan_shape) != 2 or min(scan_shape) < 1 or scan_shape[0] * scan_shape[1] != n:
        raise field_error("scan_shape", scan_shape, f"must be (rows, cols) with rows * cols = {n} patterns",
                          InverscopeError)
    return n, scan_shape


def descan_at(spec: ShiftSpec, scan_shape: tuple[int, int] | None, index: int) -> tuple[float, float]:
    """The (row, col) descan shift [px] of the pattern at row-major flat scan `index`."""
    dr, dc = spec.descan_px
    if scan_shape is not None and spec.has_ramp:
        i, j = divmod(int(index), scan_shape[1])
        si, sj = i - (scan_shape[0] - 1) / 2.0, j - (scan_shape[1] - 1) / 2.0
        (ar, ac), (br, bc) = spec.descan_ramp_px
        dr, dc = dr + si * ar + sj * br, dc + si * ac + sj * bc
    return float(dr), float(dc)


def iter_shifted(patterns: np.ndarray, spec: ShiftSpec | Mapping, *, scan_shape=None, chunk_size: int = 256,
                 order: Literal[1, 3] = 3) -> Iterator[tuple[slice, np.ndarray]]:
    """Shift patterns chunk by chunk: yields ``(flat slice, shifted chunk of shape (m, ky, kx))``.

    Only one chunk (and its float64 work copy) is in memory at a time, so `patterns` may be a
    ``numpy.memmap``. Arguments as :func:`apply_shift`; the chunk dtype is float64.
    """
    spec = _as_spec(spec)
    patterns = np.asarray(patterns) if not isinstance(patterns, np.ndarray) else patterns
    n, scan = _layout(patterns, scan_shape, spec)
    if order not in (1, 3):
        raise field_error("order", order, "allowed: 1 (bilinear), 3 (cubic spline)", InverscopeError)
    if int(chunk_size) < 1:
        raise field_error("chunk_size", chunk_size, "must be >= 1", InverscopeError)
    ky, kx = patterns.shape[-2:]
    flat = patterns.reshape(n, ky, kx)
    for start in range(0, n, int(chunk_size)):
        stop = min(n, start + int(chunk_size))
        chunk = np.array(flat[start:stop], dtype=np.float64)
        if not np.all(np.isfinite(chunk)):
            bad = start + int(np.argwhere(~np.isfinite(chunk).all(axis=(1, 2)))[0, 0])
            raise field_error("patterns", f"non-finite values in pattern {bad}", "must be finite", InverscopeError)
        totals = chunk.sum(axis=(1, 2))
        out = np.empty_like(chunk)
        for m in range(stop - start):
            img = chunk[m]
            if spec.has_geometry:
                # turned about (ky // 2, kx // 2) and moved by the descan, in one interpolation
                dr, dc = descan_at(spec, scan, start + m)
                img = regrid(img, 1.0, (ky, kx), 1.0, out_centre_px=(ky // 2 + dr, kx // 2 + dc),
                             rotation_deg=spec.detector_rotation_deg, order=order).astype(np.float64)
            if spec.dose_e_per_pattern is not None:
                if totals[m] <= 0:
                    raise field_error("patterns", f"pattern {start + m} sums to {totals[m]:.3g}",
                                      "needs a positive sum to set a dose", InverscopeError)
                scale = spec.dose_e_per_pattern / totals[m]
                rng = np.random.default_rng([spec.seed, start + m])
                img = rng.poisson(np.clip(img, 0, None) * scale) / scale
            out[m] = img
        if spec.blur_sigma_px > 0:
            out = ndi.gaussian_filter(out, (0.0, spec.blur_sigma_px, spec.blur_sigma_px), mode="reflect")
        if spec.background_fraction > 0:
            out += (spec.background_fraction * totals / (ky * kx))[:, None, None]
        yield slice(start, stop), out


def apply_shift(patterns: np.ndarray, spec: ShiftSpec | Mapping, *, scan_shape=None, chunk_size: int = 256,
                order: Literal[1, 3] = 3, out: np.ndarray | None = None) -> np.ndarray:
    """Apply one microscope-like shift to simulated patterns.

    Parameters
    ----------
    patterns : np.ndarray
        ``(n, ky, kx)`` or ``(rows, cols, ky, kx)`` patterns (finite, values proportional to intensity);
        may be a ``numpy.memmap``.
    spec : ShiftSpec or mapping
        The shift (a mapping is validated; a bad value raises :class:`~inverscope.core.errors.ConfigError`).
    scan_shape : (rows, cols), optional
        Row-major scan of ``(n, ky, kx)`` patterns; needed for a descan ramp. Taken from 4D patterns.
    chunk_size : int
        Patterns processed at a time (memory stays bounded by one chunk).
    order : 1 or 3
        Spline order of the geometry interpolation. Both conserve the total intensity and move the
        centroid by exactly the shift while the pattern stays on the detector (partition of unity and
        linear reproduction of B-splines); cubic keeps sub-pixel detail sharper but may undershoot 0
        (kept as is; the shot noise uses the rate clipped at 0).
    out : np.ndarray, optional
        Where to write (same shape; e.g. a writable memmap). Default: a new array of the input's float
        dtype (float64 for integer inputs).

    Returns
    -------
    np.ndarray
        The shifted patterns, same shape as `patterns`, in the input's intensity units (the dose step
        divides the Poisson counts by ``dose_e_per_pattern / pattern sum``: its mean is the noiseless
        pattern and its variance the pattern times ``pattern sum / dose``).
    """
    patterns = np.asarray(patterns) if not isinstance(patterns, np.ndarray) else patterns
    if out is None:
        dtype = patterns.dtype if np.issubdtype(patterns.dtype, np.floating) else np.float64
        out = np.empty(patterns.shape, dtype=dtype)
    elif out.shape != patterns.shape or not out.flags.c_contiguous or not out.flags.writeable:
        raise field_error("out", f"shape {out.shape}", f"must be a writable C-contiguous array of the patterns' shape "
                          f"{patterns.shape}", InverscopeError)
    flat_out = out.reshape(-1, *patterns.shape[-2:]) if patterns.ndim in (3, 4) else out
    for sl, chunk in iter_shifted(patterns, spec, scan_shape=scan_shape, chunk_size=chunk_size, order=order):
        flat_out[sl] = chunk
    return out


# ---------------------------------------------------------------- gap scores


def _features(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise field_error(name, f"shape {x.shape}", "must be (n, d) features with n >= 2", InverscopeError)
    if not np.all(np.isfinite(x)):
        raise field_error(name, "values", "must be finite", InverscopeError)
    return x


def _subsample(x: np.ndarray, n_max: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n_max else x[np.sort(rng.choice(len(x), n_max, replace=False))]


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.clip(d, 0, None)


def _mmd(x: np.ndarray, y: np.ndarray) -> float:
    dxx = _sq_dists(x, x)
    iu = np.triu_indices(len(x), 1)
    med = float(np.median(dxx[iu]))
    if med <= 0:
        med = float(np.mean(dxx[iu])) or 1.0
    g = 1.0 / (2.0 * med)            # k = exp(-d^2 / (2 sigma^2)), sigma = median train distance
    kxx, kyy, kxy = np.exp(-g * dxx), np.exp(-g * _sq_dists(y, y)), np.exp(-g * _sq_dists(x, y))
    n, m = len(x), len(y)
    return float((kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2.0 * kxy.mean())


def _frechet(x: np.ndarray, y: np.ndarray) -> float:
    mx, my = x.mean(0), y.mean(0)
    cx, cy = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    covmean = linalg.sqrtm(cx @ cy)
    if not np.all(np.isfinite(covmean)):          # singular product: regularize as pytorch-fid does
        eps = 1e-6 * np.eye(len(cx))
        covmean = linalg.sqrtm((cx + eps) @ (cy + eps))
    val = float(((mx - my) ** 2).sum() + np.trace(cx) + np.trace(cy) - 2.0 * np.trace(np.real(covmean)))
    return max(val, 0.0)


def _knn(x: np.ndarray, y: np.ndarray, k: int) -> float:
    from sklearn.neighbors import NearestNeighbors

    if len(x) <= k:
        raise field_error("k", k, f"must be < the number of train features ({len(x)})", InverscopeError)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
    d_train = nn.kneighbors(x, n_neighbors=k + 1)[0][:, 1:].mean()    # leave-one-out: drop the point itself
    d_test = nn.kneighbors(y, n_neighbors=k)[0].mean()
    if d_train <= 0:
        raise field_error("features_train", "duplicates", "need distinct points for the kNN scale", InverscopeError)
    return float(d_test / d_train - 1.0)


def gap_score(features_train, features_test, method: Literal["mmd", "frechet", "knn"] = "mmd", *,
              max_samples: int = 1000, k: int = 5, seed: int = 0) -> float:
    """Unsupervised distance between train and test features (0 = no gap; larger = farther).

    Methods:

    * ``"mmd"``: unbiased estimate of the squared maximum mean discrepancy with an RBF kernel
      ``exp(-|a - b|^2 / (2 s^2))``; ``s^2`` is the median squared pairwise distance of the *train*
      features (median heuristic on the reference set, so one train set scores every test set with
      the same kernel and the scores can be ranked). About 0 (either sign, by chance) for one
      distribution; at most 2.
    * ``"frechet"``: Fréchet distance between Gaussians fitted to the two sets,
      ``|mu_1 - mu_2|^2 + tr(C_1 + C_2 - 2 (C_1 C_2)^(1/2))`` (as FID), in squared feature units; >= 0,
      with a small positive bias of order ``d^2 / n`` for finite samples.
    * ``"knn"``: mean distance from each test point to its `k` nearest train points, divided by the
      same for train points (leave-one-out), minus 1: about 0 for one distribution, growing as test
      points leave the train support.

    Each set is first subsampled to at most `max_samples` points (seeded by `seed`).
    """
    x, y = _features(features_train, "features_train"), _features(features_test, "features_test")
    if x.shape[1] != y.shape[1]:
        raise field_error("features_test", f"{y.shape[1]} features", f"must match features_train ({x.shape[1]})",
                          InverscopeError)
    if int(max_samples) < 2:
        raise field_error("max_samples", max_samples, "must be >= 2", InverscopeError)
    rng = np.random.default_rng(seed)
    x, y = _subsample(x, int(max_samples), rng), _subsample(y, int(max_samples), rng)
    if method == "mmd":
        return _mmd(x, y)
    if method == "frechet":
        return _frechet(x, y)
    if method == "knn":
        if int(k) < 1:
            raise field_error("k", k, "must be >= 1", InverscopeError)
        return _knn(x, y, int(k))
    raise field_error("method", method, "allowed: mmd, frechet, knn", InverscopeError)


def rank_agreement(gap_scores: Sequence[float] | Mapping[str, float],
                   accuracy_drops: Sequence[float] | Mapping[str, float]) -> dict:
    """How well gap scores rank the measured accuracy drops: Spearman rho and Kendall tau (scipy).

    Two sequences in the same order, or two mappings with the same keys (e.g. names of
    :data:`SHIFT_GRID`). Returns ``{"spearman", "spearman_p", "kendall", "kendall_p", "n"}``; 1 for the
    same order, -1 for the reverse. At least 3 items, finite, neither constant.
    """
    if isinstance(gap_scores, Mapping) or isinstance(accuracy_drops, Mapping):
        if not (isinstance(gap_scores, Mapping) and isinstance(accuracy_drops, Mapping)):
            raise field_error("gap_scores", type(gap_scores).__name__, "and accuracy_drops must both be sequences "
                              "or both mappings", InverscopeError)
        if set(gap_scores) != set(accuracy_drops):
            diff = sorted(set(gap_scores) ^ set(accuracy_drops), key=str)
            raise field_error("accuracy_drops", f"keys differing in {diff}", "must have the keys of gap_scores",
                              InverscopeError)
        keys = list(gap_scores)
        gap_scores, accuracy_drops = [gap_scores[k] for k in keys], [accuracy_drops[k] for k in keys]
    g, a = np.asarray(gap_scores, dtype=np.float64), np.asarray(accuracy_drops, dtype=np.float64)
    if g.ndim != 1 or a.shape != g.shape:
        raise field_error("accuracy_drops", f"shape {a.shape}", f"must match gap_scores {g.shape} (1D)",
                          InverscopeError)
    if len(g) < 3:
        raise field_error("gap_scores", f"{len(g)} items", "need at least 3 to rank", InverscopeError)
    for name, v in (("gap_scores", g), ("accuracy_drops", a)):
        if not np.all(np.isfinite(v)):
            raise field_error(name, "values", "must be finite", InverscopeError)
        if np.all(v == v[0]):
            raise field_error(name, "constant values", "a rank correlation needs at least two different values",
                              InverscopeError)
    rho = stats.spearmanr(g, a)
    tau = stats.kendalltau(g, a)
    return {"spearman": float(rho.statistic), "spearman_p": float(rho.pvalue),
            "kendall": float(tau.statistic), "kendall_p": float(tau.pvalue), "n": int(len(g))}


__all__ = ["ShiftSpec", "SHIFT_GRID", "apply_shift", "iter_shifted", "descan_at", "gap_score", "rank_agreement"]
