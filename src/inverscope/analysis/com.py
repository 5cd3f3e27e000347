"""Centre of mass (CoM) and differential phase contrast (DPC) of 4D-STEM data: the classical baseline.

A probe crossing an in-plane field (an atom's potential, a polarization's depolarizing field) is
deflected; the centre of mass of its diffraction pattern moves with the deflection. This module
turns a 4D-STEM dataset into that CoM field and the quantities built on it, as used by
Martinc et al. (arXiv:2603.15582) as the physics baseline for polarization mapping:

1. :func:`centre_of_mass`: per-pattern CoM, plain, through a detector mask (:func:`annular_mask`:
   an annulus, the bright-field disc) or thresholded (pixels below ``threshold`` times the
   pattern's maximum set to zero), read in blocks of patterns so that memory stays bounded for
   numpy, Dask and Zarr input alike.
2. :func:`descan_correct` / :func:`com_relative_to_scan_mean`: the descan shift (the whole
   pattern moving with the scan position) removed by a plane fitted over the scan or by the
   scan mean.
3. :func:`rotate_com`, :func:`find_detector_rotation`: the turn between detector and scan axes,
   found as the one that leaves the CoM field curl-free (a deflection field is a gradient).
4. :func:`dpc_potential`: integrated DPC, the potential whose gradient the CoM field is.
5. :func:`com_sectors`: CoM directions to ``n`` angular classes (the paper's 8 polarization
   classes, 45 deg apart).
6. :func:`friedel_moments`, :func:`friedel_baseline`: odd angular moments of the Friedel
   asymmetry ``I(k) - I(-k)`` in radial bands, and a standardised logistic regression on them.

Conventions (all functions):

* Detector pixels are ``(row, col)`` = ``(ky, kx)`` with row 0 on top, as everywhere in
  inverscope. A CoM vector is stored on the last axis as ``(ky, kx)``: ``ky`` along the rows
  (positive towards larger row index, i.e. *down* as displayed), ``kx`` along the columns
  (positive to the right).
* Angles are counter-clockwise *as displayed with row 0 on top*, from ``+kx``:
  ``phi = atan2(-ky, kx)``. So 0 deg points right, 90 deg up (towards row 0), 180 deg left,
  270 deg down. This is the sense of :mod:`inverscope.datasets.degrade` (``numpy.rot90`` is
  +90 deg): a pattern turned by ``r`` there has its CoM turned by ``r`` here.
* Scan positions ``(scan_y, scan_x)`` are rows and columns of the scan grid in the same sense;
  a detector rotation of 0 means detector rows are parallel to scan rows.
* CoM arrays are ``(scan_y, scan_x, 2)`` (maps) or ``(n, 2)`` / ``(..., 2)`` (stacks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np

from inverscope.core.errors import InverscopeError, field_error

#: Default size of one block of patterns read at once [float64 bytes].
BLOCK_BYTES = 32 * 2 ** 20

#: Smallest detector side accepted [px].
MIN_DETECTOR_PX = 4


class ComError(InverscopeError):
    """Data or parameters the CoM analysis cannot use."""


@dataclass
class CoMResult:
    """Per-pattern centre of mass.

    Attributes
    ----------
    px : np.ndarray
        float64 ``(*scan, 2)``: ``(ky, kx)`` CoM relative to ``centre_px`` [detector px].
    mrad : np.ndarray or None
        ``px`` times ``mrad_per_px`` [mrad]; None without a calibration.
    intensity : np.ndarray
        float64 ``scan``: the summed intensity the CoM was taken over (after mask and
        threshold), in data units: a virtual bright-field / annular image for free.
    centre_px : (float, float)
        ``(row, col)`` the CoM is measured from [px].
    mrad_per_px : (float, float) or None
        Calibration ``(ky, kx)`` [mrad/px] used.
    """

    px: np.ndarray
    mrad: np.ndarray | None
    intensity: np.ndarray
    centre_px: tuple[float, float]
    mrad_per_px: tuple[float, float] | None

    @property
    def vectors(self) -> np.ndarray:
        """``mrad`` when calibrated, else ``px``."""
        return self.px if self.mrad is None else self.mrad


# ---------------------------------------------------------------- input handling


def _unwrap(data) -> tuple[Any, tuple[float, float] | None]:
    """A :class:`~inverscope.datasets.io.fourd.FourD` gives its ``data`` and ``sampling_mrad``."""
    from inverscope.datasets.io.fourd import FourD

    if isinstance(data, FourD):
        return data.data, data.sampling_mrad
    return data, None


def _check_data(data) -> tuple[tuple[int, ...], int, int]:
    """(scan shape, ky, kx) of a (scan_y, scan_x, ky, kx) or (n, ky, kx) array-like."""
    shape = getattr(data, "shape", None)
    if shape is None:
        data = np.asarray(data)
        shape = data.shape
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4):
        raise field_error("data", f"shape {shape}", "must be (scan_y, scan_x, ky, kx) or (n, ky, kx); "
                          "give one pattern as pattern[None]", ComError)
    ky, kx = shape[-2:]
    if min(ky, kx) < MIN_DETECTOR_PX or min(shape[:-2]) < 1:
        raise field_error("data", f"shape {shape}", f"needs at least one pattern of at least "
                          f"{MIN_DETECTOR_PX} x {MIN_DETECTOR_PX} detector pixels", ComError)
    return shape[:-2], ky, kx


def _blocks(data, scan: tuple[int, ...], ky: int, kx: int, chunk: int | None) -> Iterator[tuple[slice, ...]]:
    """Index tuples over the scan, each at most `chunk` patterns, in C order of the scan."""
    if chunk is None:
        chunk = max(1, BLOCK_BYTES // (8 * ky * kx))
    if int(chunk) != chunk or chunk < 1:
        raise field_error("chunk", chunk, "must be a positive integer (patterns per block)", ComError)
    chunk = int(chunk)
    if len(scan) == 1:
        for i in range(0, scan[0], chunk):
            yield (slice(i, min(i + chunk, scan[0])),)
        return
    sy, sx = scan
    if sx <= chunk:
        rows = chunk // sx
        for i in range(0, sy, rows):
            yield slice(i, min(i + rows, sy)), slice(0, sx)
    else:
        for i in range(sy):
            for j in range(0, sx, chunk):
                yield slice(i, i + 1), slice(j, min(j + chunk, sx))


def _read(data, index: tuple[slice, ...]) -> np.ndarray:
    """One block as float64 numpy, checked finite."""
    block = data[index]
    if hasattr(block, "compute"):
        block = block.compute()
    block = np.asarray(block, dtype=np.float64)
    if not np.all(np.isfinite(block)):
        bad = np.argwhere(~np.isfinite(block).all(axis=(-2, -1)))[0]
        where = tuple(int(s.start + b) for s, b in zip(index, bad))
        raise ComError(f"data: pattern at scan index {where} holds NaN or inf values; mask or drop it first")
    return block


def _map_patterns(data, fn: Callable[[np.ndarray], np.ndarray], n_out: int, chunk: int | None) -> np.ndarray:
    """Apply `fn` ((b, ky, kx) float64 -> (b, n_out)) to every pattern, block by block; (*scan, n_out)."""
    scan, ky, kx = _check_data(data)
    if not hasattr(data, "shape"):
        data = np.asarray(data)
    out = np.empty(scan + (n_out,), dtype=np.float64)
    for index in _blocks(data, scan, ky, kx, chunk):
        block = _read(data, index)
        lead = block.shape[:-2]
        res = fn(block.reshape(-1, ky, kx))
        out[index] = res.reshape(lead + (n_out,))
    return out


def _where(flat: int, scan: tuple[int, ...]) -> tuple[int, ...]:
    """Scan index of the `flat`-th pattern (C order), as plain ints for messages."""
    return tuple(int(i) for i in np.unravel_index(flat, scan))


def _centre(ky: int, kx: int, centre_px) -> tuple[float, float]:
    if centre_px is None:
        return (ky - 1) / 2.0, (kx - 1) / 2.0
    try:
        cy, cx = (float(c) for c in centre_px)
    except (TypeError, ValueError):
        raise field_error("centre_px", centre_px, "must be (row, col) [px]", ComError) from None
    if not (np.isfinite(cy) and np.isfinite(cx)):
        raise field_error("centre_px", centre_px, "must be finite (row, col) [px]", ComError)
    return cy, cx


def _pair(value, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    v = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if v.shape not in ((1,), (2,)) or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise field_error(name, value, "must be a positive number or a (ky, kx) pair", ComError)
    return (float(v[0]), float(v[-1]))


def _mask(mask, ky: int, kx: int) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != (ky, kx):
        raise field_error("mask", f"shape {m.shape}", f"must match the detector ({ky}, {kx})", ComError)
    m = m.astype(np.float64)
    if not np.all(np.isfinite(m)) or m.min() < 0 or not m.any():
        raise field_error("mask", "values", "must be finite, >= 0 (bool or weights) and not all zero", ComError)
    return m


# ---------------------------------------------------------------- masks


def annular_mask(shape: tuple[int, int], inner_px: float, outer_px: float, *, centre_px=None) -> np.ndarray:
    """Boolean detector mask ``inner_px <= |k| < outer_px`` [px] about ``centre_px``.

    ``inner_px = 0`` is a disc (e.g. the bright-field disc: ``outer_px`` a little over the
    disc radius). ``centre_px`` defaults to the geometric centre ``((ky - 1) / 2, (kx - 1) / 2)``.
    """
    ky, kx = (int(s) for s in shape)
    if not (0 <= inner_px < outer_px):
        raise field_error("inner_px, outer_px", (inner_px, outer_px), "must satisfy 0 <= inner < outer [px]", ComError)
    cy, cx = _centre(ky, kx, centre_px)
    r = np.hypot(np.arange(ky)[:, None] - cy, np.arange(kx)[None, :] - cx)
    return (r >= inner_px) & (r < outer_px)


# ---------------------------------------------------------------- centre of mass


def centre_of_mass(data, *, mask=None, threshold: float | None = None, mrad_per_px=None, centre_px=None,
                   chunk: int | None = None) -> CoMResult:
    """Centre of mass of every diffraction pattern.

    Parameters
    ----------
    data : array-like
        ``(scan_y, scan_x, ky, kx)`` or ``(n, ky, kx)``: numpy, Dask, Zarr (anything sliceable
        with a ``shape``), or a :class:`~inverscope.datasets.io.fourd.FourD` (its
        ``sampling_mrad`` is the default calibration). Read ``chunk`` patterns at a time.
    mask : np.ndarray, optional
        ``(ky, kx)`` detector mask, bool or non-negative weights (:func:`annular_mask`): the CoM
        is ``sum(w I k) / sum(w I)``.
    threshold : float, optional
        In ``[0, 1)``: the thresholded CoM. In each pattern, pixels below ``threshold`` times the
        pattern's maximum (over the mask) are set to zero before the CoM, which removes a weak
        diffuse background (and the weak tails of the pattern with it).
    mrad_per_px : float or (float, float), optional
        Detector calibration ``(ky, kx)`` [mrad/px]; fills ``CoMResult.mrad``.
    centre_px : (float, float), optional
        ``(row, col)`` the CoM is measured from [px]; default the geometric centre
        ``((ky - 1) / 2, (kx - 1) / 2)``. Inverscope's simulations put the zero angle at
        ``(ky // 2, kx // 2)``: pass that to measure deflections of simulated patterns.
    chunk : int, optional
        Patterns per block (default: as many as fit :data:`BLOCK_BYTES` as float64). Blocks are
        whole scan rows where possible; aligning them with a Zarr/Dask chunking saves re-reads.

    Returns
    -------
    CoMResult
        ``px`` (and ``mrad``) ``(*scan, 2)`` as ``(ky, kx)``, positive down and right (see the
        module conventions), and the summed ``intensity``.

    Raises
    ------
    ComError
        A wrong shape, a NaN/inf pattern, a threshold outside ``[0, 1)``, or a pattern whose
        (masked, thresholded) intensity does not sum to a positive number.
    """
    data, sampling = _unwrap(data)
    scan, ky, kx = _check_data(data)
    m = _mask(mask, ky, kx)
    if threshold is not None and not (0.0 <= float(threshold) < 1.0):
        raise field_error("threshold", threshold, "must be in [0, 1) (a fraction of the pattern maximum)", ComError)
    cal = _pair(mrad_per_px, "mrad_per_px") if mrad_per_px is not None else sampling
    cy, cx = _centre(ky, kx, centre_px)
    ry = np.arange(ky, dtype=np.float64) - cy
    rx = np.arange(kx, dtype=np.float64) - cx
    inside = None if m is None else m > 0
    done = [0]

    def fn(block: np.ndarray) -> np.ndarray:
        if threshold is not None:
            peak = (block if inside is None else np.where(inside, block, -np.inf)).max(axis=(1, 2))
            block = np.where(block >= threshold * peak[:, None, None], block, 0.0)
        if m is not None:
            block = block * m
        total = block.sum(axis=(1, 2))
        ok = total > 0
        if not np.all(ok):
            flat = done[0] + int(np.flatnonzero(~ok)[0])
            raise ComError(f"data: pattern {_where(flat, scan)} sums to {total[~ok][0]:g} "
                           "(after mask and threshold); its CoM is undefined")
        done[0] += block.shape[0]
        com_y = block.sum(axis=2) @ ry / total
        com_x = block.sum(axis=1) @ rx / total
        return np.stack([com_y, com_x, total], axis=1)

    out = _map_patterns(data, fn, 3, chunk)
    px = out[..., :2].copy()
    mrad = None if cal is None else px * np.asarray(cal)
    return CoMResult(px, mrad, out[..., 2].copy(), (cy, cx), cal)


# ---------------------------------------------------------------- descan


def _com_array(com, name: str = "com", scan_map: bool = False) -> np.ndarray:
    c = np.asarray(com.vectors if isinstance(com, CoMResult) else com, dtype=np.float64)
    if c.ndim < 2 or c.shape[-1] != 2:
        raise field_error(name, f"shape {c.shape}", "must end in 2 vector components (ky, kx)", ComError)
    if scan_map and (c.ndim != 3 or min(c.shape[:2]) < 2):
        raise field_error(name, f"shape {c.shape}", "must be a (scan_y, scan_x, 2) map of at least 2 x 2", ComError)
    if not np.all(np.isfinite(c)):
        raise field_error(name, "values", "must all be finite", ComError)
    return c


def com_relative_to_scan_mean(com) -> np.ndarray:
    """CoM less its mean over all scan positions (``(..., 2)``), as Martinc et al. use it.

    Removes a constant offset (a misplaced centre, a uniform descan or tilt) but not a descan
    that varies over the scan (see :func:`descan_correct` with ``method="plane"``).
    """
    c = _com_array(com)
    return c - c.reshape(-1, 2).mean(axis=0)


def descan_fit(com, *, method: Literal["plane", "mean"] = "plane", where=None) -> np.ndarray:
    """The descan shift: ``(scan_y, scan_x, 2)`` plane ``a + b y + c x`` per component (or the mean).

    ``where`` (bool ``(scan_y, scan_x)``) restricts the fit to some positions, e.g. vacuum or a
    region whose true deflection averages to zero; default all.
    """
    if method not in ("plane", "mean"):
        raise field_error("method", method, "must be 'plane' or 'mean'", ComError)
    c = _com_array(com, scan_map=(method == "plane"))
    lead = c.shape[:-1]
    sel = np.ones(lead, bool) if where is None else np.asarray(where, bool)
    if sel.shape != lead or sel.sum() < (3 if method == "plane" else 1):
        raise field_error("where", f"shape {sel.shape}, {int(sel.sum())} positions",
                          f"must be a bool {lead} array selecting enough positions", ComError)
    if method == "mean":
        return np.broadcast_to(c[sel].mean(axis=0), c.shape).copy()
    yy, xx = np.meshgrid(np.arange(lead[0], dtype=np.float64), np.arange(lead[1], dtype=np.float64), indexing="ij")
    design = np.stack([np.ones_like(yy), yy, xx], axis=-1)
    coef, *_ = np.linalg.lstsq(design[sel], c[sel], rcond=None)
    return design @ coef


def descan_correct(com, *, method: Literal["plane", "mean"] = "plane", where=None) -> np.ndarray:
    """The CoM less the descan shift: the residual deflection.

    Parameters
    ----------
    com : np.ndarray or CoMResult
        ``(scan_y, scan_x, 2)`` (``method="mean"`` also takes any ``(..., 2)``).
    method : {"plane", "mean"}
        ``"plane"``: a plane ``a + b y + c x`` in scan position fitted by least squares to each
        component and subtracted (a descan coil misalignment moves the pattern linearly with the
        scan; a true deflection field with zero mean and no linear trend is left untouched).
        ``"mean"``: the scan mean subtracted (:func:`com_relative_to_scan_mean`).
    where : np.ndarray of bool, optional
        Positions to fit the descan on (default all), see :func:`descan_fit`.
    """
    c = _com_array(com, scan_map=(method == "plane"))
    return c - descan_fit(c, method=method, where=where)


# ---------------------------------------------------------------- rotation


def recentre_patterns(patterns) -> tuple[np.ndarray, list[float]]:
    """Patterns shifted so that their mean CoM over the whole set sits on the optical axis.

    A uniform descan (every pattern displaced by the same amount) moves the mean CoM off
    ``(P // 2, P // 2)``; this undoes it with one sub-pixel shift for all patterns (bilinear,
    zero outside), keeping each pattern's own CoM deviation, which carries the signal.

    Parameters
    ----------
    patterns : array (n, P, P)
        Diffraction patterns of one data set (counts or intensities).

    Returns
    -------
    recentred : ndarray float32 (n, P, P)
        The patterns shifted by minus the mean CoM offset (the input itself when the offset is
        below 1e-3 px or undefined).
    offset_px : list of float
        The mean CoM offset found, ``[row, col]`` [px].

    Examples
    --------
    >>> import numpy as np
    >>> from inverscope.analysis.com import recentre_patterns
    >>> disc = (np.hypot(*np.mgrid[-16:16, -16:16]) < 6).astype(np.float32)
    >>> moved = np.roll(disc, (2, -1), axis=(0, 1))[None].repeat(3, axis=0)
    >>> out, off = recentre_patterns(moved)
    >>> [round(v, 3) for v in off], bool(np.allclose(out[0], disc, atol=1e-6))
    ([2.0, -1.0], True)
    """
    from scipy.ndimage import shift

    x = np.asarray(patterns)
    p = x.shape[-1]
    off = np.nanmean(centre_of_mass(x, centre_px=(p // 2, p // 2)).px, axis=0)
    if not np.all(np.isfinite(off)) or np.hypot(*off) < 1e-3:
        return x, [0.0, 0.0]
    out = np.stack([shift(im, -off, order=1, mode="constant", cval=0.0) for im in x]).astype(np.float32)
    return out, [float(off[0]), float(off[1])]


def rotate_com(com, angle_deg: float) -> np.ndarray:
    """CoM vectors ``(..., 2)`` turned counter-clockwise as displayed by ``angle_deg`` [deg].

    With ``(ky, kx)`` and ky down: ``kx' = kx cos a + ky sin a``, ``ky' = ky cos a - kx sin a``;
    ``(0, 1)`` (right) turned by 90 deg is ``(-1, 0)`` (up).
    """
    c = _com_array(com)
    a = math.radians(float(angle_deg))
    ca, sa = math.cos(a), math.sin(a)
    return np.stack([c[..., 0] * ca - c[..., 1] * sa, c[..., 1] * ca + c[..., 0] * sa], axis=-1)


def _curl_div(c: np.ndarray, scan_step: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Curl ``d(kx)/dy - d(ky)/dx`` and divergence ``d(ky)/dy + d(kx)/dx`` over the scan (central differences)."""
    dy, dx = scan_step
    curl = np.gradient(c[..., 1], dy, axis=0) - np.gradient(c[..., 0], dx, axis=1)
    div = np.gradient(c[..., 0], dy, axis=0) + np.gradient(c[..., 1], dx, axis=1)
    return curl, div


@dataclass
class RotationFit:
    """Detector rotation found from the curl-free criterion.

    Attributes
    ----------
    angle_deg : float
        In ``(-180, 180]``: ``rotate_com(com, angle_deg)`` (after the mirror when ``flipped``) is
        the curl-free field on scan axes [deg].
    curl_fraction : float
        ``sum(curl^2) / (sum(curl^2) + sum(div^2))`` of the corrected field: 0 for a gradient
        field, about 0.5 when the rotation is meaningless (noise, no field).
    divergence_skewness : float
        Skewness of the corrected field's divergence; its sign decided the 180 deg ambiguity
        (see :func:`find_detector_rotation`). Near 0: the sign is not determined by the data.
    flipped : bool
        The detector is mirrored relative to the scan (``kx -> -kx`` first); only tried with
        ``allow_flip``.
    """

    angle_deg: float
    curl_fraction: float
    divergence_skewness: float
    flipped: bool = False

    def apply(self, com) -> np.ndarray:
        """The CoM on scan axes: mirrored if ``flipped``, then turned by ``angle_deg``."""
        c = _com_array(com)
        if self.flipped:
            c = c * np.array([1.0, -1.0])
        return rotate_com(c, self.angle_deg)


def _fit_rotation(c: np.ndarray, scan_step, convention: str) -> RotationFit:
    curl, div = _curl_div(c, scan_step)
    crop = (slice(1, -1), slice(1, -1)) if min(c.shape[:2]) > 4 else (slice(None), slice(None))
    curl, div = curl[crop].ravel(), div[crop].ravel()
    # curl of the field turned by a: cos a curl + sin a div (see rotate_com); minimise sum of its square
    scc, sdd, scd = curl @ curl, div @ div, curl @ div
    if scc + sdd == 0:
        raise ComError("com: the field has neither curl nor divergence (constant); no rotation to find")
    evals, evecs = np.linalg.eigh(np.array([[scc, scd], [scd, sdd]]))
    cos_a, sin_a = evecs[:, 0]
    angle = math.degrees(math.atan2(sin_a, cos_a))
    new_div = cos_a * div - sin_a * curl
    sd = new_div.std()
    skew = float(np.mean((new_div - new_div.mean()) ** 3) / sd ** 3) if sd > 0 else 0.0
    want_negative = convention == "sinks"
    if (skew > 0) == want_negative and skew != 0:
        angle, skew = angle + 180.0, -skew
    angle = (angle + 180.0) % 360.0 - 180.0
    if angle == -180.0:
        angle = 180.0
    return RotationFit(angle, float(max(evals[0], 0.0) / (scc + sdd)), skew)


def find_detector_rotation(com, *, scan_step=(1.0, 1.0), convention: Literal["sinks", "sources"] = "sinks",
                           allow_flip: bool = False) -> RotationFit:
    """The detector rotation that makes the CoM field curl-free (standard DPC practice).

    A deflection field is the gradient of a potential, so on the scan axes its curl vanishes.
    The curl of the field turned by ``a`` is ``cos(a) curl + sin(a) div`` of the measured field,
    so ``sum(curl^2)`` over the scan is a quadratic form in ``(cos a, sin a)`` minimised in
    closed form (its smallest eigenvector), exactly, with no angle grid. Central differences,
    the outermost scan row/column left out. Remove the descan first (:func:`descan_correct`): a
    linear descan adds a constant curl and divergence.

    The minimum is a line: ``a`` and ``a + 180`` are equally curl-free. The sign is chosen by
    the divergence (``convention``):

    * ``"sinks"`` (default): the largest divergences are negative (negative skewness): the CoM
      converges on the potential maxima. The beam is deflected towards the nuclei, so at atomic
      resolution atom columns are sinks, and :func:`dpc_potential` then peaks on the atoms.
    * ``"sources"``: the opposite.

    For a field without sharp sinks or sources (a smooth polarization map, noise) the sign is not
    determined: ``divergence_skewness`` near 0 says so and the sign must come from a reference.

    Parameters
    ----------
    com : np.ndarray or CoMResult
        ``(scan_y, scan_x, 2)`` as ``(ky, kx)``, at least 3 x 3.
    scan_step : (float, float)
        Scan steps ``(y, x)`` (only their ratio matters here).
    allow_flip : bool
        Also try a mirrored detector (``kx -> -kx``) and keep whichever leaves less curl.
    """
    c = _com_array(com, scan_map=True)
    if min(c.shape[:2]) < 3:
        raise field_error("com", f"shape {c.shape}", "needs a scan of at least 3 x 3 positions", ComError)
    step = _pair(scan_step, "scan_step")
    if convention not in ("sinks", "sources"):
        raise field_error("convention", convention, "must be 'sinks' or 'sources'", ComError)
    fit = _fit_rotation(c, step, convention)
    if allow_flip:
        other = _fit_rotation(c * np.array([1.0, -1.0]), step, convention)
        if other.curl_fraction < fit.curl_fraction:
            other.flipped = True
            fit = other
    return fit


# ---------------------------------------------------------------- integrated DPC


def dpc_potential(com, *, scan_step=(1.0, 1.0), highpass: float = 0.0, pad: Literal["mirror", "none"] = "mirror",
                  wavelength_angstrom: float | None = None) -> np.ndarray:
    """Integrated DPC: the potential ``phi`` whose gradient is the CoM field, by Fourier integration.

    Least squares in Fourier space: with ``C = (C_y, C_x)`` the field on the scan grid and
    ``q`` its spatial frequencies [1/scan unit],
    ``phi_hat(q) = (q_y C_y_hat + q_x C_x_hat) / (2 pi i (|q|^2 + highpass^2))`` and
    ``phi_hat(0) = 0``. ``highpass`` is the Tikhonov-like regularisation [1/scan unit]: it damps
    structure longer than about ``1 / highpass`` (drift, a residual descan, noise integrated over
    long paths, which grows as ``1/q``); 0 is the plain least-squares integral.

    Parameters
    ----------
    com : np.ndarray or CoMResult
        ``(scan_y, scan_x, 2)`` ``(ky, kx)`` on scan axes (descan removed, detector rotation
        applied: :func:`descan_correct`, :func:`find_detector_rotation`).
    scan_step : (float, float)
        Scan steps ``(y, x)`` [e.g. Å].
    highpass : float
        Regularisation frequency [1/scan unit], >= 0.
    pad : {"mirror", "none"}
        ``"mirror"``: the field is extended to twice its size as the gradient of the mirror image
        of ``phi`` (``C_y`` odd in y, even in x, and vice versa), so a non-periodic field is
        integrated without wrap-around artefacts. ``"none"``: the field is taken as periodic.
    wavelength_angstrom : float, optional
        With ``com`` in mrad and ``scan_step`` in Å: return the phase ``2 pi / lambda x 1e-3 x phi``
        [rad] (a mean deflection ``theta`` is ``lambda / (2 pi)`` times the phase gradient).

    Returns
    -------
    np.ndarray
        ``(scan_y, scan_x)`` with zero mean (the constant is undetermined), in units of ``com``
        times ``scan_step`` (or rad with ``wavelength_angstrom``).
    """
    c = _com_array(com, scan_map=True)
    dy, dx = _pair(scan_step, "scan_step")
    if not (highpass >= 0 and np.isfinite(highpass)):
        raise field_error("highpass", highpass, "must be a finite number >= 0 [1/scan unit]", ComError)
    if pad not in ("mirror", "none"):
        raise field_error("pad", pad, "must be 'mirror' or 'none'", ComError)
    sy, sx = c.shape[:2]
    cy, cx = c[..., 0], c[..., 1]
    if pad == "mirror":
        cy = np.concatenate([cy, -cy[::-1]], axis=0)
        cy = np.concatenate([cy, cy[:, ::-1]], axis=1)
        cx = np.concatenate([cx, cx[::-1]], axis=0)
        cx = np.concatenate([cx, -cx[:, ::-1]], axis=1)
    ny, nx = cy.shape
    qy = np.fft.fftfreq(ny, d=dy)[:, None]
    qx = np.fft.fftfreq(nx, d=dx)[None, :]
    denom = 2j * np.pi * (qy ** 2 + qx ** 2 + highpass ** 2)
    denom[0, 0] = 1.0
    phi_hat = (qy * np.fft.fft2(cy) + qx * np.fft.fft2(cx)) / denom
    phi_hat[0, 0] = 0.0
    phi = np.fft.ifft2(phi_hat).real[:sy, :sx]
    phi -= phi.mean()
    if wavelength_angstrom is not None:
        if not (wavelength_angstrom > 0):
            raise field_error("wavelength_angstrom", wavelength_angstrom, "must be > 0 [Å]", ComError)
        phi = phi * (2 * np.pi / wavelength_angstrom * 1e-3)
    return phi


# ---------------------------------------------------------------- sectors


def com_angle(com) -> np.ndarray:
    """Direction of each CoM vector [deg] in ``[0, 360)``: counter-clockwise as displayed from ``+kx``
    (``atan2(-ky, kx)``; 90 deg points to row 0)."""
    c = np.asarray(com.vectors if isinstance(com, CoMResult) else com, dtype=np.float64)
    if c.ndim < 1 or c.shape[-1] != 2:
        raise field_error("com", f"shape {c.shape}", "must end in 2 vector components (ky, kx)", ComError)
    return np.degrees(np.arctan2(-c[..., 0], c[..., 1])) % 360.0


def com_sectors(com, n_sectors: int = 8, offset_deg: float = 0.0, *, min_magnitude: float = 0.0) -> np.ndarray:
    """Class label ``0 .. n_sectors - 1`` of each CoM vector by its direction.

    Sector ``s`` is centred on ``offset_deg + s * 360 / n_sectors`` (angles counter-clockwise as
    displayed from ``+kx``, :func:`com_angle`) and spans half a sector width either side: with the
    defaults, the paper's 8 polarization classes, sector 0 around +kx (right), 2 around up
    (towards row 0), 4 left, 6 down. To count angles clockwise as displayed (``atan2(ky, kx)``),
    pass the CoM with ``ky`` negated.

    Vectors not longer than ``min_magnitude`` (and NaN vectors) get ``-1``: no direction.

    Returns
    -------
    np.ndarray
        int64 labels, the shape of ``com`` less its last axis.
    """
    if int(n_sectors) != n_sectors or n_sectors < 2:
        raise field_error("n_sectors", n_sectors, "must be an integer >= 2", ComError)
    if not np.isfinite(offset_deg):
        raise field_error("offset_deg", offset_deg, "must be finite [deg]", ComError)
    n_sectors = int(n_sectors)
    c = np.asarray(com.vectors if isinstance(com, CoMResult) else com, dtype=np.float64)
    mag = np.hypot(c[..., 0], c[..., 1])
    phi = np.nan_to_num(com_angle(c))
    width = 360.0 / n_sectors
    labels = np.floor(((phi - offset_deg + width / 2) % 360.0) / width).astype(np.int64) % n_sectors
    labels[~(mag > min_magnitude)] = -1
    return labels


# ---------------------------------------------------------------- Friedel asymmetry


def _reflect_valid(ky: int, kx: int, cy: float, cx: float) -> np.ndarray:
    """Pixels whose point reflection ``2 c - i`` lies on the detector."""
    iy, ix = np.arange(ky)[:, None], np.arange(kx)[None, :]
    ry, rx = 2 * cy - iy, 2 * cx - ix
    return (ry >= 0) & (ry <= ky - 1) & (rx >= 0) & (rx <= kx - 1)


def _reflect(img: np.ndarray, cy: float, cx: float) -> np.ndarray:
    """``img`` point-reflected through ``(cy, cx)`` (half-integers), 0 where the mirror is off the detector."""
    ky, kx = img.shape[-2:]
    dy, dx = int(round(2 * cy - (ky - 1))), int(round(2 * cx - (kx - 1)))
    flipped = img[..., ::-1, ::-1]
    out = np.zeros_like(img)
    # out[i] = img[2c - i] = flipped[(k - 1) - (2c - i)] = flipped[i - d]
    ys, yd = (slice(0, ky - dy), slice(dy, ky)) if dy >= 0 else (slice(-dy, ky), slice(0, ky + dy))
    xs, xd = (slice(0, kx - dx), slice(dx, kx)) if dx >= 0 else (slice(-dx, kx), slice(0, kx + dx))
    out[..., yd, xd] = flipped[..., ys, xs]
    return out


def friedel_weights(shape: tuple[int, int], *, n_moments: int = 3, bands: int | Sequence[float] = 3, mask=None,
                    centre_px=None) -> np.ndarray:
    """The ``(n_features, ky, kx)`` weights of :func:`friedel_moments` (each odd under ``k -> -k``)."""
    return _friedel_weights(shape, n_moments, bands, mask, centre_px)[0]


def _friedel_weights(shape, n_moments, bands, mask, centre_px) -> tuple[np.ndarray, np.ndarray]:
    """(weights (F, ky, kx), support (ky, kx): the centrosymmetric mask within the outer band edge)."""
    ky, kx = (int(s) for s in shape)
    if int(n_moments) != n_moments or n_moments < 1:
        raise field_error("n_moments", n_moments, "must be an integer >= 1", ComError)
    cy, cx = _centre(ky, kx, centre_px)
    if 2 * cy != round(2 * cy) or 2 * cx != round(2 * cx):
        raise field_error("centre_px", centre_px, "must be whole or half pixels (the point reflection must "
                          "map pixels onto pixels)", ComError)
    valid = _reflect_valid(ky, kx, cy, cx)
    if not valid.any():
        raise field_error("centre_px", centre_px, "must lie on the detector", ComError)
    m = _mask(mask, ky, kx)
    sym = valid.astype(np.float64) if m is None else valid * np.minimum(m, _reflect(m, cy, cx))
    yy, xx = np.arange(ky)[:, None] - cy, np.arange(kx)[None, :] - cx
    r = np.hypot(yy, xx)
    phi = np.arctan2(-yy, xx)
    r_max = min(cy, cx, ky - 1 - cy, kx - 1 - cx) + 0.5
    if np.ndim(bands) == 0:
        if int(bands) != bands or bands < 1:
            raise field_error("bands", bands, "must be an integer >= 1 or increasing band edges [px]", ComError)
        edges = np.linspace(0.0, r_max, int(bands) + 1)
    else:
        edges = np.asarray(bands, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0:
            raise field_error("bands", bands, "must be an integer >= 1 or increasing band edges [px]", ComError)
    w = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        band = ((r >= lo) & (r < hi)) * sym
        for j in range(int(n_moments)):
            h = 2 * j + 1
            for f in (np.cos(h * phi), np.sin(h * phi)):
                g = band * f
                w.append(0.5 * (g - _reflect(g, cy, cx)))  # exactly odd under k -> -k
    return np.stack(w), sym * (r < edges[-1])


def friedel_feature_names(n_moments: int = 3, bands: int | Sequence[float] = 3) -> list[str]:
    """Names of :func:`friedel_moments` features in order, e.g. ``band0_m1_cos``."""
    n_bands = int(bands) if np.ndim(bands) == 0 else len(bands) - 1
    return [f"band{b}_m{2 * j + 1}_{f}" for b in range(n_bands) for j in range(int(n_moments)) for f in ("cos", "sin")]


def friedel_moments(data, *, n_moments: int = 3, bands: int | Sequence[float] = 3, mask=None, centre_px=None,
                    chunk: int | None = None) -> np.ndarray:
    """Odd angular moments of the Friedel asymmetry of each pattern: features for a linear classifier.

    A centrosymmetric crystal gives ``I(k) = I(-k)`` (Friedel's law holds for a thin specimen, and
    for a thick one on a zone axis with a centrosymmetric projection); a polar displacement breaks
    it. ``A(k) = I(k) - I(-k)`` (``-k``: the point reflection through ``centre_px``) is odd, so
    only odd angular harmonics ``h = 1, 3, ..., 2 n_moments - 1`` carry it. In radial band ``b``::

        f[b, h, cos] = sum_k A(k) cos(h phi) / (2 S),   f[b, h, sin] = same with sin(h phi)

    with ``phi = atan2(-ky, kx)`` (counter-clockwise as displayed from +kx) and ``S`` the pattern's
    intensity over the bands. ``h = 1`` is the dipole: the CoM direction within the band; ``h = 3``
    the three-fold asymmetry, and so on. The features are 0 for a centrosymmetric pattern and
    change sign under ``k -> -k``; they are dimensionless and independent of the dose.

    Parameters
    ----------
    data : array-like
        ``(scan_y, scan_x, ky, kx)`` or ``(n, ky, kx)`` (numpy, Dask, Zarr, FourD), read in blocks.
    n_moments : int
        Odd harmonics per band.
    bands : int or sequence of float
        Equal-width radial bands from 0 to the largest full circle about the centre, or their
        edges [px].
    mask : np.ndarray, optional
        ``(ky, kx)`` detector mask (bool or weights); made centrosymmetric (the smaller of ``w(k)``
        and ``w(-k)``) so that it cannot create an asymmetry of its own.
    centre_px : (float, float), optional
        Centre of the point reflection, whole or half pixels; default the geometric centre.
    chunk : int, optional
        Patterns per block, as in :func:`centre_of_mass`.

    Returns
    -------
    np.ndarray
        ``(*scan, n_bands * n_moments * 2)``, ordered (band, harmonic, cos/sin) in C order
        (:func:`friedel_feature_names`).
    """
    data, _ = _unwrap(data)
    scan, ky, kx = _check_data(data)
    w, support = _friedel_weights((ky, kx), n_moments, bands, mask, centre_px)
    wf = w.reshape(len(w), -1).T
    sf = support.ravel()
    done = [0]

    def fn(block: np.ndarray) -> np.ndarray:
        flat = block.reshape(block.shape[0], -1)
        total = flat @ sf
        ok = total > 0
        if not np.all(ok):
            i = done[0] + int(np.flatnonzero(~ok)[0])
            raise ComError(f"data: pattern {_where(i, scan)} sums to {total[~ok][0]:g} within the "
                           "Friedel bands; its asymmetry is undefined")
        done[0] += block.shape[0]
        # sum_k A(k) w(k) = 2 sum_k I(k) w(k) for an odd w
        return (flat @ wf) / total[:, None]

    return _map_patterns(data, fn, wf.shape[1], chunk)


def friedel_baseline(features_train, y_train, *, c: float = 1.0, max_iter: int = 2000, class_weight=None,
                     seed: int = 0):
    """A fitted scikit-learn pipeline: ``StandardScaler`` then ``LogisticRegression`` (multinomial, L2).

    Parameters
    ----------
    features_train : np.ndarray
        ``(..., n_features)`` (e.g. :func:`friedel_moments` output); leading axes are flattened.
    y_train : np.ndarray
        Class labels, one per feature row (same leading shape), at least two classes.
    c : float
        Inverse L2 regularisation strength (``LogisticRegression(C=c)``).
    class_weight : dict or "balanced", optional
        Passed to ``LogisticRegression``.

    Returns
    -------
    sklearn.pipeline.Pipeline
        ``predict`` / ``predict_proba`` on ``(N, n_features)``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features_train, dtype=np.float64)
    if x.ndim < 2:
        raise field_error("features_train", f"shape {x.shape}", "must be (..., n_features)", ComError)
    x = x.reshape(-1, x.shape[-1])
    y = np.asarray(y_train).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise field_error("y_train", f"{y.shape[0]} labels", f"must give one label per feature row ({x.shape[0]})",
                          ComError)
    if not np.all(np.isfinite(x)):
        raise field_error("features_train", "values", "must all be finite", ComError)
    if np.unique(y).size < 2:
        raise field_error("y_train", f"{np.unique(y).size} class", "needs at least two classes", ComError)
    if not (c > 0):
        raise field_error("c", c, "must be > 0", ComError)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, class_weight=class_weight,
                                                               random_state=seed))
    return model.fit(x, y)
