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
# # Simulate your own structure
#
# This tutorial takes a crystal from ASE to a 4D-STEM data set with inverscope's multislice
# engine. You will learn how to:
#
# - build a specimen in ASE (a SrTiO3 [001] slab) and how a CIF file goes in instead;
# - set up a probe with aberrations, a small probe scan and a pixelated detector;
# - average over frozen phonons and record a thickness series in one propagation;
# - read the 4D result: its axes, its units, one CBED pattern, virtual bright-field and
#   dark-field images;
# - simulate a HAADF image with an annular detector and a position-averaged CBED (PACBED).
#
# The physics is the multislice method of Cowley & Moodie (Acta Cryst. 10, 609, 1957), with
# projected potentials from the scattering factors of Lobato & Van Dyck (Acta Cryst. A 70, 636,
# 2014) and thermal diffuse scattering by the frozen-phonon approximation (Loane, Xu & Silcox,
# Acta Cryst. A 47, 267, 1991). The conventions follow abTEM (Madsen & Susi, Open Research
# Europe 1, 24, 2021).
#
# **Units.** Lengths and positions are in ångström (Å), angles in milliradians (mrad), the beam
# energy in electronvolts (eV; 200 kV is `200e3`). A diffraction pattern has its zero
# frequency at pixel `(n // 2, n // 2)` and its intensities are fractions of the incident beam.
#
# Everything here is small so that it runs in seconds on a laptop CPU; the same code runs at
# full size on a GPU with `device="cuda"`.

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import inverscope as isc

torch.manual_seed(0)
torch.set_num_threads(2)

# %% [markdown]
# ## 1. A structure in ASE
#
# inverscope takes any ASE `Atoms` with an orthogonal cell; the beam travels along z. The
# built-in `isc.perovskite_slab` gives a cubic perovskite viewed down [001]:
# `repeat_xy` unit cells across and as many cells along the beam as come nearest to
# `thickness_angstrom`.

# %%
atoms = isc.perovskite_slab("SrTiO3", repeat_xy=3, thickness_angstrom=40.0)
print(atoms.get_chemical_formula(), "cell [Å]:", atoms.cell.lengths().round(3))

# %% [markdown]
# Your own crystal goes in the same way. Here we build SrTiO3 from its space group with
# `ase.spacegroup.crystal`, write it to a CIF in a temporary folder and read it back with
# `ase.io.read`, exactly as you would read a CIF from the ICSD or the Materials Project.
# `.repeat((nx, ny, nz))` then makes the supercell: a few cells across so that the probe does
# not see its own periodic image, and as many cells along the beam as the specimen is thick.

# %%
from ase.io import read, write
from ase.spacegroup import crystal

unit_cell = crystal(["Sr", "Ti", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)],
                    spacegroup=221, cellpar=[3.905, 3.905, 3.905, 90, 90, 90])
with tempfile.TemporaryDirectory() as tmp:
    write(Path(tmp) / "SrTiO3.cif", unit_cell)
    from_cif = read(Path(tmp) / "SrTiO3.cif").repeat((3, 3, 10))
print(from_cif.get_chemical_formula(), "cell [Å]:", from_cif.cell.lengths().round(3))

# %% [markdown]
# The two descriptions are the same crystal (the built-in slab puts the atomic planes in the
# middle of each slice, which is why we keep using it below). Another orientation, e.g.
# [110], needs a cell whose third axis is along the beam: `ase.build.cut` or
# `ase.build.surface` make one from the unit cell.
#
# ## 2. Grid, potential and probe
#
# The grid samples the cell in real space. Its pixel size decides the largest scattering
# angle the simulation holds: the anti-aliasing aperture keeps 2/3 of the Nyquist
# frequency, so `sampling` of 0.05 Å at 200 kV keeps about 170 mrad. The grid size is rounded
# up to an FFT-friendly number.
#
# The potential is cut into slices along the beam; half a SrTiO3 cell (1.95 Å) puts one
# atomic plane in each slice.

# %%
grid = isc.Grid.from_sampling(np.diag(atoms.cell)[:2], 0.05)
potential = isc.PotentialBuilder(atoms, grid, slice_thickness_angstrom=1.9525)
print(grid, "->", potential.num_slices, "slices")

# %% [markdown]
# The probe: 200 kV, a 20 mrad convergence semiangle, 30 Å of defocus (`defocus_angstrom` is
# `-C10`, so positive means underfocus, abTEM's convention), 1 µm of spherical aberration
# (`C30` = 1e4 Å) and 2 nm of two-fold astigmatism (`C12` = 20 Å, at the angle `phi12` = 0.3
# rad). All polar coefficients from `C10` to `C56` are accepted, in Å, with angles in radians.

# %%
probe = isc.Probe(energy_ev=200e3, semiangle_mrad=20.0, defocus_angstrom=30.0,
                  aberrations={"C30": 1e4, "C12": 20.0, "phi12": 0.3})
print(f"wavelength {probe.wavelength_angstrom:.5f} Å; the grid holds angles up to "
      f"{grid.antialias_cutoff_mrad(probe.wavelength_angstrom):.0f} mrad (anti-aliasing cutoff)")

# %% [markdown]
# ## 3. Scan, detector, frozen phonons and a thickness series
#
# - `isc.grid_scan(start, end, (nx, ny))` rasters the probe over one unit cell (3.905 Å)
#   in 8 × 8 steps. Positions are (x, y) in Å.
# - `isc.PixelatedDetector(max_angle_mrad=80)` keeps the pattern out to 80 mrad at the
#   simulation's own angular pixel size (set `sampling_mrad=` to rebin to your camera's).
# - `isc.FrozenPhonons` displaces every atom by a Gaussian of the given RMS amplitude [Å] per
#   element, `num_configs` times (seeded); the intensities are averaged. Four configurations
#   are few for a converged diffuse background; use more for quantitative work
#   (`recipes/lao_sto_paper.yaml` uses 8).
# - `thicknesses_angstrom` records the exit wave after several depths in one propagation.

# %%
scan = isc.grid_scan((0.0, 0.0), (3.905, 3.905), (8, 8))
phonons = isc.FrozenPhonons({"Sr": 0.08, "Ti": 0.065, "O": 0.085}, num_configs=4, seed=0)
sim = isc.MultisliceSimulation(
    potential, probe, scan, isc.PixelatedDetector(max_angle_mrad=80),
    thicknesses_angstrom=[9.76, 19.525, 29.29, 39.05],
    phonons=phonons,
    device="cuda" if torch.cuda.is_available() else "cpu",
)
result = sim.run()
print("array", result.array.shape, result.array.dtype)
print("thicknesses [Å]", result.thicknesses_angstrom)
print("pixel size [mrad]", np.round(result.sampling_mrad, 3))
print(f"wall time {result.metadata['wall_s']:.1f} s")

# %% [markdown]
# ## 4. Reading the 4D result
#
# `result.array` has the axes **(scan x, scan y, thickness, kx, ky)**:
#
# | axis | length here | unit / calibration |
# |---|---|---|
# | scan x | 8 | `result.positions_angstrom` [Å] |
# | scan y | 8 | `result.positions_angstrom` [Å] |
# | thickness | 4 | `result.thicknesses_angstrom` [Å] (the nearest slice boundary to each request) |
# | kx, ky | pattern pixels | `result.sampling_mrad` [mrad/pixel], zero angle at `n // 2` |
#
# The scan axes come first in the order x, y (abTEM's order). `plt.imshow` puts the first
# axis of an image down the page, so we transpose (`.T`) with `origin="lower"` to draw x to the
# right and y up. Each pattern sums to at most 1: what is missing went beyond the
# anti-aliasing aperture or outside the 80 mrad crop.

# %%
cbed = result.array
nkx, nky = cbed.shape[-2:]
dkx, dky = result.sampling_mrad
kx = (np.arange(nkx) - nkx // 2) * dkx
ky = (np.arange(nky) - nky // 2) * dky
print("total intensity of the first pattern at each thickness:", cbed[0, 0].sum(axis=(-2, -1)).round(3))

fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
for i, ax in enumerate(axes):
    ax.imshow(np.log10(cbed[0, 0, i].T + 1e-7), origin="lower", cmap="magma",
              extent=[kx[0] - dkx / 2, kx[-1] + dkx / 2, ky[0] - dky / 2, ky[-1] + dky / 2])
    ax.set_title(f"t = {result.thicknesses_angstrom[i]:.1f} Å")
    ax.set_xlabel("kx [mrad]")
axes[0].set_ylabel("ky [mrad]")
fig.suptitle("CBED (log10) with the probe on the Sr column at (0, 0)")
plt.show()

# %% [markdown]
# A **virtual detector** is a mask on the pattern summed over its pixels: a disc inside the
# bright-field cone gives a virtual bright-field (BF) image, an annulus outside it a virtual
# annular dark-field (ADF) image. The result is an image over the scan at every thickness.

# %%
KX, KY = np.meshgrid(kx, ky, indexing="ij")
k = np.hypot(KX, KY)
bf_mask = k <= 10.0                      # inside the 20 mrad bright-field disc
adf_mask = (k >= 40.0) & (k <= 80.0)      # outside it
virtual_bf = (cbed * bf_mask).sum(axis=(-2, -1))     # (scan x, scan y, thickness)
virtual_adf = (cbed * adf_mask).sum(axis=(-2, -1))

step = 3.905 / 8                           # scan step [Å]; pixel centres at the probe positions
cell_extent = [-step / 2, 3.905 - step / 2, -step / 2, 3.905 - step / 2]
fig, axes = plt.subplots(2, 4, figsize=(13, 6.5))
for i in range(4):
    for row, (img, name) in enumerate([(virtual_bf, "BF 0-10 mrad"), (virtual_adf, "ADF 40-80 mrad")]):
        ax = axes[row, i]
        ax.imshow(img[..., i].T, origin="lower", cmap="gray", extent=cell_extent)
        ax.set_title(f"{name}, {result.thicknesses_angstrom[i]:.0f} Å", fontsize=9)
        ax.set_xlabel("x [Å]")
axes[0, 0].set_ylabel("y [Å]")
axes[1, 0].set_ylabel("y [Å]")
plt.tight_layout()
plt.show()

# %% [markdown]
# The scan starts on a Sr column at (0, 0); the Ti-O column is at the centre of the cell
# (scan index 4, 4) and a pure O column at (1.95, 0) Å (index 4, 0). Dark-field signal grows
# with the atomic number of the column, the Z-contrast of Pennycook & Jesson (Phys. Rev. Lett.
# 64, 938, 1990); the numbers below are the virtual ADF signal at the thickest exit. An 8 × 8
# scan of one cell is coarse; a real image would use 20-30 positions per cell.

# %%
for name, (i, j) in {"Sr": (0, 0), "Ti-O": (4, 4), "O": (4, 0), "between": (2, 2)}.items():
    print(f"virtual ADF on {name:8s}: {virtual_adf[i, j, -1]:.4f}")
#
# ## 5. HAADF with an annular detector
#
# When you only want integrated signals, `isc.stem_image` with `isc.AnnularDetector`s
# integrates each pattern as it is computed and never keeps the 4D array. A HAADF detector
# needs the large angles: the 0.05 Å grid holds them up to about 170 mrad, so we take 70-160
# mrad. (The `PixelatedDetector` above cropped at 80 mrad; `stem_image` uses the full pattern.)

# %%
images = isc.stem_image(potential, probe, scan,
                        [isc.AnnularDetector.haadf(70.0, 160.0), isc.AnnularDetector.bf(20.0)],
                        thicknesses_angstrom=[39.05], phonons=phonons)
haadf = images.image("haadf")
bf = images.image("bf")
fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
for ax, img, name in zip(axes, [haadf, bf], ["HAADF 70-160 mrad", "BF 0-20 mrad"]):
    im = ax.imshow(img.T, origin="lower", cmap="gray", extent=cell_extent)
    ax.set_title(name)
    ax.set_xlabel("x [Å]")
    fig.colorbar(im, ax=ax, label="fraction of beam")
axes[0].set_ylabel("y [Å]")
plt.tight_layout()
plt.show()
print(f"HAADF on Sr: {haadf[0, 0]:.4f}, between columns: {haadf[2, 2]:.4f} of the incident beam")

# %% [markdown]
# ## 6. Position-averaged CBED
#
# A PACBED averages the CBED patterns over probe positions that cover one unit cell, which
# removes the dependence on where the probe is and leaves the crystal's thickness and tilt
# (LeBeau et al., Ultramicroscopy 110, 118, 2010). `isc.pacbed` records a pattern after every
# slice, so one pass gives the whole thickness series; tutorial 03 uses it to read thickness
# and tilt.

# %%
pac = isc.pacbed(potential, probe, (3.905, 3.905), positions_per_cell=4,
                 detector=isc.PixelatedDetector(max_angle_mrad=40), phonons=phonons)
print("PACBED stack", pac.array.shape, "at", len(pac.thicknesses_angstrom), "thicknesses")
n = pac.array.shape[-1]
d = pac.sampling_mrad[0]
ext = [-(n // 2 + 0.5) * d, (n - n // 2 - 0.5) * d] * 2
fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
for ax, idx in zip(axes, [1, 7, 13, 19]):
    ax.imshow(pac.array[idx].T ** 0.5, origin="lower", cmap="inferno", extent=ext)
    ax.set_title(f"PACBED, t = {pac.thicknesses_angstrom[idx]:.1f} Å")
    ax.set_xlabel("kx [mrad]")
plt.show()

# %% [markdown]
# ## Where to go next
#
# - A result larger than memory streams to a Zarr store chunk by chunk:
#   `sim.run(sink=inverscope.datasets.store.ZarrCBEDWriter(...))` (see the README), or from
#   the command line `inverscope simulate CONFIG.yaml --out DIR` (`recipes/srtio3_demo.yaml`).
# - `isc.cbed_patterns` is differentiable in the atom positions and aberrations, for fitting.
# - `isc.PRISMSimulation` (or `isc.stem_image(..., method="prism")`) is faster for large
#   scans of integrated signals.
# - Tutorial 03 builds a PACBED library; tutorial 10 scales campaigns out over Dask and GPUs.
