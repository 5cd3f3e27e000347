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
# # Ising-model loop recognition
#
# A ferroelectric hysteresis loop carries the fingerprint of the disorder that pins domain walls.
# Ovchinnikov et al. simulated loops of a random-bond random-field Ising model (RBRF IM) and
# trained a neural network to read the model's disorder parameters back from a loop
# (O. S. Ovchinnikov, S. Jesse, P. Bintacchit, S. Trolier-McKinstry and S. V. Kalinin,
# "Disorder identification in hysteresis data: recognition analysis of random-bond random-field
# Ising model", *Phys. Rev. Lett.* **103**, 157203, 2009); Kumar et al. applied the trained network
# pixel by pixel to piezoresponse maps (A. Kumar et al., "Spatially resolved mapping of disorder
# type and distribution in random systems using artificial neural network recognition",
# *Phys. Rev. B* **84**, 024203, 2011).
#
# The model has three parameters, in units of the mean exchange energy:
#
# - **J0**, the mean nearest-neighbour coupling (how cooperative switching is);
# - **δJ**, the spread of the couplings (random bonds);
# - **δh**, the spread of a frozen local field (random fields).
#
# In this tutorial you will simulate loops for a few (J0, δJ, δh), see how each parameter
# changes the loop, train the lecture's shallow network (PCA + a small MLP) on a small seeded
# family of simulated loops, read the parameters of a held-out loop, and finally apply the
# network to the bundled BE-PFM loops of PbZr0.2Ti0.8O3 (Agar et al., *Nat. Commun.* **10**,
# 4809, 2019). Everything is tiny here; the full study is
# `inverscope run recipes/ising_recognition.yaml --out out/ising`.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from inverscope.analysis.hysteresis import AlignmentConfig, align_measured, align_model, waveform_axis
from inverscope.analysis.parameter_recognition import ParameterRecognizer, RecognizerConfig
from inverscope.datasets.io.beps import load_example
from inverscope.datasets.loopset import LoopSetConfig
from inverscope.datasets.preprocess import interpolate_nonfinite
from inverscope.physics.ising import PARAMETERS, IsingConfig, simulate_loops

# %% [markdown]
# ## Simulating loops
#
# `simulate_loops(params, IsingConfig(...), seed=)` runs zero-temperature Glauber dynamics on a
# periodic lattice: the field H is swept up from the all-down state and back down, every
# avalanche runs to completion, and the mean spin is averaged over several disorder
# realizations. Loop *i* depends only on (seed, *i*), so results are reproducible. We use a
# 32 × 32 lattice, 150 field steps per branch and 5 realizations (the recipe uses 300 and 10).

# %%
ising = IsingConfig(lattice=[32, 32], field_max=3.5, field_steps=150, realizations=5)
examples = {
    "J0=0.4, δJ=0.2, δh=0.3 (weak disorder)": [0.4, 0.2, 0.3],
    "J0=0.4, δJ=1.0, δh=0.3 (random bonds)": [0.4, 1.0, 0.3],
    "J0=0.4, δJ=0.2, δh=1.4 (random fields)": [0.4, 0.2, 1.4],
    "J0=0.1, δJ=0.2, δh=0.3 (weak coupling)": [0.1, 0.2, 0.3],
}
sim = simulate_loops(list(examples.values()), ising, seed=0)
fig, ax = plt.subplots(figsize=(6, 4))
for i, label in enumerate(examples):
    line, = ax.plot(sim.field, sim.m_up[i], label=label)
    ax.plot(sim.field, sim.m_down[i], color=line.get_color())
ax.set(xlabel="external field H [J units]", ylabel="mean spin", title="RBRF Ising hysteresis loops")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# With weak disorder the loop is square: the whole lattice switches in a few large avalanches.
# A large bond spread δJ gives a broad, slanted loop with a larger coercive field; a large
# random-field spread δh slants the loop and lowers the coercive field (some spins are pushed to
# flip early); a weak mean coupling J0 narrows the loop. These shape differences are what the network learns to read.
#
# ## A small seeded training family
#
# `LoopSetConfig.sample_params()` draws parameters uniformly inside the recipe's ranges
# (J0 in [0, 0.5], δJ in [0, 1], δh in [0, 1.5]) with a fixed seed. The full study stores 16 000
# loops in a resumable Zarr store (`datasets.loopset.build_loop_set`); here 5000 loops in memory
# are enough to see the method work.

# %%
family = LoopSetConfig(ising=ising, j0_range=(0.0, 0.5), dj_range=(0.0, 1.0), dh_range=(0.0, 1.5),
                       num_loops=5000, seed=0)
params = family.sample_params()
t0 = time.perf_counter()
loops = simulate_loops(params, ising, seed=0)
print(f"simulated {len(params)} loops in {time.perf_counter() - t0:.1f} s")

# %% [markdown]
# ## One axis for simulated and measured loops
#
# Simulated loops live on a field axis in J units; measured loops on a voltage waveform. The
# study puts both on the same axis by a fixed rule (`inverscope.analysis.hysteresis`): the model
# field is proportional to the voltage (`field_at_vmax` is the field at the largest voltage),
# the branches come from the sweep direction, and each loop is scaled so that its saturation
# ends sit at ±1. We use the bundled PZT waveform (+16 → −16 → +16 V, 96 steps) from the start,
# so that the network can later be applied to the measurement.

# %%
pzt = load_example("pzt_piezoresponse")
align = AlignmentConfig(field_at_vmax=2.0, saturation_fraction=0.15, remove_imprint=True)   # the recipe's values
axis = waveform_axis(pzt.voltage, align)
x = align_model(loops.field, loops.m_up, loops.m_down, axis, align).astype(np.float32)
print("training curves:", x.shape, "(loops, voltage steps)")

rng = np.random.default_rng(0)
perm = rng.permutation(len(x))
te, tr = np.sort(perm[:1000]), np.sort(perm[1000:])   # 1000 held out, 4000 to train

# %% [markdown]
# ## PCA + shallow MLP
#
# `ParameterRecognizer` follows the scikit-learn habit: `fit(x, y)` then `predict(x)`. With
# `kind="pca_mlp"` it projects each loop on its first 16 principal components and feeds the
# standardized scores to a two-layer tanh network that outputs (J0, δJ, δh).

# %%
cfg = RecognizerConfig(kind="pca_mlp", n_components=16, hidden=[64, 64],
                       train={"lr": 3e-3, "batch_size": 128, "max_epochs": 300, "patience": 30})
t0 = time.perf_counter()
rec = ParameterRecognizer(cfg, PARAMETERS).fit(x[tr], params[tr], seed=0)
print(f"trained in {time.perf_counter() - t0:.1f} s")
r2 = rec.score(x[te], params[te])
print("held-out R²:", {k: round(v, 3) for k, v in r2.items()})

# %%
pred = rec.predict(x[te])
names = ["J0", "δJ", "δh"]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
for i, a in enumerate(axes):
    a.plot(params[te, i], pred[:, i], ".", ms=3, alpha=0.5)
    lim = [params[:, i].min(), params[:, i].max()]
    a.plot(lim, lim, "k--", lw=1)
    a.set(xlabel=f"true {names[i]}", ylabel=f"predicted {names[i]}",
          title=f"{names[i]}: R² = {r2[PARAMETERS[i]]:.3f}")
fig.tight_layout()
plt.show()

# %% [markdown]
# With 4000 training loops and a short training the held-out R² above is already useful; the
# study's 16 000 loops reach 0.965 / 0.987 / 0.951 for J0 / δJ / δh (BENCHMARKS.md, "Ising-model
# loop recognition").
#
# ## Reading one held-out loop
#
# Take one loop the network never saw, predict its parameters, and simulate the model again at
# the predicted values (new disorder realizations, `seed=1`) to see whether it reproduces the loop.

# %%
k = te[0]
p_hat = rec.predict(x[k:k + 1])[0]
p_hat_c = np.clip(p_hat, family.ranges()[:, 0], family.ranges()[:, 1])
resim = simulate_loops([p_hat_c], ising, seed=1)
x_resim = align_model(resim.field, resim.m_up, resim.m_down, axis, align)[0]
print("true      J0, δJ, δh:", np.round(params[k], 3))
print("predicted J0, δJ, δh:", np.round(p_hat, 3))

fig, ax = plt.subplots(figsize=(5, 3.6))
ax.plot(axis.voltage, x[k], "o", ms=3, label="held-out simulated loop")
ax.plot(axis.voltage, x_resim, "-", label="re-simulated at prediction")
ax.set(xlabel="voltage of the PZT waveform [V]", ylabel="aligned response")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## The measured PZT loops (briefly)
#
# The same rule aligns the measured loops: a data-set-wide sign, per-loop offset and scale from
# the saturation ends, and the imprint (the loop's shift along the voltage axis) removed and kept
# as a map. Then the network maps (J0, δJ, δh) over the 60 × 60 grid.

# %%
flat = interpolate_nonfinite(pzt.flat())              # the 3 missing values of the file
meas = align_measured(flat, axis, align)
p_map = rec.predict(meas.loops.astype(np.float32)).reshape(60, 60, 3)
r = family.ranges()
outside = np.any((p_map < r[:, 0]) | (p_map > r[:, 1]), axis=-1)
print("median prediction:", {n: round(float(v), 2) for n, v in zip(names, np.median(p_map.reshape(-1, 3), axis=0))})
print(f"{100 * outside.mean():.0f} % of the pixels fall outside the training ranges")

fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
for i, a in enumerate(axes[:3]):
    im = a.imshow(p_map[..., i], cmap="viridis")
    a.set_title(names[i])
    a.axis("off")
    fig.colorbar(im, ax=a, fraction=0.046)
im = axes[3].imshow(meas.imprint_v.reshape(60, 60), cmap="RdBu_r")
axes[3].set_title("imprint [V]")
axes[3].axis("off")
fig.colorbar(im, ax=axes[3], fraction=0.046)
fig.tight_layout()
plt.show()

# %% [markdown]
# Treat these maps with care. Many measured loops are squarer than most of the simulated
# family, so the network extrapolates there (the share printed above). The study therefore
# re-simulates every pixel's prediction into a fit-quality map, and its primary answer is a
# posterior over (J0, δJ, δh) and the measurement's nuisances with credible intervals and a flag
# for loops the family cannot produce (`analysis.posterior.AmortizedPosterior`). On the full run
# BENCHMARKS.md reports a median PZT prediction of J0 0.51, δJ 0.53, δh 0.32, with 63 % of the
# pixels outside the training ranges.
#
# Next steps:
#
# - `inverscope run recipes/ising_recognition.yaml --out out/ising` (about 6 minutes on 2 cores)
#   for the full study with the posterior, the 1D-CNN and PCA + ridge comparisons and the report;
# - `--data my_beps.h5` to run it on your own BEPS file;
# - `rec.save(path)` / `ParameterRecognizer.load(path)` keep a trained recognizer (safetensors + JSON).
