"""The LAO/STO study end to end at toy scale through the CLI: outputs, report in Chromium, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

TINY = """
study: lao_sto
name: tiny
campaign:
  num_samples: 18
  seed: 1
  structure: {depth_cells: 8, n_sto: 2, n_lao: 2}
  microscope: {sampling_angstrom: 0.1, phonon_configs: 2, semiangle_mrad: 15, detector_shape: [9, 9]}
  lines: {num_positions: 6}
  thicknesses_cells: [6, 8]
dask: {n_workers: 0}
split: {validation: 0.25, test: 0.25}
classification:
  net: {channels: [4], hidden: 8}
  train: {max_epochs: 3, optimizer: adam, lr: 0.001, progress_bar: false}
regression:
  net: {channels: [4], hidden: 8}
  train: {max_epochs: 3, optimizer: adam, lr: 0.001, progress_bar: false}
evaluation: {saliency_examples: 2}
"""


def cli(*args):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "inverscope.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    (d / "tiny.yaml").write_text(TINY)
    r = cli("run", d / "tiny.yaml", "--out", d / "out", "--quiet")
    assert r.returncode == 0, r.stderr
    return d


def test_outputs_and_metrics(tiny_run):
    out = tiny_run / "out"
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["classification"]) == {"paper", "matched"}
    for v in m["classification"].values():
        assert 0 <= v["accuracy"] <= 1 and np.sum(v["confusion"]) == v["n_test"]
        assert "static_check" in v and "baseline_pca_logreg_accuracy" in v
    assert set(m["regression"]) == {"23.4", "31.2"}
    for v in m["regression"].values():
        assert v["mae_angstrom"] >= 0 and set(v["transfer_mae_angstrom"]) == {"23.4", "31.2"}
    for stage in ("simulate_s", "classification_s", "regression_s", "total_s"):
        assert m["timings_s"][stage] > 0
    for f in ("report.html", "models/classifier_paper.safetensors", "models/classifier_paper.json",
              "models/regressor_8.safetensors", "training/classifier_paper/csv/metrics.csv"):
        assert (out / f).is_file(), f
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 6


def test_report_renders_in_chromium(tiny_run, tmp_path):
    from matplotlib.image import imread

    from inverscope.report.browser import find_chromium, screenshot

    if find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (installed by .ci/run)")
        pytest.skip("chromium not installed")
    png = screenshot(tiny_run / "out" / "report.html", tmp_path / "shot.png", width=1200, height=6000)
    img = imread(png)[..., :3]
    coloured = (img.max(axis=-1) - img.min(axis=-1)) > 0.25  # saturated pixels: plots, not text
    assert coloured.sum() > 20000, "the screenshot shows no figures"
    rows = np.flatnonzero(coloured.any(axis=1))
    assert rows.max() - rows.min() > 1500, "figures should appear down the page, not in one place"


def test_rerun_resumes_and_predict_on_the_store(tiny_run, tmp_path):
    r = cli("campaign", tiny_run / "tiny.yaml", "--out", tiny_run / "out" / "campaign.zarr", "--quiet")
    assert r.returncode == 0 and "0 samples simulated, 18 already there" in r.stderr.replace("\n", " ")
    r = cli("predict", tiny_run / "out" / "models" / "classifier_paper", tiny_run / "out" / "campaign.zarr",
            "--out", tmp_path / "pred")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert 0.0 <= summary["accuracy_vs_labels"] <= 1.0 if "accuracy_vs_labels" in summary else True


def _one_line_error(r):
    assert r.returncode == 2
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


def test_bad_input(tiny_run, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("split:", "splitt:"))
    assert "splitt" in _one_line_error(cli("run", bad, "--out", tmp_path / "o"))
    assert not (tmp_path / "o").exists()
    other = tmp_path / "other.yaml"
    other.write_text(TINY.replace("seed: 1", "seed: 2"))
    out = tiny_run / "out"
    before = (out / "metrics.json").read_bytes()
    assert "another campaign" in _one_line_error(cli("run", other, "--out", out))
    assert (out / "metrics.json").read_bytes() == before
    assert "no such" in _one_line_error(cli("run", tmp_path / "missing.yaml", "--out", tmp_path / "o2"))
    assert "no such file" in _one_line_error(
        cli("predict", out / "models" / "classifier_paper", tmp_path / "nope.zarr", "--out", tmp_path / "p"))


def test_model_and_data_of_different_pattern_size(tiny_run, tmp_path):
    from inverscope.datasets.store import ZarrCBEDWriter

    w = ZarrCBEDWriter(tmp_path / "cbed.zarr", (4, 10), (1, 11, 11), {"calibration": {}})
    w(0, 40, np.random.default_rng(0).random((40, 1, 11, 11), dtype=np.float32))
    w.close()
    msg = _one_line_error(cli("predict", tiny_run / "out" / "models" / "classifier_paper", tmp_path / "cbed.zarr",
                              "--out", tmp_path / "p"))
    assert "(6, 9, 9)" in msg and "11, 11" in msg
    assert not (tmp_path / "p").exists()
