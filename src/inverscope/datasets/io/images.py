"""Read one diffraction pattern from an image file (PNG, JPEG, TIFF, .npy).

Camera frames arrive as 8- or 16-bit PNG/JPEG/TIFF files, 32-bit or float TIFFs, or a
pattern someone saved with numpy. :func:`read_pattern` returns the pixels as a float32
2D array and an ``info`` dict that keeps what the conversion would otherwise lose: the
stored dtype, the bit depth, the level at which the camera saturated, and notes (an RGB
image reduced to luminance, a dropped singleton axis).

Saturation: clipped pixels all carry the same top value. ``info["saturation"]`` is the
integer dtype's maximum if any pixel reaches it, else the image maximum if that value is
repeated on many pixels (at least ``max(5, 1e-4 * size)`` of them and twice as many as the
next lower value, the signature of a clip level such as 4095 in a 16-bit file), else None.
TIFFs are read with tifffile when it is installed, otherwise with Pillow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from inverscope.core.errors import InverscopeError

#: Suffixes read, by reader.
FORMATS = {".png": "pillow", ".jpg": "pillow", ".jpeg": "pillow", ".tif": "tiff", ".tiff": "tiff", ".npy": "numpy"}

#: ITU-R BT.601 luma weights for RGB to grey.
LUMA = (0.299, 0.587, 0.114)


class PatternReadError(InverscopeError):
    """An image file cannot be read as one 2D pattern."""


def _read_pillow(path: Path) -> tuple[np.ndarray, list[str]]:
    with Image.open(path) as img:
        notes = []
        if img.mode in ("P", "PA", "1"):
            notes.append(f"palette/bilevel mode {img.mode} converted")
            img = img.convert("RGBA" if "A" in img.mode else "L")
        if getattr(img, "n_frames", 1) > 1:
            raise PatternReadError(f"{path}: holds {img.n_frames} frames; expected one 2D pattern")
        return np.asarray(img), notes


def _read_tiff(path: Path) -> tuple[np.ndarray, list[str]]:
    try:
        import tifffile
    except ImportError:
        return _read_pillow(path)
    return np.asarray(tifffile.imread(path)), []


def _read_raw(path: Path, kind: str) -> tuple[np.ndarray, list[str]]:
    """The stored array and notes; every reader failure becomes one line."""
    try:
        if kind == "numpy":
            return np.load(path, allow_pickle=False), []
        return _read_tiff(path) if kind == "tiff" else _read_pillow(path)
    except PatternReadError:
        raise
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise PatternReadError(f"{path}: cannot be read as {kind} ({reason})") from None


def _to_2d(arr: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    """Squeeze singleton axes and reduce RGB(A) to luminance; anything else that is not 2D raises."""
    if arr.ndim > 2 and 1 in arr.shape:
        notes.append(f"singleton axes dropped from shape {arr.shape}")
        arr = arr.squeeze()
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        notes.append(f"{'RGBA' if arr.shape[-1] == 4 else 'RGB'} converted to luminance "
                     f"({LUMA[0]} R + {LUMA[1]} G + {LUMA[2]} B; alpha ignored)")
        arr = np.tensordot(arr[..., :3].astype(np.float64), LUMA, axes=([-1], [0]))
    if arr.ndim != 2:
        raise PatternReadError(f"{path}: array of shape {arr.shape}; expected one 2D pattern (rows, cols)")
    return arr


def saturation_level(arr: np.ndarray, dtype: np.dtype) -> tuple[float | None, str | None]:
    """The level at which `arr` is clipped and how it was found (see the module docstring)."""
    top = float(arr.max())
    if np.issubdtype(dtype, np.integer) and top == float(np.iinfo(dtype).max):
        return top, "dtype maximum"
    at_top = int(np.count_nonzero(arr == top))
    below = arr[arr < top]
    next_count = int(np.count_nonzero(below == below.max())) if below.size else 0
    if at_top >= max(5, 1e-4 * arr.size) and at_top >= 2 * next_count:
        return top, "repeated maximum"
    return None, None


def _bit_depth(dtype: np.dtype) -> int | None:
    return 8 * dtype.itemsize if np.issubdtype(dtype, np.integer) else None


def read_pattern(path: str | Path) -> tuple[np.ndarray, dict]:
    """Read one diffraction pattern from a PNG, JPEG, TIFF or ``.npy`` file.

    Parameters
    ----------
    path : str or Path
        The file; the suffix picks the reader (see :data:`FORMATS`).

    Returns
    -------
    pattern : np.ndarray
        float32 (rows, cols) in the file's own units [counts].
    info : dict
        ``source`` (the path), ``format``, ``dtype`` (as stored), ``bit_depth`` (integer
        bits; None for floats), ``saturation`` (level [counts] or None),
        ``saturation_source``, ``saturated_fraction``, ``shape`` and ``notes``.

    Raises
    ------
    PatternReadError
        A missing file, an unknown format, an unreadable file, an array that is not 2D,
        an empty, constant or non-finite image.
    """
    path = Path(path)
    if not path.is_file():
        raise PatternReadError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise PatternReadError(f"{path}: unknown format {path.suffix!r}; supported: {', '.join(FORMATS)}")
    raw, notes = _read_raw(path, kind)
    stored = raw.dtype
    arr = _to_2d(raw, path, notes)
    if arr.size == 0:
        raise PatternReadError(f"{path}: empty image (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise PatternReadError(f"{path}: {int(np.size(arr) - np.isfinite(arr).sum())} non-finite pixels")
    if arr.min() == arr.max():
        raise PatternReadError(f"{path}: constant image (every pixel {float(arr.flat[0])}); no pattern to read")
    level, how = saturation_level(arr, arr.dtype if arr.dtype == stored else np.dtype(np.float64))
    info = {"source": str(path), "format": path.suffix.lower().lstrip("."), "dtype": str(stored),
            "bit_depth": _bit_depth(stored), "saturation": level, "saturation_source": how,
            "saturated_fraction": 0.0 if level is None else float(np.mean(arr >= level)),
            "shape": list(arr.shape), "notes": notes}
    return arr.astype(np.float32), info
