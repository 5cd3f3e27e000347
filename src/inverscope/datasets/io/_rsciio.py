"""Pick the RosettaSciIO reader for a 4D-STEM file, run it lazily, and say plainly why one cannot.

The reader is chosen by extension and, for HDF5 files, by the layout inside (HyperSpy, EMD,
Dectris Arina, USID, NeXus), so a py4DSTEM ``.h5`` or an Arina master file reaches the right
reader whatever its name. Failures become one-line :class:`InverscopeError` messages that tell a
missing optional package (``reading X files needs the Python package Y (pip install Y)``) apart
from a file that is truncated or of another format.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask.array as da

from inverscope.core.errors import InverscopeError

# import name -> distribution name, where they differ or a reader may need them
PIP_NAMES = {"skimage": "scikit-image", "dateutil": "python-dateutil", "box": "python-box", "PIL": "pillow",
             "yaml": "pyyaml", "pyUSID": "pyUSID", "sidpy": "sidpy", "hdf5plugin": "hdf5plugin"}
FORMAT_NAMES = {"Arina": "Dectris Arina", "Blockfile": "NanoMegas blockfile",
                "QuantumDetector": "Quantum Detectors MIB",
                "HSPY": "HyperSpy", "ZSPY": "HyperSpy Zarr (.zspy)", "EMD": "EMD", "Topspin": "NanoMegas Topspin",
                "DigitalMicrograph": "Gatan DigitalMicrograph", "MRC": "MRC", "MRCZ": "MRCZ", "USID": "USID"}
FOURD_FORMATS = (".hspy (HyperSpy), .blo (NanoMegas), .h5 (Dectris Arina master, py4DSTEM), .emd (Velox, NCEM), "
                 ".mib (Quantum Detectors), .npy, .dm3/.dm4, .mrc, .app5, .tvips, .xml (EMPAD)")
# HDF5's words for a compression filter it has no plugin for (not "filter returned failure": damaged data)
_FILTER_MISSING = r"can't open directory|can't find plugin|is not registered|can't dlopen"
_HDF5_PLUGINS = {"HSPY", "EMD", "Arina", "USID", "NeXus", "Delmic", "Tofwerk"}
_ANGLE_MRAD = {"mrad": 1.0, "rad": 1e3, "µrad": 1e-3, "μrad": 1e-3, "urad": 1e-3}
_RECIPROCAL_PER_ANGSTROM = {"1/å": 1.0, "å^-1": 1.0, "å-1": 1.0, "1/a": 1.0, "a^-1": 1.0, "a-1": 1.0,
                            "1/angstrom": 1.0, "angstrom^-1": 1.0, "1/nm": 0.1, "nm^-1": 0.1, "nm-1": 0.1}


def format_name(plugin: dict) -> str:
    """A person's name for the format a RosettaSciIO plugin reads."""
    return FORMAT_NAMES.get(plugin["name"], plugin["name"])


def missing_package(err: BaseException) -> str | None:
    """The pip name of the package whose absence caused `err`, or None when it is another failure."""
    if isinstance(err, ImportError):
        name = getattr(err, "name", None)
        if not name:  # readers' own messages: "The 'sparse' library was not found ..."
            found = re.search(r"'([A-Za-z_][\w.-]*)'", str(err))
            name = found.group(1) if found else None
        if not name or name.startswith("rsciio"):
            return None
        name = name.split(".")[0]
        return PIP_NAMES.get(name, name)
    if isinstance(err, OSError) and re.search(_FILTER_MISSING, str(err), re.IGNORECASE):
        return "hdf5plugin"  # an HDF5 compression filter (Bitshuffle, LZ4, Blosc, ...) is not registered
    return None


def needs_message(path: Path, plugin: dict, package: str) -> str:
    return f"{path}: reading {format_name(plugin)} files needs the Python package {package} (pip install {package})"


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:160]}" if text else type(err).__name__


def _emd_version(group) -> bool:
    return "version_major" in group.attrs and "version_minor" in group.attrs


def _hdf5_layout(f) -> str | None:
    """Name of the RosettaSciIO plugin whose layout the open HDF5 file `f` has, or None."""
    import h5py

    if str(f.attrs.get("file_format", "")).lower() == "hyperspy" or "Experiments" in f:
        return "HSPY"
    if "Version" in f or _emd_version(f):
        return "EMD"
    groups = [f.get(k) for k in f.keys() if isinstance(f.get(k, getlink=True), h5py.HardLink)]
    if any(isinstance(g, h5py.Group) and _emd_version(g) for g in groups):
        return "EMD"
    entry = f.get("entry")
    data = entry.get("data") if isinstance(entry, h5py.Group) else None
    if isinstance(data, h5py.Group) and len(data) and all(k.startswith("data") for k in data.keys()):
        return "Arina"
    if any(k.startswith("Measurement_") for k in f.keys()):
        return "USID"
    if "NX_class" in f.attrs or any(isinstance(g, h5py.Group) and "NX_class" in g.attrs for g in groups):
        return "NeXus"
    return None


def _is_hdf5(path: Path) -> bool:
    import h5py

    try:
        return bool(h5py.is_hdf5(str(path)))
    except Exception:
        return False


def candidates(path: Path) -> tuple[list[dict], dict | None]:
    """RosettaSciIO plugins to try on `path`, and the one its content identifies (None if unknown)."""
    from rsciio import IO_PLUGINS

    ext = path.suffix.lstrip(".").lower()
    plugins = [p for p in IO_PLUGINS if ext and ext in (e.lower() for e in p["file_extensions"])]
    if not path.is_file():
        return plugins, None
    import h5py

    try:
        if not _is_hdf5(path):
            return plugins, plugins[0] if len(plugins) == 1 else None
        with h5py.File(str(path), "r") as f:
            layout = _hdf5_layout(f)
    except Exception:  # unreadable HDF5: the readers below report it
        return plugins, plugins[0] if len(plugins) == 1 else None
    claimed = next((p for p in IO_PLUGINS if p["name"] == layout), None)
    if claimed is None:
        return plugins, plugins[0] if len(plugins) == 1 else None
    return [claimed] + [p for p in plugins if p is not claimed], claimed


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextmanager
def _reader_errors_unlogged():
    """Keep RosettaSciIO's own ERROR log lines off stderr: the failure is reported as one InverscopeError line."""
    handlers = logging.getLogger("rsciio").handlers
    quiet = _BelowError()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def _call_reader(path: Path, plugin: dict) -> tuple[list[dict], str]:
    """Run one plugin's reader lazily where it can; return its signals and a note for the source."""
    api = importlib.import_module(plugin["api"])
    params = inspect.signature(api.file_reader).parameters
    kwargs: dict[str, Any] = {"lazy": True} if "lazy" in params else {}
    if plugin["name"] == "ZSPY":
        kwargs["mode"] = "r"  # the lazy zspy reader otherwise opens the store for writing
    try:
        return api.file_reader(str(path), **kwargs), ""
    except NotImplementedError:
        if not kwargs.get("lazy"):
            raise
        kwargs.pop("lazy")  # readers that cannot read lazily (Arina) read the whole file
    try:
        return api.file_reader(str(path), **kwargs), ", read into memory"
    except ValueError as err:
        if "navigation_shape" not in str(err) or "navigation_shape" not in params:
            raise
    # the scan shape is not recorded and the pattern count is not a square: keep the patterns as one line
    return api.file_reader(str(path), navigation_shape=(1, "auto"), **kwargs), ", read as one scan line"


def _pick(signals: list[dict]) -> dict | None:
    datas = [s for s in signals if getattr(s.get("data"), "ndim", 0) in (3, 4)]
    return next((s for s in datas if s["data"].ndim == 4), datas[0] if datas else None)


def _beam_energy_kev(metadata) -> float | None:
    try:
        return float(metadata["Acquisition_instrument"]["TEM"]["beam_energy"])
    except (KeyError, TypeError, ValueError):
        return None


def axes_sampling(axes: list[dict], metadata=None) -> tuple[float, float] | None:
    """Detector pixel size (ky, kx) [mrad] of the last two axes, or None when the units do not give it.

    Angles (mrad, rad, µrad) convert directly; reciprocal lengths (1/nm, 1/Å) convert through the
    electron wavelength when the metadata record the beam energy [keV]: angle = wavelength * k.
    """
    from inverscope.core.units import wavelength_angstrom

    if len(axes) < 2:
        return None
    energy = _beam_energy_kev(metadata or {})
    out = []
    for ax in axes[-2:]:
        unit = str(ax.get("units") or "").strip().lower().replace(" ", "")
        try:
            scale = float(ax.get("scale", 1.0))
        except (TypeError, ValueError):
            return None
        if unit in _ANGLE_MRAD:
            out.append(scale * _ANGLE_MRAD[unit])
        elif unit in _RECIPROCAL_PER_ANGSTROM and energy and energy > 0:
            out.append(scale * _RECIPROCAL_PER_ANGSTROM[unit] * wavelength_angstrom(energy * 1e3) * 1e3)
        else:
            return None
    return out[0], out[1]


def _probe(path: Path, plugin: dict, data) -> None:
    """Read the last pattern now, so a truncated file or a missing filter fails here and not mid-analysis."""
    try:
        data[-1, -1].compute()
    except Exception as err:
        package = missing_package(err)
        if package:
            raise InverscopeError(needs_message(path, plugin, package)) from None
        raise InverscopeError(f"{path}: read as {format_name(plugin)} but its last pattern cannot be read "
                              f"({_short(err)}); is the file truncated or damaged?") from None


def open_with_rsciio(path: Path, plugins: list[dict], claimed: dict | None
                     ) -> tuple[Any, tuple[float, float] | None, str]:
    """Open `path` with the first of `plugins` that reads it; return (data, sampling_mrad, source).

    ``plugins`` and ``claimed`` come from :func:`candidates`. ``data`` is a Dask array
    (scan_y, scan_x, ky, kx); a 3D dataset becomes one scan line.
    """
    if plugins and all(p["name"] in _HDF5_PLUGINS for p in plugins) and not _is_hdf5(path):
        names = " or ".join(dict.fromkeys(format_name(p) for p in plugins))
        raise InverscopeError(f"{path}: could not read the file: it does not open as HDF5, so not as {names}; "
                              "is it truncated or of another format?")
    problems, missing, shapes = [], [], []
    for plugin in plugins:
        try:
            with _reader_errors_unlogged():
                signals, note = _call_reader(path, plugin)
        except Exception as err:  # readers raise many types on foreign or truncated files
            package = missing_package(err)
            if package and (plugin is claimed or len(plugins) == 1):
                raise InverscopeError(needs_message(path, plugin, package)) from None
            (missing if package else problems).append((plugin, package or _short(err)))
            continue
        shapes += [tuple(getattr(s.get("data"), "shape", ())) for s in signals]
        pick = _pick(signals)
        if pick is None:
            continue
        data = da.asarray(pick["data"])
        data = data[None] if data.ndim == 3 else data
        _probe(path, plugin, data)
        sampling = axes_sampling(pick.get("axes") or [], pick.get("metadata"))
        return data, sampling, f"{path} (RosettaSciIO {plugin['name']}{note})"
    if shapes:
        raise InverscopeError(f"{path}: no 3D or 4D dataset in the file (found shapes {shapes[:4]})")
    if problems and claimed is None and _is_hdf5(path):
        missing = []  # an HDF5 file in none of the layouts above: a missing reader package is not why
    raise InverscopeError(_failure(path, problems, missing))


def _failure(path: Path, problems: list, missing: list) -> str:
    parts = []
    if problems:
        names = " or ".join(format_name(p) for p, _ in problems)
        why = "; ".join(f"{p['name']}: {e}" for p, e in problems)
        parts.append(f"could not read the file as {names} ({why}); is it truncated or of another format?")
    for plugin, package in missing:
        what = f"if it is a {format_name(plugin)} file, reading it" if problems else \
            f"reading {format_name(plugin)} files"
        parts.append(f"{what} needs the Python package {package} (pip install {package})")
    return f"{path}: " + "; ".join(parts)
