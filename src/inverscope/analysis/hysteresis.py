"""Putting measured and simulated hysteresis loops on one axis, by a fixed rule.

The rule (applied identically to measured loops and to simulated ones, so the network sees the
same kind of curve from both):

1. Field axis. The model field at each waveform point is H = s (V - V_mid), with
   V_mid = (V_max + V_min) / 2 and s = ``field_at_vmax`` / ((V_max - V_min) / 2): the same scale and
   offset for every pixel.
2. Branches. A point belongs to the up branch when the waveform arrived at it by rising
   (V_t > V_{t-1}, with the waveform taken as periodic), otherwise to the down branch.
3. Sign. If the mean measured loop runs clockwise (the down branch below the up branch:
   negative area ∫(down - up) dV) the response is negated for the whole data set, never per pixel.
4. Response scale and offset, per loop. y_hi and y_lo are the mean response over the points in
   the outer ``saturation_fraction`` of the voltage range on the positive and negative side (both
   branches); the aligned loop is m = (y - (y_hi + y_lo)/2) / ((y_hi - y_lo)/2), so it runs from
   about -1 to +1 like the mean spin.
5. Imprint (optional, measured loops): the coercive voltages V+ (up branch crossing m = 0) and V-
   (down branch) give the imprint (V+ + V-)/2; each branch is shifted by it (linear
   interpolation, ends held) so the loop is centred. The imprint is reported as a map.

Simulated loops, symmetric by construction, get steps 1, 2 and 4 only (they are sampled on the
waveform's field values from their up and down sweeps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from inverscope.core.config import StrictModel
from inverscope.core.errors import InverscopeError


class AlignmentConfig(StrictModel):
    field_at_vmax: float = Field(6.0, gt=0)          # model field [J units] at the largest |V - V_mid|
    saturation_fraction: float = Field(0.15, gt=0, le=0.5)
    remove_imprint: bool = True


@dataclass
class Axis:
    """The waveform on the model's field axis."""

    voltage: np.ndarray       # (steps,) [V]
    field: np.ndarray         # (steps,) model field of each point
    up: np.ndarray            # (steps,) bool: the point is on the up branch
    v_mid: float
    scale: float              # field per volt


@dataclass
class AlignedLoops:
    loops: np.ndarray         # (n, steps) aligned response (about -1..1)
    offset: np.ndarray        # (n,) response offset removed [data units]
    amplitude: np.ndarray     # (n,) half the saturation-to-saturation response [data units]
    imprint_v: np.ndarray     # (n,) horizontal shift removed [V] (zeros when not removed)
    sign: float               # +1 or -1 applied to the whole data set


def waveform_axis(voltage, cfg: AlignmentConfig) -> Axis:
    v = np.asarray(voltage, dtype=np.float64)
    if v.ndim != 1 or len(v) < 4 or not np.all(np.isfinite(v)):
        raise InverscopeError(f"voltage: need a finite 1D waveform of at least 4 points, got shape {v.shape}")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        raise InverscopeError("voltage: the waveform is constant; a hysteresis loop needs a voltage sweep")
    up = v > np.roll(v, 1)
    d = np.diff(v)
    if not (d > 0).any() or not (d < 0).any():
        raise InverscopeError("voltage: the waveform never turns around; a loop needs an up and a down sweep")
    v_mid, scale = (hi + lo) / 2, cfg.field_at_vmax / ((hi - lo) / 2)
    return Axis(v, scale * (v - v_mid), up, v_mid, scale)


def sample_model_loops(field, m_up, m_down, axis: Axis) -> np.ndarray:
    """(n, steps) simulated loops read at the waveform's field values, branch by branch (linear interpolation)."""
    field = np.asarray(field)
    if axis.field.min() < field[0] - 1e-9 or axis.field.max() > field[-1] + 1e-9:
        raise InverscopeError(f"alignment: the waveform reaches field {np.abs(axis.field).max():.3g} but loops were "
                              f"simulated to {field[-1]:.3g}; lower field_at_vmax or raise the simulated field_max")
    k = np.clip(np.searchsorted(field, axis.field) - 1, 0, len(field) - 2)
    w = (axis.field - field[k]) / (field[k + 1] - field[k])
    up = m_up[:, k] * (1 - w) + m_up[:, k + 1] * w
    down = m_down[:, k] * (1 - w) + m_down[:, k + 1] * w
    return np.where(axis.up, up, down)


def _scale_offset(y: np.ndarray, axis: Axis, frac: float) -> tuple[np.ndarray, np.ndarray]:
    v = axis.voltage
    span = v.max() - v.min()
    hi_pts, lo_pts = v >= v.max() - frac * span, v <= v.min() + frac * span
    y_hi, y_lo = y[:, hi_pts].mean(axis=1), y[:, lo_pts].mean(axis=1)
    return (y_hi + y_lo) / 2, (y_hi - y_lo) / 2


def normalize(y: np.ndarray, axis: Axis, cfg: AlignmentConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 4: (aligned, offset, amplitude); loops with no amplitude become 0 (amplitude reported as is)."""
    offset, amp = _scale_offset(y, axis, cfg.saturation_fraction)
    safe = np.where(amp > 0, amp, np.inf)
    return (y - offset[:, None]) / safe[:, None], offset, amp


def _crossing(v: np.ndarray, m: np.ndarray, rising: bool) -> np.ndarray:
    """First voltage where each row of m (ordered along v) crosses 0 in the branch's direction; NaN if none."""
    s = m >= 0 if rising else m <= 0
    hit = s[:, 1:] & ~s[:, :-1]
    k = np.argmax(hit, axis=1)
    ok = hit[np.arange(len(m)), k]
    m0, m1 = m[np.arange(len(m)), k], m[np.arange(len(m)), k + 1]
    frac = np.where(m1 != m0, -m0 / np.where(m1 != m0, m1 - m0, 1), 0.5)
    return np.where(ok, v[k] + frac * (v[k + 1] - v[k]), np.nan)


def imprint(m: np.ndarray, axis: Axis) -> np.ndarray:
    """(n,) imprint [V]: mean of the two coercive voltages (0 where a branch never crosses)."""
    out = []
    for branch, rising in ((axis.up, True), (~axis.up, False)):
        idx = np.flatnonzero(branch)
        idx = idx[np.argsort(axis.voltage[idx], kind="stable")]
        if not rising:
            idx = idx[::-1]
        out.append(_crossing(axis.voltage[idx], m[:, idx], rising))
    imp = (out[0] + out[1]) / 2
    return np.where(np.isfinite(imp), imp, 0.0)


def shift_branches(m: np.ndarray, axis: Axis, shift_v: np.ndarray) -> np.ndarray:
    """Each loop's branches read at V + shift (linear interpolation along the branch, ends held)."""
    out = np.empty_like(m)
    for branch in (axis.up, ~axis.up):
        idx = np.flatnonzero(branch)
        idx = idx[np.argsort(axis.voltage[idx], kind="stable")]
        v = axis.voltage[idx]
        for i in range(len(m)):
            out[i, idx] = np.interp(v + shift_v[i], v, m[i, idx])
    return out


def align_measured(loops, axis: Axis, cfg: AlignmentConfig) -> AlignedLoops:
    """Rule steps 3-5 on measured loops (n, steps) recorded along `axis.voltage`."""
    y = np.asarray(loops, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != len(axis.voltage):
        raise InverscopeError(f"loops: got shape {y.shape}; expected (n, {len(axis.voltage)}) to match the voltage")
    if not np.all(np.isfinite(y)):
        raise InverscopeError(f"loops: {int(np.sum(~np.isfinite(y)))} non-finite values; interpolate them first")
    mean = y.mean(axis=0)
    area = np.sum(np.where(axis.up, -1.0, 1.0) * mean * np.abs(np.gradient(axis.voltage)))
    sign = -1.0 if area < 0 else 1.0
    m, offset, amp = normalize(sign * y, axis, cfg)
    shift = imprint(m, axis) if cfg.remove_imprint else np.zeros(len(m))
    if cfg.remove_imprint:
        m = shift_branches(m, axis, shift)
    return AlignedLoops(m, sign * offset, amp, shift, sign)


def align_model(field, m_up, m_down, axis: Axis, cfg: AlignmentConfig) -> np.ndarray:
    """Rule steps 1, 2 and 4 on simulated loops: (n, steps) on the waveform, normalized."""
    y = sample_model_loops(field, m_up, m_down, axis)
    return normalize(y, axis, cfg)[0]
