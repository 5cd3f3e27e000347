"""Microscope-like domain shifts and gap scores (datasets.shifts)."""

from __future__ import annotations

import numpy as np
import pytest

from inverscope.core.errors import ConfigError, InverscopeError
from inverscope.datasets.shifts import (SHIFT_GRID, ShiftSpec, apply_shift, descan_at, gap_score, iter_shifted,
                                        rank_agreement)


def centroid(img: np.ndarray) -> np.ndarray:
    w = np.asarray(img, float)
    return np.array([(np.indices(w.shape)[k] * w).sum() / w.sum() for k in (0, 1)])


def blob(n: int = 41, centre=None, sigma: float = 2.5) -> np.ndarray:
    c = (n // 2, n // 2) if centre is None else centre
    rr, cc = np.indices((n, n))
    return np.exp(-((rr - c[0]) ** 2 + (cc - c[1]) ** 2) / (2 * sigma**2))


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("order", [1, 3])
def test_integer_descan_moves_a_delta_spot_exactly(order):
    x = np.zeros((1, 33, 33))
    x[0, 10, 20] = 1.0
    y = apply_shift(x, ShiftSpec(descan_px=(3, -5)), order=order)
    assert np.unravel_index(np.argmax(y[0]), y[0].shape) == (13, 15)   # +row = down, -col = left
    assert y[0, 13, 15] == pytest.approx(1.0, abs=1e-9)
    assert np.abs(y).sum() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("order", [1, 3])
def test_subpixel_descan_moves_the_centroid_and_keeps_the_intensity(order):
    x = np.stack([blob(), blob(centre=(18.3, 22.6), sigma=1.2)])
    shift = (0.37, -1.71)
    y = apply_shift(x, {"descan_px": shift}, order=order)
    for a, b in zip(x, y):
        assert np.allclose(centroid(b) - centroid(a), shift, atol=0.02)
        assert b.sum() == pytest.approx(a.sum(), rel=1e-3)


def test_rotation_by_90_degrees_is_rot90_counter_clockwise():
    x = np.random.default_rng(1).random((1, 31, 31))
    x[:, :3] = x[:, -3:] = x[:, :, :3] = x[:, :, -3:] = 0   # away from the border
    for order in (1, 3):
        assert np.allclose(apply_shift(x, ShiftSpec(detector_rotation_deg=90), order=order)[0], np.rot90(x[0]),
                           atol=1e-6)
        assert np.allclose(apply_shift(x, ShiftSpec(detector_rotation_deg=-90), order=order)[0],
                           np.rot90(x[0], -1), atol=1e-6)
    # a small turn keeps the intensity and turns an off-centre spot about (n // 2, n // 2)
    s = blob(n=31, centre=(15, 25), sigma=1.5)[None]             # 10 px right of the centre (15, 15)
    y = apply_shift(s, ShiftSpec(detector_rotation_deg=30))[0]
    assert y.sum() == pytest.approx(s.sum(), rel=1e-3)
    assert np.allclose(centroid(y), (15 - 10 * np.sin(np.pi / 6), 15 + 10 * np.cos(np.pi / 6)), atol=0.02)


def test_descan_ramp_is_recovered_by_a_plane_fit():
    rows, cols = 5, 7
    x = np.broadcast_to(blob(n=33, sigma=2.0), (rows, cols, 33, 33)).copy()
    spec = ShiftSpec(descan_px=(0.5, -0.25), descan_ramp_px=((0.3, -0.1), (0.05, 0.2)))
    y = apply_shift(x, spec)
    c0 = centroid(x[0, 0])
    shifts = np.array([[centroid(y[i, j]) - c0 for j in range(cols)] for i in range(rows)])
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    a = np.column_stack([np.ones(rows * cols), ii.ravel() - (rows - 1) / 2, jj.ravel() - (cols - 1) / 2])
    coef, *_ = np.linalg.lstsq(a, shifts.reshape(-1, 2), rcond=None)
    assert np.allclose(coef[0], spec.descan_px, atol=0.01)          # the mean shift
    assert np.allclose(coef[1], spec.descan_ramp_px[0], atol=0.01)  # per scan-row step
    assert np.allclose(coef[2], spec.descan_ramp_px[1], atol=0.01)  # per scan-column step
    # the same with flat patterns and scan_shape, whatever the chunk size
    flat = apply_shift(x.reshape(-1, 33, 33), spec, scan_shape=(rows, cols), chunk_size=4)
    assert np.allclose(flat.reshape(y.shape), y)
    assert descan_at(spec, (rows, cols), 0) == pytest.approx((0.5 - 2 * 0.3 - 3 * 0.05, -0.25 + 2 * 0.1 - 3 * 0.2))


# ---------------------------------------------------------------- dose, blur, background


def test_poisson_dose_keeps_the_mean_and_has_the_counting_variance():
    n, k = 40, 64
    x = np.full((n, k, k), 2.0)
    dose = 1e5                                   # electrons per pattern: 1e5 / 4096 ~ 24 per pixel
    spec = ShiftSpec(dose_e_per_pattern=dose, seed=7)
    y = apply_shift(x, spec, chunk_size=16)
    scale = dose / x[0].sum()
    assert y.mean() == pytest.approx(2.0, rel=2e-3)
    assert y.var() == pytest.approx(2.0 / scale, rel=0.03)
    counts = y * scale
    assert np.allclose(counts, np.round(counts), atol=1e-6)          # integer counts scaled back
    assert np.array_equal(apply_shift(x, spec, chunk_size=7), y)     # seeded, chunk-independent
    assert not np.array_equal(apply_shift(x, spec.model_copy(update={"seed": 8})), y)


def test_blur_and_background_keep_or_add_the_stated_intensity():
    x = blob()[None]
    y = apply_shift(x, ShiftSpec(blur_sigma_px=1.0))
    assert y.sum() == pytest.approx(x.sum(), rel=1e-6) and y.max() < x.max()
    z = apply_shift(x, ShiftSpec(background_fraction=0.05))
    assert np.allclose(z - x, 0.05 * x.sum() / x[0].size)
    assert np.array_equal(apply_shift(x.astype(np.float32), ShiftSpec()), x.astype(np.float32))


def test_shift_grid_is_named_specs_and_runs():
    assert {"descan_0.5px", "descan_8px", "rotation_5deg", "dose_1e3", "blur_1px"} <= set(SHIFT_GRID)
    x = np.broadcast_to(blob(n=24), (2, 3, 24, 24)).copy()
    for name, spec in SHIFT_GRID.items():
        assert isinstance(spec, ShiftSpec)
        y = apply_shift(x, spec)
        assert y.shape == x.shape and np.all(np.isfinite(y)), name
    assert np.hypot(*SHIFT_GRID["descan_4px"].descan_px) == pytest.approx(4.0)


def test_iter_shifted_yields_bounded_chunks():
    x = np.random.default_rng(0).random((10, 8, 8))
    parts = list(iter_shifted(x, ShiftSpec(descan_px=(1, 0)), chunk_size=3))
    assert [p[1].shape[0] for p in parts] == [3, 3, 3, 1]
    assert np.allclose(np.concatenate([p[1] for p in parts]), apply_shift(x, ShiftSpec(descan_px=(1, 0))))


# ---------------------------------------------------------------- bad inputs


def _one_line(err: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(err.value) and str(err.value)


def test_bad_inputs_raise_one_line_errors():
    x = np.ones((2, 8, 8))
    with pytest.raises(ConfigError) as e:
        apply_shift(x, {"dose_e_per_pattern": -1e3})
    _one_line(e)
    bad = x.copy()
    bad[1, 3, 3] = np.nan
    with pytest.raises(InverscopeError, match="pattern 1") as e:
        apply_shift(bad, ShiftSpec())
    _one_line(e)
    for kwargs in ({"scan_shape": (3, 1)}, {"out": np.empty((2, 8, 9))}, {"out": np.empty((2, 8, 16))[:, :, ::2]}):
        with pytest.raises(InverscopeError) as e:
            apply_shift(x, ShiftSpec(), **kwargs)
        _one_line(e)
    with pytest.raises(InverscopeError, match="scan_shape"):
        apply_shift(x, ShiftSpec(descan_ramp_px=((0.1, 0), (0, 0))))        # a ramp needs the scan
    with pytest.raises(InverscopeError, match="scan_shape"):
        apply_shift(np.ones((2, 2, 8, 8)), ShiftSpec(), scan_shape=(4, 1))
    with pytest.raises(InverscopeError, match="shape"):
        apply_shift(np.ones((8, 8)), ShiftSpec())
    with pytest.raises(InverscopeError, match="positive sum"):
        apply_shift(np.zeros((1, 8, 8)), ShiftSpec(dose_e_per_pattern=10))
    with pytest.raises(InverscopeError) as e:
        gap_score(np.ones((10, 3)), np.ones((10, 4)))
    _one_line(e)
    with pytest.raises(InverscopeError):
        gap_score(np.full((10, 3), np.nan), np.ones((10, 3)))
    with pytest.raises(InverscopeError, match="method"):
        gap_score(np.ones((10, 3)), np.ones((10, 3)), method="wasserstein")


# ---------------------------------------------------------------- gap scores


@pytest.mark.parametrize("method", ["mmd", "frechet", "knn"])
def test_gap_score_is_zero_for_one_distribution_and_grows_with_a_mean_shift(method):
    rng = np.random.default_rng(3)
    d, n = 4, 400
    train = rng.normal(size=(n, d))
    same = gap_score(train, rng.normal(size=(n, d)), method)
    scores = [gap_score(train, rng.normal(size=(n, d)) + m * np.eye(d)[0], method)
              for m in (1.0, 2.0, 3.0, 4.0)]
    assert all(b > a for a, b in zip(scores, scores[1:])), scores
    assert abs(same) < min(0.5 * scores[0], 0.05 * scores[-1]), (same, scores)
    assert gap_score(train, train + 1.0, method, max_samples=100, seed=1) == gap_score(
        train, train + 1.0, method, max_samples=100, seed=1)


def test_frechet_matches_the_closed_form_for_a_mean_shift():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(5000, 2))
    assert gap_score(train, train + [3.0, 4.0], "frechet", max_samples=5000) == pytest.approx(25.0, rel=1e-6)


def test_rank_agreement_same_and_reversed_order():
    gaps = [0.1, 0.5, 0.7, 2.0]
    up = rank_agreement(gaps, [1.0, 2.0, 5.0, 9.0])
    down = rank_agreement(gaps, [9.0, 5.0, 2.0, 1.0])
    assert up["spearman"] == pytest.approx(1.0) and up["kendall"] == pytest.approx(1.0) and up["n"] == 4
    assert down["spearman"] == pytest.approx(-1.0) and down["kendall"] == pytest.approx(-1.0)
    by_name = rank_agreement({"a": 0.1, "b": 0.3, "c": 0.2}, {"c": 2.0, "a": 1.0, "b": 3.0})
    assert by_name["spearman"] == pytest.approx(1.0)
    for g, a in (([1, 2], [1, 2]), ([1, 1, 1], [1, 2, 3]), ([1, 2, 3], [4, 4, 4]), ([1, 2, 3], [1, 2]),
                 ([1, 2, np.nan], [1, 2, 3]), ({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "d": 3})):
        with pytest.raises(InverscopeError) as e:
            rank_agreement(g, a)
        _one_line(e)
