"""Synthetic atom images: shapes, seeding, dose and noise statistics, targets on the truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inverscope.core.errors import InverscopeError
from inverscope.datasets.atom_images import (AtomImageConfig, AtomImageGenerator, canvas_to_output, gaussian_heatmaps,
                                             poisson_counts, scan_positions)

torch.set_num_threads(2)

SMALL = dict(output_shape=(64, 64), pixel_size_angstrom=(0.12, 0.2), crop_margin_px=4)
CLEAN = dict(dose_e_per_a2=(1e8, 1e8), read_noise_counts=(0.0, 0.0), background_fraction=(0.0, 0.0),
             contamination_probability=0.0, standardize=False)


def test_shapes_params_and_same_seed_same_batch():
    gen = AtomImageGenerator(AtomImageConfig(**SMALL), seed=0)
    a = gen.sample(3, seed=11)
    b = AtomImageGenerator(AtomImageConfig(**SMALL), seed=99).sample(3, seed=11)
    assert a["images"].shape == (3, 1, 64, 64) and a["images"].dtype == torch.float32
    assert a["heatmaps"].shape == (3, len(gen.classes) + 1, 64, 64)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["heatmaps"], b["heatmaps"])
    for ta, tb in zip(a["truth"], b["truth"]):
        assert np.array_equal(ta["x_px"], tb["x_px"]) and np.array_equal(ta["class"], tb["class"])
    c = gen.sample(3, seed=12)
    assert not torch.equal(a["images"], c["images"])
    for p in a["params"]:
        ratio = p["pixel_size_reported_angstrom"] / p["pixel_size_true_angstrom"]
        assert 0.9 <= ratio <= 1.1
        for key in ("dose_e_per_a2", "structure", "rotation_deg", "z_exponent", "semiangle_mrad", "heatmap_sigma_px"):
            assert key in p


def test_poisson_variance_equals_mean_at_dose():
    dose, p, eta = 2e3, 0.1, 0.1
    lam = dose * p * p * eta  # 2 counts per pixel
    g = torch.Generator().manual_seed(0)
    counts = poisson_counts(torch.full((200, 200), lam), g)
    n = counts.numel()
    assert float(counts.mean()) == pytest.approx(lam, abs=4 * math.sqrt(lam / n))
    assert float(counts.var()) == pytest.approx(lam, abs=4 * lam * math.sqrt(2 / n))
    assert torch.equal(counts, counts.round())


def test_generator_mean_counts_follow_dose():
    cfg = AtomImageConfig(**{**SMALL, **CLEAN, "dose_e_per_a2": (500.0, 500.0), "detector_efficiency": (0.1, 0.1),
                             "structures": {"MoS2": 1.0}})
    out = AtomImageGenerator(cfg).sample(4, seed=3)
    for img, p in zip(out["images"], out["params"]):
        lam = 500.0 * p["pixel_size_true_angstrom"] ** 2 * 0.1
        assert p["mean_counts_per_px"] == pytest.approx(lam, rel=1e-5)
        assert float(img.mean()) == pytest.approx(lam, abs=5 * math.sqrt(lam / img.numel()))
        assert torch.equal(img, img.round())  # counts without read noise


@pytest.mark.parametrize("distort", [False, True])
def test_heatmap_peaks_and_image_columns_on_truth(distort):
    geo = ({"scan_rotation_deg": (3.0, 3.0), "drift_px_per_line": (0.02, 0.02), "line_sync_px": (0.5, 0.5),
            "line_jitter_px": (0.2, 0.2)} if distort else
           {"scan_rotation_deg": (0.0, 0.0), "drift_px_per_line": (0.0, 0.0), "line_sync_px": (0.0, 0.0),
            "line_jitter_px": (0.0, 0.0), "crop_margin_px": 0})
    cfg = AtomImageConfig(**{**SMALL, **CLEAN, **geo, "structures": {"SrTiO3_001": 1.0},
                             "output_shape": (96, 96), "pixel_size_angstrom": (0.15, 0.2),
                             "jitter_angstrom": (0.0, 0.0)})
    gen = AtomImageGenerator(cfg)
    out = gen.sample(2, seed=5)
    nc = len(gen.classes)
    for img, hm, t in zip(out["images"][:, 0], out["heatmaps"], out["truth"]):
        atom = ~t["is_vacancy"]
        assert atom.sum() > 20
        assert torch.allclose(hm[nc], 1 - hm[:nc].amax(0))
        heavy = atom & (t["class"] == gen.classes.index("Sr"))
        for x, y, c in zip(t["x_px"][atom], t["y_px"][atom], t["class"][atom]):
            ix, iy = int(round(x)), int(round(y))
            if not (3 <= ix < 93 and 3 <= iy < 93):
                continue
            win = hm[c, iy - 2:iy + 3, ix - 2:ix + 3]
            k = int(win.argmax())
            assert (k // 5, k % 5) == (2, 2)  # heat-map maximum on the truth pixel
        # Sr columns (brightest) are local image maxima within 1.5 px of the truth
        for x, y in zip(t["x_px"][heavy], t["y_px"][heavy]):
            ix, iy = int(round(x)), int(round(y))
            if not (4 <= ix < 92 and 4 <= iy < 92):
                continue
            win = img[iy - 3:iy + 4, ix - 3:ix + 4]
            k = int(win.argmax())
            assert math.hypot(iy - 3 + k // 7 - y, ix - 3 + k % 7 - x) < 1.5


def test_scan_mapping_inverts():
    shape = (40, 50)
    shift = np.random.default_rng(0).normal(0, 0.3, 40)
    g = dict(shift_px=shift, shear=0.01, stretch=-0.01, rotation_rad=0.05, centre_px=(70.3, 69.1))
    pos = scan_positions(shape, **g)
    u, v = canvas_to_output(pos[..., 0].ravel(), pos[..., 1].ravel(), shape, **g)
    vv, uu = np.meshgrid(np.arange(40.0), np.arange(50.0), indexing="ij")
    assert np.allclose(u, uu.ravel(), atol=1e-9) and np.allclose(v, vv.ravel(), atol=1e-9)


def test_gaussian_heatmap_peak_value():
    hm = gaussian_heatmaps([(np.array([10.0, 30.3]), np.array([12.0, 20.0]), np.array([0, 1]))], 2, (40, 40), 1.5)
    assert float(hm[0, 0, 12, 10]) == pytest.approx(1.0)
    assert int(hm[0, 1].argmax()) == 20 * 40 + 30
    assert float(hm[0, 2, 0, 0]) == pytest.approx(1.0)


def test_bad_config():
    with pytest.raises(InverscopeError, match="pixel_size_angstrom.*<="):
        AtomImageGenerator(AtomImageConfig(pixel_size_angstrom=(0.1, 0.6), source_fwhm_angstrom=(0.0, 0.5)))
    with pytest.raises(InverscopeError, match="structures"):
        AtomImageGenerator({"structures": {"diamond": 1.0}})
    with pytest.raises(InverscopeError):
        AtomImageGenerator({"output_shape": [64, 64], "colour": 1})


def test_saturation_weight_is_drawn_recorded_and_flattens_contrast():
    base = dict(SMALL, structures={"SrTiO3_001": 1.0}, **CLEAN)
    off = AtomImageGenerator(AtomImageConfig(**base), seed=0).sample(2, seed=5)
    on = AtomImageGenerator(AtomImageConfig(**base, saturation_weight=(50.0, 50.0)), seed=0).sample(2, seed=5)
    assert [p["saturation_weight"] for p in off["params"]] == [0.0, 0.0]
    assert [p["saturation_weight"] for p in on["params"]] == [50.0, 50.0]
    # same draws otherwise (the weight is not drawn when off), so the atoms are the same ...
    for a, b in zip(off["truth"], on["truth"]):
        assert np.array_equal(a["x_px"], b["x_px"])
    # ... and a W far below the columns' sum Z^n flattens the heavy/light contrast
    def spread(batch):
        img = batch["images"][:, 0]
        return float((img.amax((1, 2)) / img.mean((1, 2))).mean())
    assert spread(on) < 0.8 * spread(off)
