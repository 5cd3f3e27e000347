"""Descriptor maps: slide a trained stack network along the scan of 4D-STEM data.

A window is ``P`` consecutive probe positions along one scan axis (the model's
``input.positions``); windows start every ``stride`` positions, and each window's
prediction is stored at its **start** position: map column ``j`` (``axis=1``) holds the
window covering scan columns ``j * stride ... j * stride + P - 1``; its centre is
``window_centre_index[j]`` (a scan index, possibly half-integer).

Data are read ``chunk_rows`` scan lines at a time, so memory is bounded by about
``chunk_rows * N * ky * kx * (P + 1)`` floats whatever the size of the scan.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from inverscope.analysis.inference import check_finite, check_stack_shape, expected_stack_shape, predict_stacks
from inverscope.core.errors import InverscopeError


def bin_patterns(x: np.ndarray, factor: int) -> np.ndarray:
    """Sum `factor` x `factor` detector pixel blocks of the last two axes, cropping the remainder symmetrically."""
    f = int(factor)
    if f < 1:
        raise InverscopeError(f"bin: got {factor}; must be a positive integer")
    if f == 1:
        return x
    ky, kx = x.shape[-2:]
    ny, nx = ky // f, kx // f
    if ny == 0 or nx == 0:
        raise InverscopeError(f"bin: got {f}; larger than the detector patterns ({ky} x {kx})")
    y0, x0 = (ky - ny * f) // 2, (kx - nx * f) // 2
    x = x[..., y0:y0 + ny * f, x0:x0 + nx * f]
    return x.reshape(*x.shape[:-2], ny, f, nx, f).sum(axis=(-3, -1))


# --------------------------------------------------------------------------- resampling by angle
#: relative difference between the data's detector sampling (after binning) and a stack model's above which
#: the patterns are resampled by angle (below it they are used as they are)
SAMPLING_TOLERANCE = 0.02
#: relative amount by which the model's field of view (pixels x mrad/px, per axis) may exceed the data's
#: before resampling is refused; the sliver of output pixels beyond the data then reads zero
FOV_TOLERANCE = 0.03
#: input floats resampled at a time (bounds the intermediate arrays of :func:`resample_patterns`)
_RESAMPLE_FLOATS = 1 << 22


def _pair(value, what: str = "sampling") -> tuple[float, float]:
    """(row, col) mrad/px from one number or two; raises unless both are finite and > 0."""
    try:
        v = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InverscopeError(f"{what}: got {value!r}; expected one or two angles [mrad/px]") from None
    if v.size == 1:
        v = np.repeat(v, 2)
    if v.size != 2 or not (np.isfinite(v).all() and (v > 0).all()):
        raise InverscopeError(f"{what}: got {value!r}; must be one or two finite angles > 0 [mrad/px]")
    return float(v[0]), float(v[1])


def _axis_operator(n_in: int, d_in: float, n_out: int, d_out: float, c_in: float | None = None) -> np.ndarray:
    """(n_out, n_in) float64 matrix taking one detector axis from `d_in` to `d_out` mrad/px.

    Pixel ``i`` of ``n`` is centred on the angle ``(i - n // 2) * d`` (the optical axis on
    pixel ``n // 2``, as :class:`~inverscope.physics.multislice.detectors.PixelatedDetector`
    writes patterns) and covers ``d`` mrad. Coarsening (``d_out >= d_in``): entry ``(j, i)``
    is the fraction of input pixel ``i`` inside output pixel ``j`` (exact overlap integration
    of a pixel-wise constant intensity density; the detector's own ``_rebin_matrix``), so the
    intensity that falls inside the output grid is conserved. Refining (``d_out < d_in``):
    linear interpolation of the density at the output pixel centre (clamped to the edge
    pixel's value inside its footprint, 0 beyond it), times ``d_out / d_in``, the fraction of
    the input pixel's extent the output pixel covers. `c_in`: the input's optical-axis pixel
    (default ``n_in // 2``; a binned pattern's may be fractional).
    """
    c_in = n_in // 2 if c_in is None else c_in
    src = (np.arange(n_in) - c_in) * d_in
    dst = (np.arange(n_out) - n_out // 2) * d_out
    if d_out >= d_in * (1 - 1e-12):
        lo = np.maximum(src[None] - d_in / 2, dst[:, None] - d_out / 2)
        hi = np.minimum(src[None] + d_in / 2, dst[:, None] + d_out / 2)
        return np.clip(hi - lo, 0, None) / d_in
    u = dst / d_in + c_in                           # output centres in input pixel coordinates
    inside = (u >= -0.5) & (u <= n_in - 0.5)
    u = np.clip(u, 0, n_in - 1)
    i0 = np.minimum(np.floor(u).astype(int), max(n_in - 2, 0))
    w = u - i0
    op = np.zeros((n_out, n_in))
    rows = np.arange(n_out)[inside]
    np.add.at(op, (rows, i0[inside]), 1 - w[inside])
    if n_in > 1:
        np.add.at(op, (rows, i0[inside] + 1), w[inside])
    return op * (d_out / d_in)


def resample_patterns(patterns, sampling_in_mrad, sampling_out_mrad, shape_out, centre_in_px=None) -> np.ndarray:
    """Resample diffraction patterns ``(..., ky, kx)`` by angle onto another detector grid.

    The result is what a detector with pixels of `sampling_out_mrad` and `shape_out` pixels,
    centred on the same optical axis, would have recorded: pixel values are **intensity per
    detector pixel** (counts, or fractions of the beam as simulated), so a pixel's value scales
    with its solid angle, ``d_row * d_col`` [mrad^2] (a pixel twice as wide collects four times
    the intensity of the same density).

    Geometry: on both grids pixel ``i`` of ``n`` is centred on the angle ``(i - n // 2) * d``
    [mrad], the optical axis on pixel ``n // 2`` (the convention of
    :class:`~inverscope.physics.multislice.detectors.PixelatedDetector` and of the models'
    training patterns), per axis (rows ``ky`` first).

    Method (separable, one linear operator per axis, applied as two matrix products):

    * coarsening an axis (``out >= in`` mrad/px): exact overlap integration, each output
      pixel sums the fractions of the input pixels inside its footprint (the intensity is
      taken as uniform within an input pixel); the total intensity inside the output field of
      view is conserved exactly;
    * refining an axis (``out < in``): bilinear interpolation of the intensity density at the
      output pixel centres, times the pixel-size ratio ``out / in``; the total is conserved up
      to the interpolation error (second order in the pixel size for smooth patterns).

    Equal samplings and shapes return the input (as float32). Output pixels beyond the input's
    field of view read 0 (partly covered ones: the covered part).

    Parameters
    ----------
    patterns : array-like, shape (..., ky, kx)
        Patterns, any leading batch axes; processed ``2**22`` input floats at a time, so
        temporary memory stays near the size of the input and output.
    sampling_in_mrad, sampling_out_mrad : float or (float, float)
        Pixel sizes [mrad/px] of the input and output, one number for square pixels or
        (row, col).
    shape_out : (int, int)
        Output pattern shape [px].
    centre_in_px : (float, float), optional
        (row, col) of the input's optical axis [px]; default ``(ky // 2, kx // 2)``. Patterns
        binned by an even factor have it between pixels (:func:`resampling_plan` computes it).
        The output's is always ``(shape_out[0] // 2, shape_out[1] // 2)``.

    Returns
    -------
    np.ndarray
        float32, shape ``(..., *shape_out)``.
    """
    x = np.asarray(patterns, dtype=np.float32)
    if x.ndim < 2:
        raise InverscopeError(f"resample: patterns must have at least 2 dimensions, got shape {x.shape}")
    s_in, s_out = _pair(sampling_in_mrad, "sampling_in_mrad"), _pair(sampling_out_mrad, "sampling_out_mrad")
    shape_out = tuple(int(s) for s in shape_out)
    if len(shape_out) != 2 or min(shape_out) < 1:
        raise InverscopeError(f"resample: shape_out {shape_out} must be two positive integers")
    ky, kx = x.shape[-2:]
    cy, cx = (ky // 2, kx // 2) if centre_in_px is None else (float(centre_in_px[0]), float(centre_in_px[1]))
    if (ky, kx) == shape_out and s_in == s_out and (cy, cx) == (ky // 2, kx // 2):
        return x
    my = _axis_operator(ky, s_in[0], shape_out[0], s_out[0], cy).astype(np.float32)   # (oy, ky)
    mxt = _axis_operator(kx, s_in[1], shape_out[1], s_out[1], cx).T.astype(np.float32)  # (kx, ox)
    flat = x.reshape(-1, ky, kx)
    out = np.empty((flat.shape[0], *shape_out), np.float32)
    step = max(1, _RESAMPLE_FLOATS // (ky * max(kx, shape_out[1])))
    for i in range(0, flat.shape[0], step):
        b = flat[i:i + step]
        n = b.shape[0]
        t = (b.reshape(n * ky, kx) @ mxt).reshape(n, ky, shape_out[1])             # columns first
        t = np.ascontiguousarray(t.transpose(0, 2, 1)).reshape(n * shape_out[1], ky) @ my.T
        out[i:i + n] = t.reshape(n, shape_out[1], shape_out[0]).transpose(0, 2, 1)
    return out.reshape(*x.shape[:-2], *shape_out)


def resampling_plan(data_sampling_mrad, data_shape, bin_factor: int, model_sampling_mrad, model_shape,
                    tolerance: float = SAMPLING_TOLERANCE, source: str = "data") -> dict | None:
    """Whether (and how) the data's patterns are resampled by angle to the model's detector.

    Parameters
    ----------
    data_sampling_mrad : float, (float, float) or None
        The data's detector pixel size before binning [mrad/px] (file calibration or
        ``--sampling-mrad``); None: unknown.
    data_shape : (int, int)
        The data's pattern shape before binning [px].
    bin_factor : int
        ``--bin``: patterns are binned first, so the sampling resampled from is ``f`` times the
        data's, over ``shape // f`` pixels.
    model_sampling_mrad : float, (float, float) or None
        The model's detector pixel size [mrad/px]; None: unknown.
    model_shape : (int, int)
        The model's pattern shape [px].
    tolerance : float
        Relative sampling difference (either axis) up to which the patterns are used as they are.
    source : str
        Name of the data in messages.

    Returns
    -------
    dict or None
        None when either sampling is unknown or they agree within `tolerance` (the caller then
        checks the pattern shape as before); else ``{"from_mrad": [row, col] (after binning),
        "to_mrad": [row, col], "shape": [ky, kx] (the model's), "bin_factor": f, "method": {"rows": ...,
        "cols": ...}, "centre_in_px": [row, col] (the optical axis in the binned pattern), "fov_mrad":
        {"data": [...], "model": [...]}, "warnings": [...]}`` for :func:`resample_patterns`; the
        warnings say when the data are coarser than the model (interpolated) or the model's field
        of view exceeds the data's (within the tolerance).

    Raises
    ------
    InverscopeError
        One line naming both fields of view in mrad when the model's (``shape x mrad/px``)
        exceeds the data's by more than :data:`FOV_TOLERANCE` on either axis: the model would
        see angles the data did not record.
    """
    if data_sampling_mrad is None or model_sampling_mrad is None:
        return None
    f = int(bin_factor)
    if f < 1 or min(int(n) for n in data_shape) // f < 1:
        raise InverscopeError(f"bin: got {bin_factor}; must be a positive integer no larger than the "
                              f"{data_shape[0]} x {data_shape[1]} px patterns of {source}")
    got = tuple(s * f for s in _pair(data_sampling_mrad, "data sampling_mrad"))
    want = _pair(model_sampling_mrad, "model input sampling_mrad")
    if all(abs(g / w - 1) <= tolerance for g, w in zip(got, want)):
        return None
    binned = tuple(int(n) // f for n in data_shape)
    shape = tuple(int(n) for n in model_shape)
    fov_data = [n * g for n, g in zip(binned, got)]
    fov_model = [n * w for n, w in zip(shape, want)]
    if any(m > d * (1 + FOV_TOLERANCE) for m, d in zip(fov_model, fov_data)):
        after = f" after --bin {f}" if f > 1 else ""
        raise InverscopeError(
            f"{source}: the patterns span {fov_data[0]:.4g} x {fov_data[1]:.4g} mrad ({binned[0]} x {binned[1]} px of "
            f"{got[0]:.4g} x {got[1]:.4g} mrad/px{after}) but the model's span {fov_model[0]:.4g} x {fov_model[1]:.4g} "
            f"mrad ({shape[0]} x {shape[1]} px of {want[0]:.4g} x {want[1]:.4g} mrad/px): the model would see angles the "
            "data did not record; check the detector calibration (--sampling-mrad)")
    method = {ax: ("overlap integration" if g <= w else "bilinear interpolation") for ax, g, w in
              zip(("rows", "cols"), got, want)}
    # the optical axis (pixel n // 2 of the data) in the binned pattern: binned pixel j sums data pixels
    # y0 + j f ... y0 + j f + f - 1 (bin_patterns crops the remainder symmetrically)
    centre = [(int(n) // 2 - (int(n) - b * f) // 2 - (f - 1) / 2) / f for n, b in zip(data_shape, binned)]
    plan = {"from_mrad": list(got), "to_mrad": list(want), "shape": list(shape), "bin_factor": f, "method": method,
            "centre_in_px": centre, "fov_mrad": {"data": fov_data, "model": fov_model}, "warnings": []}
    if any(g > w * (1 + tolerance) for g, w in zip(got, want)):
        plan["warnings"].append(
            f"detector sampling {got[0]:.4g} x {got[1]:.4g} mrad/px is coarser than the model's {want[0]:.4g} x "
            f"{want[1]:.4g} mrad/px: the patterns were interpolated onto the finer pixels, which cannot restore the "
            "detail the model was trained on; its predictions may not hold")
    if any(m > d * (1 + 1e-9) for m, d in zip(fov_model, fov_data)):
        plan["warnings"].append(
            f"the model's field of view ({fov_model[0]:.4g} x {fov_model[1]:.4g} mrad) exceeds the data's "
            f"({fov_data[0]:.4g} x {fov_data[1]:.4g} mrad) by up to "
            f"{max(m / d - 1 for m, d in zip(fov_model, fov_data)):.1%}; the edge pixels beyond the data read 0")
    return plan


def check_sampling_option(value) -> float | None:
    """``--sampling-mrad``: None, or a finite pixel size > 0 [mrad/px] (else a one-line error)."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise InverscopeError(f"--sampling-mrad: got {value}; must be the detector pixel size, a finite angle > 0 "
                              "[mrad/px]")
    return v


def describe_resampling(plan: dict) -> str:
    """One line for the log: what :func:`resampling_plan` decided."""
    a, b = plan["from_mrad"], plan["to_mrad"]
    fa = f"{a[0]:.4g}" if a[0] == a[1] else f"{a[0]:.4g} x {a[1]:.4g}"
    fb = f"{b[0]:.4g}" if b[0] == b[1] else f"{b[0]:.4g} x {b[1]:.4g}"
    after = f" (after --bin {plan['bin_factor']})" if plan.get("bin_factor", 1) > 1 else ""
    return (f"resampled the patterns by angle from {fa} mrad/px{after} to the model's {fb} mrad/px, "
            f"{plan['shape'][0]} x {plan['shape'][1]} px")


def _read(data, index, source: str, what: str) -> np.ndarray:
    try:
        return np.asarray(data[index], dtype=np.float32)
    except InverscopeError:
        raise
    except Exception as err:  # zarr / h5py / codecs raise many types on truncated data
        raise InverscopeError(f"{source}: could not read {what} ({type(err).__name__}); the data may be truncated") from None


def _map_names(meta: dict) -> list[str]:
    if meta.get("task") == "regression":
        return ["value", "std"]
    names = meta.get("class_names") or [f"class_{i}" for i in range(int(meta.get("config", {}).get("num_outputs", 2)))]
    return ["class_index", "confidence", *(f"prob_{n}" for n in names)]


def _flat_outputs(pred: dict, meta: dict) -> dict[str, np.ndarray]:
    if "value" in pred:
        return {"value": pred["value"], "std": pred["std"]}
    names = _map_names(meta)[2:]
    out = {"class_index": pred["class_index"], "confidence": pred["confidence"]}
    out.update({n: pred["probabilities"][:, i] for i, n in enumerate(names)})
    return out


def _empty(names: list[str], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {n: np.full(shape, -1, np.int64) if n == "class_index" else np.full(shape, np.nan, np.float32) for n in names}


def descriptor_maps(net: torch.nn.Module, meta: dict, data4d, axis: int = 1, stride: int = 1, chunk_rows: int = 8,
                    bin_factor: int = 1, mc_dropout: int = 0, device: str | torch.device = "cpu",
                    batch_size: int = 256, seed: int = 0, source: str = "data",
                    resample: dict | None = None) -> dict[str, np.ndarray]:
    """Maps of the network's descriptors over a scan.

    Parameters
    ----------
    net, meta
        The model and its metadata (:func:`inverscope.models.io.load_model`).
    data4d : array-like, shape (Ny, Nx, ky, kx)
        Lazy (Zarr, Dask, h5py) or in-memory 4D-STEM data.
    axis : int
        Scan axis the windows run along: 1 = along each row, 0 = along each column.
    stride : int
        Step between window starts [scan positions].
    chunk_rows : int
        Scan lines (rows for ``axis=1``, columns for ``axis=0``) read at a time.
    bin_factor : int
        Integer detector binning applied before the shape check (and before resampling).
    mc_dropout, device, batch_size, seed
        As in :func:`inverscope.analysis.inference.predict_stacks`; block ``b`` uses seed ``seed + b``.
    source : str
        Name of the data in error messages.
    resample : dict, optional
        A :func:`resampling_plan`: after binning, every pattern is resampled by angle
        (:func:`resample_patterns`) to the model's sampling and pattern shape.

    Returns
    -------
    dict
        One map per descriptor, shape (Ny, n_windows) for ``axis=1`` or (n_windows, Nx) for
        ``axis=0``, each value at its window's start; classification: ``class_index``,
        ``confidence``, ``prob_<name>``; regression: ``value``, ``std``. Also
        ``window_centre_index`` (n_windows,), the scan index of each window's centre.
    """
    if len(getattr(data4d, "shape", ())) != 4:
        raise InverscopeError(f"{source}: expected 4D data (scan_y, scan_x, ky, kx), got shape {getattr(data4d, 'shape', None)}")
    if axis not in (0, 1) or stride < 1 or chunk_rows < 1:
        raise InverscopeError(f"axis must be 0 or 1, stride and chunk_rows >= 1 (got {axis}, {stride}, {chunk_rows})")
    f = int(bin_factor)
    ny_k, nx_k = data4d.shape[-2:]
    p = expected_stack_shape(meta)[0]
    length, n_lines = data4d.shape[axis], data4d.shape[1 - axis]
    used = tuple(resample["shape"]) if resample else bin_patterns(np.zeros((ny_k, nx_k), np.float32), f).shape
    check_stack_shape((p, *used), meta)
    if length < p:
        raise InverscopeError(f"{source}: {length} scan positions along axis {axis}, fewer than the model's {p} positions per stack")
    starts = np.arange(0, length - p + 1, stride)
    names = _map_names(meta)
    maps = _empty(names, (n_lines, starts.size))
    for b, l0 in enumerate(range(0, n_lines, chunk_rows)):
        l1 = min(l0 + chunk_rows, n_lines)
        index = (slice(l0, l1),) if axis == 1 else (slice(None), slice(l0, l1))
        block = _read(data4d, index, source, f"scan lines {l0}-{l1 - 1}")
        block = bin_patterns(block if axis == 1 else block.transpose(1, 0, 2, 3), f)  # (lines, length, ky, kx)
        check_finite(block, f"{source}, scan lines {l0}-{l1 - 1}")
        if resample:
            block = resample_patterns(block, resample["from_mrad"], resample["to_mrad"], resample["shape"],
                                      resample.get("centre_in_px"))
        win = np.lib.stride_tricks.sliding_window_view(block, p, axis=1)[:, starts]  # (lines, nw, ky, kx, P)
        stacks = np.moveaxis(win, -1, 2).reshape(-1, p, *block.shape[-2:])
        pred = predict_stacks(net, meta, stacks, batch_size, mc_dropout, device, seed + b)
        for name, values in _flat_outputs(pred, meta).items():
            maps[name][l0:l1] = values.reshape(l1 - l0, starts.size)
    out = {k: (v if axis == 1 else v.T) for k, v in maps.items()}
    out["window_centre_index"] = starts + (p - 1) / 2
    return out


def stack_descriptors(net, meta: dict, four, chunk_stacks: int = 256, bin_factor: int = 1, mc_dropout: int = 0,
                      device="cpu", batch_size: int = 256, seed: int = 0, resample: dict | None = None) -> dict[str, np.ndarray]:
    """Descriptors of every valid stack of a campaign :class:`~inverscope.datasets.io.FourD`, shaped ``index_shape``.

    Patterns are binned by `bin_factor`, then, with a :func:`resampling_plan` `resample`,
    resampled by angle to the model's sampling and shape (:func:`resample_patterns`).
    """
    data = four.data
    n = data.shape[0]
    used = tuple(resample["shape"]) if resample else bin_patterns(np.zeros(data.shape[-2:], np.float32), bin_factor).shape
    check_stack_shape((data.shape[1], *used), meta)
    valid = np.ones(n, bool) if four.valid is None else four.valid
    maps = _empty(_map_names(meta), (n,))
    for b, i0 in enumerate(range(0, n, chunk_stacks)):
        i1 = min(i0 + chunk_stacks, n)
        keep = valid[i0:i1]
        if not keep.any():
            continue
        block = bin_patterns(_read(data, slice(i0, i1), four.source, f"stacks {i0}-{i1 - 1}")[keep], bin_factor)
        if resample:
            block = resample_patterns(block, resample["from_mrad"], resample["to_mrad"], resample["shape"],
                                      resample.get("centre_in_px"))
        pred = predict_stacks(net, meta, block, batch_size, mc_dropout, device, seed + b)
        for name, values in _flat_outputs(pred, meta).items():
            maps[name][i0:i1][keep] = values
    shape = four.index_shape or (n,)
    return {k: v.reshape(shape) for k, v in maps.items()}


# --------------------------------------------------------------------------- outputs
def _plot_maps(path: Path, maps: dict[str, np.ndarray], title: str, class_names: list[str], labels: tuple[str, str]) -> None:
    import matplotlib.pyplot as plt

    from inverscope.report.figures import save_figure

    names = [k for k, v in maps.items() if v.ndim >= 2 and (v.dtype.kind != "f" or np.isfinite(v).any())]
    ncols = min(3, max(1, len(names)))
    nrows = max(1, -(-len(names) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        img = maps[name].reshape(maps[name].shape[0], -1).astype(float)
        if name == "class_index":
            n = max(1, len(class_names))
            im = ax.imshow(np.where(img < 0, np.nan, img), cmap=plt.get_cmap("tab10", n), vmin=-0.5, vmax=n - 0.5,
                           aspect="auto", interpolation="nearest")
            bar = fig.colorbar(im, ax=ax, shrink=0.85, ticks=range(n))
            bar.ax.set_yticklabels(class_names, fontsize=7)
        else:
            im = ax.imshow(img, cmap="viridis", aspect="auto", interpolation="nearest")
            fig.colorbar(im, ax=ax, shrink=0.85)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(labels[0], fontsize=7)
        ax.set_xlabel(labels[1], fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def _stats(maps: dict[str, np.ndarray], meta: dict, four) -> dict:
    if meta.get("task") == "regression":
        v = maps["value"][np.isfinite(maps["value"])]
        s = maps["std"][np.isfinite(maps["std"])]
        return {"value": {k: float(fn(v)) if v.size else None for k, fn in (("min", np.min), ("mean", np.mean), ("max", np.max))},
                "std_mean": float(s.mean()) if s.size else None}
    ci = maps["class_index"].ravel()
    names = _map_names(meta)[2:]
    ok = ci >= 0
    out = {"class_fractions": {n[5:]: float(np.mean(ci[ok] == i)) if ok.any() else None for i, n in enumerate(names)},
           "mean_confidence": float(np.nanmean(maps["confidence"])) if ok.any() else None}
    if four.labels is not None:
        known = ok & (four.labels >= 0)
        out["accuracy_vs_labels"] = float(np.mean(ci[known] == four.labels[known])) if known.any() else None
    return out


def predict_to_dir(model_path, data_path, out_dir, axis: int = 1, stride: int = 1, chunk_rows: int = 8,
                   bin_factor: int = 1, thickness_index: int = -1, mc_dropout: int = 0, device: str = "cpu",
                   batch_size: int = 256, seed: int = 0, sampling_mrad: float | None = None) -> dict:
    """Predict descriptor maps of the data at `data_path` with the model at `model_path` into `out_dir`.

    Writes ``descriptors.zarr`` (one array per map; attributes: model summary, source,
    settings), ``maps.png`` and ``summary.json`` into `out_dir`, all or nothing. A campaign
    store is predicted stack by stack (maps of shape (N, lines, thicknesses)). `out_dir`
    must not exist or be empty. Returns the summary.

    Detector geometry: patterns are binned by `bin_factor` first. When the data's detector
    sampling is known (`sampling_mrad` [mrad/px, square pixels], which overrides the file's
    calibration, or the file's own) and differs, after binning, from the model's
    ``meta["input"]["sampling_mrad"]`` by more than :data:`SAMPLING_TOLERANCE`, every pattern
    is then resampled by angle to the model's sampling and ``pattern_shape``
    (:func:`resampling_plan`, :func:`resample_patterns`); the summary's ``resampled`` says
    from / to which mrad/px and onto which shape (else null). A model field of view larger
    than the data's by more than :data:`FOV_TOLERANCE` is refused. Without a known sampling
    the binned pattern shape must be the model's.
    """
    import zarr

    from inverscope.core.device import resolve_device
    from inverscope.core.io import check_output_path, staged_output, write_json_atomic
    from inverscope.datasets.io import open_4dstem
    from inverscope.models.io import load_model

    if axis not in (0, 1):
        raise InverscopeError(f"axis: got {axis}; allowed: 0 or 1 (the scan axis the probe-position stacks run along)")
    out_dir = Path(out_dir)
    check_output_path(out_dir, must_be_empty=True)  # a bad --out is found before the model and data load
    sampling_mrad = check_sampling_option(sampling_mrad)
    if int(bin_factor) < 1:
        raise InverscopeError(f"bin: got {bin_factor}; must be a positive integer")
    dev = resolve_device(device)
    net, meta = load_model(model_path, device=str(dev))
    if meta.get("architecture") != "stack_cnn3d":
        raise InverscopeError(f"{model_path}: a {meta.get('architecture')} model (task {meta.get('task')!r}); predict "
                              "applies 4D-STEM stack models (stack_cnn3d, as trained by the lao_sto study)")
    four = open_4dstem(data_path, thickness_index)
    data_sampling = (sampling_mrad, sampling_mrad) if sampling_mrad is not None else four.sampling_mrad
    plan = resampling_plan(data_sampling, four.data.shape[-2:], bin_factor, (meta.get("input") or {}).get("sampling_mrad"),
                           expected_stack_shape(meta)[1:], SAMPLING_TOLERANCE, four.source)
    if plan:
        plan["sampling_from"] = "--sampling-mrad" if sampling_mrad is not None else "file"
    t0 = time.perf_counter()
    if four.stacks:
        maps = stack_descriptors(net, meta, four, chunk_rows * 32, bin_factor, mc_dropout, dev, batch_size, seed,
                                 resample=plan)
    else:
        maps = descriptor_maps(net, meta, four.data, axis, stride, chunk_rows, bin_factor, mc_dropout, dev,
                               batch_size, seed, four.source, resample=plan)
    wall = time.perf_counter() - t0
    warnings = list(plan["warnings"]) if plan else []
    settings = {"axis": axis, "stride": stride, "bin_factor": bin_factor, "sampling_mrad": sampling_mrad,
                "thickness_index": thickness_index, "mc_dropout": mc_dropout, "seed": seed,
                "window_value_at": "window start"}
    model = {"path": str(model_path), "task": meta.get("task"), "architecture": meta.get("architecture"),
             "class_names": meta.get("class_names"), "input": meta.get("input")}
    summary = {"outputs": {"descriptors": "descriptors.zarr", "maps": "maps.png"}, "source": four.source,
               "data_shape": list(four.data.shape), "stacks": four.stacks, "model": model, "settings": settings,
               "sampling_mrad_read": list(four.sampling_mrad) if four.sampling_mrad else None, "resampled": plan,
               "maps": {k: list(v.shape) for k, v in maps.items()}, **_stats(maps, meta, four),
               "wall_s": wall, "warnings": warnings}
    with staged_output(out_dir) as stage:
        group = zarr.open_group(str(stage / "descriptors.zarr"), mode="w")
        for name, values in maps.items():
            group.create_array(name, data=np.ascontiguousarray(values))
        group.attrs.update({"model": model, "source": four.source, "settings": settings, "resampled": plan,
                            "sampling_mrad": list(data_sampling) if data_sampling else None})
        _plot_maps(stage / "maps.png", {k: v for k, v in maps.items() if k != "window_centre_index"},
                   f"{Path(str(model_path)).name} on {Path(str(data_path)).name}", [n[5:] for n in _map_names(meta)[2:]],
                   ("sample", "line x thickness") if four.stacks else
                   (("scan row", "window start (scan column)") if axis == 1 else ("window start (scan row)", "scan column")))
        write_json_atomic(stage / "summary.json", summary)
    return summary


#: options of ``inverscope predict`` for stack models, with their defaults (None in :func:`predict_files`: not given)
STACK_OPTIONS = {"axis": 1, "stride": 1, "chunk_rows": 8, "bin_factor": 1, "thickness_index": -1, "mc_dropout": 0,
                 "device": "cpu", "sampling_mrad": None}
#: the command-line flag of each option, for messages
FLAGS = {"axis": "--axis", "stride": "--stride", "chunk_rows": "--chunk-rows", "bin_factor": "--bin",
         "thickness_index": "--thickness-index", "mc_dropout": "--mc-dropout", "device": "--device",
         "semiangle_mrad": "--semiangle-mrad", "energy_kev": "--energy-kev", "mrad_per_px": "--mrad-per-px",
         "window": "--window", "library": "--library", "disc_radius_px": "--disc-radius-px", "crop": "--crop",
         "pixel_size": "--pixel-size", "classes": "--classes", "sampling_mrad": "--sampling-mrad"}


def predict_files(model_path, data_paths, out_dir, *, progress=None, **options) -> dict:
    """``inverscope predict``: dispatch on the model's task; options given as None were not given.

    A PACBED model (task ``pacbed``) reads any number of image and 4D-STEM files
    (:func:`inverscope.analysis.pacbed_predict.predict_pacbed`); a polarization model (task
    ``polarization``) maps one 4D-STEM scan or polar 4D-STEM store
    (:func:`inverscope.analysis.polar_predict.predict_polarization`); any other model is a stack model that
    maps one 4D-STEM dataset (:func:`predict_to_dir`); an atom-finding model (task ``atoms``) finds atoms in
    any number of images and movies (:func:`inverscope.analysis.atom_predict.predict_atoms`). Options the
    model's kind does not use are refused.

    For the 4D-STEM models (stack and polarization), patterns recorded at another detector
    sampling than the model's (from the file, or ``sampling_mrad`` = ``--sampling-mrad``) are
    resampled by angle to the model's (:func:`resample_patterns`); the summary's ``resampled``
    records it.
    """
    from inverscope.core.io import check_output_path
    from inverscope.models.io import load_metadata

    check_output_path(out_dir, must_be_empty=True)  # a bad --out is found before the model and data load
    meta = load_metadata(model_path)
    given = {k: v for k, v in options.items() if v is not None}
    if meta.get("task") == "pacbed":
        from inverscope.analysis.pacbed_predict import PACBED_OPTIONS, predict_pacbed

        _refuse(given, PACBED_OPTIONS, f"a PACBED model ({model_path})")
        return predict_pacbed(model_path, list(data_paths), out_dir, progress=progress, **given)
    if meta.get("task") == "polarization":
        from inverscope.analysis.polar_predict import POLAR_OPTIONS, predict_polarization

        _refuse(given, POLAR_OPTIONS, f"a polarization model ({model_path})")
        if len(data_paths) != 1:
            raise InverscopeError(f"DATA: got {len(data_paths)} files; a polarization model ({model_path}) maps one "
                                  "4D-STEM dataset per run: give one file, or run predict once per file")
        return predict_polarization(model_path, data_paths[0], out_dir, progress=progress, **given)
    if meta.get("task") == "atoms":
        from inverscope.analysis.atom_predict import ATOM_OPTIONS, predict_atoms

        _refuse(given, ATOM_OPTIONS, f"an atom-finding model ({model_path})")
        return predict_atoms(model_path, list(data_paths), out_dir, progress=progress, **given)
    _refuse(given, STACK_OPTIONS, f"a {meta.get('architecture')} model of task {meta.get('task')!r} ({model_path})")
    if len(data_paths) != 1:
        raise InverscopeError(f"DATA: got {len(data_paths)} files; a {meta.get('architecture')} model "
                              f"({model_path}) maps one 4D-STEM dataset per run: give one file, or run predict once per file")
    return predict_to_dir(model_path, data_paths[0], out_dir, **{**STACK_OPTIONS, **given})


def _refuse(given: dict, allowed, what: str) -> None:
    unused = [k for k in given if k not in allowed]
    if unused:
        raise InverscopeError(f"{FLAGS.get(unused[0], unused[0])}: not used by {what}; drop it")


__all__ = ["bin_patterns", "resample_patterns", "resampling_plan", "describe_resampling", "check_sampling_option",
           "SAMPLING_TOLERANCE", "FOV_TOLERANCE", "descriptor_maps", "stack_descriptors", "predict_to_dir",
           "predict_files"]
