"""Every 4D-STEM file family RosettaSciIO reads opens through open_4dstem with its values and calibration.

Each test writes a small file of its format (with RosettaSciIO's own writer where one exists, by
the format's layout otherwise) and compares what open_4dstem returns with the array written.
Zarr stores are covered in tests/datasets/test_store.py and tests/analysis/test_predict.py.
"""

import sys

import h5py
import hdf5plugin
import numpy as np
import pytest

from inverscope.core.errors import InverscopeError
from inverscope.core.units import wavelength_angstrom
from inverscope.datasets.io import open_4dstem

SCAN, DET = (3, 4), (6, 8)  # (scan_y, scan_x), (ky, kx): nothing square, so a swapped axis shows


def _counts(shape=SCAN + DET, dtype=np.uint16, seed=0):
    return np.random.default_rng(seed).integers(0, 250, shape).astype(dtype)


def _signal(data, k_units="mrad", k_scale=1.5, beam_energy_kev=None):
    """A RosettaSciIO signal dictionary, as HyperSpy hands it to a writer."""
    names = ["y", "x", "ky", "kx"][-data.ndim:]
    axes = [{"name": n, "size": s, "offset": 0.0, "scale": k_scale if n.startswith("k") else 1.0,
             "units": k_units if n.startswith("k") else "nm", "navigate": not n.startswith("k")}
            for n, s in zip(names, data.shape)]
    metadata = {"General": {"title": "scan"}, "Signal": {"signal_type": ""}}
    if beam_energy_kev:
        metadata["Acquisition_instrument"] = {"TEM": {"beam_energy": beam_energy_kev}}
    return {"data": data, "axes": axes, "metadata": metadata, "original_metadata": {},
            "attributes": {"_lazy": False}, "tmp_parameters": {}, "learning_results": {}, "models": {},
            "package_info": {"name": "hyperspy", "version": "2.0"}}


def _write_hspy(path, data, **kwargs):
    from rsciio.hspy import file_writer

    extra = kwargs.pop("writer_kwargs", {})
    file_writer(str(path), _signal(data, **kwargs), show_progressbar=False, **extra)
    return path


def _write_blo(path, data):
    from rsciio.blockfile import file_writer

    file_writer(str(path), _signal(data, k_units="cm", k_scale=0.5), show_progressbar=False)
    return path


def _write_arina(folder, data, files=2):
    """A Dectris Arina master file whose data lie in `files` Bitshuffle/LZ4 files, as the detector writes."""
    frames = data.reshape(-1, *data.shape[-2:])
    master = folder / "scan_master.h5"
    with h5py.File(master, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        group = entry.create_group("data")
        group.attrs["NX_class"] = "NXdata"
        for i, part in enumerate(np.array_split(frames, files), start=1):
            name = f"scan_data_{i:06d}.h5"
            with h5py.File(folder / name, "w") as d:
                d.create_dataset("entry/data/data", data=part, chunks=(1, *part.shape[1:]),
                                 **hdf5plugin.Bitshuffle(cname="lz4"))
            group[f"data_{i:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
    return master


def _write_mib(path, raw, frames_per_line):
    """Quantum Detectors Merlin frames: a 384-byte text header, then the big-endian frame, per frame."""
    ky, kx = raw.shape[-2:]
    with open(path, "wb") as f:
        for i, frame in enumerate(raw.reshape(-1, ky, kx)):
            fields = ["MQ1", f"{i + 1:06d}", "00384", "01", f"{kx:04d}", f"{ky:04d}", "U16", "   1x1", "01",
                      "2024-05-06 07:08:09.000000", "0.001000", "0", "0", "0", "1.200000E+2", "5.110000E+2",
                      "3RX", "MQ1A", "2024-05-06T07:08:09.000000000Z", "1000000ns", "12", ""]
            f.write(",".join(fields).encode().ljust(384, b" "))
            f.write(frame.astype(">u2").tobytes())
    path.with_suffix(".hdr").write_text(
        f"HDR,\nFrames in Acquisition (Number):\t{raw.shape[0] * raw.shape[1]}\n"
        f"Frames per Trigger (Number):\t{frames_per_line}\nEnd\t\n")
    return path


def _check(four, expected, sampling):
    assert not four.stacks
    assert four.data.shape == expected.shape
    np.testing.assert_array_equal(four.data.compute(), expected)
    if sampling is None:
        assert four.sampling_mrad is None
    else:
        assert four.sampling_mrad == pytest.approx(sampling, rel=1e-9)


def test_hspy_with_reciprocal_calibration_converts_to_mrad(tmp_path):
    data = _counts().astype(np.float32)
    four = open_4dstem(_write_hspy(tmp_path / "scan.hspy", data, k_units="1/nm", k_scale=0.2, beam_energy_kev=200.0))
    # 0.2 nm^-1 = 0.02 Å^-1 per pixel; angle = wavelength * k, lambda(200 kV) = 0.025079 Å (tabulated)
    _check(four, data, (0.02 * wavelength_angstrom(200e3) * 1e3,) * 2)
    assert four.sampling_mrad[0] == pytest.approx(0.50159, abs=1e-5)
    assert "HSPY" in four.source


def test_hspy_without_beam_energy_has_no_mrad_calibration(tmp_path):
    data = _counts().astype(np.float32)
    _check(open_4dstem(_write_hspy(tmp_path / "scan.hspy", data, k_units="1/nm", k_scale=0.2)), data, None)


@pytest.mark.filterwarnings("ignore:Use Group.require_array")
def test_hyperspy_zspy_directory(tmp_path):
    import numcodecs
    import zarr
    from rsciio.zspy._api import ZspyWriter

    # RosettaSciIO's zspy file_writer builds zarr-2 stores only; its writer runs on a zarr-format-2 group
    data = _counts().astype(np.float32)
    root = zarr.open_group(str(tmp_path / "scan.zspy"), mode="w", zarr_format=2)
    root.attrs.update({"file_format": "ZSpy", "file_format_version": "3.3"})
    group = root.require_group("Experiments").require_group("scan")
    ZspyWriter(root, _signal(data), group, chunks=None, compressor=numcodecs.Blosc(cname="zstd", clevel=1),
               write_dataset=True, show_progressbar=False).write()
    four = open_4dstem(tmp_path / "scan.zspy")
    _check(four, data, (1.5, 1.5))
    assert "ZSPY" in four.source


def test_nanomegas_blockfile(tmp_path):
    data = _counts(SCAN + (8, 8), np.uint8)  # blockfiles hold square 8-bit patterns
    four = open_4dstem(_write_blo(tmp_path / "scan.blo", data))
    _check(four, data, None)  # the .blo diffraction scale is in cm on the screen, not an angle
    assert "Blockfile" in four.source


def test_dectris_arina_master_and_bitshuffle_data_files(tmp_path):
    data = _counts((3, 3, 8, 8))  # Arina records no scan shape: the reader assumes a square scan (and detector)
    master = _write_arina(tmp_path, data)
    with h5py.File(tmp_path / "scan_data_000001.h5", "r") as f:
        assert str(hdf5plugin.BSHUF_ID) in f["entry/data/data"]._filters
    four = open_4dstem(master)
    _check(four, data, None)
    assert "Arina" in four.source and "memory" in four.source


def test_arina_scan_that_is_not_square_opens_as_one_line(tmp_path):
    data = _counts((1, 6, 8, 8))
    four = open_4dstem(_write_arina(tmp_path, data, files=1))
    _check(four, data, None)
    assert "one scan line" in four.source


@pytest.mark.parametrize("suffix", [".emd", ".h5"])
def test_ncem_emd_also_when_named_h5_like_py4dstem(tmp_path, suffix):
    from rsciio.emd import file_writer

    data = _counts().astype(np.float32)
    path = tmp_path / f"scan{suffix}"
    file_writer(str(path), _signal(data, k_scale=0.75))
    four = open_4dstem(path)
    _check(four, data, (0.75, 0.75))
    assert "EMD" in four.source


def test_quantum_detectors_mib_with_hdr(tmp_path):
    raw = _counts()
    four = open_4dstem(_write_mib(tmp_path / "scan.mib", raw, frames_per_line=SCAN[1]))
    _check(four, raw[..., ::-1, :], None)  # Merlin stores frames upside down; RosettaSciIO flips them back


@pytest.mark.parametrize("shape", [SCAN + DET, (5,) + DET])
def test_numpy_npy(tmp_path, shape):
    data = _counts(shape).astype(np.float32)
    np.save(tmp_path / "scan.npy", data)
    _check(open_4dstem(tmp_path / "scan.npy"), data if data.ndim == 4 else data[None], None)


@pytest.mark.parametrize("module, package, make", [
    ("hdf5plugin", "hdf5plugin", lambda p: _write_arina(p, _counts((2, 2, 8, 8)))),
    ("skimage", "scikit-image", lambda p: _write_blo(p / "scan.blo", _counts((2, 2, 8, 8), np.uint8))),
])
def test_missing_optional_package_is_one_line(tmp_path, monkeypatch, module, package, make):
    path = make(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    for name in [m for m in sys.modules if m.startswith(("rsciio.arina", "rsciio.blockfile"))]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(InverscopeError) as err:
        open_4dstem(path)
    message = str(err.value)
    assert message == (f"{path}: reading {'Dectris Arina' if module == 'hdf5plugin' else 'NanoMegas blockfile'} "
                       f"files needs the Python package {package} (pip install {package})")


def test_unregistered_hdf5_filter_names_hdf5plugin(tmp_path, monkeypatch):
    data = _counts().astype(np.float32)
    path = _write_hspy(tmp_path / "scan.hspy", data, writer_kwargs=dict(hdf5plugin.Bitshuffle(cname="lz4")))
    monkeypatch.setitem(sys.modules, "hdf5plugin", None)
    assert h5py.h5z.unregister_filter(hdf5plugin.BSHUF_ID)
    try:
        with pytest.raises(InverscopeError, match=r"reading HyperSpy files needs the Python package hdf5plugin"):
            open_4dstem(path)
    finally:
        monkeypatch.undo()
        hdf5plugin.register(force=True)
    assert h5py.h5z.filter_avail(hdf5plugin.BSHUF_ID)
    _check(open_4dstem(path), data, (1.5, 1.5))


def test_missing_empty_directory_and_unknown_extension(tmp_path):
    with pytest.raises(InverscopeError, match=r"scan\.blo: no such file or directory$"):
        open_4dstem(tmp_path / "scan.blo")
    (tmp_path / "empty.mib").write_bytes(b"")
    with pytest.raises(InverscopeError, match=r"empty\.mib: the file is empty \(0 bytes\)$"):
        open_4dstem(tmp_path / "empty.mib")
    (tmp_path / "folder.hspy").mkdir()
    with pytest.raises(InverscopeError, match=r"folder\.hspy: is a directory, not a HyperSpy file$"):
        open_4dstem(tmp_path / "folder.hspy")
    (tmp_path / "scan.xyz").write_text("x")
    with pytest.raises(InverscopeError) as err:
        open_4dstem(tmp_path / "scan.xyz")
    for part in ("unknown file extension '.xyz'", "Zarr store", ".hspy", ".blo", ".h5 (Dectris Arina", ".emd", ".mib",
                 ".npy"):
        assert part in str(err.value)
    assert "needs" not in str(err.value) and "\n" not in str(err.value)


def test_truncated_files_are_read_errors_not_missing_packages(tmp_path):
    blo = _write_blo(tmp_path / "scan.blo", _counts(SCAN + (8, 8), np.uint8))
    blo.write_bytes(blo.read_bytes()[:-100])  # the last pattern is cut short
    with pytest.raises(InverscopeError, match=r"scan\.blo: read as NanoMegas blockfile but its last pattern cannot "
                                              r"be read \(.*\); is the file truncated or damaged\?$"):
        open_4dstem(blo)
    hspy = _write_hspy(tmp_path / "scan.hspy", _counts().astype(np.float32))
    hspy.write_bytes(hspy.read_bytes()[:2000])
    with pytest.raises(InverscopeError, match=r"scan\.hspy: could not read the file.*truncated or of another format"):
        open_4dstem(hspy)
    (tmp_path / "text.h5").write_text("not hdf5 at all")
    with pytest.raises(InverscopeError) as err:
        open_4dstem(tmp_path / "text.h5")
    assert "does not open as HDF5" in str(err.value) and "needs" not in str(err.value)


def test_damaged_compressed_chunk_is_a_read_error_not_a_missing_filter(tmp_path):
    data = _counts().astype(np.float32)
    # gzip (the writer's default), one pattern a chunk
    path = _write_hspy(tmp_path / "scan.hspy", data, writer_kwargs={"chunks": (1, 1) + DET})
    with h5py.File(path, "r") as f:
        chunk = f["Experiments/scan/data"].id.get_chunk_info_by_coord((SCAN[0] - 1, SCAN[1] - 1, 0, 0))
    raw = bytearray(path.read_bytes())
    raw[chunk.byte_offset + 8:chunk.byte_offset + chunk.size] = bytes(chunk.size - 8)
    path.write_bytes(bytes(raw))
    with pytest.raises(InverscopeError) as err:
        open_4dstem(path)
    assert "last pattern cannot be read" in str(err.value) and "filter returned failure" in str(err.value)
    assert "needs" not in str(err.value)
