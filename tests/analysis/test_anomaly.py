"""Per-position anomaly scores and their evaluation (analysis.anomaly)."""

import json

import numpy as np
import pytest

from inverscope.analysis.anomaly import (auroc, class_prototypes, knn_distance, neighbourhood_disagreement,
                                         pca_reconstruction_error, prototype_distance, score_all,
                                         softmax_uncertainty, wall_position_error)
from inverscope.core.errors import InverscopeError

ROWS, COLS, WALL = 32, 32, 16          # domain 0: columns < 16, domain 1: columns >= 16
K = 16                                 # pattern side [px]
PIX = 3.9                              # scan step [Å]


def spot(r, c, width=1.5):
    y, x = np.mgrid[:K, :K]
    return np.exp(-0.5 * ((y - r) ** 2 + (x - c) ** 2) / width ** 2)


CLASS_PATTERNS = np.stack([spot(8, 6) + 0.3 * spot(8, 8, 4), spot(8, 10) + 0.3 * spot(8, 8, 4)])
VACANCY_PATTERN = spot(4, 8) + 0.3 * spot(8, 8, 4)          # outside the span of the two classes
PROTO = np.eye(2, 8) + 0.2


@pytest.fixture(scope="module")
def scan():
    rng = np.random.default_rng(7)
    cls = (np.arange(COLS)[None, :] >= WALL).astype(int).repeat(ROWS, axis=0)
    vac = np.zeros((ROWS, COLS), bool)
    for r, c in [(3, 4), (8, 25), (12, 9), (17, 28), (21, 3), (25, 20), (28, 11), (30, 27)]:
        vac[r, c] = True
    wall = np.zeros((ROWS, COLS), bool)
    wall[:, WALL - 1:WALL + 1] = True                          # the wall lies between columns 15 and 16
    patterns = CLASS_PATTERNS[cls] + rng.normal(0, 0.05, (ROWS, COLS, K, K))
    patterns[vac] = VACANCY_PATTERN + rng.normal(0, 0.05, (vac.sum(), K, K))
    logits = 3.0 * np.stack([1 - 2 * cls, 2 * cls - 1], -1) + rng.normal(0, 0.5, (ROWS, COLS, 2))
    logits[vac] = 0.0
    proba = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    emb = PROTO[cls] + rng.normal(0, 0.05, (ROWS, COLS, 8))
    emb[vac] = rng.normal(0, 1, (vac.sum(), 8))
    ytrain = np.repeat([0, 1], 100)
    train = CLASS_PATTERNS[ytrain] + rng.normal(0, 0.05, (200, K, K))
    emb_train = PROTO[ytrain] + rng.normal(0, 0.05, (200, 8))
    return dict(cls=cls, vac=vac, wall=wall, patterns=patterns, proba=proba, emb=emb, train=train,
                ytrain=ytrain, emb_train=emb_train)


def one_line_error(fn, *args, **kw):
    with pytest.raises(InverscopeError) as e:
        fn(*args, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_disagreement_peaks_on_the_wall(scan):
    labels = scan["proba"].argmax(-1)
    d = neighbourhood_disagreement(labels)
    assert d.shape == (ROWS, COLS)
    assert auroc(d, scan["wall"], ignore=scan["vac"]).auroc > 0.95
    np.testing.assert_allclose(d[10, WALL - 1:WALL + 1], 3 / 8)      # interior wall: 3 of 8 neighbours differ
    assert d[10, 2] == 0
    w = wall_position_error(d, scan["wall"], PIX, search_radius_px=3)
    assert w.max_angstrom == 0 and w.n_lines == ROWS                 # flat top over 15 and 16 -> 15.5
    assert wall_position_error(d, scan["wall"], PIX).max_angstrom > PIX   # whole rows: a vacancy can win


def test_pca_error_and_knn_flag_vacancies(scan):
    vac, wall = scan["vac"], scan["wall"]
    pca = pca_reconstruction_error(scan["train"], scan["patterns"], n_components=4)
    knn = knn_distance(scan["train"], scan["patterns"], k=5)
    knn_emb = knn_distance(scan["emb_train"], scan["emb"], k=5)
    for score in (pca, knn, knn_emb):
        assert score.shape == (ROWS, COLS)
        assert auroc(score, vac).auroc > 0.95
    assert pca[vac].min() > pca[~vac].max()                           # cleanly separated here
    assert not wall[vac].any()


def test_pca_is_chunked_and_accepts_flat_input(scan):
    full = pca_reconstruction_error(scan["train"], scan["patterns"], n_components=3)
    flat = scan["patterns"].reshape(ROWS * COLS, K, K)
    chunked = pca_reconstruction_error(scan["train"], flat, n_components=3, scan_shape=(ROWS, COLS), chunk=37)
    np.testing.assert_allclose(chunked, full, rtol=1e-12)
    exact = pca_reconstruction_error(CLASS_PATTERNS, CLASS_PATTERNS[None], n_components=1)
    np.testing.assert_allclose(exact, 0, atol=1e-12)                  # two patterns: mean + 1 component


def test_softmax_uncertainty_is_maximal_for_a_uniform_row():
    p = np.array([[0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    u = softmax_uncertainty(p, scan_shape=(2, 2))
    assert u.shape == (2, 2) and np.argmax(u) == 1
    np.testing.assert_allclose(u.ravel(), [0.1, 2 / 3, 0.5, 0.0])
    h = softmax_uncertainty(p.reshape(2, 2, 3), kind="entropy")
    assert np.argmax(h) == 1 and h[0, 1] == pytest.approx(1.0) and h[1, 1] == 0.0
    assert "sum to 1" in one_line_error(softmax_uncertainty, 3 * p, scan_shape=(2, 2))   # logits, not proba


def test_prototype_distance_is_zero_at_a_prototype(scan):
    proto = class_prototypes(scan["emb_train"], scan["ytrain"])
    assert proto.shape == (2, 8)
    e = np.stack([proto[0], 5 * proto[1], -proto[0], proto[0] + proto[1]])
    d = prototype_distance(e, proto, scan_shape=(1, 4))
    np.testing.assert_allclose(d[0, :2], 0, atol=1e-12)
    assert d[0, 2] > 1.0 and 0 < d[0, 3] < d[0, 2]
    dm = prototype_distance(scan["emb"], proto)
    assert auroc(dm, scan["vac"]).auroc > 0.95
    assert "zero vector" in one_line_error(prototype_distance, np.zeros((1, 1, 8)), proto)


def test_wall_position_error_of_a_ridge():
    cols = np.arange(COLS)
    truth = np.zeros((ROWS, COLS), bool)
    truth[:, 20] = True
    on = np.tile(np.exp(-0.5 * ((cols - 20) / 2.0) ** 2), (ROWS, 1))
    shifted = np.tile(np.exp(-0.5 * ((cols - 22) / 2.0) ** 2), (ROWS, 1))
    w0 = wall_position_error(on, truth, PIX)
    assert w0.median_angstrom == 0 and w0.max_angstrom == 0 and w0.orientation == "vertical"
    w2 = wall_position_error(shifted, truth, PIX)
    assert w2.median_angstrom == pytest.approx(2 * PIX) and w2.max_angstrom == pytest.approx(2 * PIX)
    assert w2.bias_angstrom == pytest.approx(2 * PIX) and w2.n_lines == ROWS
    wh = wall_position_error(shifted.T, truth.T, PIX)                 # a horizontal wall
    assert wh.orientation == "horizontal" and wh.median_angstrom == pytest.approx(2 * PIX)


def test_circular_disagreement_wraps_around_the_period():
    d = neighbourhood_disagreement(np.array([[350.0, 10.0]]), circular_period=360.0)
    np.testing.assert_allclose(d, [[20.0, 20.0]])
    a = np.full((3, 3), 180.0)
    a[1, 1] = 0.0
    d = neighbourhood_disagreement(a, circular_period=360.0)
    assert d[1, 1] == pytest.approx(180.0)
    axis = neighbourhood_disagreement(np.array([[175.0, 5.0]]), circular_period=180.0)   # axes, not directions
    np.testing.assert_allclose(axis, [[10.0, 10.0]])


def test_auroc_of_perfect_and_reversed_scores():
    truth = np.zeros((8, 8), bool)
    truth[2:4, 3:6] = True
    score = truth.astype(float) + 0.01 * np.arange(64).reshape(8, 8) / 64
    r = auroc(score, truth)
    assert r.auroc == 1.0 and r.n_positive == 6 and r.n_negative == 58
    assert (r.fpr[0], r.tpr[0], r.fpr[-1], r.tpr[-1]) == (0, 0, 1, 1)
    assert auroc(-score, truth).auroc == 0.0
    json.dumps(r.as_dict())


def test_bad_inputs_raise_one_line_errors(scan):
    score, truth = np.zeros((4, 4)), np.zeros((4, 4), bool)
    truth[0, 0] = True
    assert "does not match" in one_line_error(auroc, score, np.zeros((4, 5), bool))
    assert "AUROC needs both" in one_line_error(auroc, score, np.zeros((4, 4), bool))
    assert "AUROC needs both" in one_line_error(auroc, score, truth, ignore=~truth)
    nan = score.copy()
    nan[1, 1] = np.nan
    assert "NaN" in one_line_error(auroc, nan, truth)
    assert "NaN" in one_line_error(wall_position_error, nan, truth, PIX)
    train = scan["emb_train"][:4]
    assert "k:" in one_line_error(knn_distance, train, scan["emb"], k=5)
    assert "scan_shape" in one_line_error(knn_distance, train, scan["emb"].reshape(-1, 8), k=2)
    assert "positions" in one_line_error(knn_distance, train, scan["emb"].reshape(-1, 8), k=2, scan_shape=(3, 3))
    assert "shape" in one_line_error(pca_reconstruction_error, scan["train"], scan["emb"])   # (8,) vs (16, 16)
    assert "n_components" in one_line_error(pca_reconstruction_error, scan["train"][:3], scan["patterns"],
                                            n_components=5)
    bad = scan["patterns"][:2, :2].copy()
    bad[0, 0, 0, 0] = np.nan
    assert "NaN" in one_line_error(pca_reconstruction_error, scan["train"], bad)
    assert "size" in one_line_error(neighbourhood_disagreement, truth, size=4)
    assert "all False" in one_line_error(wall_position_error, score, np.zeros((4, 4), bool), PIX)


def test_score_all_computes_what_the_inputs_allow(scan):
    truth = {"wall": scan["wall"], "vacancy": scan["vac"]}
    rep = score_all(proba=scan["proba"], embeddings=scan["emb"],
                    prototypes=class_prototypes(scan["emb_train"], scan["ytrain"]),
                    patterns=scan["patterns"], patterns_train=scan["train"], features=scan["emb"],
                    features_train=scan["emb_train"], truth=truth, n_components=4,
                    line_defects=["wall"], pixel_size_angstrom=PIX, wall_search_radius_px=3)
    assert set(rep.maps) == {"disagreement", "softmax_max", "softmax_entropy", "prototype_distance",
                             "pca_error", "knn_distance"}
    assert set(rep.skipped) == {"angle_disagreement"}
    assert rep.auroc["disagreement"]["wall"] > 0.95
    for name in ("softmax_max", "prototype_distance", "pca_error", "knn_distance"):
        assert rep.auroc[name]["vacancy"] > 0.95, name
    assert set(rep.auroc["pca_error"]) == {"wall", "vacancy", "all"}
    assert rep.wall_errors["disagreement"]["wall"].max_angstrom == 0
    assert rep.wall_errors["pca_error"]["wall"].n_lines == ROWS
    json.dumps(rep.as_dict(curves=True))
    assert "pca_error" in rep.table()
    small = score_all(proba=scan["proba"])
    assert set(small.maps) == {"disagreement", "softmax_max", "softmax_entropy"} and small.auroc == {}
    assert "reserved" in one_line_error(score_all, proba=scan["proba"], truth={"all": scan["vac"]})
