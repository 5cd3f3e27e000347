"""``inverscope predict`` with an atom-finding U-Net: images, movies, resampling and bad input.

A tiny U-Net (depth 3, 4 base channels, two atom classes + background) is trained for a few
hundred steps on Gaussian blobs of two brightnesses; the tests then run the real command line
on blob images and a drifting blob movie with known positions. Every bad input ends in one
``error:`` line and no output directory.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from inverscope.analysis.atom_finding import locate_atoms, match_atoms
from inverscope.cli import main
from inverscope.models.io import save_model
from inverscope.models.nets.unet import UNet, UNetConfig

NAMES = ["bright", "dim"]
NOMINAL = 0.2            # Å/px
SIGMA = 1.5              # blob sigma at the nominal sampling [px]


def blob_positions(rng, n: int, spacing: float, margin: float, jitter: float = 2.0):
    g = np.arange(margin, n - margin + 1e-9, spacing)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    xy = np.stack([xx.ravel(), yy.ravel()], 1) + rng.uniform(-jitter, jitter, (xx.size, 2))
    return xy, rng.integers(0, 2, len(xy))


def render(xy, cls, n: int, sigma: float = SIGMA, rng=None, noise: float = 0.03) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    img = np.zeros((n, n))
    for (x, y), c in zip(xy, cls):
        img += (1.0 if c == 0 else 0.5) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return img + (rng.normal(0, noise, img.shape) if rng is not None else 0)


def heatmaps(xy, cls, n: int, sigma: float = 1.3) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    t = np.zeros((3, n, n))
    for (x, y), c in zip(xy, cls):
        t[c] = np.maximum(t[c], np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)))
    t[2] = np.clip(1 - t[0] - t[1], 0, 1)
    return t / t.sum(0, keepdims=True)


def _standardise(img):
    return (img - img.mean()) / img.std()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = UNet(UNetConfig(n_classes=3, depth=3, base_channels=4))
    n = 32
    data = []
    for _ in range(64):
        xy, c = blob_positions(rng, n, spacing=9, margin=4)
        data.append((_standardise(render(xy, c, n, rng=rng)), heatmaps(xy, c, n)))
    X = torch.tensor(np.stack([d[0] for d in data]), dtype=torch.float32)[:, None]
    T = torch.tensor(np.stack([d[1] for d in data]), dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    net.train()
    for step in range(300):
        idx = torch.randint(0, len(X), (8,))
        x, t = X[idx], T[idx]
        if step % 2:
            x, t = x.flip(-1), t.flip(-1)
        loss = torch.nn.functional.cross_entropy(net(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    # the network finds blobs before predict is tested
    xy, c = blob_positions(rng, 64, spacing=10, margin=5)
    with torch.no_grad():
        p = torch.softmax(net(torch.tensor(_standardise(render(xy, c, 64, rng=rng)), dtype=torch.float32)[None, None]),
                          1)[0].numpy()
    found = locate_atoms(p, threshold=0.3, min_distance_px=3, class_names=NAMES)
    m = match_atoms(found[["x_px", "y_px"]].to_numpy(), xy, 2.0, pred_classes=found["class"].to_numpy(),
                    true_classes=np.array(NAMES)[c])
    assert m.f1 == 1.0 and m.class_accuracy == 1.0, m.summary()
    meta = {"task": "atoms", "class_names": NAMES, "background_channel": -1, "pixel_size_angstrom": NOMINAL,
            "pixel_size_range_angstrom": [0.15, 0.25],
            "input": {"normalization": "per-image standardization (x - mean) / std", "multiple_of": 8},
            "locate": {"threshold": 0.3, "min_distance_px": 3.0, "refine": "centroid"},
            "ensemble": ["atoms_1"], "heatmap_sigma_px": SIGMA}
    d = tmp_path_factory.mktemp("model")
    save_model(d / "atoms_0", net, "unet", meta)
    save_model(d / "atoms_1", net, "unet", {**meta, "ensemble": []})
    return d / "atoms_0.safetensors"


def _write_png16(path, img):
    from PIL import Image

    a = (img - img.min()) / np.ptp(img) * 60000 + 1000
    Image.fromarray(a.astype(np.uint16)).save(path)


def _check(table: pd.DataFrame, xy, cls, tol: float):
    m = match_atoms(table[["x_px", "y_px"]].to_numpy(), xy, 2.0, pred_classes=table["class"].to_numpy(),
                    true_classes=np.array(NAMES)[cls])
    assert m.f1 == 1.0, m.summary()
    assert m.class_accuracy == 1.0
    assert m.rmse < tol and np.max(m.distances) < 2 * tol, m.summary()
    return m


def test_an_image_gives_the_atoms_with_the_given_pixel_size(model, tmp_path, capsys):
    rng = np.random.default_rng(1)
    xy, cls = blob_positions(rng, 64, spacing=10, margin=5)
    _write_png16(tmp_path / "img.png", render(xy, cls, 64, rng=rng))
    out = tmp_path / "out"
    assert main(["predict", str(model), str(tmp_path / "img.png"), "--out", str(out), "--pixel-size", "0.21"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for f in summary["outputs"].values():
        assert (out / f).is_file(), f
    assert {"atoms.csv", "atoms.parquet", "img_overlay.png", "img_classes.png", "report.html"} <= set(
        summary["outputs"].values())
    table = pd.read_csv(out / "atoms.csv")
    pd.testing.assert_frame_equal(table, pd.read_parquet(out / "atoms.parquet"), check_dtype=False)
    _check(table, xy, cls, 0.3)
    src = summary["sources"]["img"]
    assert src["pixel_size_angstrom"] == 0.21 and src["pixel_size_source"] == "--pixel-size"
    assert src["resample_factor"] == 1.0 and src["kind"] == "image" and src["shape"] == [64, 64]
    assert "tracking" not in src and not list(out.glob("*tracks*"))
    np.testing.assert_allclose(table["x_angstrom"], table["x_px"] * 0.21)
    assert summary["model"]["ensemble_size"] == 2
    assert summary["class_counts"] == {n: int((cls == i).sum()) for i, n in enumerate(NAMES)}
    assert summary["wall_s"] > 0 and summary["megapixels_per_s"] > 0
    # --classes keeps one class
    out2 = tmp_path / "out2"
    assert main(["predict", str(model), str(tmp_path / "img.png"), "--out", str(out2), "--pixel-size", "0.21",
                 "--classes", "dim", "--quiet"]) == 0
    assert set(pd.read_csv(out2 / "atoms.csv")["class"]) == {"dim"}


def test_a_finer_image_is_resampled_and_positions_come_back_in_its_pixels(model, tmp_path):
    rng = np.random.default_rng(2)
    xy, cls = blob_positions(rng, 128, spacing=20, margin=10, jitter=4)
    np.save(tmp_path / "fine.npy", render(xy, cls, 128, sigma=2 * SIGMA, rng=rng).astype(np.float32))
    out = tmp_path / "out"
    assert main(["predict", str(model), str(tmp_path / "fine.npy"), "--out", str(out), "--pixel-size", "0.1",
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sources"]["fine"]["resample_factor"] == 0.5
    _check(pd.read_csv(out / "atoms.csv"), xy, cls, 0.5)


def test_a_drifting_movie_is_tracked_one_particle_per_blob(model, tmp_path):
    rng = np.random.default_rng(3)
    xy, cls = blob_positions(rng, 64, spacing=10, margin=8, jitter=1.5)
    step = np.array([0.6, -0.4])
    n_frames = 5
    movie = np.stack([render(xy + i * step, cls, 64, rng=rng) for i in range(n_frames)]).astype(np.float32)
    np.save(tmp_path / "movie.npy", movie)
    out = tmp_path / "out"
    assert main(["predict", str(model), str(tmp_path / "movie.npy"), "--out", str(out), "--pixel-size", "0.2",
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"movie_tracks.csv", "movie_tracks.png", "movie_overlay.png"} <= set(summary["outputs"].values())
    info = summary["sources"]["movie"]["tracking"]
    np.testing.assert_allclose(info["drift_px"], [i * step for i in range(n_frames)], atol=0.15)
    atoms = pd.read_csv(out / "atoms.csv")
    for i in range(n_frames):
        _check(atoms[atoms["frame"] == i], xy + i * step, cls, 0.3)
    tracks = pd.read_csv(out / "movie_tracks.csv")
    ids = []
    for i in range(n_frames):
        t = tracks[tracks["frame"] == i].reset_index(drop=True)
        m = match_atoms(t[["x_px", "y_px"]].to_numpy(), xy, 1.0)        # drift-corrected: frame 0 positions
        assert m.f1 == 1.0, (i, m.summary())
        order = np.empty(len(xy), int)
        order[m.pairs[:, 1]] = t["particle"].to_numpy()[m.pairs[:, 0]]
        ids.append(order)
    ids = np.stack(ids)
    assert (ids == ids[0]).all() and len(set(ids[0])) == len(xy)
    assert info["n_tracks"] == len(xy)
    assert set(info["diffusion"]) == set(NAMES) and all(d["D"] is not None for d in info["diffusion"].values())
    assert info["transition_matrix"]["bright"]["bright"] == 1.0


def _hspy_signal(data, scale_nm):
    names = ["time", "y", "x"][-data.ndim:]
    axes = [{"name": n, "size": s, "offset": 0.0, "scale": 1.0 if n == "time" else scale_nm,
             "units": "s" if n == "time" else "nm", "navigate": n == "time"} for n, s in zip(names, data.shape)]
    return {"data": data, "axes": axes, "metadata": {"General": {"title": "img"}, "Signal": {"signal_type": ""}},
            "original_metadata": {}, "attributes": {"_lazy": False}, "tmp_parameters": {}, "learning_results": {},
            "models": {}, "package_info": {"name": "hyperspy", "version": "2.0"}}


def test_pixel_sizes_come_from_hspy_axes_and_imagej_tiffs(model, tmp_path):
    import tifffile
    from rsciio.hspy import file_writer

    rng = np.random.default_rng(5)
    xy, cls = blob_positions(rng, 64, spacing=10, margin=8, jitter=1.5)
    img = render(xy, cls, 64, rng=rng).astype(np.float32)
    file_writer(str(tmp_path / "a.hspy"), _hspy_signal(img, 0.021), show_progressbar=False)
    movie = np.stack([render(xy + (0.5 * i, 0.0), cls, 64, rng=rng) for i in range(3)]).astype(np.float32)
    tifffile.imwrite(tmp_path / "m.tif", movie, imagej=True, resolution=(1 / 0.019, 1 / 0.019),
                     metadata={"unit": "nm", "axes": "TYX"})
    out = tmp_path / "out"
    assert main(["predict", str(model), str(tmp_path / "a.hspy"), str(tmp_path / "m.tif"), "--out", str(out),
                 "--quiet"]) == 0
    src = json.loads((out / "summary.json").read_text())["sources"]
    assert src["a"]["kind"] == "image" and src["a"]["pixel_size_angstrom"] == pytest.approx(0.21)
    assert "HyperSpy" in src["a"]["pixel_size_source"]
    assert src["m"]["kind"] == "movie" and src["m"]["shape"] == [3, 64, 64]
    assert src["m"]["pixel_size_angstrom"] == pytest.approx(0.19) and "ImageJ" in src["m"]["pixel_size_source"]
    atoms = pd.read_csv(out / "atoms.csv")
    _check(atoms[atoms["source"] == "a"], xy, cls, 0.3)
    assert src["m"]["tracking"]["n_tracks"] == len(xy)


def _error(capsys, argv, out) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert not out.exists()
    return lines[0]


def test_bad_inputs_end_in_one_line_and_write_nothing(model, tmp_path, capsys):
    import tifffile

    rng = np.random.default_rng(4)
    good = render(*blob_positions(rng, 64, 10, 5), 64, rng=rng)
    out = tmp_path / "out"

    def run(path, *extra):
        return _error(capsys, ["predict", str(model), str(path), "--out", str(out), *extra], out)

    nan = good.copy()
    nan[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    assert "NaN" in run(tmp_path / "nan.npy", "--pixel-size", "0.2")
    np.save(tmp_path / "flat.npy", np.full((64, 64), 7.0))
    assert "constant" in run(tmp_path / "flat.npy", "--pixel-size", "0.2")
    with tifffile.TiffWriter(tmp_path / "ragged.tif") as tw:
        tw.write(good.astype(np.float32))
        tw.write(good[:48].astype(np.float32))
    assert "frame 1" in run(tmp_path / "ragged.tif", "--pixel-size", "0.2")
    (tmp_path / "img.xyz").write_text("nothing")
    assert "unknown format" in run(tmp_path / "img.xyz", "--pixel-size", "0.2")
    np.save(tmp_path / "good.npy", good)
    line = run(tmp_path / "good.npy", "--pixel-size", "0.2", "--classes", "dim,vacancy")
    assert "vacancy" in line and "bright, dim" in line
    assert "--pixel-size" in run(tmp_path / "good.npy")                      # no calibration anywhere
    assert "too coarsely sampled" in run(tmp_path / "good.npy", "--pixel-size", "5")
    assert "--bin" in run(tmp_path / "good.npy", "--pixel-size", "0.2", "--bin", "2")
    # one bad file among good ones: still nothing written
    assert "constant" in _error(capsys, ["predict", str(model), str(tmp_path / "good.npy"), str(tmp_path / "flat.npy"),
                                         "--out", str(out), "--pixel-size", "0.2"], out)


# ---------------------------------------------------------------- DigitalMicrograph and EMD files (RosettaSciIO)


def _to_uint16(img):
    return ((img - img.min()) / np.ptp(img) * 60000 + 1000).astype(np.uint16)


@pytest.mark.parametrize("version", [3, 4])
def test_the_test_dm_writer_round_trips_through_rosettasciio(tmp_path, version):
    from rsciio.digitalmicrograph import file_reader

    from tests.dm_writer import write_dm

    rng = np.random.default_rng(10)
    img = rng.normal(size=(5, 7)).astype(np.float32)                 # rows != cols: x-first order matters
    path = write_dm(tmp_path / f"img.dm{version}", img, (0.03, 0.021), "nm", version=version, name="HAADF")
    assert path.read_bytes()[:4] == version.to_bytes(4, "big")
    for lazy in (False, True):
        signals = file_reader(str(path), lazy=lazy)
        assert len(signals) == 1                                    # the thumbnail (ImageList[0]) is left out
        s = signals[0]
        data = np.asarray(s["data"])
        assert data.dtype == np.float32 and data.shape == (5, 7) and np.array_equal(data, img)
        assert [(a["name"], a["size"], a["units"], a["navigate"]) for a in s["axes"]] == [
            ("y", 5, "nm", False), ("x", 7, "nm", False)]
        assert [a["scale"] for a in s["axes"]] == pytest.approx([0.03, 0.021])
        assert s["metadata"]["General"]["title"] == "HAADF"
    stack = rng.integers(0, 65535, (3, 6, 4)).astype(np.uint16)
    path = write_dm(tmp_path / f"stack.dm{version}", stack, 0.5, "Å", version=version, frame_scale=2.0,
                    frame_units="s")
    (s,) = file_reader(str(path), lazy=True)
    data = np.asarray(s["data"])
    assert data.dtype == np.uint16 and np.array_equal(data, stack)
    assert [(a["size"], a["units"], a["navigate"]) for a in s["axes"]] == [
        (3, "s", True), (6, "Å", False), (4, "Å", False)]
    assert [a["scale"] for a in s["axes"]] == pytest.approx([2.0, 0.5, 0.5])
    thumbs = s["original_metadata"]["Thumbnails"]
    assert [t["ImageIndex"] for t in thumbs.values()] == [0]


def test_dm3_and_dm4_images_give_atoms_and_the_pixel_size_of_their_calibration(model, tmp_path):
    from tests.dm_writer import write_dm

    rng = np.random.default_rng(11)
    truth = {}
    for name, version in (("a", 3), ("b", 4)):
        xy, cls = blob_positions(rng, 64, spacing=10, margin=6, jitter=1.5)
        img = render(xy, cls, 64, rng=rng)
        write_dm(tmp_path / f"{name}.dm{version}", img.astype(np.float32) if version == 3 else _to_uint16(img),
                 0.021, "nm", version=version)
        truth[name] = xy, cls
    out = tmp_path / "out"
    assert main(["predict", str(model), str(tmp_path / "a.dm3"), str(tmp_path / "b.dm4"), "--out", str(out),
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    atoms = pd.read_csv(out / "atoms.csv")
    for name in ("a", "b"):
        src = summary["sources"][name]
        assert src["kind"] == "image" and src["shape"] == [64, 64] and src["resample_factor"] == 1.0
        assert src["pixel_size_angstrom"] == pytest.approx(0.21)          # 0.021 nm, stored as float32
        assert src["pixel_size_source"] == "file (Gatan DigitalMicrograph axes calibration)"
        table = atoms[atoms["source"] == name]
        _check(table, *truth[name], 0.3)
        np.testing.assert_allclose(table["x_angstrom"], table["x_px"] * src["pixel_size_angstrom"])
    assert summary["settings"]["pixel_size"] is None and not summary["warnings"]


def test_a_dm4_stack_is_read_as_a_movie_and_tracked(model, tmp_path):
    from tests.dm_writer import write_dm

    rng = np.random.default_rng(12)
    xy, cls = blob_positions(rng, 64, spacing=10, margin=8, jitter=1.5)
    step = np.array([0.5, -0.3])
    movie = np.stack([render(xy + i * step, cls, 64, rng=rng) for i in range(3)]).astype(np.float32)
    write_dm(tmp_path / "movie.dm4", movie, 0.019, "nm", version=4, frame_scale=0.5, frame_units="s")
    out = tmp_path / "out"
    assert main(["predict", str(model), str(tmp_path / "movie.dm4"), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    src = summary["sources"]["movie"]
    assert src["kind"] == "movie" and src["shape"] == [3, 64, 64]
    assert src["pixel_size_angstrom"] == pytest.approx(0.19) and "DigitalMicrograph" in src["pixel_size_source"]
    assert {"movie_tracks.csv", "movie_tracks.png"} <= set(summary["outputs"].values())
    atoms = pd.read_csv(out / "atoms.csv")
    for i in range(3):
        _check(atoms[atoms["frame"] == i], xy + i * step, cls, 0.3)
    info = src["tracking"]
    assert info["n_tracks"] == len(xy)
    np.testing.assert_allclose(info["drift_px"], [i * step for i in range(3)], atol=0.15)


def test_an_ncem_emd_image_gives_atoms_and_the_pixel_size_of_its_dims(model, tmp_path):
    from rsciio.emd import file_writer

    rng = np.random.default_rng(13)
    xy, cls = blob_positions(rng, 64, spacing=10, margin=6, jitter=1.5)
    keep = xy[:, 0] < 50                                           # no blob on the right edge of the crop
    xy, cls = xy[keep], cls[keep]
    img = render(xy, cls, 64, rng=rng)[:, :56].astype(np.float32)     # 64 rows x 56 cols
    axes = [{"name": n, "size": s, "offset": 0.0, "scale": 0.021, "units": "nm", "navigate": False}
            for n, s in zip(("y", "x"), img.shape)]
    file_writer(str(tmp_path / "img.emd"), {"data": img, "axes": axes, "metadata": {"General": {"title": "img"},
                                                                                    "Signal": {"signal_type": ""}},
                                            "original_metadata": {}})
    out = tmp_path / "out"
    assert main(["predict", str(model), str(tmp_path / "img.emd"), "--out", str(out), "--quiet"]) == 0
    src = json.loads((out / "summary.json").read_text())["sources"]["img"]
    assert src["kind"] == "image" and src["shape"] == [64, 56]
    assert src["pixel_size_angstrom"] == pytest.approx(0.21)
    assert src["pixel_size_source"] == "file (EMD axes calibration)"
    _check(pd.read_csv(out / "atoms.csv"), xy, cls, 0.3)


def test_a_truncated_dm3_ends_in_one_line_and_writes_nothing(model, tmp_path, capsys):
    from tests.dm_writer import write_dm

    rng = np.random.default_rng(14)
    good = write_dm(tmp_path / "good.dm3", render(*blob_positions(rng, 64, 10, 5), 64, rng=rng).astype(np.float32),
                    0.021, "nm")
    raw = good.read_bytes()
    (tmp_path / "cut.dm3").write_bytes(raw[:len(raw) // 2])
    out = tmp_path / "out"
    line = _error(capsys, ["predict", str(model), str(tmp_path / "cut.dm3"), "--out", str(out)], out)
    assert "cut.dm3" in line and "DigitalMicrograph" in line and "truncated" in line
    # the good file beside it does not rescue the run
    line = _error(capsys, ["predict", str(model), str(good), str(tmp_path / "cut.dm3"), "--out", str(out)], out)
    assert "cut.dm3" in line
