"""Camera degradations of a diffraction pattern: from a simulation to a raw camera frame.

A simulated pattern lies on a known angular grid: pixel ``i`` of ``n`` sees the angle
``(i - n // 2) * sampling_mrad`` (as :class:`~inverscope.physics.multislice.detectors.PixelatedDetector`
writes it) and its values are fractions of the beam. :func:`degrade` turns it into the frame a
camera would record, in this order (each step is also a seeded function of its own):

1. geometry (:func:`regrid`): the pattern resampled onto a ``frame_shape`` detector with
   ``mrad_per_px`` (camera length), its zero angle at ``centre_px`` and turned by
   ``rotation_deg``;
2. dose: expected electrons per pixel, ``dose_e_per_pattern`` for the whole input pattern;
3. shot noise (:func:`shot_noise`): Poisson counts;
4. detector blur (:func:`detector_blur`): a Gaussian point spread (the MTF of a scintillator);
5. gain: counts per electron, set so that the noiseless, unblurred peak reaches ``peak_counts``;
6. background (:func:`smooth_background`): a constant offset plus a smooth random field [counts];
7. clipping at ``saturation_counts`` (:func:`clip`);
8. quantization to 8 or 16 bits (:func:`quantize`), then JPEG compression (:func:`jpeg_roundtrip`).

Conventions: ``(row, col)`` pixel coordinates, row 0 at the top. A positive rotation turns the
pattern counter-clockwise as displayed with row 0 on top (``numpy.rot90`` for +90 deg), as in
:mod:`inverscope.datasets.augment`. Every random number comes from the ``numpy.random.Generator``
passed in: the same seed gives the same bytes.
"""

from __future__ import annotations

import io
import math
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field, model_validator
from scipy import ndimage as ndi

from inverscope.core.config import StrictModel
from inverscope.core.errors import InverscopeError, field_error


class CameraModel(StrictModel):
    """One camera and its settings: everything that turns a pattern into a frame.

    The settings below are keyword arguments of the constructor, validated (pydantic) and
    kept as attributes; ``degrade`` applies them in the order of the module docstring.

    Attributes
    ----------
    frame_shape : (int, int)
        Detector size (rows, cols) [px], both >= 8; default (512, 512).
    mrad_per_px : float
        Angle per detector pixel [mrad] (the camera length); default 0.25.
    centre_px : (float, float) or None
        (row, col) of the zero angle [px]; None: ``(rows // 2, cols // 2)``.
    rotation_deg : float
        Counter-clockwise rotation of the pattern as displayed (row 0 on top) [deg].
    dose_e_per_pattern : float
        Electrons in the whole input pattern [e]; default 1e6.
    shot_noise : bool
        Poisson counts (False: the expected electrons).
    blur_sigma_px : float
        Gaussian detector blur sigma [px].
    peak_counts : float or None
        Counts at the noiseless, unblurred peak pixel [counts] (sets the gain); None: 1 count
        per electron.
    background_counts : float
        Constant offset [counts].
    background_smooth_counts : float
        Peak of a smooth random background [counts].
    background_length_px : float
        Length scale of the smooth background [px].
    saturation_counts : float or None
        Clip level [counts]; None: none (but an integer `bit_depth` clips at its maximum).
    bit_depth : {8, 16} or None
        Integer quantization; None: a float32 frame.
    jpeg_quality : int or None
        JPEG quality (Pillow, 1-95); needs ``bit_depth=8``.

    Examples
    --------
    >>> import inverscope as isc
    >>> camera = isc.CameraModel(frame_shape=(256, 256), mrad_per_px=0.5, dose_e_per_pattern=1e5,
    ...                          blur_sigma_px=1.0, bit_depth=8, jpeg_quality=80)
    >>> camera.frame_shape, camera.mrad_per_px, camera.centre_px
    ((256, 256), 0.5, None)
    >>> camera.model_dump()["rotation_deg"]   # defaults fill the rest
    0.0

    See ``degrade`` for a frame made with it.
    """

    frame_shape: tuple[int, int] = Field((512, 512), description="detector size (rows, cols) [px]")
    mrad_per_px: float = Field(0.25, gt=0, description="angle per detector pixel [mrad] (camera length)")
    centre_px: tuple[float, float] | None = Field(None, description="(row, col) of the zero angle [px]; "
                                                  "null = (rows // 2, cols // 2)")
    rotation_deg: float = Field(0.0, description="counter-clockwise rotation of the pattern as displayed [deg]")
    dose_e_per_pattern: float = Field(1e6, gt=0, description="electrons in the whole input pattern")
    shot_noise: bool = Field(True, description="Poisson counts (false: the expected electrons)")
    blur_sigma_px: float = Field(0.0, ge=0, description="Gaussian detector blur sigma [px]")
    peak_counts: float | None = Field(None, gt=0, description="counts at the noiseless, unblurred peak pixel (sets "
                                      "the gain); null = 1 count per electron")
    background_counts: float = Field(0.0, ge=0, description="constant offset [counts]")
    background_smooth_counts: float = Field(0.0, ge=0, description="peak of a smooth random background [counts]")
    background_length_px: float = Field(128.0, gt=0, description="length scale of the smooth background [px]")
    saturation_counts: float | None = Field(None, gt=0, description="clip level [counts]; null = none")
    bit_depth: Literal[8, 16] | None = Field(None, description="integer quantization; null = float32 frame")
    jpeg_quality: int | None = Field(None, ge=1, le=95, description="JPEG quality (Pillow); needs bit_depth 8")

    @model_validator(mode="after")
    def _check(self) -> "CameraModel":
        if min(self.frame_shape) < 8:
            raise ValueError(f"frame_shape: got {self.frame_shape}; both sides must be >= 8 px")
        if self.jpeg_quality is not None and self.bit_depth != 8:
            raise ValueError(f"jpeg_quality: needs bit_depth 8 (got bit_depth {self.bit_depth})")
        return self


class CameraRanges(StrictModel):
    """Ranges to draw cameras from (training augmentation or test frames); fixed settings in `base`."""

    base: CameraModel = Field(default_factory=CameraModel, description="settings not drawn")
    centre_shift_px: float = Field(0.0, ge=0, description="max |shift| of the centre along each axis [px]")
    rotation_deg: tuple[float, float] = Field((0.0, 0.0), description="(min, max) rotation [deg]")
    mrad_per_px: tuple[float, float] | None = Field(None, description="(min, max) [mrad/px], log-uniform; null = base")
    dose_e_per_pattern: tuple[float, float] | None = Field(None, description="(min, max), log-uniform; null = base")
    blur_sigma_px: tuple[float, float] = Field((0.0, 0.0), description="(min, max) [px]")
    background_counts: tuple[float, float] = Field((0.0, 0.0), description="(min, max) constant offset [counts]")
    background_smooth_counts: tuple[float, float] = Field((0.0, 0.0), description="(min, max) [counts]")

    @model_validator(mode="after")
    def _check(self) -> "CameraRanges":
        for name in ("rotation_deg", "mrad_per_px", "dose_e_per_pattern", "blur_sigma_px",
                     "background_counts", "background_smooth_counts"):
            lo_hi = getattr(self, name)
            if lo_hi is not None and lo_hi[0] > lo_hi[1]:
                raise ValueError(f"{name}: got {lo_hi}; give (min, max) with min <= max")
        for name in ("mrad_per_px", "dose_e_per_pattern"):
            lo_hi = getattr(self, name)
            if lo_hi is not None and lo_hi[0] <= 0:
                raise ValueError(f"{name}: got {lo_hi}; both ends must be > 0")
        if min(self.blur_sigma_px + self.background_counts + self.background_smooth_counts) < 0:
            raise ValueError("blur_sigma_px and background ranges must be >= 0")
        return self

    def draw(self, rng: np.random.Generator) -> CameraModel:
        """One camera drawn from the ranges (uniform; scales and doses log-uniform)."""
        base = self.base
        rows, cols = base.frame_shape
        c0 = base.centre_px or (rows // 2, cols // 2)
        shift = rng.uniform(-self.centre_shift_px, self.centre_shift_px, size=2)
        upd = {"centre_px": (float(c0[0] + shift[0]), float(c0[1] + shift[1])),
               "rotation_deg": float(rng.uniform(*self.rotation_deg)),
               "blur_sigma_px": float(rng.uniform(*self.blur_sigma_px)),
               "background_counts": float(rng.uniform(*self.background_counts)),
               "background_smooth_counts": float(rng.uniform(*self.background_smooth_counts))}
        for name in ("mrad_per_px", "dose_e_per_pattern"):
            lo_hi = getattr(self, name)
            if lo_hi is not None:
                upd[name] = float(np.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]))))
        return CameraModel.model_validate({**base.model_dump(), **upd})


def _centre(shape: tuple[int, int], centre_px) -> tuple[float, float]:
    """``centre_px`` as floats, or ``(rows // 2, cols // 2)``."""
    if centre_px is None:
        return float(shape[0] // 2), float(shape[1] // 2)
    return float(centre_px[0]), float(centre_px[1])


def regrid(image: np.ndarray, src_mrad_per_px: float, out_shape: tuple[int, int], out_mrad_per_px: float, *,
           src_centre_px=None, out_centre_px=None, rotation_deg: float = 0.0, order: int = 1,
           fill: float = 0.0) -> np.ndarray:
    """Resample a pattern from one angular grid onto another, turned about the zero angle.

    Parameters
    ----------
    image : np.ndarray
        2D pattern; its pixel ``(r, c)`` sees the angle ``((r, c) - src_centre_px) * src_mrad_per_px``.
    src_mrad_per_px, out_mrad_per_px : float
        Pixel sizes of the input and output grids [mrad].
    out_shape : (int, int)
        Output size [px].
    src_centre_px, out_centre_px : (float, float), optional
        ``(row, col)`` of the zero angle [px]; default ``(n // 2, m // 2)`` of each array.
    rotation_deg : float
        The output shows the input turned counter-clockwise by this angle [deg].
    order : int
        Spline order of the interpolation (1 bilinear, 3 cubic; cubic results may undershoot 0).
    fill : float
        Value outside the input.

    Returns
    -------
    np.ndarray
        float32 ``out_shape``: values per pixel (densities; multiply by the pixel-area ratio
        to conserve counts). When the output pixel is coarser, the input is first smoothed by
        a Gaussian of sigma ``(ratio - 1) / 2`` input pixels against aliasing.
    """
    image = np.asarray(image, dtype=np.float64)
    sc, oc = _centre(image.shape, src_centre_px), _centre(out_shape, out_centre_px)
    ratio = out_mrad_per_px / src_mrad_per_px
    if ratio > 1.0:
        image = ndi.gaussian_filter(image, (ratio - 1.0) / 2.0, mode="nearest")
    a = math.radians(rotation_deg)
    rows = (np.arange(out_shape[0]) - oc[0])[:, None] * ratio
    cols = (np.arange(out_shape[1]) - oc[1])[None, :] * ratio
    src_r = rows * math.cos(a) + cols * math.sin(a) + sc[0]
    src_c = cols * math.cos(a) - rows * math.sin(a) + sc[1]
    src_r, src_c = np.round(src_r, 9), np.round(src_c, 9)  # exact grid points stay exact (edges, 90 deg turns)
    out = ndi.map_coordinates(image, [src_r, src_c], order=order, mode="constant", cval=fill, prefilter=order > 1)
    return out.astype(np.float32)


def shot_noise(electrons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts with mean ``electrons`` (negatives count as 0); float32."""
    return rng.poisson(np.clip(electrons, 0, None)).astype(np.float32)


def detector_blur(frame: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian point spread of sigma ``sigma_px`` [px] (reflecting edges; the sum is kept); float32."""
    if sigma_px <= 0:
        return np.asarray(frame, dtype=np.float32)
    return ndi.gaussian_filter(np.asarray(frame, dtype=np.float32), sigma_px, mode="reflect")


def smooth_background(shape: tuple[int, int], amplitude: float, length_px: float, rng: np.random.Generator,
                      n_waves: int = 6) -> np.ndarray:
    """A smooth random field in ``[0, amplitude]`` [counts]: a sum of long plane waves.

    Each of ``n_waves`` cosines has a random direction, a wavelength between ``length_px``
    and ``4 * length_px`` [px] and a random phase; the sum is scaled to span ``[0, amplitude]``.
    """
    if amplitude <= 0:
        return np.zeros(shape, np.float32)
    rows, cols = np.arange(shape[0])[:, None], np.arange(shape[1])[None, :]
    field = np.zeros(shape)
    for _ in range(n_waves):
        ang, lam, phase = rng.uniform(0, 2 * np.pi), rng.uniform(1, 4) * length_px, rng.uniform(0, 2 * np.pi)
        field += np.cos(2 * np.pi * (rows * np.sin(ang) + cols * np.cos(ang)) / lam + phase)
    field -= field.min()
    return (amplitude * field / max(field.max(), 1e-12)).astype(np.float32)


def clip(frame: np.ndarray, saturation: float | None) -> np.ndarray:
    """Clip at the saturation level [counts] (and at 0); None clips only at 0."""
    return np.clip(frame, 0, saturation).astype(np.float32)


def quantize(frame: np.ndarray, bit_depth: int) -> np.ndarray:
    """Round to integers and store as uint8 or uint16, clipping at ``2**bit_depth - 1``."""
    if bit_depth not in (8, 16):
        raise field_error("bit_depth", bit_depth, "allowed: 8, 16")
    top = 2**bit_depth - 1
    return np.clip(np.rint(frame), 0, top).astype(np.uint8 if bit_depth == 8 else np.uint16)


def jpeg_roundtrip(frame: np.ndarray, quality: int) -> np.ndarray:
    """Encode an 8-bit frame as a JPEG of ``quality`` (Pillow, in memory) and decode it; uint8."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise InverscopeError(f"jpeg_roundtrip: frame dtype {frame.dtype}; JPEG needs uint8 (quantize to 8 bits first)")
    buf = io.BytesIO()
    Image.fromarray(frame, mode="L").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as img:
        return np.asarray(img.convert("L"), dtype=np.uint8)


def _check_pattern(pattern: np.ndarray, sampling_mrad: float) -> np.ndarray:
    pattern = np.asarray(pattern, dtype=np.float64)
    if pattern.ndim != 2 or min(pattern.shape) < 2:
        raise field_error("pattern", f"shape {pattern.shape}", "must be a 2D array of at least 2 x 2 pixels")
    if not np.all(np.isfinite(pattern)) or pattern.sum() <= 0:
        raise field_error("pattern", "values", "must be finite with a positive sum")
    if not (sampling_mrad > 0):
        raise field_error("sampling_mrad", sampling_mrad, "must be > 0 [mrad]")
    return pattern


def expected_electrons(pattern: np.ndarray, sampling_mrad: float, camera: CameraModel) -> np.ndarray:
    """Noiseless electrons per detector pixel: steps 1-2 of :func:`degrade` (float32 frame)."""
    pattern = _check_pattern(pattern, sampling_mrad)
    dens = regrid(pattern, sampling_mrad, camera.frame_shape, camera.mrad_per_px, out_centre_px=camera.centre_px,
                  rotation_deg=camera.rotation_deg, order=3)
    area = (camera.mrad_per_px / sampling_mrad) ** 2
    return np.clip(dens, 0, None) * np.float32(area * camera.dose_e_per_pattern / pattern.sum())


def _saturation_level(camera: CameraModel) -> float | None:
    """The lower of the clip level and the top of the integer range [counts], or None."""
    levels = [v for v in (camera.saturation_counts, None if camera.bit_depth is None else 2**camera.bit_depth - 1)
              if v is not None]
    return float(min(levels)) if levels else None


def degrade(pattern: np.ndarray, camera: CameraModel, rng: np.random.Generator, *,
            sampling_mrad: float) -> tuple[np.ndarray, dict]:
    """Turn a simulated pattern into the frame `camera` would record.

    Parameters
    ----------
    pattern : np.ndarray
        2D pattern, zero angle at ``(n // 2, m // 2)``, values proportional to intensity.
    camera : CameraModel
        Geometry, dose, blur, gain, background, saturation, bit depth and JPEG quality.
    rng : numpy.random.Generator
        Source of the shot noise and the smooth background.
    sampling_mrad : float
        Pixel size of `pattern` [mrad].

    Returns
    -------
    frame : np.ndarray
        ``camera.frame_shape``: float32 [counts], or uint8/uint16 when ``bit_depth`` is set.
    truth : dict
        What the frame is made of: ``centre_px`` (row, col), ``rotation_deg``, ``mrad_per_px``,
        ``saturation`` (the level clipped pixels sit at [counts]; None when nothing can clip),
        ``saturated_fraction`` (pixels at that level after quantization, before JPEG),
        ``counts_per_electron``, ``dose_e_per_pattern``, ``background_counts``, ``blur_sigma_px``,
        ``bit_depth``, ``jpeg_quality``.

    Examples
    --------
    A 10 mrad disc (81 x 81 pixels at 0.5 mrad) as a camera at the same angular pixel size
    records it, first without noise (the frame holds the dose), then as 16-bit counts:

    >>> import numpy as np
    >>> import inverscope as isc
    >>> kx, ky = np.mgrid[-40:41, -40:41] * 0.5   # [mrad]
    >>> pattern = (kx ** 2 + ky ** 2 < 10.0 ** 2) / 1.0
    >>> pattern /= pattern.sum()   # fractions of the beam
    >>> camera = isc.CameraModel(frame_shape=(128, 128), mrad_per_px=0.5, dose_e_per_pattern=1e5,
    ...                          shot_noise=False)
    >>> frame, truth = isc.degrade(pattern, camera, np.random.default_rng(0), sampling_mrad=0.5)
    >>> frame.shape, frame.dtype, round(float(frame.sum()))   # [counts] = electrons here
    ((128, 128), dtype('float32'), 100000)
    >>> camera = isc.CameraModel(frame_shape=(128, 128), mrad_per_px=0.5, dose_e_per_pattern=1e5,
    ...                          centre_px=(60.0, 70.0), bit_depth=16)
    >>> frame, truth = isc.degrade(pattern, camera, np.random.default_rng(0), sampling_mrad=0.5)
    >>> frame.dtype, truth["centre_px"], truth["saturation"]   # (row, col) [px], [counts]
    (dtype('uint16'), [60.0, 70.0], 65535.0)
    """
    electrons = expected_electrons(pattern, sampling_mrad, camera)
    gain = 1.0 if camera.peak_counts is None else camera.peak_counts / max(float(electrons.max()), 1e-12)
    frame = shot_noise(electrons, rng) if camera.shot_noise else electrons
    frame = detector_blur(frame, camera.blur_sigma_px) * np.float32(gain)
    frame = frame + camera.background_counts + smooth_background(
        camera.frame_shape, camera.background_smooth_counts, camera.background_length_px, rng)
    saturation = _saturation_level(camera)
    frame = clip(frame, saturation)
    if camera.bit_depth is not None:
        frame = quantize(frame, camera.bit_depth)
    saturated = float(np.mean(frame >= saturation)) if saturation is not None else 0.0
    if camera.jpeg_quality is not None:
        frame = jpeg_roundtrip(frame, camera.jpeg_quality)
    truth = {"centre_px": list(_centre(camera.frame_shape, camera.centre_px)), "rotation_deg": camera.rotation_deg,
             "mrad_per_px": camera.mrad_per_px, "saturation": saturation,
             "saturated_fraction": saturated, "counts_per_electron": gain,
             "dose_e_per_pattern": camera.dose_e_per_pattern, "background_counts": camera.background_counts,
             "blur_sigma_px": camera.blur_sigma_px, "bit_depth": camera.bit_depth, "jpeg_quality": camera.jpeg_quality}
    return frame, truth
