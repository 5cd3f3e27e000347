"""Descriptor maps from trained stack networks: equal a by-hand computation on every data source."""

import json

import numpy as np
import pytest
import torch
import zarr

from inverscope.analysis.inference import predict_stacks
from inverscope.analysis.maps import bin_patterns, descriptor_maps, predict_to_dir
from inverscope.core.errors import InverscopeError
from inverscope.datasets.io import open_4dstem
from inverscope.datasets.store import ZarrCBEDWriter
from inverscope.models.io import load_model, save_model
from inverscope.models.nets import StackCNN3D, StackCNN3DConfig

P, K = 4, 9
NAMES = ["LAO", "STO"]


def _save(path, task="classification", dropout=0.15, seed=0):
    torch.manual_seed(seed)
    net = StackCNN3D(StackCNN3DConfig(input_shape=(P, K, K), channels=[2], hidden=4, dropout=dropout,
                                      num_outputs=2 if task == "classification" else 1))
    rng = np.random.default_rng(seed)
    meta = {"task": task, "normalization": {"mean": rng.uniform(0, 1, (K, K)).tolist(),
                                            "std": rng.uniform(0.5, 2, (K, K)).tolist()},
            "input": {"positions": P, "pattern_shape": [K, K], "sampling_mrad": [2.5, 2.5]}}
    if task == "classification":
        meta["class_names"] = NAMES
    save_model(path, net, "stack_cnn3d", meta)
    return path


def _data(shape=(6, 10, K, K), seed=1):
    return np.random.default_rng(seed).gamma(2.0, 1.0, shape).astype(np.float32)


def _write_store(path, data, complete=True):
    w = ZarrCBEDWriter(path, data.shape[:2], (1, *data.shape[2:]), {"calibration": {"sampling_mrad": [2.5, 2.5]}},
                       chunk_positions=4)
    w(0, data.shape[0] * data.shape[1], data.reshape(-1, 1, *data.shape[2:]))
    if complete:
        w.close()
    return path


def _write_hspy(path, data, units="mrad"):
    from rsciio.hspy import file_writer

    names = ["y", "x", "ky", "kx"][-data.ndim:]
    axes = [{"name": n, "size": s, "offset": 0.0, "scale": 2.5 if n.startswith("k") else 1.0,
             "units": units if n.startswith("k") else "nm", "navigate": not n.startswith("k")}
            for n, s in zip(names, data.shape)]
    sig = {"data": data, "axes": axes, "metadata": {"General": {"title": "scan"}, "Signal": {"signal_type": ""}},
           "original_metadata": {}, "attributes": {"_lazy": False}, "tmp_parameters": {}, "learning_results": {},
           "models": {}, "package_info": {"name": "hyperspy", "version": "2.0"}}
    file_writer(str(path), sig, show_progressbar=False)
    return path


def _by_hand(net, meta, stacks):
    mean = torch.tensor(meta["normalization"]["mean"], dtype=torch.float32)
    std = torch.tensor(meta["normalization"]["std"], dtype=torch.float32)
    with torch.no_grad():
        return net.eval()((torch.from_numpy(np.ascontiguousarray(stacks)) - mean) / std).numpy()


@pytest.fixture
def model(tmp_path):
    return _save(tmp_path / "model" / "net")


def test_maps_equal_a_direct_computation(tmp_path, model):
    net, meta = load_model(model)
    data = _data()
    four = open_4dstem(_write_store(tmp_path / "scan.zarr", data))
    assert four.data.shape == data.shape and four.sampling_mrad == (2.5, 2.5) and not four.stacks
    maps = descriptor_maps(net, meta, four.data, chunk_rows=4)
    assert maps["prob_LAO"].shape == (6, 7)
    np.testing.assert_array_equal(maps["window_centre_index"], np.arange(7) + 1.5)
    windows = np.stack([[data[y, j:j + P] for j in range(7)] for y in range(6)]).reshape(-1, P, K, K)
    prob = torch.softmax(torch.from_numpy(_by_hand(net, meta, windows)), 1).numpy().reshape(6, 7, 2)
    np.testing.assert_allclose(maps["prob_LAO"], prob[..., 0], atol=1e-6)
    np.testing.assert_allclose(maps["prob_STO"], prob[..., 1], atol=1e-6)
    np.testing.assert_array_equal(maps["class_index"], prob.argmax(-1))
    np.testing.assert_allclose(maps["confidence"], prob.max(-1), atol=1e-6)


def test_chunking_stride_and_axis_do_not_change_values(model):
    net, meta = load_model(model)
    data = _data()
    one = descriptor_maps(net, meta, data, chunk_rows=1)
    six = descriptor_maps(net, meta, data, chunk_rows=6)
    for k in one:  # batch composition changes float32 rounding only
        np.testing.assert_allclose(one[k], six[k], atol=1e-6)
    strided = descriptor_maps(net, meta, data, stride=3, chunk_rows=4)
    np.testing.assert_allclose(strided["prob_LAO"], one["prob_LAO"][:, ::3], atol=1e-6)
    np.testing.assert_array_equal(strided["window_centre_index"], [1.5, 4.5, 7.5])
    cols = descriptor_maps(net, meta, data.transpose(1, 0, 2, 3).copy(), axis=0, chunk_rows=4)
    assert cols["prob_LAO"].shape == (7, 6)
    np.testing.assert_allclose(cols["prob_LAO"], one["prob_LAO"].T, atol=1e-6)


def test_store_and_hspy_give_the_same_outputs(tmp_path, model):
    data = _data()
    a = predict_to_dir(model, _write_store(tmp_path / "scan.zarr", data), tmp_path / "out_a", chunk_rows=3)
    hspy = open_4dstem(_write_hspy(tmp_path / "scan.hspy", data))
    assert hspy.data.shape == data.shape and hspy.sampling_mrad == (2.5, 2.5)
    b = predict_to_dir(model, tmp_path / "scan.hspy", tmp_path / "out_b", chunk_rows=3)
    for out in ("out_a", "out_b"):
        assert {p.name for p in (tmp_path / out).iterdir()} == {"descriptors.zarr", "maps.png", "summary.json"}
    ga, gb = zarr.open_group(str(tmp_path / "out_a" / "descriptors.zarr"), mode="r"), \
        zarr.open_group(str(tmp_path / "out_b" / "descriptors.zarr"), mode="r")
    assert set(ga.array_keys()) == {"class_index", "confidence", "prob_LAO", "prob_STO", "window_centre_index"}
    for k in ga.array_keys():
        np.testing.assert_array_equal(ga[k][:], gb[k][:])
    assert a["class_fractions"] == b["class_fractions"] and sum(a["class_fractions"].values()) == pytest.approx(1)
    assert a["maps"]["prob_LAO"] == [6, 7] and a["warnings"] == []
    assert json.loads((tmp_path / "out_a" / "summary.json").read_text())["model"]["class_names"] == NAMES
    assert ga.attrs["settings"]["window_value_at"] == "window start"


def test_line_scan_in_hspy_is_one_row(tmp_path, model):
    data = _data((10, K, K))
    four = open_4dstem(_write_hspy(tmp_path / "line.hspy", data))
    assert four.data.shape == (1, 10, K, K)


def test_regression_mc_dropout_is_finite_and_reproducible(tmp_path):
    net, meta = load_model(_save(tmp_path / "reg", task="regression", dropout=0.5))
    data = _data()
    plain = descriptor_maps(net, meta, data)
    assert set(plain) == {"value", "std", "window_centre_index"} and np.isnan(plain["std"]).all()
    mc = descriptor_maps(net, meta, data, mc_dropout=8, seed=3)
    again = descriptor_maps(net, meta, data, mc_dropout=8, seed=3)
    assert np.isfinite(mc["std"]).all() and (mc["std"] > 0).any()
    np.testing.assert_array_equal(mc["std"], again["std"])
    np.testing.assert_array_equal(mc["value"], plain["value"])  # the value is the deterministic pass
    assert not net.training and not any(m.training for m in net.modules())
    other = descriptor_maps(net, meta, data, mc_dropout=8, seed=4)
    assert not np.array_equal(other["std"], mc["std"])


def test_binning_sums_blocks_and_fixes_the_pattern_size(model):
    net, meta = load_model(model)
    big = _data((6, 10, 2 * K + 1, 2 * K + 1))
    with pytest.raises(InverscopeError, match=r"\(4, 19, 19\).*\(4, 9, 9\).*--bin 2") as err:
        descriptor_maps(net, meta, big)
    assert "\n" not in str(err.value)
    binned = bin_patterns(big, 2)
    np.testing.assert_allclose(binned[0, 0, 0, 0], big[0, 0, 0:2, 0:2].sum(), rtol=1e-6)
    np.testing.assert_allclose(descriptor_maps(net, meta, big, bin_factor=2)["prob_LAO"],
                               descriptor_maps(net, meta, binned)["prob_LAO"], atol=1e-6)


def test_input_errors_are_one_line(tmp_path, model):
    net, meta = load_model(model)
    data = _data()
    data[2, 3, 4, 4] = np.nan
    data[5, 9, 0, 0] = np.inf
    with pytest.raises(InverscopeError, match="2 of .* NaN or infinite"):
        descriptor_maps(net, meta, data, chunk_rows=6)
    with pytest.raises(InverscopeError, match="fewer than the model's 4"):
        descriptor_maps(net, meta, _data((2, 3, K, K)))
    with pytest.raises(InverscopeError, match="expects"):
        predict_stacks(net, meta, _data((5, 3, K, K)))
    with pytest.raises(InverscopeError, match="no such file"):
        open_4dstem(tmp_path / "missing.hspy")
    (tmp_path / "scan.xyz").write_text("x")
    with pytest.raises(InverscopeError, match=r"unknown file extension '\.xyz'.*\.hspy"):
        open_4dstem(tmp_path / "scan.xyz")
    (tmp_path / "broken.hspy").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(InverscopeError, match="could not read"):
        open_4dstem(tmp_path / "broken.hspy")
    with pytest.raises(InverscopeError, match="no 3D or 4D"):
        open_4dstem(_write_hspy(tmp_path / "image.hspy", _data((K, K))))
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(InverscopeError, match="not a readable Zarr store"):
        open_4dstem(tmp_path / "junk.zarr")
    with pytest.raises(InverscopeError, match="did not finish"):
        open_4dstem(_write_store(tmp_path / "partial.zarr", _data(), complete=False))


def test_truncated_chunk_is_a_read_error(tmp_path, model):
    net, meta = load_model(model)
    path = _write_store(tmp_path / "scan.zarr", _data())
    chunk = next(p for p in (path / "cbed").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:10])
    with pytest.raises(InverscopeError, match="could not read scan lines"):
        descriptor_maps(net, meta, open_4dstem(path).data)


def test_existing_output_is_never_overwritten(tmp_path, model):
    store = _write_store(tmp_path / "scan.zarr", _data())
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InverscopeError, match="not empty"):
        predict_to_dir(model, store, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    with pytest.raises(InverscopeError):  # a failure after loading leaves no output behind
        predict_to_dir(model, store, tmp_path / "new", bin_factor=10)  # 0 x 0 px: refused after loading
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_campaign_store_is_predicted_stack_by_stack(tmp_path, model):
    from inverscope.datasets.campaign import SCHEMA

    net, meta = load_model(model)
    patterns = _data((3, 2, 1, P, K, K))
    patterns[1] = np.nan  # not simulated yet
    g = zarr.open_group(str(tmp_path / "camp.zarr"), mode="w")
    g.create_array("patterns", data=patterns, chunks=(1, 2, 1, P, K, K))
    g.create_array("done", data=np.array([True, False, True]))
    g.create_array("class_index", data=np.array([0, -1, 1], np.int16))
    g.attrs.update({"schema": SCHEMA, "sampling_mrad": [2.5, 2.5], "class_names": NAMES})
    four = open_4dstem(tmp_path / "camp.zarr")
    assert four.stacks and four.data.shape == (6, P, K, K) and four.index_shape == (3, 2, 1)
    summary = predict_to_dir(model, tmp_path / "camp.zarr", tmp_path / "out")
    got = zarr.open_group(str(tmp_path / "out" / "descriptors.zarr"), mode="r")
    assert got["class_index"].shape == (3, 2, 1) and (got["class_index"][1] == -1).all()
    prob = torch.softmax(torch.from_numpy(_by_hand(net, meta, patterns[[0, 2]].reshape(-1, P, K, K))), 1).numpy()
    np.testing.assert_allclose(got["prob_STO"][:][[0, 2]].ravel(), prob[:, 1], atol=1e-6)
    assert np.isnan(got["prob_STO"][1]).all()
    assert 0 <= summary["accuracy_vs_labels"] <= 1 and summary["maps"]["class_index"] == [3, 2, 1]
