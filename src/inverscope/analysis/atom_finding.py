"""Atom positions from heat maps or images, matching against a truth, and local chemistry.

Coordinates
-----------
``x`` is the column and ``y`` the row of an image, in pixels, with pixel *centres* at integer
coordinates (the pixel ``image[3, 7]`` is centred at ``x = 7, y = 3``). Ångström coordinates are
``x_px * pixel_size_angstrom`` (origin at the centre of pixel (0, 0)).

Functions
---------
``locate_atoms``
    Per-class heat maps (a U-Net's softmax output: one channel per atom class plus a background
    channel) -> a table of atoms: local maxima per class channel (``skimage.feature.peak_local_max``)
    above ``threshold``, merged across channels (a peak in two channels within ``min_distance_px``
    is one atom, of the class whose channel holds the most probability around it), refined to
    sub-pixel precision and cut at the image edge.
``classical_baseline``
    The non-learned comparison: Gaussian- or Laplacian-of-Gaussian-filtered image, peak finder,
    optional 2D-Gaussian refinement on the raw image.
``match_atoms``
    Optimal one-to-one matching (Hungarian) of predicted to true positions within a distance:
    precision, recall, F1, position errors and (with classes) a confusion matrix.
``neighbour_rings``, ``name_complexes``
    Neighbour counts by class within distance rings, and dopant-complex names (``Si1C3``) from them.
``cluster_unknown``
    Unsupervised grouping of per-atom descriptors (Gaussian mixture with BIC, or DBSCAN) to
    flag defect types that no class channel names.

Sub-pixel refinement
--------------------
``"centroid"``: the intensity-weighted centroid in a disc of radius ``window_px`` around the
current estimate, re-centred on the result until it moves less than 1e-4 px (at most 50 times).
The disc has a one-pixel linear ramp at its rim, so the weighted centroid is a continuous
function of the estimate and its fixed point is the centre of any blob symmetric about it; a
constant background then does not bias it (a single non-iterated centroid in a fixed integer
window is pulled towards the window centre by the truncated tails).
``"gaussian"``: a least-squares fit (``scipy.optimize.least_squares``) of
``A exp(-((x - x0)^2 + (y - y0)^2) / (2 s^2)) + B`` to the raw ``image`` (the heat map of the
atom's class when no image is given) in the square window of half-width ``window_px`` around
the centroid estimate, which also gives the blob width ``sigma_px`` and the standard errors
``x_err_px``, ``y_err_px`` from the Jacobian at the optimum. A fit that fails or leaves the
window keeps the centroid estimate (``fit_ok`` False).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.optimize import least_squares, linear_sum_assignment
from scipy.spatial import cKDTree

from inverscope.core.errors import InverscopeError

#: columns of every atom table, in order
ATOM_COLUMNS = ("x_px", "y_px", "x_angstrom", "y_angstrom", "class", "probability", "uncertainty",
                "sigma_px", "x_err_px", "y_err_px", "fit_ok")


# --------------------------------------------------------------------------- input checks

def _check_image(image, name: str = "image") -> np.ndarray:
    """A finite, non-constant 2D float array, or a one-line InverscopeError naming `name`."""
    a = np.asarray(image, dtype=float)
    if a.ndim != 2:
        raise InverscopeError(f"{name}: got shape {a.shape}; expected a 2D image (rows, columns)")
    if a.size == 0:
        raise InverscopeError(f"{name}: got an empty image of shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InverscopeError(f"{name}: contains {int(np.sum(~np.isfinite(a)))} NaN or infinite pixels; "
                              "fill or crop them first")
    if np.ptp(a) == 0:
        raise InverscopeError(f"{name}: is constant (every pixel {a.flat[0]!r}); nothing to locate")
    return a


def _check_maps(prob_maps, name: str = "prob_maps") -> np.ndarray:
    a = np.asarray(prob_maps, dtype=float)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.size == 0:
        raise InverscopeError(f"{name}: got shape {a.shape}; expected (n_channels, rows, columns) or (rows, columns)")
    if not np.all(np.isfinite(a)):
        raise InverscopeError(f"{name}: contains {int(np.sum(~np.isfinite(a)))} NaN or infinite values")
    return a


def _check_xy(xy, name: str) -> np.ndarray:
    a = np.asarray(xy, dtype=float)
    if a.size == 0:
        return np.zeros((0, 2))
    if a.ndim != 2 or a.shape[1] != 2:
        raise InverscopeError(f"{name}: got shape {a.shape}; expected (n_atoms, 2) positions (x, y)")
    if not np.all(np.isfinite(a)):
        raise InverscopeError(f"{name}: contains NaN or infinite positions")
    return a


# --------------------------------------------------------------------------- refinement

def _gauss_model(p, xx, yy):
    a, x0, y0, s, b = p
    return a * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s)) + b


def _fit_gaussian(img: np.ndarray, x: float, y: float, r: int, sigma0: float | None):
    """Fit a round 2D Gaussian + constant in the square window of half-width r around (x, y).

    Returns (x, y, sigma, x_err, y_err, ok); on failure the input position and NaNs, ok False.
    """
    h, w = img.shape
    cx, cy = int(round(x)), int(round(y))
    x0, x1, y0, y1 = max(0, cx - r), min(w, cx + r + 1), max(0, cy - r), min(h, cy + r + 1)
    patch = img[y0:y1, x0:x1]
    if patch.shape[0] < 3 or patch.shape[1] < 3:
        return x, y, np.nan, np.nan, np.nan, False
    yy, xx = np.mgrid[y0:y1, x0:x1]
    lo, hi = float(patch.min()), float(patch.max())
    amp = max(hi - lo, 1e-12)
    s0 = float(sigma0) if sigma0 else max(r / 2.0, 0.7)
    p0 = np.array([amp, x, y, s0, lo])
    lb = [0.0, x0 - 0.5, y0 - 0.5, 0.2, lo - amp]
    ub = [10 * amp, x1 - 0.5, y1 - 0.5, 2.0 * r + 2.0, hi + amp]
    p0 = np.clip(p0, np.array(lb) + 1e-9, np.array(ub) - 1e-9)
    fx_, fy_ = xx.ravel().astype(float), yy.ravel().astype(float)

    def jac(p):
        a, cx_, cy_, sg, _ = p
        dx, dy = fx_ - cx_, fy_ - cy_
        e = np.exp(-(dx * dx + dy * dy) / (2 * sg * sg))
        return np.stack([e, a * e * dx / sg ** 2, a * e * dy / sg ** 2, a * e * (dx * dx + dy * dy) / sg ** 3,
                         np.ones_like(e)], axis=1)
    try:
        res = least_squares(lambda p: (_gauss_model(p, xx, yy) - patch).ravel(), p0, bounds=(lb, ub), jac=jac,
                            x_scale=np.array([amp, 1.0, 1.0, 1.0, amp]), xtol=1e-12, ftol=1e-12, gtol=1e-12,
                            max_nfev=400)
    except (ValueError, np.linalg.LinAlgError):
        return x, y, np.nan, np.nan, np.nan, False
    a, fx, fy, fs, _ = res.x
    inside = abs(fx - x) <= r and abs(fy - y) <= r
    if not (res.success and inside and a > 0):
        return x, y, np.nan, np.nan, np.nan, False
    dof = max(patch.size - 5, 1)
    s2 = float(np.sum(res.fun ** 2)) / dof
    try:
        cov = np.linalg.pinv(res.jac.T @ res.jac) * s2
        ex, ey = float(np.sqrt(max(cov[1, 1], 0.0))), float(np.sqrt(max(cov[2, 2], 0.0)))
    except np.linalg.LinAlgError:
        ex = ey = np.nan
    return float(fx), float(fy), float(abs(fs)), ex, ey, True


def _centroids(img: np.ndarray, x: np.ndarray, y: np.ndarray, r: float, max_iter: int = 50,
               tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Iterated weighted centroids of `img` (clipped at 0) in soft discs of radius r, for many
    starting points (x, y) at once.

    Each step takes every point's patch of a zero-padded copy of ``img`` (pixels outside the
    image weigh nothing, as in the clipped window of the scalar version) large enough to hold the
    soft disc (weight ``clip(r + 0.5 - distance, 0, 1)``); points that moved less than ``tol``
    stop, and a point with nothing to weigh keeps its position.
    """
    x = np.asarray(x, float).copy()
    y = np.asarray(y, float).copy()
    if len(x) == 0:
        return x, y
    h, w = img.shape
    half = int(np.ceil(r + 1.5)) + 1
    pad = half + 1
    padded = np.pad(np.clip(img, 0.0, None), pad)
    off = np.arange(-half, half + 1)
    active = np.ones(len(x), bool)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        cx = np.clip(np.round(x[idx]).astype(int), -pad + half, w - 1 + pad - half)
        cy = np.clip(np.round(y[idx]).astype(int), -pad + half, h - 1 + pad - half)
        xx = cx[:, None] + off[None, :]                      # (n, k) image columns
        yy = cy[:, None] + off[None, :]                      # (n, k) image rows
        patch = padded[(yy + pad)[:, :, None], (xx + pad)[:, None, :]]  # (n, k, k)
        d = np.hypot(xx[:, None, :] - x[idx, None, None], yy[:, :, None] - y[idx, None, None])
        wgt = np.clip(r + 0.5 - d, 0.0, 1.0) * patch
        s = wgt.sum((1, 2))
        good = s > 0
        nx = np.where(good, (wgt * xx[:, None, :]).sum((1, 2)) / np.where(good, s, 1.0), x[idx])
        ny = np.where(good, (wgt * yy[:, :, None]).sum((1, 2)) / np.where(good, s, 1.0), y[idx])
        moved = np.hypot(nx - x[idx], ny - y[idx])
        x[idx], y[idx] = nx, ny
        active[idx] = good & (moved >= tol)
    return x, y


def _refine(peaks_yx: np.ndarray, centroid_maps: list[np.ndarray], fit_image: list[np.ndarray] | None,
            refine: str | None, window: int, sigma0: float | None):
    """Refine integer peaks (row, col); centroid_maps/fit_image are per-peak maps (lists of refs)."""
    n = len(peaks_yx)
    out = np.full((n, 5), np.nan)
    ok = np.zeros(n, bool)
    if n == 0:
        return out, ok
    out[:, 0] = peaks_yx[:, 1]
    out[:, 1] = peaks_yx[:, 0]
    if refine in ("centroid", "gaussian"):
        groups: dict[int, list[int]] = {}
        for i, m in enumerate(centroid_maps):  # the same map object for every atom of a class
            groups.setdefault(id(m), []).append(i)
        for members in groups.values():
            members = np.asarray(members)
            out[members, 0], out[members, 1] = _centroids(centroid_maps[members[0]], out[members, 0], out[members, 1],
                                                          float(window))
    if refine == "gaussian":
        for i in range(n):
            x, y, sig, ex, ey, ok[i] = _fit_gaussian(fit_image[i], out[i, 0], out[i, 1], window, sigma0)
            out[i] = (x, y, sig, ex, ey)
    return out, ok


def _table(xy_etc: np.ndarray, ok: np.ndarray, classes, prob, unc, pixel_size, shape, edge_px) -> pd.DataFrame:
    x, y = xy_etc[:, 0], xy_etc[:, 1]
    h, w = shape
    keep = (x >= edge_px - 0.5) & (x <= w - 0.5 - edge_px) & (y >= edge_px - 0.5) & (y <= h - 0.5 - edge_px)
    ps = np.nan if pixel_size is None else float(pixel_size)
    df = pd.DataFrame({"x_px": x, "y_px": y, "x_angstrom": x * ps, "y_angstrom": y * ps,
                       "class": np.asarray(classes, dtype=object) if len(classes) else np.zeros(0, dtype=object),
                       "probability": np.asarray(prob, float), "uncertainty": np.asarray(unc, float),
                       "sigma_px": xy_etc[:, 2], "x_err_px": xy_etc[:, 3], "y_err_px": xy_etc[:, 4],
                       "fit_ok": ok})
    df = df[keep].reset_index(drop=True)
    try:
        df["class"] = pd.to_numeric(df["class"])
    except (ValueError, TypeError):
        pass
    return df[list(ATOM_COLUMNS)]


def _edge(edge_px: float, edge_angstrom: float | None, pixel_size: float | None) -> float:
    if edge_px < 0:
        raise InverscopeError(f"edge_px: got {edge_px!r}; must be >= 0")
    if edge_angstrom is None:
        return float(edge_px)
    if pixel_size is None:
        raise InverscopeError(f"edge_angstrom: got {edge_angstrom!r} but no pixel_size_angstrom; "
                              "give the pixel size or edge_px")
    if edge_angstrom < 0:
        raise InverscopeError(f"edge_angstrom: got {edge_angstrom!r}; must be >= 0")
    return max(float(edge_px), float(edge_angstrom) / float(pixel_size))


def _check_common(min_distance_px, refine, pixel_size_angstrom, window_px):
    if int(min_distance_px) != min_distance_px or min_distance_px < 1:
        raise InverscopeError(f"min_distance_px: got {min_distance_px!r}; must be an integer >= 1")
    if refine not in (None, "none", "centroid", "gaussian"):
        raise InverscopeError(f"refine: got {refine!r}; allowed: 'centroid', 'gaussian', None")
    if pixel_size_angstrom is not None and not (np.isfinite(pixel_size_angstrom) and pixel_size_angstrom > 0):
        raise InverscopeError(f"pixel_size_angstrom: got {pixel_size_angstrom!r}; must be a positive number")
    window = max(2, int(np.ceil(min_distance_px / 2)) + 1) if window_px is None else int(window_px)
    if window < 1:
        raise InverscopeError(f"window_px: got {window_px!r}; must be >= 1")
    return window, (None if refine == "none" else refine)


def _peaks(m: np.ndarray, min_distance: int, threshold: float) -> np.ndarray:
    from skimage.feature import peak_local_max

    return peak_local_max(m, min_distance=int(min_distance), threshold_abs=float(threshold),
                          exclude_border=False).reshape(-1, 2)


# --------------------------------------------------------------------------- locate_atoms

def locate_atoms(prob_maps, *, threshold: float = 0.5, min_distance_px: int = 3, edge_px: float = 0.0,
                 refine: Literal["centroid", "gaussian"] | None = "centroid", image=None,
                 pixel_size_angstrom: float | None = None, uncertainty_maps=None,
                 background_channel: int | None = -1, class_names: Sequence | None = None,
                 edge_angstrom: float | None = None, window_px: int | None = None,
                 sigma_px: float | None = None) -> pd.DataFrame:
    """Atoms from per-class probability maps.

    Parameters
    ----------
    prob_maps : array (n_channels, rows, columns) or (rows, columns)
        Per-pixel class probabilities (e.g. the softmax of ``UNet``
        logits, or ``ensemble_predict``'s mean), dimensionless.
        A 2D array is one atom channel with no background.
    threshold : float
        Smallest channel value at a peak to count as an atom (dimensionless, 0..1 for probabilities).
    min_distance_px : int
        Smallest separation of two atoms in pixels (peaks closer are merged, across channels too).
    edge_px : float
        Atoms whose refined position lies closer than this to the image border (pixels, measured
        from the outer edge of the border pixels) are dropped.
    refine : {"centroid", "gaussian", None}
        Sub-pixel refinement (module docstring); None keeps the integer peak pixels.
    image : array (rows, columns), optional
        The raw image for ``refine="gaussian"`` (the heat map of the atom's class otherwise).
    pixel_size_angstrom : float, optional
        Ångström per pixel; fills ``x_angstrom``, ``y_angstrom`` (NaN without it).
    uncertainty_maps : array like ``prob_maps``, optional
        Per-pixel uncertainty (e.g. the ensemble std); ``uncertainty`` is its value in the atom's
        class channel, bilinearly interpolated at the refined position (NaN without it).
    background_channel : int or None
        Index of the background channel in ``prob_maps`` (ignored for peaks); None: every channel
        is an atom class.
    class_names : sequence, optional
        Names of the atom channels in channel order (background excluded); default: the channel
        indices in ``prob_maps``.
    edge_angstrom : float, optional
        Edge cut in Å (needs ``pixel_size_angstrom``); the larger of it and ``edge_px`` applies.
    window_px : int, optional
        Half-width of the refinement window in pixels; default ``max(2, ceil(min_distance_px / 2) + 1)``.
    sigma_px : float, optional
        Starting blob width for the Gaussian fit, pixels (default ``window_px / 2``).

    Returns
    -------
    pandas.DataFrame
        One row per atom with columns ``ATOM_COLUMNS``: ``x_px, y_px`` (pixels), ``x_angstrom,
        y_angstrom`` (Å), ``class`` (name or channel index), ``probability`` (the largest value of
        the atom's class channel within ``window_px`` of the peak), ``uncertainty``, and from the
        Gaussian fit ``sigma_px``, ``x_err_px``, ``y_err_px`` (pixels; NaN otherwise) and ``fit_ok``.
        Sorted by decreasing probability.

    Raises
    ------
    InverscopeError
        NaN values, wrong shapes or bad parameters (one line).

    Examples
    --------
    Probability maps (background, Sr) of a 32 x 32 image with three atoms, 0.2 Å per pixel:

    >>> import numpy as np
    >>> import inverscope as isc
    >>> probs = np.zeros((2, 32, 32))
    >>> blob = np.array([[0.2, 0.5, 0.2], [0.5, 0.9, 0.5], [0.2, 0.5, 0.2]])
    >>> for row, col in [(8, 8), (8, 24), (24, 16)]:
    ...     probs[1, row - 1:row + 2, col - 1:col + 2] = blob
    >>> probs[0] = 1.0 - probs[1]
    >>> atoms = isc.locate_atoms(probs, pixel_size_angstrom=0.2, background_channel=0, class_names=["Sr"])
    >>> atoms[["x_px", "y_px", "x_angstrom", "y_angstrom", "class", "probability"]]
       x_px  y_px  x_angstrom  y_angstrom class  probability
    0   8.0   8.0         1.6         1.6    Sr          0.9
    1  24.0   8.0         4.8         1.6    Sr          0.9
    2  16.0  24.0         3.2         4.8    Sr          0.9
    """
    maps = _check_maps(prob_maps)
    window, refine = _check_common(min_distance_px, refine, pixel_size_angstrom, window_px)
    edge = _edge(edge_px, edge_angstrom, pixel_size_angstrom)
    n_ch, h, w = maps.shape
    if background_channel is not None and n_ch > 1:
        if not -n_ch <= background_channel < n_ch:
            raise InverscopeError(f"background_channel: got {background_channel!r}; prob_maps has {n_ch} channels")
        bg = background_channel % n_ch
        atom_ch = [c for c in range(n_ch) if c != bg]
    else:
        atom_ch = list(range(n_ch))
    if class_names is not None and len(class_names) != len(atom_ch):
        raise InverscopeError(f"class_names: got {len(class_names)} names; prob_maps has {len(atom_ch)} atom channels")
    names = list(class_names) if class_names is not None else atom_ch
    if image is not None:
        image = _check_image(image)
        if image.shape != (h, w):
            raise InverscopeError(f"image: got shape {image.shape}; prob_maps are {h} x {w}")
    if uncertainty_maps is not None:
        unc_maps = _check_maps(uncertainty_maps, "uncertainty_maps")
        if unc_maps.shape != maps.shape:
            raise InverscopeError(f"uncertainty_maps: got shape {unc_maps.shape}; prob_maps have {maps.shape}")
    if threshold is None or not np.isfinite(threshold):
        raise InverscopeError(f"threshold: got {threshold!r}; must be a finite number")

    # candidates from every atom channel, strongest first, merged within min_distance
    cand = [(maps[c, py, px], py, px) for c in atom_ch for py, px in _peaks(maps[c], min_distance_px, threshold)]
    cand.sort(key=lambda t: -t[0])
    kept: list[tuple[int, int]] = []
    taken = np.zeros((h, w), bool)                  # pixels closer than min_distance_px to a kept atom
    md = int(min_distance_px)
    oy, ox = np.mgrid[-md:md + 1, -md:md + 1]
    near = np.hypot(ox, oy) < md
    for _, py, px in cand:
        if taken[py, px]:
            continue
        kept.append((py, px))
        y0, y1, x0, x1 = max(0, py - md), min(h, py + md + 1), max(0, px - md), min(w, px + md + 1)
        taken[y0:y1, x0:x1] |= near[y0 - py + md:y1 - py + md, x0 - px + md:x1 - px + md]
    peaks = np.array(kept, dtype=int).reshape(-1, 2)

    # class per atom: the atom channel holding the most probability in a disc of radius window
    yy, xx = np.mgrid[-window:window + 1, -window:window + 1]
    disc = (np.hypot(xx, yy) <= window).astype(float)
    atom_maps = maps[atom_ch]
    if len(peaks):
        # patches of every atom channel around every peak (zero outside the image: nothing added)
        padded = np.pad(atom_maps, ((0, 0), (window, window), (window, window)))
        rows = peaks[:, 0, None] + np.arange(2 * window + 1)[None, :]          # padded coordinates
        cols = peaks[:, 1, None] + np.arange(2 * window + 1)[None, :]
        patch = padded[:, rows[:, :, None], cols[:, None, :]] * disc          # (channels, n, k, k)
        cls_idx = np.argmax(patch.sum((2, 3)), axis=0)
        prob = patch[cls_idx, np.arange(len(peaks))].max((1, 2)).astype(float)
    else:
        cls_idx, prob = np.zeros(0, int), np.zeros(0)
    cls_idx = [int(k) for k in cls_idx]
    channel_maps = [atom_maps[j] for j in range(len(atom_ch))]  # one object per channel (grouped refinement)
    cmaps = [channel_maps[k] for k in cls_idx]
    fit_imgs = [image if image is not None else m for m in cmaps]
    refined, ok = _refine(peaks, cmaps, fit_imgs, refine, window, sigma_px)
    unc = np.full(len(peaks), np.nan)
    if uncertainty_maps is not None and len(peaks):
        ci = np.asarray(cls_idx)
        for k in np.unique(ci):
            sel = ci == k
            unc[sel] = ndimage.map_coordinates(unc_maps[atom_ch[k]], [refined[sel, 1], refined[sel, 0]], order=1,
                                               mode="nearest")
    classes = [names[k] for k in cls_idx]
    df = _table(refined, ok, classes, prob, unc, pixel_size_angstrom, (h, w), edge)
    return df.sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- classical baseline

def classical_baseline(image, *, sigma_px: float, min_distance_px: int, threshold: float,
                       filter: Literal["gaussian", "log"] = "gaussian",
                       refine: Literal["centroid", "gaussian"] | None = "gaussian", bright: bool = True,
                       edge_px: float = 0.0, pixel_size_angstrom: float | None = None,
                       window_px: int | None = None) -> pd.DataFrame:
    """The non-learned atom finder the network is compared with.

    The image is smoothed by a Gaussian of width ``sigma_px`` (``filter="gaussian"``; then
    rescaled min..max to 0..1) or filtered by the scale-normalised Laplacian of Gaussian
    ``-sigma^2 LoG`` (``"log"``, which also removes a slowly varying background; then rescaled
    0..max to 0..1, negative values clipped to 0), and its local maxima at least
    ``min_distance_px`` apart and above ``threshold`` are atoms. ``refine="gaussian"`` fits a 2D
    Gaussian to the *raw* image around each (starting width ``sigma_px``); ``"centroid"`` takes the
    iterated centroid of the filtered image; None keeps the peak pixels.

    Parameters
    ----------
    image : array (rows, columns)
        The STEM image (any intensity units); atoms bright unless ``bright=False`` (e.g. ABF).
    sigma_px : float
        Filter width in pixels, about the atom column's Gaussian width.
    min_distance_px : int
        Smallest atom separation in pixels.
    threshold : float
        Smallest filtered value at a peak, as a fraction of the filtered range (0..1).
    filter, refine, bright, edge_px, pixel_size_angstrom, window_px
        As described above and in ``locate_atoms``.

    Returns
    -------
    pandas.DataFrame
        The ``locate_atoms`` table; ``class`` is 0 and ``probability`` the rescaled filtered
        value at the peak (not a probability: a detection score in 0..1).
    """
    img = _check_image(image)
    if not (np.isfinite(sigma_px) and sigma_px > 0):
        raise InverscopeError(f"sigma_px: got {sigma_px!r}; must be a positive number of pixels")
    if filter not in ("gaussian", "log"):
        raise InverscopeError(f"filter: got {filter!r}; allowed: 'gaussian', 'log'")
    if not (np.isfinite(threshold) and 0 <= threshold <= 1):
        raise InverscopeError(f"threshold: got {threshold!r}; must be in [0, 1] (fraction of the filtered range)")
    window, refine = _check_common(min_distance_px, refine, pixel_size_angstrom, window_px)
    edge = _edge(edge_px, None, pixel_size_angstrom)
    raw = img if bright else -img
    if filter == "gaussian":
        f = ndimage.gaussian_filter(raw, sigma_px, mode="nearest")
    else:
        f = -sigma_px ** 2 * ndimage.gaussian_laplace(raw, sigma_px, mode="nearest")
    # Gaussian: min..max -> 0..1 (the background offset goes); LoG: 0..max -> 0..1 (its zero is the background)
    lo = f.min() if filter == "gaussian" else 0.0
    span = f.max() - lo
    if not span > 0:
        raise InverscopeError(f"image: has no bright feature after {filter} filtering with sigma_px={sigma_px}; "
                              "nothing to locate")
    fn = np.clip((f - lo) / span, 0.0, None)
    peaks = _peaks(fn, min_distance_px, threshold)
    n = len(peaks)
    refined, ok = _refine(peaks, [fn] * n, [raw] * n, refine, window, sigma_px)
    prob = fn[peaks[:, 0], peaks[:, 1]] if n else np.zeros(0)
    df = _table(refined, ok, [0] * n, prob, np.full(n, np.nan), pixel_size_angstrom, img.shape, edge)
    return df.sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- matching

@dataclass
class MatchResult:
    """Outcome of ``match_atoms``; distances in the units of the positions given.

    ``pairs`` is (n_matched, 2) int: (index into pred, index into true); ``distances`` their
    separations. ``precision = n_matched / n_pred``, ``recall = n_matched / n_true``,
    ``f1 = 2 n_matched / (n_pred + n_true)``; NaN where the denominator is 0. ``median_error``,
    ``p95_error``, ``rmse`` summarise ``distances`` (NaN with no match); ``mean_offset`` is the
    mean (dx, dy) of pred - true over the pairs (a systematic shift). ``confusion`` (with classes)
    counts matched pairs, rows: true class, columns: predicted class.
    """

    precision: float
    recall: float
    f1: float
    n_pred: int
    n_true: int
    n_matched: int
    pairs: np.ndarray
    distances: np.ndarray
    median_error: float
    p95_error: float
    rmse: float
    mean_offset: np.ndarray
    confusion: pd.DataFrame | None = None
    class_accuracy: float = np.nan
    unmatched_pred: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    unmatched_true: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    def summary(self) -> dict:
        """Scalar metrics as a flat dict (for tables)."""
        return {k: getattr(self, k) for k in ("precision", "recall", "f1", "n_pred", "n_true", "n_matched",
                                              "median_error", "p95_error", "rmse", "class_accuracy")}


def _assign(a: np.ndarray, b: np.ndarray, max_distance: float) -> np.ndarray:
    """Pairs (i, j) maximising the number of matches within max_distance, then minimising the
    summed distance; solved by the Hungarian method per connected group of candidate pairs."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2), int)
    ta, tb = cKDTree(a), cKDTree(b)
    sparse = ta.sparse_distance_matrix(tb, max_distance, output_type="coo_matrix")
    if sparse.nnz == 0:
        return np.zeros((0, 2), int)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    na, nb = len(a), len(b)
    rows, cols = sparse.row, sparse.col
    graph = coo_matrix((np.ones(len(rows)), (rows, na + cols)), shape=(na + nb, na + nb))
    _, comp = connected_components(graph, directed=False)
    out = []
    for c in np.unique(comp[rows]):
        ia = np.flatnonzero(comp[:na] == c)
        ib = np.flatnonzero(comp[na:] == c)
        d = np.linalg.norm(a[ia][:, None] - b[ib][None], axis=-1)
        big = max_distance * (min(len(ia), len(ib)) + 1) * 2 + 1.0
        cost = np.where(d <= max_distance, d, big)
        r, k = linear_sum_assignment(cost)
        good = d[r, k] <= max_distance
        out.append(np.stack([ia[r[good]], ib[k[good]]], axis=1))
    return np.concatenate(out).astype(int) if out else np.zeros((0, 2), int)


def match_atoms(pred_xy, true_xy, max_distance: float, *, pred_classes=None, true_classes=None,
                class_labels: Sequence | None = None) -> MatchResult:
    """One-to-one matching of predicted to true atoms within ``max_distance``.

    The matching maximises the number of pairs closer than ``max_distance`` and, among those,
    minimises the summed distance (Hungarian method, ``scipy.optimize.linear_sum_assignment``,
    solved per connected group of candidate pairs so that large sets stay cheap).

    Parameters
    ----------
    pred_xy, true_xy : array (n, 2)
        Positions (x, y) in any one unit (pixels or Å).
    max_distance : float
        Largest separation of a matched pair, same unit.
    pred_classes, true_classes : sequence, optional
        Class labels per atom; both or neither. With them, ``confusion`` and ``class_accuracy``
        (fraction of matched pairs whose classes agree) are filled.
    class_labels : sequence, optional
        Row/column order of the confusion matrix (default: sorted union of the labels seen).

    Returns
    -------
    MatchResult
    """
    p, t = _check_xy(pred_xy, "pred_xy"), _check_xy(true_xy, "true_xy")
    if not (np.isfinite(max_distance) and max_distance > 0):
        raise InverscopeError(f"max_distance: got {max_distance!r}; must be a positive number")
    if (pred_classes is None) != (true_classes is None):
        raise InverscopeError("pred_classes/true_classes: give both or neither")
    pairs = _assign(p, t, float(max_distance))
    d = np.linalg.norm(p[pairs[:, 0]] - t[pairs[:, 1]], axis=1) if len(pairs) else np.zeros(0)
    m, npred, ntrue = len(pairs), len(p), len(t)
    prec = m / npred if npred else np.nan
    rec = m / ntrue if ntrue else np.nan
    f1 = 2 * m / (npred + ntrue) if npred + ntrue else np.nan
    res = MatchResult(
        precision=prec, recall=rec, f1=f1, n_pred=npred, n_true=ntrue, n_matched=m, pairs=pairs, distances=d,
        median_error=float(np.median(d)) if m else np.nan,
        p95_error=float(np.percentile(d, 95)) if m else np.nan,
        rmse=float(np.sqrt(np.mean(d ** 2))) if m else np.nan,
        mean_offset=(p[pairs[:, 0]] - t[pairs[:, 1]]).mean(0) if m else np.full(2, np.nan),
        unmatched_pred=np.setdiff1d(np.arange(npred), pairs[:, 0]),
        unmatched_true=np.setdiff1d(np.arange(ntrue), pairs[:, 1]))
    if pred_classes is not None:
        pc, tc = np.asarray(pred_classes, dtype=object), np.asarray(true_classes, dtype=object)
        if len(pc) != npred or len(tc) != ntrue:
            raise InverscopeError(f"pred_classes/true_classes: got {len(pc)}/{len(tc)} labels for "
                                  f"{npred}/{ntrue} positions")
        labels = list(class_labels) if class_labels is not None else sorted(set(pc.tolist()) | set(tc.tolist()),
                                                                             key=lambda v: (str(type(v)), v))
        conf = pd.DataFrame(0, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="pred"))
        for i, j in pairs:
            if tc[j] not in conf.index or pc[i] not in conf.columns:
                raise InverscopeError(f"class_labels: label {tc[j]!r} or {pc[i]!r} is not among {labels}")
            conf.loc[tc[j], pc[i]] += 1
        res.confusion = conf
        res.class_accuracy = float(np.mean([pc[i] == tc[j] for i, j in pairs])) if m else np.nan
    return res


# --------------------------------------------------------------------------- local chemistry

def neighbour_rings(xy, classes, r_max: float | Sequence[float], *, r_min: float = 0.0,
                    class_labels: Sequence | None = None) -> pd.DataFrame:
    """Per-atom counts of neighbours of each class within distance rings.

    Parameters
    ----------
    xy : array (n, 2)
        Positions (x, y) in any unit (pixels or Å).
    classes : sequence (n,)
        Class label per atom.
    r_max : float or increasing sequence of floats
        One float: a single ring ``r_min < d <= r_max``. A sequence ``[r1, r2, ...]``: rings
        ``(r_min, r1], (r1, r2], ...`` (e.g. first and second neighbour shells). Same unit as ``xy``.
    r_min : float
        Inner radius of the first ring (the atom itself, at 0, is never counted).
    class_labels : sequence, optional
        Which classes get columns, in order (default: sorted labels seen).

    Returns
    -------
    pandas.DataFrame
        One row per atom (same order as ``xy``): ``class``, then ``n_<label>`` per class (single
        ring) or ``n_<label>_ring<k>`` with k = 1, 2, ... (several rings), and ``n_total`` (all
        classes, all rings).
    """
    pts = _check_xy(xy, "xy")
    cls = np.asarray(classes, dtype=object)
    if len(cls) != len(pts):
        raise InverscopeError(f"classes: got {len(cls)} labels for {len(pts)} positions")
    edges = np.atleast_1d(np.asarray(r_max, dtype=float))
    single = np.ndim(r_max) == 0
    if not (np.all(np.isfinite(edges)) and edges[0] > r_min and np.all(np.diff(edges) > 0)):
        raise InverscopeError(f"r_max: got {r_max!r}; must be finite, above r_min={r_min} and increasing")
    labels = (list(class_labels) if class_labels is not None
              else sorted(set(cls.tolist()), key=lambda v: (str(type(v)), v)))
    col = {lab: i for i, lab in enumerate(labels)}
    counts = np.zeros((len(pts), len(edges), len(labels)), int)
    if len(pts):
        tree = cKDTree(pts)
        pairs = tree.query_pairs(edges[-1], output_type="ndarray")
        if len(pairs):
            d = np.linalg.norm(pts[pairs[:, 0]] - pts[pairs[:, 1]], axis=1)
            ring = np.searchsorted(edges, d, side="left")          # d <= edges[k] -> ring k
            ok = (d > r_min) & (ring < len(edges))
            for (i, j), k in zip(pairs[ok], ring[ok]):
                if cls[j] in col:
                    counts[i, k, col[cls[j]]] += 1
                if cls[i] in col:
                    counts[j, k, col[cls[i]]] += 1
    data = {"class": cls}
    for k in range(len(edges)):
        for lab in labels:
            data[f"n_{lab}" if single else f"n_{lab}_ring{k + 1}"] = counts[:, k, col[lab]]
    data["n_total"] = counts.sum(axis=(1, 2))
    out = pd.DataFrame(data)
    try:
        out["class"] = pd.to_numeric(out["class"])
    except (ValueError, TypeError):
        pass
    return out


def name_complexes(xy, classes, r_max: float, *, centre_class, neighbour_class, r_min: float = 0.0) -> pd.Series:
    """Name each ``centre_class`` atom by its ``neighbour_class`` neighbours, e.g. ``Si1C3``.

    The name is ``f"{centre_class}1{neighbour_class}{n}"`` with ``n`` the number of
    ``neighbour_class`` atoms with ``r_min < d <= r_max`` (same unit as ``xy``), so a Si dopant
    with three C neighbours in graphene is ``Si1C3`` and one in a divacancy with four is ``Si1C4``.
    Other atoms get ``""``. Returns a Series aligned with ``xy``.
    """
    rings = neighbour_rings(xy, classes, r_max, r_min=r_min,
                            class_labels=sorted({neighbour_class, centre_class}, key=str))
    n = rings[f"n_{neighbour_class}"].to_numpy()
    is_centre = np.asarray(classes, dtype=object) == centre_class
    return pd.Series([f"{centre_class}1{neighbour_class}{k}" if c else "" for k, c in zip(n, is_centre)],
                     name="complex")


@dataclass
class ClusterResult:
    """Outcome of ``cluster_unknown``: ``labels`` per row (-1: DBSCAN noise), ``n_clusters``,
    and for the Gaussian mixture the BIC per number of components tried (``bic``) and the model."""

    labels: np.ndarray
    n_clusters: int
    method: str
    bic: dict = field(default_factory=dict)
    model: object = None


def cluster_unknown(descriptors, *, method: Literal["gmm", "dbscan"] = "gmm", n_clusters: int | None = None,
                    max_clusters: int = 8, eps: float = 0.5, min_samples: int = 5, standardize: bool = True,
                    seed: int = 0) -> ClusterResult:
    """Group atoms by local descriptors to flag defect types no class channel names.

    Parameters
    ----------
    descriptors : array (n_atoms, n_features) or DataFrame
        Per-atom features, e.g. the numeric columns of ``neighbour_rings``, local intensities,
        nearest-neighbour distances. NaN not allowed.
    method : {"gmm", "dbscan"}
        ``"gmm"``: ``sklearn.mixture.GaussianMixture`` (full covariance) with ``n_clusters``
        components, or the number in 1..``max_clusters`` with the lowest BIC. ``"dbscan"``:
        ``sklearn.cluster.DBSCAN(eps, min_samples)``; points in no dense region get label -1.
    standardize : bool
        Scale each feature to zero mean and unit variance first (constant features are left at 0);
        ``eps`` is then in units of standard deviations.
    seed : int
        Random state of the mixture fit.
    """
    if isinstance(descriptors, pd.DataFrame):
        descriptors = descriptors.select_dtypes(include=[np.number]).to_numpy(dtype=float)
    X = np.asarray(descriptors, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or len(X) == 0:
        raise InverscopeError(f"descriptors: got shape {X.shape}; expected (n_atoms, n_features) with n_atoms >= 1")
    if not np.all(np.isfinite(X)):
        raise InverscopeError("descriptors: contain NaN or infinite values")
    if standardize:
        sd = X.std(0)
        X = (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)
    if method == "dbscan":
        from sklearn.cluster import DBSCAN

        model = DBSCAN(eps=eps, min_samples=min_samples).fit(X)
        labels = model.labels_
        return ClusterResult(labels, int(len(set(labels.tolist()) - {-1})), "dbscan", {}, model)
    if method != "gmm":
        raise InverscopeError(f"method: got {method!r}; allowed: 'gmm', 'dbscan'")
    from sklearn.mixture import GaussianMixture

    ks = [int(n_clusters)] if n_clusters is not None else list(range(1, max(1, min(max_clusters, len(X))) + 1))
    if ks[0] < 1 or ks[0] > len(X):
        raise InverscopeError(f"n_clusters: got {n_clusters!r}; must be in 1..{len(X)} (the number of atoms)")
    best, bic = None, {}
    for k in ks:
        gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed, n_init=2).fit(X)
        bic[k] = float(gm.bic(X))
        if best is None or bic[k] < bic[best[0]]:
            best = (k, gm)
    k, gm = best
    return ClusterResult(gm.predict(X), k, "gmm", bic, gm)


__all__ = ["ATOM_COLUMNS", "locate_atoms", "classical_baseline", "match_atoms", "MatchResult", "neighbour_rings",
           "name_complexes", "cluster_unknown", "ClusterResult"]
