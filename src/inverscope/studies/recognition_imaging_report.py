"""Report of the recognition imaging and unmixing study (matplotlib figures, one report.html)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from inverscope.report import plots  # noqa: E402
from inverscope.report.html import HtmlReport  # noqa: E402

_COLORS = plt.cm.tab10.colors


def _class_cmap(n: int) -> ListedColormap:
    return ListedColormap(_COLORS[:n], name="classes")


def _colorbar(fig, im, ax, class_names, **kw) -> None:
    cb = fig.colorbar(im, ax=ax, format="%.3g", **kw)   # no offset text to collide with a neighbour
    if class_names is not None and im.get_cmap().name == "classes":
        cb.set_ticks(range(len(class_names)), labels=class_names, fontsize=7)


def _strips(images: list[np.ndarray], titles: list[str], cmaps, vlims=None, xlabel: str = "position [pixels]",
            class_names=None):
    """Line-scan maps (rows x positions) stacked vertically, each with its colorbar (class maps: names)."""
    n = len(images)
    cmaps = cmaps if isinstance(cmaps, list) else [cmaps] * n
    vlims = vlims or [(None, None)] * n
    height = 0.6 + 0.95 * n   # fixed margins: constrained layout costs ~0.3 s per panel with colorbars
    fig, axes = plt.subplots(n, 1, figsize=(9, height), squeeze=False, sharex=True,
                             gridspec_kw={"hspace": 0.5, "left": 0.02, "right": 1.0, "top": 1 - 0.3 / height,
                                          "bottom": 0.45 / height})
    for ax, img, title, cmap, (lo, hi) in zip(axes[:, 0], images, titles, cmaps, vlims):
        im = ax.imshow(img, aspect="auto", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title, fontsize=8, loc="left")
        ax.set_yticks([])
        _colorbar(fig, im, ax, class_names, pad=0.01, fraction=0.03, aspect=6)
    axes[-1, 0].set_xlabel(xlabel)
    return fig


def _maps(images: list[np.ndarray], titles: list[str], cmaps, vlims=None, ncols: int = 4, class_names=None):
    """Square scan maps in a grid, each with its colorbar (class maps: names)."""
    n = len(images)
    cmaps = cmaps if isinstance(cmaps, list) else [cmaps] * n
    vlims = vlims or [(None, None)] * n
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.9 * ncols, 2.6 * nrows), squeeze=False,
                             gridspec_kw={"wspace": 0.35, "hspace": 0.25, "left": 0.01, "right": 0.99,
                                          "top": 1 - 0.3 / (2.6 * nrows), "bottom": 0.02})
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title, cmap, (lo, hi) in zip(axes.flat, images, titles, cmaps, vlims):
        im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        _colorbar(fig, im, ax, class_names, shrink=0.8, fraction=0.046, pad=0.03)
    return fig


def _score_limits(maps: np.ndarray) -> list[tuple[float, float]]:
    """Color limits symmetric about zero for each PCA score map (white = 0)."""
    return [(-a, a) for a in np.abs(maps).reshape(-1, maps.shape[-1]).max(axis=0)]


def _curves(ax, x, curves, labels, xlabel: str, ylabel: str, styles=None) -> None:
    for i, (c, lab) in enumerate(zip(curves, labels)):
        ax.plot(x, c, styles[i] if styles else "-", color=_COLORS[i % 10], lw=1.2, label=lab)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def _labeled_spans(mask: np.ndarray):
    cols = np.flatnonzero((mask >= 0).any(axis=0))
    if cols.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(cols) > 1)
    starts, ends = np.r_[cols[0], cols[breaks + 1]], np.r_[cols[breaks], cols[-1]]
    return [(s, e + 1, int(mask[:, s][mask[:, s] >= 0][0])) for s, e in zip(starts, ends)]


def _syn_data(ex: dict):
    scan, lab = ex["scan"], ex["lab"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    for i, name in enumerate(lab.names):
        a.plot(scan.energy_ev, scan.endmembers[i], color=_COLORS[i], lw=1.4, label=f"{name} (true)")
        a.plot(scan.energy_ev, ex["est_w"][i], "--", color=_COLORS[i], lw=0.9, label=f"{name} (labeled-box mean)")
    a.set_yscale("log")
    a.set_xlabel("energy loss [eV]")
    a.set_ylabel("counts per channel")
    a.legend(fontsize=7)
    x = np.arange(scan.cube.shape[1]) + 0.5
    for i, name in enumerate(lab.names):
        b.plot(x, scan.abundances[0, :, i], color=_COLORS[i], label=name)
    for s, e, c in _labeled_spans(lab.mask):
        b.axvspan(s, e, color=_COLORS[c], alpha=0.15)
    b.set_xlabel("position [pixels]")
    b.set_ylabel("true abundance (row 0)")
    b.legend(fontsize=7)
    return fig


def _profiles(x, panels: list[tuple[str, np.ndarray, str]], truth: np.ndarray, names, ylabel: str):
    """Row-mean profiles along the scan (solid/dotted) with the true abundances (dashed)."""
    fig, ax = plt.subplots(figsize=(9, 3.0), layout="constrained")
    for i, name in enumerate(names):
        ax.plot(x, truth[..., i].mean(0), "--", color=_COLORS[i], lw=2, alpha=0.5, label=f"{name} true")
        for label, values, style in panels:
            ax.plot(x, values[..., i].mean(0), style, color=_COLORS[i], lw=1, label=f"{name} {label}")
    ax.set_xlabel("position [pixels]")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=6, ncol=len(names), loc="center right")
    return fig


def _decomposition(axis, axis_label: str, pca, nmf):
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
    evr = pca.explained_variance_ratio
    _curves(a, axis, pca.loadings, [f"PCA {i} ({100 * v:.1f} %)" for i, v in enumerate(evr)], axis_label, "loading")
    a.set_title("PCA loadings (explained variance)", fontsize=9)
    _curves(b, axis, nmf.loadings, [f"NMF {i}" for i in range(len(nmf.loadings))], axis_label, "loading")
    b.set_title(f"NMF loadings (data shifted by {nmf.shift:.3g})", fontsize=9)
    return fig


def _synthetic_sections(rep: HtmlReport, m: dict, ex: dict) -> None:
    scan = ex["scan"]
    x = np.arange(scan.cube.shape[1]) + 0.5
    s = rep.section("Synthetic EELS line scan: data")
    s.text(f"{scan.cube.shape[0]} rows × {scan.cube.shape[1]} positions × {scan.cube.shape[2]} channels "
           f"({scan.energy_ev[0]:.0f}-{scan.energy_ev[-1]:.0f} eV) across {' | '.join(scan.layers)}; "
           f"{scan.dose_counts:.3g} counts per spectrum, Poisson noise and {scan.read_noise_counts:g} counts "
           "read noise. End-member shapes are illustrative (plasmon, power-law tail, delayed-maximum edges).")
    s.figure(_syn_data(ex), "Left: true end members and the mean spectra of the labeled boxes (log scale). "
             "Right: true abundances along row 0; shaded: the labeled boxes used for training.")
    _syn_recognition_section(rep, m, ex, x)
    _syn_unmixing_sections(rep, ex, x)


def _syn_recognition_section(rep: HtmlReport, m: dict, ex: dict, x: np.ndarray) -> None:
    scan, names, proba = ex["scan"], ex["lab"].names, ex["proba"]
    k = len(names)
    s = rep.section("Synthetic: recognition imaging")
    s.figure(_strips([proba[..., i] for i in range(k)] + [ex["pred"], scan.labels],
                     [f"P({n})" for n in names] + ["recognized class", "true class (argmax of abundances)"],
                     ["viridis"] * k + [_class_cmap(k)] * 2, [(0, 1)] * k + [(-0.5, k - 0.5)] * 2,
                     class_names=names),
             "Class probability maps of the shallow network, its class map and the ground truth")
    s.figure(_profiles(x, [("P", proba, "-")], scan.abundances, names, "probability / abundance"),
             "Row-mean class probability (solid) against the true abundance (dashed)")
    rec = m["recognition"]
    s.figure(plots.confusion_matrices({"all pixels": (np.array(rec["confusion"]), names)}),
             f"Confusion matrix; {m['n_labeled']} labeled pixels, training stopped after {rec['epochs']} epochs")


def _syn_unmixing_sections(rep: HtmlReport, ex: dict, x: np.ndarray) -> None:
    scan, names, known = ex["scan"], ex["lab"].names, ex["known"]
    k = len(names)
    s = rep.section("Synthetic: NNLS unmixing")
    s.figure(_profiles(x, [("NNLS, known end members", known.coefficients, "-"),
                           ("NNLS, labeled-box means", ex["est"].coefficients, ":")],
                       scan.abundances, names, "coefficient / abundance"),
             "Row-mean NNLS coefficients with the known end members (solid) and with the labeled-box mean "
             "spectra (dotted) against the true abundances (dashed)")
    s.figure(_strips([known.coefficients[..., i] for i in range(k)] + [known.residual, known.chi2],
                     [f"coefficient {n}" for n in names]
                     + ["RMS residual [counts]", "reduced χ² (Poisson + read noise)"],
                     ["viridis"] * k + ["magma", "magma"]),
             "Fit coefficient maps, residuals map and χ² map (known end members)")
    s = rep.section("Synthetic: PCA and NMF")
    s.figure(_decomposition(scan.energy_ev, "energy loss [eV]", ex["pca"], ex["nmf"]), "Loadings")
    pca, nmf = ex["pca"], ex["nmf"]
    s.figure(_strips([pca.maps[..., i] for i in range(pca.maps.shape[-1])] +
                     [nmf.maps[..., i] for i in range(nmf.maps.shape[-1])],
                     [f"PCA {i} score" for i in range(pca.maps.shape[-1])] +
                     [f"NMF {i} weight" for i in range(nmf.maps.shape[-1])],
                     ["RdBu_r"] * pca.maps.shape[-1] + ["viridis"] * nmf.maps.shape[-1],
                     _score_limits(pca.maps) + [(0, None)] * nmf.maps.shape[-1]), "Maps")


def _pzt_data(ex: dict):
    lab, v = ex["lab"], ex["data"].voltage
    k = len(lab.names)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.5, 3.6), layout="constrained")
    im = a.imshow(ex["pca"].maps[..., 0], cmap="gray")
    fig.colorbar(im, ax=a, shrink=0.8)
    a.imshow(np.ma.masked_less(lab.mask, 0), cmap=_class_cmap(k), vmin=-0.5, vmax=k - 0.5, alpha=0.75,
             interpolation="nearest")
    a.set_title("labeled pixels over the PCA 0 score map", fontsize=9)
    _curves(b, v, ex["w"], ex["w_names"], "DC voltage [V]", "response (data units)")
    b.set_title("end members" + (" (mean loops of the labeled classes)" if ex["w_names"] == lab.names else ""),
                fontsize=9)
    return fig


def _pzt_sections(rep: HtmlReport, m: dict, ex: dict) -> None:
    lab, names, unmix = ex["lab"], ex["lab"].names, ex["unmix"]
    k = len(names)
    s = rep.section("BE-PFM loops: labels and end members")
    s.text(f"{m['source']}: {lab.cube.shape[0]}×{lab.cube.shape[1]} loops of {lab.cube.shape[2]} steps "
           "(NaNs interpolated along the voltage axis). Labeled pixels per class: "
           + ", ".join(f"{n} {c}" for n, c in m["n_labeled"].items()) + ".")
    s.figure(_pzt_data(ex), "Left: the user's labeled regions. Right: the end members used for NNLS; the loops are "
             "signed, so NNLS constrains only the coefficients to be non-negative.")
    s = rep.section("BE-PFM: recognition imaging")
    proba = ex["proba"]
    s.figure(_maps([proba[..., i] for i in range(k)] + [ex["pred"]], [f"P({n})" for n in names] + ["class map"],
                   ["viridis"] * k + [_class_cmap(k)], [(0, 1)] * k + [(-0.5, k - 0.5)], class_names=names),
             "Class probability maps and the most probable class; class fractions "
             + ", ".join(f"{n} {100 * f:.1f} %" for n, f in m["class_fractions"].items()))
    s = rep.section("BE-PFM: NNLS unmixing")
    kk = unmix.coefficients.shape[-1]
    s.figure(_maps([unmix.coefficients[..., i] for i in range(kk)] + [unmix.residual, unmix.chi2],
                   [f"coefficient {n}" for n in ex["w_names"]]
                   + ["RMS residual [data units]", "reduced χ² (σ from 2nd difference)"],
                   ["viridis"] * kk + ["magma", "magma"],
                   [(None, None)] * kk + [(None, None), (0, float(np.percentile(unmix.chi2, 99)))]),
             f"Fit coefficient maps, residuals map and χ² map (median χ² {m['chi2_median']:.2f})")
    s = rep.section("BE-PFM: PCA and NMF")
    pca, nmf = ex["pca"], ex["nmf"]
    s.figure(_decomposition(ex["data"].voltage, "DC voltage [V]", pca, nmf), "Loadings against the voltage axis")
    npc, nnm = pca.maps.shape[-1], nmf.maps.shape[-1]
    s.figure(_maps([pca.maps[..., i] for i in range(npc)] + [nmf.maps[..., i] for i in range(nnm)],
                   [f"PCA {i} score" for i in range(npc)] + [f"NMF {i} weight" for i in range(nnm)],
                   ["RdBu_r"] * npc + ["viridis"] * nnm, _score_limits(pca.maps) + [(0, None)] * nnm),
             "Score and weight maps")


def _headline(rep: HtmlReport, m: dict) -> None:
    s = rep.section("Headline")
    cards = {}
    if "synthetic" in m:
        y = m["synthetic"]
        cards.update({"recognition (all pixels)": f"{100 * y['recognition_accuracy']:.1f} %",
                      "recognition (unlabeled)": f"{100 * y['recognition_accuracy_unlabeled']:.1f} %",
                      "NNLS coefficient RMSE": f"{y['unmixing_coefficient_rmse']:.4f}",
                      "RMSE, box-mean end members": f"{y['unmixing_rmse_estimated_endmembers']:.4f}",
                      "median χ² (synthetic)": f"{y['chi2_median']:.2f}"})
    if "pzt" in m:
        cards["median χ² (BE-PFM)"] = f"{m['pzt']['chi2_median']:.2f}"
    cards["analysis time"] = f"{m['timings_s']['total_s']:.0f} s"
    s.metrics(cards)
    if "synthetic" in m:
        y = m["synthetic"]
        s.table(["synthetic EELS", "value"],
                [["recognition accuracy, all / unlabeled pixels",
                  f"{y['recognition_accuracy']:.4f} / {y['recognition_accuracy_unlabeled']:.4f}"],
                 ["NNLS coefficient RMSE / MAE, known end members",
                  f"{y['unmixing_coefficient_rmse']:.4f} / {y['unmixing_coefficient_mae']:.4f}"],
                 ["NNLS coefficient RMSE / MAE, labeled-box mean end members",
                  f"{y['unmixing_rmse_estimated_endmembers']:.4f} / {y['unmixing_mae_estimated_endmembers']:.4f}"],
                 ["median reduced χ²: Poisson σ, known / box-mean end members",
                  f"{y['chi2_median']:.3f} / {y['chi2_median_estimated_endmembers']:.3f}"],
                 ["median reduced χ², σ from the second-difference rule",
                  f"{y['chi2_median_second_difference_sigma']:.3f}"]])


def write_report(recipe, m: dict, extra: dict, out: Path) -> None:
    """Write OUT/report.html: headline, synthetic EELS and BE-PFM sections, parameters."""
    rep = HtmlReport(f"Recognition imaging and unmixing: {recipe.name}",
                     "A shallow network trained on labeled regions; NNLS unmixing with known end members "
                     "(coefficient, residual and χ² maps); PCA and NMF")
    _headline(rep, m)
    if "synthetic" in extra:
        _synthetic_sections(rep, m["synthetic"], extra["synthetic"])
    if "pzt" in extra:
        _pzt_sections(rep, m["pzt"], extra["pzt"])
    rep.section("Parameters").params(recipe.model_dump(mode="json"))
    rep.write(Path(out) / "report.html")
