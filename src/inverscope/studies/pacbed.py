"""PACBED study (Xu & LeBeau, Ultramicroscopy 188 (2018) 59): thickness and tilt of SrTiO3 [001]
read from position-averaged CBED by a network trained only on inverscope's simulations.

1. a PACBED library (:mod:`inverscope.datasets.pacbed_library`) and a held-out twin with other
   frozen-phonon configurations, both resumable stores in OUT;
2. camera-like training examples on the network grid (:mod:`inverscope.analysis.pacbed_models`);
3. a residual CNN regressor (thickness [nm], tilt folded into the octant [mrad]) with MC-dropout
   uncertainty, saved as ``OUT/models/pacbed_cnn`` with its input grid and normalization;
4. evaluation on held-out patterns turned into full raw camera frames (shifted, rotated, rescaled,
   noisy, clipped, 8-bit, JPEG), registered (:func:`inverscope.analysis.registration.register_pacbed`)
   and read by the network and by nearest-template matching against the library;
5. ``OUT/metrics.json`` and ``OUT/report.html``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import Field

from inverscope.analysis.pacbed_models import (ExampleSpec, PACBEDTrainConfig, draw_examples, fold_tilt,
                                               predict_with_uncertainty, to_input, train_regressor)
from inverscope.core.config import StrictModel
from inverscope.core.errors import InverscopeError
from inverscope.core.io import check_output_path, exclusive_lock, write_json_atomic
from inverscope.datasets.degrade import CameraRanges
from inverscope.datasets.pacbed_library import PACBEDLibraryConfig, PACBEDLibraryJob, estimate_resources, run_library
from inverscope.models.nets import PatternCNN, PatternCNNConfig

#: RunOptions fields this study uses (see inverscope.studies)
OPTIONS = frozenset({"scheduler", "workers"})


class GridSpec(StrictModel):
    """The network's input grid: +-crop_alpha x alpha on pixels x pixels."""

    crop_alpha: float = Field(2.0, gt=0, le=2.5)
    pixels: int = Field(48, ge=16, le=256)


class NetSpec(StrictModel):
    channels: list[int] = Field(default_factory=lambda: [12, 24, 48, 48], min_length=1)
    blocks_per_stage: int = Field(1, ge=1)
    hidden: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)


def _test_cameras() -> CameraRanges:
    return CameraRanges.model_validate({
        "base": {"frame_shape": [256, 256], "peak_counts": 230, "saturation_counts": 255, "bit_depth": 8,
                 "jpeg_quality": 75, "background_length_px": 96},
        "centre_shift_px": 20, "rotation_deg": [0, 90], "mrad_per_px": [0.45, 0.7],
        "dose_e_per_pattern": [1e5, 3e6], "blur_sigma_px": [0.3, 1.2], "background_counts": [2, 12],
        "background_smooth_counts": [0, 8]})


class EvaluationSpec(StrictModel):
    n_heldout: int = Field(96, ge=1)
    thickness_range_nm: tuple[float, float] = (5.0, 120.0)
    cameras: CameraRanges = Field(default_factory=_test_cameras, description="raw frames of the held-out patterns")
    mc_passes: int = Field(16, ge=1)
    template_rotations_deg: tuple[float, ...] = (-1.0, 0.0, 1.0)
    seed: int = 7


class Recipe(StrictModel):
    """The whole PACBED study in one YAML recipe (see recipes/pacbed_sto.yaml)."""

    study: Literal["pacbed"] = "pacbed"
    name: str = "pacbed"
    library: PACBEDLibraryConfig = Field(default_factory=PACBEDLibraryConfig)
    heldout_seed: int = Field(1000, description="frozen-phonon seed of the held-out library")
    grid: GridSpec = Field(default_factory=GridSpec)
    examples: ExampleSpec = Field(default_factory=ExampleSpec)
    n_train: int = Field(6000, ge=10)
    n_validation: int = Field(600, ge=10)
    net: NetSpec = Field(default_factory=NetSpec)
    train: PACBEDTrainConfig = Field(default_factory=PACBEDTrainConfig)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    seed: int = 0


def summary(m: dict) -> str:
    """Headline: held-out thickness and tilt MAE of the network beside template matching."""
    h = m["heldout"]
    return (f"thickness MAE {h['cnn']['thickness_mae_nm']:.2f} nm (templates {h['templates']['thickness_mae_nm']:.2f}), "
            f"tilt MAE {h['cnn']['tilt_mae_mrad']:.2f} mrad; {m['timings_s']['total_s']:.0f} s")


def _load(path) -> dict:
    from inverscope.datasets.pacbed_library import load_library

    lib = load_library(path)
    return {"patterns": lib["patterns"], "tilts": lib["tilts_mrad"], "thicknesses": lib["thicknesses_angstrom"],
            "sampling": lib["sampling_mrad"]}


def _on_grid(lib: dict, recipe: Recipe) -> np.ndarray:
    """Library patterns on the network grid (for template matching and the report)."""
    from inverscope.analysis.registration import resample_to_crystal

    n = recipe.grid.pixels
    out = np.empty((*lib["patterns"].shape[:2], n, n), np.float32)
    for t in range(out.shape[0]):
        for z in range(out.shape[1]):
            out[t, z] = resample_to_crystal(lib["patterns"][t, z], lib["sampling"], recipe.library.semiangle_mrad,
                                            crop_alpha=recipe.grid.crop_alpha, out_shape=(n, n))[0]
    return out


def _references(templates: np.ndarray, lib: dict, thickness_range_nm) -> np.ndarray:
    """Untilted library patterns across the thickness range: they tell registration the [100] from the
    [110] mirrors and the disc edge from a strong fringe inside it."""
    t_nm = lib["thicknesses"] / 10
    z_ok = np.flatnonzero((t_nm >= thickness_range_nm[0]) & (t_nm <= thickness_range_nm[1]))
    return templates[0, np.unique(np.linspace(z_ok[0], z_ok[-1], 4).round().astype(int))]


def run_study(recipe: Recipe, out_dir, *, data_file: str | None = None, log: Callable[[str], None] = print,
              progress=None, options=None) -> dict:
    """Build or reuse the libraries, train, evaluate on registered raw frames, report."""
    from inverscope.studies import RunOptions

    options = options or RunOptions()
    if data_file is not None:
        raise InverscopeError("--data: the pacbed study simulates its data; use `inverscope predict` for your patterns")
    out = Path(out_dir)
    check_output_path(out)
    held_cfg = recipe.library.model_copy(update={"seed": recipe.heldout_seed})
    if options.check_resources:
        est = estimate_resources(recipe.library, options.workers or 0)
        est.add_disk("held-out library", est.disk_bytes)
        est.check(disk_path=out)
    PACBEDLibraryJob(recipe.library).precheck()
    lo, hi = recipe.evaluation.thickness_range_nm
    t_nm = recipe.library.thicknesses_angstrom() / 10
    if not np.any((t_nm >= lo) & (t_nm <= hi)):
        raise InverscopeError(f"evaluation.thickness_range_nm: {lo}-{hi} nm holds no library thickness "
                              f"({t_nm[0]:.0f}-{t_nm[-1]:.0f} nm)")
    with exclusive_lock(out, "output directory"):
        return _run(recipe, held_cfg, out, log, progress, options)


def _run(recipe, held_cfg, out: Path, log, progress, options) -> dict:
    from inverscope.studies.pacbed_report import write_report

    t0, timings = time.perf_counter(), {}
    out.mkdir(parents=True, exist_ok=True)
    stats = {}
    for key, cfg in (("library", recipe.library), ("heldout", held_cfg)):
        log(f"{key}: {len(cfg.tilts_mrad())} tilts x {len(cfg.thicknesses_angstrom())} thicknesses into {out / key}.zarr")
        t = time.perf_counter()
        stats[key] = run_library(cfg, out / f"{key}.zarr", scheduler=options.scheduler, n_workers=options.workers or 0,
                                 progress=(lambda d, n, k=key: progress(f"simulate {k}", d, n)) if progress else None,
                                 check_resources=False, log=log)
        timings[f"simulate_{key}_s"] = time.perf_counter() - t
    lib, held = _load(out / "library.zarr"), _load(out / "heldout.zarr")
    n = recipe.grid.pixels
    out_mrad = 2 * recipe.grid.crop_alpha * recipe.library.semiangle_mrad / n
    rng = np.random.default_rng(recipe.seed)
    t = time.perf_counter()
    log(f"drawing {recipe.n_train} + {recipe.n_validation} camera-like examples on a {n}x{n} grid")
    templates = _on_grid(lib, recipe)
    reference = _references(templates, lib, recipe.evaluation.thickness_range_nm)

    def register(frame):
        from inverscope.analysis.registration import register_pacbed

        return register_pacbed(frame, recipe.library.semiangle_mrad, crop_alpha=recipe.grid.crop_alpha,
                               out_shape=(n, n), reference=reference).pattern

    x, y = draw_examples(lib["patterns"], lib["tilts"], lib["thicknesses"], lib["sampling"], (n, n), out_mrad,
                         recipe.n_train + recipe.n_validation, recipe.examples, rng, register=register)
    xi, mean, std = to_input(x[:recipe.n_train])
    xv = to_input(x[recipe.n_train:], mean, std)[0]
    timings["examples_s"] = time.perf_counter() - t
    net = PatternCNN(PatternCNNConfig(input_size=n, outputs=3, **recipe.net.model_dump()))
    fit = train_regressor(net, xi, y[:recipe.n_train], xv, y[recipe.n_train:], recipe.train, log=log)
    timings["train_s"] = fit["wall_s"]
    _save(out, net, recipe, out_mrad, mean, std)
    t = time.perf_counter()
    evaluation = _evaluate(recipe, net, mean, std, lib, held, templates, reference, log)
    timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    metrics = {"study": "pacbed", "name": recipe.name, "library": {k: _stat(v) for k, v in stats.items()},
               "training": {"n_train": recipe.n_train, "n_validation": recipe.n_validation, "epochs": recipe.train.epochs,
                            "best_val_loss": fit["best_val_loss"], "history": fit["history"]},
               "heldout": evaluation["metrics"], "grid": {"pixels": n, "out_mrad_per_px": out_mrad,
                                                          "crop_alpha": recipe.grid.crop_alpha},
               "timings_s": timings}
    write_json_atomic(out / "metrics.json", metrics)
    write_report(recipe, metrics, evaluation, lib, out)
    return metrics


def _stat(s: dict) -> dict:
    return {"simulated": s["simulated"], "skipped": s["skipped"], "repaired": s["repaired"], "wall_s": s["wall_s"]}


def _save(out: Path, net, recipe: Recipe, out_mrad: float, mean, std) -> None:
    from inverscope.models.io import save_model

    lib = recipe.library
    meta = {"task": "pacbed", "targets": ["thickness_nm", "tilt_x_mrad", "tilt_y_mrad"],
            "target_scale": list(recipe.train.target_scale), "tilt": "folded into 0 <= ty <= tx (4mm)",
            "input": {"compound": lib.compound, "energy_ev": lib.energy_kev * 1e3, "semiangle_mrad": lib.semiangle_mrad,
                      "crop_alpha": recipe.grid.crop_alpha, "pixels": recipe.grid.pixels, "out_mrad_per_px": out_mrad,
                      "transform": "sqrt(frame / mean), standardized per pixel"},
            "normalization": {"mean": np.asarray(mean).tolist(), "std": np.asarray(std).tolist()},
            "library": lib.data_dict()}
    save_model(out / "models" / "pacbed_cnn", net, "pattern_cnn", meta)


def _evaluate(recipe, net, mean, std, lib, held, templates, reference, log) -> dict:
    """Held-out patterns as raw frames -> registration -> network and templates."""
    from inverscope.analysis.registration import register_pacbed
    from inverscope.analysis.template_matching import OPS_4MM, TemplateMatcher
    from inverscope.datasets.degrade import degrade

    ev, n = recipe.evaluation, recipe.grid.pixels
    rng = np.random.default_rng(ev.seed)
    matcher = TemplateMatcher(templates, lib["tilts"], lib["thicknesses"], ev.template_rotations_deg)
    t_nm = held["thicknesses"] / 10
    z_ok = np.flatnonzero((t_nm >= ev.thickness_range_nm[0]) & (t_nm <= ev.thickness_range_nm[1]))
    rows, registered, frames = [], [], []
    log(f"evaluating on {ev.n_heldout} held-out patterns as raw camera frames")
    t_reg = 0.0
    for i in range(ev.n_heldout):
        ti, zi, op = int(rng.integers(len(held["tilts"]))), int(rng.choice(z_ok)), int(rng.integers(8))
        camera = ev.cameras.draw(rng)
        frame, truth = degrade(np.ascontiguousarray(OPS_4MM[op](held["patterns"][ti, zi])), camera, rng,
                               sampling_mrad=held["sampling"])
        t = time.perf_counter()
        reg = register_pacbed(frame, recipe.library.semiangle_mrad, crop_alpha=recipe.grid.crop_alpha, out_shape=(n, n),
                              reference=reference)
        t_reg += time.perf_counter() - t
        match = matcher.match(reg.pattern, ~(reg.saturated | reg.outside))
        rows.append({"tilt_index": ti, "thickness_nm": float(t_nm[zi]), "tilt_mrad": fold_tilt(held["tilts"][ti]).tolist(),
                     "centre_error_px": float(np.hypot(*np.subtract(reg.centre_px, truth["centre_px"]))),
                     "rotation_error_deg": float(abs((reg.rotation_deg - truth["rotation_deg"] + 45) % 90 - 45)),
                     "scale_error": float(reg.mrad_per_px / truth["mrad_per_px"] - 1),
                     "template_thickness_nm": match.thickness_angstrom / 10,
                     "template_tilt_mrad": list(fold_tilt(np.asarray(match.tilt_mrad))),
                     "template_correlation": match.correlation, "warnings": reg.warnings})
        registered.append(reg.pattern)
        if i < 4:
            frames.append((frame, reg))
    x = to_input(np.stack(registered), mean, std)[0]
    t = time.perf_counter()
    mu, sd = predict_with_uncertainty(net, x, recipe.train.target_scale, passes=ev.mc_passes, seed=ev.seed)
    t_net = time.perf_counter() - t
    for r, m, s in zip(rows, mu, sd):
        r.update({"cnn_thickness_nm": float(m[0]), "cnn_thickness_sd_nm": float(s[0]),
                  "cnn_tilt_mrad": list(fold_tilt(m[1:])), "cnn_tilt_sd_mrad": [float(v) for v in s[1:]]})
    return {"rows": rows, "registered": np.stack(registered), "frames": frames, "templates": templates,
            "metrics": _heldout_metrics(rows, t_reg / len(rows), t_net / len(rows))}


def _heldout_metrics(rows: list[dict], reg_s: float, net_s: float) -> dict:
    true_t = np.array([r["thickness_nm"] for r in rows])
    true_tilt = np.array([r["tilt_mrad"] for r in rows])

    def figures(t, tilt):
        err = np.abs(np.asarray(t) - true_t)
        return {"thickness_mae_nm": float(err.mean()), "thickness_median_ae_nm": float(np.median(err)),
                "within_2nm": float(np.mean(err <= 2)), "within_5nm": float(np.mean(err <= 5)),
                "tilt_mae_mrad": float(np.mean(np.linalg.norm(np.asarray(tilt) - true_tilt, axis=1)))}

    cnn = figures([r["cnn_thickness_nm"] for r in rows], [r["cnn_tilt_mrad"] for r in rows])
    sd = np.array([r["cnn_thickness_sd_nm"] for r in rows])
    err = np.abs(np.array([r["cnn_thickness_nm"] for r in rows]) - true_t)
    cnn["fraction_within_2_sd"] = float(np.mean(err <= 2 * sd))
    centre = np.array([r["centre_error_px"] for r in rows])
    scale = np.abs([r["scale_error"] for r in rows])
    return {"n": len(rows), "cnn": cnn,
            "templates": figures([r["template_thickness_nm"] for r in rows], [r["template_tilt_mrad"] for r in rows]),
            "registration": {"centre_error_px_median": float(np.median(centre)), "centre_error_px_max": float(centre.max()),
                             "scale_error_percent_median": float(100 * np.median(scale)),
                             "scale_error_percent_max": float(100 * scale.max()),
                             "rotation_error_deg_median": float(np.median([r["rotation_error_deg"] for r in rows])),
                             "warnings": int(sum(bool(r["warnings"]) for r in rows))},
            "seconds_per_pattern": {"registration": reg_s, "network": net_s, "total": reg_s + net_s}}


__all__ = ["Recipe", "run_study", "summary", "OPTIONS"]
