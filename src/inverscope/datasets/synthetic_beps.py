"""A BEPS map in another layout, made from the bundled PZT loops: for testing on data a study was not tuned on.

:func:`other_layout_beps` takes the bundled PbZr0.2Ti0.8O3 piezoresponse loops (Agar et al. 2019;
their domain structure is real) and gives them what a different instrument and sample give:

- another waveform: 0 -> +V -> 0 -> -V -> 0 (``steps`` points, starting at 0 V, rising), where
  the bundled one is +V -> -V -> +V; each new point reads the measured branch it lies on
  (linear interpolation in voltage);
- another amplitude scale (``amplitude``, median loop span) with a smooth amplitude variation
  across the map (``amplitude_variation``: the 90/10 percentile ratio is about 1 + 2x that) and
  an offset;
- a complex response: the in-phase loop turned by ``phase_rad``, with quadrature noise;
- heavy-tailed outlier pixels: a fraction ``outlier_fraction`` of pixels multiplied by
  Pareto-distributed factors (10 to 3000x, as measured on a real PbTiO3 map), plus a few dead
  (zero) pixels;
- noise (``noise``, relative to ``amplitude``).

:func:`write_nsid` stores it as an NSID-style HDF5 file (a 3D dataset with dimension scales, the
spectral one named 'bias'), which :func:`inverscope.datasets.io.beps.load_beps` reads back with
``component='projected'``. The truth (clean in-phase loops, outlier mask) comes along.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inverscope.core.errors import InverscopeError

__all__ = ["other_layout_beps", "write_nsid"]


def _resample_to_waveform(loops: np.ndarray, voltage: np.ndarray, new_v: np.ndarray) -> np.ndarray:
    """(n, len(new_v)) loops read on `new_v` from the up/down branches of (n, steps) `loops` on `voltage`."""
    up = voltage > np.roll(voltage, 1)
    new_up = new_v > np.roll(new_v, 1)
    out = np.empty((loops.shape[0], new_v.size))
    for branch_new, branch in ((new_up, up), (~new_up, ~up)):
        v = voltage[branch]
        order = np.argsort(v)
        v, y = v[order], loops[:, branch][:, order]
        for j in np.flatnonzero(branch_new):
            k = int(np.clip(np.searchsorted(v, new_v[j]), 1, v.size - 1))
            w = (new_v[j] - v[k - 1]) / max(v[k] - v[k - 1], 1e-12)
            out[:, j] = (1 - w) * y[:, k - 1] + w * y[:, k]
    return out


def other_layout_beps(*, rows: int = 50, cols: int = 50, steps: int = 64, v_max: float = 8.0,
                      amplitude: float = 6e-5, amplitude_variation: float = 1.5, phase_rad: float = 0.7,
                      outlier_fraction: float = 0.02, noise: float = 0.03, seed: int = 0) -> dict:
    """A complex BEPS map with another waveform, scale and heavy-tailed outliers (module docstring).

    Returns
    -------
    dict
        ``response`` (rows, cols, steps) complex128, ``voltage`` (steps,) [V], ``clean`` (rows, cols,
        steps) in-phase loops without outliers or noise [a.u.], ``outliers`` (rows, cols) bool truth,
        ``phase_rad``.
    """
    from inverscope.datasets.io.beps import load_example
    from inverscope.datasets.preprocess import interpolate_nonfinite

    if steps < 8 or steps % 4:
        raise InverscopeError(f"steps: need a multiple of 4 and >= 8, got {steps}")
    src = load_example("pzt_piezoresponse")
    if rows > src.loops.shape[0] or cols > src.loops.shape[1]:
        raise InverscopeError(f"rows x cols: at most {src.loops.shape[0]} x {src.loops.shape[1]} (the bundled map)")
    rng = np.random.default_rng(seed)
    q = steps // 4
    ramp = np.arange(q) / q
    new_v = v_max * np.concatenate([ramp, 1 - ramp, -ramp, ramp - 1])           # 0 -> +V -> 0 -> -V -> (0)
    base = interpolate_nonfinite(src.loops[:rows, :cols].reshape(-1, src.loops.shape[-1]))
    scaled_v = new_v / v_max * np.abs(src.voltage).max()
    loops = _resample_to_waveform(base, src.voltage, scaled_v)
    span = np.percentile(loops, 95, axis=1) - np.percentile(loops, 5, axis=1)
    loops = (loops - np.median(loops)) / np.median(span)
    yy, xx = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    gain = 1 + amplitude_variation * (0.5 + 0.5 * np.sin(2 * np.pi * (0.7 * yy + 0.4 * xx)))
    clean = amplitude * loops.reshape(rows, cols, steps) * gain[..., None] + 0.2 * amplitude
    inphase = clean + noise * amplitude * rng.standard_normal(clean.shape)
    quad = noise * amplitude * rng.standard_normal(clean.shape)
    n_out = int(round(outlier_fraction * rows * cols))
    flat_idx = rng.choice(rows * cols, size=n_out, replace=False)
    mask = np.zeros(rows * cols, bool)
    mask[flat_idx] = True
    factor = np.clip(10 * (1 + rng.pareto(0.8, n_out)), 10, 3000)
    factor[: max(1, n_out // 10)] = 0.0                                        # dead pixels
    resp = (inphase + 1j * quad).reshape(rows * cols, steps)
    resp[flat_idx] *= factor[:, None]
    resp = resp.reshape(rows, cols, steps) * np.exp(1j * phase_rad)
    return {"response": resp, "voltage": new_v, "clean": clean, "outliers": mask.reshape(rows, cols),
            "phase_rad": phase_rad}


def write_nsid(path, response: np.ndarray, voltage: np.ndarray) -> Path:
    """Write (rows, cols, steps) `response` as an NSID-style HDF5 file: spectral axis first, dimension scales."""
    import h5py

    path = Path(path)
    rows, cols, steps = response.shape
    with h5py.File(path, "w") as f:
        grp = f.create_group("Measurement_000/Channel_000")
        ds = grp.create_dataset("Raw_Data", data=np.moveaxis(response, -1, 0))
        ds.attrs["data_type"] = "SPECTRAL_IMAGE"
        ds.attrs["quantity"] = "piezoresponse"
        ds.attrs["units"] = "a.u."
        for i, (name, values, kind) in enumerate((("bias", voltage, "spectral"), ("y", np.arange(rows), "spatial"),
                                                  ("x", np.arange(cols), "spatial"))):
            s = grp.create_dataset(name, data=values)
            s.attrs["dimension_type"] = kind
            s.attrs["units"] = "V" if kind == "spectral" else "px"
            s.make_scale(name)
            ds.dims[i].attach_scale(s)
    return path
