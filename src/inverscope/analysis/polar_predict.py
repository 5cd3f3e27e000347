"""``inverscope predict`` with a polarization model: class, angle and confidence at every probe position.

A polarization model (:mod:`inverscope.analysis.polar_models`, task ``polarization``) reads one
CBED pattern per probe position. :func:`predict_polarization` slides it over a 4D-STEM scan read
``chunk_rows`` scan rows at a time (memory bounded by about ``chunk_rows * scan_x * ky * kx``
floats whatever the size of the scan) and writes maps of the predicted class and angle, the
confidence, the centre of mass (CoM) and an anomaly score.

Data
----
* A 4D-STEM file or store (anything :func:`inverscope.datasets.io.open_4dstem` opens, a 4D
  ``.npy`` included): one scan ``(scan_y, scan_x, ky, kx)``; maps are ``(scan_y, scan_x)``.
* A polar 4D-STEM campaign store (schema ``inverscope.polar_4d/1``,
  :mod:`inverscope.datasets.polar_campaign`): every simulated variant is its own ``k x k`` scan
  at the exit ``thickness_index`` (default: the last); maps are ``(variants, k, k)``. The
  store's positions are x-major, so map row ``i`` is the i-th position along the store's first
  scan coordinate, matching the first detector axis of its patterns (as in every inverscope
  store). Variants not yet simulated (``done`` false) are left as class -1 / NaN. The store's
  ``class_index`` labels give ``accuracy`` in the summary.

Patterns are fed to the network as stored (detector rows first); nothing is transposed.

Geometry
--------
The network takes ``P x P`` patterns (``meta["input"]["pixels"]``) of ``mrad_per_px``. Each
chunk is binned by ``bin_factor`` (sum of ``f x f`` pixel blocks, :func:`inverscope.analysis.maps.bin_patterns`).
When the data's detector sampling is known (``sampling_mrad`` = ``--sampling-mrad``, square
pixels, overriding the file's calibration; or the file's / store's own) and differs from the
model's by more than 5 % (:data:`SAMPLING_TOLERANCE`) after binning, every binned pattern is then
resampled by angle onto the model's ``P x P`` pixels of ``mrad_per_px`` about the optical axis
(:func:`inverscope.analysis.maps.resample_patterns`: overlap integration when coarsening,
bilinear interpolation when refining; values stay intensity per detector pixel); the summary's
``resampled`` records it, and a model field of view larger than the data's is refused
(:func:`inverscope.analysis.maps.resampling_plan`). Otherwise the binned patterns are, with
``crop``, cut to their centred ``crop x crop`` pixels, and a pattern size that still is not
``P x P`` is refused with the ``--bin`` / ``--crop`` that would fit.

Maps
----
``class_map`` (int16, -1 where not predicted), ``angle_deg`` (the class angle, or the regressed
angle of a regression model) [deg, counter-clockwise from the detector's +x = +column as displayed],
``confidence`` (:meth:`~inverscope.analysis.polar_models.PolarModel.predict`), ``com_y``, ``com_x``
(the plain CoM of :func:`inverscope.analysis.com.centre_of_mass` about the model's
``centre_px``, minus its mean over the scan (:func:`~inverscope.analysis.com.com_relative_to_scan_mean`)
[px of the pattern as used, after bin and crop], ``com_y`` positive down), ``com_angle_deg``
(:func:`~inverscope.analysis.com.com_angle`), ``disagreement``
(:func:`~inverscope.analysis.anomaly.neighbourhood_disagreement` of the class map, circular
with period ``n_classes``, 3 x 3 window, divided by ``n_classes / 2`` to lie in [0, 1]) and
``anomaly`` = the mean of ``disagreement`` and ``1 - confidence`` clipped to [0, 1].
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from inverscope.core.errors import InverscopeError

#: options of ``inverscope predict`` a polarization model uses
POLAR_OPTIONS = frozenset({"chunk_rows", "bin_factor", "crop", "thickness_index", "device", "sampling_mrad"})
#: relative difference between the data's detector sampling (after binning) and the model's above which the
#: patterns are resampled by angle to the model's
SAMPLING_TOLERANCE = 0.05
#: scans drawn in polarization_map.png at most
MAX_PLOTTED_SCANS = 12


@dataclass
class _Scans:
    """One or more scans of equal shape, read by rows."""

    kind: str                          # "scan" or "polar_4d"
    source: str
    n_scans: int
    rows: int
    cols: int
    pattern_shape: tuple[int, int]
    sampling_mrad: tuple[float, float] | None
    read: Callable[[int, int, int], np.ndarray]     # (scan, row0, row1) -> float32 (row1 - row0, cols, ky, kx)
    names: list[str] | None = None     # per scan (polar store: the variants)
    labels: np.ndarray | None = None   # per scan class index (-1 unknown)
    done: np.ndarray | None = None     # per scan, False where not simulated
    exit_index: int | None = None


def _read_array(arr, index, source: str, what: str) -> np.ndarray:
    from inverscope.analysis.maps import _read

    return _read(arr, index, source, what)


def _open_polar_store(group, path: Path, thickness_index: int) -> _Scans:
    try:
        patterns = group["patterns"]
        done = np.asarray(group["done"][:], bool)
        labels = np.asarray(group["class_index"][:], np.int64) if "class_index" in group else None
    except Exception:
        raise InverscopeError(f"{path}: polar 4D-STEM store is missing 'patterns' or 'done' (truncated?)") from None
    if patterns.ndim != 5:
        raise InverscopeError(f"{path}: 'patterns' has shape {patterns.shape}; expected (variants, exits, positions, P, P)")
    n_var, n_exit, n_pos, ky, kx = patterns.shape
    if not -n_exit <= thickness_index < n_exit:
        raise InverscopeError(f"thickness_index: got {thickness_index}; {path} has {n_exit} exit(s) "
                              f"(indices {-n_exit} .. {n_exit - 1})")
    k = math.isqrt(n_pos)
    if k * k != n_pos:
        raise InverscopeError(f"{path}: {n_pos} probe positions per variant are not a k x k grid")
    if not done.any():
        raise InverscopeError(f"{path}: no variant has been simulated yet (done is false everywhere); run the campaign first")
    t = thickness_index % n_exit
    sampling = group.attrs.get("sampling_mrad")
    try:
        sampling = (float(sampling[0]), float(sampling[1])) if sampling is not None else None
    except (TypeError, ValueError, IndexError):
        sampling = None

    def read(v: int, r0: int, r1: int) -> np.ndarray:
        block = _read_array(patterns, (v, t, slice(r0 * k, r1 * k)), str(path), f"variant {v}, scan rows {r0}-{r1 - 1}")
        return block.reshape(r1 - r0, k, ky, kx)

    names = list(group.attrs.get("variants") or [f"variant {v}" for v in range(n_var)])
    return _Scans("polar_4d", f"{path} (polar 4D-STEM store, exit index {t})", n_var, k, k, (ky, kx), sampling, read,
                  names=names, labels=labels, done=done, exit_index=t)


def open_polar_data(path, thickness_index: int = -1) -> _Scans:
    """Open the data of :func:`predict_polarization` lazily (see the module docstring for what opens)."""
    import zarr

    from inverscope.datasets.io import open_4dstem
    from inverscope.datasets.polar_campaign import SCHEMA

    path = Path(path)
    if path.is_dir():
        try:
            group = zarr.open_group(str(path), mode="r")
            schema = group.attrs.get("schema")
        except Exception:  # not a Zarr group: open_4dstem says what it is
            schema = None
        if schema == SCHEMA:
            return _open_polar_store(group, path, int(thickness_index))
    four = open_4dstem(path, thickness_index)
    if four.stacks:
        raise InverscopeError(f"{path}: a campaign store of probe-position stacks; a polarization model reads "
                              "4D-STEM scans (scan_y, scan_x, ky, kx) or a polar 4D-STEM store")
    data = four.data
    if data.ndim != 4:
        raise InverscopeError(f"{path}: expected 4D data (scan_y, scan_x, ky, kx), got shape {tuple(data.shape)}")
    rows, cols, ky, kx = (int(s) for s in data.shape)

    def read(s: int, r0: int, r1: int) -> np.ndarray:
        return _read_array(data, (slice(r0, r1),), four.source, f"scan rows {r0}-{r1 - 1}")

    return _Scans("scan", four.source, 1, rows, cols, (ky, kx), four.sampling_mrad, read)


# ---------------------------------------------------------------- geometry


def _suggest(shape: tuple[int, int], p: int, f_now: int) -> str:
    """What ``--bin`` / ``--crop`` would turn `shape` patterns into ``p x p`` (`f_now`: the ``--bin`` given)."""
    h, w = shape
    side = min(h, w)
    if side < p:
        return f"the patterns are too small for this model (it needs at least {p} x {p} px)"
    exact = [f for f in range(1, side // p + 1) if h // f == p and w // f == p]
    ways = [f"--bin {exact[0]}" + (" (no binning)" if exact[0] == 1 else "")] if exact else []
    f_crop = f_now if side // f_now >= p else side // p  # crop after the binning given when it leaves enough
    if not exact or f_crop != exact[0]:
        ways.append(f"--crop {p}" + (f" after --bin {f_crop}" if f_crop > 1 else ""))
    return "use " + ", or ".join(ways)


def used_pattern_shape(shape: tuple[int, int], p: int, bin_factor: int, crop: int | None, source: str) -> tuple[int, int]:
    """Pattern shape after binning and cropping; raises unless it is the model's ``p x p`` [px]."""
    f = int(bin_factor)
    if f < 1:
        raise InverscopeError(f"bin: got {bin_factor}; must be a positive integer")
    h, w = (int(s) for s in shape)
    bh, bw = h // f, w // f
    binned = f" ({bh} x {bw} after --bin {f})" if f > 1 else ""
    if bh < 1 or bw < 1:
        raise InverscopeError(f"bin: got {f}; larger than the {h} x {w} px patterns of {source}")
    if crop is not None:
        c = int(crop)
        if c < 1 or c > min(bh, bw):
            raise InverscopeError(f"crop: got {crop}; must be 1 .. {min(bh, bw)} px, the side of the {h} x {w} px "
                                  f"patterns{binned} of {source}")
        if c != p and min(bh, bw) >= p:
            raise InverscopeError(f"crop: got {crop}; the model takes {p} x {p} px: use --crop {p}")
        bh = bw = c
    if (bh, bw) != (p, p):
        now = f"{h} x {w} px{binned}" + (f", cropped to {bh} x {bw}" if crop is not None else "")
        raise InverscopeError(f"{source}: patterns are {now}; the model takes {p} x {p}: {_suggest((h, w), p, f)}")
    return bh, bw


def prepare(block: np.ndarray, bin_factor: int, crop: int | None, resample: dict | None = None) -> np.ndarray:
    """Bin the last two axes by `bin_factor`, then cut the centred ``crop x crop`` pixels, or, with a
    :func:`~inverscope.analysis.maps.resampling_plan` `resample`, resample them by angle to the model's."""
    from inverscope.analysis.maps import bin_patterns, resample_patterns

    x = bin_patterns(block, bin_factor)
    if resample:
        return resample_patterns(x, resample["from_mrad"], resample["to_mrad"], resample["shape"],
                                 resample.get("centre_in_px"))
    if crop is not None:
        h, w = x.shape[-2:]
        y0, x0 = (h - crop) // 2, (w - crop) // 2
        x = x[..., y0:y0 + crop, x0:x0 + crop]
    return x


def _check_finite(block: np.ndarray, r0: int, scans: _Scans, s: int) -> None:
    bad = ~np.isfinite(block).all(axis=(-2, -1))
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        where = f" of {scans.names[s]}" if scans.names else ""
        raise InverscopeError(f"{scans.source}: the pattern at scan position (row {r0 + i}, col {j}){where} holds NaN or "
                              f"infinite values ({int(bad.sum())} such pattern(s) in scan rows {r0}-{r0 + block.shape[0] - 1}); "
                              "mask or drop them first")


def _com_px(x: np.ndarray, centre) -> np.ndarray:
    """(n, 2) CoM (row, col) about `centre` [px]; NaN for patterns that do not sum to a positive number."""
    from inverscope.analysis.com import centre_of_mass

    total = x.sum(axis=(-2, -1), dtype=np.float64)
    ok = total > 0
    out = np.full((x.shape[0], 2), np.nan)
    if ok.any():
        out[ok] = centre_of_mass(x[ok], centre_px=centre).px
    return out


# ---------------------------------------------------------------- prediction


def _predict_scan(model, scans: _Scans, s: int, f: int, crop: int | None, chunk_rows: int, tick,
                  resample: dict | None = None) -> dict:
    rows, cols = scans.rows, scans.cols
    cls = np.full((rows, cols), -1, np.int16)
    ang, conf = np.full((rows, cols), np.nan, np.float32), np.full((rows, cols), np.nan, np.float32)
    com = np.full((rows, cols, 2), np.nan)
    centre = tuple(float(c) for c in model.meta["input"].get("centre_px", [model.pixels // 2] * 2))
    for r0 in range(0, rows, chunk_rows):
        r1 = min(r0 + chunk_rows, rows)
        block = scans.read(s, r0, r1)
        _check_finite(block, r0, scans, s)
        x = prepare(block, f, crop, resample).reshape(-1, model.pixels, model.pixels)
        pred = model.predict(x)
        cls[r0:r1] = pred["class"].reshape(r1 - r0, cols)
        conf[r0:r1] = pred["confidence"].reshape(r1 - r0, cols)
        ang[r0:r1] = pred["angle_deg"].reshape(r1 - r0, cols)
        com[r0:r1] = _com_px(x, centre).reshape(r1 - r0, cols, 2)
        tick(x.shape[0])
    return {"class_map": cls, "angle_deg": ang, "confidence": conf, "com": com}


def _derived(m: dict, n_classes: int) -> dict:
    """CoM relative to the scan mean, its angle, disagreement and anomaly of one predicted scan."""
    from inverscope.analysis.anomaly import neighbourhood_disagreement
    from inverscope.analysis.com import com_angle, com_relative_to_scan_mean

    com = m.pop("com")
    ok = np.isfinite(com).all(axis=-1)
    rel = np.full_like(com, np.nan)
    mean = None
    if ok.any():
        rel[ok] = com_relative_to_scan_mean(com[ok])
        mean = [float(v) for v in com[ok].mean(axis=0)]
    dis = neighbourhood_disagreement(m["class_map"].astype(np.float64), circular_period=n_classes) / (n_classes / 2)
    unc = np.clip(1.0 - m["confidence"].astype(np.float64), 0.0, 1.0)
    m.update(com_y=rel[..., 0].astype(np.float32), com_x=rel[..., 1].astype(np.float32),
             com_angle_deg=np.where(ok, com_angle(np.nan_to_num(rel)), np.nan).astype(np.float32),
             disagreement=dis.astype(np.float32), anomaly=(0.5 * (dis + unc)).astype(np.float32))
    return {"com_mean_px": mean, "com_undefined": int((~ok).sum())}


def _empty_scan(rows: int, cols: int) -> dict:
    nan = np.full((rows, cols), np.nan, np.float32)
    return {"class_map": np.full((rows, cols), -1, np.int16), **{k: nan.copy() for k in MAP_NAMES[1:]}}


#: the maps in maps.npz, in order
MAP_NAMES = ["class_map", "angle_deg", "confidence", "anomaly", "disagreement", "com_x", "com_y", "com_angle_deg"]


# ---------------------------------------------------------------- outputs


def _hsv_image(angle_deg: np.ndarray, value: np.ndarray) -> np.ndarray:
    from matplotlib.colors import hsv_to_rgb

    ok = np.isfinite(angle_deg) & np.isfinite(value)
    hsv = np.stack([np.where(ok, np.mod(angle_deg, 360) / 360, 0), np.ones_like(angle_deg, dtype=float),
                    np.where(ok, np.clip(value, 0, 1), 0)], axis=-1)
    return hsv_to_rgb(hsv)


def plot_polarization(path: Path, maps: dict[str, np.ndarray], titles: list[str], title: str) -> None:
    """polarization_map.png: per scan, angle (hue) x confidence (brightness), CoM (colour and arrows), anomaly."""
    from inverscope.report.figures import save_figure  # first: selects the Agg backend

    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    n = min(len(titles), MAX_PLOTTED_SCANS)
    fig, axes = plt.subplots(n, 3, figsize=(11.5, 3.2 * n), squeeze=False, layout="constrained")
    wheel = ScalarMappable(Normalize(0, 360), plt.get_cmap("hsv"))
    for s in range(n):
        ax_p, ax_c, ax_a = axes[s]
        ax_p.imshow(_hsv_image(maps["angle_deg"][s], maps["confidence"][s]), interpolation="nearest")
        ax_p.set_title(f"{titles[s]}: polarization (hue: angle, brightness: confidence)", fontsize=8)
        fig.colorbar(wheel, ax=ax_p, shrink=0.85, ticks=[0, 90, 180, 270, 360], label="angle [deg]")
        cy, cx = maps["com_y"][s], maps["com_x"][s]
        mag = np.hypot(cy, cx)
        top = np.nanmax(mag) if np.isfinite(mag).any() and np.nanmax(mag) > 0 else 1.0
        ax_c.imshow(_hsv_image(maps["com_angle_deg"][s], mag / top), interpolation="nearest")
        yy, xx = np.mgrid[:cy.shape[0], :cy.shape[1]]
        ax_c.quiver(xx, yy, np.nan_to_num(cx), -np.nan_to_num(cy), color="white", angles="uv", pivot="middle")
        ax_c.set_title(f"CoM - scan mean (max {top:.3g} px; hue: direction)", fontsize=8)
        fig.colorbar(wheel, ax=ax_c, shrink=0.85, ticks=[0, 90, 180, 270, 360], label="direction [deg]")
        im = ax_a.imshow(maps["anomaly"][s], cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        fig.colorbar(im, ax=ax_a, shrink=0.85)
        ax_a.set_title("anomaly (disagreement + 1 - confidence) / 2", fontsize=8)
        for ax in (ax_p, ax_c, ax_a):
            ax.set_xlabel("scan column", fontsize=7)
            ax.set_ylabel("scan row", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    more = f" (first {n} of {len(titles)} scans)" if len(titles) > n else ""
    fig.suptitle(title + more, fontsize=9)
    save_figure(fig, path)


def predict_polarization(model_path, data_path, out_dir, *, chunk_rows: int = 8, bin_factor: int = 1,
                         crop: int | None = None, thickness_index: int = -1, device: str = "cpu",
                         sampling_mrad: float | None = None,
                         progress: Callable[[int, int], None] | None = None) -> dict:
    """Polarization maps of the data at `data_path` with the polarization model at `model_path`.

    Parameters
    ----------
    model_path : str or Path
        A polarization model (:func:`inverscope.analysis.polar_models.load_polar_model`).
    data_path : str or Path
        A 4D-STEM file or store, a 4D ``.npy``, or a polar 4D-STEM store (see the module docstring).
    out_dir : str or Path
        New (or empty) output directory; written all or nothing.
    chunk_rows : int
        Scan rows read at a time (bounds memory).
    bin_factor : int
        Integer detector binning applied first (sum of ``f x f`` pixel blocks).
    crop : int, optional
        Side [px, after binning] of the centred crop; must then be the model's side. Refused
        when the patterns are resampled by angle.
    thickness_index : int
        Exit of a polar 4D-STEM store or thickness of an inverscope store (default: the last).
    device : str
        Torch device of the network (``cpu``, ``cuda``, ``cuda:1``, ...).
    sampling_mrad : float, optional
        The data's detector pixel size [mrad/px, square pixels] before binning; overrides the
        file's calibration. When the data's sampling (this or the file's) differs from the
        model's by more than :data:`SAMPLING_TOLERANCE` after binning, the patterns are
        resampled by angle to the model's (module docstring).
    progress : callable, optional
        Called as ``progress(done, total)`` over probe positions.

    Returns
    -------
    dict
        The summary written to ``summary.json``: ``outputs`` (name -> file), ``model``,
        ``data``, ``kind``, ``scan_shape``, ``pattern_shape_read``, ``pattern_shape_used``,
        ``settings``, ``sampling_mrad_read``, ``resampled`` (null, or the
        :func:`~inverscope.analysis.maps.resampling_plan`: ``from_mrad``, ``to_mrad``, ``shape``,
        ...), ``n_positions``, ``class_counts``, ``mean_confidence``, ``accuracy``
        (polar stores), ``com_mean_px``, ``wall_s``, ``patterns_per_s``, ``warnings``.
        Files: ``maps.npz`` (the maps of the module docstring, each ``(scan_y, scan_x)`` or
        ``(variants, k, k)``), ``polarization_map.png``, ``summary.json``.

    Raises
    ------
    InverscopeError
        One line: a model that is not a polarization model, unreadable data, patterns the
        model cannot take after binning and cropping (with the ``--bin`` / ``--crop`` that
        fit), a model field of view the data do not cover (both in mrad), a NaN/inf pattern
        (its scan position), bad option values (``sampling_mrad`` <= 0 or not finite). Nothing
        is written.
    """
    from inverscope.analysis.maps import check_sampling_option, resampling_plan
    from inverscope.analysis.polar_models import load_polar_model
    from inverscope.core.device import resolve_device
    from inverscope.core.io import check_output_path, staged_output, write_json_atomic

    out_dir = Path(out_dir)
    check_output_path(out_dir, must_be_empty=True)
    if int(chunk_rows) < 1:
        raise InverscopeError(f"chunk_rows: got {chunk_rows}; must be >= 1")
    sampling_mrad = check_sampling_option(sampling_mrad)
    chunk_rows, f = int(chunk_rows), int(bin_factor)
    model = load_polar_model(model_path, device=str(resolve_device(device)))
    n_classes, p = int(model.meta["n_classes"]), model.pixels
    scans = open_polar_data(data_path, thickness_index)
    warnings: list[str] = []
    data_sampling = (sampling_mrad, sampling_mrad) if sampling_mrad is not None else scans.sampling_mrad
    if f < 1 or min(scans.pattern_shape) // f < 1:
        used_pattern_shape(scans.pattern_shape, p, f, crop, scans.source)  # raises the --bin error
    plan = resampling_plan(data_sampling, scans.pattern_shape, f, model.meta["input"].get("mrad_per_px"), (p, p),
                           SAMPLING_TOLERANCE, scans.source)
    if plan:
        if crop is not None:
            raise InverscopeError(f"crop: not used when the patterns are resampled by angle ({plan['from_mrad'][0]:.4g} "
                                  f"mrad/px after --bin {f} to the model's {plan['to_mrad'][0]:.4g} mrad/px, {p} x {p} px); "
                                  "drop --crop")
        plan["sampling_from"] = "--sampling-mrad" if sampling_mrad is not None else "file"
        used = (p, p)
        warnings.extend(plan["warnings"])
    else:
        used = used_pattern_shape(scans.pattern_shape, p, f, crop, scans.source)

    todo = [s for s in range(scans.n_scans) if scans.done is None or scans.done[s]]
    total, done = len(todo) * scans.rows * scans.cols, [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], total)

    t0 = time.perf_counter()
    per_scan, extra = [], []
    for s in range(scans.n_scans):
        if s not in todo:
            per_scan.append(_empty_scan(scans.rows, scans.cols))
            extra.append({"com_mean_px": None, "com_undefined": 0})
            continue
        m = _predict_scan(model, scans, s, f, crop, chunk_rows, tick, plan)
        extra.append(_derived(m, n_classes))
        per_scan.append(m)
    wall = time.perf_counter() - t0
    maps = {k: np.stack([m[k] for m in per_scan]) for k in MAP_NAMES}
    undefined = sum(e["com_undefined"] for e in extra)
    if undefined:
        warnings.append(f"{undefined} pattern(s) do not sum to a positive intensity; their CoM is NaN")

    ci = maps["class_map"]
    labels = [str(v) for v in model.meta.get("class_labels") or range(n_classes)]
    summary = {"outputs": {"maps": "maps.npz", "figure": "polarization_map.png"},
               "task": "polarization", "kind": scans.kind,
               "model": {"path": str(model_path), "regime": model.meta.get("regime"), "n_classes": n_classes,
                         "class_labels": labels, "class_angles_deg": model.meta.get("class_angles_deg"),
                         "input": model.meta.get("input")},
               "data": str(data_path), "source": scans.source,
               "scan_shape": [scans.rows, scans.cols] if scans.kind == "scan" else [scans.n_scans, scans.rows, scans.cols],
               "pattern_shape_read": list(scans.pattern_shape), "pattern_shape_used": list(used),
               "sampling_mrad_read": list(scans.sampling_mrad) if scans.sampling_mrad else None,
               "resampled": plan,
               "settings": {"chunk_rows": chunk_rows, "bin_factor": f, "crop": crop, "thickness_index": thickness_index,
                            "device": device, "sampling_mrad": sampling_mrad},
               "maps": {k: list(v.shape if scans.kind != "scan" else v.shape[1:]) for k, v in maps.items()},
               "n_positions": total,
               "class_counts": {labels[c] if c < len(labels) else str(c): int((ci == c).sum()) for c in range(n_classes)},
               "mean_confidence": float(np.nanmean(maps["confidence"])) if total else None,
               "com_mean_px": extra[0]["com_mean_px"] if scans.kind == "scan" else [e["com_mean_px"] for e in extra],
               "wall_s": wall, "patterns_per_s": total / wall if wall > 0 else None, "warnings": warnings}
    if scans.kind == "polar_4d":
        summary["variants"] = scans.names
        summary["exit_index"] = scans.exit_index
        if scans.labels is not None:
            truth = np.broadcast_to(scans.labels[:, None, None], ci.shape)
            known = (ci >= 0) & (truth >= 0)
            summary["labels"] = [int(v) for v in scans.labels]
            summary["accuracy"] = float(np.mean(ci[known] == truth[known])) if known.any() else None
            summary["accuracy_per_variant"] = [float(np.mean(ci[v] == scans.labels[v])) if v in todo and scans.labels[v] >= 0
                                               else None for v in range(scans.n_scans)]
    out_maps = maps if scans.kind != "scan" else {k: v[0] for k, v in maps.items()}
    titles = scans.names or [Path(str(data_path)).name]
    with staged_output(out_dir) as stage:
        np.savez(stage / "maps.npz", **out_maps)
        plot_polarization(stage / "polarization_map.png", maps, titles,
                          f"{Path(str(model_path)).name} on {Path(str(data_path)).name}")
        write_json_atomic(stage / "summary.json", summary)
    return summary


__all__ = ["POLAR_OPTIONS", "MAP_NAMES", "open_polar_data", "used_pattern_shape", "prepare", "plot_polarization",
           "predict_polarization"]
