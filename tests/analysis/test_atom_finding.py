"""Atom location on analytic blobs, Hungarian matching by hand, classical baseline, neighbour rings."""

import numpy as np
import pandas as pd
import pytest

from inverscope.analysis.atom_finding import (ATOM_COLUMNS, classical_baseline, cluster_unknown, locate_atoms,
                                              match_atoms, name_complexes, neighbour_rings)
from inverscope.core.errors import InverscopeError

SIZE, SIGMA = 96, 1.5


def _blobs(pts, amp=1.0, sigma=SIGMA, size=SIZE):
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((size, size))
    for x, y in pts:
        out += amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return out


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    g = np.arange(10, 90, 12)
    pts = np.array([(x, y) for y in g for x in g], float) + rng.uniform(-0.5, 0.5, (len(g) ** 2, 2))
    cls = rng.integers(0, 2, len(pts))
    m0, m1 = _blobs(pts[cls == 0]), _blobs(pts[cls == 1])
    maps = np.stack([m0, m1, np.clip(1 - m0 - m1, 0, 1)])           # two atom classes + background (last)
    return pts, cls, maps


@pytest.mark.parametrize("refine,tol", [("centroid", 0.05), ("gaussian", 0.02)])
def test_locate_atoms_subpixel(scene, refine, tol):
    pts, cls, maps = scene
    image = 100 * maps[:2].sum(0) + 7.0
    df = locate_atoms(maps, threshold=0.3, min_distance_px=4, refine=refine, image=image, pixel_size_angstrom=0.1)
    assert tuple(df.columns) == ATOM_COLUMNS
    res = match_atoms(df[["x_px", "y_px"]].to_numpy(), pts, 1.0, pred_classes=df["class"], true_classes=cls)
    assert res.n_matched == len(pts) == len(df)
    assert res.distances.max() < tol
    assert res.class_accuracy == 1.0
    assert np.allclose(df["x_angstrom"], 0.1 * df["x_px"])
    if refine == "gaussian":
        assert df["fit_ok"].all() and np.allclose(df["sigma_px"], SIGMA, atol=0.01)


def test_locate_atoms_edges_classes_uncertainty(scene):
    pts, cls, maps = scene
    unc = np.stack([np.full(maps.shape[1:], 0.1 * (k + 1)) for k in range(3)])
    df = locate_atoms(maps, threshold=0.3, min_distance_px=4, uncertainty_maps=unc, class_names=["C", "Si"],
                      pixel_size_angstrom=0.5, edge_angstrom=6.0)        # 12 px from the border
    inside = (pts[:, 0] >= 11.5) & (pts[:, 0] <= SIZE - 12.5) & (pts[:, 1] >= 11.5) & (pts[:, 1] <= SIZE - 12.5)
    assert len(df) == inside.sum() > 0
    assert set(df["class"]) <= {"C", "Si"}
    assert np.allclose(df["uncertainty"], np.where(df["class"] == "C", 0.1, 0.2))
    assert (df["probability"] > 0.85).all()          # peak pixel within 0.5 px of each centre


def test_overlapping_channels_give_one_atom():
    m = _blobs([(20.2, 30.7)])
    maps = np.stack([0.7 * m, 0.3 * m, 1 - m])       # the same atom seen by both channels
    df = locate_atoms(maps, threshold=0.2, min_distance_px=3)
    assert len(df) == 1 and df["class"][0] == 0 and abs(df["probability"][0] - 0.7) < 0.02


def test_locate_atoms_bad_input():
    maps = np.zeros((2, 16, 16))
    maps[0, 3, 3] = np.nan
    with pytest.raises(InverscopeError, match="NaN"):
        locate_atoms(maps)
    with pytest.raises(InverscopeError, match="refine"):
        locate_atoms(np.zeros((2, 16, 16)), refine="bogus")
    with pytest.raises(InverscopeError, match="pixel_size"):
        locate_atoms(np.zeros((2, 16, 16)), edge_angstrom=2.0)
    with pytest.raises(InverscopeError, match="constant"):
        locate_atoms(np.zeros((2, 16, 16)), image=np.ones((16, 16)), refine="gaussian")
    assert len(locate_atoms(np.zeros((2, 16, 16)))) == 0


def test_match_atoms_by_hand():
    true = np.array([[0, 0], [10, 0], [20, 0], [30, 0]], float)
    pred = np.array([[0.3, 0.4], [10, 1.0], [19, 0], [50, 50], [60, 60]], float)   # 3 hits (0.5, 1, 1), 2 false
    r = match_atoms(pred, true, max_distance=1.5)
    assert (r.n_matched, r.n_pred, r.n_true) == (3, 5, 4)
    assert r.precision == pytest.approx(3 / 5) and r.recall == pytest.approx(3 / 4)
    assert r.f1 == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    assert sorted(map(tuple, r.pairs)) == [(0, 0), (1, 1), (2, 2)]
    assert r.median_error == pytest.approx(1.0) and r.rmse == pytest.approx(np.sqrt((0.25 + 1 + 1) / 3))
    assert list(r.unmatched_true) == [3] and list(r.unmatched_pred) == [3, 4]


def test_match_atoms_prefers_more_pairs_then_shorter():
    # greedy nearest would pair pred 0 with true 1 (d=0.5) and leave true 0 unmatched
    true = np.array([[0, 0], [1.0, 0]])
    pred = np.array([[0.5, 0], [1.9, 0]])
    r = match_atoms(pred, true, max_distance=1.0)
    assert r.n_matched == 2 and sorted(map(tuple, r.pairs)) == [(0, 0), (1, 1)]


def test_match_atoms_confusion_and_edge_cases():
    true = np.array([[0, 0], [5, 0], [10, 0]], float)
    pred = true + 0.1
    r = match_atoms(pred, true, 1.0, pred_classes=["C", "Si", "Si"], true_classes=["C", "C", "Si"])
    assert r.confusion.loc["C", "C"] == 1 and r.confusion.loc["C", "Si"] == 1 and r.confusion.loc["Si", "Si"] == 1
    assert r.class_accuracy == pytest.approx(2 / 3)
    empty = match_atoms(np.zeros((0, 2)), true, 1.0)
    assert empty.recall == 0 and np.isnan(empty.precision) and empty.f1 == 0
    with pytest.raises(InverscopeError):
        match_atoms(pred, true, 0.0)
    with pytest.raises(InverscopeError):
        match_atoms(pred, true, 1.0, pred_classes=["C"] * 3)


def test_classical_baseline_finds_noisy_blobs(scene):
    pts, _, _ = scene
    rng = np.random.default_rng(1)
    image = 50 * _blobs(pts) + 10 + rng.normal(0, 5, (SIZE, SIZE))        # peak SNR 10
    for filt in ("gaussian", "log"):
        df = classical_baseline(image, sigma_px=SIGMA, min_distance_px=4, threshold=0.3, filter=filt)
        r = match_atoms(df[["x_px", "y_px"]].to_numpy(), pts, 1.0)
        assert r.f1 == 1.0 and r.rmse < 0.2, (filt, r.summary())
    with pytest.raises(InverscopeError, match="constant"):
        classical_baseline(np.ones((16, 16)), sigma_px=1, min_distance_px=2, threshold=0.5)
    bad = image.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InverscopeError, match="NaN"):
        classical_baseline(bad, sigma_px=1, min_distance_px=2, threshold=0.5)


def test_neighbour_rings_and_complex_names():
    # a Si with 3 C at 1.42 and one with 4 C at 1.9, far apart; second ring at 2.5
    a = 1.42
    tri = [(a * np.cos(t), a * np.sin(t)) for t in np.deg2rad([90, 210, 330])]
    sq = [(50 + 1.9 * np.cos(t), 1.9 * np.sin(t)) for t in np.deg2rad([0, 90, 180, 270])]
    xy = np.array([(0, 0)] + tri + [(0, 2.5)] + [(50, 0)] + sq)
    cls = ["Si", "C", "C", "C", "C", "Si", "C", "C", "C", "C"]
    rings = neighbour_rings(xy, cls, 2.0)
    assert list(rings.columns) == ["class", "n_C", "n_Si", "n_total"]
    assert rings["n_C"][0] == 3 and rings["n_C"][5] == 4 and rings["n_Si"][1] == 1
    two = neighbour_rings(xy, cls, [2.0, 3.0])
    assert two["n_C_ring1"][0] == 3 and two["n_C_ring2"][0] == 1
    names = name_complexes(xy, cls, 2.0, centre_class="Si", neighbour_class="C")
    assert names[0] == "Si1C3" and names[5] == "Si1C4" and names[1] == ""


def test_cluster_unknown_separates_groups():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 0.3, (60, 2)), rng.normal(4, 0.3, (60, 2))])
    res = cluster_unknown(X, max_clusters=4)
    assert res.n_clusters == 2 and len(set(res.labels[:60])) == 1 and len(set(res.labels[60:])) == 1
    db = cluster_unknown(pd.DataFrame(X, columns=["a", "b"]), method="dbscan", eps=0.5)
    assert db.n_clusters == 2
    with pytest.raises(InverscopeError):
        cluster_unknown(np.array([[np.nan, 1.0]]))


def _centroid(img, x, y, r, max_iter=50, tol=1e-4):
    """Reference: the per-point iteration (a window clipped to the image) the vectorised one replaced."""
    h, w = img.shape
    for _ in range(max_iter):
        x0, x1 = max(0, int(np.floor(x - r - 1))), min(w, int(np.ceil(x + r + 1)) + 1)
        y0, y1 = max(0, int(np.floor(y - r - 1))), min(h, int(np.ceil(y + r + 1)) + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        wgt = np.clip(r + 0.5 - np.hypot(xx - x, yy - y), 0.0, 1.0) * np.clip(img[y0:y1, x0:x1], 0.0, None)
        s = wgt.sum()
        if not s > 0:
            break
        nx, ny = float((wgt * xx).sum() / s), float((wgt * yy).sum() / s)
        moved = np.hypot(nx - x, ny - y)
        x, y = nx, ny
        if moved < tol:
            break
    return x, y


def test_vectorised_centroids_equal_the_scalar_iteration():
    from inverscope.analysis.atom_finding import _centroids

    rng = np.random.default_rng(3)
    img = rng.uniform(-0.2, 1.0, (40, 50))
    # starts inside, on the border and just outside (the window is clipped to the image there)
    xs = np.concatenate([rng.uniform(0, 49, 30), [0.0, 49.0, -0.4, 25.0]])
    ys = np.concatenate([rng.uniform(0, 39, 30), [0.0, 39.0, 20.0, 39.4]])
    for r in (1.0, 2.0, 3.5):
        vx, vy = _centroids(img, xs, ys, r)
        for x0, y0, x1, y1 in zip(xs, ys, vx, vy):
            sx, sy = _centroid(img, x0, y0, r)
            assert (x1, y1) == pytest.approx((sx, sy), abs=1e-9)
    zx, zy = _centroids(np.zeros((10, 10)), [3.0], [4.0], 2.0)   # nothing to weigh: the start stays
    assert (zx[0], zy[0]) == (3.0, 4.0)
