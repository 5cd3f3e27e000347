"""Campaign stores never reported complete with holes; bad configs, busy stores, dead schedulers
and absurd sizes are refused before a store exists."""

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
import zarr

from inverscope.core.errors import InverscopeError
from inverscope.core.io import StoreLocked, exclusive_lock
from inverscope.core.resources import ResourceError
from inverscope.datasets.campaign import open_campaign, run_campaign, verify_samples
from tests.studies.cli_helpers import cli, one_line_error
from tests.datasets.test_campaign import tiny_config


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    run_campaign(tiny_config(), path)
    return path


def arrays(path) -> dict:
    g = open_campaign(path)
    return {k: g[k][:] for k in ("patterns", "class_index", "step_cells", "intermix_fraction", "checksum", "done")}


def same(a, b) -> bool:
    return all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


def copy_store(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_deleted_chunks_are_found_and_simulated_again(reference, tmp_path):
    path = copy_store(reference, tmp_path / "c.zarr")
    for i in (1, 4):
        (path / "patterns" / "c" / str(i) / "0" / "0" / "0" / "0" / "0").unlink()
    assert verify_samples(zarr.open_group(str(path), mode="r")) == [1, 4]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config().model_dump(mode="json")))
    r = cli("campaign", cfg, "--out", path)
    assert r.returncode == 0, r.stderr
    assert "2 finished samples" in r.stderr and "1, 4" in r.stderr and "2 of them damaged" in r.stderr
    assert same(arrays(path), arrays(reference)) and open_campaign(path).attrs["complete"] is True


def test_corrupted_chunk_bytes_are_caught_by_the_checksum(reference, tmp_path):
    path = copy_store(reference, tmp_path / "c.zarr")
    g = zarr.open_group(str(path), mode="r+")
    x = g["patterns"][2]
    x[0, 0, 1, 3, 3] *= 1.0001  # finite, plausible, wrong
    g["patterns"][2] = x
    chunk = path / "patterns" / "c" / "5" / "0" / "0" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])  # a truncated write
    stats = run_campaign(tiny_config(), path)
    assert stats["repaired"] == [2, 5] and stats["simulated"] == 2
    assert same(arrays(path), arrays(reference))


def test_a_finished_store_resumes_to_nothing_and_stays_complete(reference, tmp_path):
    path = copy_store(reference, tmp_path / "c.zarr")
    stats = run_campaign(tiny_config(), path)
    assert stats == {**stats, "simulated": 0, "skipped": 6, "repaired": []}
    assert open_campaign(path).attrs["complete"] is True


def test_physics_errors_leave_no_store_and_the_corrected_config_runs(tmp_path):
    path = tmp_path / "c.zarr"
    coarse = tiny_config(microscope={"sampling_angstrom": 1.0, "semiangle_mrad": 15, "detector_shape": [9, 9],
                                     "phonon_configs": 0})
    with pytest.raises(InverscopeError, match="sampling_angstrom"):
        run_campaign(coarse, path)
    assert not path.exists() and [p.name for p in tmp_path.iterdir()] == []
    wide = tiny_config(num_samples=1, microscope={"sampling_angstrom": 0.1, "semiangle_mrad": 15,
                                                  "detector_shape": [999, 999], "phonon_configs": 0})
    with pytest.raises(InverscopeError, match="detector|shape"):
        run_campaign(wide, path)
    assert not path.exists()
    good = tiny_config(num_samples=1, microscope={"sampling_angstrom": 0.1, "semiangle_mrad": 15,
                                                  "detector_shape": [9, 9], "phonon_configs": 0})
    assert run_campaign(good, path)["simulated"] == 1


def test_an_empty_store_of_another_config_is_replaced_a_used_one_refused(reference, tmp_path):
    path = tmp_path / "c.zarr"
    run_campaign(tiny_config(num_samples=3), path, indices=[])  # created, nothing finished
    assert open_campaign(path)["done"][:].sum() == 0
    stats = run_campaign(tiny_config(num_samples=2), path, indices=[0])
    assert stats["simulated"] == 1 and open_campaign(path)["done"].shape == (2,)
    with pytest.raises(InverscopeError, match="another campaign"):
        run_campaign(tiny_config(num_samples=3), path)
    assert open_campaign(path)["done"][:].tolist() == [True, False]


def test_a_store_in_use_is_refused_with_one_line(reference, tmp_path):
    path = copy_store(reference, tmp_path / "c.zarr")
    before = arrays(path)
    with exclusive_lock(path):
        with pytest.raises(StoreLocked, match="in use by another inverscope process"):
            run_campaign(tiny_config(), path)
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump(tiny_config().model_dump(mode="json")))
        line = one_line_error(cli("campaign", cfg, "--out", path, "--quiet"))
        assert str(path) in line and f"pid {os.getpid()}" in line
    assert same(arrays(path), before)
    assert run_campaign(tiny_config(), path)["simulated"] == 0  # released with the holder


def test_unreachable_scheduler_is_one_line_and_leaves_no_store(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config().model_dump(mode="json")))
    line = one_line_error(cli("campaign", cfg, "--out", tmp_path / "c.zarr", "--scheduler", "tcp://127.0.0.1:9"))
    assert "--scheduler tcp://127.0.0.1:9" in line and "no Dask scheduler answered" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.parametrize("over,needle", [
    ({"num_samples": 10_000_000_000}, "of memory.*sample flags and labels"),
    ({"microscope": {"sampling_angstrom": 1e-6}}, "of memory"),
    ({"structure": {"depth_cells": 10_000_000}, "thicknesses_cells": None}, "of memory"),
], ids=["num_samples", "sampling", "depth"])
def test_absurd_sizes_are_refused_with_the_numbers(tmp_path, over, needle):
    path = tmp_path / "c.zarr"
    with pytest.raises(ResourceError, match=needle) as info:
        run_campaign(tiny_config(**over), path)
    assert "available" in str(info.value) or "free there" in str(info.value)
    assert "--no-resource-check" in str(info.value) and not path.exists()


def test_a_store_larger_than_the_free_disk_is_refused(tmp_path, monkeypatch):
    import inverscope.core.io as io

    monkeypatch.setattr(io, "free_disk_bytes", lambda path: 2**30)
    with pytest.raises(ResourceError, match=r"needs up to 6.0[0-9] GiB of disk .* 1 GiB free there"):
        run_campaign(tiny_config(num_samples=1_000_000), tmp_path / "c.zarr")  # 6480 bytes per sample
    assert list(tmp_path.iterdir()) == []
    stats = run_campaign(tiny_config(num_samples=1), tmp_path / "c.zarr", check_resources=False)
    assert stats["simulated"] == 1


def test_out_that_is_a_file_is_refused_before_work(tmp_path):
    f = tmp_path / "c.zarr"
    f.write_text("not a store")
    with pytest.raises(InverscopeError, match="exists and is not a directory"):
        run_campaign(tiny_config(), f)
    assert f.read_text() == "not a store"


def test_two_fresh_starts_on_one_store_one_works_the_other_is_refused(reference, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config().model_dump(mode="json")))
    path = tmp_path / "c.zarr"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    procs = [subprocess.Popen([sys.executable, "-m", "inverscope.cli", "campaign", str(cfg), "--out", str(path), "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) in ([0, 0], [0, 2]), results
    for code, err in results:
        assert "Traceback" not in err
        if code == 2:
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert len(lines) == 1 and "campaign store in use by another inverscope process" in lines[0]
    assert same(arrays(path), arrays(reference))
