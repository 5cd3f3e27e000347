"""PACBED registration on simulated SrTiO3 [001] frames with known camera geometry.

The fixture ``tests/data/pacbed/srtio3_001_pacbed.npy`` holds four position-averaged CBED
patterns of SrTiO3 [001] (200 kV, 13.6 mrad, about 100/200/300/400 Å) made by inverscope's
multislice engine with :func:`make_fixture` (about 3 minutes on 2 cores); the JSON beside it
records the calibration. Frames are made from it with :mod:`inverscope.datasets.degrade` with
seeded camera parameters and the registration must recover the geometry the issue asks for.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inverscope.analysis.registration import (RegistrationError, disc_candidates, find_mirror_axis, register_pacbed,
                                              resample_to_crystal)
from inverscope.datasets.degrade import CameraModel, CameraRanges, degrade

DATA = Path(__file__).resolve().parents[1] / "data" / "pacbed"
FIXTURE = DATA / "srtio3_001_pacbed.npy"
SEMIANGLE = 13.6
OUT = (128, 128)


def make_fixture(path: Path = FIXTURE) -> None:
    """Simulate the fixture: SrTiO3 [001], 12 x 12 cells, 6 x 6 probe positions over one cell, 6 phonon configs."""
    from inverscope.core.grid import Grid
    from inverscope.physics.multislice.detectors import PixelatedDetector
    from inverscope.physics.multislice.phonons import FrozenPhonons
    from inverscope.physics.multislice.potentials import PotentialBuilder
    from inverscope.physics.multislice.probe import Probe
    from inverscope.physics.multislice.scan import grid_scan
    from inverscope.physics.multislice.simulate import MultisliceSimulation
    from inverscope.physics.structures.perovskite import perovskite_slab

    atoms = perovskite_slab("SrTiO3", 12, 410.0)
    grid = Grid.from_sampling(np.diag(atoms.cell)[:2], 0.12)
    sim = MultisliceSimulation(
        PotentialBuilder(atoms, grid, slice_thickness_angstrom=1.9525),
        Probe(200e3, SEMIANGLE, soft_edge=False),  # a hard aperture: the disc edge sits at alpha on any grid
        grid_scan((0, 0), (3.905, 3.905), (6, 6)),
        PixelatedDetector(max_angle_mrad=3 * SEMIANGLE),
        thicknesses_angstrom=[100.0, 200.0, 300.0, 400.0],
        phonons=FrozenPhonons({"Sr": 0.08, "Ti": 0.065, "O": 0.085}, num_configs=6, seed=0))
    result = sim.run()
    patterns = result.array.mean(axis=(0, 1)).astype(np.float32)
    np.save(path, patterns)
    meta = {"sampling_mrad": float(result.sampling_mrad[0]), "semiangle_mrad": SEMIANGLE, "energy_ev": 200e3,
            "thicknesses_angstrom": [float(t) for t in result.thicknesses_angstrom],
            "centre": "pixel (n // 2, n // 2) is the zero angle",
            "made_by": "tests/analysis/test_registration.py::make_fixture"}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))


@pytest.fixture(scope="module")
def sims():
    """(patterns (4, n, n), sampling [mrad], references on the output grid (4, *OUT))."""
    patterns = np.load(FIXTURE)
    sampling = json.loads(FIXTURE.with_suffix(".json").read_text())["sampling_mrad"]
    refs = np.stack([resample_to_crystal(p, sampling, SEMIANGLE, out_shape=OUT)[0] for p in patterns])
    return patterns, sampling, refs


#: The issue's camera: shifts of several px, any rotation, camera length +-20 %, clipped 8-bit JPEG q=75 with
#: Poisson noise, blur and a smooth background.
HARD_CAMERA = CameraRanges(base=CameraModel(peak_counts=300, bit_depth=8, jpeg_quality=75),
                           centre_shift_px=8, rotation_deg=(0, 90), mrad_per_px=(0.25 / 1.2, 0.25 * 1.2),
                           dose_e_per_pattern=(1e5, 1e7), blur_sigma_px=(0, 1.5), background_counts=(0, 20),
                           background_smooth_counts=(0, 30))


def _mod(angle: float, period: float) -> float:
    """Signed distance of `angle` from 0 modulo `period` [deg]."""
    return (angle + period / 2) % period - period / 2


def _corr(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
    return float(np.corrcoef(a[valid], b[valid])[0, 1])


@pytest.mark.parametrize("seed", range(12))
def test_registration_recovers_the_camera_geometry(sims, seed):
    patterns, sampling, refs = sims
    t = seed % 4
    rng = np.random.default_rng(100 + seed)
    frame, truth = degrade(patterns[t], HARD_CAMERA.draw(rng), rng, sampling_mrad=sampling)
    others = np.delete(refs, t, axis=0)            # the orientation is chosen from the *other* thicknesses
    reg = register_pacbed(frame, SEMIANGLE, reference=others, out_shape=OUT)
    assert np.hypot(*np.subtract(reg.centre_px, truth["centre_px"])) < 1.0
    assert abs(reg.mrad_per_px / truth["mrad_per_px"] - 1) < 0.01
    assert abs(_mod(reg.rotation_deg - truth["rotation_deg"], 90)) < 1.0
    assert 0 <= reg.rotation_deg < 90 and reg.found["rotation_period_deg"] == 90
    # clipped pixels keep their rank, so all in-frame pixels count; JPEG + Poisson at 1e5 e cost the rest
    assert _corr(reg.pattern, refs[t], ~reg.outside) > 0.95
    assert reg.found["saturation"] == 255.0 and reg.saturated.any()
    json.dumps(reg.as_dict())


def test_without_a_reference_the_rotation_is_known_modulo_45_degrees(sims):
    patterns, sampling, refs = sims
    cam = CameraModel(mrad_per_px=0.23, centre_px=(251.3, 262.8), rotation_deg=71.3, dose_e_per_pattern=1e6,
                      peak_counts=240, bit_depth=8, jpeg_quality=75)
    frame, truth = degrade(patterns[1], cam, np.random.default_rng(0), sampling_mrad=sampling)
    reg = register_pacbed(frame, SEMIANGLE, out_shape=OUT)
    assert 0 <= reg.rotation_deg < 45 and abs(_mod(reg.rotation_deg - 71.3, 45)) < 0.5
    assert reg.found["reference_correlation"] is None and reg.found["rotation_period_deg"] == 45
    assert any("modulo 45 deg" in w for w in reg.warnings)
    assert reg.symmetry_score > 0.5


def test_noise_free_frame_registers_onto_the_simulation(sims):
    patterns, sampling, refs = sims
    cam = CameraModel(mrad_per_px=0.27, centre_px=(255.6, 257.2), rotation_deg=-20.0, shot_noise=False)
    frame, _ = degrade(patterns[0], cam, np.random.default_rng(0), sampling_mrad=sampling)
    reg = register_pacbed(frame, SEMIANGLE, reference=refs[0], out_shape=OUT)
    assert np.hypot(reg.centre_px[0] - 255.6, reg.centre_px[1] - 257.2) < 0.1
    assert abs(_mod(reg.rotation_deg + 20.0, 90)) < 0.3 and reg.symmetry_score > 0.9
    assert _corr(reg.pattern, refs[0], ~reg.outside) > 0.995
    assert reg.out_mrad_per_px == pytest.approx(2 * 2.0 * SEMIANGLE / OUT[0])
    assert not reg.saturated.any() and not reg.outside.any() and reg.warnings == []


def test_mirror_axis_of_an_analytic_4mm_pattern():
    rr, cc = np.indices((201, 201)) - 100.0
    r, phi = np.hypot(rr, cc), np.arctan2(-rr, cc)                 # phi counter-clockwise as displayed
    for axis in (0.0, 12.5, 37.0):
        a = np.radians(axis)
        img = np.exp(-r / 40) * (2 + np.cos(4 * (phi - a)) + 0.5 * np.cos(8 * (phi - a)))
        theta, score = find_mirror_axis(img, (100.0, 100.0), 5, 90)
        assert abs(_mod(theta - axis, 45)) < 0.05 and score == pytest.approx(1.0, abs=1e-3)
    noise = np.random.default_rng(0).random((201, 201))
    assert find_mirror_axis(noise, (100.0, 100.0), 5, 90)[1] < 0.3   # about 1/8 for no symmetry


def test_given_calibration_and_rotation_are_used(sims):
    patterns, sampling, refs = sims
    cam = CameraModel(mrad_per_px=0.25, rotation_deg=30.0, shot_noise=False)
    frame, _ = degrade(patterns[2], cam, np.random.default_rng(0), sampling_mrad=sampling)
    reg = register_pacbed(frame, SEMIANGLE, mrad_per_px=0.25, rotation_deg=30.0, out_shape=OUT)
    assert reg.mrad_per_px == 0.25 and reg.found["mrad_per_px_source"] == "given" and reg.rotation_deg == 30.0
    assert reg.symmetry_score is None and _corr(reg.pattern, refs[2], ~reg.outside) > 0.99
    off = register_pacbed(frame, SEMIANGLE, mrad_per_px=0.2, symmetry=None, out_shape=OUT)
    assert off.rotation_deg == 0.0 and any("implies" in w for w in off.warnings)


def test_saturated_pixels_are_masked_where_the_frame_clipped(sims):
    patterns, sampling, refs = sims
    cam = CameraModel(mrad_per_px=0.25, peak_counts=6000, bit_depth=16, saturation_counts=4000, shot_noise=False)
    frame, truth = degrade(patterns[0], cam, np.random.default_rng(0), sampling_mrad=sampling)
    reg = register_pacbed(frame, SEMIANGLE, reference=refs[0], out_shape=OUT)   # 4000 < 65535: found as repeated max
    assert reg.found["saturation"] == 4000.0
    assert reg.found["saturated_fraction"] == pytest.approx(truth["saturated_fraction"])
    assert reg.saturated.any() and reg.saturated[OUT[0] // 2, OUT[1] // 2]          # the bright disc centre
    assert not reg.saturated[0, 0]
    assert reg.pattern[~reg.saturated].max() < 4000 and reg.saturated[reg.pattern >= 3999].all()


def test_concentric_fringes_are_reported_and_a_reference_or_calibration_resolves_them(sims):
    patterns, sampling, refs = sims
    cam = CameraModel(mrad_per_px=0.25, rotation_deg=17.0, blur_sigma_px=1.5, shot_noise=False)
    frame, _ = degrade(patterns[3], cam, np.random.default_rng(0), sampling_mrad=sampling)   # 400 Å
    true_radius = SEMIANGLE / 0.25
    radii = [d.radius_px for d in disc_candidates(frame)]
    assert min(abs(r / true_radius - 1) for r in radii) < 0.01 and len(radii) > 1
    for kw in ({"reference": refs[:3]}, {"mrad_per_px": 0.245}):
        reg = register_pacbed(frame, SEMIANGLE, out_shape=OUT, **kw)
        assert abs(reg.radius_px / true_radius - 1) < 0.01


@pytest.mark.parametrize("frame, kwargs, match", [
    (np.random.default_rng(0).poisson(50.0, (256, 256)), {}, "no visible disc"),
    (np.zeros((64, 64)), {}, "constant image"),
    (np.ones(64), {}, "2D image"),
    (None, {"radius_range_px": (5, 40)}, "outside the allowed"),
    (None, {"crop_alpha": 5.0}, "too small for crop_alpha=5"),
    (None, {"semiangle_mrad": 0.0}, "semiangle_mrad"),
    (None, {"symmetry": "6mm"}, "symmetry"),
    (None, {"out_shape": (4, 4)}, "out_shape"),
    (None, {"reference": np.ones((3, 64, 64))}, "reference"),
])
def test_registration_errors_are_one_line(sims, frame, kwargs, match):
    patterns, sampling, _ = sims
    if frame is None:
        frame, _ = degrade(patterns[0], CameraModel(mrad_per_px=0.25), np.random.default_rng(0), sampling_mrad=sampling)
    kwargs = {"semiangle_mrad": SEMIANGLE, **kwargs}
    with pytest.raises(RegistrationError, match=match) as info:
        register_pacbed(frame, kwargs.pop("semiangle_mrad"), **kwargs)
    assert "\n" not in str(info.value)


def test_a_frame_read_from_a_png_registers(sims, tmp_path):
    from PIL import Image

    from inverscope.datasets.io.images import read_pattern
    patterns, sampling, refs = sims
    cam = CameraModel(mrad_per_px=0.22, centre_px=(260.0, 249.5), rotation_deg=5.0, peak_counts=280, bit_depth=8,
                      dose_e_per_pattern=3e6)
    frame, truth = degrade(patterns[2], cam, np.random.default_rng(1), sampling_mrad=sampling)
    Image.fromarray(frame).save(tmp_path / "pacbed.png")
    image, info = read_pattern(tmp_path / "pacbed.png")
    reg = register_pacbed(image, SEMIANGLE, saturation=info["saturation"], reference=refs, out_shape=OUT)
    assert info["saturation"] == 255.0 and reg.found["saturated_fraction"] == pytest.approx(truth["saturated_fraction"])
    assert np.hypot(reg.centre_px[0] - 260.0, reg.centre_px[1] - 249.5) < 0.5
    assert abs(_mod(reg.rotation_deg - 5, 90)) < 0.5


def test_resample_to_crystal_checks_its_input(sims):
    patterns, sampling, _ = sims
    with pytest.raises(RegistrationError, match="image"):
        resample_to_crystal(patterns, sampling, SEMIANGLE)
    with pytest.raises(RegistrationError, match="mrad_per_px"):
        resample_to_crystal(patterns[0], -1.0, SEMIANGLE)
    img, out_mrad = resample_to_crystal(patterns[0], sampling, SEMIANGLE, crop_alpha=1.5, out_shape=(64, 96))
    assert img.shape == (64, 96) and out_mrad == pytest.approx(2 * 1.5 * SEMIANGLE / 96)
    assert _corr(img, img[::-1, ::-1], np.ones(img.shape, bool)) > 0.998        # centred on (n - 1) / 2
