"""`inverscope predict` resamples 4D-STEM patterns by angle to the model's detector sampling.

Resampler (:func:`inverscope.analysis.maps.resample_patterns`): patterns are rendered exactly
as a pixelated detector records them, the intensity density integrated over each pixel
(8 x 8 sub-pixel points; pixel ``i`` of ``n`` centred on ``(i - n // 2) * d`` mrad, the
optical axis on pixel ``n // 2`` as in ``PixelatedDetector``). A pattern rendered at 1.0
mrad/px and resampled to 2.0 or 0.5 mrad/px is compared with the same density rendered
directly at those samplings. Both the overlap integration (coarsening, the intensity taken
uniform inside an input pixel) and the bilinear interpolation (refining) are second-order in
the input pixel size: the error is about ``(d / sigma)**2 / 4`` of the peak for a Gaussian of
width ``sigma``, measured 2.7 % (to 2.0 mrad/px) and 3.2 % (to 0.5 mrad/px) at sigma = 3 px,
RMS 0.2 %; tolerances are 4 % max and 0.3 % RMS, and doubling sigma must cut the error about
four-fold (measured 3.9x-4.0x; required > 3x).

End to end: a tiny polarization CNN trained on discs rendered at the model's 1.0 mrad/px
(32 x 32 px) reads the same classes from scans rendered at 0.5 mrad/px (64 px,
``--sampling-mrad``), 0.25 mrad/px (128 px, ``--bin 2`` then resampling) and 2.0 mrad/px
(16 px, refined); a random stack network gives the same probabilities on a Zarr store
calibrated at half the model's mrad/px with twice the pixels as on data at the model's own
sampling; the summaries record the resampling.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from inverscope.analysis.maps import resample_patterns, resampling_plan
from inverscope.cli import main
from inverscope.core.errors import InverscopeError

SS = 8  # sub-pixel points per axis when rendering


def render(density, n: int, d: float) -> np.ndarray:
    """What an ``n x n`` px detector of ``d`` mrad/px records: `density` [per mrad^2] integrated over each pixel."""
    sub = (np.arange(n * SS) - (n // 2) * SS - (SS - 1) / 2) * d / SS
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    return (density(yy, xx).reshape(n, SS, n, SS).mean(axis=(1, 3)) * d * d).astype(np.float64)


def gaussian(sigma: float, cy: float = 0.0, cx: float = 0.0):
    return lambda y, x: np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma ** 2))


def soft_disc(radius: float, edge: float, cy: float = 0.0, cx: float = 0.0, background: float = 0.0):
    return lambda y, x: 1.0 / (1.0 + np.exp((np.hypot(y - cy, x - cx) - radius) / edge)) + background


def com_px(img: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    return np.array([(yy * img).sum(), (xx * img).sum()]) / img.sum()


# ------------------------------------------------------------------ the resampler

@pytest.mark.parametrize("d_out, n_out", [(2.0, 24), (0.5, 96)])
def test_resampled_gaussian_matches_the_direct_rendering(d_out, n_out):
    errors = []
    for sigma in (3.0, 6.0):
        src = render(gaussian(sigma), 48, 1.0)
        truth = render(gaussian(sigma), n_out, d_out)
        got = resample_patterns(src, 1.0, d_out, (n_out, n_out))
        assert got.shape == (n_out, n_out) and got.dtype == np.float32
        err = np.abs(got - truth)
        errors.append(err.max() / truth.max())
        if sigma == 3.0:
            assert err.max() < 0.04 * truth.max()
            assert np.sqrt((err ** 2).mean()) < 0.003 * truth.max()
        # intensity per pixel scales with the pixel's solid angle: the peak pixel holds ~ (d_out / d_in)**2 of the input's
        np.testing.assert_allclose(got.max() / src.max(), truth.max() / src.max(), rtol=0.04)
    assert errors[0] / errors[1] > 3.0, errors   # second order in the pixel size


def test_disc_pattern_and_batches_match_the_direct_rendering():
    disc = soft_disc(8.0, 1.0, cy=1.5, cx=-2.0, background=0.01)
    src = render(disc, 48, 1.0)
    batch = np.stack([src, 2 * src, np.zeros_like(src)])[None]          # (1, 3, ky, kx): leading axes kept
    for d_out, n_out in ((2.0, 24), (0.5, 96)):
        truth = render(disc, n_out, d_out)
        got = resample_patterns(batch, 1.0, d_out, (n_out, n_out))
        assert got.shape == (1, 3, n_out, n_out)
        assert np.abs(got[0, 0] - truth).max() < 0.02 * truth.max()        # measured 1.3 % / 1.8 % at the disc edge
        np.testing.assert_allclose(got[0, 1], 2 * got[0, 0], rtol=1e-6)   # linear
        assert not got[0, 2].any()


def test_total_intensity_is_conserved_when_coarsening_the_same_field_of_view():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, (5, 60, 60)).astype(np.float32)               # rough patterns, bright up to the edges
    total = x.sum(axis=(1, 2), dtype=np.float64)
    for d_out, n_out in ((2.0, 30), (3.0, 20), (1.5, 40)):
        got = resample_patterns(x, 1.0, d_out, (n_out, n_out)).sum(axis=(1, 2), dtype=np.float64)
        # the output spans the same 60 mrad, but with the optical axis on pixel n // 2 of both even grids it is
        # shifted by (d_out - 1) / 2 mrad: at most that strip of one row and one column of input pixels falls outside
        strip = (d_out - 1.0) / 2 * 2 * total / 60
        assert np.all(got <= total * (1 + 1e-6)) and np.all(total - got <= strip * 1.2), (d_out, total - got, strip)
    # a pattern that is dark at the edges keeps its total exactly (float32 rounding)
    src = render(gaussian(4.0, 2.0, -3.0), 60, 1.0)
    for d_out, n_out in ((2.0, 30), (3.0, 20), (1.25, 48), (4.0, 15)):
        np.testing.assert_allclose(resample_patterns(src, 1.0, d_out, (n_out, n_out)).sum(), src.sum(), rtol=1e-5)
    # refining keeps it to the interpolation error
    np.testing.assert_allclose(resample_patterns(src, 1.0, 0.5, (120, 120)).sum(), src.sum(), rtol=1e-4)


@pytest.mark.parametrize("n_in, d_out, n_out", [(48, 2.0, 24), (49, 2.0, 25), (48, 0.5, 96), (47, 0.7, 67), (48, 1.3, 37)])
def test_the_optical_axis_stays_on_pixel_n_over_2(n_in, d_out, n_out):
    got = resample_patterns(render(gaussian(3.0), n_in, 1.0), 1.0, d_out, (n_out, n_out))
    np.testing.assert_allclose(com_px(got), [n_out // 2] * 2, atol=2e-3)
    # an off-axis spot lands on its angle: (row, col) = angle / d_out + n_out // 2
    got = resample_patterns(render(gaussian(2.0, 5.0, -3.0), n_in, 1.0), 1.0, d_out, (n_out, n_out))
    np.testing.assert_allclose(com_px(got), np.array([5.0, -3.0]) / d_out + n_out // 2, atol=0.02)


def test_identity_at_equal_sampling_and_per_axis_sampling():
    x = np.random.default_rng(1).random((3, 17, 16)).astype(np.float32)
    np.testing.assert_array_equal(resample_patterns(x, 1.7, 1.7, (17, 16)), x)
    np.testing.assert_array_equal(resample_patterns(x, (1.0, 2.0), (1.0, 2.0), (17, 16)), x)
    # equal sampling, other shape: an exact centred crop
    np.testing.assert_array_equal(resample_patterns(x, 1.0, 1.0, (9, 8)), x[:, 4:13, 4:12])
    # rows coarsened, columns refined
    src = render(gaussian(4.0), 40, 1.0)
    got = resample_patterns(src, 1.0, (2.0, 0.5), (20, 80))
    sub_y = (np.arange(20 * SS) - 10 * SS - (SS - 1) / 2) * 2.0 / SS
    sub_x = (np.arange(80 * SS) - 40 * SS - (SS - 1) / 2) * 0.5 / SS
    truth = gaussian(4.0)(*np.meshgrid(sub_y, sub_x, indexing="ij")).reshape(20, SS, 80, SS).mean(axis=(1, 3)) * 1.0
    assert np.abs(got - truth).max() < 0.03 * truth.max()


def test_resampling_plan_decides_and_refuses_a_larger_field_of_view():
    assert resampling_plan(None, (64, 64), 1, 1.0, (32, 32)) is None
    assert resampling_plan((1.01, 1.01), (32, 32), 1, 1.0, (32, 32)) is None             # within 2 %
    plan = resampling_plan((0.25, 0.25), (128, 128), 2, [1.0, 1.0], (32, 32))
    assert plan["from_mrad"] == [0.5, 0.5] and plan["to_mrad"] == [1.0, 1.0] and plan["shape"] == [32, 32]
    assert plan["method"] == {"rows": "overlap integration", "cols": "overlap integration"} and plan["warnings"] == []
    # binning 2 x 2 moves the optical axis (data pixel 64) to binned pixel 31.75, which the resampling keeps
    assert plan["centre_in_px"] == [31.75, 31.75]
    src = render(gaussian(3.0, 2.0, -1.0), 128, 0.25)
    binned = src.reshape(64, 2, 64, 2).sum(axis=(1, 3))
    got = resample_patterns(binned, 0.5, 1.0, (32, 32), plan["centre_in_px"])
    np.testing.assert_allclose(com_px(got), np.array([2.0, -1.0]) + 16, atol=2e-3)
    assert resampling_plan(0.5, (65, 64), 1, 1.0, (32, 32))["centre_in_px"] == [32, 32]
    assert "field of view" in resampling_plan(0.5, (63, 63), 1, 1.0, (32, 32))["warnings"][0]  # 31.5 < 32 mrad: within 3 %
    assert "coarser" in resampling_plan(2.0, (16, 16), 1, 1.0, (32, 32))["warnings"][0]
    with pytest.raises(InverscopeError, match=r"span 16 x 16 mrad .* model's span 32 x 32 mrad") as err:
        resampling_plan(0.25, (64, 64), 1, 1.0, (32, 32), source="scan")
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ end to end: polarization model

N_CLASSES, P, MODEL_MRAD = 8, 32, 1.0
CLASSES = (np.arange(30).reshape(6, 5) * 3) % N_CLASSES


def disc_density(cls: int, dy: float = 0.0, dx: float = 0.0):
    """A soft disc (radius 6.4 mrad) shifted by 1.5 mrad towards class angle `cls` (ccw from +col), on a faint background."""
    a = np.radians(cls * 360 / N_CLASSES)
    return soft_disc(6.4, 0.7, -np.sin(a) * 1.5 + dy, np.cos(a) * 1.5 + dx, background=0.02)


def scan_at(d: float, n: int) -> np.ndarray:
    return np.stack([np.stack([render(disc_density(int(c)), n, d) for c in row]) for row in CLASSES]).astype(np.float32)


@pytest.fixture(scope="module")
def polar_model(tmp_path_factory):
    from inverscope.analysis.polar_models import polar_input, polar_metadata
    from inverscope.models.io import save_model
    from inverscope.models.nets import build_net
    from inverscope.training.regimes import fit_regime

    torch.set_num_threads(2)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(N_CLASSES), 32)
    raw = np.stack([render(disc_density(int(c), *rng.normal(0, 0.1, 2)), P, MODEL_MRAD) * rng.uniform(0.8, 1.2)
                    for c in y]).astype(np.float32)
    x, mean, std = polar_input(raw)
    cfg = {"input_size": P, "channels": [4, 8], "pool_after": [True, True], "hidden": 16, "head": "classification",
           "outputs": N_CLASSES}
    net = build_net("polarization_cnn", cfg)
    result = fit_regime(net, x[64:], y[64:], x[:64], y[:64],
                        {"regime": "classification", "n_classes": N_CLASSES, "epochs": 8, "batch_size": 32,
                         "lr": 5e-3, "seed": 0}, log=None)
    assert result.val_accuracy == 1.0, result.history
    path = tmp_path_factory.mktemp("model") / "polar"
    save_model(path, net, "polarization_cnn",
               polar_metadata(regime=result, pixels=P, mrad_per_px=MODEL_MRAD, semiangle_mrad=10.0, energy_ev=200e3,
                              mean=mean, std=std))
    return path.with_suffix(".safetensors")


def _run(argv) -> None:
    assert main([*argv, "--quiet"]) == 0


def test_polar_predictions_are_the_same_at_other_samplings(polar_model, tmp_path, capsys):
    own = tmp_path / "own.npy"
    np.save(own, scan_at(MODEL_MRAD, P))
    _run(["predict", str(polar_model), str(own), "--out", str(tmp_path / "o_own")])
    ref = np.load(tmp_path / "o_own" / "maps.npz")
    np.testing.assert_array_equal(ref["class_map"], CLASSES)
    assert json.loads((tmp_path / "o_own" / "summary.json").read_text())["resampled"] is None
    capsys.readouterr()
    cases = {"half": (0.5, 64, []), "quarter_bin2": (0.25, 128, ["--bin", "2"]), "double": (2.0, 16, [])}
    for name, (d, n, extra) in cases.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, scan_at(d, n))
        out = tmp_path / f"o_{name}"
        _run(["predict", str(polar_model), str(path), "--out", str(out), "--sampling-mrad", str(d), *extra])
        maps = np.load(out / "maps.npz")
        np.testing.assert_array_equal(maps["class_map"], CLASSES, err_msg=name)
        conf_diff = np.abs(maps["confidence"] - ref["confidence"]).max()
        if d < MODEL_MRAD:   # finer data hold all the model's information; coarser data (refined) lose the edge detail
            assert conf_diff < 0.05, (name, conf_diff)
        s = json.loads((out / "summary.json").read_text())
        f = 2 if extra else 1
        assert s["resampled"]["from_mrad"] == [d * f] * 2 and s["resampled"]["to_mrad"] == [MODEL_MRAD] * 2
        assert s["resampled"]["shape"] == [P, P] and s["resampled"]["sampling_from"] == "--sampling-mrad"
        assert s["pattern_shape_read"] == [n, n] and s["pattern_shape_used"] == [P, P]
        assert s["warnings"] == [] if d < MODEL_MRAD else "coarser" in s["warnings"][0]
        assert s["settings"]["sampling_mrad"] == d
        assert f"to the model's {MODEL_MRAD:g} mrad/px" in capsys.readouterr().err
    # without a sampling the shape check of today: --bin 2 hint
    assert main(["predict", str(polar_model), str(tmp_path / "half.npy"), "--out", str(tmp_path / "o_x")]) == 2
    assert "--bin 2" in capsys.readouterr().err and not (tmp_path / "o_x").exists()


def _error(capsys, argv, out) -> str:
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert not out.exists()
    return lines[0]


def test_bad_sampling_and_uncovered_field_of_view_are_one_line_errors(polar_model, tmp_path, capsys):
    data = tmp_path / "half.npy"
    np.save(data, scan_at(0.5, 64)[:2])
    out = tmp_path / "out"
    for bad in ("0", "-1", "nan", "inf"):
        line = _error(capsys, ["predict", str(polar_model), str(data), "--out", str(out), "--sampling-mrad", bad], out)
        assert "--sampling-mrad" in line and "> 0" in line
    line = _error(capsys, ["predict", str(polar_model), str(data), "--out", str(out), "--sampling-mrad", "0.25"], out)
    assert "16 x 16 mrad" in line and "32 x 32 mrad" in line
    line = _error(capsys, ["predict", str(polar_model), str(data), "--out", str(out), "--sampling-mrad", "0.5",
                           "--crop", "32"], out)
    assert "--crop" in line


# ------------------------------------------------------------------ end to end: stack model

K, POS, STACK_MRAD = 9, 4, 2.5


def _stack_model(path):
    from inverscope.models.io import save_model
    from inverscope.models.nets import StackCNN3D, StackCNN3DConfig

    torch.manual_seed(0)
    net = StackCNN3D(StackCNN3DConfig(input_shape=(POS, K, K), channels=[2], hidden=4, dropout=0.0, num_outputs=2))
    mean = render(soft_disc(5.0, 1.5), K, STACK_MRAD)
    meta = {"task": "classification", "class_names": ["LAO", "STO"],
            "normalization": {"mean": mean.tolist(), "std": (0.2 * mean.max() * np.ones((K, K))).tolist()},
            "input": {"positions": POS, "pattern_shape": [K, K], "sampling_mrad": [STACK_MRAD, STACK_MRAD]}}
    save_model(path, net, "stack_cnn3d", meta)
    return path.with_suffix(".safetensors")


def _stack_scan(d: float, n: int) -> np.ndarray:
    """4 x 8 scan of discs whose radius and position vary with the scan position (dark at the detector's edge)."""
    return np.stack([np.stack([render(soft_disc(3.0 + 0.8 * j, 1.5, 0.8 * i - 1.2, 0.3 * j - 1.0), n, d)
                               for j in range(8)]) for i in range(4)]).astype(np.float32)


def _store(path, data, d):
    from inverscope.datasets.store import ZarrCBEDWriter

    w = ZarrCBEDWriter(path, data.shape[:2], (1, *data.shape[2:]), {"calibration": {"sampling_mrad": [d, d]}},
                       chunk_positions=8)
    w(0, data.shape[0] * data.shape[1], data.reshape(-1, 1, *data.shape[2:]))
    w.close()
    return path


def test_stack_predictions_from_a_store_at_half_the_sampling(tmp_path, capsys):
    import zarr

    model = _stack_model(tmp_path / "model" / "net")
    own = _store(tmp_path / "own.zarr", _stack_scan(STACK_MRAD, K), STACK_MRAD)
    fine = _store(tmp_path / "fine.zarr", _stack_scan(STACK_MRAD / 2, 2 * K), STACK_MRAD / 2)
    _run(["predict", str(model), str(own), "--out", str(tmp_path / "a"), "--chunk-rows", "3"])
    _run(["predict", str(model), str(fine), "--out", str(tmp_path / "b"), "--chunk-rows", "3"])
    ga = zarr.open_group(str(tmp_path / "a" / "descriptors.zarr"), mode="r")
    gb = zarr.open_group(str(tmp_path / "b" / "descriptors.zarr"), mode="r")
    prob_a, prob_b = ga["prob_LAO"][:], gb["prob_LAO"][:]
    assert prob_a.shape == prob_b.shape == (4, 5) and np.ptp(prob_a) > 0.02   # the maps do vary over the scan
    # the resampled patterns differ from the directly recorded ones by ~1 % of their peak (see above): the
    # probabilities must agree to a small fraction (5 %) of their variation over the scan
    np.testing.assert_allclose(prob_b, prob_a, atol=0.05 * np.ptp(prob_a))
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a["resampled"] is None and a["warnings"] == []
    r = b["resampled"]
    assert r["from_mrad"] == [STACK_MRAD / 2] * 2 and r["to_mrad"] == [STACK_MRAD] * 2 and r["shape"] == [K, K]
    assert r["sampling_from"] == "file" and b["sampling_mrad_read"] == [STACK_MRAD / 2] * 2 and b["warnings"] == []
    assert gb.attrs["resampled"]["shape"] == [K, K]
    # the same data as .npy with the sampling only on the command line, binned first: 2 x 2 of 0.625 -> 1.25 -> 2.5
    np.save(tmp_path / "fine.npy", _stack_scan(STACK_MRAD / 4, 4 * K))
    capsys.readouterr()
    _run(["predict", str(model), str(tmp_path / "fine.npy"), "--out", str(tmp_path / "c"), "--bin", "2",
          "--sampling-mrad", str(STACK_MRAD / 4)])
    assert "resampled the patterns by angle from 1.25 mrad/px (after --bin 2)" in capsys.readouterr().err
    gc = zarr.open_group(str(tmp_path / "c" / "descriptors.zarr"), mode="r")
    np.testing.assert_allclose(gc["prob_LAO"][:], prob_a, atol=0.05 * np.ptp(prob_a))
    c = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert c["resampled"]["sampling_from"] == "--sampling-mrad" and c["settings"]["bin_factor"] == 2
    # errors: a bad --sampling-mrad, a field of view the data do not cover
    line = _error(capsys, ["predict", str(model), str(own), "--out", str(tmp_path / "d"), "--sampling-mrad", "-2"],
                  tmp_path / "d")
    assert "--sampling-mrad" in line
    line = _error(capsys, ["predict", str(model), str(own), "--out", str(tmp_path / "d"), "--sampling-mrad", "1.0"],
                  tmp_path / "d")
    assert "9 x 9 mrad" in line and "22.5 x 22.5 mrad" in line
