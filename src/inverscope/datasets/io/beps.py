"""Read band-excitation piezoresponse spectroscopy (BEPS) hysteresis loops into one array.

Every source becomes a :class:`BEPSData` whose ``loops`` is ``(rows, cols, steps)`` float64
(one loop per grid pixel, any grid size and number of voltage steps) and whose ``voltage`` is
the ``(steps,)`` DC waveform [V]. Supported: MATLAB ``.mat``, HDF5 (USID, sidpy/NSID, or plain
datasets), ``.npy`` and ``.npz``. Positions are row-major: pixel ``(r, c)`` is flat index
``r * cols + c``. Real example data (Agar et al. 2019, BSD 3-Clause) come with
:func:`load_example`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from inverscope.core.errors import InverscopeError

SUPPORTED = (".mat", ".h5", ".hdf5", ".npy", ".npz")
EXAMPLES = ("pzt_piezoresponse", "pzt_resonance")
_USID_ANCILLARY = ("Position_Indices", "Position_Values", "Spectroscopic_Indices", "Spectroscopic_Values")


@dataclass
class BEPSData:
    """Hysteresis loops on a grid and their voltage waveform.

    Attributes
    ----------
    loops : ndarray
        (rows, cols, steps) float64; NaN where a value is missing.
    voltage : ndarray
        (steps,) float64 DC voltage of each step [V] (step index when ``extra['warning']`` says so).
    channel : str
        Name of the array the loops were read from.
    source : str
        Kind and path of the source, for provenance.
    extra : dict
        Other channels and metadata of the source.
    """

    loops: np.ndarray
    voltage: np.ndarray
    channel: str
    source: str
    extra: dict = field(default_factory=dict)

    def flat(self) -> np.ndarray:
        """Loops as (rows * cols, steps), row-major over the grid."""
        return self.loops.reshape(-1, self.loops.shape[-1])


def _err(path: Path, problem: str) -> InverscopeError:
    return InverscopeError(f"{path}: {problem}")


#: Real loops from a complex response: the names `component=` accepts
COMPONENTS = ("projected", "amplitude", "phase", "real", "imag")


def _compound_to_complex(arr: np.ndarray) -> np.ndarray:
    """A structured array with real and imaginary fields (USID's ``r``/``i``) as complex; else unchanged."""
    names = arr.dtype.names
    if names and len(names) == 2:
        lower = [n.lower() for n in names]
        for re_name, im_name in (("r", "i"), ("real", "imag"), ("re", "im")):
            if re_name in lower and im_name in lower:
                return arr[names[lower.index(re_name)]] + 1j * arr[names[lower.index(im_name)]]
    return arr


def _component(arr: np.ndarray, component: str | None, path: Path, name: str, extra: dict) -> np.ndarray:
    """Real loops from `arr`: itself when real, or the asked `component` of a complex response.

    ``projected`` turns the whole map by one phase, the principal axis of the complex values
    (half the argument of the mean of (z - mean z)^2), and keeps the real part: the in-phase
    piezoresponse, with the sign of the axis chosen so the mean projected response is >= 0.
    """
    arr = _compound_to_complex(np.asarray(arr))
    if component is not None and component not in COMPONENTS:
        raise _err(path, f"component {component!r} is not one of {', '.join(COMPONENTS)}")
    if not np.iscomplexobj(arr):
        if component is not None and component not in ("real", "projected"):
            raise _err(path, f"component {component!r} needs a complex response; array {name!r} is real ({arr.dtype})")
        return arr
    if component is None:
        raise _err(path, f"array {name!r} is complex ({arr.dtype}); choose a component (component=, or "
                         f"data.component in a recipe): {', '.join(COMPONENTS)}")
    if component == "projected":
        z = arr[np.isfinite(arr)]
        theta = 0.5 * float(np.angle(np.mean((z - z.mean()) ** 2))) if z.size else 0.0
        if z.size and np.mean((z * np.exp(-1j * theta)).real) < 0:
            theta += np.pi
        extra["projection_phase_rad"] = theta
        return (arr * np.exp(-1j * theta)).real
    return {"amplitude": np.abs, "phase": np.angle, "real": np.real, "imag": np.imag}[component](arr)


def _as_loops(arr: np.ndarray, grid_shape: tuple[int, int] | None, path: Path, name: str) -> np.ndarray:
    """(rows, cols, steps) float64 from a 3D array, or a 2D (pixels, steps) one with `grid_shape`."""
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise _err(path, f"array {name!r} has dtype {arr.dtype}; loops must be real numbers")
    if arr.ndim == 2 and grid_shape is not None:
        rows, cols = (int(g) for g in grid_shape)
        if rows * cols != arr.shape[0]:
            raise _err(path, f"grid_shape {rows}x{cols} = {rows * cols} pixels but {name!r} has {arr.shape[0]}")
        arr = arr.reshape(rows, cols, arr.shape[1])
    if arr.ndim != 3:
        hint = " (pass grid_shape=(rows, cols) for a 2D (pixels, steps) array)" if arr.ndim == 2 else ""
        raise _err(path, f"array {name!r} has shape {arr.shape}; loops must be (rows, cols, steps){hint}")
    return arr.astype(np.float64)


def _finish(loops, voltage, channel, source, extra, path) -> BEPSData:
    steps = loops.shape[-1]
    if steps == 0 or loops.size == 0:
        raise _err(path, f"loop array {channel!r} is empty (shape {loops.shape})")
    if voltage is None:
        voltage = np.linspace(0.0, steps - 1.0, steps)
        extra["warning"] = "no voltage found or given: voltage is the step index 0..steps-1, not volts"
    voltage = np.asarray(voltage, dtype=np.float64).squeeze()
    if voltage.ndim != 1 or voltage.size != steps:
        raise _err(path, f"voltage has {voltage.size} values (shape {voltage.shape}) "
                         f"but loops {channel!r} have {steps} steps")
    if np.isnan(loops).all():
        raise _err(path, f"loop array {channel!r} is all NaN")
    return BEPSData(loops=loops, voltage=voltage, channel=channel, source=source, extra=extra)


def _pick_channel(names: list[str], arrays: dict[str, Any], channel, grid_shape, path: Path, known=()) -> str:
    """Name of the loop array: `channel`, else 'loops', else the only 3D (or 2D with grid) array."""
    if channel is not None:
        hits = [n for n in names if n == channel or n.strip("/") == channel.strip("/") or n.endswith("/" + channel)]
        if len(hits) != 1:
            problem = "matches several arrays" if hits else "does not exist"
            raise _err(path, f"channel {channel!r} {problem}; available: {', '.join(names) or 'none'}")
        return hits[0]
    if "loops" in names:
        return "loops"
    flat_ok = grid_shape is not None
    ok = [n for n in names if n in known or arrays[n].ndim == 3
          or (flat_ok and arrays[n].ndim == 2 and "volt" not in n.lower())]
    if not ok:
        raise _err(path, f"no loop array (3D rows x cols x steps) found; arrays: {', '.join(names) or 'none'}")
    if len(ok) > 1:
        raise _err(path, f"several loop arrays, pass channel= one of: {', '.join(ok)}")
    return ok[0]


def _find_voltage(arrays: dict[str, Any], voltage_key, steps: int, path: Path):
    """(name, 1D voltage) from `voltage_key`, 'voltage', names containing 'volt', else (None, None)."""
    if voltage_key is not None:
        hits = [n for n in arrays
                if n == voltage_key or n.strip("/") == voltage_key.strip("/") or n.endswith("/" + voltage_key)]
        if len(hits) != 1:
            raise _err(path, f"voltage_key {voltage_key!r} does not exist; available: {', '.join(arrays)}")
        return hits[0], np.asarray(arrays[hits[0]][()])
    cands = [n for n in arrays if n.rsplit("/", 1)[-1].lower() == "voltage"]
    cands += [n for n in arrays if "volt" in n.lower() and n not in cands]
    vecs = [(n, np.asarray(arrays[n][()]).squeeze()) for n in cands if sum(s > 1 for s in arrays[n].shape) <= 1]
    for n, v in vecs:
        if v.size == steps:
            return n, v
    return vecs[0] if vecs else (None, None)


def _from_mapping(arrays: dict[str, np.ndarray], path, kind, channel, voltage_key, voltage, grid_shape,
                  component=None) -> BEPSData:
    names = list(arrays)
    name = _pick_channel(names, arrays, channel, grid_shape, path)
    info: dict = {}
    loops = _as_loops(_component(arrays[name], component, path, name, info), grid_shape, path, name)
    vname = None
    if voltage is None:
        vname, voltage = _find_voltage({n: a for n, a in arrays.items() if n != name}, voltage_key, loops.shape[-1], path)
    extra = {n: a for n, a in arrays.items() if n not in (name, vname)} | info
    return _finish(loops, voltage, name, f"{kind}:{path}:{name}", extra, path)


def _decode(labels) -> list[str]:
    return [lab.decode() if isinstance(lab, bytes) else str(lab) for lab in np.atleast_1d(labels)]


def _usid_grid(group, data: np.ndarray, path: Path) -> np.ndarray:
    """Place USID rows at their (y, x) pixel from ``Position_Indices``.

    Column order follows USID: column 0 is the fastest-varying dimension (x, the grid column),
    column 1 the slower one (y, the grid row), unless ``labels`` name 'x'/'y' explicitly.
    """
    idx = np.asarray(group["Position_Indices"][()], dtype=np.int64).reshape(data.shape[0], -1)
    if idx.shape[1] > 2:
        raise _err(path, f"USID data have {idx.shape[1]} position dimensions; only 1 or 2 are supported")
    labels = [s.lower() for s in _decode(group["Position_Indices"].attrs.get("labels", []))]
    xcol, ycol = 0, 1
    if len(labels) == 2 and labels[1].startswith("x") and labels[0].startswith("y"):
        xcol, ycol = 1, 0
    xu, xi = np.unique(idx[:, xcol], return_inverse=True)
    yu, yi = (np.unique(idx[:, ycol], return_inverse=True) if idx.shape[1] == 2 else (np.zeros(1), np.zeros(len(idx), int)))
    loops = np.full((len(yu), len(xu), data.shape[1]), np.nan)
    loops[yi.ravel(), xi.ravel()] = data
    return loops


def _dim_scale_voltage(ds) -> tuple[int, np.ndarray | None]:
    """(spectral axis, voltage) from sidpy/NSID dimension scales or attributes of `ds`."""
    axis, volt = ds.ndim - 1, None
    for i in range(ds.ndim):
        if len(ds.dims[i]):
            scale = ds.dims[i][0]
            kind = scale.attrs.get("dimension_type", b"")
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if "spectral" in kind.lower() or "volt" in scale.name.lower():
                axis, volt = i, np.asarray(scale[()])
    if volt is None:
        for key, val in ds.attrs.items():
            if "volt" in key.lower() and np.size(val) == ds.shape[axis]:
                volt = np.asarray(val)
    return axis, volt


def _load_h5(path: Path, channel, voltage_key, voltage, grid_shape, component=None) -> BEPSData:
    import h5py

    with h5py.File(path, "r") as f:
        dsets: dict[str, Any] = {}
        f.visititems(lambda n, o: dsets.__setitem__(n, o) if isinstance(o, h5py.Dataset) else None)
        usid = {n for n, d in dsets.items() if d.ndim == 2 and n.rsplit("/", 1)[-1] not in _USID_ANCILLARY
                and all(k in d.parent for k in ("Position_Indices", "Spectroscopic_Values"))}
        pickable = {n: d for n, d in dsets.items() if n in usid or d.ndim == 3
                    or (d.ndim == 2 and grid_shape is not None and n.rsplit("/", 1)[-1] not in _USID_ANCILLARY)}
        name = _pick_channel(list(pickable) if channel is None else list(dsets), pickable if channel is None else dsets,
                             channel, grid_shape, path, known=usid)
        ds = dsets[name]
        extra: dict[str, Any] = {"attrs": dict(ds.attrs), "datasets": [n for n in dsets if n != name]}
        values = _compound_to_complex(np.asarray(ds[()]))
        if values.dtype.names is not None:
            raise _err(path, f"dataset {name!r} has dtype {ds.dtype}; pass channel= a dataset of loop values")
        values = _component(values, component, path, name, extra)
        if name in usid:
            loops = _usid_grid(ds.parent, np.asarray(values, dtype=np.float64), path)
            if voltage is None:
                spec = ds.parent["Spectroscopic_Values"]
                labels = _decode(spec.attrs.get("labels", []))
                row = next((i for i, lab in enumerate(labels) if "dc" in lab.lower()), 0)
                voltage = np.atleast_2d(spec[()])[row]
            return _finish(loops, voltage, name, f"hdf5-usid:{path}:{name}", extra, path)
        axis, volt = (_dim_scale_voltage(ds) if ds.ndim == 3 else (ds.ndim - 1, None))
        loops = _as_loops(np.moveaxis(values, axis, -1), grid_shape, path, name)
        kind = "hdf5-nsid" if ("data_type" in ds.attrs or any(len(d) for d in ds.dims)) else "hdf5"
        if voltage is None:
            voltage = volt if (volt is not None and voltage_key is None) else \
                _find_voltage({n: d for n, d in dsets.items() if n != name}, voltage_key, loops.shape[-1], path)[1]
        return _finish(loops, voltage, name, f"{kind}:{path}:{name}", extra, path)


def load_beps(path: str | Path, channel: str | None = None, voltage_key: str | None = None, *,
              voltage: np.ndarray | None = None, grid_shape: tuple[int, int] | None = None,
              component: str | None = None) -> BEPSData:
    """Read BEPS loops from a file.

    Parameters
    ----------
    path : str or Path
        ``.mat``, ``.h5``/``.hdf5`` (USID ``Raw_Data`` + ``Position_Indices`` +
        ``Spectroscopic_Values``; sidpy/NSID 3D dataset with dimension scales; or a plain 3D
        dataset), ``.npy`` or ``.npz``.
    channel : str, optional
        Name (or HDF5 path) of the loop array; needed when there are several candidates.
    voltage_key : str, optional
        Name of the voltage array; by default 'voltage' or a name containing 'volt'.
    voltage : ndarray, optional
        Voltage of each step [V]; overrides the file. Without any, the step index is used and
        ``extra['warning']`` says so.
    grid_shape : (rows, cols), optional
        Reshape a 2D (pixels, steps) array row-major to (rows, cols, steps).
    component : {'projected', 'amplitude', 'phase', 'real', 'imag'}, optional
        Required for a complex response (complex dtype, or USID's compound ``r``/``i``):
        ``projected`` is the real part after turning the whole map by its principal phase
        (``extra['projection_phase_rad']``), ``phase`` is in radians. A real array accepts only
        None, ``real`` or ``projected``.

    Returns
    -------
    BEPSData

    Raises
    ------
    InverscopeError
        Missing file, unsupported extension, no loop array, unknown channel, voltage length not
        equal to the number of steps, an all-NaN grid, a complex array without a component.
    """
    path = Path(path)
    if not path.is_file():
        raise _err(path, "file does not exist")
    ext = path.suffix.lower()
    if ext not in SUPPORTED:
        raise _err(path, f"unsupported extension {ext!r}; supported: {', '.join(SUPPORTED)}")
    try:
        if ext == ".mat":
            import scipy.io

            arrays = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
            arrays = {k: v for k, v in arrays.items() if isinstance(v, np.ndarray) and v.dtype.kind in "biufc"}
            return _from_mapping(arrays, path, "mat", channel, voltage_key, voltage, grid_shape, component)
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            return _from_mapping(arrays, path, "npz", channel, voltage_key, voltage, grid_shape, component)
        if ext == ".npy":
            info: dict = {}
            raw = _component(np.load(path, allow_pickle=False), component, path, path.stem, info)
            loops = _as_loops(raw, grid_shape, path, path.stem)
            return _finish(loops, voltage, path.stem, f"npy:{path}", info, path)
        return _load_h5(path, channel, voltage_key, voltage, grid_shape, component)
    except InverscopeError:
        raise
    except (OSError, ValueError, NotImplementedError) as exc:
        raise _err(path, f"cannot be read as {ext}: {exc}") from exc


def load_example(name: str = "pzt_piezoresponse") -> BEPSData:
    """Bundled real BEPS data of PbZr0.2Ti0.8O3 (Agar et al., Nat. Commun. 10, 4809, 2019).

    Parameters
    ----------
    name : {'pzt_piezoresponse', 'pzt_resonance'}
        'pzt_piezoresponse': raw A cos(phi) loops (60, 60, 96) with 3 NaNs;
        'pzt_resonance': the authors' cleaned, standardized resonance loops (60, 60, 96).

    Returns
    -------
    BEPSData
        Voltage +16 -> -16 -> +15.33 V in 2/3 V steps. BSD 3-Clause, Copyright (c) 2018,
        Joshua C Agar; see ``inverscope/data/agar2019/README.md``.
    """
    if name not in EXAMPLES:
        raise InverscopeError(f"example {name!r} does not exist; available: {', '.join(EXAMPLES)}")
    root = resources.files("inverscope.data") / "agar2019"
    with resources.as_file(root / "NN_of_Mixed_PZT_BEPS_data.mat") as mat:
        data = load_beps(mat, channel="Loopdata_mixed", voltage_key="Voltagedata_mixed")
    data.extra["license"] = "BSD 3-Clause, Copyright (c) 2018, Joshua C Agar (Agar et al. 2019)"
    if name == "pzt_piezoresponse":
        return data
    with resources.as_file(root / "resonance_normalized_3600x96.npy") as npy:
        res = np.load(npy, allow_pickle=False).astype(np.float64).reshape(60, 60, 96)
    return BEPSData(loops=res, voltage=data.voltage.copy(), channel="resonance_normalized",
                    source=f"npy:{npy}", extra={"license": data.extra["license"],
                                                "note": "range-filtered, cleaned, globally standardized by the authors"})
