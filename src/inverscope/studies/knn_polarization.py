"""KNN polarization benchmark (Martinc et al., arXiv:2603.15582): which machine-learning approach
reads the local polarization of (K,Na)NbO3 from 4D-STEM, and how it fails off its training data.

A thin composition of general parts:

1. labeled 4D-STEM of the polar variants down [001]pc (:mod:`inverscope.datasets.polar_campaign`,
   resumable Zarr stores in ``OUT/data``): training stores (several K/Na configurations on a dense
   probe grid), an in-domain test store (another K/Na configuration, probe positions on another
   grid: held-out positions) and one store per simulated shift (phonons, virtual crystal, KNbO3,
   defocus, tilt, voltage, convergence angle, supercell size; the 50 nm exit of the same pass);
2. the networks of :mod:`inverscope.models.nets.pattern_classifiers` trained from scratch under the
   regimes of :mod:`inverscope.training.regimes` (classification, unit-vector regression,
   prototypes; with and without CoM filtering), several seeds each;
3. baselines in the same pass: PCA + kNN (standardized), the centre of mass relative to the scan
   mean mapped to 8 sectors (plain and thresholded), Friedel-asymmetry moments with logistic
   regression (:mod:`inverscope.analysis.com`);
4. the shift matrix: every model on every test condition, microscope shifts applied to the
   in-domain test patterns (:mod:`inverscope.datasets.shifts`) and the simulated ones, all
   combined; an unsupervised gap score and its rank agreement with the measured drops;
5. periodic misclassification: errors folded into the unit cell, their share at lattice
   harmonics, accuracy above and below the mean |CoM|;
6. defect detection on simulated scenes (:mod:`inverscope.physics.structures.polar_defects`):
   anomaly scores (:mod:`inverscope.analysis.anomaly`) against truth masks, wall position error;
7. ``OUT/metrics.json``, ``OUT/report.html``, the trained networks in ``OUT/models`` (read by
   ``inverscope predict``).

Labels: the class of a pattern is the projected-polarization class of its variant down [001]pc
(8 classes, 45 degrees apart, :func:`~inverscope.physics.structures.polar.projection_classes`);
the component of P along the beam is invisible to the simulation (see the campaign module).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from inverscope.core.config import StrictModel
from inverscope.core.errors import ConfigError, InverscopeError
from inverscope.core.io import check_output_path, exclusive_lock, write_json_atomic
from inverscope.datasets.polar_campaign import PolarCampaignConfig
from inverscope.datasets.shifts import SHIFT_GRID, ShiftSpec

#: RunOptions fields this study uses (see inverscope.studies)
OPTIONS = frozenset({"scheduler", "workers"})

#: one variant per projected class down [001]pc (the other four repeat a class exactly)
EIGHT_VARIANTS = ["[101]", "[110]", "[011]", "[-110]", "[-101]", "[-1-10]", "[0-11]", "[1-10]"]
REGIMES = ("classification", "regression", "prototype")
ARCHITECTURES = ("polarization_cnn", "vgg_pattern", "resnet_pattern")
SCENES = ("wall_180", "wall_90", "inclined")
#: simulated-shift override keys besides the campaign's own fields
_SHIFT_KEYS = {"exit_nm"}


def _default_campaign() -> PolarCampaignConfig:
    return PolarCampaignConfig(variants=list(EIGHT_VARIANTS), na_fraction=0.5, thicknesses_nm=[20.0, 50.0])


class DataSpec(StrictModel):
    """The simulated data: one base campaign, training seeds, the held-out test grid."""

    campaign: PolarCampaignConfig = Field(default_factory=_default_campaign,
                                          description="base polar_4d campaign (specimen, microscope, detector)")
    train_seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1,
                                   description="K/Na configurations (campaign seeds) of the training set")
    train_positions_per_cell: int = Field(16, ge=1, le=64)
    test_seed: int = Field(100, ge=0, description="K/Na configuration of every test store")
    test_positions_per_cell: int = Field(7, ge=1, le=64, description="another grid: held-out probe positions")
    scan_area: Literal["supercell", "cell"] = Field(
        "supercell", description="probe positions over the whole supercell, or over one pc cell of it (a larger "
        "supercell at the cost of one; patterns of a 2 x 2 cell differ from those of larger ones: BENCHMARKS.md)")
    train_thickness_nm: float = Field(20.0, gt=0, description="exit the networks train on (one of thicknesses_nm)")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    recentre: bool = Field(True, description="shift every pattern by minus the CoM mean over its data set before "
                           "the models see it (the reference code's CoM-corrected crop): undoes a uniform descan; "
                           "the offset found is recorded")
    per_pixel_standardization: bool = Field(True, description="standardize each detector pixel (True) or the "
                                            "whole pattern with two scalars (False); see analysis.polar_models")

    @model_validator(mode="after")
    def _check(self):
        if self.train_thickness_nm not in self.campaign.thicknesses_nm:
            raise ConfigError(f"data.train_thickness_nm: {self.train_thickness_nm} is not one of "
                              f"campaign.thicknesses_nm {self.campaign.thicknesses_nm}")
        if self.test_seed in self.train_seeds:
            raise ConfigError(f"data.test_seed: {self.test_seed} is also a training seed; the test configuration "
                              "must be held out")
        return self


class ModelSpec(StrictModel):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    architecture: Literal["polarization_cnn", "vgg_pattern", "resnet_pattern"]
    config: dict = Field(default_factory=dict, description="network config (input_size, head, outputs are set here)")
    embedding_dim: int = Field(32, ge=2, description="prototype regime: embedding width")
    seeds: list[int] | None = Field(None, min_length=1, description="this model's seeds (default: training.seeds)")


def _default_models() -> list[ModelSpec]:
    return [ModelSpec(name="cnn", architecture="polarization_cnn"),
            ModelSpec(name="vgg11", architecture="vgg_pattern", config={"depth": 11, "width": 0.25}),
            ModelSpec(name="resnet18", architecture="resnet_pattern", config={"depth": 18, "width": 0.25})]


class TrainingSpec(StrictModel):
    regimes: list[Literal["classification", "regression", "prototype"]] = Field(
        default_factory=lambda: ["classification"], min_length=1)
    filtering: list[bool] = Field(default_factory=lambda: [False], min_length=1,
                                  description="train only on |CoM| above the scan mean (True), all (False), or both")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    max_minutes: float | None = Field(None, gt=0, description="wall-clock budget per network")
    device: str = Field("cpu", description="torch device for training, or auto (cuda when there is one)")


class BaselineSpec(StrictModel):
    pca_components: int = Field(20, ge=1)
    knn_k: int = Field(5, ge=1)
    com_threshold: float = Field(0.5, ge=0, lt=1, description="thresholded CoM: pixels below this fraction of "
                                 "the pattern's maximum are dropped")
    friedel: bool = True
    linear: bool = Field(True, description="logistic regression on the standardized pixels")
    linear_c: float = Field(1.0, gt=0, description="its inverse L2 strength")


def _default_applied() -> list[str]:
    return ["descan_0.5px", "descan_2px", "descan_8px", "rotation_2deg", "rotation_5deg", "dose_1e4", "dose_1e3",
            "blur_1px"]


class ShiftsSpec(StrictModel):
    """Test conditions besides the in-domain test set."""

    applied: list[str] = Field(default_factory=_default_applied,
                               description=f"names of datasets.shifts.SHIFT_GRID: {', '.join(SHIFT_GRID)}")
    simulated: dict[str, dict] = Field(default_factory=dict, description="name -> campaign fields changed from the "
                                       "test store (and exit_nm: which exit to read)")
    combined: dict | None = Field(None, description="{simulated: NAME, applied: [NAMES]}: all at once")
    gap_method: Literal["mmd", "frechet", "knn"] = "mmd"

    @field_validator("applied")
    @classmethod
    def _applied(cls, v):
        bad = [n for n in v if n not in SHIFT_GRID or n == "none"]
        if bad:
            raise ValueError(f"unknown shift {bad[0]!r}; allowed: {', '.join(n for n in SHIFT_GRID if n != 'none')}")
        return v


class DefectSpec(StrictModel):
    scenes: list[Literal["wall_180", "wall_90", "inclined"]] = Field(default_factory=lambda: list(SCENES))
    nx: int = Field(8, ge=4, le=32, description="scene width [pc cells]")
    ny: int = Field(4, ge=2, le=32, description="scene height [pc cells]")
    positions_per_cell: int = Field(4, ge=1, le=16)
    seed: int = 7


class Recipe(StrictModel):
    """The whole KNN polarization study in one YAML recipe (see recipes/knn_quick.yaml)."""

    study: Literal["knn_polarization"] = "knn_polarization"
    name: str = "knn_polarization"
    data: DataSpec = Field(default_factory=DataSpec)
    models: list[ModelSpec] = Field(default_factory=_default_models, min_length=1)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    baselines: BaselineSpec = Field(default_factory=BaselineSpec)
    shifts: ShiftsSpec = Field(default_factory=ShiftsSpec)
    defects: DefectSpec | None = Field(default_factory=DefectSpec)

    @model_validator(mode="after")
    def _check(self):
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError(f"models: names repeat: {names}")
        base = self.data.campaign
        for spec in self.models:  # net configs fail here, before any simulation
            for regime in self.training.regimes:
                _net_config(spec, regime, base.pattern_pixels, 8)
        for name, over in self.shifts.simulated.items():
            shift_config(base, self.data, name, over)
        c = self.shifts.combined
        if c is not None:
            unknown = set(c) - {"simulated", "applied"}
            if unknown:
                raise ConfigError(f"shifts.combined: unknown key {sorted(unknown)[0]!r}; allowed: simulated, applied")
            if c.get("simulated") is not None and c["simulated"] not in self.shifts.simulated:
                raise ConfigError(f"shifts.combined.simulated: {c['simulated']!r} is not among shifts.simulated "
                                  f"({', '.join(self.shifts.simulated) or 'none'})")
            ShiftsSpec(applied=list(c.get("applied") or []))
        return self


# --------------------------------------------------------------------------- configs of the stores

def _cfg(base: PolarCampaignConfig, what: str, **update) -> PolarCampaignConfig:
    data = {**base.model_dump(), **update}
    try:
        return PolarCampaignConfig.model_validate(data)
    except Exception as err:  # pydantic ValidationError or ConfigError: one line naming the store
        msg = str(err).splitlines()
        raise ConfigError(f"{what}: {' '.join(m.strip() for m in msg[:3])}") from None


def train_configs(data: DataSpec) -> dict[str, PolarCampaignConfig]:
    return {f"train_s{s}": _cfg(data.campaign, f"data (training seed {s})", seed=s, name=f"train_s{s}",
                                positions_per_cell=data.train_positions_per_cell, scan_area=data.scan_area,
                                thicknesses_nm=[data.train_thickness_nm])
            for s in data.train_seeds}


def test_config(data: DataSpec) -> PolarCampaignConfig:
    return _cfg(data.campaign, "data (test)", seed=data.test_seed, name="test",
                positions_per_cell=data.test_positions_per_cell, scan_area=data.scan_area)


def shift_config(base: PolarCampaignConfig, data: DataSpec, name: str, overrides: dict) -> tuple[PolarCampaignConfig, float]:
    """The campaign of simulated shift `name` and the exit [nm] it is read at (default: the training
    thickness; the store simulates only that exit unless ``thicknesses_nm`` is given)."""
    over = dict(overrides)
    exit_nm = float(over.pop("exit_nm", data.train_thickness_nm))
    for key in ("seed", "positions_per_cell", "scan_area", "name", "kind", "variants"):
        if key in over:
            raise ConfigError(f"shifts.simulated.{name}.{key}: fixed by the study; change data.* instead")
    over.setdefault("thicknesses_nm", [exit_nm])  # only the exit that is read
    cfg = _cfg(test_config(data), f"shifts.simulated.{name}", **over, name=f"shift_{name}")
    if exit_nm not in cfg.thicknesses_nm:
        raise ConfigError(f"shifts.simulated.{name}.exit_nm: {exit_nm} is not one of its thicknesses_nm "
                          f"{cfg.thicknesses_nm}")
    return cfg, exit_nm


def summary(m: dict) -> str:
    """Headline: in-domain accuracy of the best network and of PCA + kNN, and the worst shift."""
    best = max(m["headline"]["networks"].items(), key=lambda kv: kv[1]["mean"])
    worst = m["headline"].get("worst_shift") or {}
    tail = f"; worst shift {worst['condition']} -> {worst['accuracy']:.1%}" if worst else ""
    return (f"in-domain: {best[0]} {best[1]['mean']:.1%} ± {best[1]['std']:.1%}, PCA+kNN "
            f"{m['headline']['pca_knn']:.1%}, CoM {m['headline']['com']:.1%}{tail}; {m['timings_s']['total_s']:.0f} s")


def run_study(recipe: Recipe, out_dir, *, data_file: str | None = None, log: Callable[[str], None] = print,
              progress=None, options=None) -> dict:
    """Simulate (or reuse) the stores, train and evaluate every model, report."""
    from inverscope.datasets.polar_campaign import PolarCampaignJob, estimate_resources
    from inverscope.studies import RunOptions

    options = options or RunOptions()
    if data_file is not None:
        raise InverscopeError("--data: the knn_polarization study simulates its data; use `inverscope predict "
                              "OUT/models/NAME your_4d_file` for yours")
    out = Path(out_dir)
    check_output_path(out)
    stores = _stores(recipe)
    for cfg in stores.values():
        PolarCampaignJob(cfg).precheck()
    if options.check_resources:
        est = None
        for cfg in stores.values():
            e = estimate_resources(cfg, options.workers or 0)
            if est is None:
                est = e
            else:
                est.add_disk(cfg.name, e.disk_bytes)
        est.check(disk_path=out)
    with exclusive_lock(out, "output directory"):
        return _run(recipe, stores, out, log, progress, options)


def _stores(recipe: Recipe) -> dict[str, PolarCampaignConfig]:
    stores = dict(train_configs(recipe.data))
    stores["test"] = test_config(recipe.data)
    for name, over in recipe.shifts.simulated.items():
        stores[f"shift_{name}"] = shift_config(recipe.data.campaign, recipe.data, name, over)[0]
    return stores


# --------------------------------------------------------------------------- reading stores

def _exit_index(cfg: PolarCampaignConfig, nm: float) -> int:
    return list(cfg.thicknesses_nm).index(nm)


def load_store(path, cfg: PolarCampaignConfig, exit_nm: float) -> dict:
    """Patterns (n, P, P) of one exit of a store, with class, variant scan index and position (k, k) index."""
    import zarr

    g = zarr.open_group(str(path), mode="r")
    e = _exit_index(cfg, exit_nm)
    pats = np.asarray(g["patterns"][:, e])  # (variants, positions, P, P)
    nv, npos = pats.shape[:2]
    k = int(round(np.sqrt(npos)))
    cls = np.asarray(g["class_index"][:], np.int64)
    return {"x": pats.reshape(nv * npos, *pats.shape[2:]), "y": np.repeat(cls, npos), "scan": np.repeat(np.arange(nv), npos),
            "position": np.tile(np.arange(npos), nv), "k": k, "n_scans": nv,
            "positions_fraction": np.asarray(g.attrs["positions_fraction"]), "repeat_xy": cfg.repeat_xy,
            "cells_per_side": cfg.repeat_xy if cfg.scan_area == "supercell" else 1,
            "class_labels": list(g.attrs["class_labels"])}


def _scan_images(values: np.ndarray, d: dict) -> np.ndarray:
    """Per-pattern values -> (n_scans, k, k) maps in scan order (x-major positions: [ix, iy] -> row iy, col ix)."""
    k = d["k"]
    v = np.asarray(values).reshape(d["n_scans"], k, k)  # [scan, ix, iy]
    return np.swapaxes(v, 1, 2)


# --------------------------------------------------------------------------- the study

def _run(recipe: Recipe, stores: dict, out: Path, log, progress, options) -> dict:
    from inverscope.analysis.polar_models import polar_input
    from inverscope.datasets.polar_campaign import run_polar_campaign
    from inverscope.studies.knn_polarization_report import write_report

    t0, timings = time.perf_counter(), {}
    (out / "data").mkdir(parents=True, exist_ok=True)
    stats = {}
    t = time.perf_counter()
    for name, cfg in stores.items():
        log(f"simulate {name}: {len(cfg.variants)} variants x {len(cfg.scan_fractions())} positions, exits "
            f"{cfg.thicknesses_nm} nm, phonons {cfg.phonon_configs}")
        s = run_polar_campaign(cfg, out / "data" / f"{name}.zarr", scheduler=options.scheduler,
                               n_workers=options.workers or 0, check_resources=False, log=None,
                               progress=(lambda d, n, k=name: progress(f"simulate {k}", d, n)) if progress else None)
        stats[name] = {"simulated": s["simulated"], "skipped": s["skipped"], "wall_s": s["wall_s"]}
    timings["simulate_s"] = time.perf_counter() - t

    d = recipe.data
    train_parts = [load_store(out / "data" / f"{n}.zarr", stores[n], d.train_thickness_nm) for n in train_configs(d)]
    train = _concat(train_parts)
    conditions = _conditions(recipe, stores, out)
    recentred = {}
    if d.recentre:
        for name, c in [("train", train), *conditions.items()]:
            c["x"], recentred[name] = recentre(c["x"])
        log("recentred on the data set's mean CoM, in px (row, col): "
            + ", ".join(f"{k} ({v[0]:+.2f}, {v[1]:+.2f})" for k, v in recentred.items() if max(map(abs, v)) > 0.05))
    base = conditions["in_domain"]
    xtr, mean, std = polar_input(train["x"], per_pixel=d.per_pixel_standardization)
    inputs = {name: polar_input(c["x"], mean, std)[0] for name, c in conditions.items()}
    rng = np.random.default_rng(0)
    val = np.zeros(len(xtr), bool)
    val[rng.permutation(len(xtr))[:max(2, int(d.validation_fraction * len(xtr)))]] = True
    conditions = {"random_split": {**_subset(train, val), "description": "the paper's split: random held-out "
                                   "patterns of the training stores (same grid, same K/Na configurations)"},
                  **conditions}
    inputs = {"random_split": xtr[val], **inputs}
    log(f"training set: {len(xtr)} patterns ({len(train_parts)} K/Na configurations x {train_parts[0]['n_scans']} "
        f"variants x {train_parts[0]['k'] ** 2} positions); {len(conditions)} test conditions of "
        f"{len(base['x'])} patterns")
    com_train = _com(train)

    t = time.perf_counter()
    baselines, base_pred = _baselines(recipe, _subset(train, ~val), xtr[~val], conditions, inputs)
    timings["baselines_s"] = time.perf_counter() - t

    t = time.perf_counter()
    nets = _train_all(recipe, train, xtr, val, inputs, conditions, com_train, out, log, mean, std)
    timings["train_evaluate_s"] = time.perf_counter() - t

    accuracy = _accuracy_table(nets, baselines, conditions)
    gap = _gap(recipe, xtr, inputs, accuracy, nets)
    periodic = _periodic(base, {**{k: v["pred_in_domain"] for k, v in nets["first"].items()}, **base_pred})
    t = time.perf_counter()
    defects = _defects(recipe, stores["test"], nets, xtr, mean, std, out, log) if recipe.defects else None
    timings["defects_s"] = time.perf_counter() - t
    inference = {k: v["patterns_per_s"] for k, v in nets["first"].items()}
    timings["total_s"] = time.perf_counter() - t0

    headline = _headline(accuracy)
    metrics = {"study": "knn_polarization", "name": recipe.name,
               "data": {"stores": stats, "n_train": int((~val).sum()), "n_validation": int(val.sum()),
                        "n_test": {k: int(len(v["x"])) for k, v in conditions.items()},
                        "conditions": {k: v["description"] for k, v in conditions.items()},
                        "class_labels": base["class_labels"],
                        "per_pixel_standardization": d.per_pixel_standardization,
                        "recentred_px": recentred,
                        "pattern_pixels": int(xtr.shape[-1])},
               "headline": headline, "accuracy": accuracy, "gap": gap, "periodic": periodic, "defects": defects,
               "training": {k: v["history"] for k, v in nets["runs"].items()},
               "inference_patterns_per_s": inference, "timings_s": timings}
    evaluation = {"conditions": conditions, "nets": nets, "base_pred": base_pred, "train": train}
    write_json_atomic(out / "metrics.json", metrics)
    write_report(recipe, metrics, evaluation, out)
    return metrics


def _concat(parts: list[dict]) -> dict:
    out = dict(parts[0])
    for key in ("x", "y", "position"):
        out[key] = np.concatenate([p[key] for p in parts])
    out["scan"] = np.concatenate([p["scan"] + i * p["n_scans"] for i, p in enumerate(parts)])
    out["n_scans"] = sum(p["n_scans"] for p in parts)
    return out


def _conditions(recipe: Recipe, stores: dict, out: Path) -> dict[str, dict]:
    """Every test condition: name -> loaded store dict with ``description``."""
    d = recipe.data
    test = load_store(out / "data" / "test.zarr", stores["test"], d.train_thickness_nm)
    conds = {"in_domain": {**test, "description": f"held-out positions ({d.test_positions_per_cell}/cell) and K/Na "
                                                  f"configuration, {d.train_thickness_nm:g} nm"}}
    for nm in stores["test"].thicknesses_nm:
        if nm != d.train_thickness_nm:
            conds[f"thickness_{nm:g}nm"] = {**load_store(out / "data" / "test.zarr", stores["test"], nm),
                                             "description": f"exit {nm:g} nm of the test pass"}
    for name in recipe.shifts.applied:
        conds[name] = {**test, "x": _apply(test, SHIFT_GRID[name], seed=1 + 100 * list(SHIFT_GRID).index(name)),
                       "description": f"applied: {SHIFT_GRID[name].model_dump(exclude_defaults=True)}"}
    sims = {}
    for name, over in recipe.shifts.simulated.items():
        cfg, exit_nm = shift_config(d.campaign, d, name, over)
        sims[name] = load_store(out / "data" / f"shift_{name}.zarr", cfg, exit_nm)
        conds[name] = {**sims[name], "description": f"simulated: {over}"}
    c = recipe.shifts.combined
    if c is not None:
        src = sims[c["simulated"]] if c.get("simulated") else test
        x = src["x"]
        parts = [c["simulated"]] if c.get("simulated") else []
        for i, name in enumerate(c.get("applied") or []):
            x = _apply({**src, "x": x}, SHIFT_GRID[name], seed=1000 + i)
            parts.append(name)
        conds["combined"] = {**src, "x": x, "description": "all at once: " + " + ".join(parts)}
    return conds


def recentre(x: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Patterns ``(n, P, P)`` with their mean CoM moved to the axis, and the offset ``[row, col]`` [px]
    (:func:`inverscope.analysis.com.recentre_patterns`)."""
    from inverscope.analysis.com import recentre_patterns

    return recentre_patterns(x)


def _apply(d: dict, spec: ShiftSpec, seed: int) -> np.ndarray:
    """Apply a shift scan by scan (descan ramps follow each variant's own k x k scan)."""
    from inverscope.datasets.shifts import apply_shift

    x = d["x"].reshape(d["n_scans"], d["k"] ** 2, *d["x"].shape[1:])
    out = np.stack([apply_shift(x[s], spec.model_copy(update={"seed": seed + s}), scan_shape=(d["k"], d["k"]))
                    for s in range(len(x))])
    return out.reshape(d["x"].shape).astype(np.float32)


def _com(d: dict, threshold: float | None = None) -> np.ndarray:
    """CoM (n, 2) [px, (ky, kx)] of each pattern about the pattern centre, minus the mean over the data set
    (one scan holding every domain, as in an experiment; removes any descan offset)."""
    from inverscope.analysis.com import centre_of_mass

    p = d["x"].shape[-1]
    c = centre_of_mass(d["x"], threshold=threshold, centre_px=(p // 2, p // 2)).px
    return c - np.nanmean(c, axis=0)


# --------------------------------------------------------------------------- baselines

def _subset(d: dict, keep: np.ndarray) -> dict:
    return {**d, **{k: d[k][keep] for k in ("x", "y", "scan", "position")}}


def _baselines(recipe, train, xtr, conditions, inputs):
    import warnings

    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from inverscope.analysis.com import friedel_baseline, friedel_moments

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    b = recipe.baselines
    acc, pred = {}, {}
    t = time.perf_counter()
    pk = make_pipeline(StandardScaler(), PCA(b.pca_components, random_state=0),
                       KNeighborsClassifier(b.knn_k)).fit(xtr.reshape(len(xtr), -1), train["y"])
    fit_s = time.perf_counter() - t
    acc["pca_knn"], pred["pca_knn"] = {}, {}
    for name, x in inputs.items():
        p = pk.predict(x.reshape(len(x), -1))
        acc["pca_knn"][name] = float(np.mean(p == conditions[name]["y"]))
        if name == "in_domain":
            pred["pca_knn"] = p
    acc["pca_knn"]["fit_s"] = fit_s
    if b.linear:  # logistic regression on the standardized pixels: is the signal linear in the pattern?
        lin = make_pipeline(StandardScaler(), LogisticRegression(C=b.linear_c, max_iter=500)).fit(
            xtr.reshape(len(xtr), -1), train["y"])
        acc["linear"] = {}
        for name, x in inputs.items():
            p = lin.predict(x.reshape(len(x), -1))
            acc["linear"][name] = float(np.mean(p == conditions[name]["y"]))
            if name == "in_domain":
                pred["linear"] = p
    # CoM sectors: the sector offset (and handedness) that fits the training set best
    for key, thr in (("com", None), ("com_threshold", b.com_threshold)):
        ctr = _com(train, thr)
        offset, flip = _fit_sectors(ctr, train["y"])
        acc[key] = {"sector_offset_deg": offset, "mirrored": flip}
        for name, c in conditions.items():
            p = _sectors(_com(c, thr), offset, flip)
            acc[key][name] = float(np.mean(p == c["y"]))
            if name == "in_domain":
                pred[key] = p
    if b.friedel:
        p = train["x"].shape[-1]
        ftr = friedel_moments(train["x"], centre_px=(p // 2, p // 2))
        clf = friedel_baseline(ftr, train["y"])
        acc["friedel"] = {}
        for name, c in conditions.items():
            q = clf.predict(friedel_moments(c["x"], centre_px=(p // 2, p // 2)))
            acc["friedel"][name] = float(np.mean(q == c["y"]))
            if name == "in_domain":
                pred["friedel"] = q
    return acc, pred


def _sectors(com: np.ndarray, offset: float, flip: bool) -> np.ndarray:
    """Class of each CoM (n, 2) [(ky, kx)]: 8 sectors of the angle counter-clockwise from +kx as displayed."""
    ang = np.degrees(np.arctan2(-com[:, 0], com[:, 1]))
    if flip:
        ang = -ang
    return (np.round((ang - offset) / 45.0).astype(int) % 8)


def _fit_sectors(com: np.ndarray, y: np.ndarray) -> tuple[float, bool]:
    best = max(((off, flip) for off in range(0, 360, 45) for flip in (False, True)),
               key=lambda of: np.mean(_sectors(com, of[0], of[1]) == y))
    return float(best[0]), bool(best[1])


# --------------------------------------------------------------------------- networks

def _net_config(spec: ModelSpec, regime: str, size: int, n_classes: int) -> dict:
    """The network config of `spec` under `regime`, validated (one line naming the model on error)."""
    from inverscope.core.config import validate
    from inverscope.models.nets import NETS

    head = {"classification": ("classification", n_classes), "regression": ("regression", 2),
            "prototype": ("embedding", spec.embedding_dim)}[regime]
    cfg = {**spec.config, "input_size": size, "head": head[0], "outputs": head[1]}
    try:
        validate(NETS[spec.architecture][1], cfg, "model")
    except InverscopeError as err:
        raise ConfigError(f"models.{spec.name}.config: {err}") from None
    return cfg


def _net(spec: ModelSpec, regime: str, size: int, n_classes: int):
    from inverscope.models.nets import build_net

    return build_net(spec.architecture, _net_config(spec, regime, size, n_classes))


def _train_all(recipe, train, xtr, val, inputs, conditions, com_train, out, log, mean, std) -> dict:
    import torch

    from inverscope.analysis.polar_models import polar_metadata
    from inverscope.core.device import resolve_device
    from inverscope.models.io import save_model
    from inverscope.training.regimes import RegimeConfig, fit_regime, predict_classes

    tr = recipe.training
    n_classes, size = 8, xtr.shape[-1]
    mag = np.linalg.norm(com_train, axis=1)
    runs, first, acc = {}, {}, {}
    combos = [(m, r, f, s) for m in recipe.models for r in tr.regimes for f in tr.filtering for s in (m.seeds or tr.seeds)]
    for i, (spec, regime, filt, seed) in enumerate(combos):
        key = f"{spec.name}/{regime}/{'filtered' if filt else 'all'}"
        torch.manual_seed(seed)
        net = _net(spec, regime, size, n_classes)
        cfg = RegimeConfig(regime=regime, n_classes=n_classes, epochs=tr.epochs, batch_size=tr.batch_size, lr=tr.lr,
                           weight_decay=tr.weight_decay, filtering=filt, seed=seed, max_minutes=tr.max_minutes,
                           device=str(resolve_device(tr.device)))
        log(f"[{i + 1}/{len(combos)}] training {key} seed {seed}")
        res = fit_regime(net, xtr[~val], train["y"][~val], xtr[val], train["y"][val], cfg,
                         com_magnitude=mag[~val] if filt else None, com_groups=train["scan"][~val] if filt else None,
                         log=None)
        runs[f"{key}/seed{seed}"] = {"history": res.history, "val_accuracy": res.val_accuracy, "wall_s": res.wall_s,
                                     "epochs_run": res.epochs_run, "kept_fraction": res.kept_fraction}
        entry = acc.setdefault(key, {})
        for name, x in inputs.items():
            t = time.perf_counter()
            c, conf, ang = predict_classes(net, x, res)
            dt = time.perf_counter() - t
            entry.setdefault(name, []).append(float(np.mean(c == conditions[name]["y"])))
            if name == "in_domain" and key not in first:
                first[key] = {"net": net, "result": res, "spec": spec, "pred_in_domain": c, "confidence": conf,
                              "patterns_per_s": len(x) / max(dt, 1e-9)}
        log(f"    in-domain {entry['in_domain'][-1]:.1%} (validation {res.val_accuracy:.1%}, {res.wall_s:.0f} s)")
        if key in first and first[key]["net"] is net and regime == "classification" and not filt:
            save_model(out / "models" / spec.name, net, spec.architecture,
                       polar_metadata(regime=res, pixels=size, mrad_per_px=recipe.data.campaign.detector_sampling_mrad,
                                      semiangle_mrad=recipe.data.campaign.semiangle_mrad,
                                      energy_ev=recipe.data.campaign.energy_kev * 1e3, mean=mean, std=std,
                                      class_labels=train["class_labels"],
                                      extra={"study": "knn_polarization", "recipe": recipe.name}))
    return {"runs": runs, "first": first, "accuracy": acc}


def _forward(net, x: np.ndarray, fn=None, batch: int = 512) -> np.ndarray:
    """``fn`` (default: the net itself) on patterns ``(n, P, P)`` in batches, on the net's device; numpy out."""
    import torch

    dev = next(net.parameters()).device
    fn = fn or net
    net.eval()
    with torch.inference_mode():
        return torch.cat([fn(torch.from_numpy(x[i:i + batch])[:, None].to(dev)).float().cpu()
                          for i in range(0, len(x), batch)]).numpy()


def _stat(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=0)), "n_seeds": int(v.size), "values": v.tolist()}


def _accuracy_table(nets, baselines, conditions) -> dict:
    table = {key: {name: _stat(vals) for name, vals in per.items()} for key, per in nets["accuracy"].items()}
    for b, per in baselines.items():
        table[b] = {name: _stat([per[name]]) for name in conditions}
    for key, per in table.items():
        ref = per["in_domain"]["mean"]
        for name, s in per.items():
            s["drop"] = ref - s["mean"]
    return table


def _headline(acc: dict) -> dict:
    nets = {k: v["in_domain"] for k, v in acc.items() if "/" in k}
    worst = None
    shifts = [(name, s["mean"]) for k, per in acc.items() if "/" in k for name, s in per.items()
              if name not in ("in_domain", "random_split")]
    if shifts:
        name, a = min(shifts, key=lambda t: t[1])
        worst = {"condition": name, "accuracy": a}
    return {"networks": {k: {"mean": v["mean"], "std": v["std"]} for k, v in nets.items()},
            "pca_knn": acc["pca_knn"]["in_domain"]["mean"], "com": acc["com"]["in_domain"]["mean"],
            "friedel": acc.get("friedel", {}).get("in_domain", {}).get("mean"), "worst_shift": worst}


# --------------------------------------------------------------------------- domain gap

def _gap(recipe, xtr, inputs, accuracy, nets) -> dict:
    """Unsupervised gap per condition on input PCA features and on each first network's features,
    and how well each ranks the mean accuracy drop of the networks."""
    from sklearn.decomposition import PCA

    from inverscope.datasets.shifts import gap_score, rank_agreement

    method = recipe.shifts.gap_method
    names = [n for n in inputs if n not in ("in_domain", "random_split")]
    net_keys = [k for k in accuracy if "/" in k]
    drops = {n: float(np.mean([accuracy[k][n]["drop"] for k in net_keys])) for n in names}
    rng = np.random.default_rng(0)
    sub = rng.permutation(len(xtr))[:2000]
    pca = PCA(20, random_state=0).fit(xtr[sub].reshape(len(sub), -1))
    feats = {"input_pca": lambda x: pca.transform(x.reshape(len(x), -1))}
    for key, f in nets["first"].items():
        if key.endswith("/all") and "/classification/" in key:
            net = f["net"]

            def embed(x, net=net):
                return _forward(net, x, net.features)
            feats[key.split("/")[0]] = embed
    out = {"method": method, "accuracy_drop_mean_networks": drops, "scores": {}, "rank_agreement": {}}
    for fname, fn in feats.items():
        ftr = fn(xtr[sub])
        scores = {n: gap_score(ftr, fn(inputs[n]), method) for n in names}
        scores_ref = gap_score(ftr, fn(inputs["in_domain"]), method)
        out["scores"][fname] = {"in_domain": scores_ref, **scores}
        try:
            out["rank_agreement"][fname] = rank_agreement(scores, drops) if len(names) >= 3 else None
        except InverscopeError as err:
            out["rank_agreement"][fname] = {"error": str(err)}
    return out


# --------------------------------------------------------------------------- periodic errors

def _periodic(base: dict, preds: dict[str, np.ndarray]) -> dict:
    """Errors folded into the pc cell, share of the error map's power at lattice harmonics (None when each
    scan covers one cell: then every frequency is a harmonic), and accuracy above / below the mean |CoM|."""
    k, rep = base["k"], base["cells_per_side"]
    ppc = k // rep
    mag = np.linalg.norm(_com(base), axis=1)
    above = mag > mag.mean()
    out = {"positions_per_cell": ppc, "fraction_above_mean_com": float(above.mean())}
    for name, p in preds.items():
        err = (np.asarray(p) != base["y"]).astype(float)
        maps = _scan_images(err, base)  # (scans, k, k)
        folded = maps.reshape(len(maps), rep, ppc, rep, ppc).mean(axis=(0, 1, 3))
        power = np.abs(np.fft.fft2(maps - maps.mean(axis=(1, 2), keepdims=True))) ** 2
        harm = np.zeros((k, k), bool)
        harm[::rep, ::rep] = True
        harm[0, 0] = False
        total = power.sum()
        share = (float(power[:, harm].sum() / total) if total > 0 else 0.0) if rep > 1 else None
        out[name] = {"error_rate": float(err.mean()), "folded_error": folded.tolist(),
                     "harmonic_share": share, "harmonic_share_chance": float(harm.sum() / (k * k - 1)) if rep > 1 else None,
                     "accuracy_above_mean_com": float(1 - err[above].mean()) if above.any() else None,
                     "accuracy_below_mean_com": float(1 - err[~above].mean()) if (~above).any() else None}
    return out


# --------------------------------------------------------------------------- defects

def build_scene(kind: str, nx: int, ny: int, nz: int, na_fraction: float, seed: int, a_site: str = "random",
                amplitudes=None):
    """A defect scene of `kind` (``wall_180``: a 180-degree wall with an A-site and an O vacancy column;
    ``wall_90``: a 90-degree wall with a rhombohedral region and a thickness step; ``inclined``: an
    inclined 180-degree wall under an amorphous surface layer)."""
    from inverscope.physics.structures import polar_defects as pdf

    if kind == "wall_180":
        atoms = pdf.polar_domains(pdf.wall_180(nx, ny, "[110]"), nz, na_fraction=na_fraction, seed=seed, a_site=a_site,
                                   amplitudes=amplitudes)
        atoms = pdf.remove_column(atoms, "A", (nx // 4, ny // 2))
        atoms = pdf.remove_column(atoms, "O", (3 * nx // 4, ny // 2), site="O_y")
    elif kind == "wall_90":
        atoms = pdf.polar_domains(pdf.wall_90(nx, ny, "[110]"), nz, na_fraction=na_fraction, seed=seed, a_site=a_site,
                                   amplitudes=amplitudes)
        x0, y0 = nx // 8, ny // 4
        atoms = pdf.rhombohedral_region(atoms, [x0, x0 + max(1, nx // 4), y0, y0 + max(1, ny // 2)])
        atoms = pdf.thickness_step(atoms, [nx - max(1, nx // 4), nx, 0, ny], remove_cells=max(1, nz // 5))
    elif kind == "inclined":
        atoms = pdf.polar_domains(pdf.inclined_wall(nx, ny, "[110]", "[-1-10]", 30.0), nz, na_fraction=na_fraction,
                                  seed=seed, a_site=a_site, amplitudes=amplitudes)
        atoms = pdf.amorphous_layer(atoms, 10.0, seed=seed, region_xy=[0, nx // 2, 0, ny])
    else:
        raise ConfigError(f"defects.scenes: got {kind!r}; allowed: {', '.join(SCENES)}")
    return atoms


def _defects(recipe, test_cfg, nets, xtr, mean, std, out, log) -> dict:
    import torch
    import torch.nn.functional as F

    from inverscope.analysis.anomaly import score_all
    from inverscope.analysis.polar_models import polar_input
    from inverscope.datasets.polar_campaign import simulate_structure
    from inverscope.physics.structures.polar import knbo3_amplitudes
    from inverscope.physics.structures.polar_defects import truth_masks_from_info
    from inverscope.training.regimes import predict_classes

    ds, d = recipe.defects, recipe.data
    cfg = _cfg(test_cfg, "defects", thicknesses_nm=[d.train_thickness_nm])
    nz = max(cfg.exit_cells())
    rng = np.random.default_rng(ds.seed)
    sub = rng.permutation(len(xtr))[:2000]
    train_flat = xtr[sub].reshape(len(sub), -1)
    from sklearn.decomposition import PCA

    pca = PCA(min(20, len(sub) - 1), random_state=0).fit(train_flat)
    feats_train = pca.transform(train_flat)
    results = {}
    for kind in ds.scenes:
        t = time.perf_counter()
        atoms = build_scene(kind, ds.nx, ds.ny, nz, cfg.na_fraction, ds.seed, cfg.a_site, cfg.amplitudes())
        truth = truth_masks_from_info(atoms, ds.positions_per_cell)
        cache = out / "data" / f"scene_{kind}.npy"
        if cache.is_file():
            pats = np.load(cache)
        else:
            pats = simulate_structure(cfg, atoms, ds.positions_per_cell, seed=ds.seed)[0]
            tmp = cache.with_name(cache.name + ".tmp.npy")
            np.save(tmp, pats)
            tmp.replace(cache)
        rows, cols = pats.shape[:2]
        flat = pats.reshape(rows * cols, *pats.shape[2:])
        if d.recentre:
            flat = recentre(flat)[0]
        x = polar_input(flat, mean, std)[0]
        feats = pca.transform(x.reshape(len(x), -1))
        masks = {k: v for k, v in truth.masks.items() if v.any() and k not in ("defect", "seam_wall", "paraelectric")}
        pixel = knbo3_amplitudes().a_pc_angstrom / ds.positions_per_cell
        scene = {"rows": rows, "cols": cols, "truth_classes": truth.classes.tolist(), "masks": sorted(masks),
                 "simulate_s": time.perf_counter() - t, "models": {}}
        for key, f in nets["first"].items():
            net, res = f["net"], f["result"]
            c, conf, ang = predict_classes(net, x, res)
            kwargs = {"labels": c.reshape(rows, cols), "patterns": x.reshape(rows * cols, -1),
                      "patterns_train": train_flat, "features": feats, "features_train": feats_train}
            o = torch.from_numpy(_forward(net, x))
            if res.regime == "classification":
                kwargs["proba"] = F.softmax(o, 1).numpy().reshape(rows, cols, -1)
            elif res.regime == "prototype":
                kwargs["embeddings"] = o.numpy().reshape(rows, cols, -1)
                kwargs["prototypes"] = res.prototypes
            valid = truth.classes >= 0
            rep = score_all(scan_shape=(rows, cols), truth=masks, line_defects=["wall"] if "wall" in masks else (),
                            pixel_size_angstrom=pixel, wall_search_radius_px=2 * ds.positions_per_cell, **kwargs)
            scene["models"][key] = {"accuracy_clean": float(np.mean((c.reshape(rows, cols) == truth.classes)[valid])),
                                    **rep.as_dict(curves=True)}
            scene.setdefault("maps", {})[key] = {"classes": c.reshape(rows, cols).tolist(),
                                                 "scores": {n: m.tolist() for n, m in rep.maps.items()}}
        log(f"defect scene {kind}: {rows} x {cols} positions; "
            + ", ".join(f"{k.split('/')[0]} disagreement AUROC {v['auroc'].get('disagreement', {}).get('all', float('nan')):.2f}"
                        for k, v in scene["models"].items()))
        results[kind] = scene
    return results


__all__ = ["Recipe", "run_study", "summary", "OPTIONS", "EIGHT_VARIANTS", "build_scene", "load_store"]
