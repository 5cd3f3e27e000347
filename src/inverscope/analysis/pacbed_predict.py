"""Apply a PACBED network (thickness [nm], tilt [mrad]) to experimental patterns.

Sources are image files (PNG, JPEG, TIFF, 2D ``.npy``: one pattern each) and 4D-STEM files
(anything :func:`inverscope.datasets.io.open_4dstem` opens, or a 4D ``.npy``). A 4D scan is cut
into ``window x window`` blocks of probe positions that tile it from scan position (0, 0)
(rows and columns beyond the last whole window are left out and reported); each block is
averaged into one PACBED, so map pixel ``(i, j)`` is scan rows ``i*w ... (i+1)*w - 1`` and
columns ``j*w ... (j+1)*w - 1``.

Every pattern is registered (:func:`inverscope.analysis.registration.register_pacbed`: disc
centre and radius, calibration, rotation onto the crystal axes) on the model's grid and read
by the network with MC-dropout uncertainty. The two 4mm mirror families ([100], [110]) are
told apart with a reference: the library's patterns when one is given, else the model's mean
training input (squared back from its square-root transform). Predictions are written into a
new directory, all or nothing (:func:`predict_pacbed`).

Errors in the input end the run with one line and nothing written: an image without a
visible disc, a disc radius outside the allowed range, an unknown file format, a window
larger than the scan, a model for another semiangle or voltage than stated. In a 4D scan a
single window that does not register is recorded (NaN values and the reason) rather than
ending the run; a scan none of whose windows register is an error.
"""

from __future__ import annotations

import csv
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from inverscope.analysis.pacbed_models import fold_tilt, predict_with_uncertainty, to_input
from inverscope.analysis.registration import RegistrationError, register_pacbed, resample_to_crystal
from inverscope.core.errors import InverscopeError, field_error
from inverscope.report.pacbed_figures import plot_maps, plot_patterns

#: options of ``inverscope predict`` a PACBED model uses (keyword names of :func:`predict_pacbed`)
PACBED_OPTIONS = frozenset({"semiangle_mrad", "energy_kev", "mrad_per_px", "mc_dropout", "window", "library",
                            "thickness_index", "disc_radius_px", "device"})
#: relative mismatch of a stated semiangle / voltage with the model's that is refused
STATED_RTOL = {"semiangle": 0.01, "energy": 0.005}
#: columns of predictions.csv (and keys of each row of predictions.json)
COLUMNS = ("source", "kind", "window_row", "window_col", "scan_row_start", "scan_row_stop", "scan_col_start",
           "scan_col_stop", "thickness_nm", "thickness_sd_nm", "tilt_x_mrad", "tilt_x_sd_mrad", "tilt_y_mrad",
           "tilt_y_sd_mrad", "centre_row_px", "centre_col_px", "radius_px", "mrad_per_px", "mrad_per_px_source",
           "rotation_deg", "symmetry_score", "mirror_family_correlation", "disc_contrast", "saturated_fraction",
           "saturated_fraction_network", "library_thickness_nm", "library_tilt_x_mrad", "library_tilt_y_mrad",
           "library_correlation", "registration_s", "network_s", "warnings")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
_READ_BUDGET_BYTES = 2 ** 27


# ---------------------------------------------------------------- model, stated parameters, library


@dataclass
class PACBEDModel:
    """A loaded PACBED network and what its metadata says about its input."""

    net: object
    meta: dict
    path: str
    semiangle_mrad: float
    energy_kev: float
    crop_alpha: float
    pixels: int
    mean: np.ndarray
    std: np.ndarray
    target_scale: tuple[float, float, float]


def load_pacbed_model(path) -> PACBEDModel:
    """Load a model saved by the pacbed study and check the metadata prediction needs (one-line errors)."""
    from inverscope.models.io import load_model, model_paths

    net, meta = load_model(path, device="cpu")
    where = model_paths(path)[1]
    if meta.get("task") != "pacbed":
        raise InverscopeError(f"{where}: task {meta.get('task')!r}; expected a PACBED model (task 'pacbed')")
    inp = meta.get("input") if isinstance(meta.get("input"), dict) else {}
    for key in ("semiangle_mrad", "energy_ev", "crop_alpha", "pixels"):
        if not isinstance(inp.get(key), (int, float)) or not inp[key] > 0:
            raise InverscopeError(f"{where}: input.{key}: got {inp.get(key)!r}; a PACBED model records its "
                                  "semiangle, voltage and input grid (as the pacbed study saves them)")
    n = int(inp["pixels"])
    norm = meta.get("normalization") if isinstance(meta.get("normalization"), dict) else {}
    try:
        mean, std = (np.asarray(norm[k], dtype=np.float32) for k in ("mean", "std"))
        scale = tuple(float(v) for v in meta["target_scale"])
    except (KeyError, TypeError, ValueError):
        raise InverscopeError(f"{where}: normalization.mean/std or target_scale missing or not numeric") from None
    if mean.shape != (n, n) or std.shape != (n, n) or len(scale) != 3:
        raise InverscopeError(f"{where}: normalization of shape {mean.shape}/{std.shape} and {len(scale)} target "
                              f"scales; the model's input is {n} x {n} with 3 targets")
    return PACBEDModel(net, meta, str(path), float(inp["semiangle_mrad"]), float(inp["energy_ev"]) / 1e3,
                       float(inp["crop_alpha"]), n, mean, std, scale)


def check_stated(model: PACBEDModel, semiangle_mrad: float | None, energy_kev: float | None) -> None:
    """Refuse a stated semiangle [mrad] or voltage [kV] that is not the model's (1 %, 0.5 %)."""
    for flag, value, own, unit, rtol in (("--semiangle-mrad", semiangle_mrad, model.semiangle_mrad, "mrad",
                                          STATED_RTOL["semiangle"]),
                                         ("--energy-kev", energy_kev, model.energy_kev, "kV", STATED_RTOL["energy"])):
        if value is None:
            continue
        if not (math.isfinite(value) and value > 0):
            raise field_error(flag, value, f"must be > 0 [{unit}]")
        if abs(value / own - 1) > rtol:
            raise InverscopeError(f"{flag}: stated {value:g} {unit}, but the model {model.path} was trained for "
                                  f"{own:g} {unit}; a PACBED network reads only data taken at its own semiangle and "
                                  f"voltage (within {100 * rtol:g} %): use a model trained for {value:g} {unit}")


@dataclass
class PACBEDLibrary:
    """A PACBED library store (the study's ``OUT/library.zarr``), its simulated tilts only."""

    path: str
    patterns: np.ndarray           # (tilts, thicknesses, k, k)
    tilts_mrad: np.ndarray         # (tilts, 2), folded
    thicknesses_nm: np.ndarray
    sampling_mrad: float
    model: PACBEDModel
    _grid: dict = field(default_factory=dict)

    def on_grid(self, ti: int, zi: int) -> np.ndarray:
        """Library pattern (tilt `ti`, thickness `zi`) on the model's input grid."""
        if (ti, zi) not in self._grid:
            m = self.model
            self._grid[ti, zi] = resample_to_crystal(self.patterns[ti, zi], self.sampling_mrad, m.semiangle_mrad,
                                                     crop_alpha=m.crop_alpha, out_shape=(m.pixels, m.pixels))[0]
        return self._grid[ti, zi]

    def nearest(self, thickness_nm: float, tilt_mrad) -> tuple[int, int]:
        """(tilt index, thickness index) nearest the folded tilt and the thickness."""
        ti = int(np.argmin(np.linalg.norm(self.tilts_mrad - fold_tilt(np.asarray(tilt_mrad)), axis=1)))
        return ti, int(np.argmin(np.abs(self.thicknesses_nm - thickness_nm)))

    def references(self, n_max: int = 64) -> np.ndarray:
        """Up to `n_max` patterns on the grid, spread over tilts and thicknesses (mirror-family references)."""
        flat = np.unique(np.linspace(0, self.patterns.shape[0] * self.patterns.shape[1] - 1, n_max).astype(int))
        return np.stack([self.on_grid(*divmod(int(i), self.patterns.shape[1])) for i in flat])


def open_library(path, model: PACBEDModel) -> PACBEDLibrary:
    """Open a PACBED library store and check it was simulated for the model's compound, voltage, semiangle."""
    import zarr

    from inverscope.datasets.pacbed_library import SCHEMA

    try:
        g = zarr.open_group(str(path), mode="r")
        attrs = dict(g.attrs)
        done = np.asarray(g["done"][:], bool)
    except Exception:
        raise InverscopeError(f"--library: {path} is not a readable PACBED library store (the study's "
                              "OUT/library.zarr)") from None
    if attrs.get("schema") != SCHEMA:
        raise InverscopeError(f"--library: {path} has schema {attrs.get('schema')!r}; expected {SCHEMA!r}")
    own = model.meta["input"]
    for key, unit in (("semiangle_mrad", "mrad"), ("energy_ev", "eV"), ("compound", "")):
        a, b = attrs.get(key), own.get(key)
        same = a == b if key == "compound" or a is None or b is None else math.isclose(a, b, rel_tol=1e-3)
        if not same:
            raise InverscopeError(f"--library: {path} was simulated for {key} {a} {unit}, the model for {b} {unit}".rstrip())
    if not done.any():
        raise InverscopeError(f"--library: {path} holds no simulated tilt yet")
    tilts = np.asarray(attrs["tilts_mrad"], float)[done]
    return PACBEDLibrary(str(path), np.asarray(g["patterns"][:], np.float32)[done], fold_tilt(tilts),
                         np.asarray(attrs["thicknesses_angstrom"], float) / 10, float(attrs["sampling_mrad"][0]), model)


# ---------------------------------------------------------------- sources


@dataclass
class Source:
    """One input file: an image (one pattern) or a 4D scan cut into windows."""

    path: Path
    kind: str                      # "image" or "4d"
    name: str = ""
    four: object = None
    grid: tuple[int, int] = (1, 1)  # windows (rows, cols)
    info: dict = field(default_factory=dict)

    @property
    def n_patterns(self) -> int:
        return self.grid[0] * self.grid[1]


def _npy_ndim(path: Path) -> int | None:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).ndim
    except Exception:
        return None  # the image reader says what is wrong


def open_source(path, window: int, thickness_index: int = -1) -> Source:
    """Classify `path` (image or 4D-STEM), open a 4D scan lazily and check the window fits it."""
    from inverscope.datasets.io import open_4dstem

    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_file() and suffix in IMAGE_SUFFIXES and not (suffix == ".npy" and _npy_ndim(path) == 4):
        return Source(path, "image")
    if path.is_file() and suffix not in IMAGE_SUFFIXES:
        try:
            four = open_4dstem(path, thickness_index)
        except InverscopeError as err:
            if "unknown file extension" not in str(err):
                raise
            from inverscope.datasets.io._rsciio import FOURD_FORMATS

            raise InverscopeError(f"{path}: unknown format {path.suffix or '(none)'!r}; predict reads images "
                                  f"({', '.join(IMAGE_SUFFIXES)}: one pattern each) and 4D-STEM data (an inverscope "
                                  f"Zarr store, {FOURD_FORMATS})") from None
    elif not path.exists():
        raise InverscopeError(f"{path}: no such file or directory")
    else:
        four = open_4dstem(path, thickness_index)
    return _scan_source(path, four, window)


def _scan_source(path: Path, four, window: int) -> Source:
    shape = tuple(four.data.shape)
    if four.stacks or len(shape) != 4:
        raise InverscopeError(f"{path}: {'a campaign store of probe-position stacks' if four.stacks else f'shape {shape}'}; "
                              "PACBED prediction needs a 4D-STEM scan (scan_y, scan_x, ky, kx)")
    ny, nx = shape[0] // window, shape[1] // window
    if ny == 0 or nx == 0:
        raise InverscopeError(f"--window: {window} scan positions per side exceeds the scan of {path} "
                              f"({shape[0]} x {shape[1]} positions); use --window <= {min(shape[:2])}")
    info = {"scan_shape": list(shape[:2]), "pattern_shape": list(shape[2:]), "windows": [ny, nx],
            "uncovered_scan_rows": shape[0] - ny * window, "uncovered_scan_cols": shape[1] - nx * window,
            "sampling_mrad": list(four.sampling_mrad) if four.sampling_mrad else None, "reader": four.source}
    return Source(path, "4d", four=four, grid=(ny, nx), info=info)


def window_means(src: Source, window: int, i: int, j0: int, j1: int) -> np.ndarray:
    """PACBEDs (j1 - j0, ky, kx) of windows ``(i, j0 ... j1 - 1)`` of a 4D source: means over their positions."""
    ky, kx = src.four.data.shape[-2:]
    rows, cols = slice(i * window, (i + 1) * window), slice(j0 * window, j1 * window)
    try:
        block = np.asarray(src.four.data[rows, cols], dtype=np.float32)
    except Exception as err:  # zarr / h5py / codecs raise many types on damaged data
        raise InverscopeError(f"{src.path}: could not read scan rows {rows.start}-{rows.stop - 1} "
                              f"({type(err).__name__}); the data may be truncated") from None
    return block.reshape(window, j1 - j0, window, ky, kx).mean(axis=(0, 2), dtype=np.float64)


def window_patterns(src: Source, window: int):
    """Yield ``(i, j, pattern)`` for every window of a 4D source, reading about 128 MB at a time."""
    ny, nx = src.grid
    ky, kx = src.four.data.shape[-2:]
    step = max(1, _READ_BUDGET_BYTES // (window * window * ky * kx * 4))
    for i in range(ny):
        for j0 in range(0, nx, step):
            j1 = min(nx, j0 + step)
            for j, pattern in enumerate(window_means(src, window, i, j0, j1)):
                yield i, j0 + j, pattern


# ---------------------------------------------------------------- registration and the network


@dataclass
class Settings:
    """What a prediction run uses; see :func:`predict_pacbed`."""

    semiangle_mrad: float
    energy_kev: float
    mrad_per_px: float | None
    mc_passes: int
    window: int
    disc_radius_px: tuple[float, float | None]  # [px]; None: half the frame
    seed: int
    reference: np.ndarray
    reference_kind: str


def _relabel(err: RegistrationError, where: str, crop_alpha: float) -> InverscopeError:
    """A registration error as one line that names the file and the CLI's words."""
    msg = str(err).replace("radius_range_px:", "--disc-radius-px:").replace("mrad_per_px:", "--mrad-per-px:")
    msg = re.sub(r"; use crop_alpha <= [0-9.]+$", f"; the model reads +-{crop_alpha:g} semiangles around the disc "
                 "centre, so that circle must lie on the frame (a centred disc or a shorter camera length)", msg)
    return InverscopeError(f"{where}: {msg}")


def register(frame: np.ndarray, model: PACBEDModel, settings: Settings, where: str, saturation: float | None = None):
    """Register one frame onto the model's grid; returns the :class:`RegisteredPattern` and the time [s]."""
    t = time.perf_counter()
    lo, hi = settings.disc_radius_px
    try:
        reg = register_pacbed(frame, settings.semiangle_mrad, mrad_per_px=settings.mrad_per_px,
                              crop_alpha=model.crop_alpha, out_shape=(model.pixels, model.pixels),
                              saturation=saturation, reference=settings.reference,
                              radius_range_px=(lo, min(np.shape(frame)) / 2 if hi is None else hi))
    except RegistrationError as err:
        raise _relabel(err, where, model.crop_alpha) from None
    return reg, time.perf_counter() - t


def read_network(model: PACBEDModel, patterns: np.ndarray, passes: int, seed: int):
    """Mean and sd (n, 3) of thickness [nm], folded tilt (tx, ty) [mrad]; sd NaN for one pass; time [s]."""
    t = time.perf_counter()
    x = to_input(patterns, model.mean, model.std)[0]
    mu, sd = predict_with_uncertainty(model.net, x, model.target_scale, passes=max(1, passes), seed=seed)
    mu = np.concatenate([mu[:, :1], fold_tilt(mu[:, 1:])], axis=1)
    return mu, (sd if passes > 1 else np.full_like(sd, np.nan)), time.perf_counter() - t


def _outside_training(model: PACBEDModel, mu: np.ndarray) -> list[str]:
    """Warnings for a reading outside the thicknesses and tilts the model was trained on (extrapolation)."""
    lib = model.meta.get("library") if isinstance(model.meta.get("library"), dict) else {}
    out = []
    try:
        lo, hi = float(lib["thickness_nm"][0]), float(lib["thickness_nm"][1])
        tilt_max = float(lib["tilt_max_mrad"])
    except (KeyError, TypeError, ValueError, IndexError):
        return out
    if np.isfinite(mu[0]) and not lo <= mu[0] <= hi:
        out.append(f"thickness {mu[0]:.1f} nm is outside the model's training range {lo:g}-{hi:g} nm (extrapolated)")
    if np.isfinite(mu[1]) and mu[1] > tilt_max:
        out.append(f"tilt {mu[1]:.2f} mrad is beyond the model's training range (up to {tilt_max:g} mrad; extrapolated)")
    return out


def _match(library: PACBEDLibrary | None, reg, mu) -> dict:
    """The library pattern nearest the prediction, in the 4mm operation that fits the registered pattern best."""
    from inverscope.analysis.template_matching import OPS_4MM

    valid = ~(reg.saturated | reg.outside)
    if library is None or not np.isfinite(mu[0]) or valid.sum() < 16:
        return {}
    ti, zi = library.nearest(mu[0], mu[1:])
    sim = library.on_grid(ti, zi)
    a = np.sqrt(np.clip(reg.pattern[valid], 0, None))
    corr = [np.corrcoef(a, np.sqrt(np.clip(op(sim)[valid], 0, None)))[0, 1] for op in OPS_4MM]
    best = int(np.nanargmax(corr))
    return {"library_thickness_nm": float(library.thicknesses_nm[zi]),
            "library_tilt_x_mrad": float(library.tilts_mrad[ti, 0]), "library_tilt_y_mrad": float(library.tilts_mrad[ti, 1]),
            "library_correlation": float(corr[best]), "_sim": np.ascontiguousarray(OPS_4MM[best](sim))}


def _row(src: Source, ij, reg, reg_s: float, window: int, extra_warnings: list[str]) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(source=str(src.path), kind=src.kind, registration_s=reg_s, warnings=list(extra_warnings))
    if src.kind == "4d":
        i, j = ij
        row.update(window_row=i, window_col=j, scan_row_start=i * window, scan_row_stop=(i + 1) * window,
                   scan_col_start=j * window, scan_col_stop=(j + 1) * window)
    if reg is not None:
        f = reg.found
        fam = f.get("mirror_family_correlation")
        row.update(centre_row_px=f["centre_px"][0], centre_col_px=f["centre_px"][1], radius_px=f["radius_px"],
                   mrad_per_px=f["mrad_per_px"], mrad_per_px_source=f["mrad_per_px_source"],
                   rotation_deg=f["rotation_deg"], symmetry_score=f["symmetry_score"],
                   mirror_family_correlation=None if fam is None else [float(v) for v in fam],
                   disc_contrast=f["disc_contrast"], saturated_fraction=f["saturated_fraction"],
                   saturated_fraction_network=float(reg.saturated.mean()))
        row["warnings"] = list(reg.warnings) + row["warnings"]
    return row


# ---------------------------------------------------------------- one source


def _image_patterns(src: Source, model, settings):
    from inverscope.datasets.io.images import read_pattern

    frame, info = read_pattern(src.path)
    src.info = {k: info[k] for k in ("format", "dtype", "bit_depth", "saturation", "shape", "notes")}
    reg, reg_s = register(frame, model, settings, str(src.path), saturation=info["saturation"])
    return [((0, 0), frame, reg, reg_s, [])]


def _scan_patterns(src: Source, model, settings, progress):
    out, errors = [], []
    for i, j, pattern in window_patterns(src, settings.window):
        try:
            reg, reg_s = register(pattern, model, settings, f"{src.path}, window ({i}, {j})")
            out.append(((i, j), None, reg, reg_s, []))    # the window's PACBED is read again for a figure
        except InverscopeError as err:
            errors.append(err)
            out.append(((i, j), None, None, float("nan"), [f"not registered: {err}"]))
        progress()
    if len(errors) == len(out):
        raise errors[0]
    rec = src.info.get("sampling_mrad")
    if rec and settings.mrad_per_px is None:
        found = float(np.median([r[2].mrad_per_px for r in out if r[2] is not None]))
        if abs(found / rec[0] - 1) > 0.03:
            src.info.setdefault("warnings", []).append(
                f"the disc gives {found:.4g} mrad/px (median); the file records {rec[0]:.4g} mrad/px")
    return out


def predict_source(src: Source, model: PACBEDModel, settings: Settings, library=None, progress=lambda: None):
    """Register and read every pattern of one source; returns rows and what the figures need."""
    if src.kind == "image":
        items = _image_patterns(src, model, settings)
        progress()
    else:
        items = _scan_patterns(src, model, settings, progress)
    ok = [k for k, it in enumerate(items) if it[2] is not None]
    mu = np.full((len(items), 3), np.nan)
    sd = np.full((len(items), 3), np.nan)
    m, s, net_s = read_network(model, np.stack([items[k][2].pattern for k in ok]), settings.mc_passes, settings.seed)
    mu[ok], sd[ok] = m, s
    rows, shown = [], []
    for k, (ij, frame, reg, reg_s, warn) in enumerate(items):
        row = _row(src, ij, reg, reg_s, settings.window, warn)
        row.update(thickness_nm=mu[k, 0], thickness_sd_nm=sd[k, 0], tilt_x_mrad=mu[k, 1], tilt_x_sd_mrad=sd[k, 1],
                   tilt_y_mrad=mu[k, 2], tilt_y_sd_mrad=sd[k, 2], network_s=net_s / len(ok) if reg is not None else None)
        row["warnings"] += _outside_training(model, mu[k])
        match = _match(library, reg, mu[k]) if reg is not None else {}
        row.update({c: v for c, v in match.items() if c in COLUMNS})
        rows.append(row)
        shown.append((frame, reg, match.get("_sim")))
    return rows, shown, net_s


# ---------------------------------------------------------------- outputs


def _clean(v):
    if isinstance(v, (float, np.floating)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def write_tables(stage: Path, rows: list[dict]) -> None:
    """predictions.csv (lists joined: warnings by ' | ') and predictions.json (typed; null for missing)."""
    from inverscope.core.io import write_json_atomic

    clean = [{c: _clean(r[c]) for c in COLUMNS} for r in rows]
    with open(stage / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for r in clean:
            w.writerow(["" if r[c] is None else (" | " if c == "warnings" else ";").join(map(str, r[c]))
                        if isinstance(r[c], list) else ("" if r[c] is None else r[c]) for c in COLUMNS])
    write_json_atomic(stage / "predictions.json", {"columns": list(COLUMNS), "rows": clean})


MAP_COLUMNS = ("thickness_nm", "thickness_sd_nm", "tilt_x_mrad", "tilt_x_sd_mrad", "tilt_y_mrad", "tilt_y_sd_mrad",
               "centre_row_px", "centre_col_px", "radius_px", "rotation_deg")


def write_maps(stage: Path, src: Source, rows: list[dict], window: int, model_path: str) -> dict[str, np.ndarray]:
    """The scan's maps into ``maps.zarr/<name>`` and ``maps/<name>.png`` (thickness and its uncertainty)."""
    import zarr

    maps = {c: np.full(src.grid, np.nan, np.float32) for c in MAP_COLUMNS}
    for r in rows:
        for c in MAP_COLUMNS:
            maps[c][r["window_row"], r["window_col"]] = np.nan if r[c] is None else r[c]
    group = zarr.open_group(str(stage / "maps.zarr"), mode="a").create_group(src.name)
    for c, v in maps.items():
        group.create_array(c, data=v)
    group.attrs.update({"source": str(src.path), "window": window, "model": model_path, **src.info,
                        "pixel": f"map[i, j] averages scan rows i*{window}..(i+1)*{window}-1 and columns "
                                 f"j*{window}..(j+1)*{window}-1"})
    plot_maps(stage / "maps" / f"{src.name}.png", maps, src.grid, src.path.name, window)
    return maps


def _figure_entries(src: Source, rows: list[dict], shown: list, window: int, n_max: int = 4) -> list:
    """An image's one pattern; a scan's windows at spread thickness quantiles (up to `n_max`)."""
    ok = [k for k, r in enumerate(rows) if shown[k][1] is not None]
    if src.kind == "4d":
        order = sorted(ok, key=lambda k: rows[k]["thickness_nm"])
        ok = list(dict.fromkeys(order[int(round(q * (len(order) - 1)))] for q in np.linspace(0, 1, n_max)))
    if src.kind == "image":
        return [(src.path.name, *shown[k], rows[k]) for k in ok]
    out = []
    for k in ok:
        i, j = rows[k]["window_row"], rows[k]["window_col"]
        out.append((f"window ({i}, {j})", window_means(src, window, i, j, j + 1)[0], *shown[k][1:], rows[k]))
    return out


def _unique_names(paths: list[Path]) -> list[str]:
    names, seen = [], {}
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", p.stem if p.suffix.lower() != ".zarr" else p.name[:-5]) or "data"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


# ---------------------------------------------------------------- the whole run


def _check_options(mc_dropout, window, mrad_per_px, disc_radius_px, device) -> None:
    if mc_dropout < 0:
        raise field_error("--mc-dropout", mc_dropout, "must be >= 0 (stochastic passes; 0 or 1: one deterministic pass)")
    if window < 1:
        raise field_error("--window", window, "must be >= 1 [scan positions per side]")
    if mrad_per_px is not None and not (math.isfinite(mrad_per_px) and mrad_per_px > 0):
        raise field_error("--mrad-per-px", mrad_per_px, "must be > 0 [mrad per camera pixel]")
    if disc_radius_px is not None and not (0 < disc_radius_px[0] < disc_radius_px[1] < math.inf):
        raise field_error("--disc-radius-px", tuple(disc_radius_px), "must be MIN MAX [px] with 0 < MIN < MAX")
    if device not in ("cpu", None):
        raise field_error("--device", device, "PACBED networks run on the CPU (registration takes most of the time)")


def predict_pacbed(model_path, data_paths, out_dir, *, semiangle_mrad: float | None = None,
                   energy_kev: float | None = None, mrad_per_px: float | None = None, mc_dropout: int = 16,
                   window: int = 8, library=None, thickness_index: int = -1,
                   disc_radius_px: tuple[float, float] | None = None, device: str | None = None, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Read thickness and tilt from PACBED images and 4D-STEM scans (`data_paths`, any mix) into `out_dir`.

    `out_dir` must be new or empty; it gets ``predictions.csv``/``.json`` (:data:`COLUMNS`, one row per
    pattern or window), ``summary.json``, ``figures/NAME.png`` per source and, for scans,
    ``maps.zarr/NAME`` and ``maps/NAME.png``, all or nothing. Returns the summary.

    Parameters
    ----------
    semiangle_mrad, energy_kev : float, optional
        The data's semiangle [mrad] and voltage [kV]; refused unless the model's (default: assumed).
    mrad_per_px : float, optional
        Camera calibration [mrad/px]; default from the disc radius.
    mc_dropout : int
        MC-dropout passes (0 or 1: one deterministic pass, sd not estimated); `seed` seeds them.
    window : int
        Scan positions per side averaged into one PACBED (4D files); `thickness_index` picks the
        exit thickness of an inverscope simulation store.
    library : path, optional
        The study's ``library.zarr``: its pattern nearest each prediction goes into the figure, and
        its patterns pick the mirror family.
    disc_radius_px : (float, float), optional
        Allowed disc radius [px]; default from max(4, a quarter of the model's disc diameter) to half the frame.
    device : str, optional
        Only ``cpu``. `progress` is called as ``progress(done, total)`` over patterns.
    """
    from inverscope.core.io import check_output_path, staged_output, write_json_atomic

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    check_output_path(out_dir, must_be_empty=True)
    _check_options(mc_dropout, window, mrad_per_px, disc_radius_px, device)
    model = load_pacbed_model(model_path)
    check_stated(model, semiangle_mrad, energy_kev)
    lib = open_library(library, model) if library is not None else None
    if disc_radius_px is None:
        disc_radius_px = (max(4.0, model.pixels / (4 * model.crop_alpha)), None)
    reference = lib.references() if lib is not None else model.mean.astype(np.float64) ** 2
    settings = Settings(model.semiangle_mrad, model.energy_kev, mrad_per_px, mc_dropout, window,
                        tuple(disc_radius_px), seed, reference, "library" if lib else "model mean input")
    paths = [Path(p) for p in data_paths]
    if not paths:
        raise InverscopeError("DATA: no files given; give image files and/or 4D-STEM files")
    sources = [open_source(p, window, thickness_index) for p in paths]
    for src, name in zip(sources, _unique_names(paths)):
        src.name = name
    total, done = sum(s.n_patterns for s in sources), [0]

    def tick():
        done[0] += 1
        if progress:
            progress(done[0], total)

    rows, per_source = [], []
    with staged_output(out_dir) as stage:
        for src in sources:
            ts = time.perf_counter()
            src_rows, shown, net_s = predict_source(src, model, settings, lib, tick)
            entries = _figure_entries(src, src_rows, shown, window)
            plot_patterns(stage / "figures" / f"{src.name}.png", f"{src.path.name} ({model.semiangle_mrad:g} mrad, "
                          f"{model.energy_kev:g} kV)", entries)
            if src.kind == "4d":
                write_maps(stage, src, src_rows, window, str(model_path))
            rows += src_rows
            per_source.append(_source_summary(src, src_rows, net_s, time.perf_counter() - ts))
        summary = _summary(model, settings, sources, per_source, rows, semiangle_mrad, energy_kev, library,
                           thickness_index, time.perf_counter() - t0)
        write_tables(stage, rows)
        write_json_atomic(stage / "summary.json", summary)
    return summary


def _source_summary(src: Source, rows: list[dict], net_s: float, wall_s: float) -> dict:
    reg = [r["registration_s"] for r in rows if r["registration_s"] is not None and np.isfinite(r["registration_s"])]
    out = {"source": str(src.path), "name": src.name, "kind": src.kind, "patterns": len(rows),
           "registered": len(reg), "figure": f"figures/{src.name}.png", **src.info,
           "seconds": {"registration_per_pattern_median": float(np.median(reg)),
                       "network_per_pattern": net_s / max(len(reg), 1), "wall": wall_s}}
    if src.kind == "4d":
        out.update(map_png=f"maps/{src.name}.png", maps_zarr=f"maps.zarr/{src.name}")
    return out


def _summary(model, settings, sources, per_source, rows, stated_alpha, stated_kev, library, thickness_index,
             wall_s) -> dict:
    warnings = []
    if stated_alpha is None or stated_kev is None:
        warnings.append(f"semiangle and voltage not both stated; the model's {model.semiangle_mrad:g} mrad and "
                        f"{model.energy_kev:g} kV assumed (state them with --semiangle-mrad and --energy-kev)")
    ok = [r for r in rows if r["network_s"] is not None]
    outputs = {"predictions_csv": "predictions.csv", "predictions_json": "predictions.json", "figures": "figures/"}
    if any(s.kind == "4d" for s in sources):
        outputs.update(maps_zarr="maps.zarr", map_pngs="maps/")
    radius = settings.disc_radius_px
    return {"outputs": outputs, "task": "pacbed", "n_patterns": len(rows),
            "model": {"path": str(model.path), "architecture": model.meta.get("architecture"),
                      "targets": model.meta.get("targets"), "tilt": model.meta.get("tilt"), "input": model.meta["input"],
                      "library_config": model.meta.get("library")},
            "settings": {"semiangle_mrad": model.semiangle_mrad, "energy_kev": model.energy_kev,
                         "stated": {"semiangle_mrad": stated_alpha, "energy_kev": stated_kev},
                         "mrad_per_px": settings.mrad_per_px or "from the disc", "mc_dropout_passes": settings.mc_passes,
                         "window": settings.window, "thickness_index": thickness_index, "seed": settings.seed,
                         "library": None if library is None else str(library),
                         "disc_radius_px": {"min": radius[0], "max": radius[1] or "half the frame"},
                         "mirror_family_reference": settings.reference_kind},
            "sources": per_source,
            "timings_s": {"total": wall_s,
                          "per_pattern_median": float(np.median([r["registration_s"] + r["network_s"] for r in ok])),
                          "registration_per_pattern_median": float(np.median([r["registration_s"] for r in ok]))},
            "warnings": warnings + [w for s in per_source for w in s.get("warnings", [])]}


__all__ = ["PACBEDModel", "PACBEDLibrary", "PACBED_OPTIONS", "COLUMNS", "load_pacbed_model", "check_stated",
           "open_library", "open_source", "window_patterns", "register", "read_network", "predict_source",
           "predict_pacbed"]
