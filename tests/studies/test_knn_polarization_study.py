"""The KNN polarization study end to end at toy scale: every model x regime x condition in metrics,
the saved network read back by `inverscope predict`, resume, and one-line errors."""

import json

import numpy as np
import pytest
import yaml

from tests.studies.cli_helpers import cli, one_line_error, renders_in_chromium

EIGHT = ["[101]", "[110]", "[011]", "[-110]", "[-101]", "[-1-10]", "[0-11]", "[1-10]"]
TINY = {"study": "knn_polarization", "name": "tiny",
        "data": {"campaign": {"variants": EIGHT, "na_fraction": 0.5, "repeat_xy": 2, "thicknesses_nm": [2, 4],
                              "pattern_pixels": 32, "detector_sampling_mrad": 3.2, "sampling_angstrom": 0.1},
                 "train_seeds": [0], "train_positions_per_cell": 3, "test_positions_per_cell": 2,
                 "train_thickness_nm": 2},
        "models": [{"name": "cnn", "architecture": "polarization_cnn",
                    "config": {"channels": [4, 8], "pool_after": [True, True], "hidden": 16}},
                   {"name": "vgg11", "architecture": "vgg_pattern", "config": {"depth": 11, "width": 0.125}}],
        "training": {"regimes": ["classification", "regression", "prototype"], "filtering": [False, True],
                     "seeds": [0, 1], "epochs": 2},
        "shifts": {"applied": ["descan_2px", "dose_1e3"],
                   "simulated": {"kv300": {"energy_kev": 300}, "virtual": {"a_site": "virtual"}},
                   "combined": {"simulated": "kv300", "applied": ["descan_2px", "rotation_2deg"]}},
        "defects": {"scenes": ["wall_180", "wall_90", "inclined"], "nx": 4, "ny": 2, "positions_per_cell": 2}}
CONDITIONS = {"random_split", "in_domain", "thickness_4nm", "descan_2px", "dose_1e3", "kv300", "virtual", "combined"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("knn")
    (tmp / "r.yaml").write_text(yaml.safe_dump(TINY))
    r = cli("run", tmp / "r.yaml", "--out", tmp / "out", "--quiet")
    assert r.returncode == 0, r.stderr
    return tmp, r


def test_metrics_cover_every_model_regime_and_condition(run):
    tmp, r = run
    m = json.loads((tmp / "out" / "metrics.json").read_text())
    assert "in-domain:" in r.stderr
    runs = {f"{n}/{g}/{f}" for n in ("cnn", "vgg11") for g in ("classification", "regression", "prototype")
            for f in ("all", "filtered")}
    baselines = {"pca_knn", "com", "com_threshold", "friedel", "linear"}
    assert set(m["accuracy"]) == runs | baselines
    for key, per in m["accuracy"].items():
        assert set(per) == CONDITIONS, key
        for cond, s in per.items():
            v = np.array(s["values"])
            assert len(v) == (2 if key in runs else 1) and np.all((v >= 0) & (v <= 1))
            assert s["mean"] == pytest.approx(v.mean()) and s["std"] == pytest.approx(v.std())
            assert s["drop"] == pytest.approx(per["in_domain"]["mean"] - s["mean"])
    # 8 classes x 8 variants x 16 test positions: accuracies are multiples of 1/128
    v = np.array(m["accuracy"]["cnn/classification/all"]["in_domain"]["values"]) * 128
    assert np.allclose(v, v.round())
    assert m["data"]["n_test"]["in_domain"] == 8 * 16 and m["data"]["n_train"] + m["data"]["n_validation"] == 8 * 36
    gap = m["gap"]
    assert set(gap["scores"]) >= {"input_pca", "cnn", "vgg11"}
    assert set(gap["scores"]["input_pca"]) == CONDITIONS - {"random_split"}
    per = m["periodic"]
    assert per["positions_per_cell"] == 2 and 0 <= per["fraction_above_mean_com"] <= 1
    folded = np.array(per["cnn/classification/all"]["folded_error"])
    assert folded.shape == (2, 2)
    # the folded map averages the error over cells, so its mean is the error rate
    assert folded.mean() == pytest.approx(per["cnn/classification/all"]["error_rate"])
    scene = m["defects"]["wall_180"]
    assert (scene["rows"], scene["cols"]) == (4, 8) and {"wall", "a_vacancy", "o_vacancy"} <= set(scene["masks"])
    model = scene["models"]["cnn/classification/all"]
    assert 0 <= model["auroc"]["disagreement"]["wall"] <= 1
    assert {"softmax_max", "pca_error"} <= set(model["auroc"])
    assert "prototype_distance" in scene["models"]["cnn/prototype/all"]["auroc"]
    assert "knn_distance" in model["auroc"]
    # recentring finds the descan that was applied (2 px along the diagonal: +1.41 px in row and column)
    found = m["data"]["recentred_px"]
    assert set(found) == {"train"} | (CONDITIONS - {"random_split"})
    assert np.allclose(found["descan_2px"], [2 ** 0.5] * 2, atol=0.1)
    assert np.allclose(found["in_domain"], 0, atol=0.1) and np.allclose(found["train"], 0, atol=0.1)
    assert set(m["inference_patterns_per_s"]) == runs and all(v > 0 for v in m["inference_patterns_per_s"].values())


def test_saved_network_reads_the_test_store_through_predict(run):
    """The study's in-domain figure and `inverscope predict` on the same store agree to the pattern."""
    tmp, _ = run
    out = tmp / "out"
    m = json.loads((out / "metrics.json").read_text())
    meta = json.loads((out / "models" / "cnn.json").read_text())
    assert meta["task"] == "polarization" and meta["input"]["pixels"] == 32 and meta["regime"] == "classification"
    assert np.array(meta["normalization"]["mean"]).shape == (32, 32)  # per-pixel standardization
    r = cli("predict", out / "models" / "cnn", out / "data" / "test.zarr", "--out", tmp / "pred",
            "--thickness-index", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp / "pred" / "summary.json").read_text())
    assert s["accuracy"] == pytest.approx(m["accuracy"]["cnn/classification/all"]["in_domain"]["values"][0])
    renders_in_chromium(out / "report.html", tmp / "shot.png")


def test_rerun_reuses_every_store(run):
    tmp, _ = run
    r = cli("run", tmp / "r.yaml", "--out", tmp / "out", "--quiet")
    assert r.returncode == 0, r.stderr
    stores = json.loads((tmp / "out" / "metrics.json").read_text())["data"]["stores"]
    assert set(stores) == {"train_s0", "test", "shift_kv300", "shift_virtual"}
    assert all(s["simulated"] == 0 and s["skipped"] == 8 for s in stores.values())


def _with(path, value):
    cfg = json.loads(json.dumps(TINY))
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


@pytest.mark.parametrize("cfg,extra,needle", [
    (_with(("data", "campaign", "variants"), ["[110]", "[120]"]), [], "unknown variant '[120]'"),
    (_with(("data", "test_seed"), 0), [], "data.test_seed: 0 is also a training seed"),
    (_with(("data", "train_thickness_nm"), 3), [], "data.train_thickness_nm: 3.0 is not one of"),
    (_with(("shifts", "applied"), ["descan_3px"]), [], "unknown shift 'descan_3px'"),
    (_with(("shifts", "simulated"), {"x": {"seed": 4}}), [], "shifts.simulated.x.seed: fixed by the study"),
    (_with(("shifts", "simulated"), {"x": {"energy_kev": -1}}), [], "shifts.simulated.x"),
    (_with(("shifts", "combined"), {"simulated": "nope"}), [], "shifts.combined.simulated: 'nope'"),
    (_with(("data", "campaign", "cif"), "missing.cif"), [], "cif: missing.cif: no such file"),
    (_with(("models",), [{"name": "a", "architecture": "vgg_pattern", "config": {"depth": 12}}]), [],
     "models.a.config"),
    ({**TINY, "epochs": 3}, [], "epochs"),
    (TINY, ["--data", "x.npy"], "--data: the knn_polarization study does not use it"),
], ids=["variant", "test-seed", "thickness", "applied", "fixed-key", "bad-value", "combined", "cif", "net-config",
        "unknown-key", "data"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, cfg, extra, needle):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
    line = one_line_error(cli("run", tmp_path / "r.yaml", "--out", tmp_path / "out", "--quiet", *extra))
    assert needle in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_cif_that_is_not_amm2_is_refused(tmp_path):
    import ase.build
    import ase.io

    ase.io.write(tmp_path / "cu.cif", ase.build.bulk("Cu", "fcc", a=3.6))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(_with(("data", "campaign", "cif"), str(tmp_path / "cu.cif"))))
    line = one_line_error(cli("run", tmp_path / "r.yaml", "--out", tmp_path / "out", "--quiet"))
    assert "space group Fm-3m (No. 225); the polar builder needs Amm2 (No. 38)" in line
    assert not (tmp_path / "out").exists()
