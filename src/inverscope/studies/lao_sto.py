"""LAO/STO interface study (Oxley et al. 2020): rough or intermixed, and where the buried step is.

A thin composition: campaign (datasets.campaign) -> examples (datasets.examples) ->
3D-CNN (models.nets) trained on Lightning (training.supervised) with augmentation ->
evaluation, baselines (models.baselines), saliency (analysis) -> HTML report.
Outputs in DIR: campaign.zarr (resumable), static.zarr (the static twins of the test
samples), models/*.safetensors + .json, training/ (checkpoints, CSV and TensorBoard
logs), figures, report.html and metrics.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import Field

from inverscope.core.config import StrictModel, load_yaml
from inverscope.core.errors import InverscopeError
from inverscope.core.seeding import torch_generator
from inverscope.datasets.augment import AugmentConfig, Augmenter
from inverscope.datasets.campaign import (CampaignConfig, estimate_resources, open_campaign, open_campaign_store,
                                         run_campaign)
from inverscope.datasets.examples import Examples, classification_examples, regression_examples, split_indices
from inverscope.models.baselines import baseline_predict, fit_baseline
from inverscope.models.io import save_model
from inverscope.models.nets import StackCNN3D, StackCNN3DConfig
from inverscope.models.normalization import fit_normalization
from inverscope.training.supervised import StackTask, TrainConfig, fit

Progress = Callable[[str, int, int], None]


class NetConfig(StrictModel):
    #: network input: per-detector-pixel standardization (measured best on the quick recipe:
    #: 98.0 / 90.0 % vs 94.9 / 81.1 % with sqrt + one global scale, paper / matched mode)
    input_transform: Literal["none", "sqrt"] = "none"
    per_pixel_normalization: bool = True
    channels: list[int] = Field(default_factory=lambda: [16, 32, 32], min_length=1)
    kernel_size: int = 3
    pool: tuple[int, int, int] = (2, 2, 2)
    hidden: int = 64
    dropout: float = 0.15


class ClassificationConfig(StrictModel):
    modes: dict[str, list[str]] = Field(default_factory=lambda: {"paper": ["rough", "intermixed"],
                                                                  "matched": ["rough", "matched"]})
    #: rough examples whose step / thickness lies outside this range are left out of training and
    #: the headline accuracy (reported separately as `accuracy_near_flat_steps`)
    step_fraction_range: tuple[float, float] = (0.0, 1.0)
    net: NetConfig = Field(default_factory=NetConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


class RegressionConfig(StrictModel):
    enabled: bool = True
    thicknesses_cells: list[int] | None = None
    average_lines: bool = True
    tolerance_fraction: float = Field(0.10, gt=0)
    net: NetConfig = Field(default_factory=NetConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


class EvaluationConfig(StrictModel):
    static_check: bool = True
    saliency_examples: int = Field(4, ge=0)
    baseline_components: int = Field(32, ge=1)
    seed: int = 7


class SplitConfig(StrictModel):
    validation: float = Field(0.2, ge=0.0, lt=1.0)
    test: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 0


class DaskConfig(StrictModel):
    """Where campaigns run: a LocalCluster of ``n_workers`` processes (None: one per core, 0: in-process)
    or an existing scheduler (``scheduler: tcp://host:8786``, e.g. started by dask-jobqueue)."""

    n_workers: int | None = Field(None, ge=0)
    scheduler: str | None = None


class LaoStoRecipe(StrictModel):
    """The whole study in one YAML recipe (see recipes/lao_sto_quick.yaml)."""

    study: str = "lao_sto"
    name: str = "lao_sto"
    campaign: CampaignConfig
    dask: DaskConfig = Field(default_factory=DaskConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    classification: ClassificationConfig = Field(default_factory=ClassificationConfig)
    regression: RegressionConfig = Field(default_factory=RegressionConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)


def load_recipe(path) -> LaoStoRecipe:
    return load_yaml(path, LaoStoRecipe)


# --------------------------------------------------------------------------- helpers
def _augment_fixed(x: np.ndarray, augment: AugmentConfig, seed: int) -> np.ndarray:
    """One seeded augmented copy (the held-out set as a microscope would record it)."""
    return Augmenter(augment)(torch.as_tensor(x), torch_generator(seed)).numpy()


def _net(cfg: NetConfig, input_shape, outputs: int, seed: int) -> StackCNN3D:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        arch = cfg.model_dump(exclude={"input_transform", "per_pixel_normalization"})
        return StackCNN3D(StackCNN3DConfig(input_shape=tuple(input_shape), num_outputs=outputs, **arch))


def _model_meta(task, class_names, norm, ex: Examples, group, recipe, extra) -> dict:
    return {"task": task, "class_names": class_names, "normalization": norm,
            "input": {"positions": int(ex.x.shape[1]), "pattern_shape": list(ex.x.shape[2:]),
                      "sampling_mrad": list(group.attrs["sampling_mrad"]),
                      "positions_angstrom": group.attrs["positions_angstrom"][0]},
            "campaign_hash": group.attrs["config_hash"], "augment": recipe.augment.model_dump(mode="json"), **extra}


def _train_net(task, tr: Examples, va: Examples, n_out, net_cfg, train_cfg, recipe, out: Path, name: str):
    norm = fit_normalization(tr.x, net_cfg.input_transform, net_cfg.per_pixel_normalization)
    net = _net(net_cfg, tr.x.shape[1:], n_out, train_cfg.seed)
    module = StackTask(net, task, train_cfg, norm, recipe.augment)
    res = fit(module, (tr.x, tr.y), (va.x, va.y), out / "training", name)
    return res, norm


def _predict(module: StackTask, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([module(torch.as_tensor(x[i:i + 256])) for i in range(0, len(x), 256)]).numpy() \
            if len(x) else np.zeros((0, module.net.config.num_outputs), np.float32)


# --------------------------------------------------------------------------- stages
def classify(recipe, group, static_group, splits, out: Path, log: Callable[[str], None]) -> dict:
    from inverscope.analysis.metrics import classification_summary

    tr_i, va_i, te_i = splits
    results = {}
    for mode, names in recipe.classification.modes.items():
        log(f"classification ({mode}: {' vs '.join(names)})")
        rng_ = recipe.classification.step_fraction_range
        tr, va, te = (classification_examples(group, i, names, rng_) for i in (tr_i, va_i, te_i))
        res, norm = _train_net("classification", tr, va, len(names), recipe.classification.net,
                               recipe.classification.train, recipe, out, f"classifier_{mode}")
        x_te = _augment_fixed(te.x, recipe.augment, recipe.evaluation.seed)
        pred = _predict(res.module, x_te).argmax(1)
        base = fit_baseline("classification", _augment_fixed(tr.x, recipe.augment, recipe.evaluation.seed + 1), tr.y,
                            recipe.evaluation.baseline_components, recipe.split.seed)
        r = {"network": classification_summary(te.y, pred, names),
             "baseline": classification_summary(te.y, baseline_predict(base, x_te), names),
             "n_train": len(tr), "n_validation": len(va), "n_test": len(te), "train_wall_s": res.wall_s,
             "epochs": res.epochs, "history": res.history}
        per_t = {}
        for t in np.unique(te.thickness_angstrom):
            m = te.thickness_angstrom == t
            per_t[f"{t:.1f}"] = float((pred[m] == te.y[m]).mean())
        r["network"]["accuracy_per_thickness"] = per_t
        if tuple(rng_) != (0.0, 1.0):  # the rough examples left out of the headline, scored separately
            full = classification_examples(group, te_i, names)
            known = {(int(s), float(t)) for s, t in zip(te.sample, te.thickness_angstrom)}
            extra = np.array([(int(s), float(t)) not in known for s, t in zip(full.sample, full.thickness_angstrom)])
            if extra.any():
                xe = _augment_fixed(full.x[extra], recipe.augment, recipe.evaluation.seed)
                r["network"]["accuracy_near_flat_steps"] = float((_predict(res.module, xe).argmax(1) == full.y[extra]).mean())
                r["network"]["n_near_flat_steps"] = int(extra.sum())
        if static_group is not None:
            st = classification_examples(static_group, te_i, names, rng_)
            xs = _augment_fixed(st.x, recipe.augment, recipe.evaluation.seed)
            r["static_check"] = {"network_accuracy_static": float((_predict(res.module, xs).argmax(1) == st.y).mean()),
                                 "baseline_accuracy_static": float((baseline_predict(base, xs) == st.y).mean()),
                                 "n": len(st)}
        save_model(out / "models" / f"classifier_{mode}", res.module.net, "stack_cnn3d",
                   _model_meta("classification", names, norm, tr, group, recipe, {"mode": mode}))
        r["_module"], r["_test"] = res.module, (te, x_te)
        results[mode] = r
    return results


def regress(recipe, group, splits, out: Path, log: Callable[[str], None]) -> dict:
    from inverscope.analysis.metrics import regression_summary

    cfg = recipe.regression
    cells_all = list(group.attrs["thicknesses_cells"])
    cells = cfg.thicknesses_cells or cells_all
    a = float(group.attrs["thicknesses_angstrom"][0]) / cells_all[0]
    tr_i, va_i, te_i = splits
    tests = {c: regression_examples(group, te_i, c, cfg.average_lines) for c in cells_all}
    out_r = {}
    for c in cells:
        log(f"step-position regression at {c * a:.1f} Å")
        tr, va = (regression_examples(group, i, c, cfg.average_lines) for i in (tr_i, va_i))
        if len(tr) < 2 or len(va) < 1:
            raise InverscopeError(f"regression at {c} cells: only {len(tr)} training and {len(va)} validation rough "
                                  "samples; raise campaign.num_samples")
        res, norm = _train_net("regression", tr, va, 1, cfg.net, cfg.train, recipe, out, f"regressor_{c}")
        base = fit_baseline("regression", _augment_fixed(tr.x, recipe.augment, recipe.evaluation.seed + 1), tr.y,
                            min(recipe.evaluation.baseline_components, 16), recipe.split.seed)
        transfer = {}
        for c2, te in tests.items():
            x_te = _augment_fixed(te.x, recipe.augment, recipe.evaluation.seed)
            pred = _predict(res.module, x_te)[:, 0]
            s = regression_summary(te.y, pred, c2 * a, cfg.tolerance_fraction)
            s["baseline"] = regression_summary(te.y, baseline_predict(base, x_te), c2 * a, cfg.tolerance_fraction)
            if c2 == c:
                s["true"], s["pred"] = te.y.tolist(), pred.tolist()
            transfer[f"{c2 * a:.1f}"] = s
        save_model(out / "models" / f"regressor_{c}", res.module.net, "stack_cnn3d",
                   _model_meta("regression", [], norm, tr, group, recipe, {"thickness_angstrom": c * a}))
        out_r[f"{c * a:.1f}"] = {"n_train": len(tr), "n_validation": len(va), "train_wall_s": res.wall_s,
                                 "epochs": res.epochs, "history": res.history, "transfer": transfer,
                                 **{k: v for k, v in transfer[f"{c * a:.1f}"].items()}}
    return out_r


def _workers(recipe) -> int:
    import os

    n = recipe.dask.n_workers
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) if n is None else n


Recipe = LaoStoRecipe

#: RunOptions fields this study uses (see inverscope.studies)
OPTIONS = frozenset({"scheduler", "workers", "devices", "num_nodes"})


def summary(metrics: dict) -> str:
    """The headline figures: held-out accuracy per mode and the total wall time."""
    accs = ", ".join(f"{k} {100 * v['accuracy']:.1f} %" for k, v in metrics["classification"].items())
    return f"accuracy: {accs}; {metrics['timings_s']['total_s']:.0f} s"


def _apply_options(recipe: LaoStoRecipe, options) -> LaoStoRecipe:
    """The recipe with the command line's cluster, device and progress-bar settings."""
    recipe = recipe.model_copy(deep=True)
    if options.workers is not None:
        recipe.dask.n_workers = options.workers
    for section in (recipe.classification.train, recipe.regression.train):
        if options.devices is not None:
            section.devices = int(options.devices) if str(options.devices).isdigit() else options.devices
        if options.num_nodes is not None:
            section.num_nodes = options.num_nodes
        if options.quiet:
            section.progress_bar = False
    return recipe


def run_study(recipe: LaoStoRecipe, out_dir, *, data_file: str | None = None, log: Callable[[str], None] = print,
              progress: Progress | None = None, options=None) -> dict:
    """Run campaign, training, evaluation and report; returns the metrics written to metrics.json.

    The output directory is checked and locked before any work; unless
    ``options.check_resources`` is false, the memory and disk the campaign and training need
    are estimated first. ``options`` (:class:`inverscope.studies.RunOptions`) may set the Dask
    scheduler or workers, the Lightning devices and nodes, and quiet progress.
    """
    from inverscope.core.io import check_output_path, exclusive_lock
    from inverscope.datasets.campaign import build_sample_simulation, check_campaign_store, connect_scheduler
    from inverscope.studies import RunOptions

    if data_file is not None:
        raise InverscopeError("--data: the lao_sto study simulates its data; use `inverscope predict` for yours")
    options = options or RunOptions()
    recipe = _apply_options(recipe, options)
    scheduler, check_resources = options.scheduler, options.check_resources
    out = Path(out_dir)
    check_output_path(out)
    cfg = recipe.campaign
    sched = scheduler or recipe.dask.scheduler
    if check_resources:  # training holds every pattern of the campaign (and an augmented copy) in memory
        est = estimate_resources(cfg, _workers(recipe) if not sched else 0)
        est.job = "run"
        est.add_memory("training arrays", 3 * est.disk_parts["stored patterns (float32, uncompressed)"])
        est.check(disk_path=out)
    build_sample_simulation(cfg, 0)  # every physics check before anything is written
    check_campaign_store(out / "campaign.zarr", cfg)  # read-only here; judged again under the lock
    if sched:
        connect_scheduler(sched).close()
    with exclusive_lock(out, "output directory"):
        return _run_study(recipe, out, progress, log, sched)


def _run_study(recipe, out: Path, progress, log, sched) -> dict:
    from inverscope.studies.lao_sto_report import write_report

    timings = {}
    t0 = time.perf_counter()
    cfg = recipe.campaign
    if (out / "campaign.zarr").exists():  # refuses another campaign's store before any work
        open_campaign_store(out / "campaign.zarr", cfg)
    out.mkdir(parents=True, exist_ok=True)
    log(f"simulating {cfg.num_samples} samples into {out / 'campaign.zarr'}")
    stats = run_campaign(cfg, out / "campaign.zarr", scheduler=sched, n_workers=_workers(recipe),
                         progress=(lambda d, n: progress("simulate", d, n)) if progress else None,
                         check_resources=False, log=log)
    timings["simulate_s"] = time.perf_counter() - t0
    group = open_campaign(out / "campaign.zarr")
    splits = split_indices(cfg.num_samples, (1 - recipe.split.validation - recipe.split.test, recipe.split.validation,
                                             recipe.split.test), recipe.split.seed)
    static_group = None
    if recipe.evaluation.static_check and cfg.microscope.phonon_configs > 0:
        t1 = time.perf_counter()
        log(f"simulating the {len(splits[2])} test samples without phonons (domain-shift check)")
        run_campaign(cfg, out / "static.zarr", scheduler=sched, n_workers=_workers(recipe), indices=splits[2],
                     phonon_configs=0, progress=(lambda d, n: progress("static twins", d, n)) if progress else None,
                     check_resources=False, log=log)
        static_group = open_campaign(out / "static.zarr")
        timings["simulate_static_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    cls = classify(recipe, group, static_group, splits, out, log)
    timings["classification_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    reg = regress(recipe, group, splits, out, log) if recipe.regression.enabled else {}
    timings["regression_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    metrics = write_report(recipe, group, cls, reg, stats, timings, out, t0)
    timings["report_s"] = time.perf_counter() - t1
    return metrics
