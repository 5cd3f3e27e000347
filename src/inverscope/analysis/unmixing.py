"""Linear unmixing of spectral cubes: S(x) = sum_i a_i(x) w_i + noise.

With *known* end members ``w_i`` (reference spectra, or the mean spectra of labeled regions) the
coefficients ``a_i(x) >= 0`` are found per pixel by non-negative least squares, and the fit is
judged by a residual map and a reduced chi^2 map. Without references, PCA and NMF find the
components from the data themselves (loadings and maps).

Noise model for chi^2
---------------------
``chi2 = sum_c (S_c - fit_c)^2 / sigma_c^2 / (channels - k)`` per pixel. ``sigma`` is given
(scalar, per channel or per element; :func:`counting_noise_sigma` gives the Poisson +
read-noise value for counted spectra) or, when not given, estimated per pixel from the data
themselves (not from the fit residual, so a poor model shows up as chi^2 >> 1): for white noise
of variance sigma^2 the second difference ``S[c-1] - 2 S[c] + S[c+1]`` has variance
``6 sigma^2``, while a smooth signal contributes little to it. The spread of the second
difference is taken robustly (1.4826 x median absolute deviation, which ignores the few channels
at sharp edges), so ``sigma = 1.4826 MAD(diff2) / sqrt(6)``. One sigma per pixel: for counted
spectra, whose noise grows with the signal, prefer :func:`counting_noise_sigma`; on coarsely
sampled curves whose curvature is comparable to the noise the rule overestimates sigma
(chi^2 < 1).

NMF shift rule
--------------
NMF needs non-negative data: when the cube has negative values, the global minimum is
subtracted first (``shift = min(0, cube.min())``, data used = ``cube - shift``) and the shift is
recorded; loadings then describe the shifted data. Non-negative data are used as they are.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls
from sklearn.decomposition import NMF, PCA
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from inverscope.core.errors import InverscopeError

_MAD_TO_STD = 1.482602218505602  # 1 / Phi^-1(3/4): MAD of a normal variable -> its std
_SMALL_TABLE = 2 ** 20           # elements below which NMF runs its BLAS calls on one thread


@dataclass
class UnmixResult:
    """Per-pixel NNLS unmixing of a cube of shape (..., channels) with k end members.

    Attributes
    ----------
    coefficients : ndarray
        (..., k) non-negative abundance of each end member [units of the end members' scale].
    fitted : ndarray
        (..., channels) model spectrum ``coefficients @ endmembers`` [data units].
    residual : ndarray
        (...,) root-mean-square residual over channels [data units].
    chi2 : ndarray
        (...,) reduced chi^2: ``sum((S - fit)^2 / sigma^2) / (channels - k)`` [dimensionless].
    sigma : ndarray
        The noise standard deviation used, broadcastable to the cube [data units].
    sigma_estimated : bool
        True when sigma came from the second-difference rule rather than the caller.
    """

    coefficients: np.ndarray
    fitted: np.ndarray
    residual: np.ndarray
    chi2: np.ndarray
    sigma: np.ndarray
    sigma_estimated: bool


@dataclass
class Decomposition:
    """Components found from the data (PCA or NMF) for a cube of shape (..., channels).

    Attributes
    ----------
    loadings : ndarray
        (n, channels) component spectra.
    maps : ndarray
        (..., n) per-pixel scores (PCA) or weights (NMF).
    mean : ndarray
        (channels,) mean spectrum removed before PCA (zeros for NMF).
    explained_variance_ratio : ndarray or None
        (n,) PCA only, in decreasing order.
    reconstruction_error : float or None
        NMF only: Frobenius norm of (data - shift) - maps @ loadings [data units].
    mse : float
        Mean squared reconstruction error per element [data units^2].
    shift : float
        Constant subtracted before NMF (0 for PCA and for non-negative data).
    converged : bool
        False when NMF stopped at its iteration limit (PCA: always True).
    """

    loadings: np.ndarray
    maps: np.ndarray
    mean: np.ndarray
    explained_variance_ratio: np.ndarray | None
    reconstruction_error: float | None
    mse: float
    shift: float = 0.0
    converged: bool = True


def _finite(arr: np.ndarray, what: str) -> None:
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise InverscopeError(f"{what} has {bad} non-finite values (NaN or Inf); clean or interpolate them first")


def as_cube(cube, what: str = "cube") -> np.ndarray:
    """`cube` as float64 (..., channels) with at least 2 channels and only finite values."""
    arr = np.asarray(cube, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[-1] < 2 or arr.size == 0:
        raise InverscopeError(f"{what} has shape {arr.shape}; expected (..., channels) with at least 2 channels")
    _finite(arr, what)
    return arr


def check_endmembers(endmembers, channels: int) -> np.ndarray:
    """Validate end members against a cube with `channels` channels; returns (k, channels) float64.

    Raises
    ------
    InverscopeError
        Wrong dimensionality or length, non-finite values, a zero-norm end member, or
        ``k >= channels`` (no degrees of freedom left for chi^2).
    """
    w = np.asarray(endmembers, dtype=np.float64)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[0] == 0:
        raise InverscopeError(f"end members have shape {w.shape}; expected (k, channels)")
    if w.shape[1] != channels:
        raise InverscopeError(f"end members have {w.shape[1]} channels but the cube has {channels}")
    _finite(w, "end members")
    if w.shape[0] >= channels:
        raise InverscopeError(f"got {w.shape[0]} end members for {channels} channels; "
                              "unmixing needs fewer end members than channels")
    norms = np.linalg.norm(w, axis=1)
    if (norms == 0).any():
        raise InverscopeError(f"end member {int(np.argmin(norms))} has zero norm; every end member needs a signal")
    return w


def counting_noise_sigma(counts, read_noise: float = 0.0) -> np.ndarray:
    """Noise of counted spectra: ``sigma = sqrt(max(counts, 1) + read_noise^2)`` [counts].

    Poisson variance equals the mean; the observed counts stand in for it (floored at one count
    so empty channels keep a finite weight), plus Gaussian detector read noise [counts].
    """
    if read_noise < 0:
        raise InverscopeError(f"read_noise: got {read_noise}; must be >= 0 counts")
    return np.sqrt(np.maximum(np.asarray(counts, dtype=np.float64), 1.0) + float(read_noise) ** 2)


def estimate_noise_sigma(cube) -> np.ndarray:
    """Per-pixel white-noise sigma from the second difference along channels.

    ``sigma = 1.4826 * MAD(S[c-1] - 2 S[c] + S[c+1]) / sqrt(6)``; needs at least 3 channels.

    Parameters
    ----------
    cube : array_like
        (..., channels) spectra [data units].

    Returns
    -------
    ndarray
        (...,) sigma [data units]; floored at a tiny positive value for noise-free data.
    """
    arr = as_cube(cube)
    if arr.shape[-1] < 3:
        raise InverscopeError(f"noise estimate needs at least 3 channels; the cube has {arr.shape[-1]}")
    d2 = np.diff(arr, n=2, axis=-1)
    mad = np.median(np.abs(d2 - np.median(d2, axis=-1, keepdims=True)), axis=-1)
    sigma = _MAD_TO_STD * mad / np.sqrt(6.0)
    floor = 1e-12 * max(float(np.abs(arr).max()), 1e-300)
    return np.maximum(sigma, floor)


def _sigma_array(noise_sigma, arr: np.ndarray) -> tuple[np.ndarray, bool]:
    if noise_sigma is None:
        return estimate_noise_sigma(arr)[..., None], True
    s = np.asarray(noise_sigma, dtype=np.float64)
    if s.ndim > 0 and s.shape not in ((arr.shape[-1],), arr.shape):
        raise InverscopeError(f"noise_sigma has shape {s.shape}; expected a scalar, ({arr.shape[-1]},) "
                              f"per channel or {arr.shape} like the cube")
    _finite(s, "noise_sigma")
    if (s <= 0).any():
        raise InverscopeError(f"noise_sigma: got minimum {float(s.min())}; every sigma must be > 0")
    return s, False


def nnls_unmix(cube, endmembers, noise_sigma=None) -> UnmixResult:
    """Non-negative least-squares unmixing with known end members, pixel by pixel.

    Solves ``min ||S(x) - a(x) @ W||^2`` subject to ``a(x) >= 0`` for every pixel with
    :func:`scipy.optimize.nnls`, the Lawson-Hanson active-set solver: it is the reference
    algorithm for this problem (exact at convergence, no step size or iteration count to tune),
    and with a few end members each pixel solves in microseconds. The fit is unweighted;
    ``noise_sigma`` enters only the chi^2 map.

    Parameters
    ----------
    cube : array_like
        (..., channels) spectra [data units].
    endmembers : array_like
        (k, channels) reference spectra, ``k < channels`` [data units per unit coefficient].
        End members may be signed (e.g. hysteresis loops); only the coefficients are constrained.
    noise_sigma : float or array_like, optional
        Noise standard deviation [data units]: scalar, (channels,), or the cube's shape. None:
        estimated per pixel by the second-difference rule (see the module docstring).

    Returns
    -------
    UnmixResult

    Raises
    ------
    InverscopeError
        Non-finite data, end members of the wrong length, zero-norm end members, k >= channels,
        or a sigma of the wrong shape or not positive.
    """
    arr = as_cube(cube)
    w = check_endmembers(endmembers, arr.shape[-1])
    sigma, estimated = _sigma_array(noise_sigma, arr)
    flat = arr.reshape(-1, arr.shape[-1])
    a_mat = np.ascontiguousarray(w.T)
    coef = np.empty((len(flat), len(w)))
    for i, spectrum in enumerate(flat):
        coef[i] = nnls(a_mat, spectrum)[0]
    coef = coef.reshape(*arr.shape[:-1], len(w))
    fitted = coef @ w
    resid = arr - fitted
    dof = arr.shape[-1] - len(w)
    chi2 = np.sum((resid / sigma) ** 2, axis=-1) / dof
    rms = np.sqrt(np.mean(resid ** 2, axis=-1))
    return UnmixResult(coef, fitted, rms, chi2, sigma, estimated)


def class_mean_spectra(cube, mask, n_classes: int | None = None) -> np.ndarray:
    """Mean spectrum of the pixels of each class: (n_classes, channels).

    Parameters
    ----------
    cube : array_like
        (..., channels) spectra.
    mask : array_like
        Integer labels of shape ``cube.shape[:-1]``; -1 = unlabeled, classes 0..n_classes-1.
    n_classes : int, optional
        Number of classes (default: ``mask.max() + 1``); each needs at least one pixel.
    """
    arr = as_cube(cube)
    m = np.asarray(mask)
    if m.shape != arr.shape[:-1]:
        raise InverscopeError(f"mask has shape {m.shape} but the cube's grid is {arr.shape[:-1]}")
    n = int(m.max()) + 1 if n_classes is None else int(n_classes)
    out = np.empty((n, arr.shape[-1]))
    for c in range(n):
        sel = m == c
        if not sel.any():
            raise InverscopeError(f"mask: class {c} has no pixel; each class needs at least one")
        out[c] = arr[sel].mean(axis=0)
    return out


def _check_n(n: int, flat: np.ndarray, method: str) -> None:
    limit = min(flat.shape)
    if not 1 <= int(n) <= limit:
        raise InverscopeError(f"{method} components: got {n}; allowed 1..{limit} "
                              f"(min of {flat.shape[0]} pixels and {flat.shape[1]} channels)")


def pca_decomposition(cube, n: int, seed: int = 0) -> Decomposition:
    """PCA with `n` components of the spectra of a cube (scikit-learn).

    Parameters
    ----------
    cube : array_like
        (..., channels) spectra [data units].
    n : int
        Components, 1 <= n <= min(pixels, channels).
    seed : int
        ``random_state`` of the randomized solvers (the exact solver ignores it).

    Returns
    -------
    Decomposition
        Loadings (n, channels), score maps (..., n), the mean spectrum and the explained
        variance ratio in decreasing order.
    """
    arr = as_cube(cube)
    flat = arr.reshape(-1, arr.shape[-1])
    _check_n(n, flat, "PCA")
    p = PCA(n_components=int(n), random_state=seed)
    scores = p.fit_transform(flat)
    rec = p.inverse_transform(scores)
    return Decomposition(p.components_.copy(), scores.reshape(*arr.shape[:-1], int(n)), p.mean_.copy(),
                         p.explained_variance_ratio_.copy(), None, float(np.mean((rec - flat) ** 2)))


def nmf_decomposition(cube, n: int, seed: int = 0, max_iter: int = 1000) -> Decomposition:
    """NMF with `n` components (scikit-learn, nndsvda start), after the shift rule.

    Parameters
    ----------
    cube : array_like
        (..., channels) spectra [data units]; shifted by ``min(0, cube.min())`` so that they are
        non-negative (see the module docstring).
    n : int
        Components, 1 <= n <= min(pixels, channels).
    seed : int
        ``random_state`` of NMF.
    max_iter : int
        Iteration limit of the coordinate-descent solver.

    The shifted data are divided by their root-mean-square before the fit and the loadings
    multiplied back, so the solver sees O(1) numbers whatever the data units: scikit-learn's
    NNDSVD start zeroes entries below an absolute 1e-6, which on raw piezoresponse (~1e-4)
    left the solver at its iteration limit. The weights are therefore dimensionless.

    Returns
    -------
    Decomposition
        Loadings (n, channels) of the shifted data [data units], weight maps (..., n), the Frobenius
        reconstruction error, the per-element MSE, the shift and whether the solver converged
        (scikit-learn's convergence warning is recorded there instead of printed).
    """
    arr = as_cube(cube)
    flat = arr.reshape(-1, arr.shape[-1])
    _check_n(n, flat, "NMF")
    shift = float(min(0.0, flat.min()))
    data = flat - shift
    scale = float(np.sqrt(np.mean(data ** 2))) or 1.0   # fit on O(1) numbers (see the docstring)
    model = NMF(n_components=int(n), init="nndsvda", max_iter=int(max_iter), random_state=seed)
    # small tables: BLAS threads cost more than they give (measured 0.4 s on one thread vs 1.3-5.7 s
    # on two for 3600 x 96 loops on a 2-core machine, the slow end with another process busy)
    threads = 1 if flat.size < _SMALL_TABLE else None
    with warnings.catch_warnings(), threadpool_limits(limits=threads, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        weights = model.fit_transform(data / scale)
    loadings = model.components_ * scale
    rec = weights @ loadings + shift
    return Decomposition(loadings, weights.reshape(*arr.shape[:-1], int(n)), np.zeros(arr.shape[-1]), None,
                         float(model.reconstruction_err_) * scale, float(np.mean((rec - flat) ** 2)), shift,
                         bool(model.n_iter_ < int(max_iter)))
