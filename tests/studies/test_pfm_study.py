"""BE-PFM switching study through the CLI: bundled data, a user's file via --data, bad input."""

import json

import numpy as np
import pytest

from tests.studies.cli_helpers import cli, one_line_error

TINY = """
study: pfm_switching
name: tiny
model: {architecture: sparse_conv_ae, config: {channels: [8, 16], hidden: 32}}
train: {max_epochs: 3, progress_bar: false, batch_size: 128}
published_architecture_minutes: 0
pca_components: 8
"""


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    d = tmp_path_factory.mktemp("pfm")
    (d / "tiny.yaml").write_text(TINY)
    return d / "tiny.yaml"


def test_bundled_data_run_reproduces_the_published_model(recipe, tmp_path):
    r = cli("run", recipe, "--out", tmp_path / "out", "--quiet")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["data"]["shape"] == [60, 60, 96] and m["model"]["n_test"] == 720
    assert abs(m["published_weights"]["mse_all"] - 0.00252) / 0.00252 < 0.01
    assert m["published_weights"]["active_latents"] == [1, 7, 11, 12, 15]
    assert m["published_weights"]["min_latent_correlation"] >= 0.98
    assert abs(m["pca5_heldout_mse"] - 0.0021) < 0.0002  # the README's PCA-5 figure
    assert (tmp_path / "out" / "report.html").read_text().count("data:image/png;base64") >= 8
    assert (tmp_path / "out" / "models" / "autoencoder.safetensors").is_file()


def test_users_file_with_data_option(recipe, tmp_path):
    rng = np.random.default_rng(0)
    v = np.concatenate([np.linspace(10, -10, 20), np.linspace(-10, 10, 20)])
    c = rng.uniform(1, 4, (8 * 9, 1))
    loops = np.tanh((v[None] + np.where(np.arange(40) < 20, 1, -1) * c) / 2).reshape(8, 9, 40)
    np.savez(tmp_path / "mine.npz", loops=loops, voltage=v)
    r = cli("run", recipe, "--out", tmp_path / "o", "--data", tmp_path / "mine.npz", "--quiet")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["data"]["shape"] == [8, 9, 40] and "published_weights" not in m


def test_bad_input(recipe, tmp_path):
    np.savez(tmp_path / "short.npz", loops=np.zeros((4, 4, 30)), voltage=np.zeros(29))
    assert "29" in one_line_error(cli("run", recipe, "--out", tmp_path / "a", "--data", tmp_path / "short.npz"))
    np.savez(tmp_path / "nan.npz", loops=np.full((4, 4, 30), np.nan), voltage=np.zeros(30))
    assert "NaN" in one_line_error(cli("run", recipe, "--out", tmp_path / "b", "--data", tmp_path / "nan.npz"))
    np.savez(tmp_path / "noloops.npz", voltage=np.zeros(30))
    one_line_error(cli("run", recipe, "--out", tmp_path / "c", "--data", tmp_path / "noloops.npz"))
    bad = tmp_path / "chan.yaml"
    bad.write_text(TINY + "data: {channel: nope}\n")
    assert "nope" in one_line_error(cli("run", bad, "--out", tmp_path / "d", "--data", tmp_path / "short.npz"))
    assert not any((tmp_path / n).exists() and any((tmp_path / n).iterdir()) for n in "abcd")


def test_other_layout_complex_file_with_outliers(recipe, tmp_path):
    from inverscope.datasets.synthetic_beps import other_layout_beps, write_nsid

    s = other_layout_beps(rows=30, cols=30, outlier_fraction=0.03, seed=1)
    path = write_nsid(tmp_path / "other.h5", s["response"], s["voltage"])
    assert "component=" in one_line_error(cli("run", recipe, "--out", tmp_path / "x", "--data", path))
    rec = tmp_path / "complex.yaml"
    rec.write_text(TINY + "data: {component: projected}\n")
    r = cli("run", rec, "--out", tmp_path / "o", "--data", path)
    assert r.returncode == 0, r.stderr
    assert "data check: loops 30x30x64" in r.stdout + r.stderr and "outlier pixels:" in r.stdout + r.stderr
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    truth = s["outliers"].ravel()
    found = m["data_check"]["outliers"]["count"]
    assert 0.95 * truth.sum() <= found <= truth.sum() + 3
    assert m["data_check"]["scaling"]["chosen"] != "global"
    assert m["model"]["n_train"] + m["model"]["n_test"] == 900 - found      # outliers are not trained on
    assert m["verdict"]["lead"] in ("pca", "autoencoder") and "PCA-" in m["verdict"]["text"]
    assert "outlier_pixels_mse" in m["model"]


def test_loops_that_are_not_loops(recipe, tmp_path):
    v = np.linspace(-5, 5, 32)                                   # a ramp: never turns around
    np.savez(tmp_path / "ramp.npz", loops=np.random.default_rng(0).standard_normal((4, 4, 32)), voltage=v)
    assert "never turns around" in one_line_error(cli("run", recipe, "--out", tmp_path / "a", "--data",
                                                      tmp_path / "ramp.npz"))
    loop_v = np.r_[np.linspace(-5, 5, 16), np.linspace(5, -5, 16)]
    np.savez(tmp_path / "zeros.npz", loops=np.zeros((4, 4, 32)), voltage=loop_v)
    assert "outlier" in one_line_error(cli("run", recipe, "--out", tmp_path / "b", "--data", tmp_path / "zeros.npz"))
    assert not any((tmp_path / n).exists() and any((tmp_path / n).iterdir()) for n in "ab")


def test_shipped_recipe_model_beats_pca_with_as_many_components(tmp_path):
    """The recipe's autoencoder (PCA-16 plus residual branches) against PCA-16 on the standard held-out split."""
    from pathlib import Path

    from inverscope.studies.pfm_switching import load_recipe_file, run_study

    recipe = load_recipe_file(Path(__file__).resolve().parents[2] / "recipes" / "pfm_switching.yaml")
    recipe = recipe.model_copy(update={"published_weights": False, "resonance": False,
                                       "train": recipe.train.model_copy(update={"progress_bar": False})})
    m = run_study(recipe, tmp_path / "o", log=lambda s: None)
    assert m["pca_same_components"]["n_components"] == 16
    assert abs(m["pca_same_components"]["heldout_mse"] - 0.00042) < 0.00002     # the PCA-16 figure
    assert m["verdict"]["autoencoder_beats_pca"] and m["model"]["heldout_mse"] < 0.97 * 0.000418
