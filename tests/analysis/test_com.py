"""Centre of mass, descan, detector rotation, integrated DPC, sectors and Friedel features on synthetic data
whose answers are known in closed form."""

import numpy as np
import pytest
from scipy.special import erfc

from inverscope.analysis.com import (CoMResult, annular_mask, centre_of_mass, com_angle, com_relative_to_scan_mean,
                                     com_sectors, descan_correct, dpc_potential, find_detector_rotation,
                                     friedel_baseline, friedel_feature_names, friedel_moments, rotate_com)
from inverscope.core.errors import InverscopeError

N = 64
C0 = (N - 1) / 2  # geometric centre


def soft_disc(cy, cx, radius=10.0, edge=1.5, n=N):
    """A bright-field disc with a Gaussian-blurred edge (erfc profile) centred at (cy, cx) [px]."""
    y, x = np.mgrid[:n, :n]
    return 0.5 * erfc((np.hypot(y - cy, x - cx) - radius) / (np.sqrt(2) * edge))


def gaussian(cy, cx, sigma=3.0, n=N):
    y, x = np.mgrid[:n, :n]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma ** 2))


def atoms_potential(shape=(48, 56), n_atoms=25, seed=0):
    """A random smooth potential (positive Gaussian bumps, 'atoms') and its analytic gradient (gy, gx)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:shape[0], :shape[1]].astype(float)
    phi, gy, gx = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for _ in range(n_atoms):
        a, s = rng.uniform(0.5, 1.5), rng.uniform(2, 5)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        g = a * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s ** 2))
        phi += g
        gy -= (y - cy) / s ** 2 * g
        gx -= (x - cx) / s ** 2 * g
    return phi, np.stack([gy, gx], axis=-1)


# ---------------------------------------------------------------- centre of mass


@pytest.mark.parametrize("shape_fn", [gaussian, soft_disc])
def test_plain_com_of_a_shifted_pattern_is_its_shift(shape_fn):
    shifts = np.array([[1.3, -2.7], [0.37, 0.81], [-4.2, 3.3]])
    data = np.stack([shape_fn(C0 + dy, C0 + dx) for dy, dx in shifts])
    res = centre_of_mass(data, mrad_per_px=(0.5, 0.25))
    assert isinstance(res, CoMResult) and res.px.shape == (3, 2)
    np.testing.assert_allclose(res.px, shifts, atol=1e-3)
    np.testing.assert_allclose(res.mrad, shifts * [0.5, 0.25], atol=1e-3)
    np.testing.assert_allclose(res.intensity, data.sum(axis=(1, 2)))
    # centre_px moves the origin; (ky, kx) = (rows, cols), positive down and right
    res2 = centre_of_mass(data, centre_px=(N // 2, N // 2))
    np.testing.assert_allclose(res2.px, shifts + C0 - N // 2, atol=1e-3)


def test_threshold_removes_a_uniform_background_that_biases_the_plain_com():
    shifts = np.array([[1.3, -2.7], [0.37, 0.81], [-4.2, 3.3]])
    discs = np.stack([soft_disc(C0 + dy, C0 + dx) for dy, dx in shifts])
    b = 0.01  # background per pixel: 1 % of the disc's plateau
    data = discs + b
    plain = centre_of_mass(data).px
    # a uniform background has its CoM at the geometric centre: it pulls the CoM in by S_disc / (S_disc + b N^2)
    s = discs.sum(axis=(1, 2))[:, None]
    np.testing.assert_allclose(plain, shifts * s / (s + b * N * N), atol=1e-6)
    assert np.abs(plain - shifts).max() > 0.3
    thresholded = centre_of_mass(data, threshold=0.1).px
    np.testing.assert_allclose(thresholded, shifts, atol=0.02)
    # threshold 0 on non-negative data is the plain CoM
    np.testing.assert_allclose(centre_of_mass(data, threshold=0.0).px, plain, atol=1e-12)


def test_mask_restricts_the_com_to_the_detector_region():
    disc = soft_disc(C0 + 1.0, C0 - 2.0, radius=8.0)
    far = np.zeros((N, N))
    far[2, 60] = 50.0  # a bright spot outside the bright-field disc
    data = (disc + far)[None]
    bf = annular_mask((N, N), 0, 20)
    assert not bf[2, 60]
    np.testing.assert_allclose(centre_of_mass(data, mask=bf).px[0], [1.0, -2.0], atol=1e-3)
    assert np.abs(centre_of_mass(data).px[0] - [1.0, -2.0]).max() > 1.0


def test_chunked_zarr_and_dask_equal_the_in_memory_result():
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(3)
    sy, sx, k = 5, 7, 24
    shifts = rng.uniform(-2, 2, (sy, sx, 2))
    y, x = np.mgrid[:k, :k]
    data = np.exp(-((y - 11.5 - shifts[..., 0, None, None]) ** 2 + (x - 11.5 - shifts[..., 1, None, None]) ** 2)
                  / 8.0) + rng.uniform(0, 0.05, (sy, sx, k, k))
    data = data.astype(np.float32)
    z = zarr.create_array(store=zarr.storage.MemoryStore(), shape=data.shape, chunks=(2, 3, k, k), dtype="float32")
    z[...] = data
    ref = centre_of_mass(data, threshold=0.2, chunk=10_000)
    for source, chunk in [(z, 4), (z, 10), (z, 100), (da.from_array(data, chunks=(3, 2, k, k)), 3), (data, 1)]:
        got = centre_of_mass(source, threshold=0.2, chunk=chunk)
        np.testing.assert_allclose(got.px, ref.px, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.intensity, ref.intensity, rtol=1e-12)
    np.testing.assert_allclose(friedel_moments(z, chunk=4), friedel_moments(data), atol=1e-12)
    # a FourD (as open_4dstem returns) brings its calibration
    from inverscope.datasets.io.fourd import FourD
    four = centre_of_mass(FourD(da.from_zarr(z), (0.5, 0.5), "memory"), threshold=0.2, chunk=6)
    np.testing.assert_allclose(four.mrad, 0.5 * ref.px, atol=1e-12)


# ---------------------------------------------------------------- descan, rotation, DPC


def test_linear_descan_ramp_is_removed():
    rng = np.random.default_rng(1)
    sy, sx = 20, 30
    _, field = atoms_potential((sy, sx), seed=1)
    field = field - field.reshape(-1, 2).mean(axis=0)
    # the true field has no linear trend over the scan, so only the ramp is fitted away
    yy, xx = np.meshgrid(np.arange(sy), np.arange(sx), indexing="ij")
    design = np.stack([np.ones_like(yy), yy, xx], -1).reshape(-1, 3).astype(float)
    coef, *_ = np.linalg.lstsq(design, field.reshape(-1, 2), rcond=None)
    field = field - (design @ coef).reshape(sy, sx, 2)
    a, b, c = rng.normal(size=(3, 2))
    measured = field + a + b * yy[..., None] + c * xx[..., None]
    np.testing.assert_allclose(descan_correct(measured, method="plane"), field, atol=1e-6)
    mean_only = descan_correct(field + a, method="mean")
    np.testing.assert_allclose(mean_only, field, atol=1e-12)
    np.testing.assert_allclose(com_relative_to_scan_mean(field + a), field, atol=1e-12)
    # fitted on a subset (e.g. vacuum): the same plane
    where = np.zeros((sy, sx), bool)
    where[::2, ::3] = True
    ramp_only = a + b * yy[..., None] + c * xx[..., None]
    np.testing.assert_allclose(descan_correct(ramp_only, where=where), 0, atol=1e-9)


def test_rotate_com_convention():
    right = np.array([0.0, 1.0])  # (ky, kx)
    np.testing.assert_allclose(rotate_com(right[None], 90)[0], [-1.0, 0.0], atol=1e-12)  # up: towards row 0
    np.testing.assert_allclose(rotate_com(rotate_com(right[None], 33), -33)[0], right, atol=1e-12)
    assert com_angle(np.array([-1.0, 0.0])) == pytest.approx(90.0)


@pytest.mark.parametrize("angle", [37.0, -120.0, 170.0, 3.0])
def test_detector_rotation_from_the_curl_free_criterion(angle):
    _, field = atoms_potential()
    measured = rotate_com(field, -angle)  # the detector turned by -angle relative to the scan
    fit = find_detector_rotation(measured)
    err = (fit.angle_deg - angle + 180) % 360 - 180
    assert abs(err) < 0.5, fit
    assert fit.curl_fraction < 1e-2 and fit.divergence_skewness < -1  # atoms are sinks: the sign is determined
    np.testing.assert_allclose(fit.apply(measured), rotate_com(measured, fit.angle_deg))
    # a mirrored detector is found with allow_flip
    flipped = find_detector_rotation(measured * [1.0, -1.0], allow_flip=True)
    assert flipped.flipped and flipped.curl_fraction < 1e-2
    assert np.abs(flipped.apply(measured * [1.0, -1.0]) - field).max() < 0.01 * np.abs(field).max()


def test_detector_rotation_of_a_smooth_random_field_modulo_180():
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(4)
    phi = gaussian_filter(rng.normal(size=(40, 40)), 4)
    field = np.stack(np.gradient(phi), axis=-1)
    fit = find_detector_rotation(rotate_com(field, -50.0))
    assert abs((fit.angle_deg - 50.0 + 90) % 180 - 90) < 0.5
    noise = find_detector_rotation(rng.normal(size=(40, 40, 2)))
    assert noise.curl_fraction > 0.3  # no field: the criterion says so


def test_dpc_potential_recovers_a_smooth_potential_up_to_a_constant():
    phi, field = atoms_potential()
    truth = phi - phi.mean()
    got = dpc_potential(field)
    rel = np.linalg.norm(got - truth) / np.linalg.norm(truth)
    assert rel < 0.02, rel  # 0.8 % with mirror padding (the field is not periodic)
    periodic = dpc_potential(field, pad="none")
    assert np.linalg.norm(periodic - truth) / np.linalg.norm(truth) > 5 * rel
    # scan step scales the integral; the phase needs mrad, Angstrom and the wavelength
    np.testing.assert_allclose(dpc_potential(field, scan_step=(0.5, 0.5)), 0.5 * got, atol=1e-12)
    np.testing.assert_allclose(dpc_potential(field, wavelength_angstrom=0.025),
                               got * 2 * np.pi / 0.025 * 1e-3, atol=1e-9)
    # highpass damps the long wavelengths only
    assert np.linalg.norm(dpc_potential(field, highpass=0.05) - truth) > np.linalg.norm(got - truth)


# ---------------------------------------------------------------- sectors


def test_com_sectors_at_multiples_of_45_degrees():
    rng = np.random.default_rng(2)
    centres = np.arange(8) * 45.0
    for jitter in (-9.9, -5.0, 0.0, 5.0, 9.9):
        phi = np.radians(centres + jitter)
        r = rng.uniform(0.1, 3.0, 8)
        com = np.stack([-r * np.sin(phi), r * np.cos(phi)], axis=-1)  # ky = -r sin(phi): counter-clockwise as displayed
        np.testing.assert_array_equal(com_sectors(com), np.arange(8))
    np.testing.assert_array_equal(com_sectors(np.array([[0.0, 1.0], [-1.0, 0.0]]), 4, offset_deg=45.0), [0, 1])
    np.testing.assert_array_equal(com_sectors(np.array([[0.0, 0.0], [np.nan, 1.0], [0.0, 0.2]]), min_magnitude=0.5),
                                  [-1, -1, -1])


# ---------------------------------------------------------------- Friedel


def _asymmetric_patterns(rng, n, strength, k=32):
    """Centrosymmetric discs with an odd perturbation of sign `strength` along a random-ish direction."""
    c = (k - 1) / 2
    y, x = np.mgrid[:k, :k] - c
    base = soft_disc(c, c, radius=8.0, n=k)
    out = []
    for _ in range(n):
        tilt = strength * (0.04 * x + 0.01 * rng.normal() * y) / 8.0
        out.append(np.clip(base * (1 + tilt) + 0.02 * np.exp(-(x ** 2 + y ** 2) / 200), 0, None))
    return np.stack(out)


def test_friedel_moments_vanish_for_centrosymmetric_patterns_and_flip_sign():
    rng = np.random.default_rng(5)
    sym = rng.uniform(0, 1, (6, 30, 30))
    sym = sym + sym[:, ::-1, ::-1]
    f_sym = friedel_moments(sym, n_moments=3, bands=3)
    assert f_sym.shape == (6, 18) and len(friedel_feature_names(3, 3)) == 18
    assert np.abs(f_sym).max() < 1e-12
    asym = rng.uniform(0, 1, (6, 30, 30))
    f = friedel_moments(asym)
    assert np.abs(f).max() > 1e-3
    np.testing.assert_allclose(friedel_moments(asym[:, ::-1, ::-1]), -f, atol=1e-12)
    # an off-centre point reflection (half pixels), and a mask made centrosymmetric
    centre = (15.0, 14.0)
    sym_c = np.zeros((1, 30, 30))
    sym_c[0, 1:, :29] = asym[0, 1:, :29] + asym[0, 1:, :29][::-1, ::-1]  # symmetric about (15, 14)
    mask = np.ones((30, 30), bool)
    mask[3:6, 20:24] = False
    assert np.abs(friedel_moments(sym_c, centre_px=centre, mask=mask)).max() < 1e-12
    # the dipole (m = 1) follows the CoM: brighter on the right -> positive band m1 cos
    right = np.ones((1, 30, 30))
    right[0, :, 15:] = 2.0
    names = friedel_feature_names()
    fr = friedel_moments(right)[0]
    assert fr[names.index("band2_m1_cos")] > 0 and abs(fr[names.index("band2_m1_sin")]) < 1e-12


def test_logistic_regression_on_friedel_moments_separates_two_asymmetry_classes():
    rng = np.random.default_rng(6)
    n = 60
    x = np.concatenate([_asymmetric_patterns(rng, n, +1.0), _asymmetric_patterns(rng, n, -1.0)])
    x = rng.poisson(x * 400) / 400.0  # shot noise
    y = np.repeat([0, 1], n)
    feats = friedel_moments(x, n_moments=2, bands=2)
    order = rng.permutation(2 * n)
    train, test = order[:80], order[80:]
    model = friedel_baseline(feats[train], y[train])
    assert model.score(feats[test], y[test]) > 0.95
    assert model.predict_proba(feats[test]).shape == (40, 2)


# ---------------------------------------------------------------- bad input


def test_bad_inputs_raise_one_line_errors():
    good = gaussian(C0, C0)[None]
    nan = np.stack([good[0], good[0]])
    nan[1, 3, 4] = np.nan
    cases = [
        lambda: centre_of_mass(good[0]),  # 2D: one pattern without its stack axis
        lambda: centre_of_mass(np.ones((5, 2, 64))),  # 3D, detector too small
        lambda: centre_of_mass(nan),
        lambda: centre_of_mass(good, threshold=1.0),
        lambda: centre_of_mass(good, threshold=-0.1),
        lambda: centre_of_mass(np.stack([good[0], np.zeros((N, N))])),  # zero-sum pattern
        lambda: centre_of_mass(good, mask=np.ones((3, 3))),
        lambda: centre_of_mass(good, chunk=0),
        lambda: centre_of_mass(good, mrad_per_px=-1.0),
        lambda: descan_correct(np.zeros((10, 10, 3))),  # 3D com of the wrong shape
        lambda: descan_correct(np.zeros((10, 2)), method="plane"),
        lambda: descan_correct(np.zeros((10, 10, 2)), method="poly"),
        lambda: find_detector_rotation(np.zeros((10, 10, 2))),  # no field
        lambda: find_detector_rotation(np.zeros((10, 2))),
        lambda: dpc_potential(np.full((8, 8, 2), np.nan)),
        lambda: com_sectors(np.zeros((4, 2)), n_sectors=1),
        lambda: friedel_moments(good, centre_px=(10.3, 10.0)),
        lambda: friedel_moments(np.zeros((2, 16, 16))),
        lambda: friedel_baseline(np.zeros((4, 3)), np.zeros(4)),
        lambda: friedel_baseline(np.zeros((4, 3)), np.arange(5)),
    ]
    for case in cases:
        with pytest.raises(InverscopeError) as info:
            case()
        assert "\n" not in str(info.value) and str(info.value)
    with pytest.raises(InverscopeError, match=r"\(1,\)"):  # names the bad pattern
        centre_of_mass(nan)
    with pytest.raises(InverscopeError, match=r"\(1,\)"):
        centre_of_mass(np.stack([good[0], np.zeros((N, N))]))
