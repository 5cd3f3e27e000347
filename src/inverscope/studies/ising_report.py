"""Report of the Ising-model loop recognition study (matplotlib figures on an HtmlReport page)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from inverscope.physics.ising import PARAMETERS, simulate_loops  # noqa: E402
from inverscope.report.html import HtmlReport  # noqa: E402

LABELS = {"J0": "J₀", "dJ": "δJ", "dh": "δh"}


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
    s.metrics(cards)
    s.table(["model"] + [f"R² {LABELS[p]}" for p in PARAMETERS] + ["training"],
            [[k] + [f"{v['r2'][p]:.3f}" for p in PARAMETERS] + [f"{v['train_s']:.0f} s" if "train_s" in v else ""]
             for k, v in sr.items()])
    s.text(f"{m['loopset']['num_loops']} simulated loops ({m['loopset']['n_test']} held out), "
           f"lattice {'×'.join(map(str, recipe.loops.ising.lattice))}, {recipe.loops.ising.realizations} "
           f"realizations each, {recipe.loops.ising.field_steps} field steps per branch. Parameter ranges: "
           + ", ".join(f"{LABELS[p]} {lo:g}–{hi:g}" for p, (lo, hi) in m["loopset"]["ranges"].items()) + ".")
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
    e.figure(_maps(maps, grid), f"{grid[0]}×{grid[1]} maps from the PCA + MLP recognizer; fit RMSE compares each "
             "aligned loop with a fresh simulation of its predicted parameters")
    e.figure(_fits(fq, aligned, axis, pred), "Measured (black) and re-simulated (red) loops: up branch solid, down dashed")
    rep.section("Parameters").params(recipe.model_dump(mode="json"))
    rep.write(out / "report.html")
