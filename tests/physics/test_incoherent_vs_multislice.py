"""Incoherent HAADF model against multislice (PRISM f = 1) HAADF: SrTiO3 [001], reduced case (issue 14).

The full comparison (10-30 nm, frozen phonons) is ``benchmarks/incoherent_vs_multislice.py``
(results in ``benchmarks/results/incoherent_vs_multislice.json``); this is its reduced version:
3 x 3 cells, 10 cells (3.9 nm) thick, static lattice, 200 kV, 20 mrad, HAADF 70-200 mrad,
16 x 16 probe positions over one unit cell (0.244 Å step) offset by (0.37, 0.61) steps so no
column sits on a scan pixel, tiled into a periodic image of the supercell. The model is
:func:`render_incoherent` for the columns of :func:`projected_columns` on the same pixels.

Measured here (static, 3.9 nm): Gaussian-refined Sr and TiO column positions are within
0.01 pm of the truth in both images (the lattice is exact and both columns sit on 4mm sites,
so what is left is the fit on an off-centre window). The bound used, 0.5 pm, leaves a 50x
margin and is still 4x tighter than the 2 pm target; a model shifted by 1 pm fails it.

Intensities need frozen phonons (a static lattice gives TiO/Sr = 0.30 at 3.9 nm against 0.51
with 2 phonon configurations: no thermal diffuse scattering), so the ratio test uses a second run with
2 Einstein configurations. Both runs use PRISM f = 2 to fit the time (the benchmark uses f = 1).
Disc integrals (r = 0.8 Å) of image minus minimum around each column, TiO/Sr. The model uses
the library's weights (projected_columns: n_atoms counts atoms, so a TiO column counts 2 per cell)
with (n, gamma) = (0.924, 0.445) fitted once over 10, 20, 30 nm (4 phonon configurations, f = 1) in
the benchmark; outside HAADF's usual n = 1.6-2.0 (see the benchmark JSON). Measured here: model
TiO/Sr +11.4 % off multislice; tolerance 15 %. n = 0.5 (+61 %) and n = 1.6 (-33 %) miss it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inverscope.analysis.atom_finding import classical_baseline
from inverscope.core.grid import Grid
from inverscope.physics.imaging.incoherent import render_incoherent
from inverscope.physics.multislice.annular import AnnularDetector, stem_image
from inverscope.physics.multislice.phonons import FrozenPhonons
from inverscope.physics.multislice.potentials import PotentialBuilder
from inverscope.physics.multislice.probe import Probe
from inverscope.physics.multislice.scan import Scan
from inverscope.physics.structures import perovskite_slab
from inverscope.physics.structures.atomic_2d import projected_columns

torch.set_num_threads(2)

A = 3.905
CELLS, DEPTH, RASTER, OFFSET = 3, 10, 16, (0.37, 0.61)
STEP = A / RASTER
ORIGIN = (A + OFFSET[0] * STEP, A + OFFSET[1] * STEP)
PROBE = Probe(200e3, 20.0)
INTERPOLATION = 2
#: (n, gamma) fitted by benchmarks/incoherent_vs_multislice.py over 10, 20, 30 nm (4 phonon configs)
FIT_N, FIT_GAMMA = 0.924, 0.445
#: measured bound on Sr / TiO column offsets [pm] (see module docstring)
POSITION_BOUND_PM = 0.5
#: tolerance on the model's TiO/Sr ratio relative to multislice at 3.9 nm
RATIO_TOL = 0.15


@pytest.fixture(scope="module")
def atoms():
    return perovskite_slab("SrTiO3", CELLS, DEPTH * A)


def haadf(atoms, phonons=None):
    ext = float(atoms.cell[0, 0])
    pot = PotentialBuilder(atoms, Grid((ext, ext), (288, 288)), A / 2)
    xs = ORIGIN[0] + np.arange(RASTER) * STEP
    ys = ORIGIN[1] + np.arange(RASTER) * STEP
    pos = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
    res = stem_image(pot, PROBE, Scan(pos, (RASTER, RASTER)), AnnularDetector.haadf(), method="prism",
                     interpolation=INTERPOLATION, phonons=phonons)
    cell = res.images["haadf"][..., -1].T  # (row = y, col = x)
    return np.tile(cell, (CELLS, CELLS))


@pytest.fixture(scope="module")
def multislice_image(atoms):
    return haadf(atoms)


@pytest.fixture(scope="module")
def phonon_image(atoms):
    return haadf(atoms, FrozenPhonons({"Sr": 0.0887, "Ti": 0.0746, "O": 0.0947}, 2, seed=1))


@pytest.fixture(scope="module")
def columns(atoms):
    cols = projected_columns(atoms, z_exponent=1.0)
    per_atom = cols["z_sum"] / cols["n_atoms"]
    cls = np.where(per_atom > 30, "Sr", np.where(per_atom > 10, "TiO", "O"))
    period = CELLS * A
    xpx = ((cols["x"] - ORIGIN[0]) % period) / STEP
    ypx = ((cols["y"] - ORIGIN[1]) % period) / STEP
    return cols, cls, xpx, ypx


def model(atoms, n, gamma, shift=(0.0, 0.0)):
    cols = projected_columns(atoms, z_exponent=n)
    cols = dict(cols, x=cols["x"] + shift[0], y=cols["y"] + shift[1])
    img, _ = render_incoherent([cols], (CELLS * RASTER, CELLS * RASTER), STEP, PROBE, thickness_exponent=gamma,
                               origin_angstrom=ORIGIN, oversample=4, dtype=torch.float64)
    return img[0].numpy()


def max_offset_pm(img, cls, xpx, ypx, pad=12):
    df = classical_baseline(np.pad(img, pad, mode="wrap"), sigma_px=0.27 / STEP, min_distance_px=4, threshold=0.01,
                            refine="gaussian", window_px=3)
    det = df[["x_px", "y_px"]].to_numpy() - pad
    worst = 0.0
    for x, y in zip(xpx[cls != "O"], ypx[cls != "O"]):
        d = np.hypot(det[:, 0] - x, det[:, 1] - y)
        assert d.min() * STEP < 0.5, "column not detected"
        worst = max(worst, float(d.min()) * STEP * 100)
    return worst


def tio_sr_ratio(img, cls, xpx, ypx, radius=0.8):
    h, w = img.shape
    base = img - img.min()
    yy, xx = np.mgrid[0:h, 0:w]
    sums = {"Sr": [], "TiO": []}
    for c, x, y in zip(cls, xpx, ypx):
        if c in sums:
            dx = (xx - x + w / 2) % w - w / 2
            dy = (yy - y + h / 2) % h - h / 2
            sums[c].append(base[dx * dx + dy * dy <= (radius / STEP) ** 2].sum())
    return float(np.mean(sums["TiO"]) / np.mean(sums["Sr"]))


def test_column_positions_agree(atoms, multislice_image, columns):
    _, cls, xpx, ypx = columns
    assert max_offset_pm(multislice_image, cls, xpx, ypx) <= POSITION_BOUND_PM
    assert max_offset_pm(model(atoms, FIT_N, FIT_GAMMA), cls, xpx, ypx) <= POSITION_BOUND_PM
    # a model whose columns are 1 pm off must fail the same bound
    assert max_offset_pm(model(atoms, FIT_N, FIT_GAMMA, shift=(0.01, 0.0)), cls, xpx, ypx) > POSITION_BOUND_PM


def test_tio_sr_ratio_agrees(atoms, phonon_image, columns):
    _, cls, xpx, ypx = columns
    ms = tio_sr_ratio(phonon_image, cls, xpx, ypx)
    assert 0.1 < ms < 0.8
    fitted = tio_sr_ratio(model(atoms, FIT_N, FIT_GAMMA), cls, xpx, ypx)
    assert abs(fitted / ms - 1) <= RATIO_TOL, (fitted, ms)
    for n in (0.5, 1.6):  # n = 1.6 (bottom of the usual HAADF range) must miss at this gamma
        wrong = tio_sr_ratio(model(atoms, n, FIT_GAMMA), cls, xpx, ypx)
        assert abs(wrong / ms - 1) > RATIO_TOL, (n, wrong, ms)
    assert math.isfinite(ms)
