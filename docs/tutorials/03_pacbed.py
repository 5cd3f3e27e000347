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
# # PACBED thickness and tilt
#
# A position-averaged convergent-beam electron diffraction pattern (PACBED) is the mean of the
# CBED patterns over the probe positions of a unit cell. It no longer depends on where the
# probe was, only on the crystal, its thickness, its tilt and the probe, so comparing a
# measured PACBED with simulations reads the specimen thickness and mistilt (LeBeau, Findlay,
# Allen & Stemmer, Ultramicroscopy 110, 118, 2010). Xu & LeBeau (Ultramicroscopy 188, 59, 2018)
# trained a convolutional network on simulated PACBEDs to do the reading automatically on
# experimental frames.
#
# In this tutorial you will:
#
# - simulate a small PACBED library of SrTiO3 [001] over thickness and tilt, as a resumable
#   store job;
# - turn a simulated pattern into a realistic camera frame (off-centre, rotated, at another
#   camera length, with shot noise, blur, background, 8 bits and JPEG) with
#   `inverscope.datasets.degrade`;
# - register the frame back onto crystal axes (disc centre, calibration, rotation) and
#   read its thickness and tilt by template matching against the library.
#
# Sizes are cut down so that this runs in well under a minute on a laptop CPU: thicknesses to
# 20 nm, tilts to 2 mrad, two frozen-phonon configurations and a 4-cell supercell (the
# study's recipe uses 6 cells, 4 configurations and 60 nm).

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import inverscope as isc
from inverscope.analysis.registration import register_pacbed, resample_to_crystal
from inverscope.analysis.template_matching import TemplateMatcher
from inverscope.datasets.degrade import CameraModel, degrade
from inverscope.datasets.pacbed_library import PACBEDLibraryConfig, load_library, run_library

torch.set_num_threads(2)
workdir = tempfile.TemporaryDirectory()   # everything this notebook writes goes here
tmp = Path(workdir.name)

# %% [markdown]
# ## 1. A PACBED library
#
# `PACBEDLibraryConfig` describes the library: 200 kV, a 13.6 mrad convergence semiangle as in
# Xu & LeBeau, thicknesses 1-20 nm every nm, tilts on a 1 mrad grid up to 2 mrad. Only the
# octant 0 ≤ ty ≤ tx is simulated: the 4mm symmetry of the [001] perovskite gives every other
# tilt direction. Each tilt is one multislice pass that records all thicknesses. The pattern
# covers ±2.5 α on 65 × 65 pixels.
#
# `run_library` writes a Zarr store like every inverscope campaign: locked while it runs,
# each tilt checksummed, and resumed (not redone) when run again.

# %%
cfg = PACBEDLibraryConfig(energy_kev=200, semiangle_mrad=13.6, thickness_nm=(1, 20, 1),
                          tilt_max_mrad=2.0, tilt_step_mrad=1.0, phonon_configs=2,
                          repeat_xy=4, sampling_angstrom=0.1, positions_per_cell=4, seed=0)
print("tilts (tx, ty) [mrad]:", cfg.tilts_mrad().tolist())
stats = run_library(cfg, tmp / "library.zarr")
print(f"simulated {stats['simulated']} tilts in {stats['wall_s']:.1f} s")

lib = load_library(tmp / "library.zarr")
library = lib["patterns"]                                       # (tilt, thickness, kx, ky)
tilts = lib["tilts_mrad"]                                       # (tilt, 2): (tx, ty) [mrad]
thick = lib["thicknesses_angstrom"]                             # [Å]
sampling = lib["sampling_mrad"]                                 # [mrad/px]
print("library", library.shape, f"{sampling:.3f} mrad/px")

# %% [markdown]
# The thickness fringes inside the bright-field disc and the intensity between the discs
# change quickly with thickness; a tilt shifts the intensity inside the disc off-centre.

# %%
n = library.shape[-1]
ext = [-(n // 2 + 0.5) * sampling, (n - n // 2 - 0.5) * sampling] * 2
show_t = [2, 7, 12, 19]                     # thickness indices
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
for row, ti in enumerate([0, len(tilts) - 1]):
    for ax, zi in zip(axes[row], show_t):
        ax.imshow(np.sqrt(library[ti, zi]).T, origin="lower", cmap="inferno", extent=ext)
        ax.set_title(f"{thick[zi] / 10:.1f} nm, tilt {tilts[ti].tolist()} mrad", fontsize=9)
        ax.set_xlabel("kx [mrad]")
    axes[row, 0].set_ylabel("ky [mrad]")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. A held-out pattern, off the library's grid
#
# To test the matching honestly we simulate a pattern the library does not contain: other
# frozen-phonon displacements (another seed) and a tilt of (1.3, 0.4) mrad, between the
# library's tilt points. `isc.pacbed` records the whole thickness series in one pass (one
# pattern per slice, every 1.95 Å).

# %%
a = 3.905
atoms = isc.perovskite_slab("SrTiO3", repeat_xy=cfg.repeat_xy, thickness_angstrom=thick[-1])
grid = isc.Grid.from_sampling(np.diag(atoms.cell)[:2], cfg.sampling_angstrom)
potential = isc.PotentialBuilder(atoms, grid, slice_thickness_angstrom=a / 2)
probe = isc.Probe(200e3, 13.6)
true_tilt = (1.3, 0.4)
held = isc.pacbed(potential, probe, (a, a), positions_per_cell=4, detector=cfg.detector(),
                  phonons=isc.FrozenPhonons(cfg.phonon_sigmas_angstrom, num_configs=2, seed=1000), tilt_mrad=true_tilt)
print("held-out series", held.array.shape, "thicknesses", held.thicknesses_angstrom[[0, -1]], "Å")

# %% [markdown]
# ## 3. From a simulation to a camera frame
#
# `degrade` puts the pattern on a 256 × 256 detector in this order: geometry (camera length
# as mrad per pixel, the centre off the middle, a rotation), dose and Poisson shot noise,
# detector blur, gain, background, clipping at saturation, 8-bit quantization and JPEG
# compression. Every random number comes from the generator passed in, so the frame is
# reproducible. `truth` records what was done.

# %%
camera = CameraModel(frame_shape=(256, 256), mrad_per_px=0.55, centre_px=(118.0, 140.0), rotation_deg=27.0,
                     dose_e_per_pattern=3e5, blur_sigma_px=0.8, peak_counts=230, background_counts=6,
                     background_smooth_counts=4, saturation_counts=255, bit_depth=8, jpeg_quality=75)
rng = np.random.default_rng(7)
zi_true = int(np.argmin(np.abs(held.thicknesses_angstrom - 120.0)))     # 12 nm
frame, truth = degrade(held.array[zi_true], camera, rng, sampling_mrad=held.sampling_mrad[0])
print("frame", frame.shape, frame.dtype, "| truth:", {k: truth[k] for k in ("centre_px", "rotation_deg", "mrad_per_px")})

# %% [markdown]
# ## 4. Registration
#
# `register_pacbed` finds the bright-field disc (centre and radius from the edge), calibrates
# the frame from the known convergence semiangle (radius = α), finds the rotation from the
# pattern's mirror symmetry, and resamples the frame onto the grid the library is compared on:
# ±2 α on 48 × 48 pixels, crystal axes along the grid. A few untilted library patterns as
# `reference` tell the [100] mirrors from the [110] ones.
#
# The library goes onto the same grid with `resample_to_crystal`.

# %%
out_shape = (48, 48)
templates = np.stack([[resample_to_crystal(library[t, z], sampling, 13.6, crop_alpha=2.0, out_shape=out_shape)[0]
                       for z in range(library.shape[1])] for t in range(library.shape[0])])
reference = templates[0, [4, 9, 14, 19]]
reg = register_pacbed(frame, 13.6, crop_alpha=2.0, out_shape=out_shape, reference=reference)
print(f"centre found {np.round(reg.centre_px, 1)} px (true {truth['centre_px']})")
print(f"calibration {reg.mrad_per_px:.4f} mrad/px (true {truth['mrad_per_px']}), "
      f"{100 * (reg.mrad_per_px / truth['mrad_per_px'] - 1):+.1f} %")
print(f"rotation {reg.rotation_deg:.1f}° (true {truth['rotation_deg']}°, defined modulo 90°)")
print("warnings:", reg.warnings or "none")

fig, axes = plt.subplots(1, 3, figsize=(12, 4))
axes[0].imshow(frame, cmap="gray")
axes[0].add_patch(plt.Circle(reg.centre_px[::-1], reg.radius_px, fill=False, color="tab:red"))
axes[0].set_title("camera frame (8 bit, JPEG) and the disc found")
axes[1].imshow(np.sqrt(reg.pattern), cmap="inferno")
axes[1].set_title("registered onto crystal axes")
axes[2].imshow(np.sqrt(templates[0, 11]), cmap="inferno")
axes[2].set_title(f"library: {thick[11] / 10:.0f} nm, untilted")
for ax in axes:
    ax.set_xticks([]), ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Template matching
#
# `TemplateMatcher` compares the registered pattern with every library pattern by the
# normalized cross-correlation of their square roots, over the eight operations of the 4mm
# point group and a few small residual rotations, leaving out saturated pixels. The best
# template gives the thickness and the tilt, folded into the octant the library holds.

# %%
matcher = TemplateMatcher(templates, tilts, thick)
match = matcher.match(reg.pattern, ~(reg.saturated | reg.outside))
print(f"true: {held.thicknesses_angstrom[zi_true] / 10:.2f} nm, tilt {true_tilt} mrad")
print(f"read: {match.thickness_angstrom / 10:.2f} nm, tilt {match.tilt_mrad} mrad, correlation {match.correlation:.3f}")

# %% [markdown]
# Now every held-out thickness from 5 to 20 nm, each through its own camera (the frames differ
# in their noise only), registration and matching. The library's 1 nm steps and its 1 mrad
# tilt grid bound how well the templates can do: the nearest library tilt to (1.3, 0.4) is
# (1, 0).

# %%
rows = []
for zi in np.flatnonzero((held.thicknesses_angstrom >= 50) & (held.thicknesses_angstrom <= 200)):
    fr, _ = degrade(held.array[zi], camera, rng, sampling_mrad=held.sampling_mrad[0])
    r = register_pacbed(fr, 13.6, crop_alpha=2.0, out_shape=out_shape, reference=reference)
    m = matcher.match(r.pattern, ~(r.saturated | r.outside))
    rows.append((held.thicknesses_angstrom[zi] / 10, m.thickness_angstrom / 10, *m.tilt_mrad,
                 100 * (r.mrad_per_px / camera.mrad_per_px - 1)))
rows = np.array(rows)
err = rows[:, 1] - rows[:, 0]
print(f"{len(rows)} frames: thickness MAE {np.abs(err).mean():.2f} nm, median |error| {np.median(np.abs(err)):.2f} nm, "
      f"{np.mean(np.abs(err) <= 1.0):.0%} within 1 nm")
print(f"calibration error: median {np.median(np.abs(rows[:, 4])):.1f} %, max {np.abs(rows[:, 4]).max():.1f} %")
nearest = np.all(rows[:, 2:4] == (1.0, 0.0), axis=1)
print(f"tilt read as the nearest library tilt (1, 0) mrad in {nearest.mean():.0%} of the frames; "
      f"all tilts read: {sorted({(float(tx), float(ty)) for tx, ty in rows[:, 2:4]})}")

fig, ax = plt.subplots(figsize=(4.5, 4.2))
ax.plot(rows[:, 0], rows[:, 1], "o", ms=4)
ax.plot([5, 20], [5, 20], "k--", lw=1)
ax.set_xlabel("true thickness [nm]")
ax.set_ylabel("template match [nm]")
ax.set_title("held-out frames, registered")
plt.tight_layout()
plt.show()

# %% [markdown]
# The printout says how well this went. Thickness is the strong signal; the tilt is read
# less reliably, because a tilt of about 1 mrad changes a thin pattern only a little and the
# library's 1 mrad grid cannot express (1.3, 0.4) at all. These frames are also easy ones: one
# camera, thin specimens (to 20 nm, where the disc edge is clean) and the same engine on both
# sides. The study's test frames are harder (camera lengths of 0.45-0.7 mrad/px, rotations of
# 0-90°, thicknesses to 60 nm).
#
# ## 6. The study: a network beside the templates
#
# ```bash
# inverscope run recipes/pacbed_sto.yaml --out out/pacbed
# ```
#
# builds a 1-60 nm library with 4 phonon configurations and a held-out twin, draws 5000
# camera-like training examples (half of them put through the registration itself), trains a
# residual CNN with Monte-Carlo-dropout uncertainty and evaluates it beside template matching
# on 96 held-out raw frames. BENCHMARKS.md (2026-11-29, 2 CPU cores) records 383 s end to end,
# a held-out thickness MAE of 2.28 nm for the network (templates: 9.36 nm, median 1.95 nm;
# their mean is carried by misregistered frames) and a tilt MAE of 0.41 mrad (templates 1.00).
# Both miss the targets the project set (1 nm and 0.3 mrad); BENCHMARKS.md discusses why
# (registration of the calibration on thick patterns at 13.6 mrad).
#
# A trained model reads your own frames:
# `inverscope predict out/pacbed/models/pacbed_cnn frame.png --semiangle-mrad 13.6 --energy-kev 200 --out DIR`.

# %%
workdir.cleanup()
