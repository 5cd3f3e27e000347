"""Register a position-averaged CBED (PACBED) frame onto the crystal axes of a simulation.

A raw camera frame is off centre, turned by an unknown angle, recorded at an unknown camera
length, on a background, with clipped pixels and compression artefacts. :func:`register_pacbed`
finds what it needs from the pattern itself and resamples it onto the grid a network trained
on simulations expects:

1. **Bright-field disc** (:func:`disc_candidates`, :func:`find_disc`). A first centre from the
   largest Otsu region; candidate radii from the peaks of the azimuthal mean of the radial
   intensity drop about it (Gaussian-derivative images). Each candidate is refined three times:
   on each of 256 rays the steepest drop within a narrowing band around the current circle
   (sub-pixel by a parabola), then a circle fitted by weighted least squares (weights: the drop)
   that drops rays more than 3 MADs off. The strongest circle (mean drop along it) is the disc.
   Why: the aperture edge is the one feature every PACBED shares whatever the thickness, tilt
   and interior contrast; gradients ignore constant and smooth backgrounds, a clipped plateau
   still ends at the edge, and a fit to a few hundred sub-pixel edge points averages noise and
   JPEG blocks away, while rays that catch an overlapping diffracted disc are outliers the
   robust fit drops. A Hough transform of Canny edges gives whole pixels and depends on edge
   thresholds that noise and JPEG upset; a symmetry centre would be biased by specimen tilt,
   which moves intensity inside the disc but not the disc. Limit: a thick specimen can hold a
   concentric dynamical fringe about as strong as the edge (SrTiO3 [001], 400 Å, 13.6 mrad:
   at 0.83 alpha). Candidates within :data:`CLOSE_EDGE` of the strongest are then reported in a
   warning, and a given ``mrad_per_px`` (the candidate nearest ``alpha / mrad_per_px``) or a
   ``reference`` (the candidate whose registration correlates best) decides.
2. **Calibration**: ``mrad_per_px = semiangle_mrad / radius_px`` unless given.
3. **Rotation from the mirror symmetry** (:func:`find_mirror_axis`). The frame is sampled on a
   polar grid (0.5 deg steps, one pixel in radius, from 0.2 to ``crop_alpha`` disc radii), the
   mean of each ring is removed and each ring is Fourier transformed along the angle. Only the
   angular harmonics the symmetry allows are kept (m = 0 mod 4 for ``4mm``; this drops a
   background gradient, m = 1, and an elliptical distortion, m = 2). The mirror correlation
   about an axis at ``theta`` is then a Fourier series in ``theta``, ``Re sum_m F_m^2
   exp(2 i m theta)``, evaluated on a 0.25 deg grid and refined by a bounded 1D search.
   ``symmetry_score`` is the fraction of the angular variance (all harmonics, rings weighted by
   radius) that the group average about the found axis keeps: 1 for a perfectly ``4mm``
   pattern, about 1/8 (``4mm``) for noise.
4. **Orientation**: a ``4mm`` pattern's mirrors come in two families 45 deg apart ([100] and
   [110]); the pattern alone does not say which is which (which is brighter changes with
   thickness). Without a ``reference`` the rotation is returned in ``[0, 45)`` (one mirror
   along the column axis) with a warning; with one (simulated patterns on the output grid, see
   :func:`resample_to_crystal`) the family whose resampled pattern's anisotropic part (less its
   ring means) correlates best with any reference's is chosen and the rotation is in
   ``[0, 90)``. ``2mm``: the same with 90/180 deg.
5. **Resampling** (:func:`resample_to_crystal`): the frame turned back by the rotation, cropped
   to ``+-crop_alpha * semiangle`` and resampled to ``out_shape`` (Gaussian prefilter when
   shrinking), with the mask of saturated pixels resampled alongside (an output pixel is
   flagged if any saturated pixel contributes) and a mask of pixels outside the frame.

Angles: ``rotation_deg`` is how far the crystal's axes are turned counter-clockwise, as
displayed with row 0 on top, from the frame's column axis (the convention of
:mod:`inverscope.datasets.degrade`): a simulation degraded with ``rotation_deg = r`` registers
to ``r`` modulo the symmetry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import minimize_scalar
from skimage.filters import threshold_otsu

from inverscope.core.errors import InverscopeError, field_error
from inverscope.datasets.degrade import regrid
from inverscope.datasets.io.images import saturation_level

#: Edges at least this strong relative to the strongest may be the disc (a warning; a reference decides).
CLOSE_EDGE = 0.8

#: Symmetries understood: order of the rotation axis.
SYMMETRIES = {"4mm": 4, "2mm": 2}


class RegistrationError(InverscopeError):
    """A frame cannot be registered as a PACBED pattern."""


@dataclass
class Disc:
    """A bright-field disc candidate: ``centre_px`` (row, col) and ``radius_px`` [px], edge ``contrast``,
    the fraction of rays on the fitted circle (``inlier_fraction``) and the edge ``strength``
    (mean drop along the circle relative to the strongest candidate's)."""

    centre_px: tuple[float, float]
    radius_px: float
    contrast: float
    inlier_fraction: float
    strength: float = 1.0


@dataclass
class RegisteredPattern:
    """A PACBED on crystal axes, with what was found and chosen on the way.

    Attributes
    ----------
    pattern : np.ndarray
        float32 ``out_shape``, frame units; pixel ``(i, j)`` sees the angle
        ``((i, j) - (n - 1) / 2) * out_mrad_per_px`` [mrad] (rows, cols) in the crystal frame.
    saturated : np.ndarray
        bool ``out_shape``: an output pixel that a saturated frame pixel contributes to.
    outside : np.ndarray
        bool ``out_shape``: an output pixel (a corner of the crop) that lies off the frame (set to 0).
    out_mrad_per_px : float
        Output pixel size [mrad].
    found : dict
        ``centre_px``, ``radius_px``, ``mrad_per_px``, ``rotation_deg``, ``symmetry_score``,
        ``disc_contrast``, ``saturation``, ``saturated_fraction`` (of the frame),
        ``reference_correlation`` (whole pattern, at the rotation chosen), ``mirror_family_correlation``
        and ``warnings``, plus the choices made (see :meth:`as_dict`).
    """

    pattern: np.ndarray
    saturated: np.ndarray
    outside: np.ndarray
    out_mrad_per_px: float
    found: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """What was found and chosen, JSON-ready (no arrays)."""
        return dict(self.found, out_mrad_per_px=self.out_mrad_per_px,
                    saturated_fraction_out=float(self.saturated.mean()),
                    outside_fraction_out=float(self.outside.mean()))

    @property
    def centre_px(self) -> tuple[float, float]:
        """Disc centre (row, col) in the frame [px]."""
        return tuple(self.found["centre_px"])

    @property
    def radius_px(self) -> float:
        """Disc radius in the frame [px]."""
        return self.found["radius_px"]

    @property
    def mrad_per_px(self) -> float:
        """Frame calibration used [mrad/px]."""
        return self.found["mrad_per_px"]

    @property
    def rotation_deg(self) -> float:
        """Counter-clockwise turn of the crystal axes in the frame [deg]."""
        return self.found["rotation_deg"]

    @property
    def symmetry_score(self) -> float | None:
        """Fraction of the angular variance that is symmetric about the axis found (None: no symmetry)."""
        return self.found["symmetry_score"]

    @property
    def warnings(self) -> list[str]:
        return self.found["warnings"]


# ---------------------------------------------------------------- the disc


def _as_frame(frame) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.ndim != 2 or min(arr.shape) < 16:
        raise field_error("frame", f"shape {arr.shape}", "must be a 2D image of at least 16 x 16 pixels",
                          RegistrationError)
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise field_error("frame", "values", "must all be finite", RegistrationError)
    if arr.min() == arr.max():
        raise RegistrationError("frame: constant image; no visible disc")
    return arr


def _first_centre(smooth: np.ndarray) -> np.ndarray:
    """Centroid (row, col) [px] of the largest region above the Otsu threshold."""
    labels, n = ndi.label(smooth > threshold_otsu(smooth))
    if n == 0:
        raise RegistrationError("frame: no visible disc (nothing above the Otsu threshold)")
    sizes = ndi.sum_labels(np.ones_like(smooth), labels, index=np.arange(1, n + 1))
    return np.array(ndi.center_of_mass(labels == 1 + int(np.argmax(sizes))))


def _radial_derivative(grad_r, grad_c, centre, r: np.ndarray, n_rays: int = 256):
    """(n_rays, len(r)) intensity derivative along rays from `centre`, and the rays' unit vectors (row, col)."""
    phi = 2 * np.pi * np.arange(n_rays) / n_rays
    ur, uc = -np.sin(phi)[:, None], np.cos(phi)[:, None]
    coords = [centre[0] + r[None] * ur, centre[1] + r[None] * uc]
    g = (ndi.map_coordinates(grad_r, coords, order=1, mode="nearest") * ur
         + ndi.map_coordinates(grad_c, coords, order=1, mode="nearest") * uc)
    return g, np.stack([ur[:, 0], uc[:, 0]], 1)


def _candidates(grad_r, grad_c, centre, lo: float, hi: float, n_max: int = 3) -> np.ndarray:
    """Radii [px] of the strongest concentric drops about `centre`: the highest local maxima of the
    azimuthal mean of the radial intensity drop (smoothed over 1 px) that reach half the highest."""
    r = np.arange(max(lo, 1.0), hi, 0.25)
    g, _ = _radial_derivative(grad_r, grad_c, centre, r)
    m = ndi.gaussian_filter1d(-g.mean(axis=0), 4.0)
    peak = np.flatnonzero((m[1:-1] > m[:-2]) & (m[1:-1] >= m[2:])) + 1
    peak = peak[m[peak] >= 0.5 * m.max()] if m.max() > 0 else peak[:0]
    if peak.size == 0:
        raise RegistrationError(f"frame: no visible disc (no intensity drop between {lo:g} and {hi:g} px)")
    return r[peak[np.argsort(m[peak])[::-1][:n_max]]]


def _edge_points(grad_r, grad_c, centre, radius, band, n_rays: int = 256, step: float = 0.25):
    """Per ray, the sub-pixel radius of the steepest drop within `band` of `radius` [px].

    Returns the radii [px], the drops (0 where the ray has no local maximum of the drop in the band)
    and the rays' unit vectors.
    """
    r = np.arange(max(radius - band - step, 1.0), radius + band + 2 * step, step)
    g, u = _radial_derivative(grad_r, grad_c, centre, r, n_rays)
    drop = -g
    local = np.zeros_like(drop, dtype=bool)
    local[:, 1:-1] = (drop[:, 1:-1] > drop[:, :-2]) & (drop[:, 1:-1] >= drop[:, 2:]) & (drop[:, 1:-1] > 0)
    k = np.argmax(np.where(local, drop, -np.inf), axis=1)
    rows, kk = np.arange(n_rays), np.clip(k, 1, r.size - 2)
    dm, d0, dp = drop[rows, kk - 1], drop[rows, kk], drop[rows, kk + 1]
    den = 2 * d0 - dm - dp
    offset = np.where(den > 0, 0.5 * (dp - dm) / np.where(den > 0, den, 1), 0.0)
    return r[kk] + np.clip(offset, -1, 1) * step, np.where(local[rows, k], d0, 0.0), u


def _fit_edge(grad_r, grad_c, centre, radius):
    """Refine a circle on the frame's edges: three rounds of edge points in a narrowing band and a robust fit."""
    keep = np.zeros(1, bool)
    for band in (0.06, 0.03, 0.02):
        r_edge, strength, u = _edge_points(grad_r, grad_c, centre, radius, max(band * radius, 1.5))
        centre, radius, keep = fit_circle(centre + r_edge[:, None] * u, strength)
    g, _ = _radial_derivative(grad_r, grad_c, centre, np.array([radius]))
    return centre, radius, float(keep.mean()), float(-g.mean())


def fit_circle(points: np.ndarray, weights: np.ndarray, n_iter: int = 3) -> tuple[np.ndarray, float, np.ndarray]:
    """Weighted algebraic (Kasa) circle fit with rejection of points more than 3 MADs off.

    Returns the centre (row, col) [px], the radius [px] and the boolean mask of points kept.
    """
    keep = weights > 0
    centre, radius = points.mean(axis=0), 1.0
    for _ in range(n_iter):
        if keep.sum() < 8:
            break
        p, w = points[keep], np.sqrt(weights[keep])
        a = np.column_stack([p[:, 0], p[:, 1], np.ones(len(p))]) * w[:, None]
        sol = np.linalg.lstsq(a, -(p ** 2).sum(axis=1) * w, rcond=None)[0]
        centre = -0.5 * sol[:2]
        radius = math.sqrt(max(centre @ centre - sol[2], 1e-12))
        res = np.hypot(*(points - centre).T) - radius
        mad = 1.4826 * np.median(np.abs(res[keep] - np.median(res[keep])))
        keep = (weights > 0) & (np.abs(res) <= max(3 * mad, 0.5))
    return centre, radius, keep


def _ring_mean(smooth, centre, r0, r1) -> float:
    """Mean of `smooth` over the ring ``r0 <= r < r1`` [px] about `centre` (nan if none of it is on the frame)."""
    lo = [max(int(c - r1), 0) for c in centre]
    hi = [min(int(c + r1) + 2, n) for c, n in zip(centre, smooth.shape)]
    box = smooth[lo[0]:hi[0], lo[1]:hi[1]]
    rr = np.hypot(*(np.indices(box.shape) + np.array(lo)[:, None, None] - np.asarray(centre)[:, None, None]))
    sel = (rr >= r0) & (rr < r1)
    return float(box[sel].mean()) if sel.any() else float("nan")


def _make_disc(smooth, span, centre, radius, kept, drop, top) -> Disc:
    contrast = (_ring_mean(smooth, centre, 0.8 * radius, 0.95 * radius)
                - _ring_mean(smooth, centre, 1.05 * radius, 1.2 * radius)) / span
    return Disc((float(centre[0]), float(centre[1])), float(radius), float(contrast), kept, float(drop / top))


def _visible(disc: Disc, lo: float, hi: float) -> str | None:
    """Why `disc` cannot be the bright-field disc, or None."""
    if not (disc.contrast >= 0.05 and disc.inlier_fraction >= 0.1):
        return (f"frame: no visible disc (edge contrast {disc.contrast:.3f}, needs >= 0.05; "
                f"{100 * disc.inlier_fraction:.0f} % of the edge consistent, needs >= 10 %)")
    if not lo <= disc.radius_px <= hi:
        return f"radius_range_px: disc radius {disc.radius_px:.1f} px is outside the allowed [{lo:g}, {hi:g}] px"
    return None


def disc_candidates(frame: np.ndarray, radius_range_px: tuple[float, float] | None = None) -> list[Disc]:
    """Circular edges about one centre that could be the bright-field disc, strongest first.

    A thick specimen's PACBED can hold concentric dynamical fringes nearly as strong as the
    aperture edge (SrTiO3 [001], 400 Å, 13.6 mrad: one at 0.83 alpha); :func:`register_pacbed`
    picks among these with a given calibration or a reference, else takes the strongest.

    Parameters
    ----------
    frame : np.ndarray
        2D frame [counts].
    radius_range_px : (float, float), optional
        Allowed disc radius [px]; default ``(4, min(frame.shape) / 2)``.

    Returns
    -------
    list of Disc
        Each with centre (row, col) [px], radius [px], edge contrast (the intensity drop across
        the edge as a fraction of the raw frame's 1-99 % range), the fraction of rays the circle fit
        kept and the strength (mean radial drop on the circle relative to the strongest).
    """
    frame = _as_frame(frame)
    full = (4.0, min(frame.shape) / 2)
    lo, hi = radius_range_px or full
    if not (0 < lo < hi and math.isfinite(hi)):
        raise field_error("radius_range_px", radius_range_px, "must be (min, max) [px] with 0 < min < max",
                          RegistrationError)
    smooth = ndi.gaussian_filter(frame, 2.0)
    centre0 = _first_centre(smooth)
    grads = {1.0: [ndi.gaussian_filter(frame, 1.0, order=o) for o in ((1, 0), (0, 1))]}
    fits = []
    for r0 in _candidates(*grads[1.0], centre0, min(lo, full[0]), max(hi, full[1])):
        sigma = float(np.clip(np.round(r0 / 25) / 2, 1.0, 4.0))      # r / 50 in steps of 0.5 px
        if sigma not in grads:
            grads[sigma] = [ndi.gaussian_filter(frame, sigma, order=o) for o in ((1, 0), (0, 1))]
        fits.append(_fit_edge(*grads[sigma], centre0, r0))
    top = max(max(f[3] for f in fits), 1e-300)
    span = max(float(np.subtract(*np.percentile(frame, [99, 1]))), 1e-12)
    discs = [_make_disc(smooth, span, *f, top) for f in sorted(fits, key=lambda f: -f[3])]
    kept = [d for d in discs if _visible(d, lo, hi) is None]
    if not kept:
        raise RegistrationError(_visible(discs[0], lo, hi))
    unique = []
    for d in kept:
        if all(abs(d.radius_px - u.radius_px) > 2 for u in unique):
            unique.append(d)
    return unique


def find_disc(frame: np.ndarray, radius_range_px: tuple[float, float] | None = None) -> Disc:
    """The strongest circular edge of a CBED/PACBED frame (module docstring, step 1; :func:`disc_candidates`)."""
    return disc_candidates(frame, radius_range_px)[0]


# ---------------------------------------------------------------- the mirror axis


def _ring_spectra(image, centre, r_lo: float, r_hi: float, n_phi: int = 720) -> tuple[np.ndarray, np.ndarray]:
    """Angular Fourier transforms (n_r, n_phi) of mean-free rings from `r_lo` to `r_hi` [px], and the radii.

    Angle ``phi`` runs counter-clockwise from the column axis as displayed (row 0 on top).
    """
    r = np.arange(r_lo, r_hi, 1.0)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    coords = [centre[0] - r[:, None] * np.sin(phi)[None], centre[1] + r[:, None] * np.cos(phi)[None]]
    rings = ndi.map_coordinates(image, coords, order=1, mode="nearest")
    return np.fft.fft(rings - rings.mean(axis=1, keepdims=True), axis=1), r


def find_mirror_axis(image: np.ndarray, centre_px, r_lo_px: float, r_hi_px: float,
                     symmetry: str = "4mm") -> tuple[float, float]:
    """The mirror axis of a pattern with `symmetry` about `centre_px` (see the module docstring, step 3).

    Parameters
    ----------
    image : np.ndarray
        2D pattern (a frame).
    centre_px : (float, float)
        Rotation centre (row, col) [px].
    r_lo_px, r_hi_px : float
        Rings used [px].
    symmetry : {'4mm', '2mm'}
        Point group of the pattern.

    Returns
    -------
    theta_deg : float
        Angle of a mirror axis, counter-clockwise from the column axis [deg], in ``[0, 180 / n)``.
    score : float
        Fraction of the angular variance kept by the group average about that axis (1 = perfect).
    """
    n = SYMMETRIES[symmetry]
    spec, r = _ring_spectra(np.asarray(image, dtype=np.float64), centre_px, r_lo_px, r_hi_px)
    m = np.rint(np.fft.fftfreq(spec.shape[1], 1.0 / spec.shape[1])).astype(int)
    allowed = (m % n == 0) & (m != 0)
    power = r[:, None] * np.abs(spec) ** 2
    total = max(float(power.sum()), 1e-300)
    kept = float(power[:, allowed].sum())
    squares = (r[:, None] * spec[:, allowed] ** 2).sum(axis=0)
    m_allowed = m[allowed]

    def score(theta_deg: float) -> float:
        mirror = np.real(np.sum(squares * np.exp(2j * m_allowed * math.radians(theta_deg))))
        return (kept + mirror) / (2 * total)

    period = 180.0 / n
    grid = np.arange(0.0, period, 0.25)
    best = grid[int(np.argmax([score(t) for t in grid]))]
    res = minimize_scalar(lambda t: -score(t), bounds=(best - 0.25, best + 0.25), method="bounded",
                          options={"xatol": 1e-3})
    return float(res.x % period), float(-res.fun)


# ---------------------------------------------------------------- resampling and the whole registration


def resample_to_crystal(image: np.ndarray, mrad_per_px: float, semiangle_mrad: float, *, centre_px=None,
                        rotation_deg: float = 0.0, crop_alpha: float = 2.0,
                        out_shape: tuple[int, int] = (128, 128)) -> tuple[np.ndarray, float]:
    """Turn a pattern back to crystal axes, crop it to ``+-crop_alpha * semiangle`` and resample it.

    Parameters
    ----------
    image : np.ndarray
        2D pattern (a frame, or a simulation on crystal axes with ``rotation_deg = 0``).
    mrad_per_px : float
        Its pixel size [mrad].
    semiangle_mrad : float
        Convergence semiangle alpha [mrad].
    centre_px : (float, float), optional
        (row, col) of the zero angle [px]; default ``(rows // 2, cols // 2)``, a simulation's centre.
    rotation_deg : float
        Counter-clockwise turn of the crystal axes in `image` [deg]; it is undone.
    crop_alpha : float
        Half-width of the output in units of alpha.
    out_shape : (int, int)
        Output size [px].

    Returns
    -------
    pattern : np.ndarray
        float32 `out_shape`; pixel ``(i, j)`` sees ``((i, j) - (out_shape - 1) / 2) * out_mrad_per_px``
        [mrad] (rows, cols), 0 outside `image`.
    out_mrad_per_px : float
        ``2 * crop_alpha * semiangle_mrad / max(out_shape)`` [mrad].
    """
    if np.ndim(image) != 2:
        raise field_error("image", f"shape {np.shape(image)}", "must be a 2D pattern", RegistrationError)
    if mrad_per_px is None:
        raise field_error("mrad_per_px", None, "must be > 0 [mrad]", RegistrationError)
    _check_args(semiangle_mrad, mrad_per_px, crop_alpha, out_shape, None, None)
    out_mrad = 2.0 * crop_alpha * semiangle_mrad / max(out_shape)
    out_centre = ((out_shape[0] - 1) / 2.0, (out_shape[1] - 1) / 2.0)
    pattern = regrid(image, mrad_per_px, tuple(out_shape), out_mrad, src_centre_px=centre_px,
                     out_centre_px=out_centre, rotation_deg=-rotation_deg, order=1)
    return pattern, out_mrad


def _pearson(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
    x, y = a[valid] - a[valid].mean(), b[valid] - b[valid].mean()
    return float((x * y).sum() / max(math.sqrt(float((x * x).sum() * (y * y).sum())), 1e-300))


def _check_args(semiangle_mrad, mrad_per_px, crop_alpha, out_shape, symmetry, saturation) -> None:
    if not (semiangle_mrad > 0 and math.isfinite(semiangle_mrad)):
        raise field_error("semiangle_mrad", semiangle_mrad, "must be > 0 [mrad]", RegistrationError)
    if mrad_per_px is not None and not (mrad_per_px > 0 and math.isfinite(mrad_per_px)):
        raise field_error("mrad_per_px", mrad_per_px, "must be > 0 [mrad] or None (calibrate from the disc)",
                          RegistrationError)
    if not (crop_alpha >= 1.0 and math.isfinite(crop_alpha)):
        raise field_error("crop_alpha", crop_alpha, "must be >= 1 (the crop must hold the disc)", RegistrationError)
    if np.ndim(out_shape) != 1 or len(out_shape) != 2 or min(int(v) for v in out_shape) < 8:
        raise field_error("out_shape", out_shape, "must be two integers >= 8", RegistrationError)
    if symmetry is not None and symmetry not in SYMMETRIES:
        raise field_error("symmetry", symmetry, f"allowed: {', '.join(SYMMETRIES)} or None", RegistrationError)
    if saturation is not None and not (saturation > 0):
        raise field_error("saturation", saturation, "must be > 0 [counts] or None (detect)", RegistrationError)


def _check_crop(shape, centre, crop_px: float, crop_alpha: float) -> None:
    """The crop circle must lie on the frame."""
    room = min(centre[0], centre[1], shape[0] - 1 - centre[0], shape[1] - 1 - centre[1])
    if crop_px > room + 0.5:
        fit = crop_alpha * max(room, 0.0) / crop_px
        raise RegistrationError(f"frame: shape {tuple(shape)} is too small for crop_alpha={crop_alpha:g} "
                                f"({crop_px:.0f} px around the centre ({centre[0]:.0f}, {centre[1]:.0f}), "
                                f"{room:.0f} px to the nearest edge); use crop_alpha <= {fit:.2f}")


def _anisotropic(img: np.ndarray) -> np.ndarray:
    """`img` less its mean on each one-pixel ring about the output centre (what a rotation changes)."""
    rows, cols = np.indices(img.shape)
    ring = np.rint(np.hypot(rows - (img.shape[0] - 1) / 2, cols - (img.shape[1] - 1) / 2)).astype(int).ravel()
    means = np.bincount(ring, img.ravel()) / np.maximum(np.bincount(ring), 1)
    return img - means[ring].reshape(img.shape)


def _best_rotation(frame, centre, mrad, semiangle, crop_alpha, out_shape, rotations, reference):
    """The rotation among `rotations` whose resampled frame's anisotropic part correlates best with any
    reference's, those correlations, and the whole-pattern correlation at that rotation."""
    refs = np.asarray(reference, dtype=np.float64)
    refs = refs[None] if refs.ndim == 2 else refs
    if refs.ndim != 3 or refs.shape[1:] != tuple(out_shape):
        raise field_error("reference", f"shape {refs.shape}", f"must be {tuple(out_shape)} or "
                          f"(k, *{tuple(out_shape)}): patterns on the output grid (resample_to_crystal)",
                          RegistrationError)
    every = np.ones(out_shape, bool)
    imgs = [resample_to_crystal(frame, mrad, semiangle, centre_px=centre, rotation_deg=rot, crop_alpha=crop_alpha,
                                out_shape=out_shape)[0] for rot in rotations]
    aniso_refs = [_anisotropic(ref) for ref in refs]
    corr = [max(_pearson(_anisotropic(img), ref, every) for ref in aniso_refs) for img in imgs]
    best = int(np.argmax(corr))
    return rotations[best], corr, max(_pearson(imgs[best], ref, every) for ref in refs)


def _rotation(image, disc: Disc, crop_px, symmetry, reference, rotation_deg, geometry, warnings: list) -> dict:
    """Rotation [deg], its period, the symmetry score and the reference correlations (steps 3-4)."""
    out = {"rotation_deg": float(rotation_deg or 0.0), "rotation_period_deg": None, "symmetry_score": None,
           "reference_correlation": None, "mirror_family_correlation": None}
    rotations = [out["rotation_deg"]]
    if rotation_deg is None and symmetry is not None:
        n = SYMMETRIES[symmetry]
        theta, score = find_mirror_axis(ndi.gaussian_filter(image, 1.0), disc.centre_px, 0.2 * disc.radius_px,
                                        crop_px, symmetry)
        out.update(rotation_deg=theta, rotation_period_deg=180.0 / n, symmetry_score=score)
        rotations = [theta, theta + 180.0 / n]
        if score < 0.3:
            warnings.append(f"symmetry score {score:.2f} < 0.3: the pattern is barely {symmetry} about the disc centre "
                            "(specimen tilt, another symmetry or heavy noise); the rotation is uncertain")
        if reference is None:
            warnings.append(f"rotation known modulo {180.0 / n:g} deg: the two {symmetry} mirror families are told "
                            "apart only with a reference")
    if reference is None:
        return out
    rot, corr, match = _best_rotation(image, disc.centre_px, *geometry, rotations, reference)
    out.update(rotation_deg=float(rot), reference_correlation=float(match), mirror_family_correlation=corr)
    if len(rotations) == 2:
        out["rotation_period_deg"] = 2 * out["rotation_period_deg"]
        if abs(corr[0] - corr[1]) < 0.1:
            warnings.append(f"the two mirror families correlate {corr[0]:.3f} and {corr[1]:.3f} with the reference "
                            "(anisotropic parts); the choice between them is uncertain")
    return out


def _saturation_mask(raw: np.ndarray, image: np.ndarray, saturation: float | None) -> tuple[float | None, np.ndarray]:
    """The saturation level (given, or detected as :func:`~inverscope.datasets.io.images.read_pattern` does)
    and its mask."""
    level = float(saturation) if saturation is not None else saturation_level(image, raw.dtype)[0]
    return level, (image >= level) if level is not None else np.zeros(image.shape, bool)


def _calibration(disc: Disc, semiangle_mrad, mrad_per_px, warnings: list) -> tuple[float, str]:
    from_disc = semiangle_mrad / disc.radius_px
    if mrad_per_px is None:
        return from_disc, "disc"
    if abs(from_disc / mrad_per_px - 1) > 0.03:
        warnings.append(f"mrad_per_px {mrad_per_px:g} given; the disc ({disc.radius_px:.1f} px for {semiangle_mrad:g} "
                        f"mrad) implies {from_disc:.4g} ({100 * (from_disc / mrad_per_px - 1):+.1f} %)")
    return float(mrad_per_px), "given"


def _solve(image, disc: Disc, semiangle_mrad, mrad_per_px, crop_alpha, out_shape, symmetry, reference,
           rotation_deg) -> dict:
    """Calibration, crop check and rotation for one candidate disc."""
    warnings: list[str] = []
    mrad, source = _calibration(disc, semiangle_mrad, mrad_per_px, warnings)
    crop_px = crop_alpha * semiangle_mrad / mrad
    _check_crop(image.shape, disc.centre_px, crop_px, crop_alpha)
    geometry = (mrad, semiangle_mrad, crop_alpha, out_shape)
    rot = _rotation(image, disc, crop_px, symmetry, reference, rotation_deg, geometry, warnings)
    return {"disc": disc, "mrad_per_px": mrad, "mrad_per_px_source": source, "rotation": rot, "warnings": warnings}


def _choose(image, discs: list[Disc], semiangle_mrad, mrad_per_px, reference, solve) -> dict:
    """One candidate: nearest a given calibration, else, among those nearly as strong as the strongest
    (:data:`CLOSE_EDGE`), the one best correlated with a reference, else the strongest."""
    if mrad_per_px is not None:
        return solve(min(discs, key=lambda d: abs(d.radius_px * mrad_per_px / semiangle_mrad - 1)))
    if reference is None or len(discs) == 1:
        sol = solve(discs[0])
        close = [d.radius_px for d in discs[1:] if d.strength >= CLOSE_EDGE]
        if close:
            radii = ", ".join(f"{r:.1f}" for r in close)
            sol["warnings"].append(f"other concentric edges nearly as strong at {radii} px "
                                   f"(disc taken at {discs[0].radius_px:.1f} px); give mrad_per_px, a reference or "
                                   "a narrower radius_range_px if the calibration looks wrong")
        return sol
    sols, errors = [], []
    for d in [d for d in discs if d.strength >= CLOSE_EDGE]:
        try:
            sols.append(solve(d))
        except RegistrationError as err:
            errors.append(err)
    if not sols:
        raise errors[0]
    return max(sols, key=lambda s: s["rotation"]["reference_correlation"])


def register_pacbed(frame: np.ndarray, semiangle_mrad: float, *, mrad_per_px: float | None = None,
                    crop_alpha: float = 2.0, out_shape: tuple[int, int] = (128, 128), symmetry: str | None = "4mm",
                    saturation: float | None = None, reference: np.ndarray | None = None,
                    rotation_deg: float | None = None,
                    radius_range_px: tuple[float, float] | None = None) -> RegisteredPattern:
    """Register a raw PACBED frame onto crystal axes and a fixed angular grid (see the module docstring).

    Parameters
    ----------
    frame : np.ndarray
        2D camera frame [counts] (any dtype; integer dtypes tell the saturation level).
    semiangle_mrad : float
        Convergence semiangle alpha [mrad]; calibrates the frame from the disc radius.
    mrad_per_px : float, optional
        Frame calibration [mrad/px] to use instead; the disc candidate nearest ``alpha / mrad_per_px``
        gives the centre (a warning if it is more than 3 % off).
    crop_alpha : float
        Half-width of the output [alpha]; the circle of this radius must lie on the frame.
    out_shape : (int, int)
        Output size [px]; output pixel size ``2 * crop_alpha * semiangle_mrad / max(out_shape)`` [mrad].
    symmetry : {'4mm', '2mm'} or None
        Point group used to find the rotation; None keeps the frame's orientation.
    saturation : float, optional
        Clip level [counts]; default detected (the integer dtype's maximum, or a repeated maximum).
    reference : np.ndarray, optional
        One or more (k, *out_shape) simulated patterns on the output grid (``resample_to_crystal``).
        They pick the mirror family (the rotation is then known modulo 360 / n, not 180 / n) and,
        when several concentric edges could be the disc, the one whose registration matches best.
    rotation_deg : float, optional
        Known rotation [deg]; skips the symmetry search.
    radius_range_px : (float, float), optional
        Allowed disc radius [px]; default ``(4, min(frame.shape) / 2)``.

    Returns
    -------
    RegisteredPattern
        ``pattern``: float32 `out_shape` in frame units on crystal axes, pixel size
        ``out_mrad_per_px`` [mrad]; ``saturated`` and ``outside`` masks; ``found``: ``centre_px``
        (row, col) [px], ``radius_px`` [px], ``mrad_per_px`` [mrad/px], ``rotation_deg`` [deg],
        ``symmetry_score``, ``warnings`` and the choices made (also as properties).

    Raises
    ------
    RegistrationError
        Bad arguments, no visible disc, a disc radius outside `radius_range_px`, a frame too small for the crop.

    Examples
    --------
    A 10 mrad bright-field disc recorded off centre at 0.5 mrad/px (16-bit, with shot noise),
    found again from the frame alone:

    >>> import numpy as np
    >>> import inverscope as isc
    >>> kx, ky = np.mgrid[-40:41, -40:41] * 0.5   # angles of an 81 x 81 pattern at 0.5 mrad [mrad]
    >>> disc = (kx ** 2 + ky ** 2 < 10.0 ** 2) / 1.0
    >>> camera = isc.CameraModel(frame_shape=(128, 128), mrad_per_px=0.5, centre_px=(60.0, 70.0), bit_depth=16)
    >>> frame, truth = isc.degrade(disc / disc.sum(), camera, np.random.default_rng(0), sampling_mrad=0.5)
    >>> reg = isc.register_pacbed(frame, 10.0, out_shape=(32, 32), symmetry=None)
    >>> tuple(round(c, 1) for c in reg.centre_px), round(reg.mrad_per_px, 2)   # (row, col) [px], [mrad/px]
    ((60.0, 70.0), 0.5)
    >>> reg.pattern.shape, reg.out_mrad_per_px   # 2 alpha on each side, [mrad]
    ((32, 32), 1.25)
    """
    _check_args(semiangle_mrad, mrad_per_px, crop_alpha, out_shape, symmetry, saturation)
    raw = np.asarray(frame)
    image = _as_frame(raw)
    shape = tuple(int(v) for v in out_shape)
    sol = _choose(image, disc_candidates(image, radius_range_px), semiangle_mrad, mrad_per_px, reference,
                  lambda d: _solve(image, d, semiangle_mrad, mrad_per_px, crop_alpha, shape, symmetry, reference,
                                   rotation_deg))
    disc, mrad, warnings = sol["disc"], sol["mrad_per_px"], sol["warnings"]
    level, mask = _saturation_mask(raw, image, saturation)
    kw = dict(centre_px=disc.centre_px, rotation_deg=sol["rotation"]["rotation_deg"], crop_alpha=crop_alpha,
              out_shape=shape)
    pattern, out_mrad = resample_to_crystal(image, mrad, semiangle_mrad, **kw)
    saturated = resample_to_crystal(mask.astype(np.float32), mrad, semiangle_mrad, **kw)[0] > 1e-3
    outside = resample_to_crystal(np.ones(image.shape, np.float32), mrad, semiangle_mrad, **kw)[0] < 1 - 1e-3
    if saturated.any():
        warnings.append(f"{100 * saturated.mean():.1f} % of the output touched by saturated pixels (mask `saturated`)")
    found = {"centre_px": list(disc.centre_px), "radius_px": disc.radius_px, "disc_contrast": disc.contrast,
             "disc_inlier_fraction": disc.inlier_fraction, "mrad_per_px": mrad,
             "mrad_per_px_source": sol["mrad_per_px_source"], "semiangle_mrad": float(semiangle_mrad),
             **sol["rotation"], "symmetry": symmetry, "saturation": level, "saturated_fraction": float(mask.mean()),
             "crop_alpha": float(crop_alpha), "out_shape": list(shape), "frame_shape": list(image.shape),
             "warnings": warnings}
    return RegisteredPattern(pattern, saturated, outside, out_mrad, found)
