"""BEPS loop readers: bundled real data (Agar et al. 2019) and round trips of every format."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io

from inverscope.core.errors import InverscopeError
from inverscope.datasets.io.beps import BEPSData, load_beps, load_example

ROWS, COLS, STEPS = 5, 7, 40  # non-square so a transposed grid is caught


@pytest.fixture(scope="module")
def synth():
    rng = np.random.default_rng(7)
    loops = rng.normal(size=(ROWS, COLS, STEPS))
    voltage = np.concatenate([np.linspace(10, -10, STEPS // 2), np.linspace(-9, 10, STEPS // 2)])
    return loops, voltage


def test_real_piezoresponse():
    d = load_example("pzt_piezoresponse")
    assert isinstance(d, BEPSData)
    assert d.loops.shape == (60, 60, 96) and d.loops.dtype == np.float64
    assert d.flat().shape == (3600, 96)
    nan = np.argwhere(np.isnan(d.loops))
    assert len(nan) == 3
    assert {tuple(p[:2]) for p in nan} == {(2, 29), (2, 31)}
    assert d.voltage.shape == (96,)
    assert d.voltage[0] == 16.0 and d.voltage.min() == -16.0
    assert np.allclose(np.abs(np.diff(d.voltage)), 2 / 3)
    assert d.channel == "Loopdata_mixed"
    assert "VoltageDC_mixed" in d.extra and "Joshua C Agar" in d.extra["license"]


def test_real_resonance():
    d = load_example("pzt_resonance")
    assert d.loops.shape == (60, 60, 96)
    assert np.isfinite(d.loops).all()
    assert d.voltage[0] == 16.0 and d.voltage.shape == (96,)
    with pytest.raises(InverscopeError, match="pzt_piezoresponse"):
        load_example("nope")


def _check(d, loops, voltage):
    assert d.loops.shape == (ROWS, COLS, STEPS)
    np.testing.assert_array_equal(d.loops, loops)
    np.testing.assert_array_equal(d.voltage, voltage)


def test_mat_roundtrip(tmp_path, synth):
    loops, voltage = synth
    p = tmp_path / "x.mat"
    scipy.io.savemat(p, {"Loops": loops, "Voltage": voltage[:, None], "Other": np.ones((3, 2))})
    d = load_beps(p)
    _check(d, loops, voltage)
    assert d.channel == "Loops" and "Other" in d.extra


def _write_usid(p, loops, voltage, shuffle=False):
    # USID: positions are rows of Raw_Data, row-major over the grid: position p = r * COLS + c.
    # Position_Indices column 0 is x (grid column, fastest varying), column 1 is y (grid row).
    y, x = np.divmod(np.arange(ROWS * COLS), COLS)
    idx = np.stack([x, y], axis=1)
    raw = loops.reshape(ROWS * COLS, STEPS)
    if shuffle:
        order = np.random.default_rng(1).permutation(len(raw))
        idx, raw = idx[order], raw[order]
    with h5py.File(p, "w") as f:
        g = f.create_group("Measurement_000/Channel_000")
        g["Raw_Data"] = raw
        g["Position_Indices"] = idx
        g["Position_Indices"].attrs["labels"] = ["X", "Y"]
        g["Position_Values"] = idx.astype(float) * 0.1
        g["Spectroscopic_Values"] = voltage[None, :]
        g["Spectroscopic_Values"].attrs["labels"] = ["DC_Offset"]


@pytest.mark.parametrize("shuffle", [False, True])
def test_usid_roundtrip(tmp_path, synth, shuffle):
    loops, voltage = synth
    p = tmp_path / "usid.h5"
    _write_usid(p, loops, voltage, shuffle)
    d = load_beps(p)
    _check(d, loops, voltage)
    assert d.source.startswith("hdf5-usid")


def test_usid_dc_row_chosen(tmp_path, synth):
    loops, voltage = synth
    p = tmp_path / "usid2.hdf5"
    _write_usid(p, loops, voltage)
    with h5py.File(p, "a") as f:
        g = f["Measurement_000/Channel_000"]
        del g["Spectroscopic_Values"]
        g["Spectroscopic_Values"] = np.stack([np.zeros(STEPS), voltage])
        g["Spectroscopic_Values"].attrs["labels"] = ["Field", "DC_Offset"]
    _check(load_beps(p), loops, voltage)


def test_plain_and_nsid_hdf5(tmp_path, synth):
    loops, voltage = synth
    p = tmp_path / "plain.h5"
    with h5py.File(p, "w") as f:
        f["data/amplitude"] = loops
        f["data/phase"] = loops * 2
        f["data/voltage"] = voltage
    with pytest.raises(InverscopeError, match="several loop arrays"):
        load_beps(p)
    _check(load_beps(p, channel="amplitude"), loops, voltage)
    np.testing.assert_array_equal(load_beps(p, channel="data/phase").loops, loops * 2)

    p = tmp_path / "nsid.h5"
    with h5py.File(p, "w") as f:
        ds = f.create_dataset("Measurement_000/Channel_000/loops", data=np.moveaxis(loops, -1, 0))
        ds.attrs["data_type"] = "SPECTRAL_IMAGE"
        for i, (n, v, kind) in enumerate([("bias", voltage, "spectral"), ("y", np.arange(ROWS), "spatial"),
                                          ("x", np.arange(COLS), "spatial")]):
            s = f.create_dataset(f"Measurement_000/Channel_000/{n}", data=v)
            s.attrs["dimension_type"] = kind
            s.make_scale(n)
            ds.dims[i].attach_scale(s)
    d = load_beps(p)
    _check(d, loops, voltage)
    assert d.source.startswith("hdf5-nsid")


def test_npz_npy_and_2d(tmp_path, synth):
    loops, voltage = synth
    p = tmp_path / "x.npz"
    np.savez(p, loops=loops, voltage=voltage)
    _check(load_beps(p), loops, voltage)
    p = tmp_path / "flat.npz"
    np.savez(p, pr=loops.reshape(-1, STEPS), bias_voltage=voltage)
    _check(load_beps(p, channel="pr", grid_shape=(ROWS, COLS)), loops, voltage)

    p = tmp_path / "x.npy"
    np.save(p, loops)
    _check(load_beps(p, voltage=voltage), loops, voltage)
    d = load_beps(p)
    assert "not volts" in d.extra["warning"]
    np.testing.assert_array_equal(d.voltage, np.arange(STEPS))
    p = tmp_path / "flat.npy"
    np.save(p, loops.reshape(-1, STEPS))
    _check(load_beps(p, voltage=voltage, grid_shape=(ROWS, COLS)), loops, voltage)
    with pytest.raises(InverscopeError, match="grid_shape"):
        load_beps(p, voltage=voltage)


def test_errors(tmp_path, synth):
    loops, voltage = synth
    with pytest.raises(InverscopeError, match="does not exist") as e:
        load_beps(tmp_path / "missing.mat")
    assert "missing.mat" in str(e.value)
    bad = tmp_path / "x.csv"
    bad.write_text("1,2\n")
    with pytest.raises(InverscopeError, match=r"unsupported extension '\.csv'.*\.mat"):
        load_beps(bad)
    p = tmp_path / "noloops.mat"
    scipy.io.savemat(p, {"a": np.ones((3, 4))})
    with pytest.raises(InverscopeError, match="no loop array"):
        load_beps(p)
    p = tmp_path / "x.mat"
    scipy.io.savemat(p, {"Loops": loops, "Voltage": voltage})
    with pytest.raises(InverscopeError, match="channel 'nope' does not exist; available: Loops, Voltage"):
        load_beps(p, channel="nope")
    with pytest.raises(InverscopeError, match="39 values.*40 steps"):
        load_beps(p, voltage=voltage[:-1])
    p2 = tmp_path / "short.npz"
    np.savez(p2, loops=loops, voltage=voltage[:10])
    with pytest.raises(InverscopeError, match="10 values.*40 steps"):
        load_beps(p2)
    p3 = tmp_path / "nan.npy"
    np.save(p3, np.full((2, 3, 4), np.nan))
    with pytest.raises(InverscopeError, match="all NaN"):
        load_beps(p3)
    p4 = tmp_path / "usid.h5"
    _write_usid(p4, loops, voltage)
    with pytest.raises(InverscopeError, match="channel 'Foo' does not exist"):
        load_beps(p4, channel="Foo")
    p5 = tmp_path / "broken.h5"
    p5.write_text("not hdf5")
    with pytest.raises(InverscopeError, match="cannot be read"):
        load_beps(p5)
