"""Report of the atom-finding study: headline, overlays, F1 and errors vs dose beside the baseline,
class confusion, multislice check, tracking (tracks, MSD, transitions), training curves, parameters."""

from __future__ import annotations

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from inverscope.report.html import HtmlReport  # noqa: E402

COLOURS = ["#00e5ff", "#ff3d00", "#76ff03", "#ffea00", "#d500f9", "#ff80ab", "#ffffff"]


def _overlay(ax, g: dict, classes, title: str):
    ax.imshow(g["image"], cmap="gray")
    df = g["pred"]
    for k, name in enumerate(classes):
        sel = df["class"].to_numpy() == k
        ax.plot(df["x_px"][sel], df["y_px"][sel], "o", ms=2.5, mfc="none", mew=0.8, color=COLOURS[k % len(COLOURS)],
                label=name)
    s = g["score"]
    t = g["truth"]
    atom = ~t["is_vacancy"]
    tx, ty = t["x_px"][atom], t["y_px"][atom]
    ax.plot(tx[s["fn_index"]], ty[s["fn_index"]], "x", ms=4, color="yellow", label="missed")
    ax.plot(df["x_px"].to_numpy()[s["fp_index"]], df["y_px"].to_numpy()[s["fp_index"]], "s", ms=4, mfc="none",
            color="magenta", label="false")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _gallery(gal: list[dict], classes):
    n = len(gal)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 6.6), squeeze=False, layout="constrained")
    for j, g in enumerate(gal):
        _overlay(axes[0, j], g, classes, f"{g['dose']:g} e/Å²: network ({len(g['pred'])} atoms)")
        axes[1, j].imshow(g["uncertainty"], cmap="viridis")
        axes[1, j].set_title("ensemble std (max over classes)", fontsize=8)
        axes[1, j].set_xticks([])
        axes[1, j].set_yticks([])
    axes[0, 0].legend(fontsize=6, loc="lower left", framealpha=0.6)
    return fig


def _vs_dose(ts: dict):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    for name, m in ts.items():
        doses = [r["dose_e_per_a2"] for r in m["per_dose"]]
        for key, style, label in (("network", "o-", "U-Net ensemble"), ("baseline", "s--", "baseline (centroid)"),
                                  ("baseline_gaussian", "^:", "baseline (2D Gaussian)")):
            if key not in m["per_dose"][0]:
                continue
            lab = f"{label}, {name}" if len(ts) > 1 else label
            axes[0].semilogx(doses, [r[key]["f1"] for r in m["per_dose"]], style, label=lab)
            axes[1].loglog(doses, [r[key]["median_error_pm"] for r in m["per_dose"]], style, label=lab)
            axes[2].loglog(doses, [r[key]["rmse_pm"] for r in m["per_dose"]], style, label=lab)
    axes[0].axhline(0.99, color="k", lw=0.6, ls=":")
    axes[0].axhline(0.95, color="gray", lw=0.6, ls=":")
    axes[0].set_ylabel("F1")
    axes[1].set_ylabel("median position error [pm]")
    axes[2].set_ylabel("RMS position error [pm]")
    axes[2].axhline(5, color="k", lw=0.6, ls=":")
    for ax in axes:
        ax.set_xlabel("dose [e/Å²]")
    axes[0].legend(fontsize=7)
    return fig


def _confusion(conf, classes, title):
    conf = np.asarray(conf, float)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.2, 1.1 * len(classes) + 1.6), layout="constrained")
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(conf[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=8)
    return fig


def _training(members):
    fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
    for i, m in enumerate(members):
        s = [h["step"] for h in m["history"]]
        ax.semilogy(s, [h["train_loss"] for h in m["history"]], "-", color=f"C{i}", label=f"member {i} training")
        ax.semilogy(s, [h["val_loss"] for h in m["history"]], "--", color=f"C{i}", label=f"member {i} validation")
    ax.set_xlabel("step")
    ax.set_ylabel("soft cross-entropy")
    ax.legend(fontsize=7)
    return fig


def _tracks(track, classes):
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), layout="constrained")
    axes[0].imshow(track["frames"][0], cmap="gray")
    for _, g in track["tracks"].groupby("particle"):
        c = COLOURS[int(g["class"].mode().iloc[0]) % len(COLOURS)]
        axes[0].plot(g["x"], g["y"], "-", lw=0.8, color=c)
    axes[0].set_title("tracks (drift-corrected, on frame 0), coloured by class", fontsize=8)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    t = np.arange(len(track["drift_true"]))
    for k, lab in ((0, "x"), (1, "y")):
        axes[1].plot(t, track["drift_true"][:, k], "-", color=f"C{k}", label=f"true drift {lab}")
        axes[1].plot(t, track["drift_found"][:, k], "o", ms=3, color=f"C{k}", label=f"found {lab}")
    axes[1].set_xlabel("frame")
    axes[1].set_ylabel("drift [px]")
    axes[1].legend(fontsize=7)
    return fig


def _msd(track, classes):
    fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
    for key, style, lab in (("msd_true", "-", "truth"), ("msd_pred", "o--", "found")):
        m = track[key]
        for c, g in m.groupby("class"):
            ax.errorbar(g["t"], g["msd"], yerr=g["sem"], fmt=style, ms=3, color=f"C{int(c)}",
                        label=f"{classes[int(c)]} {lab}")
    ax.set_xlabel("lag [frames]")
    ax.set_ylabel("MSD [Å²]")
    ax.legend(fontsize=7)
    return fig


def _transitions(tm, classes):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
    for ax, key, title in ((axes[0], "true", "true per-frame chain"), (axes[1], "found", "from the found tracks")):
        a = np.asarray(tm[key], float)
        ax.imshow(np.where(a < 0, np.nan, a), cmap="magma", vmin=0, vmax=1)
        for i in range(len(a)):
            for j in range(len(a)):
                ax.text(j, i, "–" if a[i, j] < 0 else f"{a[i, j]:.3f}", ha="center", va="center", fontsize=8,
                        color="cyan")
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("to")
        ax.set_ylabel("from")
        ax.set_title(title, fontsize=8)
    return fig


def _fmt(v, spec=".3f"):
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def write_report(recipe, metrics: dict, evaluation: dict, ms, track, out) -> None:
    classes = metrics["classes"]
    rep = HtmlReport(f"Atom finding: {recipe.name}",
                     f"U-Net ensemble of {recipe.ensemble} trained on {metrics['training']['n_images']} synthetic "
                     f"incoherent HAADF images of {', '.join(recipe.images.structures)}; classes {', '.join(classes)}")
    first_name, first = next(iter(metrics["test_sets"].items()))
    s = rep.section("Headline")
    head = {}
    for r in first["per_dose"]:
        head[f"F1 @ {r['dose_e_per_a2']:g} e/Å²"] = (f"{_fmt(r['network']['f1'])} (baseline "
                                                     f"{_fmt(r['baseline']['f1'])})")
    hi = first["per_dose"][-1]
    head[f"RMS error @ {hi['dose_e_per_a2']:g}"] = f"{_fmt(hi['network']['rmse_pm'], '.1f')} pm"
    if metrics["tracking"].get("enabled"):
        head["MOTA (movie)"] = _fmt(metrics["tracking"]["mota"])
    head["inference"] = f"{metrics['timings_s']['inference_mpx_per_s']:.2f} Mpx/s (CPU, ensemble)"
    head["total"] = f"{metrics['timings_s']['total_s']:.0f} s"
    s.metrics(head)
    s.table(["target (issue 14)"] + list(metrics["targets"]),
            [[k] + [str(metrics["targets"][n][k]) for n in metrics["targets"]]
             for k in next(iter(metrics["targets"].values()))],
            "Measured against the issue's figures (true / false; None: dose not in the grid)")
    for name, m in metrics["test_sets"].items():
        sec = rep.section(f"Test set: {name}")
        if m["overrides"]:
            sec.text(f"Conditions changed from training: {m['overrides']}")
        rows = []
        for r in m["per_dose"]:
            for key, label in (("network", "U-Net ensemble"), ("baseline", "baseline, centroid"),
                               ("baseline_gaussian", "baseline, 2D Gaussian")):
                if key in r:
                    v = r[key]
                    rows.append([f"{r['dose_e_per_a2']:g}", label, v["f1"], v["precision"], v["recall"],
                                 v["median_error_pm"], v["p95_error_pm"], v["rmse_pm"], v.get("class_accuracy", "")])
        sec.table(["dose [e/Å²]", "finder", "F1", "precision", "recall", "median [pm]", "95th pct [pm]", "RMS [pm]",
                   "class accuracy"], rows,
                  f"{m['images_per_dose']} images of {m['image_shape'][0]} x {m['image_shape'][1]} px per dose; match "
                  f"within {recipe.evaluation.match_fraction:g} x the nearest-neighbour distance")
        sec.table(["dose [e/Å²]", "filter", "sigma / heat-map sigma", "threshold", "validation F1"],
                  [[f"{r['dose_e_per_a2']:g}", r["baseline_params"]["filter"], r["baseline_params"]["sigma_scale"],
                    r["baseline_params"]["threshold"], r["baseline_params"]["validation_f1"]] for r in m["per_dose"]],
                  "Baseline parameters tuned per dose on separate validation images")
        sec.figure(_gallery(evaluation["gallery"][name], classes),
                   "Found atoms coloured by class (yellow x: missed, magenta squares: false), and the ensemble spread")
    rep.section("F1 and position error vs dose").figure(_vs_dose(metrics["test_sets"]),
                                                        "U-Net ensemble beside the tuned classical baseline")
    conf = np.sum([np.asarray(r["network"]["confusion"]) for r in first["per_dose"] if r["dose_e_per_a2"] >= 1e3]
                  or [np.asarray(first["per_dose"][-1]["network"]["confusion"])], axis=0)
    rep.section("Class confusion").figure(_confusion(conf, classes, f"{first_name}, doses >= 1e3 e/Å² pooled"),
                                          "Matched atoms: true class (rows) vs predicted (columns), counts")
    sec = rep.section("Multislice test set (train on incoherent, test on multislice)")
    if ms:
        m = metrics["multislice"]
        sec.table(["finder", "F1", "precision", "recall", "median [pm]", "RMS [pm]"],
                  [[k, m[k]["f1"], m[k]["precision"], m[k]["recall"], m[k]["median_error_pm"], m[k]["rmse_pm"]]
                   for k in ("network", "baseline")],
                  f"{m['n_images']} {m['method']} HAADF images of {m['structure']}, {m['image_px']} px, "
                  f"{m['dose_e_per_a2']:g} e/Å²")
        sec.figure(_gallery(ms["gallery"], classes), "Multislice images with the atoms found")
    else:
        sec.text(metrics["multislice"].get("note", "not run"))
    if track:
        tm = metrics["tracking"]
        sec = rep.section("Movie: tracking, diffusion, class transitions")
        sec.metrics({"MOTA": _fmt(tm["mota"]), "MOTP": f"{_fmt(tm['motp_px'], '.2f')} px",
                     "id switches": tm["id_switches"], "per-frame F1": _fmt(tm["detection"]["f1"]),
                     "drift error (rms)": f"{_fmt(tm['drift_error_px']['rms'], '.2f')} px",
                     "transition error (max)": _fmt(tm["transition_matrix"]["max_abs_error"])})
        sec.table(["class", "D nominal [Å²/frame]", "D from true tracks", "D found", "± se"],
                  [[c, v["D_nominal"], v["D_truth_tracks"], v["D_found"], v["D_found_se"]]
                   for c, v in tm["diffusion_angstrom2_per_frame"].items()],
                  "D from MSD = 4 D t (+ offset for the found tracks: localisation error)")
        sec.figure(_tracks(track, classes), "Tracks and drift")
        sec.figure(_msd(track, classes), "Mean squared displacement per class")
        sec.figure(_transitions(tm["transition_matrix"], classes), "Per-frame class transition matrix")
    rep.section("Training").figure(_training(metrics["training"]["members"]), "Loss per member")
    t = metrics["timings_s"]
    rep.section("Timings").table(["stage", "value"], [[k, v] for k, v in t.items()])
    rep.section("Parameters").params(recipe.model_dump(mode="json"))
    rep.write(out / "report.html")
    plt.close("all")
