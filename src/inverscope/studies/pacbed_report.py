"""Report of the PACBED study: library, training, held-out accuracy, registration, a gallery."""

from __future__ import annotations

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from inverscope.report.html import HtmlReport  # noqa: E402


def _show(ax, img, title):
    ax.imshow(np.log1p(np.clip(img, 0, None) / (np.median(np.clip(img, 0, None)) + 1e-12)), cmap="magma")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _library(templates, lib):
    z = np.linspace(0, templates.shape[1] - 1, 6).round().astype(int)
    fig, axes = plt.subplots(2, 6, figsize=(12, 4.4), layout="constrained")
    for row, ti in enumerate((0, templates.shape[0] - 1)):
        tx, ty = lib["tilts"][ti]
        for ax, zi in zip(axes[row], z):
            _show(ax, templates[ti, zi], f"{lib['thicknesses'][zi] / 10:.0f} nm, tilt ({tx:g}, {ty:g}) mrad")
    return fig


def _curves(history):
    fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
    e = [h["epoch"] + 1 for h in history]
    ax.semilogy(e, [h["train_loss"] for h in history], label="training (augmented)")
    ax.semilogy(e, [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (scaled targets)")
    ax.legend()
    return fig


def _scatter(rows):
    true = np.array([r["thickness_nm"] for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    axes[0].errorbar(true, [r["cnn_thickness_nm"] for r in rows], yerr=[r["cnn_thickness_sd_nm"] for r in rows],
                     fmt="o", ms=3, alpha=0.7, label="network ± MC-dropout sd")
    axes[0].plot(true, [r["template_thickness_nm"] for r in rows], "x", ms=4, alpha=0.7, label="templates")
    lim = [0, true.max() * 1.1]
    axes[0].plot(lim, lim, "k--", lw=0.8)
    axes[0].set_xlabel("true thickness [nm]")
    axes[0].set_ylabel("predicted [nm]")
    axes[0].legend(fontsize=8)
    order = np.argsort(true)
    for key, label in (("cnn_thickness_nm", "network"), ("template_thickness_nm", "templates")):
        err = np.abs(np.array([r[key] for r in rows]) - true)[order]
        axes[1].plot(true[order], err, "o", ms=3, alpha=0.7, label=label)
    axes[1].set_xlabel("true thickness [nm]")
    axes[1].set_ylabel("|error| [nm]")
    axes[1].legend(fontsize=8)
    tilt = np.array([r["tilt_mrad"] for r in rows])
    for key, label in (("cnn_tilt_mrad", "network"), ("template_tilt_mrad", "templates")):
        pred = np.array([r[key] for r in rows])
        axes[2].plot(np.linalg.norm(tilt, axis=1), np.linalg.norm(pred - tilt, axis=1), "o", ms=3, alpha=0.7, label=label)
    axes[2].set_xlabel("true |tilt| [mrad]")
    axes[2].set_ylabel("tilt error [mrad]")
    axes[2].legend(fontsize=8)
    return fig


def _registration(frames):
    fig, axes = plt.subplots(2, len(frames), figsize=(3.2 * len(frames), 6.2), squeeze=False, layout="constrained")
    for k, (frame, reg) in enumerate(frames):
        _show(axes[0, k], np.asarray(frame, float), f"raw frame {k + 1}")
        (r, c), rad = reg.centre_px, reg.radius_px
        axes[0, k].add_patch(plt.Circle((c, r), rad, fill=False, color="cyan", lw=1))
        axes[0, k].plot(c, r, "c+")
        _show(axes[1, k], reg.pattern, f"registered: {reg.rotation_deg:.1f}°, {reg.mrad_per_px:.3f} mrad/px")
    return fig


def _gallery(rows, registered, templates, lib, k=6):
    fig, axes = plt.subplots(2, k, figsize=(2.2 * k, 4.8), layout="constrained")
    thick = lib["thicknesses"] / 10
    folded = np.sort(np.abs(lib["tilts"]), axis=1)[:, ::-1]
    for j, i in enumerate(np.linspace(0, len(rows) - 1, k).round().astype(int)):
        r = rows[i]
        zi = int(np.argmin(np.abs(thick - r["cnn_thickness_nm"])))
        ti = int(np.argmin(np.linalg.norm(folded - np.asarray(r["cnn_tilt_mrad"]), axis=1)))
        _show(axes[0, j], registered[i], f"true {r['thickness_nm']:.0f} nm")
        _show(axes[1, j], templates[ti, zi], f"sim. at {r['cnn_thickness_nm']:.1f} ± {r['cnn_thickness_sd_nm']:.1f} nm")
    return fig


def write_report(recipe, metrics: dict, evaluation: dict, lib: dict, out) -> None:
    h = metrics["heldout"]
    rep = HtmlReport(f"PACBED thickness and tilt: {recipe.name}",
                     f"{recipe.library.compound} [001], {recipe.library.energy_kev:g} kV, "
                     f"{recipe.library.semiangle_mrad:g} mrad; a network trained only on simulations")
    s = rep.section("Headline")
    s.metrics({"thickness MAE (network)": f"{h['cnn']['thickness_mae_nm']:.2f} nm",
               "thickness MAE (templates)": f"{h['templates']['thickness_mae_nm']:.2f} nm",
               "tilt MAE (network)": f"{h['cnn']['tilt_mae_mrad']:.2f} mrad",
               "registration centre (median)": f"{h['registration']['centre_error_px_median']:.2f} px",
               "per pattern": f"{1e3 * h['seconds_per_pattern']['total']:.0f} ms"})
    s.table(["reader", "thickness MAE [nm]", "within ±2 nm", "within ±5 nm", "tilt MAE [mrad]"],
            [[name, v["thickness_mae_nm"], v["within_2nm"], v["within_5nm"], v["tilt_mae_mrad"]]
             for name, v in (("network", h["cnn"]), ("nearest template", h["templates"]))],
            f"{h['n']} held-out patterns (other frozen-phonon configurations) as raw camera frames, registered")
    rep.section("The library").figure(_library(evaluation["templates"], lib),
                                      "Library PACBEDs on the network grid (log scale), untilted and most tilted")
    rep.section("Training").figure(_curves(metrics["training"]["history"]), "Loss per epoch")
    rep.section("Held-out accuracy").figure(_scatter(evaluation["rows"]),
                                            "Predicted vs true thickness, error vs thickness, tilt error")
    rep.section("Registration check").figure(_registration(evaluation["frames"]),
                                             "Raw frames with the disc found (cyan) and the patterns on crystal axes")
    rep.section("Gallery").figure(_gallery(evaluation["rows"], evaluation["registered"], evaluation["templates"], lib),
                                  "Registered held-out patterns (top) beside the simulation at the network's answer")
    rep.section("Parameters").params(recipe.model_dump(mode="json"))
    rep.write(out / "report.html")
