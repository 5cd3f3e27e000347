"""Incoherent HAADF model against multislice (PRISM f = 1) HAADF: SrTiO3 [001], reduced case (issue 14).

The full comparison (10-30 nm, 12 frozen-phonon configurations) is
``benchmarks/incoherent_vs_multislice.py`` (results in
``benchmarks/results/incoherent_vs_multislice.json``); this is its reduced version: 3 x 3 cells,
26 cells (10.2 nm) thick, 200 kV, 20 mrad, HAADF 70-200 mrad, 16 x 16 probe positions over one
unit cell (0.244 Å step) offset by (0.37, 0.61) steps so no column sits on a scan pixel, tiled
into a periodic image of the supercell, PRISM f = 1 (f = 2 is off by a factor 2 in TiO/Sr at
10 nm: the spread probe outgrows the f = 2 window). The model is :func:`render_incoherent` for
the columns of :func:`projected_columns` on the same pixels.

Positions (static lattice): Gaussian-refined Sr and TiO column positions are within 0.01 pm of
the truth in both images (the lattice is exact and both columns sit on 4mm sites, so what is
left is the fit on an off-centre window). The bound used, 0.5 pm, leaves a 50x margin and is
still 4x tighter than the 2 pm target; a model shifted by 1 pm fails it.

Intensities need frozen phonons (a static lattice has no thermal diffuse scattering: TiO/Sr 0.30
against 0.51 with phonons at 3.9 nm), so the ratio test uses a second run with 2 Einstein
configurations. Disc integrals (r = 0.8 Å) of image minus minimum around each column, TiO/Sr.
The model uses the saturating column law ``W (1 - exp(-sum Z^n / W))`` with (n, W) = (1.89,
4.22e4) fitted in the benchmark to the TiO/Sr ratios at 10, 20 and 30 nm (12 configurations).
Measured here: multislice 0.508 (2 configurations; 0.484 with 12), model 0.484 (-4.7 %);
tolerance 10 % (the issue's target). The same n without saturation (about -19 %) and n = 1
(+56 %) miss it. About 40 s on 2 cores.
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
CELLS, DEPTH, RASTER, OFFSET = 3, 26, 16, (0.37, 0.61)
STEP = A / RASTER
ORIGIN = (A + OFFSET[0] * STEP, A + OFFSET[1] * STEP)
PROBE = Probe(200e3, 20.0)
INTERPOLATION = 1
#: (n, W) of the saturating column law fitted by benchmarks/incoherent_vs_multislice.py to the
#: TiO/Sr ratios at 10, 20, 30 nm (12 phonon configurations, PRISM f = 1)
FIT_N, FIT_W = 1.890, 4.22e4
#: measured bound on Sr / TiO column offsets [pm] (see module docstring)
POSITION_BOUND_PM = 0.5
#: tolerance on the model's TiO/Sr ratio relative to multislice at 10 nm (the issue's 10 %)
RATIO_TOL = 0.10


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


def model(atoms, n, w_sat, shift=(0.0, 0.0)):
    cols = projected_columns(atoms, z_exponent=n)
    cols = dict(cols, x=cols["x"] + shift[0], y=cols["y"] + shift[1])
    img, _ = render_incoherent([cols], (CELLS * RASTER, CELLS * RASTER), STEP, PROBE, saturation_weight=w_sat,
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
    assert max_offset_pm(model(atoms, FIT_N, FIT_W), cls, xpx, ypx) <= POSITION_BOUND_PM
    # a model whose columns are 1 pm off must fail the same bound
    assert max_offset_pm(model(atoms, FIT_N, FIT_W, shift=(0.01, 0.0)), cls, xpx, ypx) > POSITION_BOUND_PM


def test_tio_sr_ratio_agrees(atoms, phonon_image, columns):
    _, cls, xpx, ypx = columns
    ms = tio_sr_ratio(phonon_image, cls, xpx, ypx)
    assert 0.1 < ms < 0.8
    fitted = tio_sr_ratio(model(atoms, FIT_N, FIT_W), cls, xpx, ypx)
    assert abs(fitted / ms - 1) <= RATIO_TOL, (fitted, ms)
    # the same n without saturation (plain Z^n) and a Z^1 law must miss
    for n, w_sat in ((FIT_N, 0.0), (1.0, FIT_W)):
        wrong = tio_sr_ratio(model(atoms, n, w_sat), cls, xpx, ypx)
        assert abs(wrong / ms - 1) > RATIO_TOL, (n, w_sat, wrong, ms)
    assert math.isfinite(ms)
