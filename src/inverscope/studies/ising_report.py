"""Report of the Ising-model loop recognition study (matplotlib figures on an HtmlReport page)."""

from __future__ import annotations

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from inverscope.physics.ising import PARAMETERS, simulate_loops  # noqa: E402
from inverscope.report.html import HtmlReport  # noqa: E402

LABELS = {"J0": "J₀", "dJ": "δJ", "dh": "δh", "slope": "slope b", "imprint": "imprint h₀", "field_scale": "field scale f",
          "asymmetry": "asymmetry a", "split_weight": "split weight w", "split_shift": "split shift d",
          "noise": "noise σ"}


def _family(recipe):
    """Model loops as each parameter sweeps its range with the other two at mid-range."""
    r = recipe.loops.ranges()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), layout="constrained")
    for k, ax in enumerate(axes):
        values = np.linspace(r[k, 0], r[k, 1], 5)
        p = np.tile(r.mean(axis=1), (5, 1))
        p[:, k] = values
        sim = simulate_loops(p, recipe.loops.ising, seed=recipe.seed + 3)
        for v, up, down in zip(values, sim.m_up, sim.m_down):
            c = plt.cm.viridis((v - values[0]) / max(values[-1] - values[0], 1e-12))
            ax.plot(sim.field, up, color=c, lw=1.2)
            ax.plot(sim.field, down, color=c, lw=1.2, label=f"{v:.2f}")
        ax.set_title(f"{LABELS[PARAMETERS[k]]} swept (others mid-range)", fontsize=9)
        ax.set_xlabel("field H [J]")
        ax.legend(fontsize=7, title=LABELS[PARAMETERS[k]], title_fontsize=7)
    axes[0].set_ylabel("mean spin")
    return fig


def _scatter(models, x_te, y_te, scores):
    fig, axes = plt.subplots(len(models), 3, figsize=(10, 3.1 * len(models)), squeeze=False, layout="constrained")
    for row, (key, model) in enumerate(models.items()):
        p = model.predict(x_te) if hasattr(model, "net_") else model.predict(x_te.reshape(len(x_te), -1))
        for k, ax in enumerate(axes[row]):
            ax.scatter(y_te[:, k], p[:, k], s=3, alpha=0.4)
            lo, hi = y_te[:, k].min(), y_te[:, k].max()
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_title(f"{key}: {LABELS[PARAMETERS[k]]}  R² = {scores[key]['r2'][PARAMETERS[k]]:.3f}", fontsize=9)
            ax.set_xlabel("true")
            ax.set_ylabel("predicted")
    return fig


def _alignment(raw, aligned, axis, grid):
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.3), layout="constrained")
    rng = np.random.default_rng(0)
    idx = rng.choice(len(raw), 6, replace=False)
    for i in idx:
        a.plot(axis.voltage, aligned.sign * raw[i], lw=0.8)
        b.plot(axis.field, aligned.loops[i], lw=0.8)
    a.plot(axis.voltage, aligned.sign * raw.mean(0), "k", lw=2, label="mean")
    b.plot(axis.field, aligned.loops.mean(0), "k", lw=2, label="mean")
    a.set_xlabel("DC voltage [V]")
    a.set_ylabel("response (sign applied)")
    b.set_xlabel("model field H [J] (imprint removed)")
    b.set_ylabel("aligned response")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    return fig


def _maps(images: dict, grid, ncols=4):
    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 2.8 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, (img, cmap)) in zip(axes.flat, images.items()):
        im = ax.imshow(np.asarray(img).reshape(grid), cmap=cmap)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.75)
    return fig


def _fits(fq, aligned, axis, pred):
    order = np.argsort(fq["rmse"])
    picks = {"best": order[:2], "median": order[len(order) // 2:len(order) // 2 + 2], "worst": order[-2:]}
    fig, axes = plt.subplots(1, 6, figsize=(15, 2.8), layout="constrained")
    for ax, (label, i) in zip(axes, [(k, i) for k, v in picks.items() for i in v]):
        for branch, style in ((axis.up, "-"), (~axis.up, "--")):
            idx = np.flatnonzero(branch)
            idx = idx[np.argsort(axis.field[idx])]
            ax.plot(axis.field[idx], aligned.loops[i, idx], "k" + style, lw=1)
            ax.plot(axis.field[idx], fq["model_loops"][i, idx], "C3" + style, lw=1)
        p = ", ".join(f"{LABELS[n]} {v:.2f}" for n, v in zip(PARAMETERS, pred[i]))
        ax.set_title(f"{label} (pixel {i}), RMSE {fq['rmse'][i]:.3f}\n{p}", fontsize=7)
        ax.set_xlabel("H [J]", fontsize=8)
    return fig


def _posterior_fits(pe, axis):
    """Measured loops (black) with the re-simulated posterior-median loop (red) and 20 posterior-predictive loops."""
    ppc, rm = pe["ppc"], pe["resim_rmse"]
    order = np.argsort(rm)
    flagged = np.flatnonzero(ppc.flagged)
    picks = [("best", order[0]), ("median", order[len(order) // 2]), ("90th pct", order[int(0.9 * (len(order) - 1))]),
             ("worst", order[-1])]
    picks += [("flagged", i) for i in flagged[np.argsort(ppc.discrepancy[flagged])[::-1]][:2]]
    fam = pe["family"]
    fig, axes = plt.subplots(1, len(picks), figsize=(2.6 * len(picks), 2.8), layout="constrained", squeeze=False)
    for ax, (label, i) in zip(axes[0], picks):
        pp = fam.predict(pe["samples"][i, :20])
        for branch, style in ((axis.up, "-"), (~axis.up, "--")):
            idx = np.flatnonzero(branch)
            idx = idx[np.argsort(axis.field[idx])]
            for c in pp:
                ax.plot(axis.field[idx], c[idx], color="C0", alpha=0.12, lw=0.8)
            ax.plot(axis.field[idx], pe["measured"][i, idx], "k" + style, lw=1)
            ax.plot(axis.field[idx], pe["resim"][i, idx], "C3" + style, lw=1)
        ax.set_title(f"{label} (pixel {i})\nRMSE {rm[i]:.3f}, PPC {'flagged' if ppc.flagged[i] else 'ok'}", fontsize=7)
        ax.set_xlabel("H [J]", fontsize=8)
    return fig


def _sbc(pe):
    """Rank histograms of the true parameters among posterior samples (flat if calibrated)."""
    names, ranks, s = pe["names"], pe["ranks"], pe["n_samples"]
    fig, axes = plt.subplots(1, len(names), figsize=(1.9 * len(names), 2.2), layout="constrained", squeeze=False)
    bins = 10
    for ax, k in zip(axes[0], range(len(names))):
        ax.hist(ranks[:, k], bins=np.linspace(0, s + 1, bins + 1), color="C0")
        ax.axhline(len(ranks) / bins, color="k", lw=0.8, ls="--")
        ax.set_title(LABELS.get(names[k], names[k]), fontsize=8)
        ax.set_yticks([])
        ax.set_xticks([])
    return fig


def _posterior_sections(rep, recipe, m, pe, axis, grid):
    pm = m["posterior"]
    names, summ, ppc = pe["names"], pe["summary"], pe["ppc"]
    e = pm["experiment"]
    s = rep.section("Posterior: parameters with credible intervals")
    s.text("Primary answer. An amortized neural posterior (sbi NPE, normalizing flow) over the Ising parameters and "
           "the measurement nuisances, trained on simulated loops rendered with nuisances drawn from their uniform "
           "prior: y(H) = (1 − w) m(f(1±a)(H − h₀)) + w m(f(1±a)(H − h₀ − d)) + bH on the up/down branch (a second "
           "switching population of weight w shifted by d gives two-step loops), normalized by the alignment rule, "
           "plus white noise σ (analysis.loop_family). The amplitude and offset are removed exactly by the normalization and "
           "are reported by the alignment. Samples are drawn in the logit of each parameter's prior box, so every "
           f"estimate lies inside the prior ({100 * e['outside_prior_fraction']:.0f} % outside). "
           "A pixel is flagged by a posterior-predictive check: its RMS misfit to loops predicted from its own "
           "posterior samples, divided by the misfit expected of the family's own loops at those samples (replicated "
           "loops: another disorder realization plus the sample's noise; and the posterior's spread), exceeds the "
           f"{100 * recipe.posterior.ppc_quantile:g}th percentile of that ratio over held-out simulations "
           f"({pm['ppc']['threshold']:.2f}).")
    s.metrics({"coverage 50 % (target 0.50)": f"{pm['coverage']['mean']['0.5']:.3f}",
               "coverage 90 % (target 0.90)": f"{pm['coverage']['mean']['0.9']:.3f}",
               "pixels flagged": f"{100 * e['flagged_fraction']:.1f} %",
               "re-simulated posterior median / best sample, RMSE":
                   f"{e['resim_median_rmse_median']:.3f} / {e['resim_best_sample_rmse_median']:.3f}",
               "nearest library loop, RMSE": f"{e['nearest_library_loop_rmse_median']:.3f}"})
    cov = pm["coverage"]["by_parameter"]
    lo90, hi90 = summ["interval"][0.9]
    s.table(["parameter", "prior", "coverage 50 %", "coverage 90 %", "median (map)", "90 % width (map median)"],
            [[LABELS.get(n, n), f"{pm['prior'][n][0]:g} – {pm['prior'][n][1]:g}", cov[n]["0.5"], cov[n]["0.9"],
              e["parameter_median"][n], e["interval90_width_median"][n]] for n in names],
            f"Coverage of the central credible intervals on {pm['coverage']['n_heldout']} held-out simulations "
            "(loops not used in training, fresh nuisances); map columns: medians over the measured pixels")
    s.table(["quantity", "value"], [
        ["pixels flagged (all)", f"{100 * e['flagged_fraction']:.1f} %"],
        ["pixels flagged (outlier pixels excluded)", "n/a" if e["flagged_fraction_inliers"] is None
         else f"{100 * e['flagged_fraction_inliers']:.1f} %"],
        ["outlier pixels (datasets.loop_preprocess)", "not available" if not e["outliers"].get("available")
         else f"{e['outlier_pixels']} (flagged among them: "
              + ("n/a" if e["flagged_fraction_outliers"] is None else f"{100 * e['flagged_fraction_outliers']:.0f} %") + ")"],
        ["held-out simulations flagged (false-flag rate, other half)",
         f"{100 * pm['ppc']['heldout_flagged_fraction']:.1f} % of {pm['ppc']['heldout_checked']}"],
        ["median misfit ratio of the measured pixels (PPC flag level)",
         f"{e['ppc_ratio_median']:.2f} ({pm['ppc']['threshold']:.2f})"],
        ["median RMSE, re-simulated posterior median", e["resim_median_rmse_median"]],
        ["median RMSE, re-simulated best posterior sample (of the PPC draws)", e["resim_best_sample_rmse_median"]],
        ["median RMSE, best posterior-predictive loop (library lookup)", e["best_sample_lookup_rmse_median"]],
        ["median RMSE, nearest library loop (no nuisances, imprint removed)", e["nearest_library_loop_rmse_median"]],
        ["median RMSE, nearest training loop (with nuisances)", e["nearest_training_loop_rmse_median"]],
        ["posterior training", f"{pm['n_train_pairs']} pairs, {pm['epochs']} epochs, {pm['timings_s']['train']:.0f} s"],
    ])
    s.figure(_sbc(pe), "Simulation-based calibration: rank of each true parameter among its posterior samples on "
             "the held-out simulations (dashed: the flat histogram of a calibrated posterior)")
    maps = {}
    for i, n in enumerate(names):
        maps[f"{LABELS.get(n, n)} median"] = (summ["median"][:, i], "viridis")
        maps[f"{LABELS.get(n, n)} 90 % width"] = (hi90[:, i] - lo90[:, i], "cividis")
    maps.update({"PPC flagged": (ppc.flagged.astype(float), "gray"),
                 "PPC misfit ratio": (ppc.ratio, "inferno"),
                 "RMSE, re-simulated median": (pe["resim_rmse"], "inferno"),
                 "RMSE, re-simulated best sample": (pe["resim_best_rmse"], "inferno"),
                 "outlier pixel": (pe["outlier"].astype(float), "gray")})
    s.figure(_maps(maps, grid), f"{grid[0]}×{grid[1]} maps of the posterior median and the width of the central 90 % "
             "credible interval per parameter; the pixels the family cannot produce; the re-simulation misfit")
    s.figure(_posterior_fits(pe, axis), "Measured loops (black; up branch solid, down dashed), the loop re-simulated "
             "(Ising model run again) at the posterior median (red) and 20 posterior-predictive loops (blue)")


def write_report(recipe, m: dict, extra: dict, out) -> None:
    ls, x, te, models, grid = extra["ls"], extra["x"], extra["te"], extra["models"], extra["grid"]
    aligned, axis, pred, fq = extra["aligned"], extra["axis"], extra["pred"], extra["fq"]
    rep = HtmlReport(f"Ising-model loop recognition: {recipe.name}",
                     "A network trained on random-bond random-field Ising loops reads disorder parameters "
                     "from measured hysteresis loops (Ovchinnikov et al. PRL 2009; Kumar et al. PRB 2011)")
    s = rep.section("Headline")
    sr = m["self_recognition"]
    key = "pca_mlp" if "pca_mlp" in sr else next(iter(sr))
    cards = {f"held-out R² {LABELS[p]} ({key})": f"{v:.3f}" for p, v in sr[key]["r2"].items()}
    if m["simulator"]["loops_per_s"]:
        cards["simulator"] = f"{m['simulator']['loops_per_s']:.0f} loops/s"
    cards["median fit RMSE (measured)"] = f"{m['experiment']['fit_rmse_median']:.3f}"
    pe = extra.get("posterior")
    if pe is not None:
        pm = m["posterior"]
        cards = {"posterior coverage 50 % / 90 %": f"{pm['coverage']['mean']['0.5']:.2f} / {pm['coverage']['mean']['0.9']:.2f}",
                 "pixels flagged (PPC)": f"{100 * pm['experiment']['flagged_fraction']:.1f} %",
                 "posterior re-simulation RMSE": f"{pm['experiment']['resim_median_rmse_median']:.3f}",
                 **cards}
    s.metrics(cards)
    s.table(["model"] + [f"R² {LABELS[p]}" for p in PARAMETERS] + ["training"],
            [[k] + [f"{v['r2'][p]:.3f}" for p in PARAMETERS] + [f"{v['train_s']:.0f} s" if "train_s" in v else ""]
             for k, v in sr.items()])
    s.text(f"{m['loopset']['num_loops']} simulated loops ({m['loopset']['n_test']} held out), "
           f"lattice {'×'.join(map(str, recipe.loops.ising.lattice))}, {recipe.loops.ising.realizations} "
           f"realizations each, {recipe.loops.ising.field_steps} field steps per branch. Parameter ranges: "
           + ", ".join(f"{LABELS[p]} {lo:g}–{hi:g}" for p, (lo, hi) in m["loopset"]["ranges"].items()) + ".")
    if pe is not None:
        _posterior_sections(rep, recipe, m, pe, axis, grid)
    rep.section("The model family").figure(_family(recipe), "Simulated loops (up and down sweeps) as one parameter varies")
    rep.section("Self-recognition on held-out simulated loops").figure(
        _scatter({k: v for k, v in models.items()}, x[te], ls.params[te], sr), "Predicted vs true parameters")
    a = rep.section("Measured loops on the model's axis")
    a.text("Rule (analysis.hysteresis): field H = s (V − V_mid) with s mapping the largest |V − V_mid| to "
           f"{recipe.alignment.field_at_vmax:g}; per-loop offset and scale from the mean response in the outer "
           f"{100 * recipe.alignment.saturation_fraction:.0f} % of the voltage range on each side; "
           + ("imprint (mean coercive voltage) removed per loop; " if recipe.alignment.remove_imprint else "")
           + f"data-set sign {aligned.sign:+.0f} from the loop's orientation. The simulated loops go through the same rule.")
    a.figure(_alignment(extra["raw"], aligned, axis, grid), f"{m['data']['source']}")
    r = recipe.loops.ranges()
    outside = np.any((pred < r[:, 0]) | (pred > r[:, 1]), axis=1)
    maps = {f"{LABELS[p]}": (pred[:, i], "viridis") for i, p in enumerate(PARAMETERS)}
    maps.update({"imprint [V]": (aligned.imprint_v, "RdBu_r"), "amplitude": (aligned.amplitude, "magma"),
                 "fit RMSE (re-simulated)": (fq["rmse"], "inferno"),
                 "nearest library loop RMSE": (fq["library_rmse"], "inferno"),
                 "outside training range": (outside.astype(float), "gray")})
    e = rep.section("Parameter and fit-quality maps")
    if pe is not None:
        e.text("Comparison: point estimates of the PCA + MLP recognizer (no nuisances, no uncertainty); they can "
               "fall outside the training ranges.")
    e.figure(_maps(maps, grid), f"{grid[0]}×{grid[1]} maps from the PCA + MLP recognizer; fit RMSE compares each "
             "aligned loop with a fresh simulation of its predicted parameters")
    e.figure(_fits(fq, aligned, axis, pred), "Measured (black) and re-simulated (red) loops: up branch solid, down dashed")
    rep.section("Parameters").params(recipe.model_dump(mode="json"))
    rep.write(out / "report.html")
