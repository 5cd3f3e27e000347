"""Open 4D-STEM data lazily: inverscope stores, campaign stores, and any file RosettaSciIO reads.

Every source becomes a :class:`FourD` whose ``data`` is a Dask array of shape
``(scan_y, scan_x, ky, kx)`` (a line scan is ``(1, n, ky, kx)``), read only where sliced.
A campaign store is already cut into stacks: ``data`` is ``(N * lines * thicknesses, P, ky, kx)``
and ``stacks`` is True.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from inverscope.core.errors import InverscopeError


@dataclass
class FourD:
    """Lazy 4D-STEM data and what is known about it.

    Attributes
    ----------
    data : dask.array.Array
        (scan_y, scan_x, ky, kx), or (n_stacks, P, ky, kx) when ``stacks``.
    sampling_mrad : tuple of float or None
        Detector pixel size (ky, kx) [mrad] when the source records it.
    source : str
        Path and kind of the source, for provenance.
    stacks : bool
        True for campaign stores (each leading index is one stack of P positions).
    index_shape : tuple of int or None
        Campaign stores: (N, lines, thicknesses), the shape the stack index unravels to.
    valid : ndarray of bool or None
        Campaign stores: per stack, True where the sample has been simulated.
    labels : ndarray or None
        Campaign stores: per stack, the true class index (-1 where unknown).
    class_names : list of str or None
        Campaign stores: the class names of ``labels``.
    """

    data: Any
    sampling_mrad: tuple[float, float] | None
    source: str
    stacks: bool = False
    index_shape: tuple[int, ...] | None = None
    valid: np.ndarray | None = None
    labels: np.ndarray | None = None
    class_names: list[str] | None = None


def _sampling(value) -> tuple[float, float] | None:
    try:
        s = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return (s[0], s[1]) if len(s) == 2 else None


def _open_campaign(group, path: Path) -> FourD:
    try:
        patterns, done = group["patterns"], np.asarray(group["done"][:], bool)
        labels = np.asarray(group["class_index"][:]) if "class_index" in group else None
    except Exception:
        raise InverscopeError(f"{path}: campaign store is missing 'patterns' or 'done' (truncated?)") from None
    if patterns.ndim != 6:
        raise InverscopeError(f"{path}: campaign 'patterns' has shape {patterns.shape}, expected 6 dimensions")
    n, lines, thick, p, ky, kx = patterns.shape
    per = lines * thick
    return FourD(da.from_zarr(patterns).reshape(n * per, p, ky, kx), _sampling(group.attrs.get("sampling_mrad")),
                 f"{path} (inverscope campaign)", stacks=True, index_shape=(n, lines, thick),
                 valid=np.repeat(done, per), labels=None if labels is None else np.repeat(labels, per),
                 class_names=group.attrs.get("class_names"))


def _open_cbed(group, path: Path, thickness_index: int) -> FourD:
    arr = group["cbed"]
    attrs = dict(group.attrs)
    if attrs.get("complete") is False:
        raise InverscopeError(f"{path}: the simulation that wrote this store did not finish (complete = false)")
    if arr.ndim not in (4, 5):
        raise InverscopeError(f"{path}: 'cbed' has shape {arr.shape}; expected (scan..., thickness, kx, ky)")
    n_t = arr.shape[-3]
    if not -n_t <= thickness_index < n_t:
        raise InverscopeError(f"thickness_index: got {thickness_index}; the store has {n_t} thickness(es)")
    data = da.from_zarr(arr)[..., thickness_index, :, :]
    if data.ndim == 3:
        data = data[None]
    cal = attrs.get("calibration") or {}
    return FourD(data, _sampling(cal.get("sampling_mrad", attrs.get("sampling_mrad"))),
                 f"{path} (inverscope store, thickness index {thickness_index})")


def _plugins_for(path: Path) -> list[dict]:
    from rsciio import IO_PLUGINS

    ext = path.suffix.lstrip(".").lower()
    return [p for p in IO_PLUGINS if ext and ext in (e.lower() for e in p["file_extensions"])]


def _axes_sampling(axes: list[dict]) -> tuple[float, float] | None:
    if len(axes) < 2:
        return None
    out = []
    for ax in axes[-2:]:
        unit = str(ax.get("units") or "").strip().lower()
        scale = {"mrad": 1.0, "rad": 1e3, "µrad": 1e-3, "urad": 1e-3}.get(unit)
        if scale is None:
            return None
        out.append(float(ax.get("scale", 1.0)) * scale)
    return out[0], out[1]


def _open_rsciio(path: Path, plugins: list[dict]) -> FourD:
    problems, shapes = [], []
    for plugin in plugins:
        try:
            api = importlib.import_module(plugin["api"])
        except ImportError as err:
            problems.append(f"{plugin['name']} needs {err.name or 'an optional package'}")
            continue
        lazy = {"lazy": True} if "lazy" in inspect.signature(api.file_reader).parameters else {}
        try:
            signals = api.file_reader(str(path), **lazy)
        except Exception as err:  # readers raise many types on foreign or truncated files
            problems.append(f"{plugin['name']}: {type(err).__name__}")
            continue
        datas = [s for s in signals if getattr(s.get("data"), "ndim", 0) in (3, 4)]
        shapes += [tuple(getattr(s.get("data"), "shape", ())) for s in signals]
        pick = next((s for s in datas if s["data"].ndim == 4), datas[0] if datas else None)
        if pick is None:
            continue
        data = da.asarray(pick["data"])
        data = data[None] if data.ndim == 3 else data
        return FourD(data, _axes_sampling(pick.get("axes") or []), f"{path} (RosettaSciIO {plugin['name']})")
    if shapes:
        raise InverscopeError(f"{path}: no 3D or 4D dataset in the file (found shapes {shapes[:4]})")
    raise InverscopeError(f"{path}: could not read the file ({'; '.join(problems)}); is it truncated or of another format?")


def open_4dstem(path, thickness_index: int = -1) -> FourD:
    """Open 4D-STEM data at `path` lazily.

    Parameters
    ----------
    path : str or Path
        An inverscope store (directory with a ``cbed`` array), a campaign store (schema
        ``inverscope.campaign/1``), or a file RosettaSciIO reads (the reader is chosen by
        the extension: ``.hspy``, ``.zspy``, ``.emd``, ``.dm4``, ``.mib``, ``.npy``, ...).
    thickness_index : int
        Which exit thickness of an inverscope store to use (default: the last).

    Returns
    -------
    FourD
    """
    from inverscope.datasets.campaign import SCHEMA

    path = Path(path)
    if not path.exists():
        raise InverscopeError(f"{path}: no such file or directory")
    plugins = _plugins_for(path)
    if path.is_dir() and not plugins:
        import zarr

        try:
            group = zarr.open_group(str(path), mode="r")
            schema = group.attrs.get("schema")
            keys = set(group.array_keys())
        except Exception:
            raise InverscopeError(f"{path}: a directory that is not a readable Zarr store (truncated or of another kind)") from None
        if schema == SCHEMA:
            return _open_campaign(group, path)
        if "cbed" in keys:
            return _open_cbed(group, path, int(thickness_index))
        raise InverscopeError(f"{path}: Zarr store with neither a 'cbed' array nor the campaign schema {SCHEMA!r}")
    if not plugins:
        from rsciio import IO_PLUGINS

        some = sorted({p["file_extensions"][0].lower() for p in IO_PLUGINS})[:12]
        raise InverscopeError(f"{path}: unknown file extension {path.suffix or '(none)'!r}; supported include an "
                              f"inverscope .zarr store and {', '.join('.' + e for e in some)}, ...")
    return _open_rsciio(path, plugins)


__all__ = ["FourD", "open_4dstem"]
