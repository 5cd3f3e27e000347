"""Model-trained recognition of hysteresis loops (Ovchinnikov et al. PRL 2009; Kumar et al. PRB 2011).

Thin composition: random-bond random-field Ising loops (physics.ising) over a seeded (J0, dJ, dh)
family, stored as a Zarr loop set (datasets.loopset) -> both the set and the measured loops put on
the experiment's voltage axis by one rule (analysis.hysteresis).

Primary answer (``posterior``): the family is extended by measurement nuisances applied to the
stored loops (analysis.loop_family: background slope, imprint, field scale, branch asymmetry, a
second switching population, noise) -> an amortized neural posterior over (J0, dJ, dh) and the nuisances (analysis.posterior,
sbi NPE with a spline flow) -> coverage of the 50 % / 90 % credible intervals on held-out
simulations -> maps of posterior medians and 90 % interval widths, and a posterior-predictive
check that flags pixels whose loop the family cannot produce.

Comparisons: PCA + shallow MLP, a 1D CNN and PCA + ridge point estimates
(analysis.parameter_recognition, models.baselines) -> held-out R² per parameter -> their parameter
maps and a fit-quality map from re-simulating the predicted parameters -> report.html + metrics.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import Field

from inverscope.analysis.hysteresis import AlignmentConfig, align_measured, align_model, waveform_axis
from inverscope.analysis.loop_family import NuisanceConfig
from inverscope.analysis.parameter_recognition import ParameterRecognizer, RecognizerConfig
from inverscope.analysis.posterior import PosteriorConfig
from inverscope.core.config import StrictModel
from inverscope.core.errors import InverscopeError
from inverscope.core.io import write_json_atomic
from inverscope.datasets.io.beps import BEPSData, load_beps, load_example
from inverscope.datasets.loop_preprocess import format_check, prepare_loops
from inverscope.datasets.loopset import LoopSetConfig, build_loop_set
from inverscope.datasets.preprocess import interpolate_nonfinite
from inverscope.physics.ising import PARAMETERS, simulate_loops


class DataConfig(StrictModel):
    file: str | None = None               # None: the bundled PZT loops (Agar et al. 2019)
    channel: str | None = None
    voltage_key: str | None = None
    component: Literal["projected", "amplitude", "phase", "real", "imag"] | None = None   # complex responses


class PosteriorStudyConfig(StrictModel):
    """The primary answer: amortized posterior over (J0, dJ, dh) and the nuisances."""

    nuisance: NuisanceConfig = Field(default_factory=NuisanceConfig)
    estimator: PosteriorConfig = Field(default_factory=PosteriorConfig)
    draws_per_loop: int = Field(2, ge=1)            # nuisance draws per training loop (training pairs = this x n_train)
    calibration_sims: int = Field(1000, ge=10)      # held-out simulations (test loops) for coverage and the PPC
    ppc_draws: int = Field(32, ge=2)                # posterior samples per pixel in the predictive check
    ppc_replicas: int = Field(2, ge=1)              # replicated loops per sample
    ppc_quantile: float = Field(0.99, gt=0.5, lt=1)  # flag level: this quantile of the held-out simulations' misfit ratio


class Recipe(StrictModel):
    study: Literal["ising_recognition"] = "ising_recognition"
    name: str = "ising_recognition"
    loops: LoopSetConfig = Field(default_factory=LoopSetConfig)
    alignment: AlignmentConfig = Field(default_factory=AlignmentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    mlp: RecognizerConfig = Field(default_factory=RecognizerConfig)
    cnn: RecognizerConfig | None = Field(default_factory=lambda: RecognizerConfig(kind="cnn"))
    ridge_components: int = Field(16, ge=1)            # PCA + ridge baseline (0 rows: skipped)
    throughput_loops: int = Field(256, ge=0)           # loops timed for the simulator's loops/s (0: skip)
    posterior: PosteriorStudyConfig | None = Field(default_factory=PosteriorStudyConfig)   # null: point estimates only
    seed: int = 0


def _load(cfg: DataConfig, data_file: str | None) -> BEPSData:
    path = data_file or cfg.file
    if path is None:
        return load_example("pzt_piezoresponse")
    return load_beps(path, channel=cfg.channel, voltage_key=cfg.voltage_key, component=cfg.component)


def _check(recipe: Recipe) -> None:
    if recipe.alignment.field_at_vmax > recipe.loops.ising.field_max + 1e-12:
        raise InverscopeError(f"alignment.field_at_vmax: got {recipe.alignment.field_at_vmax}; it must not exceed "
                              f"loops.ising.field_max = {recipe.loops.ising.field_max} (the simulated sweep)")


def measure_throughput(recipe: Recipe, n: int) -> float:
    """Simulator loops per second on this machine: `n` fresh loops of the recipe's family, timed warm."""
    params = recipe.loops.sample_params()[:n]
    simulate_loops(params[:2], recipe.loops.ising, seed=recipe.seed + 1)          # compiled and warm
    t0 = time.perf_counter()
    simulate_loops(params, recipe.loops.ising, seed=recipe.seed + 1)
    return len(params) / (time.perf_counter() - t0)


def _recognizers(recipe: Recipe, x_tr, y_tr, x_te, y_te, out: Path, log) -> tuple[dict, dict]:
    from sklearn.metrics import r2_score

    from inverscope.models.baselines import baseline_predict, fit_baseline

    models, scores = {}, {}
    for key, cfg in (("pca_mlp", recipe.mlp), ("cnn", recipe.cnn)):
        if cfg is None:
            continue
        log(f"training {key} on {len(x_tr)} simulated loops")
        rec = ParameterRecognizer(cfg, PARAMETERS).fit(x_tr, y_tr, seed=recipe.seed)
        rec.save(out / "models" / key, {"alignment": recipe.alignment.model_dump(mode="json"),
                                        "loops": recipe.loops.model_dump(mode="json")})
        models[key] = rec
        scores[key] = {"r2": rec.score(x_te, y_te), "train_s": rec.fit_.wall_s, "epochs": rec.fit_.epochs}
    if recipe.ridge_components:
        base = fit_baseline("pca_ridge", x_tr, y_tr, recipe.ridge_components, recipe.seed)
        p = baseline_predict(base, x_te)
        scores["pca_ridge"] = {"r2": {n: float(r2_score(y_te[:, i], p[:, i])) for i, n in enumerate(PARAMETERS)}}
        models["pca_ridge"] = base
    return models, scores


def _fit_quality(recipe: Recipe, pred: np.ndarray, measured: np.ndarray, axis, x_tr) -> dict:
    """Re-simulate each pixel's predicted parameters (clipped to the training ranges) and compare."""
    from sklearn.neighbors import NearestNeighbors

    r = recipe.loops.ranges()
    clipped = np.clip(pred, r[:, 0], r[:, 1])
    sim = simulate_loops(clipped, recipe.loops.ising, seed=recipe.seed + 2)
    model = align_model(sim.field, sim.m_up, sim.m_down, axis, recipe.alignment)
    rmse = np.sqrt(np.mean((model - measured) ** 2, axis=1))
    nn = NearestNeighbors(n_neighbors=1).fit(x_tr)
    dist, _ = nn.kneighbors(measured)
    outside = np.any((pred < r[:, 0]) | (pred > r[:, 1]), axis=1)
    return {"model_loops": model, "rmse": rmse, "library_rmse": dist[:, 0] / np.sqrt(measured.shape[1]),
            "outside": outside}


def _outliers(flat: np.ndarray, grid: tuple[int, int] | None = None) -> tuple[np.ndarray, dict]:
    """Outlier pixels (datasets.loop_preprocess.find_outlier_pixels, against the map and the neighbourhood)."""
    from inverscope.datasets.loop_preprocess import find_outlier_pixels

    mask, info = find_outlier_pixels(flat, grid=grid)
    return np.asarray(mask, bool), {"available": True, **{k: v for k, v in dict(info).items()
                                                          if isinstance(v, (int, float, str, bool))}}


def _frac(x) -> float | None:
    x = np.asarray(x)
    return float(x.mean()) if x.size else None


def _posterior(recipe: Recipe, ls, tr, te, axis, flat, library_rmse, log, grid=None) -> tuple[dict, dict]:
    """Train the amortized posterior on the nuisance family, calibrate it, map the measured loops."""
    from sklearn.neighbors import NearestNeighbors

    from inverscope.analysis.loop_family import LoopFamily
    from inverscope.analysis.posterior import (AmortizedPosterior, calibrate_ppc, central_coverage,
                                               posterior_predictive_check, sbc_ranks, summarize)

    pc = recipe.posterior
    r = recipe.loops.ranges()
    cfg = recipe.alignment.model_copy(update={"remove_imprint": False})      # imprint is a family parameter
    measured = align_measured(flat, axis, cfg).loops
    fam = LoopFamily(ls.field, ls.m_up[tr], ls.m_down[tr], ls.params[tr], r, axis, cfg, pc.nuisance, PARAMETERS)
    held = LoopFamily(ls.field, ls.m_up[te], ls.m_down[te], ls.params[te], r, axis, cfg, pc.nuisance, PARAMETERS)
    names = fam.names
    rng = np.random.default_rng(np.random.SeedSequence([recipe.seed, 0x9057]))
    theta, x = fam.draw(np.tile(np.arange(len(tr)), pc.draws_per_loop), rng)
    log(f"training the posterior ({pc.estimator.density_estimator}) on {len(theta)} simulated loops "
        f"({len(names)} parameters)")
    t = time.perf_counter()
    post = AmortizedPosterior(fam.low, fam.high, names, pc.estimator).fit(theta, x, seed=recipe.seed)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    nc = min(pc.calibration_sims, len(te))
    theta_c, x_c = held.draw(np.arange(nc), rng)
    s_c = post.sample(x_c, seed=recipe.seed + 1)
    coverage = central_coverage(theta_c, s_c, (0.5, 0.9), names)
    ppc_kw = dict(draws=pc.ppc_draws, replicas=pc.ppc_replicas, seed=recipe.seed + 2)
    half = nc // 2                 # the flag level from one half of the held-out simulations, checked on the other
    ref = posterior_predictive_check(x_c[:half], s_c[:half], fam.predict, fam.replicate, **ppc_kw)
    threshold = calibrate_ppc(ref, pc.ppc_quantile)
    ppc_kw["threshold"] = threshold
    ppc_c = posterior_predictive_check(x_c[half:], s_c[half:], fam.predict, fam.replicate, **ppc_kw)
    calib_s = time.perf_counter() - t
    log(f"sampling the posterior of {len(measured)} measured loops and checking them against the family")
    t = time.perf_counter()
    s_m = post.sample(measured, seed=recipe.seed + 3)
    summ = summarize(s_m, (0.5, 0.9))
    ppc_m = posterior_predictive_check(measured, s_m, fam.predict, fam.replicate, **ppc_kw)
    med = summ["median"]
    resim, resim_rmse = {}, {}
    for key, point in (("median", med), ("best", ppc_m.best_theta)):     # re-simulated (Ising run again), not looked up
        sim = simulate_loops(point[:, :3], recipe.loops.ising, seed=recipe.seed + 4)
        resim[key] = fam.render_branches(sim.field, sim.m_up, sim.m_down, np.arange(len(point)), point[:, 3:])
        resim_rmse[key] = np.sqrt(np.mean((resim[key] - measured) ** 2, axis=1))
    dist, _ = NearestNeighbors(n_neighbors=1).fit(x).kneighbors(measured)         # the training set itself
    train_nn_rmse = dist[:, 0] / np.sqrt(measured.shape[1])
    map_s = time.perf_counter() - t
    outlier, outlier_info = _outliers(flat, grid)
    inl = ~outlier
    lo, hi = summ["interval"][0.9]
    outside = np.any((s_m < fam.low) | (s_m > fam.high), axis=(1, 2))
    metrics = {
        "method": f"sbi NPE ({pc.estimator.density_estimator} flow) on logit-box parameters, features: "
                  + (f"{pc.estimator.features} PCA scores + log residual" if pc.estimator.features else "raw loop"),
        "parameters": list(names),
        "prior": {n: [float(a), float(b)] for n, a, b in zip(names, fam.low, fam.high)},
        "n_train_pairs": len(theta), "epochs": post.fit_.epochs,
        "best_validation_loss": post.fit_.best_validation_loss,
        "coverage": {"n_heldout": nc, "by_parameter": coverage,
                     "mean": {lev: float(np.mean([c[lev] for c in coverage.values()])) for lev in ("0.5", "0.9")},
                     "max_abs_error": float(max(abs(c[lev] - float(lev)) for c in coverage.values()
                                                for lev in ("0.5", "0.9")))},
        "ppc": {"statistic": "RMS misfit to posterior-predictive loops / RMS misfit expected of the family's own loops",
                "threshold": threshold, "quantile": pc.ppc_quantile, "calibrated_on": half,
                "heldout_flagged_fraction": float(ppc_c.flagged.mean()), "heldout_checked": nc - half},
        "heldout_best_rmse_median": float(np.median(ppc_c.best_rmse)),
        "experiment": {
            "parameter_median": {n: float(np.median(med[:, i])) for i, n in enumerate(names)},
            "interval90_width_median": {n: float(np.median(hi[:, i] - lo[:, i])) for i, n in enumerate(names)},
            "outside_prior_fraction": float(outside.mean()),
            "flagged_fraction": float(ppc_m.flagged.mean()),
            "flagged_fraction_inliers": _frac(ppc_m.flagged[inl]),
            "outlier_pixels": int(outlier.sum()), "outliers": outlier_info,
            "flagged_fraction_outliers": _frac(ppc_m.flagged[outlier]),
            "ppc_ratio_median": float(np.median(ppc_m.ratio)),
            "ppc_discrepancy_median": float(np.median(ppc_m.discrepancy)),
            "resim_median_rmse_median": float(np.median(resim_rmse["median"])),
            "resim_best_sample_rmse_median": float(np.median(resim_rmse["best"])),
            "best_sample_lookup_rmse_median": float(np.median(ppc_m.best_rmse)),
            "nearest_training_loop_rmse_median": float(np.median(train_nn_rmse)),
            "nearest_library_loop_rmse_median": float(np.median(library_rmse)),
            "imprint_v_median": float(np.median(med[:, names.index("imprint")]) / axis.scale)},
        "timings_s": {"train": train_s, "calibrate": calib_s, "map": map_s}}
    extra = {"names": names, "samples": s_m, "summary": summ, "ppc": ppc_m, "ppc_heldout": ppc_c,
             "measured": measured, "resim": resim["median"], "resim_rmse": resim_rmse["median"],
             "resim_best": resim["best"], "resim_best_rmse": resim_rmse["best"], "outlier": outlier,
             "ranks": sbc_ranks(theta_c, s_c), "n_samples": s_c.shape[1], "coverage": coverage,
             "theta_c": theta_c, "s_c": s_c, "family": fam}
    return metrics, extra


#: RunOptions fields this study uses (see inverscope.studies)
OPTIONS = frozenset({"data_file"})


def run_study(recipe: Recipe, out_dir, *, data_file: str | None = None, log: Callable[[str], None] = print,
              progress=None, options=None) -> dict:
    """Simulate (or resume) the loop set, train the recognizers, map the measured loops, report.

    The recipe, the output directory and (unless ``options.check_resources`` is false) the
    memory and disk of the loop set are checked before anything is written.
    """
    from inverscope.core.io import check_output_path
    from inverscope.datasets.loopset import estimate_resources
    from inverscope.studies import RunOptions
    from inverscope.studies.ising_report import write_report

    check_resources = (options or RunOptions()).check_resources

    t0 = time.perf_counter()
    _check(recipe)
    check_output_path(out_dir)
    if check_resources:
        estimate_resources(recipe.loops).check(disk_path=out_dir)
    data = _load(recipe.data, data_file)
    rows, cols, steps = data.loops.shape
    check = prepare_loops(data.loops, data.voltage).report      # refuses a waveform that is not a closed loop
    log(format_check(check))
    axis = waveform_axis(data.voltage, recipe.alignment)
    flat = interpolate_nonfinite(data.flat())
    aligned = align_measured(flat, axis, recipe.alignment)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)        # only once the recipe and the data passed their checks
    timings = {}
    n = recipe.loops.num_loops
    log(f"simulating {n} loops ({'x'.join(map(str, recipe.loops.ising.lattice))}, "
        f"{recipe.loops.ising.realizations} realizations) into {out / 'loopset.zarr'}")
    ls = build_loop_set(recipe.loops, out / "loopset.zarr")
    timings["simulate_s"] = ls.simulate_s
    t = time.perf_counter()
    x = align_model(ls.field, ls.m_up, ls.m_down, axis, recipe.alignment).astype(np.float32)
    perm = np.random.default_rng(recipe.seed).permutation(n)
    n_te = max(1, int(round(recipe.test_fraction * n)))
    te, tr = np.sort(perm[:n_te]), np.sort(perm[n_te:])
    models, scores = _recognizers(recipe, x[tr], ls.params[tr], x[te], ls.params[te], out, log)
    timings["train_s"] = time.perf_counter() - t
    log(f"recognizing {rows}x{cols} measured loops and re-simulating the predicted parameters")
    t = time.perf_counter()
    primary = models["pca_mlp"] if "pca_mlp" in models else next(iter(models.values()))
    pred = primary.predict(aligned.loops)
    fq = _fit_quality(recipe, pred, aligned.loops, axis, x[tr])
    timings["experiment_s"] = time.perf_counter() - t
    pm, pextra = (None, None)
    if recipe.posterior is not None:
        t = time.perf_counter()
        pm, pextra = _posterior(recipe, ls, tr, te, axis, flat, fq["library_rmse"], log, grid=(rows, cols))
        timings["posterior_s"] = time.perf_counter() - t
    loops_per_s = measure_throughput(recipe, recipe.throughput_loops) if recipe.throughput_loops else None
    r = recipe.loops.ranges()
    m = {"recipe": recipe.name,
         "data": {"source": data.source, "shape": [rows, cols, steps]}, "data_check": check,
         "simulator": {"loops_per_s": loops_per_s, "lattice": recipe.loops.ising.lattice,
                       "field_steps_per_branch": recipe.loops.ising.field_steps,
                       "realizations": recipe.loops.ising.realizations,
                       "loopset_loops_per_s": ls.simulated / ls.simulate_s if ls.simulated else None},
         "loopset": {"num_loops": n, "simulated_now": ls.simulated, "n_train": len(tr), "n_test": len(te),
                     "ranges": {p: list(r[i]) for i, p in enumerate(PARAMETERS)}},
         "self_recognition": scores,
         "experiment": {"parameter_median": {p: float(np.median(pred[:, i])) for i, p in enumerate(PARAMETERS)},
                        "outside_training_range_fraction": float(fq["outside"].mean()),
                        "fit_rmse_median": float(np.median(fq["rmse"])),
                        "fit_rmse_p90": float(np.percentile(fq["rmse"], 90)),
                        "nearest_library_loop_rmse_median": float(np.median(fq["library_rmse"])),
                        "imprint_v_median": float(np.median(aligned.imprint_v)), "sign": aligned.sign}}
    if pm is not None:
        m["posterior"] = pm
        lo, hi = pextra["summary"]["interval"][0.9]
        np.savez_compressed(out / "posterior_maps.npz", names=np.array(pextra["names"]), grid=np.array([rows, cols]),
                            median=pextra["summary"]["median"], lower90=lo, upper90=hi,
                            flagged=pextra["ppc"].flagged, ppc_ratio=pextra["ppc"].ratio,
                            outlier=pextra["outlier"], resim_rmse=pextra["resim_rmse"])
        pm["maps_file"] = "posterior_maps.npz"     # per pixel (row-major): median, 90 % bounds, flags, misfit
    timings["total_s"] = time.perf_counter() - t0
    m["timings_s"] = timings
    extra = {"ls": ls, "x": x, "te": te, "models": models, "axis": axis, "aligned": aligned, "pred": pred,
             "fq": fq, "grid": (rows, cols), "raw": data.flat(), "posterior": pextra}
    write_report(recipe, m, extra, out)
    write_json_atomic(out / "metrics.json", m)
    return m


def summary(m: dict) -> str:
    r2 = m["self_recognition"].get("pca_mlp", next(iter(m["self_recognition"].values())))["r2"]
    rate = m["simulator"]["loops_per_s"]
    text = ""
    if "posterior" in m:
        p = m["posterior"]
        text = (f"posterior coverage 50 % {p['coverage']['mean']['0.5']:.2f}, 90 % {p['coverage']['mean']['0.9']:.2f}; "
                f"flagged {100 * p['experiment']['flagged_fraction']:.0f} % of pixels; ")
    return (text + "held-out R² " + ", ".join(f"{k} {v:.3f}" for k, v in r2.items())
            + (f"; simulator {rate:.0f} loops/s" if rate else ""))
