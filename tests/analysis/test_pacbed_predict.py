"""`inverscope predict` with a PACBED model: raw camera frames (PNG, TIFF, JPEG) and 4D-STEM scans.

A tiny pacbed study (3 tilts x 12 thicknesses, a 32 x 32 network trained for two epochs) gives
the model and the library; frames are library patterns put through a seeded camera
(:func:`inverscope.datasets.degrade.degrade`) with a known centre and rotation. The tiny
network does not read thickness well, so the tests assert what must hold whatever the network:
the geometry the registration recovers through each file format, the files and columns, the
agreement of a 4D scan tiled with one pattern with that pattern read as an image, and the
one-line refusals of bad input with nothing written.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inverscope.analysis.pacbed_predict import COLUMNS
from inverscope.cli import main
from inverscope.datasets.degrade import CameraModel, degrade

TINY = {"study": "pacbed", "name": "tiny",
        "library": {"thickness_nm": [1, 12, 1], "tilt_max_mrad": 1, "tilt_step_mrad": 1, "phonon_configs": 0,
                    "repeat_xy": 2, "sampling_angstrom": 0.08, "positions_per_cell": 4, "detector_pixels": 49},
        "grid": {"pixels": 32}, "n_train": 200, "n_validation": 50, "net": {"channels": [8, 16], "hidden": 16},
        "train": {"epochs": 2}, "evaluation": {"n_heldout": 2, "thickness_range_nm": [5, 12], "mc_passes": 2}}
#: (suffix, tilt index, thickness index, centre (row, col) [px], rotation [deg]) of the test frames
FRAMES = [("png", 0, 4, (121.3, 134.6), 12.0), ("tif", 1, 7, (131.8, 119.4), 37.0), ("jpg", 2, 10, (126.5, 128.2), 71.0)]
SCAN, WINDOW = (4, 6), 2


def _frame(pattern, sampling, centre, rotation, rng, shape=(256, 256), jpeg=None, bit_depth=8):
    cam = CameraModel(frame_shape=shape, mrad_per_px=0.55, centre_px=centre, rotation_deg=rotation,
                      dose_e_per_pattern=1e6, peak_counts=230, saturation_counts=255 if bit_depth else None,
                      bit_depth=bit_depth, jpeg_quality=jpeg, background_counts=3.0)
    return degrade(pattern, cam, rng, sampling_mrad=sampling)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """The study's model and library, test frames with their truths, a tiled scan and bad inputs."""
    import zarr

    from inverscope.studies.pacbed import Recipe, run_study

    d = tmp_path_factory.mktemp("pacbed_predict")
    run_study(Recipe.model_validate(TINY), d / "study", log=lambda m: None)
    g = zarr.open_group(str(d / "study" / "library.zarr"), mode="r")
    patterns, sampling = g["patterns"][:], float(g.attrs["sampling_mrad"][0])
    rng = np.random.default_rng(5)
    truths = {}
    for suffix, ti, zi, centre, rotation in FRAMES:
        frame, truth = _frame(patterns[ti, zi], sampling, centre, rotation, rng, jpeg=90 if suffix == "jpg" else None)
        path = d / f"frame_{suffix}.{suffix}"
        Image.fromarray(frame).save(path, **({"quality": 95} if suffix == "jpg" else {}))
        truths[path.name] = truth
    one = _frame(patterns[1, 6], sampling, (63.2, 64.7), 25.0, rng, shape=(128, 128), bit_depth=None)[0]
    np.save(d / "one.npy", one.astype(np.float32))
    np.save(d / "scan.npy", np.broadcast_to(one.astype(np.float32), (*SCAN, *one.shape)).copy())
    np.save(d / "noise.npy", rng.normal(100, 3, (128, 128)).astype(np.float32))
    (d / "notes.txt").write_text("not a pattern\n")
    return {"dir": d, "model": d / "study" / "models" / "pacbed_cnn", "library": d / "study" / "library.zarr",
            "truths": truths, "thicknesses_nm": np.asarray(g.attrs["thicknesses_angstrom"]) / 10}


def _run(*args) -> int:
    return main([str(a) for a in args])


def _rows(out: Path) -> list[dict]:
    return json.loads((out / "predictions.json").read_text())["rows"]


def _mod90(angle: float) -> float:
    return (angle + 45.0) % 90.0 - 45.0


def test_frames_and_a_scan_are_read_into_tables_maps_and_figures(assets, tmp_path, capfd):
    d, out = assets["dir"], tmp_path / "pred"
    frames = [d / f"frame_{s}.{s}" for s, *_ in FRAMES]
    code = _run("predict", assets["model"], *frames, d / "scan.npy", "--out", out, "--window", WINDOW,
                "--library", assets["library"], "--semiangle-mrad", 13.6, "--energy-kev", 200, "--quiet")
    assert code == 0, capfd.readouterr().err
    n_windows = (SCAN[0] // WINDOW) * (SCAN[1] // WINDOW)
    assert sorted(p.name for p in out.iterdir()) == ["figures", "maps", "maps.zarr", "predictions.csv",
                                                     "predictions.json", "summary.json"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted([f.stem + ".png" for f in frames] + ["scan.png"])
    assert (out / "maps" / "scan.png").stat().st_size > 1000
    with open(out / "predictions.csv", newline="") as fh:
        table = list(csv.reader(fh))
    assert tuple(table[0]) == COLUMNS and len(table) == 1 + len(frames) + n_windows
    rows = _rows(out)
    lib_t = assets["thicknesses_nm"]
    for row in rows[:len(frames)]:
        truth = assets["truths"][Path(row["source"]).name]
        assert row["kind"] == "image" and row["window_row"] is None
        assert np.hypot(row["centre_row_px"] - truth["centre_px"][0], row["centre_col_px"] - truth["centre_px"][1]) < 1.5
        assert abs(_mod90(row["rotation_deg"] - truth["rotation_deg"])) < 2.0   # the library picks the mirror family
        assert abs(row["radius_px"] * row["mrad_per_px"] - 13.6) < 1e-6 and row["mrad_per_px_source"] == "disc"
        assert np.isfinite(row["thickness_nm"]) and row["thickness_sd_nm"] > 0
        outside = not 1 <= row["thickness_nm"] <= 12   # the tiny network can extrapolate; that is said
        assert outside == any("outside the model's training range 1-12 nm" in w for w in row["warnings"])
        assert 0 <= row["tilt_y_mrad"] <= row["tilt_x_mrad"] and row["tilt_x_sd_mrad"] > 0
        assert row["library_thickness_nm"] == pytest.approx(lib_t[np.argmin(np.abs(lib_t - row["thickness_nm"]))])
        assert row["library_correlation"] > 0.5 and row["registration_s"] > 0 and row["network_s"] > 0
    windows = rows[len(frames):]
    assert [(r["window_row"], r["window_col"]) for r in windows] == [(i, j) for i in range(2) for j in range(3)]
    assert windows[-1]["scan_row_start"] == 2 and windows[-1]["scan_col_stop"] == 6
    import zarr

    maps = zarr.open_group(str(out / "maps.zarr" / "scan"), mode="r")
    assert maps["thickness_nm"].shape == (2, 3) and maps.attrs["window"] == WINDOW
    np.testing.assert_allclose(maps["thickness_sd_nm"][:].ravel(), [r["thickness_sd_nm"] for r in windows], rtol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["mirror_family_reference"] == "library" and summary["n_patterns"] == len(rows)
    assert summary["settings"]["stated"] == {"semiangle_mrad": 13.6, "energy_kev": 200.0} and not summary["warnings"]
    assert [s["kind"] for s in summary["sources"]] == ["image"] * 3 + ["4d"]
    assert summary["sources"][-1]["windows"] == [2, 3] and summary["timings_s"]["per_pattern_median"] > 0


def test_a_scan_tiled_with_one_pattern_reads_as_that_pattern(assets, tmp_path):
    d = assets["dir"]
    out = tmp_path / "det"
    assert _run("predict", assets["model"], d / "one.npy", d / "scan.npy", "--out", out, "--window", WINDOW,
                "--mc-dropout", 1, "--quiet") == 0
    image, *windows = _rows(out)
    assert len(windows) == 6
    for w in windows:   # one deterministic pass: the same registration and the same reading
        for key in ("centre_row_px", "centre_col_px", "radius_px", "rotation_deg"):
            assert w[key] == pytest.approx(image[key], abs=1e-6), key
        for key in ("thickness_nm", "tilt_x_mrad", "tilt_y_mrad"):
            assert w[key] == pytest.approx(image[key], abs=1e-4), key
        assert w["thickness_sd_nm"] is None
    assert abs(_mod90(image["rotation_deg"] - 25.0)) < 2.0  # the model's mean input picks the mirror family
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["mirror_family_reference"] == "model mean input"
    assert any("not both stated" in w for w in summary["warnings"])
    mc = tmp_path / "mc"
    assert _run("predict", assets["model"], d / "one.npy", d / "scan.npy", "--out", mc, "--window", WINDOW,
                "--quiet") == 0
    image, *windows = _rows(mc)
    assert image["thickness_sd_nm"] > 0
    for w in windows:   # 16 dropout passes: the same within the spread
        assert abs(w["thickness_nm"] - image["thickness_nm"]) < 3 * image["thickness_sd_nm"]


def test_each_window_reads_its_own_positions_and_a_window_without_a_disc_is_recorded(assets, tmp_path):
    d = assets["dir"]
    one = np.load(d / "one.npy")
    scan = np.empty((*SCAN, *one.shape), np.float32)
    for i in range(SCAN[0] // WINDOW):
        for j in range(SCAN[1] // WINDOW):   # window (i, j): the pattern moved by (i, 2 j) px
            scan[i * WINDOW:(i + 1) * WINDOW, j * WINDOW:(j + 1) * WINDOW] = np.roll(one, (i, 2 * j), axis=(0, 1))
    scan[WINDOW:, 2 * WINDOW:] = np.load(d / "noise.npy")
    np.save(tmp_path / "moved.npy", scan)
    out = tmp_path / "out"
    assert _run("predict", assets["model"], d / "one.npy", tmp_path / "moved.npy", "--out", out, "--window", WINDOW,
                "--mc-dropout", 1, "--quiet") == 0
    image, *windows = _rows(out)
    for w in windows:
        i, j = w["window_row"], w["window_col"]
        if (i, j) == (1, 2):
            assert w["thickness_nm"] is None and w["centre_row_px"] is None
            assert any(m.startswith("not registered:") and "no visible disc" in m for m in w["warnings"])
            continue
        assert w["centre_row_px"] - image["centre_row_px"] == pytest.approx(i, abs=0.05)
        assert w["centre_col_px"] - image["centre_col_px"] == pytest.approx(2 * j, abs=0.05)
    import zarr

    thickness = zarr.open_group(str(out / "maps.zarr" / "moved"), mode="r")["thickness_nm"][:]
    assert np.isnan(thickness[1, 2]) and np.isfinite(np.delete(thickness.ravel(), 5)).all()


def _stack_model(path: Path) -> Path:
    import torch

    from inverscope.models.io import save_model
    from inverscope.models.nets import StackCNN3D, StackCNN3DConfig

    torch.manual_seed(0)
    net = StackCNN3D(StackCNN3DConfig(input_shape=(4, 9, 9), channels=[2], hidden=4, num_outputs=2))
    save_model(path, net, "stack_cnn3d", {"task": "classification", "class_names": ["LAO", "STO"],
                                          "normalization": {"mean": np.zeros((9, 9)).tolist(),
                                                            "std": np.ones((9, 9)).tolist()},
                                          "input": {"positions": 4, "pattern_shape": [9, 9]}})
    return path


def test_a_stack_model_still_maps_one_dataset(tmp_path):
    from inverscope.datasets.store import ZarrCBEDWriter

    data = np.random.default_rng(0).gamma(2.0, 1.0, (3, 6, 1, 9, 9)).astype(np.float32)
    w = ZarrCBEDWriter(tmp_path / "scan.zarr", (3, 6), (1, 9, 9), {"calibration": {"sampling_mrad": [2.5, 2.5]}})
    w(0, 18, data.reshape(18, 1, 9, 9))
    w.close()
    out = tmp_path / "out"
    assert _run("predict", _stack_model(tmp_path / "m" / "net"), tmp_path / "scan.zarr", "--out", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["descriptors.zarr", "maps.png", "summary.json"]


BAD = {  # id: (arguments after the model, needles of the error line)
    "no-disc": (["noise.npy"], ["noise.npy", "no visible disc"]),
    "no-disc-in-the-second-file": (["frame_png.png", "noise.npy"], ["noise.npy", "no visible disc"]),
    "radius-outside-the-range": (["frame_png.png", "--disc-radius-px", "40", "60"],
                                 ["frame_png.png", "--disc-radius-px", "outside the allowed [40, 60] px"]),
    "unknown-format": (["notes.txt"], ["notes.txt", "unknown format '.txt'", ".png", ".hspy"]),
    "window-exceeds-the-scan": (["one.npy", "scan.npy", "--window", "5"],
                                ["--window", "5", "exceeds the scan", "4 x 6", "--window <= 4"]),
    "semiangle-of-another-model": (["one.npy", "--semiangle-mrad", "20"], ["--semiangle-mrad", "20 mrad", "13.6 mrad"]),
    "voltage-of-another-model": (["one.npy", "--energy-kev", "300"], ["--energy-kev", "300 kV", "200 kV"]),
    "stack-option": (["one.npy", "--stride", "2"], ["--stride", "not used by a PACBED model"]),
    "missing-file": (["gone.png"], ["gone.png", "no such file"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_writes_nothing(case, assets, tmp_path, capfd):
    args, needles = BAD[case]
    d = assets["dir"]
    before = sorted(p.name for p in d.iterdir())
    out = tmp_path / "out"
    code = _run("predict", assets["model"], *[d / a if (d / a).exists() or a.endswith(".png") else a for a in args],
                "--out", out, "--quiet")
    lines = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not out.exists() and list(tmp_path.iterdir()) == [] and sorted(p.name for p in d.iterdir()) == before


def test_more_than_one_file_for_a_stack_model_and_a_full_out_are_refused(assets, tmp_path, capfd):
    model = _stack_model(tmp_path / "m" / "net")
    assert _run("predict", model, tmp_path / "a.zarr", tmp_path / "b.zarr", "--out", tmp_path / "o") == 2
    line = capfd.readouterr().err.strip()
    assert "DATA: got 2 files" in line and "stack_cnn3d" in line and not (tmp_path / "o").exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep")
    assert _run("predict", assets["model"], assets["dir"] / "one.npy", "--out", full) == 2
    assert "not empty" in capfd.readouterr().err and [p.name for p in full.iterdir()] == ["mine.txt"]
