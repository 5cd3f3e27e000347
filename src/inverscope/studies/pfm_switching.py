"""BE-PFM switching study (Agar et al. 2019): a sparse autoencoder on real PZT hysteresis loops.

Thin composition: loader (datasets.io.beps) -> published preprocessing (datasets.preprocess)
-> seeded 80/20 split by pixel -> autoencoder (models.nets, training.autoencoder) -> held-out
MSE next to PCA with as many components as active latents, the imported published weights,
PCA(16)/NMF/divisive k-means maps (analysis.decomposition) -> report.html + metrics.json.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import Field

from inverscope.core.config import StrictModel
from inverscope.core.errors import InverscopeError
from inverscope.core.io import write_json_atomic
from inverscope.datasets.io.beps import BEPSData, load_beps, load_example
from inverscope.datasets.loop_preprocess import format_check, prepare_loops
from inverscope.models.io import save_model
from inverscope.models.nets import build_net
from inverscope.training.autoencoder import AETrainConfig, fit_autoencoder, reconstruct


class DataConfig(StrictModel):
    file: str | None = None            # None: the bundled PZT piezoresponse loops
    channel: str | None = None
    voltage_key: str | None = None
    component: Literal["projected", "amplitude", "phase", "real", "imag"] | None = Field(
        None, description="for a complex response: which real loops to analyse (datasets.io.beps.load_beps)")
    range_filter: tuple[float, float] | None = None
    scaling: Literal["auto", "global", "robust", "per_pixel"] = Field(
        "auto", description="datasets.loop_preprocess.prepare_loops; auto is recorded with its reason")
    outlier_threshold: float | None = Field(
        5.0, gt=0, description="robust sd of log loop amplitude that make a pixel an outlier; null keeps all")


class ModelConfig(StrictModel):
    architecture: Literal["pca_residual_ae", "sparse_conv_ae", "bilstm_ae"] = "pca_residual_ae"
    config: dict = Field(default_factory=dict)


class PFMRecipe(StrictModel):
    study: Literal["pfm_switching"] = "pfm_switching"
    name: str = "pfm_switching"
    data: DataConfig = Field(default_factory=DataConfig)
    train_fraction: float = Field(0.8, gt=0, lt=1)
    split_seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: AETrainConfig = Field(default_factory=AETrainConfig)
    #: also train the published BiLSTM from scratch for this many minutes (0: skip)
    published_architecture_minutes: float = Field(0.0, ge=0)
    published_architecture_epochs: int = Field(20, ge=1)
    published_weights: bool = True     # import the published Keras weights (bundled data only)
    resonance: bool = True             # the published resonance model on the bundled resonance loops
    pca_components: int = Field(16, ge=1)
    nmf_components: int = Field(4, ge=1)
    seed: int = 0


def load_data(cfg: DataConfig, data_file: str | None = None) -> tuple[BEPSData, bool]:
    """The loops to analyse and whether they are the bundled example."""
    path = data_file or cfg.file
    if path is None:
        return load_example("pzt_piezoresponse"), True
    return load_beps(path, channel=cfg.channel, voltage_key=cfg.voltage_key, component=cfg.component), False


def _published(data_dir_name: str):
    from importlib.resources import files

    from inverscope.models.keras_import import load_keras_bilstm_weights

    return load_keras_bilstm_weights(str(files("inverscope") / "data" / "agar2019" / "keras" / data_dir_name))


def _net_config(arch: str, config: dict, steps: int) -> dict:
    """The network config `arch` is built from, checked (unknown keys, bad values: one-line ConfigError)."""
    from inverscope.core.config import validate
    from inverscope.models.nets import NETS

    full = {"steps": steps, "latent": 16, **config}
    validate(NETS[arch][1], full, "model.config")
    return full


def _train(arch: str, config: dict, train_x, test_x, out: Path, name: str, cfg: AETrainConfig):
    config = _net_config(arch, config, train_x.shape[1])
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        net = build_net(arch, config)
    if hasattr(net, "init_from_data"):           # e.g. pca_residual_ae starts from PCA of the training loops
        net.init_from_data(train_x)
    res = fit_autoencoder(net, train_x, test_x, cfg, out / "training", name)
    rec, _ = reconstruct(net, test_x)
    return net, res, float(np.mean((rec - test_x) ** 2))


Recipe = PFMRecipe

#: RunOptions fields this study uses (see inverscope.studies)
OPTIONS = frozenset({"data_file"})


def summary(m: dict) -> str:
    """The headline figures: held-out MSE of the model beside PCA with as many components."""
    pca = m["pca_same_components"]
    return f"held-out MSE {m['model']['heldout_mse']:.5f}, PCA-{pca['n_components']} {pca['heldout_mse']:.5f}"


def run_study(recipe: PFMRecipe, out_dir, *, data_file: str | None = None, log: Callable[[str], None] = print,
              progress=None, options=None) -> dict:
    """Train the autoencoder on the bundled or the user's loops, compare with PCA/NMF, report."""
    from inverscope.analysis.decomposition import active_latents, divisive_kmeans, nmf_baseline, pca_baseline
    from inverscope.core.io import check_output_path
    from inverscope.studies.pfm_report import write_report

    if options is not None and options.quiet:
        recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"progress_bar": False})})

    out = Path(out_dir)
    check_output_path(out)
    t0 = time.perf_counter()
    data, bundled = load_data(recipe.data, data_file)
    rows, cols, steps = data.loops.shape
    threshold = recipe.data.outlier_threshold if recipe.data.outlier_threshold is not None else math.inf
    prep = prepare_loops(data.loops, data.voltage, scaling=recipe.data.scaling, outlier_threshold=threshold,
                         resonance_range=recipe.data.range_filter)
    x = prep.x
    log(format_check(prep.report))
    _net_config(recipe.model.architecture, recipe.model.config, steps)
    perm = np.random.default_rng(recipe.split_seed).permutation(len(x))
    n_train = int(round(recipe.train_fraction * len(x)))
    tr_idx, te_idx = np.sort(perm[:n_train]), np.sort(perm[n_train:])
    tr_idx, te_idx = tr_idx[~prep.outliers[tr_idx]], te_idx[~prep.outliers[te_idx]]   # outliers: predicted only
    if len(tr_idx) < 2 or len(te_idx) < 1:
        raise InverscopeError(f"loops: {len(tr_idx)} training and {len(te_idx)} held-out inlier pixels after "
                              f"removing {int(prep.outliers.sum())} outliers; need at least 2 and 1")
    out.mkdir(parents=True, exist_ok=True)  # only once the recipe and the data passed their checks
    log(f"{rows}x{cols} loops of {steps} steps from {data.source}; training {recipe.model.architecture} on "
        f"{len(tr_idx)} inlier pixels")
    net, res, mse = _train(recipe.model.architecture, recipe.model.config, x[tr_idx], x[te_idx], out,
                           "model", recipe.train)
    rec_all, z_all = reconstruct(net, x)
    active = active_latents(z_all[~prep.outliers])
    save_model(out / "models" / "autoencoder", net, recipe.model.architecture,
               {"task": "autoencoder", "normalization": prep.scaler.to_dict(), "voltage": data.voltage.tolist(),
                "channel": data.channel, "active_latents": active})
    m = {"recipe": recipe.name, "data": {"source": data.source, "shape": [rows, cols, steps]},
         "data_check": prep.report,
         "model": {"architecture": recipe.model.architecture, "heldout_mse": mse, "active_latents": active,
                   "train_wall_s": res.wall_s, "epochs": res.epochs, "n_train": len(tr_idx), "n_test": len(te_idx)}}
    if prep.outliers.any():
        m["model"]["outlier_pixels_mse"] = float(np.mean((rec_all[prep.outliers] - x[prep.outliers]) ** 2))
    n_pca = max(1, len(active))
    m["pca_same_components"] = {"n_components": n_pca, "heldout_mse": pca_baseline(x[tr_idx], x[te_idx], n_pca)["heldout_mse"]}
    m["pca5_heldout_mse"] = pca_baseline(x[tr_idx], x[te_idx], 5)["heldout_mse"]
    m["verdict"] = _verdict(m)
    log(m["verdict"]["text"])
    extra = {"x": x, "z": z_all, "net": net, "history": res.history, "voltage": data.voltage, "grid": (rows, cols),
             "outliers": prep.outliers, "amplitude": prep.scale}
    if recipe.published_architecture_minutes > 0:
        log(f"training the published BiLSTM from scratch for {recipe.published_architecture_minutes} min")
        # sigmoid gates run on torch's fused LSTM kernel; the schedule is sized to the time budget
        cfg = recipe.train.model_copy(update={"max_minutes": recipe.published_architecture_minutes, "lr": 3e-3,
                                              "max_epochs": recipe.published_architecture_epochs, "batch_size": 256})
        _, res_b, mse_b = _train("bilstm_ae", {"gate": "sigmoid"}, x[tr_idx], x[te_idx], out,
                                 "published_architecture", cfg)
        m["published_architecture_from_scratch"] = {"heldout_mse": mse_b, "epochs": res_b.epochs, "train_wall_s": res_b.wall_s}
    if recipe.published_weights and bundled and steps == 96:
        log("importing the published Keras weights")
        pub, _ = _published("piezoresponse_weights.hdf5")
        rec_p, z_p = reconstruct(pub, x)
        ref = np.load(Path(__file__).resolve().parents[1] / "data" / "agar2019" / "published_piezoresponse_embeddings.npy")
        act_p = active_latents(z_p)
        corr = {str(i): float(np.corrcoef(z_p[:, i], ref[:, i])[0, 1]) for i in act_p}
        m["published_weights"] = {"mse_all": float(np.mean((rec_p - x) ** 2)),
                                  "heldout_mse": float(np.mean((rec_p[te_idx] - x[te_idx]) ** 2)),
                                  "active_latents": act_p, "latent_correlation": corr,
                                  "min_latent_correlation": min(corr.values()) if corr else None}
        extra["published"] = (pub, z_p)
    if recipe.resonance and bundled:
        res_data = load_example("pzt_resonance").flat().astype(np.float32)
        pub_r, _ = _published("resonance_weights.hdf5")
        rec_r, z_r = reconstruct(pub_r, res_data)
        m["resonance_published_weights"] = {"mse_all": float(np.mean((rec_r - res_data) ** 2)),
                                            "active_latents": active_latents(z_r)}
        extra["resonance"] = (pub_r, z_r)
    log("baselines: PCA, NMF, divisive k-means (fitted on inlier pixels)")
    extra["pca"] = pca_baseline(x[tr_idx], x[te_idx], min(recipe.pca_components, steps))
    inliers = prep.inliers
    extra["nmf"] = nmf_baseline(x[inliers], recipe.nmf_components, recipe.seed)
    extra["kmeans"] = divisive_kmeans(x[inliers], recipe.seed)
    extra["nmf"]["maps"] = _on_grid(extra["nmf"]["maps"], inliers, len(x))
    extra["kmeans"]["combined"] = _on_grid(extra["kmeans"]["combined"], inliers, len(x))
    m["pca16_heldout_mse"] = extra["pca"]["heldout_mse"]
    m["nmf_mse"] = extra["nmf"]["mse"]
    m["nmf_converged"] = extra["nmf"]["converged"]
    m["timings_s"] = {"total_s": time.perf_counter() - t0}
    write_report(recipe, m, extra, out)
    write_json_atomic(out / "metrics.json", m)
    return m


def _on_grid(values: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """`values` of the pixels `rows` placed among all `n` pixels, NaN elsewhere (outliers)."""
    full = np.full((n, *values.shape[1:]), np.nan)
    full[rows] = values
    return full


def _verdict(m: dict) -> dict:
    """Does the autoencoder beat PCA with as many components as it has active latents, on held-out loops?"""
    ae, pca = m["model"]["heldout_mse"], m["pca_same_components"]
    k = pca["n_components"]
    wins = ae < pca["heldout_mse"]
    text = (f"the autoencoder ({len(m['model']['active_latents'])} active latents) reconstructs held-out loops "
            f"{'better' if wins else 'worse'} than PCA-{k}: MSE {ae:.3g} vs {pca['heldout_mse']:.3g} "
            f"({pca['heldout_mse'] / ae if wins else ae / pca['heldout_mse']:.2f}x)"
            + ("" if wins else f"; on this dataset PCA-{k} is the better description, and the report leads with it"))
    return {"autoencoder_beats_pca": bool(wins), "lead": "autoencoder" if wins else "pca", "text": text}


def load_recipe_file(path) -> PFMRecipe:
    from inverscope.core.config import load_yaml

    return load_yaml(path, PFMRecipe)
