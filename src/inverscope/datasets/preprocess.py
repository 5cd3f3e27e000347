"""Cleaning and standardizing of switching loops (Agar et al. 2019 preprocessing).

The published preprocessing of band-excitation piezoresponse loops is, in order:

1. non-finite values become NaN and are interpolated linearly along the voltage axis
   (values beyond the first/last finite point are held constant);
2. Savitzky-Golay outlier removal: per loop, fit ``savgol_filter`` (window 7, order 3),
   set the 3 points with the largest |residual| to NaN and interpolate again. The data
   themselves are not smoothed; only the outliers are replaced;
3. standardization with one global mean and one global standard deviation.

Resonance loops additionally have values outside a physical range set to NaN first
(:func:`range_filter`).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter

from inverscope.core.errors import InverscopeError

__all__ = [
    "Standardizer",
    "interpolate_nonfinite",
    "published_preprocessing",
    "range_filter",
    "savgol_outliers",
]


def _interp_1d(y: np.ndarray) -> np.ndarray:
    good = np.isfinite(y)
    if good.all():
        return y
    if not good.any():
        raise InverscopeError("interpolate_nonfinite: a loop has no finite values; drop it before cleaning")
    x = np.arange(y.size)
    out = y.copy()
    out[~good] = np.interp(x[~good], x[good], y[good])  # np.interp holds the edge values
    return out


def interpolate_nonfinite(loops: np.ndarray, axis: int = -1) -> np.ndarray:
    """Replace NaN/Inf by linear interpolation along ``axis``; edge values are held.

    Returns a new float64 array of the same shape. A loop with no finite value is an error.
    """
    arr = np.asarray(loops, dtype=np.float64)
    moved = np.moveaxis(arr, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1]).copy()
    bad_rows = np.nonzero(~np.isfinite(flat).all(axis=1))[0]
    for r in bad_rows:
        flat[r] = _interp_1d(flat[r])
    return np.moveaxis(flat.reshape(moved.shape), -1, axis)


def savgol_outliers(loops: np.ndarray, window: int = 7, order: int = 3, n_outliers: int = 3) -> np.ndarray:
    """Replace, per loop (last axis), the ``n_outliers`` points farthest from a Savitzky-Golay fit.

    Those points are set to NaN and linearly re-interpolated; all other values are unchanged.
    Non-finite input values are interpolated first.
    """
    arr = interpolate_nonfinite(loops, axis=-1)
    steps = arr.shape[-1]
    if window > steps or window <= order:
        raise InverscopeError(f"savgol_outliers: window {window} must exceed order {order} and fit {steps} steps")
    if not 0 <= n_outliers < steps:
        raise InverscopeError(f"savgol_outliers: n_outliers {n_outliers} must be in [0, {steps})")
    if n_outliers == 0:
        return arr
    flat = arr.reshape(-1, steps).copy()
    fit = savgol_filter(flat, window, order, axis=-1)
    resid = np.abs(flat - fit)
    idx = np.argpartition(resid, -n_outliers, axis=-1)[:, -n_outliers:]
    np.put_along_axis(flat, idx, np.nan, axis=-1)
    return interpolate_nonfinite(flat, axis=-1).reshape(arr.shape)


def range_filter(loops: np.ndarray, low: float, high: float) -> np.ndarray:
    """Set values outside [low, high] (and non-finite values) to NaN; returns a float64 copy."""
    if not low < high:
        raise InverscopeError(f"range_filter: low {low} must be below high {high}")
    arr = np.array(loops, dtype=np.float64, copy=True)
    with np.errstate(invalid="ignore"):
        arr[~((arr >= low) & (arr <= high))] = np.nan
    return arr


class Standardizer:
    """One global mean and standard deviation over all values (not per step, not per loop)."""

    def __init__(self, mean: float | None = None, std: float | None = None):
        self.mean = None if mean is None else float(mean)
        self.std = None if std is None else float(std)

    @property
    def fitted(self) -> bool:
        return self.mean is not None and self.std is not None

    def fit(self, loops: np.ndarray) -> Standardizer:
        arr = np.asarray(loops, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise InverscopeError("Standardizer.fit: data contain NaN/Inf; clean them first")
        std = float(arr.std())
        if not std > 0:
            raise InverscopeError("Standardizer.fit: data have zero spread")
        self.mean, self.std = float(arr.mean()), std
        return self

    def _check(self) -> None:
        if not self.fitted:
            raise InverscopeError("Standardizer: call fit (or from_dict) before transform")

    def transform(self, loops: np.ndarray) -> np.ndarray:
        self._check()
        return (np.asarray(loops, dtype=np.float64) - self.mean) / self.std

    def fit_transform(self, loops: np.ndarray) -> np.ndarray:
        return self.fit(loops).transform(loops)

    def inverse_transform(self, normalized: np.ndarray) -> np.ndarray:
        self._check()
        return np.asarray(normalized, dtype=np.float64) * self.std + self.mean

    def to_dict(self) -> dict:
        self._check()
        return {"kind": "global_standardizer", "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data: dict) -> Standardizer:
        try:
            mean, std = float(data["mean"]), float(data["std"])
        except (KeyError, TypeError, ValueError):
            raise InverscopeError("Standardizer.from_dict: expected a mapping with numeric 'mean' and 'std'") from None
        if not std > 0:
            raise InverscopeError(f"Standardizer.from_dict: std must be positive (got {std})")
        return cls(mean, std)

    def __repr__(self) -> str:
        return f"Standardizer(mean={self.mean!r}, std={self.std!r})"


def published_preprocessing(
    loops: np.ndarray, resonance_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, Standardizer]:
    """Agar et al. (2019) preprocessing: (range filter), interpolate, SG outliers, standardize.

    ``loops`` is (..., steps) with voltage along the last axis (e.g. (60, 60, 96) or
    (3600, 96)). Returns the normalized loops as (n, steps) float64 and the fitted
    :class:`Standardizer` (save its ``to_dict()`` with a model to undo the scaling).
    """
    arr = np.asarray(loops, dtype=np.float64)
    if arr.ndim < 2:
        raise InverscopeError(f"published_preprocessing: expected (..., steps) loops, got shape {arr.shape}")
    arr = arr.reshape(-1, arr.shape[-1])
    if resonance_range is not None:
        arr = range_filter(arr, *resonance_range)
    arr = interpolate_nonfinite(arr, axis=-1)
    arr = savgol_outliers(arr, window=7, order=3, n_outliers=3)
    scaler = Standardizer().fit(arr)
    return scaler.transform(arr), scaler
