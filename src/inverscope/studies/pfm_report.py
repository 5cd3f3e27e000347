"""Report of the BE-PFM switching study (figures with matplotlib, page from report.html)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from inverscope.analysis.decomposition import generated_curves  # noqa: E402
from inverscope.report import plots  # noqa: E402
from inverscope.report.html import HtmlReport  # noqa: E402


def _maps(values: np.ndarray, grid, titles, cmap="viridis", ncols=4):
    n = values.shape[1]
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.5 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        im = ax.imshow(values[:, i].reshape(grid), cmap=cmap)
        ax.set_title(titles[i], fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.7)
    return fig


def _overview(x, voltage, grid):
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.3), layout="constrained")
    rng = np.random.default_rng(0)
    for i in rng.choice(len(x), 8, replace=False):
        a.plot(voltage, x[i], lw=0.8, alpha=0.7)
    a.plot(voltage, x.mean(0), "k", lw=2, label="mean")
    a.set_xlabel("DC voltage [V]")
    a.set_ylabel("piezoresponse (standardized)")
    a.legend(fontsize=8)
    vals = np.abs(x).mean(1)
    im = b.imshow(vals.reshape(grid), cmap="magma", vmax=float(np.percentile(vals, 99)))    # outliers saturate
    b.set_title("mean |response| per pixel", fontsize=9)
    fig.colorbar(im, ax=b)
    return fig


def _curves(decode, z, latents, voltage, title):
    n = max(len(latents), 1)
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 2.8), squeeze=False, layout="constrained")
    for ax, j in zip(axes[0], latents):
        values, curves = generated_curves(decode, z, j)
        for v, c in zip(values, curves):
            ax.plot(voltage, c, color=plt.cm.viridis((v - values[0]) / max(values[-1] - values[0], 1e-12)), lw=1)
        ax.set_title(f"{title} latent {j}", fontsize=8)
        ax.set_xlabel("V", fontsize=8)
    return fig


def _pca_figure(section, extra, x, grid) -> None:
    pca = extra["pca"]["model"]
    section.figure(_maps(pca.transform(x)[:, :8], grid, [f"PCA {i}" for i in range(min(8, pca.n_components_))],
                         cmap="RdBu_r"), "PCA score maps (first 8), fitted on the training pixels")


def _pca_section(rep, extra, x, grid) -> None:
    sec = rep.section("PCA (the better description of this dataset)")
    _pca_figure(sec, extra, x, grid)
    pca = extra["pca"]["model"]
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    for i, comp in enumerate(pca.components_[:4]):
        ax.plot(comp, label=f"PCA {i}")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    sec.figure(fig, "The first four principal loops (eigenvectors), in waveform order")


def _data_check(extra, grid):
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2), layout="constrained")
    out = extra["outliers"].reshape(grid)
    a.imshow(out, cmap="Reds", vmin=0, vmax=1)
    a.set_title(f"outlier pixels: {int(out.sum())}", fontsize=9)
    im = b.imshow(np.log10(np.maximum(extra["amplitude"], 1e-300)).reshape(grid), cmap="viridis")
    b.set_title("log10 scale per pixel [data units]", fontsize=9)
    fig.colorbar(im, ax=b)
    return fig


def write_report(recipe, m: dict, extra: dict, out: Path) -> None:
    x, z, grid, voltage = extra["x"], extra["z"], extra["grid"], extra["voltage"]
    rep = HtmlReport(f"BE-PFM switching: {recipe.name}", "Sparse autoencoder on band-excitation hysteresis loops "
                     "(Agar et al. 2019); held-out pixels never seen in training")
    s = rep.section("Headline")
    verdict = m.get("verdict", {"lead": "autoencoder", "text": ""})
    pca_card = (f"PCA-{m['pca_same_components']['n_components']} held-out", f"{m['pca_same_components']['heldout_mse']:.5f}")
    cards = {"held-out MSE (model)": f"{m['model']['heldout_mse']:.5f}"}
    if verdict["lead"] == "pca":
        cards = {pca_card[0]: pca_card[1], **cards}
    else:
        cards[pca_card[0]] = pca_card[1]
    cards.update({"active latents": str(len(m["model"]["active_latents"])), "training": f"{m['model']['train_wall_s']:.0f} s"})
    if "data_check" in m:
        cards["outlier pixels"] = f"{m['data_check']['outliers']['count']}"
    if "published_weights" in m:
        cards["published weights MSE"] = f"{m['published_weights']['mse_all']:.5f}"
    s.metrics(cards)
    rows = [[f"{m['model']['architecture']} (trained here)", f"{m['model']['heldout_mse']:.5f}", f"{m['model']['train_wall_s']:.0f} s"],
            [f"PCA, {m['pca_same_components']['n_components']} components (= active latents)",
             f"{m['pca_same_components']['heldout_mse']:.5f}", ""],
            ["PCA, 5 components", f"{m['pca5_heldout_mse']:.5f}", ""],
            [f"PCA, {recipe.pca_components} components", f"{m['pca16_heldout_mse']:.5f}", ""]]
    if "published_architecture_from_scratch" in m:
        p = m["published_architecture_from_scratch"]
        rows.append(["published BiLSTM, trained here from scratch", f"{p['heldout_mse']:.5f}", f"{p['train_wall_s']:.0f} s"])
    if "published_weights" in m:
        p = m["published_weights"]
        rows.append(["published Keras weights (imported)", f"{p['heldout_mse']:.5f} (all pixels {p['mse_all']:.5f})", "15,542 epochs"])
    s.table(["model", "held-out reconstruction MSE (standardized units)", "training"], rows)
    if verdict["text"]:
        s.text(("Verdict: " if verdict["lead"] == "autoencoder" else "Verdict (PCA leads this report): ")
               + verdict["text"] + ".")
    d = rep.section("Data")
    if "data_check" in m:
        from inverscope.datasets.loop_preprocess import format_check

        d.text(format_check(m["data_check"]).replace("\n", "; "))
        d.figure(_data_check(extra, grid), "Outlier pixels (excluded from training, still reconstructed) and the "
                 "amplitude each loop was divided by (per-pixel scaling) or the global scale")
    d.figure(_overview(x, voltage, grid), f"{m['data']['source']}: {grid[0]}×{grid[1]} loops")
    if verdict["lead"] == "pca":
        _pca_section(rep, extra, x, grid)
    rep.section("Training").figure(plots.training_curves({"autoencoder": extra["history"]}), "MSE per epoch")
    act = m["model"]["active_latents"]
    sec = rep.section("Latent maps")
    sec.figure(_maps(z, grid, [f"latent {i}" + (" (active)" if i in act else "") for i in range(z.shape[1])]),
               "One map per latent of the trained model")
    if act:
        sec.figure(_curves(extra["net"].decode, z, act, voltage, "model"),
                   "Generated curves: each active latent swept through the decoder from the mean embedding of the pixels nearest each value")
    for key, title in (("published", "published piezoresponse"), ("resonance", "published resonance")):
        if key in extra:
            net, zp = extra[key]
            a = [i for i in range(zp.shape[1]) if np.abs(zp[:, i]).max() > 1e-6]
            sp = rep.section(f"Latents of the {title} model")
            sp.figure(_maps(zp[:, a], grid, [f"latent {i}" for i in a]), f"Active latents of the {title} model")
            sp.figure(_curves(net.decode, zp, a, voltage, title), "Generated curves")
    b = rep.section("Baselines (scikit-learn)")
    if verdict["lead"] != "pca":
        _pca_figure(b, extra, x, grid)
    b.figure(_maps(extra["nmf"]["maps"], grid, [f"NMF {i}" for i in range(extra["nmf"]["maps"].shape[1])]), "NMF maps")
    km = extra["kmeans"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.3), layout="constrained")
    a1.imshow(km["combined"].reshape(grid), cmap="tab10", vmin=0, vmax=9)
    a1.set_title("divisive k-means (2, then 2 within each)", fontsize=9)
    for c, curve in enumerate(km["means"]):
        a2.plot(voltage, curve, color=plt.cm.tab10(c), label=f"cluster {c}")
    a2.legend(fontsize=7)
    b.figure(fig, "Cluster map and mean loops")
    rep.section("Parameters").params(recipe.model_dump(mode="json"))
    rep.write(out / "report.html")
