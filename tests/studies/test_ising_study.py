"""Ising loop recognition through the CLI: a small run, the stored loop set reused, bad input."""

import json

import numpy as np
import pytest

from tests.studies.cli_helpers import cli, one_line_error, renders_in_chromium

TINY = """
study: ising_recognition
name: tiny
loops: {num_loops: 600, chunk: 200, j0_range: [0, 0.5],
        ising: {lattice: [16, 16], field_max: 2.0, field_steps: 100, realizations: 4}}
alignment: {field_at_vmax: 2.0}
mlp: {n_components: 8, hidden: [32], train: {max_epochs: 40}}
cnn: {kind: cnn, cnn: {channels: [8, 16], hidden: 16}, train: {max_epochs: 2}}
throughput_loops: 32
posterior: {calibration_sims: 60, ppc_draws: 8, ppc_replicas: 1,
            estimator: {features: 8, hidden_features: 16, num_transforms: 1, max_epochs: 8, num_samples: 40}}
"""


def test_run_writes_report_and_metrics_and_reuses_the_loop_set(tmp_path):
    (tmp_path / "r.yaml").write_text(TINY)
    out = tmp_path / "out"
    r = cli("run", tmp_path / "r.yaml", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    html = (out / "report.html").read_text()
    assert "Parameter and fit-quality maps" in html and html.count("data:image/png;base64") >= 5
    for key in ("pca_mlp", "cnn", "pca_ridge"):
        assert set(m["self_recognition"][key]["r2"]) == {"J0", "dJ", "dh"}
    assert m["self_recognition"]["pca_mlp"]["r2"]["dJ"] > 0.5          # learns something even at this size
    assert m["simulator"]["loops_per_s"] > 0 and m["loopset"]["simulated_now"] == 600
    assert m["data"]["shape"] == [60, 60, 96]
    assert 0 <= m["experiment"]["outside_training_range_fraction"] <= 1
    assert (out / "models" / "pca_mlp.safetensors").is_file() and (out / "loopset.zarr").is_dir()
    post = m["posterior"]
    assert "Posterior: parameters with credible intervals" in html
    assert post["parameters"][:3] == ["J0", "dJ", "dh"] and len(post["parameters"]) == 10
    assert post["experiment"]["outside_prior_fraction"] == 0
    assert set(post["coverage"]["by_parameter"]["dJ"]) == {"0.5", "0.9"}
    assert 0 <= post["experiment"]["flagged_fraction"] <= 1 and post["ppc"]["threshold"] > 0
    for p in ("J0", "dJ", "dh"):
        lo, hi = post["prior"][p]
        assert lo <= post["experiment"]["parameter_median"][p] <= hi
    maps = np.load(out / post["maps_file"])
    assert maps["median"].shape == (3600, 10) and maps["flagged"].shape == (3600,)
    assert np.all(maps["lower90"] <= maps["median"]) and np.all(maps["median"] <= maps["upper90"])
    renders_in_chromium(out / "report.html", tmp_path / "shot.png")
    again = cli("run", tmp_path / "r.yaml", "--out", out, "--quiet")
    assert again.returncode == 0, again.stderr
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["loopset"]["simulated_now"] == 0                           # the stored set was reused
    assert m2["self_recognition"]["pca_mlp"]["r2"] == m["self_recognition"]["pca_mlp"]["r2"]   # seeded
    assert m2["posterior"]["coverage"] == m["posterior"]["coverage"]


def test_recipe_posterior_block_has_defaults_and_is_checked():
    import yaml

    from inverscope.core.config import load_yaml, validate
    from inverscope.core.errors import ConfigError
    from inverscope.studies.ising_recognition import Recipe

    base = yaml.safe_load(TINY)
    old = {k: v for k, v in base.items() if k != "posterior"}
    assert validate(Recipe, old).posterior.estimator.density_estimator == "nsf"      # recipes from before still run
    assert validate(Recipe, {**base, "posterior": None}).posterior is None
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "ising_recognition.yaml"
    assert load_yaml(recipe, Recipe).posterior is not None
    for bad, needle in [({"nuisance": {"field_scale_range": [1.5, 0.5]}}, "field_scale_range"),
                        ({"nuisance": {"asymmetry_range": [-1.2, 0.4]}}, "asymmetry_range"),
                        ({"ppc_quantile": 1.5}, "ppc_quantile"),
                        ({"estimator": {"density_estimator": "gan"}}, "density_estimator"),
                        ({"estimator": {"bins": 3}}, "unknown key")]:
        with pytest.raises(ConfigError, match=needle):
            validate(Recipe, {**base, "posterior": bad})


@pytest.mark.parametrize("patch,needle", [
    ("ising: {lattice: [-4, 16]", "lattice: got size -4"),
    ("ising: {lattice: [16, 16], field_max: 2.0, field_steps: 0", "field_steps"),
    ("alignment: {field_at_vmax: 2.0}", "alignment.field_at_vmax: got 3"),
])
def test_unphysical_input_is_one_line_and_writes_nothing(tmp_path, patch, needle):
    text = TINY
    if patch.startswith("ising: {lattice: [-4"):
        text = text.replace("ising: {lattice: [16, 16]", patch)
    elif "field_steps: 0" in patch:
        text = text.replace("field_steps: 100", "field_steps: 0")
    else:
        text = text.replace(patch, "alignment: {field_at_vmax: 3.0}")
    (tmp_path / "r.yaml").write_text(text)
    out = tmp_path / "out"
    line = one_line_error(cli("run", tmp_path / "r.yaml", "--out", out))
    assert needle in line, line
    assert not out.exists()
