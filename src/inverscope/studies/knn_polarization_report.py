"""Report of the KNN polarization study (matplotlib figures, one report.html).

Sections: headline, accuracy per model and test condition (table and heat map), in-domain
confusion matrices, class maps of the in-domain scans, periodic (unit-cell) errors, defect
detection (ROC, AUROC, wall position, scene maps), example patterns with their CoM, domain gap
against the measured drop, training curves and timings, parameters.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from inverscope.report.html import HtmlReport  # noqa: E402

N_CLASSES = 8
_BASELINE_NAMES = {"pca_knn": "PCA + kNN", "linear": "linear (logistic, pixels)", "com": "CoM sectors",
                   "com_threshold": "CoM sectors (thresholded)", "friedel": "Friedel moments + logistic"}
_COLORS = plt.cm.tab10.colors


# --------------------------------------------------------------------------- small helpers

def _label(key: str) -> str:
    """Display name of a run key ("model/regime/all|filtered") or a baseline."""
    return _BASELINE_NAMES.get(key, key)


def _is_net(key: str) -> bool:
    return "/" in key


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _pct(v, digits: int = 1) -> str:
    return f"{100 * v:.{digits}f}%" if _finite(v) else "—"


def _num(v, fmt: str = ".3f") -> str:
    return format(v, fmt) if _finite(v) else "—"


def _mean_std(s: dict | None, unit: str = "%") -> str:
    if not s or not _finite(s.get("mean")):
        return "—"
    if s.get("n_seeds", 1) > 1:
        return f"{100 * s['mean']:.1f} ± {100 * s.get('std', 0.0):.1f}{unit}"
    return f"{100 * s['mean']:.1f}{unit}"


def _class_cmap() -> ListedColormap:
    """One colour per class from a cyclic colormap (class c at angle c * 45 degrees); grey = no class."""
    return ListedColormap(plt.cm.hsv(np.arange(N_CLASSES) / N_CLASSES), name="polar_classes").with_extremes(bad="0.75")


def _class_image(classes) -> np.ma.MaskedArray:
    a = np.asarray(classes, float)
    return np.ma.masked_invalid(np.where(a < 0, np.nan, a))


def _class_colorbar(fig, im, ax, labels, **kw) -> None:
    kw = {"fraction": 0.04, "pad": 0.02, **kw}
    cb = fig.colorbar(im, ax=ax, **kw)
    cb.set_ticks(range(N_CLASSES), labels=[f"{lab} {45 * c}°" for c, lab in enumerate(labels)], fontsize=7)


def _class_labels(metrics: dict, evaluation: dict) -> list[str]:
    c = evaluation.get("conditions", {}).get("in_domain", {})
    labels = c.get("class_labels") or metrics.get("data", {}).get("class_labels")
    labels = list(labels or [])
    return labels + [f"class {i}" for i in range(len(labels), N_CLASSES)]


def _grid(n: int, ncols: int, w: float, h: float, **kw):
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False, **kw)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat[:n]


def _scan_images(values, d: dict) -> np.ndarray:
    """Per-pattern values -> (n_scans, k, k) maps (the study's convention)."""
    from inverscope.studies.knn_polarization import _scan_images as scan_images

    return scan_images(values, d)


def _best_network(metrics: dict, evaluation: dict) -> str | None:
    nets = metrics.get("headline", {}).get("networks") or {}
    first = evaluation.get("nets", {}).get("first", {})
    ranked = sorted(nets, key=lambda k: -nets[k]["mean"] if _finite(nets[k].get("mean")) else np.inf)
    for key in ranked:
        if key in first:
            return key
    return next(iter(first), None)


def _predictions(evaluation: dict) -> dict[str, np.ndarray]:
    """In-domain predictions: every network's first seed, then the baselines."""
    first = evaluation.get("nets", {}).get("first", {})
    preds = {k: np.asarray(v["pred_in_domain"]) for k, v in first.items()}
    preds.update({k: np.asarray(v) for k, v in (evaluation.get("base_pred") or {}).items()})
    return preds


# --------------------------------------------------------------------------- figures

def _heatmap(acc: dict, models: list[str], conds: list[str]):
    """Accuracy per model (rows) and condition (columns), numbers in the cells."""
    a = np.array([[acc[m].get(c, {}).get("mean", np.nan) for c in conds] for m in models], float)
    s = np.array([[acc[m].get(c, {}).get("std", 0.0) for c in conds] for m in models], float)
    multi = np.array([[acc[m].get(c, {}).get("n_seeds", 1) > 1 for c in conds] for m in models])
    fig, ax = plt.subplots(figsize=(2.2 + 0.95 * len(conds), 1.0 + 0.42 * len(models)), layout="constrained")
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(a), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i in range(len(models)):
        for j in range(len(conds)):
            if not np.isfinite(a[i, j]):
                continue
            txt = f"{100 * a[i, j]:.0f}" + (f"\n±{100 * s[i, j]:.0f}" if multi[i, j] else "")
            ax.text(j, i, txt, ha="center", va="center", fontsize=7, color="k" if 0.2 < a[i, j] < 0.85 else "w")
    ax.set_xticks(range(len(conds)), conds, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(models)), [_label(m) for m in models], fontsize=8)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("accuracy")
    return fig


def _confusions(y: np.ndarray, preds: dict[str, np.ndarray], labels: list[str]):
    """Row-normalized confusion matrices (counts printed) of each model on the in-domain test."""
    fig, axes = _grid(len(preds), 4, 3.3, 3.3, gridspec_kw={"wspace": 0.45, "hspace": 0.55})
    for ax, (key, p) in zip(axes, preds.items()):
        cm = np.zeros((N_CLASSES, N_CLASSES), int)
        ok = (y >= 0) & (y < N_CLASSES) & (p >= 0) & (p < N_CLASSES)
        np.add.at(cm, (y[ok], p[ok]), 1)
        rows = cm.sum(axis=1, keepdims=True)
        frac = cm / np.maximum(rows, 1)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(N_CLASSES):
            for j in range(N_CLASSES):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=5.5,
                            color="w" if frac[i, j] > 0.55 else "k")
        acc = np.trace(cm) / max(cm.sum(), 1)
        ax.set_title(f"{_label(key)}\naccuracy {100 * acc:.1f}%", fontsize=8)
        ax.set_xticks(range(N_CLASSES), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(N_CLASSES), labels, fontsize=6)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    return fig


def _class_maps(base: dict, rows: list[tuple[str, np.ndarray]], labels: list[str]):
    """Predicted class per probe position, one column per variant scan, one row per model (truth first)."""
    imgs = [(name, _scan_images(v, base)) for name, v in rows]
    n_scans = imgs[0][1].shape[0]
    cmap = _class_cmap()
    fig, axes = plt.subplots(len(imgs), n_scans, figsize=(1.55 * n_scans + 1.6, 1.6 * len(imgs) + 0.3),
                             squeeze=False, gridspec_kw={"wspace": 0.08, "hspace": 0.3})
    truth = imgs[0][1]
    im = None
    for r, (name, maps) in enumerate(imgs):
        for s in range(n_scans):
            ax = axes[r, s]
            im = ax.imshow(_class_image(maps[s]), cmap=cmap, vmin=-0.5, vmax=N_CLASSES - 0.5, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                t = truth[s].ravel()
                t = t[t >= 0]
                c = int(np.bincount(t.astype(int)).argmax()) if t.size else -1
                ax.set_title(f"scan {s}\n{labels[c] if c >= 0 else ''}", fontsize=7)
            else:
                ax.set_title(f"{100 * np.mean(maps[s] == truth[s]):.0f}% right", fontsize=7)
            if s == 0:
                ax.set_ylabel(_label(name), fontsize=7)
    _class_colorbar(fig, im, axes.ravel().tolist(), labels)
    return fig


def _folded(periodic: dict, models: list[str]):
    """Error rate folded into the pseudo-cubic cell, one panel per model."""
    fig, axes = _grid(len(models), 5, 2.5, 2.3, gridspec_kw={"wspace": 0.5, "hspace": 0.55})
    for ax, key in zip(axes, models):
        f = np.asarray(periodic[key]["folded_error"], float)
        im = ax.imshow(f, cmap="magma", vmin=0, vmax=max(float(np.nanmax(f)), 1e-6) if f.size else 1,
                       extent=(0, 1, 1, 0), interpolation="nearest")
        ax.set_title(f"{_label(key)}\nerror {_pct(periodic[key].get('error_rate'))}", fontsize=7)
        ax.set_xlabel("x / a", fontsize=7)
        ax.set_ylabel("y / a", fontsize=7)
        ax.tick_params(labelsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
    return fig


def _roc_figure(scene: dict, best_model: str | None):
    """ROC per defect type: every model's best score (top row) and every score of the best model (bottom)."""
    models = scene.get("models") or {}
    defects = sorted({d for m in models.values() for per in (m.get("roc") or {}).values() for d in per},
                     key=lambda d: (d == "all", d))
    if not defects:
        return None
    fig, axes = plt.subplots(2, len(defects), figsize=(3.0 * len(defects), 6.0), squeeze=False,
                             gridspec_kw={"wspace": 0.3, "hspace": 0.45})
    for j, d in enumerate(defects):
        top, bottom = axes[0, j], axes[1, j]
        for i, (key, m) in enumerate(models.items()):
            curves = {s: per[d] for s, per in (m.get("roc") or {}).items() if d in per}
            if not curves:
                continue
            s, r = max(curves.items(), key=lambda kv: kv[1]["auroc"] if _finite(kv[1].get("auroc")) else -1)
            top.plot(r["fpr"], r["tpr"], color=_COLORS[i % 10], lw=1.2,
                     label=f"{_label(key)}: {s} ({_num(r.get('auroc'), '.2f')})")
        bm = models.get(best_model) or {}
        for i, (s, per) in enumerate((bm.get("roc") or {}).items()):
            if d in per:
                bottom.plot(per[d]["fpr"], per[d]["tpr"], color=_COLORS[i % 10], lw=1.2,
                            label=f"{s} ({_num(per[d].get('auroc'), '.2f')})")
        n = next((per[d] for m in models.values() for per in (m.get("roc") or {}).values() if d in per), {})
        top.set_title(f"{d}: best score per model\n({n.get('n_positive', '?')} defect / "
                      f"{n.get('n_negative', '?')} clean positions)", fontsize=8)
        bottom.set_title(f"{d}: every score of\n{_label(best_model) if best_model else '—'}", fontsize=8)
        for ax in (top, bottom):
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("false positive rate", fontsize=7)
            ax.set_ylabel("true positive rate", fontsize=7)
            ax.tick_params(labelsize=6)
            if ax.lines[1:]:
                ax.legend(fontsize=5.5, loc="lower right")
    return fig


def _best_score(scene: dict) -> tuple[str, str, float] | None:
    """(model, score, AUROC over all defects) of the best anomaly score of a scene."""
    best = None
    for key, m in (scene.get("models") or {}).items():
        if key not in (scene.get("maps") or {}):
            continue
        for s, per in (m.get("auroc") or {}).items():
            vals = [v for v in per.values() if _finite(v)]
            v = per.get("all") if _finite(per.get("all")) else (float(np.mean(vals)) if vals else None)
            if v is not None and s in scene["maps"][key].get("scores", {}) and (best is None or v > best[2]):
                best = (key, s, float(v))
    return best


def _scenes(defects: dict, best_net: str | None, labels: list[str]):
    """Per scene: truth classes, the best network's classes, the best anomaly score map."""
    cmap = _class_cmap()
    names = list(defects)
    fig, axes = plt.subplots(len(names), 3, figsize=(12, 2.6 * len(names) + 1.0), squeeze=False,
                             gridspec_kw={"wspace": 0.25, "hspace": 0.6})
    im = None
    for r, name in enumerate(names):
        sc = defects[name]
        truth = _class_image(sc["truth_classes"])
        im = axes[r, 0].imshow(truth, cmap=cmap, vmin=-0.5, vmax=N_CLASSES - 0.5, interpolation="nearest")
        axes[r, 0].set_title(f"{name}: truth\n({', '.join(sc.get('masks') or []) or 'no defect masks'})", fontsize=8)
        maps = sc.get("maps") or {}
        key = best_net if best_net in maps else next(iter(maps), None)
        if key is not None:
            acc = (sc.get("models") or {}).get(key, {}).get("accuracy_clean")
            axes[r, 1].imshow(_class_image(maps[key]["classes"]), cmap=cmap, vmin=-0.5, vmax=N_CLASSES - 0.5,
                              interpolation="nearest")
            axes[r, 1].set_title(f"{_label(key)}: classes\n(right on {_pct(acc)} of the clean positions)", fontsize=8)
        best = _best_score(sc)
        if best is not None:
            k, s, v = best
            sim = axes[r, 2].imshow(np.asarray(maps[k]["scores"][s], float), cmap="inferno", interpolation="nearest")
            fig.colorbar(sim, ax=axes[r, 2], fraction=0.04, pad=0.02, shrink=0.8).ax.tick_params(labelsize=6)
            axes[r, 2].set_title(f"best score: {s} of\n{_label(k)} (AUROC {v:.2f})", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            if not ax.images:
                ax.axis("off")
    cb = fig.colorbar(im, ax=axes.ravel().tolist(), location="bottom", fraction=0.04, pad=0.04, aspect=60)
    cb.set_ticks(range(N_CLASSES), labels=[f"{lab}\n{45 * c}°" for c, lab in enumerate(labels)], fontsize=7)
    return fig


def _nice(v: float) -> float:
    """Largest of 1, 2, 5 x 10^n not above v (v > 0)."""
    e = 10 ** math.floor(math.log10(v))
    return max(m * e for m in (1, 2, 5) if m * e <= v)


def _examples(base: dict, labels: list[str]):
    """One in-domain pattern per class (the one of median |CoM|), log scale, CoM arrow; returns (fig, factor)."""
    from inverscope.analysis.com import centre_of_mass

    x = np.asarray(base["x"], float)
    y = np.asarray(base["y"])
    p = x.shape[-1]
    com = centre_of_mass(x, centre_px=(p // 2, p // 2)).px
    com = com - np.nanmean(com, axis=0)
    mag = np.linalg.norm(com, axis=1)
    picks = {}
    for c in range(N_CLASSES):
        idx = np.flatnonzero(y == c)
        if idx.size:
            order = idx[np.argsort(mag[idx])]
            picks[c] = int(order[len(order) // 2])
    largest = max([mag[i] for i in picks.values()] + [0.0])
    factor = _nice(0.35 * p / largest) if largest > 0 else 1.0
    fig, axes = _grid(max(len(picks), 1), 4, 2.7, 2.9, gridspec_kw={"wspace": 0.1, "hspace": 0.35})
    for ax, (c, i) in zip(axes, picks.items()):
        img = np.clip(x[i], 0, None)
        ax.imshow(np.log10(img + 1e-4 * max(img.max(), 1e-30)), cmap="magma")
        cy, cx = p // 2, p // 2
        dy, dx = factor * com[i]
        ax.annotate("", xy=(cx + dx, cy + dy), xytext=(cx, cy),
                    arrowprops={"arrowstyle": "-|>", "color": "cyan", "lw": 1.6, "mutation_scale": 12})
        ax.plot(cx, cy, "c+", ms=6)
        ax.set_title(f"{labels[c]} ({45 * c}°)\n|CoM| = {mag[i]:.3f} px", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"CoM arrows exaggerated x{factor:g}", fontsize=9)
    return fig, factor


def _gap_scatter(gap: dict):
    """Gap score per condition against the networks' mean accuracy drop, one panel per feature set."""
    drops = gap.get("accuracy_drop_mean_networks") or {}
    scores = gap.get("scores") or {}
    if not scores or not drops:
        return None
    fig, axes = _grid(len(scores), 3, 4.0, 3.4, layout="constrained")
    for ax, (fname, sc) in zip(axes, scores.items()):
        names = [n for n in drops if n in sc and _finite(sc[n])]
        xs = [sc[n] for n in names]
        ys = [100 * drops[n] for n in names]
        ax.scatter(xs, ys, s=22, color=_COLORS[0], zorder=3)
        for n, a, b in zip(names, xs, ys):
            ax.annotate(n, (a, b), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if _finite(sc.get("in_domain")):
            ax.axvline(sc["in_domain"], color="0.5", ls="--", lw=0.8, label="in-domain (reference)")
            ax.legend(fontsize=6, loc="best")
        ax.axhline(0, color="0.7", lw=0.6)
        ax.set_title(f"{fname}: {_rank_text((gap.get('rank_agreement') or {}).get(fname))}", fontsize=8)
        ax.set_xlabel(f"gap score ({gap.get('method', '?')})", fontsize=7)
        ax.set_ylabel("mean accuracy drop of the networks [pp]", fontsize=7)
        ax.tick_params(labelsize=6)
    return fig


def _rank_text(r) -> str:
    if r is None:
        return "Spearman ρ n/a (fewer than 3 shifts)"
    if isinstance(r, dict) and "error" in r:
        return "Spearman ρ n/a"
    if isinstance(r, dict) and _finite(r.get("spearman")):
        p = r.get("spearman_p")
        return f"Spearman ρ = {r['spearman']:.2f}" + (f" (p = {p:.2g})" if _finite(p) else "")
    return "Spearman ρ n/a"


def _training(histories: dict):
    """Validation and training accuracy per epoch of every run (colour: run key; line style: seed)."""
    keys = list(dict.fromkeys(k.rsplit("/seed", 1)[0] for k in histories))
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
    seen_seed: dict[str, int] = {}
    for run, hist in histories.items():
        if not hist:
            continue
        key = run.rsplit("/seed", 1)[0]
        n = seen_seed[key] = seen_seed.get(key, -1) + 1
        color = _COLORS[keys.index(key) % 10]
        e = [h.get("epoch", i) + 1 for i, h in enumerate(hist)]
        for ax, field in zip(axes, ("val_acc", "train_acc")):
            ax.plot(e, [h.get(field, np.nan) for h in hist], styles[n % 4], color=color, marker="o", ms=2.5, lw=1.1,
                    label=key if n == 0 else None)
    for ax, what in zip(axes, ("validation accuracy", "training accuracy (batches as trained)")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.axhline(1 / N_CLASSES, color="0.6", ls=":", lw=0.8)
        ax.set_ylim(0, 1.02)
    if axes[0].lines:
        axes[0].legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------- the report

def write_report(recipe, metrics: dict, evaluation: dict, out) -> None:
    """Write ``out / "report.html"`` from the study's metrics and in-memory evaluation."""
    try:
        _write(recipe, metrics, evaluation, out)
    finally:
        plt.close("all")


def _write(recipe, metrics: dict, evaluation: dict, out) -> None:
    acc = metrics.get("accuracy") or {}
    head = metrics.get("headline") or {}
    conds = evaluation.get("conditions") or {}
    base = conds.get("in_domain")
    labels = _class_labels(metrics, evaluation)
    best = _best_network(metrics, evaluation)
    models = list(acc)
    net_keys = [k for k in models if _is_net(k)]
    cond_names = list(dict.fromkeys(c for m in models for c in acc[m]))
    timings = metrics.get("timings_s") or {}

    rep = HtmlReport(f"KNN polarization benchmark: {recipe.name}",
                     "Projected polarization of (K,Na)NbO3 from 4D-STEM: 8 classes at 0, 45, ..., 315 degrees "
                     "(Martinc et al.); networks trained on simulations against PCA + kNN, CoM and Friedel baselines, "
                     "tested in-domain and under microscope and specimen shifts")

    # 1. headline
    s = rep.section("Headline")
    cards = {}
    if best is not None and best in acc:
        cards[f"best network ({best})"] = _mean_std(acc[best].get("in_domain"))
    for b in ("pca_knn", "com", "com_threshold", "linear", "friedel"):
        if b in acc:
            cards[_label(b)] = _mean_std(acc[b].get("in_domain"))
    if best is not None and "random_split" in acc.get(best, {}):
        cards["paper split (random held-out), best network"] = _mean_std(acc[best]["random_split"])
    if "random_split" in acc.get("pca_knn", {}):
        cards["paper split, PCA + kNN"] = _mean_std(acc["pca_knn"]["random_split"])
    worst = head.get("worst_shift")
    if worst:
        cards[f"worst shift ({worst['condition']})"] = _pct(worst.get("accuracy"))
    if _finite(timings.get("total_s")):
        cards["total time"] = f"{timings['total_s']:.0f} s"
    s.metrics(cards)
    s.text("Accuracies are in-domain (held-out probe positions on another grid and a held-out K/Na configuration) "
           "unless marked; networks: mean ± std over training seeds. The paper's split (random held-out patterns of "
           "the training stores) is shown for comparison: it shares probe grid and configurations with training.")
    data = metrics.get("data") or {}
    descr = data.get("conditions") or {k: v.get("description", "") for k, v in conds.items()}
    n_test = data.get("n_test") or {k: len(v["x"]) for k, v in conds.items() if "x" in v}
    s.table(["condition", "patterns", "description"], [[c, n_test.get(c, "—"), descr.get(c, "")] for c in cond_names],
            f"{data.get('n_train', '?')} training and {data.get('n_validation', '?')} validation patterns")

    # 2. accuracy table and shift heat map
    s = rep.section("Accuracy per test condition")
    s.table(["model", "seeds"] + cond_names,
            [[_label(m), max((v.get("n_seeds", 1) for v in acc[m].values()), default=1)]
             + [_mean_std(acc[m].get(c), "") for c in cond_names] for m in models],
            "accuracy [%]: mean ± std over seeds (baselines are deterministic: one value)")
    s.table(["model"] + [c for c in cond_names if c != "in_domain"],
            [[_label(m)] + [f"{100 * acc[m][c]['drop']:+.1f}" if c in acc[m] and _finite(acc[m][c].get("drop"))
                            else "—" for c in cond_names if c != "in_domain"] for m in models],
            "accuracy drop from in-domain [percentage points; positive = worse]")
    s.figure(_heatmap(acc, models, cond_names),
             "The shift matrix: accuracy [%] of every model (rows) on every test condition (columns); "
             "± std over seeds where there are several")

    # 3. confusion matrices
    preds = _predictions(evaluation)
    s = rep.section("Confusion matrices (in-domain)")
    if base is not None and preds:
        s.figure(_confusions(np.asarray(base["y"]), preds, labels),
                 "Rows: true class, columns: predicted class; colour = fraction of the true class, numbers = counts. "
                 "Networks: first training seed.")
    else:
        s.text("No in-domain predictions.")

    # 4. class maps
    s = rep.section("Class maps (in-domain scans)")
    if base is not None:
        rows = [("truth", np.asarray(base["y"]))]
        if best is not None and best in preds:
            rows.append((best, preds[best]))
        if "pca_knn" in preds:
            rows.append(("pca_knn", preds["pca_knn"]))
        s.figure(_class_maps(base, rows, labels),
                 f"Predicted class at every probe position of each variant's {base['k']} x {base['k']} scan "
                 f"({base.get('repeat_xy', '?')} x {base.get('repeat_xy', '?')} pseudo-cubic cells); colour = class "
                 "angle on a cyclic scale. Top: truth (one variant per scan); then the best network (first seed) "
                 "and PCA + kNN.")

    # 5. periodic errors
    per = metrics.get("periodic") or {}
    pmodels = [k for k, v in per.items() if isinstance(v, dict) and "folded_error" in v]
    if pmodels:
        s = rep.section("Periodic misclassification")
        s.text(f"Errors of the in-domain predictions folded into one pseudo-cubic cell "
               f"({per.get('positions_per_cell', '?')} x {per.get('positions_per_cell', '?')} probe positions per "
               f"cell); harmonic share: fraction of the error map's power at lattice harmonics (chance: uniform "
               f"power). {_pct(per.get('fraction_above_mean_com'), 0)} of the positions have |CoM| above the mean.")
        s.figure(_folded(per, pmodels), "Error rate per position in the cell (x, y in units of the cell edge a)")
        s.table(["model", "error rate", "harmonic share", "chance", "accuracy |CoM| > mean", "accuracy |CoM| < mean"],
                [[_label(k), _pct(per[k].get("error_rate")), _num(per[k].get("harmonic_share")),
                  _num(per[k].get("harmonic_share_chance")), _pct(per[k].get("accuracy_above_mean_com")),
                  _pct(per[k].get("accuracy_below_mean_com"))] for k in pmodels])

    # 6. defects
    defects = metrics.get("defects")
    if defects:
        s = rep.section("Defect detection")
        s.text("Simulated defect scenes (domain walls, vacancy columns, a rhombohedral region, a thickness step, an "
               "amorphous surface layer) read by every network (first seed); anomaly scores evaluated against the "
               "truth masks (negatives: clean positions).")
        wall_rows = []
        for name, sc in defects.items():
            for key, m in (sc.get("models") or {}).items():
                for score, per_d in (m.get("wall_errors") or {}).items():
                    for d, w in per_d.items():
                        wall_rows.append([name, _label(key), score, d, _num(w.get("median_angstrom"), ".2f"),
                                          _num(w.get("mean_angstrom"), ".2f"), _num(w.get("max_angstrom"), ".2f"),
                                          _num(w.get("bias_angstrom"), ".2f"), w.get("n_lines", "—"),
                                          w.get("orientation", "—")])
        for name, sc in defects.items():
            models_d = sc.get("models") or {}
            top = _best_score(sc)
            fig = _roc_figure(sc, best if best in models_d else (top[0] if top else next(iter(models_d), None)))
            if fig is not None:
                s.figure(fig, f"{name} ({sc.get('rows', '?')} x {sc.get('cols', '?')} positions): ROC per defect type "
                              f"(AUROC in the legend)")
        keys = list(dict.fromkeys(k for sc in defects.values() for k in (sc.get("models") or {})))
        s.table(["model"] + list(defects),
                [[_label(k)] + [_pct((sc.get("models") or {}).get(k, {}).get("accuracy_clean"))
                                for sc in defects.values()]
                 for k in keys], "Class accuracy on the clean positions of each scene (positions with a polar class, "
                                 "outside every defect mask)")
        for name, sc in defects.items():
            models_d = sc.get("models") or {}
            dnames = list(dict.fromkeys(d for m in models_d.values() for per_d in (m.get("auroc") or {}).values()
                                        for d in per_d))
            rows = [[_label(k), score] + [round(per_d[d], 3) if _finite(per_d.get(d)) else "—" for d in dnames]
                    for k, m in models_d.items() for score, per_d in (m.get("auroc") or {}).items()]
            if rows:
                s.table(["model", "score"] + dnames, rows, f"{name}: AUROC of each anomaly score per defect type "
                                                           "(0.5 = chance)")
        if wall_rows:
            s.table(["scene", "model", "score", "defect", "median [Å]", "mean [Å]", "max [Å]", "bias [Å]", "lines",
                     "orientation"], wall_rows, "Wall position error: ridge of the score map against the true wall")
        s.figure(_scenes(defects, best, labels),
                 "Per scene: true classes (grey: no polar class), classes of the best network, and the anomaly score "
                 "map with the highest AUROC over all defects")

    # 7. example patterns
    if base is not None and len(base.get("x", [])):
        fig, factor = _examples(base, labels)
        rep.section("Example patterns and their CoM").figure(
            fig, f"One in-domain pattern per class (the one of median |CoM| in its class), log intensity; cyan "
                 f"arrow: centre of mass relative to the scan mean (as the CoM baseline reads it), drawn from the "
                 f"pattern centre and exaggerated x{factor:g}")

    # 8. domain gap
    gap = metrics.get("gap") or {}
    fig = _gap_scatter(gap)
    if fig is not None:
        s = rep.section("Domain gap vs accuracy drop")
        s.figure(fig, "Unsupervised gap score of each shifted condition (from the training set) against the mean "
                      "accuracy drop of the networks; Spearman ρ: rank agreement")
        ra = gap.get("rank_agreement") or {}
        s.table(["features", "Spearman ρ", "p", "Kendall τ", "p", "n", "note"],
                [[f, _num((r or {}).get("spearman"), ".2f") if isinstance(r, dict) else "—",
                  _num((r or {}).get("spearman_p"), ".2g") if isinstance(r, dict) else "—",
                  _num((r or {}).get("kendall"), ".2f") if isinstance(r, dict) else "—",
                  _num((r or {}).get("kendall_p"), ".2g") if isinstance(r, dict) else "—",
                  (r or {}).get("n", "—") if isinstance(r, dict) else "—",
                  (r.get("error", "") if isinstance(r, dict) else "") if r is not None else "fewer than 3 shifts"]
                 for f, r in ra.items()])

    # 9. training, speed, timings
    s = rep.section("Training and timings")
    hist = metrics.get("training") or {}
    if hist:
        s.figure(_training(hist), "Accuracy per epoch of every training run (dotted: chance, 1/8)")
    inf = metrics.get("inference_patterns_per_s") or {}
    if inf:
        s.table(["network", "inference [patterns/s]", "in-domain (first seed)"],
                [[_label(k), round(float(v)), _pct(acc.get(k, {}).get("in_domain", {}).get("values", [None])[0])]
                 for k, v in inf.items()], "CPU/GPU throughput of the first seed on the in-domain test set")
    if timings:
        s.table(["stage", "seconds"], [[k, round(float(v), 1)] for k, v in timings.items() if _finite(v)])
    stores = data.get("stores") or {}
    if stores:
        s.table(["store", "simulated", "reused", "wall [s]"],
                [[k, v.get("simulated", "—"), v.get("skipped", "—"), _num(v.get("wall_s"), ".1f")]
                 for k, v in stores.items()])
    if net_keys:
        s.text(f"{len(net_keys)} network configurations; runs: {len(hist)}.")

    rep.section("Parameters").params(recipe.model_dump(mode="json"))
    rep.write(out / "report.html")
