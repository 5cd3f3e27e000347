"""Model-trained recognition of hysteresis loops (Ovchinnikov et al. PRL 2009; Kumar et al. PRB 2011).

Thin composition: random-bond random-field Ising loops (physics.ising) over a seeded (J0, dJ, dh)
family, stored as a Zarr loop set (datasets.loopset) -> both the set and the measured loops put on
the experiment's voltage axis by one rule (analysis.hysteresis) -> PCA + shallow MLP, a 1D CNN and
PCA + ridge (analysis.parameter_recognition, models.baselines) -> held-out R² per parameter ->
parameter maps of the measured grid and a fit-quality map from re-simulating the predicted
parameters -> report.html + metrics.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import Field

from inverscope.analysis.hysteresis import AlignmentConfig, align_measured, align_model, waveform_axis
from inverscope.analysis.parameter_recognition import ParameterRecognizer, RecognizerConfig
from inverscope.core.config import StrictModel
from inverscope.core.errors import InverscopeError
from inverscope.core.io import write_json_atomic
from inverscope.datasets.io.beps import BEPSData, load_beps, load_example
from inverscope.datasets.loopset import LoopSetConfig, build_loop_set
from inverscope.datasets.preprocess import interpolate_nonfinite
from inverscope.physics.ising import PARAMETERS, simulate_loops


class DataConfig(StrictModel):
    file: str | None = None               # None: the bundled PZT loops (Agar et al. 2019)
    channel: str | None = None
    voltage_key: str | None = None


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
    seed: int = 0


def _load(cfg: DataConfig, data_file: str | None) -> BEPSData:
    path = data_file or cfg.file
    if path is None:
        return load_example("pzt_piezoresponse")
    return load_beps(path, channel=cfg.channel, voltage_key=cfg.voltage_key)


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
    axis = waveform_axis(data.voltage, recipe.alignment)
    aligned = align_measured(interpolate_nonfinite(data.flat()), axis, recipe.alignment)
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
    loops_per_s = measure_throughput(recipe, recipe.throughput_loops) if recipe.throughput_loops else None
    r = recipe.loops.ranges()
    m = {"recipe": recipe.name,
         "data": {"source": data.source, "shape": [rows, cols, steps]},
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
    timings["total_s"] = time.perf_counter() - t0
    m["timings_s"] = timings
    extra = {"ls": ls, "x": x, "te": te, "models": models, "axis": axis, "aligned": aligned, "pred": pred,
             "fq": fq, "grid": (rows, cols), "raw": data.flat()}
    write_report(recipe, m, extra, out)
    write_json_atomic(out / "metrics.json", m)
    return m


def summary(m: dict) -> str:
    r2 = m["self_recognition"].get("pca_mlp", next(iter(m["self_recognition"].values())))["r2"]
    rate = m["simulator"]["loops_per_s"]
    return ("held-out R² " + ", ".join(f"{k} {v:.3f}" for k, v in r2.items())
            + (f"; simulator {rate:.0f} loops/s" if rate else ""))
