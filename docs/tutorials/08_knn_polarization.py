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
# # KNN polarization
#
# Can a network read the local polarization direction of a ferroelectric from a single 4D-STEM
# diffraction pattern, and what happens when the microscope is not quite the one it was trained
# on? Martinc et al. benchmarked a custom CNN, VGG, ResNet and PCA + k-nearest neighbours on
# simulated (K,Na)NbO3 patterns (M. Martinc, G. Dražić, A. Kokalj, K. Žiberna, J. Roknić,
# M. Poberžnik, S. Džeroski and A. Benčan Golob, "Benchmarking machine learning approaches for
# polarization mapping in ferroelectrics using 4D-STEM", arXiv:2603.15582, 2026). They found high
# accuracy on idealized synthetic patterns and a large gap between simulation and experiment.
#
# In this tutorial you will
#
# 1. simulate the 8 in-plane polarization classes of (K0.5Na0.5)NbO3 viewed down [001]pc as
#    4D-STEM, at a tiny size;
# 2. see how little the patterns differ, and why the centre of mass (CoM) and Friedel-asymmetry
#    baselines struggle;
# 3. train the paper's small CNN for a few epochs, and the study's linear baseline (logistic
#    regression on the pixels), and test both on probe positions they never saw;
# 4. apply microscope shifts (detector rotation, descan, dose) and watch the prediction degrade.
#
# Everything here is much smaller than the study (`inverscope run recipes/knn_quick.yaml --out
# out/knn`: 20 nm thick, 4 K/Na configurations × 144 positions, three architectures, several
# seeds, 18 shifted conditions, defect scenes); the measured figures of that run are in
# BENCHMARKS.md, section "KNN polarization benchmark".

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from inverscope.analysis.com import centre_of_mass, friedel_baseline, friedel_moments
from inverscope.analysis.polar_models import polar_input
from inverscope.datasets.polar_campaign import PolarCampaignConfig, simulate_variant
from inverscope.datasets.shifts import SHIFT_GRID, apply_shift
from inverscope.models.nets import build_net
from inverscope.physics.structures.polar import projection_classes
from inverscope.analysis.com import recentre_patterns as recentre
from inverscope.training.regimes import RegimeConfig, fit_regime, predict_classes

torch.set_num_threads(2)

# %% [markdown]
# ## Simulating the polar variants
#
# (K,Na)NbO3 has 12 <110>pc polarization variants. Down [001]pc the component of P along the beam
# leaves no trace in the patterns, so the 12 fall into 8 *projection classes*, 45° apart; the
# label to learn is the class. We simulate one variant per class.
#
# `PolarCampaignConfig` holds everything that shapes the data (the same fields as
# `recipes/polar_campaign_quick.yaml`), and `simulate_variant(cfg, i)` runs the multislice for
# variant `i` and returns its patterns `(exits, positions, P, P)`. Here: 200 kV, 24 mrad, 12 nm
# thick, a probe grid over one pc cell, and 32 × 32 px patterns of 3.2 mrad (±51 mrad: the bright
# disc and the first dark-field ring).
#
# To stay tiny we use a *virtual crystal*: every A site holds the average of K and Na
# (`a_site="virtual"`), so every pc cell is identical and a 2 × 2 cell supercell is exact. The
# study uses random K/Na on 4 × 4 cell supercells, with training and test sets of different K/Na
# orders (`a_site="random"`, `seed` picks the order); BENCHMARKS.md explains why random K/Na on
# 2 × 2 cells would be an artefact. Training patterns sit on a 10 × 10 probe grid, test patterns
# on a 7 × 7 grid of other positions.

# %%
VARIANTS = ["[101]", "[110]", "[011]", "[-110]", "[-101]", "[-1-10]", "[0-11]", "[1-10]"]
classes = projection_classes((0, 0, 1))
print("classes:", dict(zip(classes.labels, classes.angles_deg)))

base = dict(variants=VARIANTS, na_fraction=0.5, a_site="virtual", repeat_xy=2, thicknesses_nm=[12.0],
            energy_kev=200, semiangle_mrad=24, scan_area="cell", pattern_pixels=32,
            detector_sampling_mrad=3.2, sampling_angstrom=0.08, compute={"device": "cpu"})


def simulate(positions_per_cell):
    """Patterns (n, 32, 32) of all 8 variants on a k x k probe grid over one cell, and their classes (n,)."""
    cfg = PolarCampaignConfig(**base, positions_per_cell=positions_per_cell)
    x = np.concatenate([simulate_variant(cfg, i)[0] for i in range(len(VARIANTS))])
    y = np.repeat([classes.class_of(v) for v in VARIANTS], positions_per_cell ** 2)
    return x, y


t0 = time.perf_counter()
x_train, y_train = simulate(10)                     # 8 classes x 100 probe positions
x_test, y_test = simulate(7)                        # 8 classes x 49 other probe positions
print(f"simulated {len(x_train)} training and {len(x_test)} test patterns in {time.perf_counter() - t0:.1f} s")

# %% [markdown]
# ## How the patterns differ
#
# At one probe position the patterns of the 8 classes differ visibly inside the bright disc:
# the intensity is pushed to one side, and the side turns with the polarization. The difference from the class average and the Friedel
# asymmetry I(k) − I(−k) (zero for a centrosymmetric projection) make it visible.

# %%
n_pos = 10 ** 2
pos = 55                                                        # one probe position, the same in every class
pats = x_train[:8 * n_pos].reshape(8, n_pos, 32, 32)[:, pos]    # (class, 32, 32), K/Na configuration 0
mean_pat = pats.mean(0)
fig, axes = plt.subplots(3, 4, figsize=(11, 8.2))
for c, a in enumerate(axes[0]):
    a.imshow(np.log10(pats[c] + 1e-6), cmap="inferno")
    a.set_title(f"class {classes.labels[c]} ({classes.angles_deg[c]:.0f}°)", fontsize=9)
for c, a in zip([0, 2, 4, 6], axes[1]):
    d = pats[c] - mean_pat
    a.imshow(d, cmap="RdBu_r", vmin=-abs(d).max(), vmax=abs(d).max())
    a.set_title(f"{classes.labels[c]} minus mean of all 8", fontsize=9)
for c, a in zip([0, 2, 4, 6], axes[2]):
    f = pats[c][1:, 1:] - pats[c][1:, 1:][::-1, ::-1]           # centre (16, 16): -k is index 32 - k
    a.imshow(f, cmap="PuOr", vmin=-abs(f).max(), vmax=abs(f).max())
    a.set_title(f"{classes.labels[c]}: I(k) − I(−k)", fontsize=9)
for a in axes.flat:
    a.set_xticks([]), a.set_yticks([])
fig.tight_layout()
plt.show()
print(f"largest difference from the class average: {abs(pats - mean_pat).max() / pats.max():.1%} of the brightest pixel")

# %% [markdown]
# ### Baselines: centre of mass and Friedel moments
#
# The classic reading of polarization from 4D-STEM is the CoM shift of the pattern. Relative to
# the mean over the data set, the CoM of every pattern below is coloured by its class: at a
# single probe position it is dominated by where the probe sits relative to the atomic columns,
# not by the polarization, so the classes overlap. Averaged over the scan of a cell, the CoM of
# each class does turn with the polarization, but it is far smaller than its spread over probe
# positions (printed below the figure), so per-pattern CoM sectors read little more than chance.
#
# `friedel_moments` turns the odd (polar) part of each pattern into a few dimensionless features
# and `friedel_baseline` fits a logistic regression on them.

# %%
com = centre_of_mass(x_train, centre_px=(16, 16)).px
com = com - com.mean(0)
fig, ax = plt.subplots(1, 2, figsize=(10, 4.2))
sc = ax[0].scatter(com[:, 1], -com[:, 0], c=y_train, cmap="hsv", s=6, vmin=0, vmax=8)
ax[0].set(xlabel="CoM kx [px]", ylabel="CoM −ky [px]", title="CoM per pattern, relative to the mean", aspect="equal")
fig.colorbar(sc, ax=ax[0], label="class")
means = np.array([com[y_train == c].mean(0) for c in range(8)])
ax[1].quiver(np.zeros(8), np.zeros(8), means[:, 1], -means[:, 0], color=[plt.cm.hsv(c / 8) for c in range(8)],
             angles="xy", scale_units="xy", scale=1, width=0.012)
for c in range(8):
    ax[1].text(1.2 * means[c, 1], -1.2 * means[c, 0], classes.labels[c], fontsize=8, ha="center", va="center")
lim = 1.45 * np.abs(means).max()
ax[1].set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title="CoM averaged over each class [px]")
fig.tight_layout()
plt.show()
print(f"class-averaged CoM: at most {np.abs(means).max():.1e} px; spread of the CoM over probe positions "
      f"{com.std(0).mean():.2f} px")

f_train = friedel_moments(x_train, centre_px=(16, 16))
f_test = friedel_moments(x_test, centre_px=(16, 16))
friedel = friedel_baseline(f_train, y_train)
print(f"Friedel moments + logistic regression: held-out accuracy {np.mean(friedel.predict(f_test) == y_test):.1%} "
      f"(chance 12.5 %)")

# %% [markdown]
# ## The paper's CNN
#
# The networks see `log1p(pattern / mean(pattern))`, standardized per detector pixel with the
# training set's mean and standard deviation (`polar_input`; a model file stores them). As in the
# study, patterns are first recentred on the data set's mean CoM (`recentre`), which undoes a
# uniform descan. `polarization_cnn` is the paper's custom CNN (three 3 × 3 convolutions, two
# max-pools, a 512-wide dense layer); `fit_regime` trains it under the classification regime
# with a seeded 10 % validation split (the paper-style random split).

# %%
xtr, mean, std = polar_input(recentre(x_train)[0], per_pixel=True)
xte = polar_input(recentre(x_test)[0], mean, std)[0]

rng = np.random.default_rng(0)
val = rng.random(len(xtr)) < 0.1
torch.manual_seed(0)
net = build_net("polarization_cnn", {"input_size": 32, "head": "classification", "outputs": 8})
cfg = RegimeConfig(regime="classification", n_classes=8, epochs=3, batch_size=32, lr=1e-3, seed=0)
res = fit_regime(net, xtr[~val], y_train[~val], xtr[val], y_train[val], cfg, log=None)
acc_cnn = float(np.mean(predict_classes(net, xte, res)[0] == y_test))
print(f"CNN: {res.epochs_run} epochs on {int((~val).sum())} patterns in {res.wall_s:.1f} s; random-split validation {res.val_accuracy:.1%}, "
      f"held-out positions {acc_cnn:.1%} (chance 12.5 %)")

# %% [markdown]
# Three epochs on so few patterns are far too few for this network: it has not learned yet. The
# study trains it for 20 epochs on 4608 patterns and reads 98.6 % on the paper-style random split
# and 82.5 % on held-out positions and K/Na order (BENCHMARKS.md); a tutorial cannot afford that on
# a laptop CPU. The study's *linear* baseline, logistic regression on the standardized pixels,
# trains in seconds and shows that the polar signal is, to a large degree, linear in the pattern:

# %%
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

linear = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500))
t0 = time.perf_counter()
linear.fit(xtr.reshape(len(xtr), -1), y_train)
acc_lin = float(np.mean(linear.predict(xte.reshape(len(xte), -1)) == y_test))
print(f"logistic regression on pixels: fitted in {time.perf_counter() - t0:.1f} s; held-out positions {acc_lin:.1%}")

# %% [markdown]
# ## Microscope shifts
#
# `inverscope.datasets.shifts.SHIFT_GRID` holds the standard shifts the study applies to the
# held-out patterns: descan (the whole pattern moved on the detector), a detector rotation, a
# finite dose (Poisson noise), blur and background. `apply_shift` applies one; the patterns then
# go through the same recentring and input transform as a measurement would.

# %%
shifts = ["none", "rotation_2deg", "rotation_5deg", "descan_2px", "dose_1e4"]
acc_shift = {"linear": {}, "CNN (3 epochs)": {}}
for name in shifts:
    xs = apply_shift(x_test, SHIFT_GRID[name].model_copy(update={"seed": 1}))
    xs = polar_input(recentre(xs.astype(np.float32))[0], mean, std)[0]
    acc_shift["linear"][name] = float(np.mean(linear.predict(xs.reshape(len(xs), -1)) == y_test))
    acc_shift["CNN (3 epochs)"][name] = float(np.mean(predict_classes(net, xs, res)[0] == y_test))
    print(f"{name:>14}: linear {acc_shift['linear'][name]:6.1%}   CNN {acc_shift['CNN (3 epochs)'][name]:6.1%}")

fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
for k, (model, accs) in enumerate(acc_shift.items()):
    ax[0].bar(np.arange(len(shifts)) + 0.4 * k - 0.2, [100 * accs[s] for s in shifts], width=0.4, label=model)
ax[0].axhline(12.5, color="k", ls=":", lw=1, label="chance")
ax[0].set_xticks(range(len(shifts)), shifts, rotation=20)
ax[0].set(ylabel="held-out accuracy [%]", title="accuracy under microscope shifts")
ax[0].legend(fontsize=8)
rot = apply_shift(x_test[:1], SHIFT_GRID["rotation_5deg"])[0]
d = rot - x_test[0]
ax[1].imshow(d, cmap="RdBu_r", vmin=-abs(d).max(), vmax=abs(d).max())
ax[1].set_title("one pattern: rotated 5° minus original")
ax[1].set_xticks([]), ax[1].set_yticks([])
fig.tight_layout()
plt.show()

# %% [markdown]
# A model that reads faint asymmetries in the dark field is fragile: a detector rotation of a
# few degrees, a descan corrected by interpolation (itself a smoothing) or shot noise moves
# exactly those pixels. Compare the bars above with the unshifted ones. In the full benchmark the CNN falls from 82.5 % to 60.1 % / 33.3 % under a 2° / 5°
# rotation and to 15.4 % at 1e4 electrons per pattern (BENCHMARKS.md). The study also scores
# the gap without labels (`datasets.shifts.gap_score`) and checks how well that ranks the drops.
#
# ## Going further
#
# - `inverscope run recipes/knn_quick.yaml --out out/knn` runs the whole benchmark (CNN, VGG-11,
#   ResNet-18, PCA + kNN, CoM, Friedel and linear baselines; the shift matrix; defect scenes) and
#   writes `metrics.json`, `report.html` and the trained networks in `out/knn/models`;
#   `recipes/knn_regimes.yaml` compares the paper's three training regimes, and
#   `recipes/knn_paper.yaml` is the paper-scale run for a GPU node.
# - `inverscope predict out/knn/models/cnn scan.hspy --out DIR [--bin 4] [--crop 32]` maps
#   polarization over your own 4D-STEM file; `analysis.polar_models.load_polar_model` does the same
#   from Python.
# - Measured accuracies, times and what they mean: BENCHMARKS.md, "KNN polarization benchmark".
