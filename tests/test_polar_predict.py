"""`inverscope predict` with a polarization model: class, angle, confidence, CoM and anomaly maps.

A tiny polarization CNN (32 x 32 px input) is trained for a few epochs on discs shifted by one
pixel in the direction of their class (class ``c`` at ``c * 45`` deg, counter-clockwise from +col
as displayed: row offset ``-sin``, column offset ``+cos``): the network is trained on exactly that
signal, so it must read it back. A 6 x 5 scan of 64 x 64 px patterns made the same way (discs
shifted by 2 px, read with ``--bin 2``) then goes through the real CLI; bad inputs end in one
``error:`` line and no output directory.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from inverscope.analysis.polar_models import polar_input, polar_metadata
from inverscope.cli import main
from inverscope.models.io import save_model
from inverscope.models.nets import build_net
from inverscope.training.regimes import fit_regime

N_CLASSES, RAW, BIN = 8, 64, 2
P = RAW // BIN
#: the known class of each scan position (6 x 5)
CLASSES = (np.arange(30).reshape(6, 5) * 3) % N_CLASSES


def disc(cls: int, rng=None, side: int = RAW, shift_px: float = 2.0) -> np.ndarray:
    """A bright soft-edged disc (radius side / 5) shifted by `shift_px` towards class angle `cls`, on a faint background."""
    a = np.radians(cls * 360 / N_CLASSES)
    dy, dx = -np.sin(a) * shift_px, np.cos(a) * shift_px
    if rng is not None:
        dy, dx = dy + rng.normal(0, 0.1), dx + rng.normal(0, 0.1)
    yy, xx = np.mgrid[:side, :side] - side // 2
    r = np.hypot(yy - dy, xx - dx)
    img = 1.0 / (1.0 + np.exp((r - side / 5) / 0.7)) + 0.02
    if rng is not None:
        img = img * rng.uniform(0.8, 1.2) + rng.normal(0, 0.003, img.shape)
    return np.clip(img, 0, None).astype(np.float32)


def binned(x: np.ndarray) -> np.ndarray:
    return x.reshape(*x.shape[:-2], P, BIN, P, BIN).sum(axis=(-3, -1))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(N_CLASSES), 40)
    raw = binned(np.stack([disc(int(c), rng) for c in y]))
    x, mean, std = polar_input(raw)
    cfg = {"input_size": P, "channels": [4, 8], "pool_after": [True, True], "hidden": 16, "head": "classification",
           "outputs": N_CLASSES}
    net = build_net("polarization_cnn", cfg)
    n_val = 64
    result = fit_regime(net, x[n_val:], y[n_val:], x[:n_val], y[:n_val],
                        {"regime": "classification", "n_classes": N_CLASSES, "epochs": 8, "batch_size": 32,
                         "lr": 5e-3, "seed": 0}, log=None)
    assert result.val_accuracy == 1.0, result.history
    path = tmp_path_factory.mktemp("model") / "polar"
    save_model(path, net, "polarization_cnn",
               polar_metadata(regime=result, pixels=P, mrad_per_px=1.0, semiangle_mrad=10.0, energy_ev=200e3,
                              mean=mean, std=std))
    return path.with_suffix(".safetensors")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    data = np.stack([np.stack([disc(int(c)) for c in row]) for row in CLASSES])
    path = tmp_path_factory.mktemp("data") / "scan.npy"
    np.save(path, data)
    return path, data


def _error(capsys, argv, out) -> str:
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert not out.exists()
    return lines[0]


def test_maps_of_a_scan_read_the_known_classes_and_com(model, scan, tmp_path, capsys):
    path, _ = scan
    out = tmp_path / "out"
    assert main(["predict", str(model), str(path), "--out", str(out), "--bin", "2", "--chunk-rows", "4",
                 "--quiet"]) == 0
    maps = np.load(out / "maps.npz")
    assert {"class_map", "angle_deg", "confidence", "anomaly", "com_x", "com_y"} <= set(maps.files)
    for name in maps.files:
        assert maps[name].shape == (6, 5), name
    assert maps["class_map"].dtype == np.int16
    np.testing.assert_array_equal(maps["class_map"], CLASSES)
    np.testing.assert_allclose(maps["angle_deg"], CLASSES * 45.0)
    assert np.all(maps["confidence"] > 0.5) and np.all((maps["anomaly"] >= 0) & (maps["anomaly"] <= 1))
    # CoM less the scan mean points along the shift: angle within half a class of the class angle
    com_angle = np.degrees(np.arctan2(-maps["com_y"], maps["com_x"])) % 360
    diff = np.abs((com_angle - CLASSES * 45.0 + 180) % 360 - 180)
    assert diff.max() < 22.5, diff
    assert (out / "polarization_map.png").stat().st_size > 10_000
    s = json.loads((out / "summary.json").read_text())
    assert s["outputs"] == {"maps": "maps.npz", "figure": "polarization_map.png"}
    assert s["scan_shape"] == [6, 5] and s["n_positions"] == 30
    assert s["pattern_shape_read"] == [RAW, RAW] and s["pattern_shape_used"] == [P, P]
    assert s["settings"]["bin_factor"] == 2 and s["wall_s"] > 0 and s["patterns_per_s"] > 0
    assert sum(s["class_counts"].values()) == 30 and s["class_counts"]["0 deg"] == int((CLASSES == 0).sum())
    assert s["model"]["path"] == str(model) and s["data"] == str(path) and s["warnings"] == []
    assert "maps.npz" in capsys.readouterr().err


def test_crop_after_bin_and_the_geometry_message(model, scan, tmp_path, capsys):
    path, data = scan
    big = tmp_path / "big.npy"                                 # 72 x 72 px: --bin 2 gives 36, crop 32 of it
    np.save(big, np.pad(data, ((0, 0), (0, 0), (4, 4), (4, 4)), mode="edge"))
    line = _error(capsys, ["predict", str(model), str(big), "--out", str(tmp_path / "o1"), "--bin", "2"],
                  tmp_path / "o1")
    assert "36 x 36 after --bin 2" in line and f"--crop {P} after --bin 2" in line
    line = _error(capsys, ["predict", str(model), str(big), "--out", str(tmp_path / "o1"), "--bin", "2", "--crop", "30"],
                  tmp_path / "o1")
    assert f"use --crop {P}" in line
    out = tmp_path / "o2"
    assert main(["predict", str(model), str(big), "--out", str(out), "--bin", "2", "--crop", str(P), "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(out / "maps.npz")["class_map"], CLASSES)


def test_bad_inputs_end_in_one_line_and_write_nothing(model, scan, tmp_path, capsys):
    path, data = scan
    out = tmp_path / "out"
    line = _error(capsys, ["predict", str(model), str(path), "--out", str(out)], out)
    assert f"{RAW} x {RAW} px" in line and "--bin 2" in line
    bad = data.copy()
    bad[4, 3, 10, 10] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    line = _error(capsys, ["predict", str(model), str(tmp_path / "nan.npy"), "--out", str(out), "--bin", "2",
                           "--chunk-rows", "2", "--quiet"], out)   # found mid-scan: after the progress bar started
    assert "(row 4, col 3)" in line and "NaN" in line
    line = _error(capsys, ["predict", str(model), str(path), "--out", str(out), "--bin", "2", "--window", "4"], out)
    assert "--window" in line and "polarization" in line
    line = _error(capsys, ["predict", str(model), str(path), str(path), "--out", str(out), "--bin", "2"], out)
    assert "2 files" in line
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())   # no staging directory left behind


def test_a_polar_campaign_store_is_predicted_variant_by_variant(model, tmp_path, capsys):
    from inverscope.datasets.polar_campaign import PolarCampaignConfig, run_polar_campaign

    cfg = PolarCampaignConfig.model_validate(
        {"kind": "polar_4d", "variants": ["[110]", "[-1-10]"], "repeat_xy": 1, "positions_per_cell": 3,
         "thicknesses_nm": [2], "sampling_angstrom": 0.08, "pattern_pixels": P, "detector_sampling_mrad": 6.4,
         "compute": {"device": "cpu"}})
    store = tmp_path / "polar.zarr"
    run_polar_campaign(cfg, store, log=None)
    out = tmp_path / "out"
    assert main(["predict", str(model), str(store), "--out", str(out), "--quiet"]) == 0
    maps = np.load(out / "maps.npz")
    assert maps["class_map"].shape == (2, 3, 3) and maps["com_x"].shape == (2, 3, 3)
    assert np.all(maps["class_map"] >= 0)
    s = json.loads((out / "summary.json").read_text())
    assert s["kind"] == "polar_4d" and s["scan_shape"] == [2, 3, 3] and s["variants"] == ["[110]", "[-1-10]"]
    assert 0 <= s["accuracy"] <= 1 and len(s["labels"]) == 2
    assert any("sampling" in w for w in s["warnings"])                 # 6.4 mrad/px data, a 1 mrad/px model
