"""Tracking: simulated movies with known D and class switching, linking, MOTA, drift."""

import numpy as np
import pandas as pd
import pytest

from inverscope.analysis.tracking import (correct_positions, diffusion_constant, drift_correct, link_atoms, mota,
                                          msd_per_class, simulate_movie, transition_matrix)
from inverscope.core.errors import InverscopeError

P = np.array([[0.9, 0.1], [0.2, 0.8]])
D_TRUE = [0.5, 0.25]                                   # px^2 per frame, per class


@pytest.fixture(scope="module")
def movie():
    return simulate_movie(100, 60, 256, D=D_TRUE, p_transition=P, seed=1, min_separation=15)


@pytest.fixture(scope="module")
def linked(movie):
    obs = movie[["frame", "x", "y", "class"]].sample(frac=1.0, random_state=0)      # order must not matter
    return link_atoms(obs, search_range=5, memory=2)


def test_linking_low_density_mota(movie, linked):
    r = mota(linked, movie, max_distance=1.0)
    assert r.n_true == len(movie) and r.mota >= 0.99, r


def test_diffusion_constant_recovered(movie, linked):
    for tracks in (movie, linked):
        msd = msd_per_class(tracks, pixel_size=1.0, frame_time=1.0, max_lag=6)
        fit = diffusion_constant(msd, n_lags=4).set_index("class")
        for k, d in enumerate(D_TRUE):
            assert abs(fit.loc[k, "D"] - d) < 0.1 * d, fit
            assert 0 < fit.loc[k, "D_se"] < 0.05 * d
    # units: 0.5 A/px and 0.1 s/frame scale D by 0.25 / 0.1
    msd = msd_per_class(movie, pixel_size=0.5, frame_time=0.1, max_lag=4)
    fit = diffusion_constant(msd, offset=True).set_index("class")
    assert abs(fit.loc[0, "D"] / (D_TRUE[0] * 0.25 / 0.1) - 1) < 0.1


def test_transition_matrix_recovered(movie, linked):
    for tracks in (movie, linked):
        probs, counts = transition_matrix(tracks, return_counts=True)
        assert np.abs(probs.to_numpy() - P).max() < 0.05
        assert counts.to_numpy().sum() > 5000


def test_mota_by_hand():
    true = pd.DataFrame({"frame": [0, 0, 1, 1, 2, 2], "particle": [0, 1, 0, 1, 0, 1],
                         "x": [0, 10, 0, 10, 0, 10.0], "y": [0.0] * 6})
    # frame 2: predicted ids swap (2 id switches); frame 1 misses truth 1 and adds a false positive
    pred = pd.DataFrame({"frame": [0, 0, 1, 1, 2, 2], "particle": [5, 6, 5, 7, 6, 5],
                         "x": [0.1, 10, 0, 30, 0, 10.0], "y": [0.0] * 6})
    r = mota(pred, true, max_distance=1.0)
    assert (r.misses, r.false_positives, r.id_switches, r.n_true) == (1, 1, 2, 6)
    assert r.mota == pytest.approx(1 - 4 / 6)
    assert r.motp == pytest.approx(0.1 / 5)


def test_link_gap_closing_with_memory():
    frames = [pd.DataFrame({"x": [10.0 + f, 50.0], "y": [10.0, 50.0 + f]}) for f in range(6)]
    frames[3] = frames[3].iloc[[1]]                  # particle at x ~ 13 missing in frame 3
    kept = link_atoms(frames, search_range=3, memory=2)
    assert kept["particle"].nunique() == 2
    split = link_atoms(frames, search_range=3, memory=0)
    assert split["particle"].nunique() == 3


def test_simulate_movie_vacancies_and_drift():
    mv = simulate_movie(20, 10, (100, 80), D=0.1, drift=(0.5, -0.25), seed=3, vacancy_rate=1.0)
    assert mv["particle"].nunique() > 10 and set(mv["class"]) == {0, 1}      # class 1 = vacancies
    assert np.allclose(mv["x"] - mv["x_sample"], 0.5 * mv["frame"])
    assert np.allclose(mv["y"] - mv["y_sample"], -0.25 * mv["frame"])
    assert mv["x_sample"].between(0, 100).all() and mv["y_sample"].between(0, 80).all()
    fixed = correct_positions(mv, np.array(mv.attrs["drift_px"]))
    assert np.allclose(fixed["x"], mv["x_sample"])
    with pytest.raises(InverscopeError, match="p_transition"):
        simulate_movie(5, 5, 50, p_transition=[[0.5, 0.4], [0.5, 0.5]])


def _render(pts, offset, size=128, sigma=2.0):
    yy, xx = np.mgrid[:size, :size]
    out = np.full((size, size), 5.0)
    for x, y in pts + offset:
        out += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return out


def test_drift_correct_recovers_shift():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-10, 138, (120, 2))
    true = np.array([[0, 0], [1.3, -0.7], [2.9, -1.2], [4.35, -2.05]])
    frames = np.stack([_render(pts, o) + rng.normal(0, 0.05, (128, 128)) for o in true])
    for ref in ("previous", "first"):
        res = drift_correct(frames, reference=ref)
        assert np.abs(res.drift_px - true).max() < 0.1, res.drift_px
    assert res.frames.shape == frames.shape
    # the corrected frames line up with frame 0 away from the edges
    inner = np.s_[10:-10, 10:-10]
    assert np.abs(res.frames[3][inner] - res.frames[0][inner]).max() < 0.3 * np.ptp(frames[0])


def test_drift_correct_bad_frames():
    good = np.random.default_rng(0).random((16, 16))
    with pytest.raises(InverscopeError, match=r"frames\[2\].*shape"):
        drift_correct([good, good, np.ones((16, 15))])
    bad = good.copy()
    bad[1, 1] = np.nan
    with pytest.raises(InverscopeError, match=r"frames\[1\].*NaN"):
        drift_correct([good, bad])
    with pytest.raises(InverscopeError, match=r"frames\[1\].*constant"):
        drift_correct([good, np.zeros((16, 16))])
