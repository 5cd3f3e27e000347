"""Recognition imaging and unmixing study through the CLI: a small run, bad labels and end members."""

import json
import os

import numpy as np
import pytest
import yaml

from tests.studies.cli_helpers import cli, one_line_error, renders_in_chromium

SMALL = {
    "study": "recognition_imaging", "name": "small", "seed": 0,
    "synthetic": {"scan": {"rows": 4, "positions": 120, "channels": 128},
                  "labels": {"boxes": {"STO": {"rows": [0, 4], "cols": [6, 18]},
                                       "LSMO": {"rows": [0, 4], "cols": [30, 42]},
                                       "BFO": {"rows": [0, 4], "cols": [54, 66]}}},
                  "pca_components": 3, "nmf_components": 3},
    "pzt": {"pca_components": 3, "nmf_components": 2},
    "recognition": {"hidden": [16], "n_components": 6, "max_epochs": 150},
}


def write_recipe(path, **changes):
    recipe = json.loads(json.dumps(SMALL))
    for section, values in changes.items():
        recipe[section].update(values)
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_small_run_writes_report_and_metrics(tmp_path):
    out = tmp_path / "out"
    r = cli("run", write_recipe(tmp_path / "small.yaml"), "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "recognition" in r.stderr and "metrics.json" in r.stderr
    m = json.loads((out / "metrics.json").read_text())
    syn, pzt = m["synthetic"], m["pzt"]
    assert syn["shape"] == [4, 120, 128] and syn["n_labeled"] == 3 * 4 * 12
    assert syn["recognition_accuracy"] > 0.9 and syn["recognition_accuracy_unlabeled"] > 0.9
    assert syn["unmixing_coefficient_rmse"] < 0.05
    assert syn["unmixing_coefficient_mae"] <= syn["unmixing_coefficient_rmse"]   # MAE <= RMSE always
    assert syn["unmixing_rmse_estimated_endmembers"] < 0.05
    assert 0.8 < syn["chi2_median"] < 1.3         # Poisson + read noise model of the counts
    assert pzt["shape"] == [60, 60, 96] and pzt["classes"] == ["c-domain", "a-domain", "shifted-loop"]
    assert abs(sum(pzt["class_fractions"].values()) - 1) < 1e-9 and pzt["chi2_median"] > 0
    assert "total_s" in m["timings_s"]
    assert (out / "report.html").read_text().count("data:image/png;base64") >= 10
    renders_in_chromium(out / "report.html", tmp_path / "shot.png")


def test_labels_naming_no_pixel_are_one_line_error_before_any_output(tmp_path):
    bad = write_recipe(tmp_path / "bad.yaml", pzt={"labels": {"boxes": {"a-domain": {"rows": [20, 24], "cols": [5, 9]}},
                                                               "pixels": {"c-domain": []}}})
    msg = one_line_error(cli("run", bad, "--out", tmp_path / "new"))
    assert msg == "error: pzt.labels: class 'c-domain' names no pixel"
    assert not (tmp_path / "new").exists()


def test_end_members_of_the_wrong_length(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((2, 120)))
    bad = write_recipe(tmp_path / "bad.yaml", pzt={"endmembers_file": str(tmp_path / "w.npy")})
    msg = one_line_error(cli("run", bad, "--out", tmp_path / "o"))
    assert "pzt.endmembers_file" in msg and "end members have 120 channels but the cube has 96" in msg
    assert not (tmp_path / "o").exists()


# The checks below run in-process (each CLI start costs seconds); the CLI prints the same message.

def run_in_process(tmp_path, data_file=None, **changes):
    from inverscope.core.config import validate
    from inverscope.core.errors import InverscopeError
    from inverscope.studies.recognition_imaging import Recipe, run_study

    recipe = json.loads(json.dumps(SMALL))
    for section, values in changes.items():
        recipe[section].update(values)
    with pytest.raises(InverscopeError) as e:
        run_study(validate(Recipe, recipe, "recipe"), tmp_path / "o", data_file=data_file, log=lambda m: None)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_existing_metrics_untouched(tmp_path):
    old = tmp_path / "o"
    old.mkdir()
    (old / "metrics.json").write_text('{"previous": true}')
    msg = run_in_process(tmp_path, pzt={"labels": {"pixels": {"c-domain": [[0, 0]], "a-domain": [[0, 0]]}}})
    assert "pixel [0, 0] is labeled both 'c-domain' and 'a-domain'" in msg
    assert (old / "metrics.json").read_text() == '{"previous": true}' and os.listdir(old) == ["metrics.json"]


def test_users_file_with_labels_outside_its_grid(tmp_path):
    rng = np.random.default_rng(0)
    loop_v = np.r_[np.linspace(-5, 5, 20), np.linspace(5, -5, 20)]
    np.savez(tmp_path / "mine.npz", loops=rng.normal(size=(8, 9, 40)), voltage=loop_v)
    msg = run_in_process(tmp_path, data_file=str(tmp_path / "mine.npz"), synthetic={"enabled": False})
    assert msg.startswith("pzt.labels: class 'c-domain'") and "8x9 grid" in msg
    assert not (tmp_path / "o").exists()
    np.savez(tmp_path / "ramp.npz", loops=rng.normal(size=(8, 9, 40)), voltage=np.linspace(-5, 5, 40))
    msg = run_in_process(tmp_path, data_file=str(tmp_path / "ramp.npz"), synthetic={"enabled": False})
    assert msg.startswith("voltage: the waveform never turns around")
    assert not (tmp_path / "o").exists()


def test_outlier_pixels_are_not_trained_on_and_reported(tmp_path):
    from inverscope.datasets.io.beps import load_example

    d = load_example()
    loops = d.loops.copy()
    hot = [(30, 30), (5, 50), (45, 10)]
    for r, c in hot:
        loops[r, c] *= 300                       # heavy-tailed pixels, as on a real map
    loops[11, 22] *= 300                         # one inside a labeled c-domain box
    np.savez(tmp_path / "hot.npz", loops=loops, voltage=d.voltage)
    from inverscope.core.config import validate
    from inverscope.studies.recognition_imaging import Recipe, run_study

    recipe = validate(Recipe, {**SMALL, "synthetic": {"enabled": False}}, "recipe")
    run_study(recipe, tmp_path / "o", data_file=str(tmp_path / "hot.npz"), log=lambda m: None)
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())["pzt"]
    assert m["outlier_pixels"] == 4 and m["data_check"]["outliers"]["high"] + m["data_check"]["outliers"]["local"] == 4
    assert m["n_labeled"]["c-domain"] == 6 * 7 + 6 * 6 - 1     # the hot pixel in the box is not a label
    assert m["chi2_median_outlier_pixels"] is not None


@pytest.mark.parametrize("change, words", [
    ({"synthetic": {"labels": {"boxes": {"STO": {"rows": [0, 4], "cols": [0, 5]},
                                         "GaN": {"rows": [0, 4], "cols": [50, 55]}}}}},
     "synthetic.labels: class 'GaN' is not one of"),
    ({"synthetic": {"scan": {"layers": ["STO", "XYZ"]}}}, "synthetic.scan.layers: got 'XYZ'"),
    ({"synthetic": {"pca_components": 500}}, "synthetic.pca_components: got 500"),
    ({"synthetic": {"enabled": False}, "pzt": {"enabled": False}}, "enable at least one"),
])
def test_recipe_errors(tmp_path, change, words):
    assert words in run_in_process(tmp_path, **change)
    assert not (tmp_path / "o").exists()
