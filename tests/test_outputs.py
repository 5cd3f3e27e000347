"""Output destinations: checked before work, staged on their own filesystem (mount points),
never stranded, and a full or read-only disk is one line with nothing half-written."""

import errno
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from inverscope.core.errors import InverscopeError
from inverscope.core.io import OutputError, staged_output
from inverscope.core.resources import ResourceError
from inverscope.studies.simulate4d import SimulateConfig, run_simulation
from tests.studies.cli_helpers import cli, one_line_error
from tests.test_cli import SMALL

#: 16 x 16 positions, 2 thicknesses, 25 x 25 pixels: a 1.28 MB result
BIGGER = {**SMALL, "scan": {"kind": "grid", "end_angstrom": [3.905, 3.905], "gpts": [16, 16]},
          "phonons": {"num_configs": 0}}


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_existing_out_on_another_filesystem_gets_the_result(tmp_path, monkeypatch):
    """`out` is a mount point: a rename between it and its parent fails with EXDEV."""
    import inverscope.core.io as io

    out = tmp_path / "scratch"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    real = os.replace

    def replace(src, dst):
        inside = [Path(p).resolve().is_relative_to(out.resolve()) for p in (src, dst)]
        if inside[0] != inside[1]:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", replace)
    run_simulation(SimulateConfig.model_validate(SMALL), out)
    assert sorted(p.name for p in out.iterdir()) == ["cbed.zarr", "keep.txt", "montage.png", "summary.json"]
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scratch"]  # nothing stranded beside it


def test_a_failed_move_is_retried_by_copy_and_nothing_is_stranded(tmp_path, monkeypatch):
    import inverscope.core.io as io

    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(src)
        if len(calls) == 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", replace)
    with staged_output(tmp_path / "new") as stage:
        (stage / "a.txt").write_text("a")
        (stage / "sub").mkdir()
        (stage / "sub" / "b.txt").write_text("b")
    assert tree(tmp_path) == ["new", "new/a.txt", "new/sub", "new/sub/b.txt"]


def test_failure_inside_the_stage_leaves_out_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_output(out) as stage:
            (stage / "half.zarr").mkdir()
            raise RuntimeError("crash")
    assert tree(tmp_path) == ["out", "out/old.txt"]


@pytest.mark.parametrize("command", ["simulate", "campaign", "run", "predict"])
def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, command):
    out = tmp_path / "out"
    out.write_text("my notes")
    cfg = tmp_path / "c.yaml"
    if command == "simulate":
        cfg.write_text(yaml.safe_dump(SMALL))
        args = ["simulate", cfg]
    elif command == "campaign":
        from tests.datasets.test_campaign import tiny_config

        cfg.write_text(yaml.safe_dump(tiny_config().model_dump(mode="json")))
        args = ["campaign", cfg]
    elif command == "run":
        args = ["run", Path(__file__).parents[1] / "recipes" / "lao_sto_quick.yaml"]
    else:
        (tmp_path / "m.safetensors").write_bytes(b"x")
        args = ["predict", tmp_path / "m.safetensors", tmp_path / "m.safetensors"]
    line = one_line_error(cli(*args, "--out", out, *(["--quiet"] if command != "predict" else [])))
    assert str(out) in line and ("not a directory" in line or "not empty" in line)
    assert out.read_text() == "my notes" and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in tmp_path.iterdir() if not p.name.startswith(".out"))


def test_parent_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a directory"):
        run_simulation(SimulateConfig.model_validate(SMALL), tmp_path / "f" / "out")


def _can_mount() -> bool:
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return False
    probe = Path("/tmp") / f".inverscope-mount-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(probe)], capture_output=True)
    probe.rmdir()
    return ok


CAN_MOUNT = _can_mount()


@contextmanager
def tmpfs(path: Path, size: str, readonly: bool = False):
    path.mkdir()
    opts = f"size={size}" + (",ro" if readonly else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.skipif(not CAN_MOUNT, reason="mounting a tmpfs needs root in a namespace that allows it")
def test_real_mount_point_out(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    with tmpfs(tmp_path / "scratch", "16m") as out:
        r = cli("simulate", cfg, "--out", out, "--quiet")
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in out.iterdir()) == ["cbed.zarr", "config.yaml", "montage.png", "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "scratch"]


@pytest.mark.skipif(not CAN_MOUNT, reason="mounting a tmpfs needs root in a namespace that allows it")
def test_full_disk_is_refused_up_front_or_one_line_with_nothing_half_written(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(BIGGER))
    with tmpfs(tmp_path / "small", "1m") as out:
        line = one_line_error(cli("simulate", cfg, "--out", out, "--quiet"))
        assert "of disk" in line and "free there" in line and "--no-resource-check" in line
        line = one_line_error(cli("simulate", cfg, "--out", out, "--quiet", "--no-resource-check"))
        assert "disk is full" in line
        assert list(out.iterdir()) == []  # the stage was removed
    with tmpfs(tmp_path / "ro", "1m", readonly=True) as out:
        line = one_line_error(cli("simulate", cfg, "--out", out / "result", "--quiet"))
        assert "read-only file system" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable"):
            run_simulation(SimulateConfig.model_validate(SMALL), ro / "out")
    finally:
        ro.chmod(0o755)


def test_simulation_larger_than_memory_is_refused_before_building(tmp_path):
    huge = {**SMALL, "structure": {**SMALL["structure"], "repeat_xy": 100000}, "grid": {"sampling_angstrom": 0.05}}
    with pytest.raises(ResourceError, match="of memory") as info:
        run_simulation(SimulateConfig.model_validate(huge), tmp_path / "out")
    assert "available" in str(info.value) and not (tmp_path / "out").exists()
    from inverscope.core.config import validate

    with pytest.raises(InverscopeError, match="thickness_angstrom: Input should be a finite number"):
        validate(SimulateConfig, {**SMALL, "structure": {**SMALL["structure"], "thickness_angstrom": float("inf")}})


@pytest.mark.skipif(not CAN_MOUNT, reason="mounting a tmpfs needs root in a namespace that allows it")
def test_campaign_on_a_full_disk_stops_with_one_line_and_resumes_bit_for_bit(tmp_path):
    import numpy as np
    import zarr

    from inverscope.datasets.campaign import run_campaign
    from tests.datasets.test_campaign import tiny_config

    cfg = tiny_config(num_samples=12, microscope={"sampling_angstrom": 0.12, "phonon_configs": 0, "semiangle_mrad": 12,
                                                  "detector_shape": [15, 15]})
    run_campaign(cfg, tmp_path / "ref.zarr")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    with tmpfs(tmp_path / "m", "120k") as m:
        line = one_line_error(cli("campaign", tmp_path / "c.yaml", "--out", m / "s.zarr", "--quiet", "--no-resource-check"))
        assert line == f"error: {m / 's.zarr'}: the disk is full; free space and rerun (finished work is kept and resumed)"
        done = zarr.open_group(str(m / "s.zarr"), mode="r")["done"][:]
        assert 0 < done.sum() < 12
        subprocess.run(["mount", "-o", "remount,size=4m", str(m)], check=True)
        r = cli("campaign", tmp_path / "c.yaml", "--out", m / "s.zarr", "--quiet")
        assert r.returncode == 0, r.stderr
        a, b = (zarr.open_group(str(p), mode="r") for p in (tmp_path / "ref.zarr", m / "s.zarr"))
        assert all(np.array_equal(a[k][:], b[k][:]) for k in ("patterns", "class_index", "checksum", "done"))
