"""Zarr stores for 4D-STEM results, written chunk by chunk.

A result is written into ``NAME.zarr`` as an array ``cbed`` of shape
``(*scan_shape, n_thickness, nkx, nky)`` (float32), with calibration and
provenance in its attributes. Batches arrive as contiguous ranges of the
flattened scan, so a dataset larger than memory is never held whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from inverscope.core.errors import ConfigError


def _runs(start: int, stop: int, shape: tuple[int, ...]):
    """Split the flat range [start, stop) into runs along the last scan axis."""
    last = shape[-1]
    i = start
    while i < stop:
        j = min(stop, (i // last + 1) * last)
        yield i, j, np.unravel_index(i, shape)
        i = j


class ZarrCBEDWriter:
    """Create ``path`` (a Zarr group) and write batches of CBED patterns into it.

    Parameters
    ----------
    path : str or Path
        Location of the store (a directory ``*.zarr``).
    scan_shape : tuple of int
        Shape of the scan axes.
    pattern_shape : tuple of int
        (n_thickness, nkx, nky).
    attrs : dict
        JSON-serializable calibration and provenance.
    chunk_positions : int
        Probe positions per chunk along the last scan axis.
    """

    def __init__(self, path, scan_shape, pattern_shape, attrs: dict, chunk_positions: int = 16):
        self.path = Path(path)
        self.scan_shape = tuple(int(s) for s in scan_shape)
        shape = (*self.scan_shape, *pattern_shape)
        chunks = (*(1,) * (len(self.scan_shape) - 1), min(chunk_positions, self.scan_shape[-1]), *pattern_shape)
        self.group = zarr.open_group(str(self.path), mode="w")
        self.array = self.group.create_array("cbed", shape=shape, chunks=chunks, dtype="float32", fill_value=np.nan)
        self.array.attrs.update({"axes": [*(f"scan_{i}" for i in range(len(self.scan_shape))), "thickness", "kx", "ky"]})
        self.group.attrs.update(attrs)
        self.group.attrs["complete"] = False

    def __call__(self, start: int, stop: int, batch: np.ndarray) -> None:
        """Write patterns of flat scan indices [start, stop)."""
        for i, j, idx in _runs(start, stop, self.scan_shape):
            lead = tuple(int(k) for k in idx[:-1])
            c = int(idx[-1])
            self.array[(*lead, slice(c, c + j - i))] = batch[i - start:j - start]

    def close(self) -> None:
        """Mark the store complete (a store without this flag was interrupted)."""
        self.group.attrs["complete"] = True


def open_cbed(path) -> tuple[zarr.Array, dict]:
    """Open a CBED store written by :class:`ZarrCBEDWriter`: (array, attributes)."""
    try:
        group = zarr.open_group(str(path), mode="r")
        arr = group["cbed"]
        attrs = dict(group.attrs)
    except Exception:  # zarr raises many types on foreign, truncated or corrupt metadata
        raise ConfigError(f"{path}: not an inverscope CBED Zarr store (no readable 'cbed' array)") from None
    if not isinstance(arr, zarr.Array):
        raise ConfigError(f"{path}: not an inverscope CBED Zarr store ('cbed' is a group, not an array)")
    return arr, attrs

