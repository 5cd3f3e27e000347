# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Apply a model to your own file
#
# A network trained on simulations is only useful if it reads data recorded on *your*
# microscope: another camera length, a pattern that is off-centre and rotated, noise, a
# background, JPEG artefacts, a file format of its own. This tutorial trains a small PACBED
# thickness network (the method of Xu & LeBeau, *Ultramicroscopy* 193, 2018) on simulations,
# makes camera frames the way a microscope records them, and applies the model in three lines:
#
# ```python
# import inverscope as isc
# model = isc.Model("out/pacbed/models/pacbed_cnn")
# pred = model.predict("my_frame.png")
# ```
#
# You will see what `predict` found in each file (where the disc is, how large, how rotated,
# which camera calibration that implies), what it chose, and the thickness with its
# uncertainty and unit. The same `Model(...).predict(...)` applies every model inverscope
# trains: LAO/STO stack models and KNN polarization models on 4D-STEM scans, atom finding on
# images and movies.

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import inverscope as isc

torch.manual_seed(0)
torch.set_num_threads(2)
work = Path(tempfile.mkdtemp(prefix="inverscope-tutorial-"))

# %% [markdown]
# ## 1. A model trained on simulations
#
# The PACBED study (`inverscope run recipes/pacbed_sto.yaml`) simulates a library of SrTiO3
# [001] PACBED patterns at 200 kV and 13.6 mrad over thickness and tilt, turns them into
# camera-like training examples and trains a CNN. Here we run the same study at a size that
# trains in about a minute on two cores: untilted only, 2-40 nm in 2 nm steps, one
# frozen-phonon configuration, 800 examples, 8 epochs. The real recipe's figures are in
# BENCHMARKS.md.

# %%
from inverscope.studies.pacbed import Recipe, run_study

recipe = Recipe.model_validate({
    "name": "pacbed_tutorial",
    "library": {"compound": "SrTiO3", "energy_kev": 200, "semiangle_mrad": 13.6, "thickness_nm": [2, 40, 2],
                "tilt_max_mrad": 0.0, "phonon_configs": 1, "repeat_xy": 3, "sampling_angstrom": 0.1,
                "positions_per_cell": 3},
    "n_train": 800, "n_validation": 80,
    "train": {"lr": 0.002, "batch_size": 64, "epochs": 8, "seed": 0},
    "evaluation": {"n_heldout": 8, "thickness_range_nm": [4, 40], "mc_passes": 8},
})
metrics = run_study(recipe, work / "pacbed", log=lambda line: None)
print(f"held-out frames: thickness MAE {metrics['heldout']['cnn']['thickness_mae_nm']:.1f} nm "
      f"(template matching {metrics['heldout']['templates']['thickness_mae_nm']:.1f} nm)")

# %% [markdown]
# A model is two files: `pacbed_cnn.safetensors` (the weights; loading never unpickles) and
# `pacbed_cnn.json`, which says what the network expects. `isc.Model` reads both:

# %%
model = isc.Model(work / "pacbed" / "models" / "pacbed_cnn")
print(model)
print("takes:", model.data_kind)
print("trained for:", model.meta["input"]["compound"], model.meta["input"]["energy_ev"] / 1e3, "kV,",
      model.meta["input"]["semiangle_mrad"], "mrad")

# %% [markdown]
# ## 2. "Your" files
#
# Now frames the model never saw. The patterns come from the study's held-out library (other
# frozen-phonon configurations than the training library), at 24 nm, and are recorded by a
# camera unlike the training ones: a 256 x 256 px, 8-bit detector at 0.6 mrad/px, the
# pattern 11 px off-centre and rotated by 27 degrees, detector blur, a background offset,
# and shot noise at 1e6 electrons. One frame is saved as PNG, one as JPEG (quality 75), and
# one at the same settings but a dose of 1e5 electrons.

# %%
import zarr
from PIL import Image

from inverscope.datasets.degrade import CameraModel, degrade

held = zarr.open_group(str(work / "pacbed" / "heldout.zarr"), mode="r")
thick_nm = np.asarray(held.attrs["thicknesses_angstrom"]) / 10
sampling = float(held.attrs["sampling_mrad"][0])
k = int(np.argmin(abs(thick_nm - 24)))
pattern = held["patterns"][0, k]
rng = np.random.default_rng(3)
camera = dict(frame_shape=(256, 256), mrad_per_px=0.6, centre_px=(139.3, 117.8), rotation_deg=27.0,
              peak_counts=230, saturation_counts=255, bit_depth=8, blur_sigma_px=0.8, background_counts=6)
frames = {
    "frame.png": degrade(pattern, CameraModel(**camera, dose_e_per_pattern=1e6), rng, sampling_mrad=sampling)[0],
    "frame.jpg": degrade(pattern, CameraModel(**camera, dose_e_per_pattern=1e6, jpeg_quality=75), rng,
                         sampling_mrad=sampling)[0],
    "low_dose.png": degrade(pattern, CameraModel(**camera, dose_e_per_pattern=1e5), rng, sampling_mrad=sampling)[0],
}
for name, frame in frames.items():
    Image.fromarray(frame).save(work / name, quality=95)
print(f"true thickness {thick_nm[k]:.1f} nm")

fig, ax = plt.subplots(1, 4, figsize=(12, 3.2))
ax[0].imshow(pattern, cmap="magma")
ax[0].set_title(f"simulated, {sampling:.2f} mrad/px")
for a, (name, frame) in zip(ax[1:], frames.items()):
    a.imshow(frame, cmap="gray")
    a.set_title(name)
for a in ax:
    a.set_xticks([]), a.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Three lines
#
# `predict` takes a list of files (PNG, JPEG, TIFF, `.npy`, and 4D-STEM files, whose scan is
# averaged into PACBEDs window by window):

# %%
pred = model.predict([work / name for name in frames])
print(pred)

# %% [markdown]
# One row per pattern, with what registration found in the frame (disc centre and radius,
# the camera calibration that radius implies, the rotation), the thickness and tilt with the
# network's MC-dropout spread, and warnings:

# %%
table = pred.tables["predictions"]
cols = ["thickness_nm", "thickness_sd_nm", "centre_row_px", "centre_col_px", "radius_px", "mrad_per_px",
        "rotation_deg", "saturated_fraction"]
print(table.assign(source=[Path(s).name for s in table["source"]]).set_index("source")[cols].round(3).to_string())
print({c: pred.units[c] for c in cols})

# %% [markdown]
# Compare with what the camera did: centre (139.3, 117.8) px, 0.6 mrad/px, 27 degrees. The
# registration reads the calibration from the disc radius, since a frame carries none; if you
# know it, pass `mrad_per_px=`. The four-fold symmetry of SrTiO3 [001] leaves the rotation
# defined modulo 90 degrees.
#
# The uncertainty of each quantity is under `pred.uncertainty`, keyed `table/column`:

# %%
thickness = table["thickness_nm"].to_numpy()
spread = pred.uncertainty["predictions/thickness_nm"]
fig, ax = plt.subplots(figsize=(5, 3))
ax.errorbar(range(len(thickness)), thickness, yerr=2 * spread, fmt="o", capsize=4, label="network ± 2 sd")
ax.axhline(thick_nm[k], color="k", ls="--", label="true")
ax.set_xticks(range(len(thickness)), list(frames))
ax.set_ylabel(f"thickness [{pred.units['thickness_nm']}]")
ax.legend()
plt.tight_layout()
plt.show()
print("warnings:", *sorted({w for ws in table["warnings"] for w in ws}), *pred.warnings, sep="\n  ")

# %% [markdown]
# Read these numbers as what *this* small model does with *these* frames, not as the
# method's accuracy: it was trained for a minute on one frozen-phonon configuration. The
# warnings say where an answer is outside what the model was trained on, or what it had to
# assume (here the semiangle and voltage, which an image file does not record: state them
# with `semiangle_mrad=` and `energy_kev=`, and a mismatch is refused rather than read).
#
# ## 4. Arrays and the command line
#
# An array works too (a 2D pattern, or a 4D scan as numpy, Zarr or Dask); it is written to
# a temporary file block by block and read by the same code as a file:

# %%
from_array = model.predict(frames["frame.png"])
print(np.isclose(from_array.tables["predictions"]["thickness_nm"][0], table["thickness_nm"][0], rtol=1e-5))

# %% [markdown]
# `out=` keeps what `inverscope predict` writes (tables as CSV and JSON, one figure per
# pattern, `summary.json`); the command line does the same:
#
# ```text
# inverscope predict out/pacbed/models/pacbed_cnn frame.png frame.jpg low_dose.png --out predicted/
# ```

# %%
kept = model.predict(work / "frame.png", out=work / "predicted", semiangle_mrad=13.6, energy_kev=200)
print(sorted(p.name for p in kept.out.rglob("*") if p.is_file()))
plt.figure(figsize=(9, 4))
plt.imshow(plt.imread(next((kept.out / "figures").glob("*.png"))))
plt.axis("off")
plt.show()

# %%
import shutil

shutil.rmtree(work, ignore_errors=True)
