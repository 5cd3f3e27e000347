"""The atom-finding study end to end on a tiny recipe: outputs, metrics, model metadata, report, one-line errors."""

import importlib.util
import json
import math

import pytest
import yaml

from tests.studies.cli_helpers import cli, one_line_error, renders_in_chromium

TINY = {"study": "atom_finding", "name": "tiny",
        "images": {"structures": {"graphene": 1.0}, "output_shape": [64, 64], "pixel_size_angstrom": [0.15, 0.22],
                   "energy_ev": [60000], "semiangle_mrad": [28, 32], "defect_scale": 3,
                   "dose_e_per_a2": [100, 100000]},
        "net": {"base_channels": 4}, "ensemble": 2,
        "training": {"n_images": 16, "n_validation": 4, "crop_px": 32, "steps": 20, "batch_size": 8,
                     "validate_every": 10},
        "evaluation": {"doses_e_per_a2": [1000, 100000], "images_per_dose": 1, "output_shape": [64, 64],
                       "test_sets": {"heldout": {}, "80kV": {"energy_ev": [80000]}},
                       "baseline": {"validation_images": 1, "sigma_scales": [1.0], "thresholds": [0.2, 0.4]}},
        "movie": {"n_frames": 4, "output_shape": [64, 64], "D_angstrom2_per_frame": [0.002, 0.004],
                  "p_transition": [[0.95, 0.05], [0.2, 0.8]]}}

# train on incoherent, test on multislice: only where the PRISM / annular-detector helpers are installed
HAS_MULTISLICE = all(importlib.util.find_spec(f"inverscope.physics.multislice.{m}") for m in ("annular", "prism"))
if HAS_MULTISLICE:
    TINY["multislice"] = {"enabled": True, "n_images": 1, "extent_angstrom": 5.0, "pixel_size_angstrom": 0.2,
                          "sampling_angstrom": 0.08, "method": "prism", "interpolation": 2}

META_KEYS = {"task", "class_names", "background_channel", "pixel_size_angstrom", "pixel_size_range_angstrom", "input",
             "locate", "heatmap_sigma_px", "study", "architecture", "config"}


def _in01(v):
    return isinstance(v, float) and (math.isnan(v) or 0.0 <= v <= 1.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("atoms")
    (tmp / "r.yaml").write_text(yaml.safe_dump(TINY))
    r = cli("run", tmp / "r.yaml", "--out", tmp / "out", "--quiet")
    assert r.returncode == 0, r.stderr
    return tmp, r


def test_outputs_metrics_models_and_report(run):
    tmp, r = run
    out = tmp / "out"
    assert "F1" in r.stderr and "MOTA" in r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["study"] == "atom_finding" and m["classes"] == ["C", "Si"]
    assert set(m["test_sets"]) == {"heldout", "80kV"}
    for ts in m["test_sets"].values():
        assert [row["dose_e_per_a2"] for row in ts["per_dose"]] == [1000, 100000]
        for row in ts["per_dose"]:
            for key in ("network", "baseline", "baseline_gaussian"):
                v = row[key]
                assert all(_in01(v[k]) for k in ("f1", "precision", "recall")), (key, v)
                assert v["n_true"] > 10 and v["n_matched"] <= min(v["n_true"], v["n_pred"])
            assert len(row["network"]["confusion"]) == 2 and len(row["network"]["confusion"][0]) == 2
            assert row["baseline_params"]["filter"] in ("gaussian", "log")
    # the classical baseline needs no training: it must find the atoms of a clean image
    assert m["test_sets"]["heldout"]["per_dose"][-1]["baseline"]["f1"] > 0.8
    assert set(m["targets"]["heldout"]) == {"f1_ge_0.99_at_ge_1e4", "rmse_le_5pm_at_ge_1e4", "f1_ge_0.95_at_1e3"}
    t = m["tracking"]
    assert t["enabled"] and t["n_frames"] == 4 and t["mota"] <= 1 and t["n_true"] > 0
    assert set(t["diffusion_angstrom2_per_frame"]) <= {"C", "Si"} and len(t["transition_matrix"]["true"]) == 2
    assert t["drift_error_px"]["rms"] < 2.0
    assert len(m["training"]["members"]) == 2 and len(m["training"]["members"][0]["history"]) == 2
    assert m["timings_s"]["inference_mpx_per_s"] > 0 and m["multislice"]["enabled"] is HAS_MULTISLICE
    if HAS_MULTISLICE:
        ms = m["multislice"]
        assert ms["image_px"] == 24 and ms["network"]["n_true"] > 0 and _in01(ms["network"]["f1"])
        assert ms["baseline"]["f1"] > 0.8
    metas = [json.loads((out / "models" / f"atoms_{i}.json").read_text()) for i in range(2)]
    for meta in metas:
        assert META_KEYS <= set(meta), META_KEYS - set(meta)
        assert meta["task"] == "atoms" and meta["architecture"] == "unet" and meta["class_names"] == ["C", "Si"]
        assert meta["background_channel"] == -1 and meta["pixel_size_range_angstrom"] == [0.15, 0.22]
        assert meta["pixel_size_angstrom"] == pytest.approx(0.185) and meta["input"]["multiple_of"] == 8
        assert meta["locate"] == {"threshold": 0.5, "min_distance_px": 3, "refine": "centroid"}
        assert meta["config"]["n_classes"] == 3
        assert (out / "models" / f"atoms_{metas.index(meta)}.safetensors").is_file()
    assert metas[0]["ensemble"] == ["atoms_1"] and "ensemble" not in metas[1]
    renders_in_chromium(out / "report.html", tmp / "shot.png")


def test_saved_members_load_and_predict(run):
    import numpy as np
    import torch

    from inverscope.models.io import load_model
    from inverscope.models.nets.unet import ensemble_predict

    tmp, _ = run
    nets = [load_model(tmp / "out" / "models" / f"atoms_{i}")[0] for i in range(2)]
    mu, sd = ensemble_predict(nets, torch.randn(1, 1, 32, 32))
    assert mu.shape == (1, 3, 32, 32) and np.allclose(mu.sum(1).numpy(), 1, atol=1e-5) and (sd >= 0).all()


@pytest.mark.parametrize("change,extra,needle", [
    ({"trainng": {}}, [], "trainng: unknown key"),
    ({"images": {**TINY["images"], "pixel_size_angstrom": [0.3, 0.6]}}, [], "pixel_size_angstrom: up to 0.6"),
    ({"evaluation": {**TINY["evaluation"], "test_sets": {"x": {"energy_eV": [80000]}}}}, [],
     "evaluation.test_sets.x.energy_eV"),
    ({"evaluation": {**TINY["evaluation"], "output_shape": [60, 64]}}, [], "evaluation.output_shape"),
    ({}, ["--data", "x.png"], "--data: the atom_finding study does not use it"),
], ids=["unknown-key", "pixel-size", "test-set-key", "shape", "data"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, change, extra, needle):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**TINY, **change}))
    assert needle in one_line_error(cli("run", tmp_path / "r.yaml", "--out", tmp_path / "out", "--quiet", *extra))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]
