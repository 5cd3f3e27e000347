"""Recognition imaging and unmixing (Kalinin's lecture on shallow networks: EELS and BE-PFM).

Thin composition of the layers below, on two data sets:

* a synthetic EELS line scan across STO | LSMO | BFO | LSMO | STO with known end members and
  abundances (datasets.synthetic): a shallow network trained on labeled boxes maps the whole
  scan (analysis.recognition); NNLS with the known end members and with the labeled boxes'
  mean spectra gives coefficient, residual and chi^2 maps (analysis.unmixing), all scored
  against the ground truth; PCA and NMF loadings and maps for comparison;
* the bundled BE-PFM PZT loops (or the user's BEPS file via ``--data``): the user's labeled
  regions train the same network; NNLS with the labeled regions' mean loops as end members
  (signed loops: only the coefficients are constrained to be >= 0), or end members from an
  ``.npy`` file; PCA and NMF loadings and maps against the voltage axis.

Everything the user can get wrong is checked before the output directory is created.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal

import numpy as np
from pydantic import Field

from inverscope.analysis.recognition import Box, LabelSpec, RecognitionImager, labels_to_mask
from inverscope.core.config import StrictModel
from inverscope.core.errors import ConfigError, InverscopeError
from inverscope.core.io import write_json_atomic
from inverscope.core.resources import Estimate


def _boxes(spec: dict) -> LabelSpec:
    return LabelSpec(boxes={k: [Box(rows=r, cols=c) for r, c in v] for k, v in spec.items()})


class ScanConfig(StrictModel):
    """Arguments of :func:`inverscope.datasets.synthetic.eels_line_scan` (units in the names)."""

    rows: int = Field(6, ge=1)
    positions: int = Field(160, ge=2)
    channels: int = Field(256, ge=8)
    energy_min_ev: float = Field(5.0, gt=0)
    energy_max_ev: float = Field(150.0, gt=0)
    layers: list[str] = Field(default_factory=lambda: ["STO", "LSMO", "BFO", "LSMO", "STO"])
    layer_widths: list[float] | None = None      # [positions]; None: equal widths
    interface_width: float = Field(2.0, ge=0)    # erf broadening [positions]
    interface_roughness: float = Field(1.0, ge=0)  # per-row interface shift, std [positions]
    dose_counts: float = Field(2e4, gt=0)        # expected counts per spectrum over the window
    read_noise_counts: float = Field(2.0, ge=0)


class SyntheticConfig(StrictModel):
    enabled: bool = True
    scan: ScanConfig = Field(default_factory=ScanConfig)
    labels: LabelSpec = Field(default_factory=lambda: _boxes({
        "STO": [((0, 6), (8, 24))], "LSMO": [((0, 6), (40, 56))], "BFO": [((0, 6), (72, 88))]}))
    pca_components: int = Field(4, ge=1)
    nmf_components: int = Field(3, ge=1)


class PZTConfig(StrictModel):
    enabled: bool = True
    file: str | None = None                      # None: the bundled PZT loops (--data overrides)
    channel: str | None = None
    voltage_key: str | None = None
    component: Literal["projected", "amplitude", "phase", "real", "imag"] | None = None   # complex responses
    scaling: Literal["auto", "global", "robust", "per_pixel"] = Field(
        "auto", description="per_pixel divides each loop by its amplitude; the others keep the data units "
                            "(the network standardizes, NNLS is scale-free)")
    outlier_threshold: float | None = Field(5.0, gt=0, description="datasets.loop_preprocess; null keeps all")
    labels: LabelSpec = Field(default_factory=lambda: _boxes({
        "c-domain": [((8, 14), (20, 27)), ((40, 46), (20, 26))],
        "a-domain": [((20, 24), (5, 9)), ((10, 13), (12, 16))],
        "shifted-loop": [((50, 55), (44, 52))]}))
    endmembers_file: str | None = None           # .npy (k, steps); None: mean loops of the labeled classes
    pca_components: int = Field(4, ge=1)
    nmf_components: int = Field(3, ge=1)


class RecognitionConfig(StrictModel):
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [32])
    activation: Literal["tanh", "relu", "gelu"] = "tanh"
    n_components: int | None = Field(8, ge=1)    # PCA of the standardized spectra; None: all channels
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    batch_size: int = Field(64, ge=1)
    max_epochs: int = Field(300, ge=1)
    patience: int = Field(40, ge=1)
    validation_fraction: float = Field(0.15, gt=0, lt=1)


class Recipe(StrictModel):
    study: Literal["recognition_imaging"] = "recognition_imaging"
    name: str = "recognition_imaging"
    seed: int = 0
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    pzt: PZTConfig = Field(default_factory=PZTConfig)
    recognition: RecognitionConfig = Field(default_factory=RecognitionConfig)


@dataclass
class _Labeled:
    """A cube with its label mask, ready for the analysis."""

    cube: np.ndarray
    mask: np.ndarray
    names: list[str]
    endmembers: np.ndarray | None = None       # given end members (None: class means)
    source: str = ""
    outliers: np.ndarray | None = None         # (rows, cols) bool: not trained on, still mapped
    data_check: dict | None = None


def _check_components(field: str, n: int | None, pixels: int, channels: int) -> None:
    if n is not None and n > min(pixels, channels):
        raise ConfigError(f"{field}: got {n}; allowed 1..{min(pixels, channels)} "
                          f"(min of {pixels} pixels and {channels} channels)")


def _check_recognition(recipe: Recipe, section: str, lab: _Labeled) -> None:
    n_lab = int((lab.mask >= 0).sum())
    _check_components(f"recognition.n_components ({section} has {n_lab} labeled pixels)",
                      recipe.recognition.n_components, n_lab, lab.cube.shape[-1])
    cfg = getattr(recipe, section)
    pixels = int(np.prod(lab.cube.shape[:-1]))
    _check_components(f"{section}.pca_components", cfg.pca_components, pixels, lab.cube.shape[-1])
    _check_components(f"{section}.nmf_components", cfg.nmf_components, pixels, lab.cube.shape[-1])


def _prepare_synthetic(recipe: Recipe):
    from inverscope.datasets.synthetic import eels_line_scan

    cfg = recipe.synthetic
    try:
        scan = eels_line_scan(**cfg.scan.model_dump(), seed=recipe.seed)
    except InverscopeError as err:
        raise ConfigError(f"synthetic.scan.{err}") from None
    mask, names = labels_to_mask(cfg.labels, scan.cube.shape[:2], class_names=scan.names, field="synthetic.labels")
    lab = _Labeled(scan.cube, mask, names, source="synthetic EELS line scan")
    _check_recognition(recipe, "synthetic", lab)
    return scan, lab


def _load_endmembers(path: str, steps: int) -> np.ndarray:
    from inverscope.analysis.unmixing import check_endmembers

    p = Path(path)
    if p.suffix.lower() != ".npy" or not p.is_file():
        raise ConfigError(f"pzt.endmembers_file: got {path!r}; expected an existing .npy file of shape (k, steps)")
    try:
        w = np.load(p, allow_pickle=False)
        return check_endmembers(w, steps)
    except InverscopeError as err:
        raise ConfigError(f"pzt.endmembers_file ({path}): {err}") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"pzt.endmembers_file: {path!r} cannot be read as .npy ({err})") from None


def _prepare_pzt(recipe: Recipe, data_file: str | None):
    """The BEPS loops: loaded, checked (datasets.loop_preprocess), outliers masked out of the labels."""
    from inverscope.datasets.io.beps import load_beps, load_example
    from inverscope.datasets.loop_preprocess import prepare_loops
    from inverscope.datasets.preprocess import interpolate_nonfinite

    cfg = recipe.pzt
    path = data_file or cfg.file
    data = load_example("pzt_piezoresponse") if path is None else \
        load_beps(path, channel=cfg.channel, voltage_key=cfg.voltage_key, component=cfg.component)
    threshold = cfg.outlier_threshold if cfg.outlier_threshold is not None else math.inf
    prep = prepare_loops(data.loops, data.voltage, scaling=cfg.scaling, outlier_threshold=threshold)
    loops = interpolate_nonfinite(np.where(prep.outliers.reshape(data.loops.shape[:2])[..., None]
                                           & ~np.isfinite(data.loops), 0.0, data.loops))
    per_pixel = prep.report["scaling"]["chosen"] == "per_pixel"
    if per_pixel:              # shapes, not amplitudes: each loop over its amplitude (relative to the median)
        loops = loops / (prep.scale / np.median(prep.scale[~prep.outliers])).reshape(loops.shape[:2])[..., None]
    mask, names = labels_to_mask(cfg.labels, loops.shape[:2], field="pzt.labels")
    outliers = prep.outliers.reshape(loops.shape[:2])
    mask = np.where(outliers, -1, mask)                   # outlier pixels are not trained on
    w = None if cfg.endmembers_file is None else _load_endmembers(cfg.endmembers_file, loops.shape[-1])
    if w is not None and per_pixel:
        w = w / (np.percentile(w, 95, axis=1) - np.percentile(w, 5, axis=1))[:, None] * np.median(prep.scale[~prep.outliers])
    lab = _Labeled(loops, mask, names, w, data.source, outliers, prep.report)
    _check_recognition(recipe, "pzt", lab)
    return data, lab


def _prepare(recipe: Recipe, data_file: str | None) -> dict:
    if not (recipe.synthetic.enabled or recipe.pzt.enabled):
        raise ConfigError("synthetic.enabled and pzt.enabled: both false; enable at least one")
    if data_file is not None and not recipe.pzt.enabled:
        raise ConfigError(f"--data: got {data_file!r} but pzt.enabled is false; enable the pzt section to use it")
    prep = {}
    if recipe.synthetic.enabled:
        prep["synthetic"] = _prepare_synthetic(recipe)
    if recipe.pzt.enabled:
        prep["pzt"] = _prepare_pzt(recipe, data_file)
    return prep


def _recognize(recipe: Recipe, lab: _Labeled) -> tuple[RecognitionImager, np.ndarray]:
    imager = RecognitionImager(**recipe.recognition.model_dump(), seed=recipe.seed).fit(lab.cube, lab.mask)
    return imager, imager.predict_proba(lab.cube)


def _decompose(cube: np.ndarray, cfg, seed: int) -> dict:
    from inverscope.analysis.unmixing import nmf_decomposition, pca_decomposition

    return {"pca": pca_decomposition(cube, cfg.pca_components, seed),
            "nmf": nmf_decomposition(cube, cfg.nmf_components, seed)}


def _coef_errors(coef: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    err = coef - truth
    return float(np.sqrt(np.mean(err ** 2))), float(np.mean(np.abs(err)))


def _fit_summary(imager: RecognitionImager) -> dict:
    rec = imager.fit_record_
    return {"epochs": rec.epochs, "best_epoch": rec.best_epoch, "train_wall_s": rec.wall_s}


def _decomposition_metrics(dec: dict) -> dict:
    return {"pca_explained_variance_ratio": dec["pca"].explained_variance_ratio.tolist(),
            "nmf_reconstruction_error": dec["nmf"].reconstruction_error, "nmf_shift": dec["nmf"].shift,
            "nmf_converged": dec["nmf"].converged}


def _synthetic_metrics(scan, lab: _Labeled, pred: np.ndarray, imager, fits: dict) -> dict:
    from inverscope.analysis.metrics import classification_summary

    unlabeled = lab.mask < 0
    known, est = fits["known"], fits["est"]
    rmse, mae = _coef_errors(known.coefficients, scan.abundances)
    rmse_e, mae_e = _coef_errors(est.coefficients, scan.abundances)
    return {"shape": list(scan.cube.shape), "materials": lab.names, "n_labeled": int((~unlabeled).sum()),
            "recognition_accuracy": float(np.mean(pred == scan.labels)),
            "recognition_accuracy_unlabeled": float(np.mean(pred[unlabeled] == scan.labels[unlabeled])),
            "recognition": {**classification_summary(scan.labels.ravel(), pred.ravel(), lab.names),
                            **_fit_summary(imager)},
            "unmixing_coefficient_rmse": rmse, "unmixing_coefficient_mae": mae,
            "unmixing_rmse_estimated_endmembers": rmse_e, "unmixing_mae_estimated_endmembers": mae_e,
            "chi2_median": float(np.median(known.chi2)),
            "chi2_median_estimated_endmembers": float(np.median(est.chi2)),
            "chi2_median_second_difference_sigma": float(np.median(fits["rule"].chi2)),
            "residual_rms_median_counts": float(np.median(known.residual)),
            "coefficient_sum_median": float(np.median(known.coefficients.sum(-1)))}


def _synthetic(recipe: Recipe, scan, lab: _Labeled, timings: dict, log) -> tuple[dict, dict]:
    from inverscope.analysis.unmixing import class_mean_spectra, counting_noise_sigma, nnls_unmix

    t = time.perf_counter()
    log(f"synthetic EELS {scan.cube.shape}: recognition trained on {(lab.mask >= 0).sum()} labeled pixels")
    imager, proba = _recognize(recipe, lab)
    pred = proba.argmax(-1)
    timings["synthetic_recognition_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sigma = counting_noise_sigma(scan.cube, scan.read_noise_counts)
    est_w = class_mean_spectra(scan.cube, lab.mask, len(lab.names))
    fits = {"known": nnls_unmix(scan.cube, scan.endmembers, sigma), "est": nnls_unmix(scan.cube, est_w, sigma),
            "rule": nnls_unmix(scan.cube, scan.endmembers)}   # the same fit, sigma from the second-difference rule
    timings["synthetic_unmixing_s"] = time.perf_counter() - t
    t = time.perf_counter()
    dec = _decompose(scan.cube, recipe.synthetic, recipe.seed)
    timings["synthetic_decomposition_s"] = time.perf_counter() - t
    m = {**_synthetic_metrics(scan, lab, pred, imager, fits), **_decomposition_metrics(dec)}
    extra = {"scan": scan, "lab": lab, "proba": proba, "pred": pred, "known": fits["known"], "est": fits["est"],
             "est_w": est_w, **dec}
    return m, extra


def _pzt_metrics(recipe: Recipe, data, lab: _Labeled, pred: np.ndarray, imager, unmix, w_names: list[str]) -> dict:
    labeled = lab.mask >= 0
    inl = ~lab.outliers
    from_classes = recipe.pzt.endmembers_file is None
    m = {"source": data.source, "shape": list(lab.cube.shape), "classes": lab.names,
         "n_labeled": {n: int((lab.mask == i).sum()) for i, n in enumerate(lab.names)},
         "class_fractions": {n: float(np.mean(pred[inl] == i)) for i, n in enumerate(lab.names)},
         "recognition_accuracy_labeled": float(np.mean(pred[labeled] == lab.mask[labeled])),
         "recognition": _fit_summary(imager),
         "endmembers": "mean loops of the labeled classes" if from_classes else recipe.pzt.endmembers_file,
         "endmember_names": w_names, "chi2_median": float(np.median(unmix.chi2[inl])),
         "chi2_p90": float(np.percentile(unmix.chi2[inl], 90)),
         "residual_rms_median": float(np.median(unmix.residual[inl])),
         "data_check": lab.data_check, "outlier_pixels": int(lab.outliers.sum()),
         "chi2_median_outlier_pixels": float(np.median(unmix.chi2[~inl])) if (~inl).any() else None,
         "coefficient_medians": {n: float(np.median(unmix.coefficients[..., i])) for i, n in enumerate(w_names)}}
    if from_classes:
        m["recognition_unmixing_agreement"] = float(np.mean(unmix.coefficients.argmax(-1) == pred))
    return m


def _pzt(recipe: Recipe, data, lab: _Labeled, timings: dict, log) -> tuple[dict, dict]:
    from inverscope.analysis.unmixing import class_mean_spectra, nnls_unmix

    from inverscope.datasets.loop_preprocess import format_check

    t = time.perf_counter()
    log(format_check(lab.data_check))
    log(f"{data.source}: loops {lab.cube.shape}, recognition trained on {(lab.mask >= 0).sum()} labeled pixels")
    imager, proba = _recognize(recipe, lab)
    pred = proba.argmax(-1)
    timings["pzt_recognition_s"] = time.perf_counter() - t
    t = time.perf_counter()
    from_classes = lab.endmembers is None
    w = class_mean_spectra(lab.cube, lab.mask, len(lab.names)) if from_classes else lab.endmembers
    unmix = nnls_unmix(lab.cube, w)                          # sigma from the second-difference rule
    timings["pzt_unmixing_s"] = time.perf_counter() - t
    t = time.perf_counter()
    dec = _decompose(lab.cube, recipe.pzt, recipe.seed)
    timings["pzt_decomposition_s"] = time.perf_counter() - t
    w_names = lab.names if from_classes else [f"end member {i}" for i in range(len(w))]
    m = {**_pzt_metrics(recipe, data, lab, pred, imager, unmix, w_names), **_decomposition_metrics(dec)}
    extra = {"data": data, "lab": lab, "proba": proba, "pred": pred, "unmix": unmix, "w": w, "w_names": w_names, **dec}
    return m, extra


#: arrays of the synthetic cube's size held at once: the cube with its expected counts and noise,
#: standardized and PCA copies, three NNLS fits (fitted spectra and residuals), NMF, the report's maps
_SYNTHETIC_CUBE_COPIES = 16


def estimate_resources(recipe: Recipe) -> Estimate:
    """Memory [bytes] of the synthetic part from the recipe alone (the measured loops are bounded by their file)."""

    est = Estimate("recognition_imaging")
    if recipe.synthetic.enabled:
        s = recipe.synthetic.scan
        est.add_memory("synthetic EELS cube (float64, with analysis copies)",
                       8.0 * s.rows * s.positions * s.channels * _SYNTHETIC_CUBE_COPIES)
    return est


#: RunOptions fields this study uses (see inverscope.studies)
OPTIONS = frozenset({"data_file"})


def run_study(recipe: Recipe, out_dir, *, data_file: str | None = None, log: Callable[[str], None] = print,
              progress=None, options=None) -> dict:
    """Run both parts of the study; writes OUT/report.html and OUT/metrics.json and returns the metrics.

    Unless ``options.check_resources`` is false, a synthetic scan too large for this machine's
    memory is refused first.

    Raises
    ------
    InverscopeError
        Bad labels, data or end members, before anything is written.
    """
    from inverscope.core.io import check_output_path
    from inverscope.studies import RunOptions
    from inverscope.studies.recognition_imaging_report import write_report

    check_output_path(out_dir)
    if (options or RunOptions()).check_resources:
        estimate_resources(recipe).check()
    t0 = time.perf_counter()
    prep = _prepare(recipe, data_file)
    timings = {"prepare_s": time.perf_counter() - t0}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)  # only once every input passed its checks
    m: dict = {"recipe": recipe.name, "seed": recipe.seed}
    extra: dict = {}
    if "synthetic" in prep:
        m["synthetic"], extra["synthetic"] = _synthetic(recipe, *prep["synthetic"], timings, log)
    if "pzt" in prep:
        m["pzt"], extra["pzt"] = _pzt(recipe, *prep["pzt"], timings, log)
    t = time.perf_counter()
    m["timings_s"] = {**timings, "total_s": t - t0}      # the report shows the analysis time
    write_report(recipe, m, extra, out)
    m["timings_s"] = {**timings, "report_s": time.perf_counter() - t, "total_s": time.perf_counter() - t0}
    write_json_atomic(out / "metrics.json", m)
    return m


def summary(metrics: dict) -> str:
    """One short phrase for the CLI's final line."""
    parts = []
    if "synthetic" in metrics:
        s = metrics["synthetic"]
        parts.append(f"synthetic recognition {100 * s['recognition_accuracy']:.1f} % "
                     f"(unlabeled {100 * s['recognition_accuracy_unlabeled']:.1f} %), "
                     f"NNLS coefficient RMSE {s['unmixing_coefficient_rmse']:.4f}")
    if "pzt" in metrics:
        parts.append(f"BE-PFM median chi2 {metrics['pzt']['chi2_median']:.1f}")
    parts.append(f"{metrics['timings_s']['total_s']:.0f} s")
    return "; ".join(parts)
