"""Report and metrics.json of the LAO/STO study (figures from report.plots, page from report.html)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from inverscope.analysis.saliency import stack_saliency
from inverscope.core.io import write_json_atomic
from inverscope.report import plots
from inverscope.report.html import HtmlReport


def _headline(cls: dict, reg: dict, timings: dict, stats: dict) -> dict:
    m = {"classification": {}, "regression": {}, "timings_s": {k: round(v, 2) for k, v in timings.items()},
         "campaign": {"simulated": stats["simulated"], "skipped": stats["skipped"]}}
    for mode, r in cls.items():
        m["classification"][mode] = {
            "accuracy": r["network"]["accuracy"], "baseline_pca_logreg_accuracy": r["baseline"]["accuracy"],
            "confusion": r["network"]["confusion"], "class_names": r["network"]["class_names"],
            "accuracy_per_thickness": r["network"]["accuracy_per_thickness"],
            **{k: r["network"][k] for k in ("accuracy_near_flat_steps", "n_near_flat_steps") if k in r["network"]},
            "n_train": r["n_train"], "n_test": r["n_test"], "epochs": r["epochs"], "train_wall_s": r["train_wall_s"],
            **({"static_check": r["static_check"]} if "static_check" in r else {})}
    for t, r in reg.items():
        m["regression"][t] = {"mae_angstrom": r["mae_angstrom"], "within_tolerance": r["within_tolerance"],
                              "tolerance_fraction": r["tolerance_fraction"], "n_train": r["n_train"], "n_test": r["n"],
                              "baseline_pca_ridge_mae_angstrom": r["baseline"]["mae_angstrom"],
                              "baseline_pca_ridge_within_tolerance": r["baseline"]["within_tolerance"],
                              "transfer_mae_angstrom": {k: v["mae_angstrom"] for k, v in r["transfer"].items()},
                              "train_wall_s": r["train_wall_s"]}
    return m


def _saliency_figure(cls: dict, n: int):
    images, titles = [], []
    for mode, r in cls.items():
        te, x = r["_test"]
        for i in range(min(n, len(te))):
            target = int(te.y[i])
            images.append(stack_saliency(r["_module"], x[i:i + 1], target)[0])
            titles.append(f"{mode}: {te.class_names[target]}")
    return plots.image_grid(images, titles, cmap="viridis") if images else None


def write_report(recipe, group, cls: dict, reg: dict, stats: dict, timings: dict, out: Path, t0: float) -> dict:
    """Write report.html and metrics.json into `out`; return the metrics."""
    timings["total_s"] = time.perf_counter() - t0
    metrics = _headline(cls, reg, timings, stats)
    metrics["recipe"] = recipe.name
    rep = HtmlReport(f"LAO/STO interface: {recipe.name}",
                     "Rough (buried step) vs intermixed interfaces from 4D-STEM line stacks (Oxley et al. 2020)")
    s = rep.section("Headline")
    cards = {f"accuracy ({k})": f"{100 * v['accuracy']:.1f} %" for k, v in metrics["classification"].items()}
    cards.update({f"step MAE {t} Å": f"{v['mae_angstrom']:.1f} Å" for t, v in metrics["regression"].items()})
    cards["wall time"] = f"{timings['total_s']:.0f} s"
    s.metrics(cards)
    rows = [[k, f"{100 * v['accuracy']:.1f} %", f"{100 * v['baseline_pca_logreg_accuracy']:.1f} %", v["n_train"], v["n_test"]]
            for k, v in metrics["classification"].items()]
    s.table(["mode", "3D-CNN accuracy", "PCA + logistic regression", "train examples", "test examples"], rows,
            caption="Held-out classification (test stacks augmented with the training noise and rotations)")
    lo, hi = recipe.classification.step_fraction_range
    near_flat = [f"{k} {100 * v['accuracy_near_flat_steps']:.0f} % of {v['n_near_flat_steps']}"
                 for k, v in metrics["classification"].items() if "accuracy_near_flat_steps" in v]
    if (lo, hi) != (0.0, 1.0):
        s.text(f"Rough examples count when the step lies between {lo:.2f} and {hi:.2f} of the thickness. "
               + ("Held-out rough examples outside that range (almost flat columns), classified by the same networks: "
                  + "; ".join(near_flat) + "." if near_flat else "No held-out rough example fell outside that range."))
    first = next(iter(metrics["classification"].values()), {})
    if "static_check" in first:
        sc = first["static_check"]
        rep.section("Domain shift: static vs frozen-phonon simulations").text(
            "The same held-out structures simulated without phonons, fed to the models trained on frozen-phonon data. "
            "A large gap means the model depends on the thermal diffuse background.").table(
            ["model", "phonon test accuracy", "static test accuracy"],
            [["3D-CNN", f"{100 * first['accuracy']:.1f} %", f"{100 * sc['network_accuracy_static']:.1f} %"],
             ["PCA + logistic regression", f"{100 * first['baseline_pca_logreg_accuracy']:.1f} %",
              f"{100 * sc['baseline_accuracy_static']:.1f} %"]])
    sec = rep.section("Training curves")
    sec.figure(plots.training_curves({f"classifier {k}": r["history"] for k, r in cls.items()}), "Cross-entropy loss")
    if reg:
        sec.figure(plots.training_curves({f"regressor {t} Å": r["history"] for t, r in reg.items()}), "MSE loss")
    rep.section("Confusion matrices").figure(plots.confusion_matrices(
        {k: (np.array(r["network"]["confusion"]), r["network"]["class_names"]) for k, r in cls.items()}),
        "Held-out test stacks, rows are the true class")
    if reg:
        rs = rep.section("Step position")
        rs.figure(plots.regression_scatter({f"{t} Å": (np.array(r["true"]), np.array(r["pred"])) for t, r in reg.items()},
                                           recipe.regression.tolerance_fraction),
                  f"Predicted vs true step depth per thickness; band: ±{100 * recipe.regression.tolerance_fraction:.0f} % of the thickness")
        rs.table(["model", "test thickness [Å]", "MAE [Å]", "within tolerance", "PCA + ridge MAE [Å]", "n"],
                 [[f"{t} Å", k, f"{v['mae_angstrom']:.1f}", f"{100 * v['within_tolerance']:.0f} %",
                   f"{v['baseline']['mae_angstrom']:.1f}", v["n"]] for t, r in reg.items() for k, v in r["transfer"].items()])
        curves = {f"{t} Å model": ([float(k) for k in r["transfer"]], [v["mae_angstrom"] for v in r["transfer"].values()])
                  for t, r in reg.items()}
        rs.figure(plots.error_vs_thickness(curves, {f"{t} Å model": float(t) for t in reg}),
                  "Error vs thickness and transferability: every model on every recorded thickness (dotted: its own)")
    fig = _saliency_figure(cls, recipe.evaluation.saliency_examples)
    if fig is not None:
        rep.section("Saliency").text("|∂ class score / ∂ input| (captum Saliency), summed over the probe positions of "
                                     "the stack, on held-out stacks.").figure(fig, "Saliency maps (ky, kx)")
    te, x = next(iter(cls.values()))["_test"]
    if len(te):
        rep.section("Example input").figure(plots.stack_montage(x[0], f"test stack, class {te.class_names[int(te.y[0])]}"),
                                            "One augmented held-out stack (log intensity)")
    rep.section("Timings").table(["stage", "wall time [s]"], [[k, f"{v:.1f}"] for k, v in timings.items()])
    rep.section("Parameters").params(recipe.model_dump(mode="json"))
    rep.write(out / "report.html")
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
