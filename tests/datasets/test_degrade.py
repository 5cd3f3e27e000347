"""Camera degradations (datasets.degrade) and the single-pattern image reader (datasets.io.images)."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
from PIL import Image

from inverscope.core.config import validate
from inverscope.core.errors import ConfigError, InverscopeError
from inverscope.datasets.degrade import (CameraModel, CameraRanges, clip, degrade, detector_blur, expected_electrons,
                                         jpeg_roundtrip, quantize, regrid, shot_noise, smooth_background)
from inverscope.datasets.io.images import FORMATS, PatternReadError, read_pattern


def disc_pattern(n: int = 81, radius_px: float = 12.0, sampling: float = 1.0) -> np.ndarray:
    """A uniform disc (a thin-specimen CBED) with a 4-fold modulation outside it, centred at n // 2."""
    rr, cc = np.indices((n, n)) - n // 2
    r, phi = np.hypot(rr, cc) * sampling, np.arctan2(-rr, cc)
    return np.where(r < radius_px * sampling, 1.0, 0.1 * (1 + np.cos(4 * phi)) * np.exp(-r / 20)).astype(np.float32)


def centroid(img: np.ndarray) -> np.ndarray:
    w = np.asarray(img, float)
    return np.array([(np.indices(w.shape)[k] * w).sum() / w.sum() for k in (0, 1)])


# ---------------------------------------------------------------- geometry


def test_regrid_identity_and_quarter_turns_are_exact():
    x = np.random.default_rng(0).random((31, 31))
    assert np.allclose(regrid(x, 1.0, (31, 31), 1.0), x, atol=1e-6)
    assert np.allclose(regrid(x, 1.0, (31, 31), 1.0, rotation_deg=90), np.rot90(x), atol=1e-6)  # counter-clockwise
    assert np.allclose(regrid(x, 1.0, (31, 31), 1.0, rotation_deg=-90, order=3), np.rot90(x, -1), atol=1e-6)


def test_shift_moves_the_centroid_by_the_shift():
    pattern = disc_pattern()
    base = CameraModel(frame_shape=(128, 128), mrad_per_px=1.0, shot_noise=False)
    shifted = base.model_copy(update={"centre_px": (64 + 3.3, 64 - 5.7)})
    c0 = centroid(expected_electrons(pattern, 1.0, base))
    c1 = centroid(expected_electrons(pattern, 1.0, shifted))
    assert np.allclose(c0, (64, 64), atol=0.02)
    assert np.allclose(c1 - c0, (3.3, -5.7), atol=0.02)


def test_scale_changes_the_disc_radius_and_keeps_the_dose():
    pattern = disc_pattern(n=161, radius_px=48.0, sampling=0.125)       # disc of 6 mrad
    for mrad_per_px in (0.2, 0.3):
        cam = CameraModel(frame_shape=(256, 256), mrad_per_px=mrad_per_px, shot_noise=False, dose_e_per_pattern=1e6)
        e = expected_electrons(pattern, 0.125, cam)
        assert e.sum() == pytest.approx(1e6, rel=0.01)          # the frame holds the whole pattern
        disc_area_px = np.count_nonzero(e > 0.5 * e.max())
        assert np.sqrt(disc_area_px / np.pi) == pytest.approx(6.0 / mrad_per_px, rel=0.01)


def test_rotation_turns_the_pattern_counter_clockwise():
    pattern = np.zeros((41, 41), np.float32)
    pattern[20, 30] = 1.0                                         # a spot on the +column axis
    cam = CameraModel(frame_shape=(41, 41), mrad_per_px=1.0, rotation_deg=90, shot_noise=False)
    frame = expected_electrons(pattern, 1.0, cam)
    assert np.unravel_index(np.argmax(frame), frame.shape) == (10, 20)   # now straight up (row 0 on top)


# ---------------------------------------------------------------- noise, blur, background, clipping, bits, JPEG


def test_poisson_noise_has_mean_and_variance_of_the_dose():
    flat = np.ones((64, 64), np.float32)
    cam = CameraModel(frame_shape=(64, 64), mrad_per_px=1.0, dose_e_per_pattern=64 * 64 * 40.0)
    frame, truth = degrade(flat, cam, np.random.default_rng(1), sampling_mrad=1.0)
    assert truth["counts_per_electron"] == 1.0
    assert frame.mean() == pytest.approx(40.0, rel=0.01)
    assert frame.var() == pytest.approx(40.0, rel=0.05)
    assert np.array_equal(frame, np.rint(frame))                 # whole electrons
    counts = shot_noise(np.full(10000, 2.5), np.random.default_rng(2))
    assert counts.mean() == pytest.approx(2.5, rel=0.05) and counts.var() == pytest.approx(2.5, rel=0.1)


def test_blur_keeps_the_sum_and_lowers_the_peak():
    img = np.zeros((64, 64), np.float32)
    img[32, 32] = 100.0
    out = detector_blur(img, 2.0)
    assert out.sum() == pytest.approx(100.0, rel=1e-4)
    assert out.max() == pytest.approx(100 / (2 * np.pi * 4), rel=0.05)   # peak of a 2D Gaussian of sigma 2
    assert np.array_equal(detector_blur(img, 0.0), img)


def test_smooth_background_is_seeded_bounded_and_smooth():
    a = smooth_background((128, 128), 30.0, 64.0, np.random.default_rng(3))
    b = smooth_background((128, 128), 30.0, 64.0, np.random.default_rng(3))
    assert np.array_equal(a, b)
    assert a.min() == pytest.approx(0.0, abs=1e-4) and a.max() == pytest.approx(30.0, rel=1e-5)
    assert np.abs(np.diff(a, axis=0)).max() < 30.0 * 0.1           # no pixel-scale structure


def test_clip_and_quantization_levels():
    x = np.array([-3.0, 0.4, 0.6, 254.6, 300.0, 70000.0], np.float32)
    assert np.allclose(clip(x, 255.0), [0, 0.4, 0.6, 254.6, 255, 255]) and clip(x, None).max() == 70000
    q8 = quantize(x, 8)
    assert q8.dtype == np.uint8 and q8.tolist() == [0, 0, 1, 255, 255, 255]
    q16 = quantize(x, 16)
    assert q16.dtype == np.uint16 and q16.tolist() == [0, 0, 1, 255, 300, 65535]
    ramp = quantize(np.linspace(0, 255, 10000), 8)
    assert np.unique(ramp).size == 256
    with pytest.raises(InverscopeError, match="bit_depth"):
        quantize(x, 12)


def test_jpeg_changes_bytes_but_keeps_the_mean():
    frame, _ = degrade(disc_pattern(), CameraModel(frame_shape=(128, 128), mrad_per_px=0.5, peak_counts=200,
                                                   bit_depth=8, dose_e_per_pattern=1e6), np.random.default_rng(4),
                       sampling_mrad=1.0)
    jpg = jpeg_roundtrip(frame, 75)
    assert jpg.dtype == np.uint8 and jpg.shape == frame.shape
    assert not np.array_equal(jpg, frame)
    assert jpg.mean() == pytest.approx(frame.mean(), rel=0.01)
    assert np.abs(jpg.astype(float) - frame).mean() < 5.0
    with pytest.raises(InverscopeError, match="uint8"):
        jpeg_roundtrip(frame.astype(np.uint16), 75)


def test_degrade_records_truth_and_is_reproducible():
    cam = CameraModel(frame_shape=(128, 128), mrad_per_px=0.5, centre_px=(60.5, 70.25), rotation_deg=33.0,
                      peak_counts=300, bit_depth=8, jpeg_quality=80, blur_sigma_px=0.7, background_counts=5,
                      background_smooth_counts=10)
    a, truth = degrade(disc_pattern(), cam, np.random.default_rng(5), sampling_mrad=1.0)
    b, _ = degrade(disc_pattern(), cam, np.random.default_rng(5), sampling_mrad=1.0)
    c, _ = degrade(disc_pattern(), cam, np.random.default_rng(6), sampling_mrad=1.0)
    assert a.dtype == np.uint8 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert truth["centre_px"] == [60.5, 70.25] and truth["rotation_deg"] == 33.0 and truth["mrad_per_px"] == 0.5
    assert truth["saturation"] == 255.0 and 0.0 < truth["saturated_fraction"] < 0.2
    assert truth["bit_depth"] == 8 and truth["jpeg_quality"] == 80
    json.dumps(truth)


def test_clipping_below_the_integer_range_sets_the_saturation_level():
    cam = CameraModel(frame_shape=(96, 96), mrad_per_px=0.5, peak_counts=5000, bit_depth=16, saturation_counts=4095,
                      shot_noise=False)
    frame, truth = degrade(disc_pattern(), cam, np.random.default_rng(0), sampling_mrad=1.0)
    assert frame.dtype == np.uint16 and frame.max() == 4095 and truth["saturation"] == 4095.0
    assert truth["saturated_fraction"] == pytest.approx(np.mean(frame == 4095))


def test_camera_ranges_draw_within_their_ranges():
    ranges = CameraRanges(centre_shift_px=5, rotation_deg=(0, 90), mrad_per_px=(0.2, 0.3),
                          dose_e_per_pattern=(1e4, 1e6), blur_sigma_px=(0, 1))
    cams = [ranges.draw(np.random.default_rng(s)) for s in range(20)]
    assert cams[0] == ranges.draw(np.random.default_rng(0))
    for cam in cams:
        assert max(abs(cam.centre_px[0] - 256), abs(cam.centre_px[1] - 256)) <= 5
        assert 0 <= cam.rotation_deg <= 90 and 0.2 <= cam.mrad_per_px <= 0.3
        assert 1e4 <= cam.dose_e_per_pattern <= 1e6 and 0 <= cam.blur_sigma_px <= 1


@pytest.mark.parametrize("data, match", [
    ({"jpeg_quality": 75}, "needs bit_depth 8"),
    ({"mrad_per_px": 0}, "mrad_per_px"),
    ({"bit_depth": 12}, "bit_depth"),
    ({"frame_shape": [4, 512]}, "frame_shape"),
    ({"dose": 1e5}, "unknown key"),
])
def test_camera_config_errors_are_one_line(data, match):
    with pytest.raises(ConfigError, match=match) as info:
        validate(CameraModel, data, "camera")
    assert "\n" not in str(info.value)


def test_camera_ranges_reject_reversed_ranges():
    with pytest.raises(ConfigError, match="min <= max"):
        validate(CameraRanges, {"rotation_deg": [90, 0]}, "ranges")


def test_degrade_rejects_bad_patterns():
    cam = CameraModel(frame_shape=(32, 32))
    for bad in (np.ones(5), np.full((8, 8), np.nan), np.zeros((8, 8))):
        with pytest.raises(InverscopeError, match="pattern"):
            degrade(bad, cam, np.random.default_rng(0), sampling_mrad=1.0)
    with pytest.raises(InverscopeError, match="sampling_mrad"):
        degrade(np.ones((8, 8)), cam, np.random.default_rng(0), sampling_mrad=0.0)


# ---------------------------------------------------------------- reading frames back


def _frame(bit_depth: int = 8) -> np.ndarray:
    cam = CameraModel(frame_shape=(64, 80), mrad_per_px=0.5, peak_counts=300 if bit_depth == 8 else 70000,
                      bit_depth=bit_depth, dose_e_per_pattern=1e6)
    return degrade(disc_pattern(), cam, np.random.default_rng(7), sampling_mrad=1.0)[0]


def test_read_png_8_and_16_bit(tmp_path):
    for bits in (8, 16):
        frame = _frame(bits)
        Image.fromarray(frame).save(tmp_path / f"f{bits}.png")
        arr, info = read_pattern(tmp_path / f"f{bits}.png")
        assert arr.dtype == np.float32 and np.array_equal(arr, frame.astype(np.float32))
        assert info["bit_depth"] == bits and info["dtype"] == str(frame.dtype) and info["format"] == "png"
        assert info["saturation"] == 2.0**bits - 1 and info["saturation_source"] == "dtype maximum"
        assert info["saturated_fraction"] == pytest.approx(np.mean(frame == 2**bits - 1))


def test_read_tiff_finds_a_clip_level_below_the_dtype_maximum(tmp_path, monkeypatch):
    frame = np.minimum(_frame(16), 4095).astype(np.uint16)         # a 12-bit camera in a 16-bit file
    pytest.importorskip("tifffile").imwrite(tmp_path / "f.tif", frame)
    arr, info = read_pattern(tmp_path / "f.tif")
    assert np.array_equal(arr, frame) and info["bit_depth"] == 16
    assert info["saturation"] == 4095.0 and info["saturation_source"] == "repeated maximum"
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "tifffile" else real_import(name, *a, **k))
    arr2, _ = read_pattern(tmp_path / "f.tif")                       # the Pillow fallback reads it too
    assert np.array_equal(arr2, frame)


def test_read_float_tiff_jpeg_npy_and_rgb(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    smooth = np.random.default_rng(8).random((40, 50)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tiff", smooth)
    arr, info = read_pattern(tmp_path / "f.tiff")
    assert np.array_equal(arr, smooth) and info["bit_depth"] is None and info["saturation"] is None
    frame = _frame(8)
    Image.fromarray(frame).save(tmp_path / "f.jpg", quality=90)
    arr, info = read_pattern(tmp_path / "f.jpg")
    assert arr.shape == frame.shape and np.abs(arr - frame).mean() < 3 and info["format"] == "jpg"
    np.save(tmp_path / "f.npy", smooth)
    assert np.array_equal(read_pattern(tmp_path / "f.npy")[0], smooth)
    rgb = np.stack([frame, frame, frame], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    arr, info = read_pattern(tmp_path / "rgb.png")
    assert np.allclose(arr, frame, atol=1e-3) and "luminance" in info["notes"][0]


@pytest.mark.parametrize("name, content, match", [
    ("missing.png", None, "no such file"),
    ("f.bmp", b"BM", "unknown format '.bmp'; supported: " + ", ".join(FORMATS)),
    ("broken.png", b"not a png at all", "cannot be read as pillow"),
    ("cube.npy", np.zeros((2, 8, 8)), "expected one 2D pattern"),
    ("empty.npy", np.zeros((0, 8)), "empty image"),
    ("flat.npy", np.full((8, 8), 3.0), "constant image"),
    ("nan.npy", np.array([[1.0, np.nan], [2.0, 3.0]]), "non-finite"),
])
def test_read_errors_are_one_line(tmp_path, name, content, match):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content)
    with pytest.raises(PatternReadError, match=match.replace("(", r"\(").replace(".", r"\.")) as info:
        read_pattern(path)
    assert "\n" not in str(info.value)
