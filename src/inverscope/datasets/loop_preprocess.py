"""Preprocessing of switching loops that survives data it was never tuned on.

Real BEPS maps differ from the bundled PZT loops in ways one global standardization does not
survive: a heavy-tailed response (median |response| 3e-5 where single pixels reach 0.1), loops
whose amplitude varies tenfold across the map, waveforms that start anywhere in the cycle, complex
responses. :func:`prepare_loops` looks at the data first and records what it found and what it
chose (:attr:`PreparedLoops.report`, printed by :func:`format_check`):

1. **Waveform** (:func:`analyse_waveform`): the up and down branches are read from the voltage
   itself (a point is on the up branch when the waveform rose to it, the waveform taken as
   periodic), with the number of turning points, the start phase and a check that the waveform
   is a closed loop (it ends where it starts, and each branch sweeps at least 80 % of the
   voltage range).
2. **Outlier pixels** (:func:`find_outlier_pixels`): a pixel's amplitude is the 5-95 % span of its
   loop; on a log scale, a pixel more than ``threshold`` robust standard deviations (1.4826 MAD)
   above the median, or ``2 * threshold`` below it, is an outlier, as is a pixel with fewer than
   half of its values finite, and (on a grid) a pixel that stands out from its 5 x 5 neighbourhood. Outliers are excluded from fitting the scaling and from training,
   but still transformed (and so still predicted) and reported as a map and a count.
3. **Cleaning**: non-finite values interpolated and the three points farthest from a
   Savitzky-Golay fit replaced, per loop (:mod:`inverscope.datasets.preprocess`, Agar et al. 2019).
4. **Scaling**, one of

   - ``global``: one mean and standard deviation (the published rule), fitted on inliers;
   - ``robust``: one median and interquartile range (IQR / 1.349, a standard deviation for
     Gaussian data), fitted on inliers;
   - ``per_pixel``: each loop less its own median, divided by its own 5-95 % span over the
     inliers' median span; the per-pixel offset and amplitude are kept as maps.

   ``auto`` takes ``global`` when no pixel is an outlier and inlier amplitudes vary less than
   :data:`AMPLITUDE_SPREAD` (90th over 10th percentile), ``per_pixel`` when they vary more, else
   ``robust``.

Angles are in degrees, voltages in volts, the response in the file's units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from inverscope.core.errors import InverscopeError
from inverscope.datasets.preprocess import interpolate_nonfinite, savgol_outliers

__all__ = ["AMPLITUDE_SPREAD", "SCALINGS", "LoopScaler", "PreparedLoops", "Waveform", "analyse_waveform",
           "find_outlier_pixels", "format_check", "prepare_loops"]

#: 90th over 10th percentile of inlier loop amplitudes above which ``auto`` scales per pixel
AMPLITUDE_SPREAD = 3.0
SCALINGS = ("auto", "global", "robust", "per_pixel")


@dataclass
class Waveform:
    """The DC waveform of a loop, as found from the voltage.

    Attributes
    ----------
    voltage : ndarray
        (steps,) [V].
    up : ndarray
        (steps,) bool: the waveform rose to this point (periodic).
    turning_points : list of int
        Indices where the sweep direction changes (the waveform taken as periodic); two per cycle.
    v_min, v_max : float
        Range [V].
    start : str
        Where the cycle starts, e.g. ``'0 V rising'``, ``'+max falling'``.
    """

    voltage: np.ndarray
    up: np.ndarray
    turning_points: list[int]
    v_min: float
    v_max: float
    start: str

    def as_dict(self) -> dict:
        return {"steps": int(self.voltage.size), "v_min": self.v_min, "v_max": self.v_max,
                "turning_points": self.turning_points, "cycles": len(self.turning_points) // 2,
                "start": self.start, "up_steps": int(self.up.sum()), "down_steps": int((~self.up).sum())}


def analyse_waveform(voltage) -> Waveform:
    """Branches, turning points and start phase of a loop's voltage; refuses what is not a closed loop.

    Raises
    ------
    InverscopeError
        Not a finite 1D vector of >= 4 points, constant, never turning around, not ending where it
        starts, or a branch that sweeps less than 80 % of the range.
    """
    v = np.asarray(voltage, dtype=np.float64)
    if v.ndim != 1 or v.size < 4 or not np.all(np.isfinite(v)):
        raise InverscopeError(f"voltage: need a finite 1D waveform of at least 4 points, got shape {v.shape}")
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo
    if not span > 0:
        raise InverscopeError("voltage: the waveform is constant; a hysteresis loop needs a voltage sweep")
    d = np.diff(v)
    if not (d > 0).any() or not (d < 0).any():
        raise InverscopeError("voltage: the waveform never turns around (a ramp, not a loop); "
                              "a loop needs an up and a down sweep")
    step = float(np.max(np.abs(d)))
    if abs(v[-1] - v[0]) > 1.5 * step + 1e-12 * span:
        raise InverscopeError(f"voltage: not a closed loop: it starts at {v[0]:.4g} V and ends at {v[-1]:.4g} V "
                              f"(largest step {step:.3g} V)")
    up = v > np.roll(v, 1)
    for name, sel in (("up", up), ("down", ~up)):
        covered = float(v[sel].max() - v[sel].min()) if sel.sum() > 1 else 0.0
        if covered < 0.8 * span:
            raise InverscopeError(f"voltage: not a closed loop: the {name} branch sweeps {covered:.3g} of "
                                  f"{span:.3g} V (needs >= 80 %)")
    periodic = np.append(d, v[0] - v[-1])              # the step back to the start closes the cycle
    nz = np.flatnonzero(periodic)
    s = np.sign(periodic[nz])
    turning = sorted(int(nz[i]) for i in np.flatnonzero(s != np.roll(s, 1))) if nz.size else []
    mid = (hi + lo) / 2
    where = ("+max" if v[0] >= hi - 0.05 * span else "-max" if v[0] <= lo + 0.05 * span
             else "mid" if abs(v[0] - mid) <= 0.05 * span else f"{v[0]:.3g} V")
    return Waveform(v, up, turning, lo, hi, f"{where} {'rising' if d[np.flatnonzero(d)[0]] > 0 else 'falling'}")


def _amplitudes(flat: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        lo, hi = np.nanpercentile(flat, [5, 95], axis=1)
    return hi - lo


#: A pixel this many times stronger than the median of its 5 x 5 neighbourhood can be a local outlier
LOCAL_RATIO = 3.0


def find_outlier_pixels(flat_loops: np.ndarray, threshold: float = 5.0,
                        grid: tuple[int, int] | None = None) -> tuple[np.ndarray, dict]:
    """Pixels whose loop amplitude is far outside the map's bulk, on a log scale (module docstring, step 2).

    With the map's ``grid`` a pixel is also an outlier when it stands out from its own 5 x 5
    neighbourhood: its log-amplitude less the neighbourhood's median is more than ``threshold``
    robust standard deviations of that residual (over the map) and at least :data:`LOCAL_RATIO`
    times the neighbours' amplitude. Real amplitude maps vary smoothly (domains); a hot pixel
    does not, and a map whose amplitude varies several-fold would otherwise hide it.

    Parameters
    ----------
    flat_loops : ndarray
        (n_pixels, steps) real loops; NaN where missing.
    threshold : float
        Robust standard deviations of log-amplitude above the median that make a pixel an outlier
        (twice as many below it).

    Returns
    -------
    mask : ndarray
        (n_pixels,) bool, True for an outlier.
    info : dict
        Counts per reason (``high``, ``low``, ``missing``), the fraction, the amplitude percentiles
        and the limits [data units].
    """
    x = np.asarray(flat_loops, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise InverscopeError(f"loops: expected (pixels, steps), got shape {x.shape}")
    if not threshold > 0:
        raise InverscopeError(f"outlier threshold: must be > 0, got {threshold}")
    missing = np.isfinite(x).mean(axis=1) < 0.5
    amp = np.where(missing, np.nan, _amplitudes(np.where(missing[:, None], 0.0, x)))
    with np.errstate(divide="ignore", invalid="ignore"):
        la = np.log(amp)
    ok = np.isfinite(la)
    if not ok.any():
        raise InverscopeError("loops: no pixel has a loop with a non-zero, finite amplitude; all are outliers")
    med = float(np.median(la[ok]))
    sigma = max(1.4826 * float(np.median(np.abs(la[ok] - med))), 0.05)
    high = ok & (la > med + threshold * sigma)
    low = ~missing & (~ok | (la < med - 2 * threshold * sigma))
    local = np.zeros_like(high)
    if grid is not None:
        from scipy.ndimage import median_filter

        if int(np.prod(grid)) != len(x):
            raise InverscopeError(f"grid {tuple(grid)} does not hold {len(x)} pixels")
        filled = np.where(ok, la, med).reshape(grid)
        resid = (filled - median_filter(filled, size=5, mode="reflect")).ravel()
        r_sigma = max(1.4826 * float(np.median(np.abs(resid[ok] - np.median(resid[ok])))), 0.01)
        local = ok & ~high & (resid > threshold * r_sigma) & (resid > np.log(LOCAL_RATIO))
    mask = missing | high | low | local
    info = {"count": int(mask.sum()), "fraction": float(mask.mean()), "high": int(high.sum()), "low": int(low.sum()),
            "local": int(local.sum()), "missing": int(missing.sum()), "threshold_sigma": float(threshold),
            "amplitude_limits": [float(np.exp(med - 2 * threshold * sigma)), float(np.exp(med + threshold * sigma))],
            "amplitude_percentiles": {str(p): float(v) for p, v in zip((1, 50, 99), np.nanpercentile(amp, [1, 50, 99]))}}
    return mask, info


@dataclass
class LoopScaler:
    """A fitted scaling of loops (module docstring, step 4); ``to_dict`` saves it with a model."""

    kind: str
    offset: float
    scale: float
    reference_amplitude: float | None = None

    def transform(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scaled loops, and per-pixel offsets and scales [data units] that were removed."""
        x = np.asarray(flat, dtype=np.float64)
        if self.kind == "per_pixel":
            off = np.median(x, axis=1)
            amp = _amplitudes(x)
            amp = np.where(amp > 0, amp, self.reference_amplitude)
            sc = amp / self.reference_amplitude * self.scale
            return (x - off[:, None]) / sc[:, None], off, sc
        n = len(x)
        return (x - self.offset) / self.scale, np.full(n, self.offset), np.full(n, self.scale)

    def to_dict(self) -> dict:
        return {"kind": f"loop_scaler:{self.kind}", "offset": self.offset, "scale": self.scale,
                "reference_amplitude": self.reference_amplitude}


def _fit_scaler(kind: str, x: np.ndarray) -> LoopScaler:
    if kind == "global":
        scale = float(x.std())
        off = float(x.mean())
    elif kind == "robust":
        q1, off, q3 = (float(v) for v in np.percentile(x, [25, 50, 75]))
        scale = (q3 - q1) / 1.349
    else:
        ref = float(np.median(_amplitudes(x)))
        if not ref > 0:
            raise InverscopeError("loops: the inlier loops have zero amplitude; nothing to scale")
        centred = (x - np.median(x, axis=1, keepdims=True)) / (_amplitudes(x)[:, None] / ref)
        return LoopScaler("per_pixel", 0.0, float(centred.std()) or 1.0, ref)
    if not scale > 0:
        raise InverscopeError(f"loops: zero spread among the inlier loops; {kind} scaling impossible")
    return LoopScaler(kind, off, scale)


@dataclass
class PreparedLoops:
    """Loops ready for a model, with what was found and chosen.

    Attributes
    ----------
    x : ndarray
        (n_pixels, steps) float32 scaled loops (every pixel, outliers included).
    outliers : ndarray
        (n_pixels,) bool.
    offset, scale : ndarray
        (n_pixels,) what was removed per pixel [data units]: ``raw = x * scale + offset``.
    scaler : LoopScaler
    waveform : Waveform
    report : dict
        The data check (:func:`format_check`), stored in metrics.json.
    """

    x: np.ndarray
    outliers: np.ndarray
    offset: np.ndarray
    scale: np.ndarray
    scaler: LoopScaler
    waveform: Waveform
    report: dict = field(default_factory=dict)

    @property
    def inliers(self) -> np.ndarray:
        return np.flatnonzero(~self.outliers)


def prepare_loops(loops, voltage, *, scaling: str = "auto", outlier_threshold: float = 5.0,
                  resonance_range: tuple[float, float] | None = None) -> PreparedLoops:
    """Check, clean and scale loops (module docstring); every choice is in ``report``.

    Parameters
    ----------
    loops : ndarray
        (..., steps) real loops, e.g. (rows, cols, steps); NaN where missing.
    voltage : ndarray
        (steps,) DC waveform [V].
    scaling : {'auto', 'global', 'robust', 'per_pixel'}
    outlier_threshold : float
        See :func:`find_outlier_pixels`; ``inf`` keeps every pixel.
    resonance_range : (float, float), optional
        Values outside become NaN first (resonance frequencies).

    Raises
    ------
    InverscopeError
        A complex array, a waveform that is not a closed loop, a length mismatch, an unknown scaling,
        or loops that are all outliers.
    """
    from inverscope.datasets.preprocess import range_filter

    arr = np.asarray(loops)
    if np.iscomplexobj(arr):
        raise InverscopeError("loops: complex values; choose a component (projected, amplitude, phase, real, imag)")
    if scaling not in SCALINGS:
        raise InverscopeError(f"scaling: {scaling!r} is not one of {', '.join(SCALINGS)}")
    flat = arr.astype(np.float64).reshape(-1, arr.shape[-1]) if arr.ndim >= 2 else None
    if flat is None or flat.shape[1] < 4:
        raise InverscopeError(f"loops: expected (..., steps) with >= 4 steps, got shape {arr.shape}")
    wave = analyse_waveform(voltage)
    if wave.voltage.size != flat.shape[1]:
        raise InverscopeError(f"voltage: {wave.voltage.size} values for loops of {flat.shape[1]} steps")
    if resonance_range is not None:
        flat = range_filter(flat, *resonance_range)
    finite = flat[np.isfinite(flat)]
    if finite.size == 0:
        raise InverscopeError("loops: no finite value")
    if np.isfinite(outlier_threshold):
        mask, out_info = find_outlier_pixels(flat, outlier_threshold, arr.shape[:2] if arr.ndim == 3 else None)
    else:
        mask, out_info = np.zeros(len(flat), bool), {"count": 0, "fraction": 0.0, "threshold_sigma": None}
    if mask.all():
        raise InverscopeError(f"loops: all {len(flat)} pixels are outliers ({out_info}); nothing to learn from")
    clean = np.where(mask[:, None] & ~np.isfinite(flat), 0.0, flat)
    clean[mask & (np.isfinite(flat).sum(axis=1) == 0)] = 0.0
    clean = savgol_outliers(interpolate_nonfinite(clean), window=min(7, flat.shape[1] - (flat.shape[1] + 1) % 2),
                            order=3, n_outliers=min(3, flat.shape[1] // 8))
    amp = _amplitudes(clean[~mask])
    spread = float(np.percentile(amp, 90) / max(np.percentile(amp, 10), 1e-300))
    chosen = scaling
    if scaling == "auto":
        chosen = ("per_pixel" if spread > AMPLITUDE_SPREAD else "robust" if mask.any() else "global")
    scaler = _fit_scaler(chosen, clean[~mask])
    x, off, sc = scaler.transform(clean)
    why = ("given" if scaling != "auto" else
           f"inlier amplitudes vary {spread:.1f}x (90th/10th percentile) > {AMPLITUDE_SPREAD:g}" if chosen == "per_pixel"
           else f"{out_info['count']} outlier pixels, amplitudes vary {spread:.1f}x" if chosen == "robust"
           else f"no outlier pixel, amplitudes vary {spread:.1f}x <= {AMPLITUDE_SPREAD:g}")
    report = {"shape": list(arr.shape), "waveform": wave.as_dict(),
              "dynamic_range": {"median_abs": float(np.median(np.abs(finite))),
                                "p1": float(np.percentile(finite, 1)), "p99": float(np.percentile(finite, 99)),
                                "max_abs": float(np.max(np.abs(finite))),
                                "nonfinite_fraction": float(1 - finite.size / flat.size)},
              "outliers": out_info, "inlier_amplitude_spread": spread,
              "scaling": {"requested": scaling, "chosen": chosen, "why": why, **scaler.to_dict()}}
    return PreparedLoops(x.astype(np.float32), mask, off, sc, scaler, wave, report)


def format_check(report: dict) -> str:
    """The data check as a few lines for the log, before any training."""
    w, d, o, s = report["waveform"], report["dynamic_range"], report["outliers"], report["scaling"]
    return "\n".join([
        f"data check: loops {'x'.join(map(str, report['shape']))}; waveform {w['steps']} steps, "
        f"{w['v_min']:.3g} to {w['v_max']:.3g} V, {w['cycles']:g} cycles, starts {w['start']}",
        f"  response: median |x| {d['median_abs']:.3g}, 1-99 % [{d['p1']:.3g}, {d['p99']:.3g}], "
        f"max |x| {d['max_abs']:.3g}, {100 * d['nonfinite_fraction']:.1f} % missing",
        f"  outlier pixels: {o['count']} ({100 * o['fraction']:.1f} %)"
        + (f": {o['high']} too strong, {o.get('local', 0)} strong for their neighbourhood, {o['low']} too weak, "
           f"{o['missing']} mostly missing" if o['count'] else ""),
        f"  scaling: {s['chosen']} ({s['why']})"])
