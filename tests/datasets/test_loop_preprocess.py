"""Loop preprocessing for data a study was not tuned on: waveform, outliers, scaling, complex responses."""

import h5py
import numpy as np
import pytest

from inverscope.core.errors import InverscopeError
from inverscope.datasets.io.beps import load_beps, load_example
from inverscope.datasets.loop_preprocess import analyse_waveform, find_outlier_pixels, format_check, prepare_loops
from inverscope.datasets.preprocess import published_preprocessing
from inverscope.datasets.synthetic_beps import other_layout_beps, write_nsid


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    s = other_layout_beps(seed=3)
    path = write_nsid(tmp_path_factory.mktemp("beps") / "other.h5", s["response"], s["voltage"])
    return s, path


def _bipolar(q=16, v=8.0):
    r = np.arange(q) / q
    return v * np.concatenate([r, 1 - r, -r, r - 1])


def test_bundled_loops_keep_the_published_preprocessing():
    d = load_example()
    p = prepare_loops(d.loops, d.voltage)
    ref, scaler = published_preprocessing(d.flat())
    assert p.report["scaling"]["chosen"] == "global" and p.report["outliers"]["count"] == 0
    np.testing.assert_allclose(p.x, ref, atol=1e-5)
    assert p.scaler.scale == pytest.approx(scaler.std)
    assert p.report["waveform"]["cycles"] == 1 and p.report["waveform"]["start"] == "+max falling"


def test_waveforms_of_any_shape_and_phase():
    w = analyse_waveform(_bipolar())
    assert w.start == "mid rising" and w.turning_points == [16, 48] and w.up.sum() == 32
    # the bipolar waveform started a quarter cycle later: same branches, rotated
    w2 = analyse_waveform(np.roll(_bipolar(), -16))
    assert w2.start == "+max falling" and np.array_equal(w2.up, np.roll(w.up, -16))
    assert analyse_waveform(np.concatenate([_bipolar(), _bipolar()])).as_dict()["cycles"] == 2
    for bad, msg in ((np.linspace(0, 1, 10), "never turns"), (np.r_[_bipolar(), _bipolar()[:10]], "not a closed loop"),
                     (np.r_[0.0, 5, 10, 9.8, 9.9, 10, 5, 0], "branch sweeps"), (np.ones(8), "constant")):
        with pytest.raises(InverscopeError, match=msg):
            analyse_waveform(bad)


def test_complex_file_needs_a_component_and_projection_finds_the_phase(other):
    s, path = other
    with pytest.raises(InverscopeError, match="complex.*component="):
        load_beps(path)
    d = load_beps(path, component="projected")
    assert d.source.startswith("hdf5-nsid") and d.loops.shape == (50, 50, 64)
    assert d.extra["projection_phase_rad"] == pytest.approx(s["phase_rad"], abs=0.05)
    np.testing.assert_array_equal(d.voltage, s["voltage"])
    amp = load_beps(path, component="amplitude").loops
    np.testing.assert_allclose(amp, np.abs(s["response"]))
    np.testing.assert_allclose(load_beps(path, component="phase").loops, np.angle(s["response"]))
    real = load_example()
    np.savez(path.parent / "real.npz", loops=real.loops[:4, :4], voltage=real.voltage)
    with pytest.raises(InverscopeError, match="'phase' needs a complex response"):
        load_beps(path.parent / "real.npz", component="phase")


def test_usid_compound_real_imaginary(tmp_path):
    z = np.random.default_rng(0).standard_normal((6, 20)) + 1j * np.random.default_rng(1).standard_normal((6, 20))
    comp = np.empty(z.shape, dtype=[("r", "f4"), ("i", "f4")])
    comp["r"], comp["i"] = z.real, z.imag
    with h5py.File(tmp_path / "usid.h5", "w") as f:
        g = f.create_group("Measurement_000/Channel_000")
        g["Raw_Data"] = comp
        g["Position_Indices"] = np.array([[c, r] for r in range(2) for c in range(3)])
        g["Spectroscopic_Values"] = np.concatenate([np.linspace(0, 5, 10), np.linspace(5, 0, 10)])[None]
    with pytest.raises(InverscopeError, match="complex"):
        load_beps(tmp_path / "usid.h5")
    d = load_beps(tmp_path / "usid.h5", component="imag")
    np.testing.assert_allclose(d.loops.reshape(6, 20), z.imag.astype(np.float32), rtol=1e-6)


def test_heavy_tailed_outliers_are_found_and_do_not_own_the_scaling(other):
    s, path = other
    d = load_beps(path, component="projected")
    p = prepare_loops(d.loops, d.voltage)
    truth = s["outliers"].ravel()
    assert (p.outliers & truth).sum() >= 0.95 * truth.sum()          # recall
    assert (p.outliers & ~truth).sum() <= 0.005 * truth.size         # false alarms
    assert p.report["scaling"]["chosen"] in ("per_pixel", "robust")
    inl = p.x[~p.outliers]
    span = np.percentile(inl, 95, axis=1) - np.percentile(inl, 5, axis=1)
    assert 0.3 < np.median(span) < 5 and np.percentile(span, 99) < 20   # unit-sized, outliers not setting the scale
    # one global standardization lets the outliers own the variance: the inliers shrink to a sliver
    g = prepare_loops(d.loops, d.voltage, scaling="global", outlier_threshold=np.inf)
    assert np.median(np.percentile(g.x, 95, axis=1) - np.percentile(g.x, 5, axis=1)) < 0.1
    assert "outlier pixels: " in format_check(p.report) and "scaling: " in format_check(p.report)


def test_per_pixel_scaling_when_amplitudes_vary():
    rng = np.random.default_rng(0)
    v = _bipolar()
    up = v > np.roll(v, 1)
    base = np.tanh((v + np.where(up, -2, 2)) / 1.5)
    gain = np.exp(rng.uniform(np.log(0.1), np.log(10), 400))
    loops = gain[:, None] * base[None] + 0.01 * rng.standard_normal((400, v.size))
    p = prepare_loops(loops.reshape(20, 20, -1), v)
    assert p.report["scaling"]["chosen"] == "per_pixel" and p.report["outliers"]["count"] == 0
    # the 5-95 % span tracks the gain; the absolute noise (0.01) inflates it by up to 9 % at gain 0.1,
    # 2 % at 0.3, so the check is on loops with gain > 1 (noise < 1 % of the loop)
    strong = gain > 1
    ratio = (p.scale / gain)[strong]
    np.testing.assert_allclose(ratio / ratio.mean(), 1, rtol=0.01)
    # raw = x * scale + offset, except the 3 points per loop the Savitzky-Golay cleaning replaced
    back = p.x * p.scale[:, None] + p.offset[:, None]
    assert (np.abs(back - loops) > 1e-4 * gain[:, None]).sum(axis=1).max() <= 3


def test_bad_loops():
    v = _bipolar()
    with pytest.raises(InverscopeError, match="all 16 pixels are outliers|no pixel has a loop"):
        prepare_loops(np.zeros((4, 4, v.size)), v)
    with pytest.raises(InverscopeError, match="complex"):
        prepare_loops(np.ones((2, 2, v.size)) * 1j, v)
    with pytest.raises(InverscopeError, match="scaling"):
        prepare_loops(np.random.default_rng(0).standard_normal((4, 4, v.size)), v, scaling="minmax")
    with pytest.raises(InverscopeError, match="64 values for loops of 10 steps"):
        prepare_loops(np.ones((2, 2, 10)), v)
    mask, info = find_outlier_pixels(np.vstack([np.sin(np.arange(64))[None] * np.ones((50, 1)),
                                                np.full((1, 64), np.nan)]))
    assert mask[-1] and info["missing"] == 1 and mask.sum() == 1
