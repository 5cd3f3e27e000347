"""Open 4D-STEM data lazily: inverscope stores, campaign stores, and any file RosettaSciIO reads.

Every source becomes a ``FourD`` whose ``data`` is a Dask array of shape
``(scan_y, scan_x, ky, kx)`` (a line scan is ``(1, n, ky, kx)``), read only where sliced.
A campaign store is already cut into stacks: ``data`` is ``(N * lines * thicknesses, P, ky, kx)``
and ``stacks`` is True.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from inverscope.core.errors import InverscopeError
from inverscope.datasets.io import _rsciio


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


def _open_zarr(path: Path, thickness_index: int) -> FourD:
    import zarr

    from inverscope.datasets.campaign import SCHEMA

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


def _check_file(path: Path) -> None:
    """Fail in one line on a file that cannot be opened at all: unreadable or empty."""
    try:
        with path.open("rb") as f:
            head = f.read(1)
    except OSError as err:
        raise InverscopeError(f"{path}: cannot be read ({err.strerror or type(err).__name__})") from None
    if not head:
        raise InverscopeError(f"{path}: the file is empty (0 bytes)")


def open_4dstem(path, thickness_index: int = -1) -> FourD:
    """Open 4D-STEM data at `path` lazily.

    Parameters
    ----------
    path : str or Path
        An inverscope store (directory with a ``cbed`` array), a campaign store (schema
        ``inverscope.campaign/1``), or a file RosettaSciIO reads: the reader is chosen by the
        extension (``.hspy``, ``.blo``, ``.emd``, ``.mib``, ``.npy``, ``.dm4``, ...) and, for HDF5
        files, by the layout inside (HyperSpy, EMD/py4DSTEM, Dectris Arina master, USID, NeXus).
        The last pattern is read at once, so a truncated file fails here. Arina files cannot be
        read lazily and are read into memory.
    thickness_index : int
        Which exit thickness of an inverscope store to use (default: the last).

    Returns
    -------
    FourD
        ``data``: a lazy Dask array (scan rows, scan columns, detector rows, detector columns) as
        the file stores it (campaign stores: (n_stacks, P, ky, kx)); ``sampling_mrad``: the
        detector pixel size (ky, kx) [mrad] when the source records it, else None; ``source``:
        path and reader.

    Raises
    ------
    InverscopeError
        One line naming the path and what is wrong: missing, empty, a directory where a file is
        expected, an unknown extension (with the formats that open), a missing optional package
        (``reading FORMAT files needs the Python package X (pip install X)``), or a file that is
        truncated or of another format.

    Examples
    --------
    A NumPy file of a 3 x 4 scan of 16 x 16 patterns (``.npy`` carries no calibration):

    >>> import numpy as np
    >>> import inverscope as isc
    >>> np.save("scan.npy", np.ones((3, 4, 16, 16), np.float32))
    >>> data = isc.open_4dstem("scan.npy")
    >>> data.data.shape, data.sampling_mrad
    ((3, 4, 16, 16), None)
    >>> float(data.data[0, 0].sum().compute())   # read on demand (Dask)
    256.0
    """
    path = Path(path)
    if not path.exists():
        raise InverscopeError(f"{path}: no such file or directory")
    if path.is_dir():
        plugins, claimed = _rsciio.candidates(path)
        if not plugins:
            return _open_zarr(path, thickness_index)
        if not any(p["name"] == "ZSPY" for p in plugins):
            raise InverscopeError(f"{path}: is a directory, not a {_rsciio.format_name(plugins[0])} file")
    else:
        _check_file(path)
        plugins, claimed = _rsciio.candidates(path)
    if not plugins:
        raise InverscopeError(f"{path}: unknown file extension {path.suffix or '(none)'!r}; 4D-STEM data opens from "
                              f"an inverscope Zarr store or a {_rsciio.FOURD_FORMATS} file "
                              "(or another format RosettaSciIO reads)")
    data, sampling, source = _rsciio.open_with_rsciio(path, plugins, claimed)
    return FourD(data, sampling, source)


__all__ = ["FourD", "open_4dstem"]
