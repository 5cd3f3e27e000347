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
# # BE-PFM switching autoencoder
#
# Band-excitation piezoresponse spectroscopy (BEPS) records a ferroelectric hysteresis loop at
# every pixel of a map. Agar et al. trained a sparse recurrent autoencoder on such maps and read
# the switching character of each pixel from its latent values (J. C. Agar et al., "Revealing
# ferroelectric switching character using deep recurrent neural networks", *Nature
# Communications* **10**, 4809, 2019). inverscope ships their PbZr0.2Ti0.8O3 data
# (60 × 60 pixels, 96 voltage steps, BSD 3-Clause, Copyright (c) 2018 Joshua C. Agar).
#
# In this tutorial you will
#
# 1. load the bundled loops and look at the voltage waveform and a few raw loops;
# 2. run the data check and preprocessing that the study uses (outlier pixels, cleaning, scaling);
# 3. train a small autoencoder for a few seconds on 80 % of the pixels;
# 4. look at its latent maps and reconstructions, and compare it with PCA on the held-out 20 %.
#
# The full study (`inverscope run recipes/pfm_switching.yaml --out out/pfm`) does the same with a
# longer training budget, imports the published Keras weights, and adds NMF and k-means maps and
# an HTML report.

# %%
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch

from inverscope.analysis.decomposition import pca_baseline
from inverscope.datasets.io.beps import load_example
from inverscope.datasets.loop_preprocess import format_check, prepare_loops
from inverscope.models.nets import build_net
from inverscope.training.autoencoder import AETrainConfig, fit_autoencoder, reconstruct

torch.set_num_threads(2)

# %% [markdown]
# ## The data
#
# `load_example("pzt_piezoresponse")` returns a `BEPSData`: `loops` is (rows, cols, steps), the
# piezoresponse A·cos φ, and `voltage` is the DC waveform in volts.

# %%
data = load_example("pzt_piezoresponse")
rows, cols, steps = data.loops.shape
print(data.loops.shape, "loops;", int(np.isnan(data.loops).sum()), "missing values")
print(f"voltage {data.voltage[0]:+.2f} V -> {data.voltage.min():+.2f} V -> {data.voltage[-1]:+.2f} V")

# %%
pixels = [(10, 22), (21, 7), (52, 48)]
fig, ax = plt.subplots(1, 3, figsize=(12, 3.4))
ax[0].plot(np.arange(steps), data.voltage, ".-", ms=3)
ax[0].set(xlabel="step", ylabel="DC voltage [V]", title="waveform")
amp = np.nanpercentile(data.loops, 95, axis=2) - np.nanpercentile(data.loops, 5, axis=2)
im = ax[1].imshow(amp, cmap="viridis")
for r, c in pixels:
    ax[1].plot(c, r, "o", mfc="none", mec="w")
ax[1].set_title("amplitude (5-95 %)")
fig.colorbar(im, ax=ax[1])
for r, c in pixels:
    ax[2].plot(data.voltage, data.loops[r, c], label=f"pixel ({r}, {c})")
ax[2].set(xlabel="DC voltage [V]", ylabel="A cos φ [a.u.]", title="raw loops")
ax[2].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Preprocessing
#
# `prepare_loops` looks at the data before anything is trained: it reads the up and down branches
# from the waveform, flags outlier pixels (by log loop amplitude, against the whole map and
# against their 5 × 5 neighbourhood), interpolates missing values, replaces the few points
# farthest from a Savitzky-Golay fit (the published cleaning), and picks a scaling, telling you
# why. Outlier pixels are kept out of training but are still reconstructed.

# %%
prep = prepare_loops(data.loops, data.voltage, scaling="auto", outlier_threshold=5.0)
print(format_check(prep.report))
x = prep.x                                   # (3600, 96) float32, row-major over the grid
print("prepared loops:", x.shape, x.dtype)

# %% [markdown]
# A seeded 80/20 split by pixel, as in the recipe: the network sees 80 % of the (inlier)
# pixels, and we measure the reconstruction error on the other 20 %.

# %%
perm = np.random.default_rng(0).permutation(len(x))
n_train = int(round(0.8 * len(x)))
tr_idx, te_idx = np.sort(perm[:n_train]), np.sort(perm[n_train:])
tr_idx, te_idx = tr_idx[~prep.outliers[tr_idx]], te_idx[~prep.outliers[te_idx]]
print(len(tr_idx), "training pixels,", len(te_idx), "held-out pixels")

# %% [markdown]
# ## A small autoencoder
#
# The study's default network is `pca_residual_ae`: the encoder and decoder are each a linear PCA
# map plus a small nonlinear branch, initialised so that the untrained network *is* PCA with
# `latent` components; training can only add what PCA misses. (`sparse_conv_ae`, a 1D
# convolutional autoencoder with a sparse ReLU latent, and `bilstm_ae`, the published network,
# are built the same way with `build_net`.) Here we keep 8 latents and train for 40 epochs.

# %%
net_cfg = {"steps": steps, "latent": 8, "encoder_hidden": [64], "decoder_hidden": [64],
           "dropout": 0.1, "train_basis": False}
torch.manual_seed(0)
net = build_net("pca_residual_ae", net_cfg)
net.init_from_data(x[tr_idx])
rec0, _ = reconstruct(net, x[te_idx])
print(f"held-out MSE at initialisation (= PCA-8): {np.mean((rec0 - x[te_idx]) ** 2):.5f}")

train_cfg = AETrainConfig(lr=2e-3, weight_decay=1e-4, batch_size=256, max_epochs=40, max_minutes=0.5,
                          l1_activity=0.0, seed=0, accelerator="cpu", progress_bar=False)
with tempfile.TemporaryDirectory() as tmp:            # training logs and checkpoints go here
    fit = fit_autoencoder(net, x[tr_idx], x[te_idx], train_cfg, tmp, "tutorial")
print(f"trained {fit.epochs} epochs in {fit.wall_s:.1f} s")

# %%
hist = [h for h in fit.history if h.get("train_loss") is not None]
val = [h for h in fit.history if h.get("val_loss") is not None]
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.plot([h["epoch"] for h in hist], [h["train_loss"] for h in hist], "o-", label="training")
ax.plot([h["epoch"] for h in val], [h["val_loss"] for h in val], "s-", label="held-out")
ax.set(xlabel="epoch", ylabel="MSE (scaled units)", yscale="log", title="training curve")
ax.legend()
plt.show()

# %% [markdown]
# ## Held-out error against PCA
#
# An autoencoder earns its place only if it describes unseen loops better than PCA with as many
# components. The study makes this comparison part of its verdict; here it is in three lines.

# %%
rec_all, z_all = reconstruct(net, x)
ae_mse = float(np.mean((rec_all[te_idx] - x[te_idx]) ** 2))
pca_mse = pca_baseline(x[tr_idx], x[te_idx], 8)["heldout_mse"]
print(f"held-out MSE: autoencoder {ae_mse:.5f}, PCA-8 {pca_mse:.5f} "
      f"({'autoencoder' if ae_mse < pca_mse else 'PCA'} is better after this short training)")

# %% [markdown]
# ## Latent maps
#
# Each latent value, put back on the 60 × 60 grid, is a map. Because this network starts from
# PCA, the first latents are close to the leading principal scores: the first separates the
# wide bands of large loops from the narrow bands of small ones, i.e. the ferroelastic domain
# pattern of the film. (On your own data, `prep.outliers.reshape(rows, cols)` is the map of the
# pixels the data check set aside; the bundled map has none.)

# %%
zmap = z_all.reshape(rows, cols, -1)
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
for i, a in enumerate(axes.flat):
    im = a.imshow(zmap[..., i], cmap="RdBu_r")
    a.set_title(f"latent {i}")
    a.axis("off")
    fig.colorbar(im, ax=a, fraction=0.046)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Reconstructions
#
# Held-out loops (never seen in training) beside the autoencoder's reconstruction, in the scaled
# units the network works in (`raw = x * prep.scale + prep.offset` takes them back to the file's
# units).

# %%
show = te_idx[np.linspace(0, len(te_idx) - 1, 4).astype(int)]
fig, axes = plt.subplots(1, 4, figsize=(13, 3), sharey=True)
for a, i in zip(axes, show):
    a.plot(data.voltage, x[i], ".", ms=4, label="measured (scaled)")
    a.plot(data.voltage, rec_all[i], "-", label="autoencoder")
    a.set(title=f"pixel ({i // cols}, {i % cols})", xlabel="DC voltage [V]")
axes[0].set_ylabel("response (scaled)")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Going further
#
# - `inverscope run recipes/pfm_switching.yaml --out out/pfm` trains for longer, compares with
#   PCA-16, imports the published weights (`inverscope.models.keras_import`) and writes
#   `report.html` with NMF, divisive k-means and generated curves
#   (`inverscope.analysis.decomposition.generated_curves`, one latent swept through the decoder).
# - `--data my_beps.h5` runs the same recipe on your own BEPS file (`.mat`, HDF5/USID, `.npy`,
#   `.npz`); `inverscope.datasets.io.beps.load_beps` is the reader used above.
