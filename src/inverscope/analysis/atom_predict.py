"""``inverscope predict`` with an atom-finding model: atoms in STEM images and tracks through movies.

An atom-finding model is a :class:`~inverscope.models.nets.unet.UNet` saved with
:func:`inverscope.models.io.save_model` and metadata of task ``atoms``: ``class_names`` (atom
classes in channel order), ``background_channel`` (-1: the last), ``pixel_size_angstrom`` (the
nominal training sampling [Å/px]), ``pixel_size_range_angstrom`` ([lo, hi] taken without
resampling), ``input`` (``multiple_of``: H and W must be multiples of it), ``locate``
(``threshold``, ``min_distance_px``, ``refine``: :func:`~inverscope.analysis.atom_finding.locate_atoms`
settings at the nominal sampling), ``heatmap_sigma_px`` (training target width at the nominal
sampling) and optionally ``ensemble`` (names of sibling models in the same directory whose
softmax probabilities are averaged with this one's).

Data
----
Each file is one image or one movie:

* PNG, JPEG: one image (RGB reduced to luminance).
* TIFF: one page = an image; several pages = a movie (every page must have the first one's
  shape). Pixel size from ImageJ (``unit`` + XResolution) or OME (``PhysicalSizeX``) metadata.
* ``.npy``: 2D = image, 3D = movie ``(frames, rows, cols)``.
* dm3/dm4, emd, hspy (RosettaSciIO): a 2D signal = image; a 3D dataset (a time or stack
  navigation axis before the two image axes) = movie. Pixel size from the image axes'
  ``scale`` in Å, nm, pm or µm.

``pixel_size`` (``--pixel-size``, Å/px) overrides any calibration in the files; a file with
neither is refused.

Geometry
--------
An image whose pixel size lies outside the model's ``pixel_size_range_angstrom`` is resampled
to the nominal pixel size (``skimage.transform.rescale``, anti-aliased, cubic); atoms are
located on that grid and their positions mapped back to the file's pixels (pixel centres at
integer coordinates, as in :mod:`inverscope.analysis.atom_finding`). Images are standardised
per frame ((x - mean) / std), reflect-padded to a multiple of ``input.multiple_of`` and
cropped back after the network. Atoms of diameter ``2 * heatmap_sigma_px * nominal`` Å that
would be narrower than 2 px in the file, or wider than the network's field of view, are
refused with the ``--pixel-size`` that would fit.

Movies
------
Atoms are located in every frame; :func:`~inverscope.analysis.tracking.drift_correct` gives
the rigid drift, positions are corrected onto frame 0
(:func:`~inverscope.analysis.tracking.correct_positions`) and linked
(:func:`~inverscope.analysis.tracking.link_atoms`, search range half the median
nearest-neighbour distance of frame 0, memory 2). The summary holds the MSD per class
(Å^2 against frames), ``D`` per class with its standard error [Å^2 / frame] and the class
transition matrix.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from inverscope.core.errors import InverscopeError

#: options of ``inverscope predict`` an atom-finding model uses
ATOM_OPTIONS = frozenset({"pixel_size", "classes", "device"})
#: suffixes read, by reader
FORMATS = {".png": "image", ".jpg": "image", ".jpeg": "image", ".tif": "tiff", ".tiff": "tiff", ".npy": "numpy",
           ".dm3": "rsciio", ".dm4": "rsciio", ".emd": "rsciio", ".hspy": "rsciio"}
#: length units of file calibrations, in Å
LENGTH_ANGSTROM = {"å": 1.0, "a": 1.0, "angstrom": 1.0, "ångström": 1.0, "nm": 10.0, "pm": 0.01, "µm": 1e4,
                   "μm": 1e4, "um": 1e4, "micron": 1e4, "microns": 1e4}
#: images larger than this (after resampling, per frame) are refused [pixels]
MAX_PIXELS = 64 * 1024 * 1024
#: side of the tiles an image is cut into when it is larger than one tile [px]
TILE = 512
#: smallest atom diameter in the file's pixels that is located
MIN_ATOM_PX = 2.0
#: track search range as a fraction of the median nearest-neighbour distance
SEARCH_FRACTION = 0.5
#: frames an atom may vanish and keep its track id
MEMORY = 2


@dataclass
class Source:
    """One image or movie as read: ``frames`` float64 (n, rows, cols)."""

    path: Path
    name: str
    frames: np.ndarray
    movie: bool
    pixel_size: float | None = None          # Å/px from the file's calibration
    calibration: str | None = None           # where it came from
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- reading


def _length_scale(value, unit) -> float | None:
    """``value`` in ``unit`` as Å, or None when the unit is not a length inverscope knows."""
    u = str(unit or "").strip().replace(" ", "")
    factor = LENGTH_ANGSTROM.get(u) or LENGTH_ANGSTROM.get(u.lower())
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if factor is None or not (math.isfinite(v) and v > 0):
        return None
    return v * factor


def _read_image(path: Path) -> tuple[np.ndarray, None, None]:
    from PIL import Image, UnidentifiedImageError

    from inverscope.datasets.io.images import _to_2d

    try:
        with Image.open(path) as img:
            if img.mode in ("P", "PA", "1"):
                img = img.convert("RGBA" if "A" in img.mode else "L")
            arr = np.asarray(img)
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError) as exc:
        raise InverscopeError(f"{path}: cannot be read as an image ({' '.join(str(exc).split()) or type(exc).__name__})"
                              ) from None
    return _to_2d(arr, path, []), None, None


def _tiff_pixel_size(tif) -> tuple[float | None, str | None]:
    try:
        ij = tif.imagej_metadata
        if ij and ij.get("unit"):
            tag = tif.pages[0].tags.get("XResolution")
            if tag is not None:
                num, den = tag.value
                size = _length_scale(den / num if num else None, ij["unit"])
                if size:
                    return size, "ImageJ metadata"
        ome = tif.ome_metadata
        if ome:
            import re

            m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', ome)
            if m:
                unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', ome)
                size = _length_scale(m.group(1), unit.group(1) if unit else "µm")
                if size:
                    return size, "OME metadata"
    except Exception:  # odd metadata: no calibration rather than a failure
        pass
    return None, None


def _read_tiff(path: Path) -> tuple[np.ndarray, float | None, str | None]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = list(tif.pages)
            if len(pages) > 1:
                frames = [np.asarray(p.asarray()) for p in pages]
                for i, f in enumerate(frames):
                    if f.shape != frames[0].shape:
                        raise InverscopeError(f"{path}: frame {i} (page {i}) is {' x '.join(map(str, f.shape))} px; frame 0 "
                                              f"is {' x '.join(map(str, frames[0].shape))}: every frame of a movie must "
                                              "have the same shape")
                arr = np.stack(frames)
            else:
                arr = np.asarray(tif.asarray())
            size, how = _tiff_pixel_size(tif)
    except InverscopeError:
        raise
    except Exception as exc:
        raise InverscopeError(f"{path}: cannot be read as TIFF ({' '.join(str(exc).split())[:160] or type(exc).__name__})"
                              ) from None
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and len(pages) == 1:
        from inverscope.datasets.io.images import _to_2d

        arr = _to_2d(arr, path, [])
    return arr, size, how


def _read_rsciio(path: Path) -> tuple[np.ndarray, float | None, str | None]:
    from inverscope.datasets.io._rsciio import _call_reader, _reader_errors_unlogged, _short, candidates, \
        format_name, missing_package, needs_message

    plugins, claimed = candidates(path)
    problems = []
    for plugin in plugins:
        try:
            with _reader_errors_unlogged():
                signals, _ = _call_reader(path, plugin)
        except Exception as err:
            package = missing_package(err)
            if package:
                raise InverscopeError(needs_message(path, plugin, package)) from None
            problems.append(f"{plugin['name']}: {_short(err)}")
            continue
        picks = [s for s in signals if getattr(s.get("data"), "ndim", 0) in (2, 3)]
        if not picks:
            shapes = [tuple(getattr(s.get("data"), "shape", ())) for s in signals]
            raise InverscopeError(f"{path}: no 2D image or 3D movie in the file (found shapes {shapes[:4]})")
        pick = next((s for s in picks if s["data"].ndim == 2), picks[0])
        try:
            arr = np.asarray(pick["data"].compute() if hasattr(pick["data"], "compute") else pick["data"])
        except Exception as err:
            raise InverscopeError(f"{path}: read as {format_name(plugin)} but its data cannot be read ({_short(err)}); "
                                  "is the file truncated or damaged?") from None
        axes = pick.get("axes") or []
        if len(axes) == arr.ndim == 3 and sum(not a.get("navigate", False) for a in axes) == 1:
            raise InverscopeError(f"{path}: a {arr.shape} dataset with one signal axis ({axes[-1].get('name')!r}), "
                                  "e.g. a spectrum image; an atom-finding model reads images and image series")
        sig = [a for a in axes if not a.get("navigate", False)][-2:] or axes[-2:]
        sizes = [_length_scale(a.get("scale", 1.0), a.get("units")) for a in sig]
        if len(sizes) == 2 and all(sizes):
            return arr, float(sizes[1]), f"{format_name(plugin)} axes calibration"
        return arr, None, None
    raise InverscopeError(f"{path}: could not read the file as "
                          f"{' or '.join(format_name(p) for p in plugins) or 'any known format'} "
                          f"({'; '.join(problems)}); is it truncated or of another format?")


def read_source(path, name: str | None = None) -> Source:
    """Read one image or movie (see the module docstring); raises one line on anything unusable."""
    path = Path(path)
    if not path.is_file():
        raise InverscopeError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InverscopeError(f"{path}: unknown format {path.suffix!r}; an atom-finding model reads "
                              f"{', '.join(FORMATS)}")
    size = how = None
    if kind == "image":
        arr, size, how = _read_image(path)
    elif kind == "tiff":
        arr, size, how = _read_tiff(path)
    elif kind == "numpy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InverscopeError(f"{path}: cannot be read as .npy ({' '.join(str(exc).split()) or type(exc).__name__})"
                                  ) from None
    else:
        arr, size, how = _read_rsciio(path)
    arr = np.asarray(arr)
    if not (np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating)):
        raise InverscopeError(f"{path}: holds {arr.dtype} values; expected a real-valued image")
    if arr.ndim not in (2, 3):
        raise InverscopeError(f"{path}: array of shape {arr.shape}; expected an image (rows, cols) or a movie "
                              "(frames, rows, cols)")
    movie = arr.ndim == 3
    frames = arr.astype(np.float64)[None] if arr.ndim == 2 else arr.astype(np.float64)
    if 0 in frames.shape:
        raise InverscopeError(f"{path}: empty {'movie' if movie else 'image'} (shape {arr.shape})")
    for i, f in enumerate(frames):
        what = f"frame {i}" if movie else "the image"
        bad = int(np.size(f) - np.isfinite(f).sum())
        if bad:
            raise InverscopeError(f"{path}: {what} holds {bad} NaN or infinite pixel(s); fill or crop them first")
        if f.min() == f.max():
            raise InverscopeError(f"{path}: {what} is constant (every pixel {f.flat[0]:g}); no atoms to find")
    return Source(path, name or path.stem, frames, movie, size, how)


# ---------------------------------------------------------------- the model


@dataclass
class AtomModel:
    nets: list
    meta: dict
    names: list[str]
    device: str
    warnings: list[str]

    @property
    def nominal(self) -> float:
        return float(self.meta["pixel_size_angstrom"])

    @property
    def multiple(self) -> int:
        return int((self.meta.get("input") or {}).get("multiple_of") or 2 ** int(self.meta["config"].get("depth", 3)))

    @property
    def atom_angstrom(self) -> float:
        """Atom diameter the model was trained on [Å]: twice the heat-map sigma at the nominal sampling."""
        return 2.0 * float(self.meta.get("heatmap_sigma_px") or 1.5) * self.nominal

    @property
    def fov_px(self) -> int:
        """Receptive field of the U-Net [px of its input]: 3x3 convolutions and pools at each scale."""
        d = int(self.meta["config"].get("depth", 3))
        return 1 + sum(4 * 2 ** i + 2 ** i for i in range(d)) + 4 * 2 ** d + sum(4 * 2 ** i for i in range(d))


def load_atom_model(model_path, device: str = "cpu") -> AtomModel:
    """The network (and its ensemble siblings) and checked metadata of an atom-finding model."""
    from inverscope.models.io import load_metadata, load_model, model_paths

    meta = load_metadata(model_path)
    _, meta_path = model_paths(model_path)
    if meta.get("task") != "atoms":
        raise InverscopeError(f"{model_path}: task {meta.get('task')!r}; not an atom-finding model")
    names = meta.get("class_names")
    if not isinstance(names, list) or not names:
        raise InverscopeError(f"{meta_path}: class_names: got {names!r}; an atom-finding model needs its class names")
    try:
        nominal = float(meta["pixel_size_angstrom"])
        assert math.isfinite(nominal) and nominal > 0
    except (KeyError, TypeError, ValueError, AssertionError):
        raise InverscopeError(f"{meta_path}: pixel_size_angstrom: got {meta.get('pixel_size_angstrom')!r}; "
                              "the model needs its training pixel size in Å/px") from None
    if int(meta["config"].get("n_classes", 0)) != len(names) + 1:
        raise InverscopeError(f"{meta_path}: {len(names)} class_names but the network has "
                              f"{meta['config'].get('n_classes')} output channels (classes + background)")
    net, _ = load_model(model_path, device=device)
    nets, warnings = [net], []
    stem = Path(model_paths(model_path)[0]).with_suffix("")
    for sib in dict.fromkeys(str(s) for s in meta.get("ensemble") or []):
        if sib == stem.name:
            continue
        sib_path = stem.parent / str(sib)
        try:
            other, other_meta = load_model(sib_path, device=device)
        except InverscopeError as err:
            warnings.append(f"ensemble member {sib} skipped: {err}")
            continue
        if other_meta.get("class_names") != names or other_meta.get("config") != meta.get("config"):
            warnings.append(f"ensemble member {sib} skipped: its classes or network differ from {stem.name}'s")
            continue
        nets.append(other)
    if str(device) == "cpu":
        import torch

        # channels-last convolutions are 1.5-3x faster for these narrow nets on CPU
        # (benchmarks/atom_inference_speed.py); the results are the same to float rounding
        for n in nets:
            n.to(memory_format=torch.channels_last)
    return AtomModel(nets, meta, [str(n) for n in names], device, warnings)


def _pixel_range(model: AtomModel) -> tuple[float, float]:
    lo_hi = model.meta.get("pixel_size_range_angstrom")
    try:
        lo, hi = float(lo_hi[0]), float(lo_hi[1])
    except (TypeError, ValueError, IndexError):
        lo = hi = model.nominal
    return min(lo, hi), max(lo, hi)


def plan_sampling(model: AtomModel, pixel_size: float, source: str) -> float:
    """Resampling factor (new pixels per file pixel) for a file of ``pixel_size`` Å/px; refuses
    samplings at which the atoms are under 2 px or wider than the network sees."""
    lo, hi = _pixel_range(model)
    factor = 1.0 if lo <= pixel_size <= hi else pixel_size / model.nominal
    d = model.atom_angstrom
    fit_lo, fit_hi = d / model.fov_px, d / MIN_ATOM_PX
    if d / pixel_size < MIN_ATOM_PX:
        raise InverscopeError(f"{source}: at {pixel_size:g} Å/px the model's atoms (~{d:.3g} Å across) are "
                              f"{d / pixel_size:.2g} px, under {MIN_ATOM_PX:g} px: the image is too coarsely sampled "
                              f"for this model (it needs at most {fit_hi:.3g} Å/px); check --pixel-size")
    if d / (pixel_size / factor) > model.fov_px:
        raise InverscopeError(f"{source}: at {pixel_size:g} Å/px the model's atoms (~{d:.3g} Å across) are wider than "
                              f"the network's {model.fov_px} px field of view; check --pixel-size (it needs at least "
                              f"{fit_lo:.3g} Å/px, or resampling to {model.nominal:g} Å/px)")
    return factor


# ---------------------------------------------------------------- prediction


def _net_probs(model: AtomModel, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean and std of the softmax (n_classes + 1, rows, cols) of one standardised image."""
    import torch

    from inverscope.models.nets.unet import ensemble_predict

    m = model.multiple
    h, w = img.shape
    ph, pw = (-h) % m, (-w) % m
    padded = np.pad(img, ((0, ph), (0, pw)), mode="reflect" if ph < h and pw < w else "symmetric")
    x = torch.as_tensor(padded[None, None], dtype=torch.float32, device=model.device)
    if str(model.device) == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    mean, std = ensemble_predict(model.nets, x)
    return mean[0, :, :h, :w].cpu().numpy(), std[0, :, :h, :w].cpu().numpy()


def predict_maps(model: AtomModel, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and their ensemble std for an image of any size, in overlapping tiles when large."""
    h, w = img.shape
    margin = int(math.ceil(model.fov_px / 2 / model.multiple)) * model.multiple
    if h <= TILE + 2 * margin and w <= TILE + 2 * margin:
        return _net_probs(model, img)
    n_ch = len(model.names) + 1
    mean, std = np.zeros((n_ch, h, w), np.float32), np.zeros((n_ch, h, w), np.float32)
    for y0 in range(0, h, TILE):
        for x0 in range(0, w, TILE):
            y1, x1 = min(y0 + TILE, h), min(x0 + TILE, w)
            a0, b0 = max(0, y0 - margin), max(0, x0 - margin)
            a1, b1 = min(h, y1 + margin), min(w, x1 + margin)
            m_, s_ = _net_probs(model, img[a0:a1, b0:b1])
            mean[:, y0:y1, x0:x1] = m_[:, y0 - a0:y1 - a0, x0 - b0:x1 - b0]
            std[:, y0:y1, x0:x1] = s_[:, y0 - a0:y1 - a0, x0 - b0:x1 - b0]
    return mean, std


def _resample(frame: np.ndarray, factor: float) -> tuple[np.ndarray, tuple[float, float]]:
    """The frame resampled by ``factor`` and the exact (row, col) factors of the new grid."""
    if factor == 1.0:
        return frame, (1.0, 1.0)
    from skimage.transform import rescale

    out = rescale(frame, factor, order=3, anti_aliasing=factor < 1, mode="reflect", preserve_range=True)
    return out, (out.shape[0] / frame.shape[0], out.shape[1] / frame.shape[1])


def locate_frame(model: AtomModel, frame: np.ndarray, factor: float, pixel_size: float) -> tuple[pd.DataFrame, np.ndarray]:
    """Atoms of one frame in the file's pixels, and the class map (argmax, background = -1) on that grid."""
    from inverscope.analysis.atom_finding import locate_atoms

    img, (fy, fx) = _resample(frame, factor)
    img = (img - img.mean()) / img.std()
    probs, spread = predict_maps(model, img)
    loc = model.meta.get("locate") or {}
    table = locate_atoms(probs, threshold=float(loc.get("threshold", 0.5)),
                         min_distance_px=max(1, int(round(float(loc.get("min_distance_px", 3))))),
                         refine=loc.get("refine", "centroid"), uncertainty_maps=spread,
                         background_channel=int(model.meta.get("background_channel", -1)), class_names=model.names)
    # back to the file's pixel grid (pixel centres at integers; the resampled grid spans the same extent)
    table["x_px"] = (table["x_px"].to_numpy(float) + 0.5) / fx - 0.5
    table["y_px"] = (table["y_px"].to_numpy(float) + 0.5) / fy - 0.5
    table["x_angstrom"] = table["x_px"] * pixel_size
    table["y_angstrom"] = table["y_px"] * pixel_size
    bg = int(model.meta.get("background_channel", -1)) % probs.shape[0]
    arg = np.argmax(probs, axis=0)
    cls = np.where(arg == bg, -1, arg - (arg > bg)).astype(np.int16)
    if cls.shape != frame.shape:
        from skimage.transform import resize

        cls = resize(cls, frame.shape, order=0, preserve_range=True, anti_aliasing=False).astype(np.int16)
    return table.reset_index(drop=True), cls


def _nn_distance(table: pd.DataFrame) -> float | None:
    from scipy.spatial import cKDTree

    xy = table[["x_px", "y_px"]].to_numpy(float)
    if len(xy) < 2:
        return None
    d, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(d[:, 1]))


def track_movie(src: Source, tables: list[pd.DataFrame], pixel_size: float, names: list[str]
                ) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """Drift-correct, link and summarise one movie's per-frame atom tables; also returns the mean
    of the drift-corrected frames."""
    from inverscope.analysis.tracking import correct_positions, diffusion_constant, drift_correct, link_atoms, \
        msd_per_class, transition_matrix

    n = len(tables)
    if n > 1:
        corr = drift_correct(src.frames)
        drift, mean_frame = corr.drift_px, corr.frames.mean(axis=0)
    else:
        drift, mean_frame = np.zeros((1, 2)), src.frames[0]
    raw = pd.concat([t.assign(frame=i) for i, t in enumerate(tables)], ignore_index=True)
    corrected = correct_positions(raw, drift)
    corrected["x_raw_px"], corrected["y_raw_px"] = raw["x_px"], raw["y_px"]
    corrected["x_angstrom"] = corrected["x_px"] * pixel_size
    corrected["y_angstrom"] = corrected["y_px"] * pixel_size
    nn = next((d for d in (_nn_distance(t) for t in tables) if d), None)
    search = SEARCH_FRACTION * nn if nn else 0.25 * min(src.frames.shape[1:])
    cols = ["frame", "particle", "class", "x_px", "y_px", "x_angstrom", "y_angstrom", "x_raw_px", "y_raw_px",
            "probability", "uncertainty"]
    tracks = link_atoms(corrected, search, memory=MEMORY)[cols] if len(corrected) else corrected.assign(particle=[])[cols]
    info: dict = {"n_frames": n, "drift_px": [[float(a), float(b)] for a, b in drift], "search_range_px": search,
                  "memory_frames": MEMORY, "n_tracks": int(tracks["particle"].nunique()) if len(tracks) else 0,
                  "units": {"msd": "Å^2", "t": "frames", "D": "Å^2/frame"}}
    if n > 1 and len(tracks):
        lengths = tracks.groupby("particle").size()
        info["track_length_median"] = float(lengths.median())
        msd = msd_per_class(tracks, pixel_size=pixel_size, frame_time=1.0, max_lag=min(10, n - 1))
        info["msd"] = msd.replace({np.nan: None}).to_dict(orient="records")
        if len(msd):
            dc = diffusion_constant(msd, n_lags=min(4, n - 1))
            info["diffusion"] = {str(r["class"]): {"D": _num(r["D"]), "D_se": _num(r["D_se"]), "n_lags": int(r["n_lags"])}
                                 for _, r in dc.iterrows()}
        probs, counts = transition_matrix(tracks, labels=names, return_counts=True)
        info["transition_matrix"] = {str(a): {str(b): _num(probs.loc[a, b]) for b in names} for a in names}
        info["transition_counts"] = {str(a): {str(b): int(counts.loc[a, b]) for b in names} for a in names}
    return tracks, info, mean_frame


def _num(v):
    v = float(v)
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------- figures


def _colours(names: Sequence[str]) -> dict:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def plot_overlay(path: Path, frame: np.ndarray, table: pd.DataFrame, names: list[str], title: str) -> None:
    from inverscope.report.figures import save_figure  # first: selects the Agg backend

    import matplotlib.pyplot as plt

    h, w = frame.shape
    fig, ax = plt.subplots(figsize=(6, 6 * h / w + 0.4), layout="constrained")
    ax.imshow(frame, cmap="gray", interpolation="nearest")
    col = _colours(names)
    for n in names:
        t = table[table["class"] == n]
        ax.scatter(t["x_px"], t["y_px"], s=14, facecolors="none", edgecolors=[col[n]], linewidths=1.0,
                   label=f"{n} ({len(t)})")
    if len(names):
        ax.legend(loc="upper right", fontsize=7, framealpha=0.7)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x [px]", fontsize=8)
    ax.set_ylabel("y [px]", fontsize=8)
    save_figure(fig, path)


def plot_classes(path: Path, cls: np.ndarray, names: list[str], title: str) -> None:
    from inverscope.report.figures import save_figure

    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    col = _colours(names)
    cmap = ListedColormap([(0, 0, 0, 1)] + [col[n] for n in names])
    h, w = cls.shape
    fig, ax = plt.subplots(figsize=(6, 6 * h / w + 0.4), layout="constrained")
    im = ax.imshow(cls + 1, cmap=cmap, vmin=-0.5, vmax=len(names) + 0.5, interpolation="nearest")
    bar = fig.colorbar(im, ax=ax, shrink=0.8, ticks=range(len(names) + 1))
    bar.ax.set_yticklabels(["background", *names], fontsize=7)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def plot_tracks(path: Path, frame: np.ndarray, tracks: pd.DataFrame, names: list[str], title: str) -> None:
    from inverscope.report.figures import save_figure

    import matplotlib.pyplot as plt

    h, w = frame.shape
    fig, ax = plt.subplots(figsize=(6, 6 * h / w + 0.4), layout="constrained")
    ax.imshow(frame, cmap="gray", interpolation="nearest")
    col = _colours(names)
    for _, t in tracks.groupby("particle"):
        c = t["class"].mode().iloc[0]
        ax.plot(t["x_px"], t["y_px"], "-", lw=0.9, color=col.get(c, "w"))
        ax.plot(t["x_px"].iloc[:1], t["y_px"].iloc[:1], "o", ms=2, color=col.get(c, "w"))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x [px] (drift-corrected, frame 0)", fontsize=8)
    save_figure(fig, path)


# ---------------------------------------------------------------- the whole run


def _parse_classes(classes, names: list[str]) -> list[str] | None:
    if classes is None:
        return None
    items = [c.strip() for c in (classes.split(",") if isinstance(classes, str) else
                                 [p for c in classes for p in str(c).split(",")]) if c.strip()]
    unknown = [c for c in items if c not in names]
    if unknown or not items:
        raise InverscopeError(f"--classes: {', '.join(unknown) or 'nothing given'} not among the model's classes "
                              f"({', '.join(names)})")
    return list(dict.fromkeys(items))


def _write_table(stage: Path, table: pd.DataFrame, base: str, outputs: dict, warnings: list[str]) -> None:
    table.to_csv(stage / f"{base}.csv", index=False)
    outputs[f"{base}_csv"] = f"{base}.csv"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        warnings.append(f"{base}.parquet not written: the Python package pyarrow is not installed "
                        "(pip install pyarrow); the CSV holds the same table")
        return
    table.to_parquet(stage / f"{base}.parquet", index=False)
    outputs[f"{base}_parquet"] = f"{base}.parquet"


def predict_atoms(model_path, data_paths, out_dir, *, pixel_size: float | None = None, classes=None,
                  device: str = "cpu", progress: Callable[[int, int], None] | None = None) -> dict:
    """Atoms (and, for movies, tracks) in images and movies with an atom-finding model.

    Parameters
    ----------
    model_path : str or Path
        An atom-finding model (task ``atoms``; module docstring).
    data_paths : sequence of str or Path
        Images and movies (module docstring for the formats).
    out_dir : str or Path
        New (or empty) output directory; written all or nothing.
    pixel_size : float, optional
        Å per pixel of every file; overrides the files' calibrations (required when a file has none).
    classes : str or sequence of str, optional
        Keep only atoms of these classes (comma-separated names); default: all.
    device : str
        Torch device (``cpu``, ``cuda``, ``cuda:1``, ...).
    progress : callable, optional
        Called as ``progress(done, total)`` over frames.

    Returns
    -------
    dict
        The summary written to ``summary.json``: ``outputs`` (name -> file), ``model``, ``sources``
        (per file: kind, shape, pixel size used and its source, resampling factor, counts per
        class, and for movies drift, tracks, MSD, D and the transition matrix), ``class_counts``,
        ``n_atoms``, ``wall_s``, ``megapixels_per_s``, ``warnings``. Files: ``atoms.csv`` and
        ``atoms.parquet`` (one row per atom per frame: ``source``, ``frame`` and the columns of
        :func:`~inverscope.analysis.atom_finding.locate_atoms`, positions in the file's pixels),
        ``NAME_overlay.png``, ``NAME_classes.png``, for movies ``NAME_tracks.csv`` and
        ``NAME_tracks.png``, ``report.html``, ``summary.json``.

    Raises
    ------
    InverscopeError
        One line, nothing written: an unknown format, unreadable files, NaN/inf or constant
        images, movie frames of different shapes, no pixel size, a sampling the model cannot
        take, ``classes`` the model does not have.
    """
    from inverscope.analysis.pacbed_predict import _unique_names
    from inverscope.core.device import resolve_device
    from inverscope.core.io import check_output_path, staged_output, write_json_atomic

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    check_output_path(out_dir, must_be_empty=True)
    paths = [Path(p) for p in data_paths]
    if not paths:
        raise InverscopeError("DATA: no files given; an atom-finding model reads images and movies")
    if pixel_size is not None and not (math.isfinite(float(pixel_size)) and float(pixel_size) > 0):
        raise InverscopeError(f"--pixel-size: got {pixel_size}; must be a positive number of Å/px")
    dev = str(resolve_device(device))
    model = load_atom_model(model_path, device=dev)
    keep = _parse_classes(classes, model.names)
    warnings = list(model.warnings)

    # read and check everything first: a bad file fails before any output
    sources, plans = [], []
    for path, name in zip(paths, _unique_names(paths)):
        src = read_source(path, name)
        if pixel_size is not None:
            size, how = float(pixel_size), "--pixel-size"
            if src.pixel_size and abs(src.pixel_size / size - 1) > 0.01:
                warnings.append(f"{path}: --pixel-size {size:g} Å/px used instead of the file's {src.pixel_size:g} Å/px "
                                f"({src.calibration})")
        elif src.pixel_size:
            size, how = src.pixel_size, f"file ({src.calibration})"
        else:
            raise InverscopeError(f"{path}: no pixel size in the file; give --pixel-size in Å/px (the model was trained "
                                  f"at {model.nominal:g} Å/px)")
        factor = plan_sampling(model, size, str(path))
        new = [int(round(s * factor)) for s in src.frames.shape[1:]]
        if new[0] * new[1] > MAX_PIXELS:
            raise InverscopeError(f"{path}: resampling {src.frames.shape[1]} x {src.frames.shape[2]} px from {size:g} to "
                                  f"{model.nominal:g} Å/px gives {new[0]} x {new[1]} px per frame, more than "
                                  f"{MAX_PIXELS // 2 ** 20} Mpx; crop or bin the data first, or check --pixel-size")
        if min(new) < model.multiple:
            raise InverscopeError(f"{path}: {new[0]} x {new[1]} px at {model.nominal:g} Å/px; the model needs at least "
                                  f"{model.multiple} x {model.multiple} px")
        sources.append(src)
        plans.append((size, how, factor))

    total = sum(len(s.frames) for s in sources)
    done = 0
    t0 = time.perf_counter()
    results = []
    for src, (size, how, factor) in zip(sources, plans):
        tables, class_maps = [], []
        for frame in src.frames:
            table, cls = locate_frame(model, frame, factor, size)
            if keep is not None:
                table = table[table["class"].isin(keep)].reset_index(drop=True)
            tables.append(table)
            class_maps.append(cls if not class_maps else None)
            done += 1
            if progress:
                progress(done, total)
        tracks, info, mean_frame = track_movie(src, tables, size, keep or model.names) if src.movie else (None, None, None)
        results.append((src, size, how, factor, tables, class_maps[0], tracks, info, mean_frame))
    net_s = time.perf_counter() - t0

    rows = []
    for src, size, how, factor, tables, *_ in results:
        for i, t in enumerate(tables):
            rows.append(t.assign(source=src.name, frame=i, pixel_size_angstrom=size))
    atoms = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    front = ["source", "frame"]
    atoms = atoms[front + [c for c in atoms.columns if c not in front]]
    names = keep or model.names
    counts = {n: int((atoms["class"] == n).sum()) for n in names}

    summary: dict = {"outputs": {}, "task": "atoms",
                     "model": {"path": str(model_path), "class_names": model.names, "ensemble_size": len(model.nets),
                               "pixel_size_angstrom": model.nominal,
                               "pixel_size_range_angstrom": list(_pixel_range(model)),
                               "locate": model.meta.get("locate"), "field_of_view_px": model.fov_px},
                     "settings": {"pixel_size": pixel_size, "classes": keep, "device": dev},
                     "sources": {}, "n_atoms": int(len(atoms)), "class_counts": counts, "warnings": warnings}
    outputs = summary["outputs"]
    with staged_output(out_dir) as stage:
        _write_table(stage, atoms, "atoms", outputs, warnings)
        from inverscope.report.html import HtmlReport

        report = HtmlReport(f"Atoms: {Path(str(model_path)).name}", f"{len(sources)} file(s), {total} frame(s)")
        for src, size, how, factor, tables, cls, tracks, info, mean_frame in results:
            title = f"{src.path.name}: {len(tables[0])} atoms" + (" (frame 0)" if src.movie else "")
            plot_overlay(stage / f"{src.name}_overlay.png", src.frames[0], tables[0], names, title)
            plot_classes(stage / f"{src.name}_classes.png", cls, model.names, f"{src.path.name}: class map (argmax)"
                         + (" (frame 0)" if src.movie else ""))
            outputs[f"{src.name}_overlay"] = f"{src.name}_overlay.png"
            outputs[f"{src.name}_classes"] = f"{src.name}_classes.png"
            per = {"path": str(src.path), "kind": "movie" if src.movie else "image",
                   "shape": list(src.frames.shape if src.movie else src.frames.shape[1:]),
                   "pixel_size_angstrom": size, "pixel_size_source": how,
                   "resampled_to_angstrom": model.nominal if factor != 1.0 else None, "resample_factor": factor,
                   "n_atoms": int(sum(len(t) for t in tables)),
                   "class_counts": {n: int(sum((t["class"] == n).sum() for t in tables)) for n in names}}
            if src.movie:
                tracks.to_csv(stage / f"{src.name}_tracks.csv", index=False)
                plot_tracks(stage / f"{src.name}_tracks.png", mean_frame, tracks, names,
                            f"{src.path.name}: {info['n_tracks']} tracks over {info['n_frames']} frames")
                outputs[f"{src.name}_tracks_csv"] = f"{src.name}_tracks.csv"
                outputs[f"{src.name}_tracks_png"] = f"{src.name}_tracks.png"
                per["tracking"] = info
            if per["n_atoms"] == 0:
                warnings.append(f"{src.path}: no atoms found" + (f" of classes {', '.join(keep)}" if keep else "")
                                + f" (threshold {(model.meta.get('locate') or {}).get('threshold', 0.5)})")
            summary["sources"][src.name] = per
            sec = report.section(src.path.name)
            sec.params({k: per[k] for k in ("kind", "shape", "pixel_size_angstrom", "pixel_size_source", "n_atoms")})
            sec.metrics(per["class_counts"])
            figs = [stage / f"{src.name}_overlay.png", stage / f"{src.name}_classes.png"]
            if src.movie:
                figs.append(stage / f"{src.name}_tracks.png")
                if "diffusion" in info:
                    sec.table(["class", "D [Å²/frame]", "D_se"],
                              [[c, d["D"], d["D_se"]] for c, d in info["diffusion"].items()])
            sec.figures_row([str(f) for f in figs])
        if warnings:
            report.section("Warnings").text("\n".join(warnings))
        report.write(stage / "report.html")
        outputs["report"] = "report.html"
        wall = time.perf_counter() - t_start
        pixels = sum(s.frames.size for s in sources)
        summary.update(wall_s=wall, network_s=net_s, megapixels=pixels / 1e6,
                       megapixels_per_s=pixels / 1e6 / wall if wall > 0 else None)
        write_json_atomic(stage / "summary.json", summary)
    return summary


__all__ = ["ATOM_OPTIONS", "FORMATS", "AtomModel", "Source", "load_atom_model", "read_source", "plan_sampling",
           "predict_maps", "locate_frame", "track_movie", "predict_atoms"]
