# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Recognition imaging and unmixing
#
# A hyperspectral cube (an EELS spectrum image, or a map of BE-PFM hysteresis loops) holds one
# spectrum per pixel. Two old, robust ways to turn it into maps are
#
# - **recognition imaging**: label a few regions you recognise, train a shallow neural network on
#   their spectra, and let it assign every other pixel a probability for each class
#   (M. P. Nikiforov et al., "Functional recognition imaging using artificial neural networks:
#   applications to rapid cellular identification by broadband electromechanical response",
#   *Nanotechnology* **20**, 405708, 2009);
# - **linear unmixing**: when the pure spectra (end members) are known, write each pixel as a
#   non-negative mix of them, S(x) = Σ a_i(x) w_i + noise, and map the coefficients a_i, the
#   residual and χ² (as done for low-loss EELS of STO/LSMO/BFO by A. Y. Borisevich et al.,
#   *Phys. Rev. Lett.* **105**, 087204, 2010).
#
# Both are the examples of S. V. Kalinin's lecture "Neural Networks: Shallow and Deep", which this
# study follows. PCA and NMF, which need no labels and no end members, are the unsupervised
# comparison.
#
# You will work on a synthetic EELS line scan whose true abundances are known, so every map can
# be checked against the truth, and then briefly on the bundled PZT BE-PFM loops (Agar et al.,
# *Nat. Commun.* **10**, 4809, 2019). The full study is
# `inverscope run recipes/recognition_imaging.yaml --out out/recognition` (about 15 s, README).

# %%
import matplotlib.pyplot as plt
import numpy as np

from inverscope.analysis.recognition import RecognitionImager, labels_to_mask
from inverscope.analysis.unmixing import (class_mean_spectra, counting_noise_sigma, nmf_decomposition,
                                          nnls_unmix, pca_decomposition)
from inverscope.datasets.synthetic import eels_line_scan

# %% [markdown]
# ## A synthetic EELS line scan with known ground truth
#
# `eels_line_scan` builds a STO | LSMO | BFO | LSMO | STO heterostructure: 6 scan rows of 160
# positions, 256 energy channels from 5 to 150 eV, illustrative spectra (a plasmon, a power-law
# tail and delayed edges), interfaces broadened by an error function and randomly shifted from
# row to row, then Poisson counting noise and read noise. These are the recipe's settings.

# %%
scan = eels_line_scan(rows=6, positions=160, channels=256, energy_min_ev=5.0, energy_max_ev=150.0,
                      layers=["STO", "LSMO", "BFO", "LSMO", "STO"], interface_width=2.0,
                      interface_roughness=1.0, dose_counts=2e4, read_noise_counts=2.0, seed=0)
print("cube", scan.cube.shape, "(rows, positions, channels); materials", scan.names)

fig, ax = plt.subplots(1, 2, figsize=(12, 3.5))
for name, w in zip(scan.names, scan.endmembers):
    ax[0].plot(scan.energy_ev, w, label=name)
ax[0].set(xlabel="energy loss [eV]", ylabel="counts per channel", yscale="log", title="end members (noise-free)")
ax[0].legend()
ax[1].imshow(np.log10(np.clip(scan.cube[0].T, 1, None)), aspect="auto", origin="lower", cmap="magma",
             extent=[0, 160, scan.energy_ev[0], scan.energy_ev[-1]])
ax[1].set(xlabel="scan position", ylabel="energy loss [eV]", title="row 0 of the scan (log10 counts)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Recognition imaging
#
# Label one box in the middle of the first layer of each material, as a user would by eye.
# `labels_to_mask` turns the boxes (half-open `[r0, r1)` × `[c0, c1)`) into an integer mask,
# -1 for unlabeled pixels.

# %%
boxes = {"boxes": {"STO": {"rows": [0, 6], "cols": [8, 24]},
                   "LSMO": {"rows": [0, 6], "cols": [40, 56]},
                   "BFO": {"rows": [0, 6], "cols": [72, 88]}}}
mask, names = labels_to_mask(boxes, scan.cube.shape[:2], class_names=scan.names)
print(f"{(mask >= 0).sum()} of {mask.size} pixels labeled")

# %% [markdown]
# `RecognitionImager` standardizes each channel, keeps 8 principal components, and trains a
# one-hidden-layer tanh network (32 units) with early stopping on a held-back part of the
# labeled pixels. `predict_proba` then gives each pixel a probability per class.

# %%
imager = RecognitionImager(hidden=[32], activation="tanh", n_components=8, lr=3e-3, weight_decay=1e-5,
                           batch_size=64, max_epochs=300, patience=40, validation_fraction=0.15, seed=0)
imager.fit(scan.cube, mask)
proba = imager.predict_proba(scan.cube)             # (rows, positions, classes)
pred = proba.argmax(-1)
unlabeled = mask < 0
print(f"accuracy against the truth: {100 * np.mean(pred == scan.labels):.1f} % of all pixels, "
      f"{100 * np.mean(pred[unlabeled] == scan.labels[unlabeled]):.1f} % of the unlabeled ones")

# %%
fig, axes = plt.subplots(len(names) + 1, 1, figsize=(10, 6), sharex=True)
for i, (a, n) in enumerate(zip(axes, names)):
    a.imshow(proba[..., i], aspect="auto", vmin=0, vmax=1, cmap="viridis")
    a.set_ylabel(f"P({n})", rotation=0, ha="right", va="center")
    a.set_yticks([])
axes[-1].imshow(np.where(mask >= 0, mask, np.nan), aspect="auto", cmap="tab10", vmin=0, vmax=9)
axes[-1].set_ylabel("labels", rotation=0, ha="right", va="center")
axes[-1].set_yticks([])
axes[-1].set_xlabel("scan position")
fig.suptitle("class-probability maps (6 rows x 160 positions)")
plt.show()

# %% [markdown]
# ## NNLS unmixing with known end members
#
# `nnls_unmix` solves min ‖S − a·W‖² with a ≥ 0 for every pixel (Lawson-Hanson). It returns
# coefficient maps, the fitted spectra, the RMS residual and a reduced χ² map. With counted data
# the noise is known: `counting_noise_sigma` gives √(counts + read noise²), so χ² ≈ 1 means
# the end members explain a pixel down to its noise.

# %%
sigma = counting_noise_sigma(scan.cube, scan.read_noise_counts)
known = nnls_unmix(scan.cube, scan.endmembers, noise_sigma=sigma)
rmse = float(np.sqrt(np.mean((known.coefficients - scan.abundances) ** 2)))
print(f"coefficient RMSE against the true abundances: {rmse:.4f}; median χ² {np.median(known.chi2):.2f}")

# End members are often not known: the mean spectra of the labeled boxes are a fair stand-in.
est_w = class_mean_spectra(scan.cube, mask, len(names))
est = nnls_unmix(scan.cube, est_w, noise_sigma=sigma)
rmse_est = float(np.sqrt(np.mean((est.coefficients - scan.abundances) ** 2)))
print(f"with the labeled boxes' mean spectra as end members: RMSE {rmse_est:.4f}, "
      f"median χ² {np.median(est.chi2):.2f}")

# %%
x = np.arange(scan.cube.shape[1])
fig, axes = plt.subplots(1, 2, figsize=(13, 3.6))
for i, n in enumerate(names):
    line, = axes[0].plot(x, known.coefficients[0, :, i], label=f"{n} (NNLS)")
    axes[0].plot(x, scan.abundances[0, :, i], "--", color=line.get_color(), lw=1)
axes[0].set(xlabel="scan position", ylabel="coefficient", title="row 0: NNLS (solid) vs truth (dashed)")
axes[0].legend(fontsize=8)
im = axes[1].imshow(known.chi2, aspect="auto", cmap="magma")
axes[1].set(xlabel="scan position", ylabel="row", title="reduced χ² map")
fig.colorbar(im, ax=axes[1])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## PCA and NMF: no labels, no end members
#
# PCA gives orthogonal, signed loadings that are easy to compute but rarely look like a real
# spectrum; NMF gives non-negative loadings and maps that often do, but carries no guarantee of
# matching the physical end members.

# %%
pca = pca_decomposition(scan.cube, 4, seed=0)
nmf = nmf_decomposition(scan.cube, 3, seed=0)
print("PCA explained variance ratio:", np.round(pca.explained_variance_ratio, 4))
print(f"NMF converged: {nmf.converged}; MSE per element {nmf.mse:.3g} counts²")

fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
for i in range(3):
    axes[0].plot(scan.energy_ev, pca.loadings[i], label=f"PC {i}")
axes[0].set(xlabel="energy loss [eV]", title="PCA loadings")
axes[0].legend(fontsize=8)
for i in range(3):
    axes[1].plot(scan.energy_ev, nmf.loadings[i], label=f"NMF {i}")
axes[1].set(xlabel="energy loss [eV]", yscale="log", title="NMF loadings")
axes[1].legend(fontsize=8)
for i in range(3):
    axes[2].plot(x, nmf.maps[0, :, i], label=f"NMF {i}")
axes[2].set(xlabel="scan position", title="NMF weights, row 0")
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The same tools on BE-PFM loops
#
# A map of hysteresis loops is a hyperspectral cube too: (60, 60, 96 voltage steps). We label
# regions picked on a PCA score map, as the recipe does (`recipes/recognition_imaging.yaml`):
# wide bands of large loops (read as c-domains), narrow bands of small loops (a-domains), and a
# region of loops shifted along the voltage axis. The end members for NNLS are the labeled
# classes' mean loops; these loops are signed, which is fine because only the coefficients are
# constrained to be non-negative. Noise is not known here, so `nnls_unmix` estimates it per pixel
# from second differences along the loop.

# %%
from inverscope.datasets.io.beps import load_example
from inverscope.datasets.preprocess import interpolate_nonfinite

pzt = load_example("pzt_piezoresponse")
loops = interpolate_nonfinite(pzt.loops)             # the file has 3 missing values
pzt_labels = {"boxes": {
    "c-domain": [{"rows": [8, 14], "cols": [20, 27]}, {"rows": [40, 46], "cols": [20, 26]}],
    "a-domain": [{"rows": [20, 24], "cols": [5, 9]}, {"rows": [10, 13], "cols": [12, 16]}],
    "shifted-loop": {"rows": [50, 55], "cols": [44, 52]}}}
pmask, pnames = labels_to_mask(pzt_labels, loops.shape[:2])
pimager = RecognitionImager(hidden=[32], n_components=8, max_epochs=300, patience=40,
                            validation_fraction=0.15, seed=0).fit(loops, pmask)
pproba = pimager.predict_proba(loops)
w = class_mean_spectra(loops, pmask, len(pnames))
punmix = nnls_unmix(loops, w)
agree = np.mean(punmix.coefficients.argmax(-1) == pproba.argmax(-1))
print("class fractions:", {n: f"{100 * np.mean(pproba.argmax(-1) == i):.0f} %" for i, n in enumerate(pnames)})
print(f"recognition and largest NNLS coefficient agree on {100 * agree:.0f} % of the pixels; "
      f"median χ² {np.median(punmix.chi2):.1f}")

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
im = axes[0].imshow(pproba.argmax(-1), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
axes[0].contour(pmask >= 0, levels=[0.5], colors="w", linewidths=1)
axes[0].set_title("recognised class (boxes: labels)")
for i, n in enumerate(pnames):
    axes[0].plot([], [], "s", color=plt.cm.tab10(i), label=n)
axes[0].legend(fontsize=7, loc="lower left")
for i, n in enumerate(pnames[:2]):
    im = axes[1 + i].imshow(punmix.coefficients[..., i], cmap="viridis")
    axes[1 + i].set_title(f"NNLS coefficient: {n}")
    fig.colorbar(im, ax=axes[1 + i], fraction=0.046)
im = axes[3].imshow(np.log10(punmix.chi2), cmap="magma")
axes[3].set_title("log10 reduced χ²")
fig.colorbar(im, ax=axes[3], fraction=0.046)
for a in axes:
    a.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# χ² well above 1 says that three mean loops do not describe each measured loop down to its
# noise: the classes are a coarse summary of a continuous variation, which is what the switching
# autoencoder tutorial and the Ising-model recognition tutorial look at next.
#
# On your own data: `inverscope run recipes/recognition_imaging.yaml --out DIR --data my_beps.h5`
# with your labels in the recipe (boxes or pixel lists per class), or a `.npy` of end members
# (`pzt.endmembers_file`). The study also runs the data check of the switching study, keeps
# outlier pixels out of the labels and writes `report.html` and `metrics.json`.
