"""Fault injection (issue 10): campaigns SIGKILLed at random moments resume to the same bits.

Every kill is a SIGKILL of a real `inverscope campaign` process (its whole process group, or
one Dask worker), at a moment drawn from a seeded generator: once the store holds a random
number of finished samples, plus a random delay, so kills land while a sample is simulated,
while one is written and while the Dask cluster runs. After every kill the store's lock is
free (the kernel released the dead process's flock) and each sample flagged done already
equals the reference; the final rerun exits 0 and leaves every array bit-identical to one
uninterrupted run.
"""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
import zarr

from inverscope.core.io import exclusive_lock
from inverscope.datasets.campaign import CampaignConfig, open_campaign, run_campaign

HERE = Path(__file__).resolve().parent
N = 16
# ~0.1 s a sample in one process, ~2 s for the campaign: long enough to kill it mid-way.
CONFIG = {"name": "faults", "num_samples": N, "seed": 11, "structure": {"depth_cells": 6, "n_sto": 2, "n_lao": 2},
          "microscope": {"sampling_angstrom": 0.12, "phonon_configs": 6, "semiangle_mrad": 12,
                         "detector_shape": [7, 7]},
          "lines": {"num_positions": 3}, "thicknesses_cells": [4, 6]}
ARRAYS = ("patterns", "class_index", "step_cells", "intermix_fraction", "checksum", "done")
RUN_TIMEOUT_S = 180
SEED = int(os.environ.get("INVERSCOPE_FAULT_SEED", "20261101"))  # set it to explore other kill moments


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "campaign.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="module")
def reference(config_file):
    """Arrays and attributes of one uninterrupted in-process run."""
    path = config_file.parent / "reference.zarr"
    run_campaign(CampaignConfig.model_validate(CONFIG), path)
    g = open_campaign(path)
    assert g.attrs["complete"]
    return {"attrs": dict(g.attrs), **{key: g[key][:] for key in ARRAYS}}


class Launcher:
    """Starts CLI campaigns in their own sessions; kills whatever is left at teardown."""

    def __init__(self, log_dir: Path):
        self.log_dir, self.procs = log_dir, []

    def start(self, config_file, store, workers=0, helper_env=None) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "inverscope.cli"]
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
        if helper_env:
            cmd = [sys.executable, str(HERE / "kill_at_write.py")]
            env.update(helper_env, KILL_STORE=str(store))
        cmd += ["campaign", str(config_file), "--out", str(store), "--quiet"]
        if workers:
            cmd += ["--workers", str(workers)]
        log = self.log_dir / f"run{len(self.procs)}.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        proc.log = log
        self.procs.append(proc)
        return proc

    def finish(self, proc) -> tuple[int, str]:
        """Wait for `proc` to end by itself; (exit status, output)."""
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            pytest.fail(f"campaign still running after {RUN_TIMEOUT_S} s:\n{output(proc)}")
        return rc, output(proc)

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()


@pytest.fixture
def launcher(tmp_path):
    la = Launcher(tmp_path)
    yield la
    la.close()


def output(proc) -> str:
    return Path(proc.log).read_text(errors="replace")


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def gone(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE  # dead, waiting to be reaped by its (new) parent
    except psutil.NoSuchProcess:
        return True


def kill_group(proc) -> None:
    """SIGKILL the campaign's process group (the CLI and its Dask workers) and wait until all are dead."""
    members = process_tree(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while not all(gone(p) for p in members):
        assert time.monotonic() < deadline, f"processes survived SIGKILL of their group: {members}"
        time.sleep(0.02)


def done_count(store) -> int:
    """Samples flagged done in `store` (-1 while it does not exist yet or is being created)."""
    try:
        return int(zarr.open_group(str(store), mode="r")["done"][:].sum())
    except Exception:
        return -1


def check_after_kill(store, reference) -> int:
    """The lock is free and every sample flagged done already equals the reference; returns how many."""
    with exclusive_lock(store, "campaign store"):  # raises StoreLocked if the dead campaign still held it
        pass
    g = open_campaign(store)
    done = g["done"][:]
    idx = np.flatnonzero(done)
    for key in ARRAYS:
        assert np.array_equal(g[key][:][idx], reference[key][idx]), f"{key} of a finished sample differs after a kill"
    assert not g.attrs["complete"] or done.all()
    return int(done.sum())


def assert_equals_reference(store, reference) -> None:
    g = open_campaign(store)
    assert g.attrs["complete"] is True
    for key in ARRAYS:
        assert np.array_equal(g[key][:], reference[key]), f"{key} differs from the uninterrupted run"
    assert dict(g.attrs) == reference["attrs"]


def resumed_counts(out: str) -> tuple[int, int]:
    """(simulated, skipped) from the CLI's last line."""
    m = re.search(r"(\d+) samples simulated.*?(\d+) already there", out)
    assert m, out
    return int(m[1]), int(m[2])


def kill_repeatedly(launcher, config_file, store, reference, rng, kills, workers=0, jitter_s=0.1,
                    margin=3) -> list[tuple]:
    """SIGKILL campaigns on `store` until `kills` of them died mid-way, one after the other.

    Each run is killed once the store holds a random number of finished samples (more than
    it had at the start, at most N - margin; kill j draws from the j-th of `kills` equal
    parts of the run) plus a random delay of up to `jitter_s`. A kill counts when the run
    had added samples and left some unfinished. A run that finished before its kill (or whose kill
    landed after its last sample, e.g. while the Dask cluster shut down) leaves a complete
    store: start again on a fresh one, at most 3 times.
    """
    history = []
    for _attempt in range(3):
        history = []
        while len(history) < kills:
            before, j = max(done_count(store), 0), len(history)
            span = (N - margin) // kills  # kill j aims at the j-th part of the run
            lo = max(before + 1, 1 + j * span)
            hi = N - margin if j == kills - 1 else max(lo, (j + 1) * span)
            if lo > N - margin:
                break
            target = rng.randint(lo, hi)
            delay = rng.uniform(0, jitter_s)
            proc = launcher.start(config_file, store, workers)
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while proc.poll() is None and done_count(store) < target:
                assert time.monotonic() < deadline, output(proc)
                time.sleep(0.01)
            time.sleep(delay)
            ended = proc.poll() is not None
            kill_group(proc)
            if ended:  # it finished before the kill
                assert proc.returncode == 0, output(proc)
                break
            after = check_after_kill(store, reference)
            assert after >= target > before, (target, before, after)
            if after == N:  # killed after its last sample: not mid-way
                break
            history.append((target, round(delay, 3), before, after))
        if len(history) == kills:
            return history
        print("kills that did not interrupt mid-way; starting again on a fresh store:", history)
        shutil.rmtree(store, ignore_errors=True)
    pytest.fail(f"could not land {kills} kills mid-campaign in 3 attempts (last: {history})")


def test_in_process_campaign_sigkilled_repeatedly_resumes_bit_for_bit(launcher, config_file, reference, tmp_path):
    rng = random.Random(SEED)
    store = tmp_path / "killed.zarr"
    history = kill_repeatedly(launcher, config_file, store, reference, rng, kills=3)
    print("kills (target, delay, done before, done after):", history)
    # one more kill at a random moment of start-up (imports, lock, verification of finished samples)
    before = done_count(store)
    proc = launcher.start(config_file, store)
    delay = rng.uniform(0.2, 1.5)
    time.sleep(delay)
    kill_group(proc)
    at_end = check_after_kill(store, reference)
    print(f"start-up kill after {delay:.2f} s: {before} -> {at_end} done samples")
    assert at_end >= before
    rc, out = launcher.finish(launcher.start(config_file, store))
    assert rc == 0, out
    assert "in use" not in out and "damaged" not in out
    assert resumed_counts(out) == (N - at_end, at_end)  # only unfinished samples were simulated
    assert_equals_reference(store, reference)
    assert all(0 < after < N for *_, after in history), history


def test_local_cluster_campaign_sigkilled_repeatedly_resumes_bit_for_bit(launcher, config_file, reference, tmp_path):
    rng = random.Random(SEED + 1)
    store = tmp_path / "cluster.zarr"
    history = kill_repeatedly(launcher, config_file, store, reference, rng, kills=2, workers=2,
                              jitter_s=0.1, margin=5)
    print("kills (target, delay, done before, done after):", history)
    before = done_count(store)
    rc, out = launcher.finish(launcher.start(config_file, store, workers=2))
    assert rc == 0, out
    assert "in use" not in out and "damaged" not in out
    assert resumed_counts(out) == (N - before, before)
    assert_equals_reference(store, reference)
    assert all(0 < after < N for *_, after in history), history


def dask_workers(pid: int) -> list[psutil.Process]:
    """The LocalCluster's worker processes below the CLI process (spawned by multiprocessing)."""
    found = []
    for p in process_tree(pid)[1:]:
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if ("spawn_main" in cmd or "--multiprocessing-fork" in cmd) and "resource_tracker" not in cmd:
            found.append(p)
    return found


def test_one_sigkilled_dask_worker_is_rescheduled_and_the_campaign_finishes(launcher, config_file, reference,
                                                                            tmp_path):
    rng = random.Random(SEED + 2)
    store = tmp_path / "worker.zarr"
    target = rng.randint(1, 4)
    proc = launcher.start(config_file, store, workers=2)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while proc.poll() is None and done_count(store) < target:
        assert time.monotonic() < deadline, output(proc)
        time.sleep(0.01)
    workers = dask_workers(proc.pid)
    assert len(workers) == 2, [p.cmdline() for p in process_tree(proc.pid)]
    victim = rng.choice(workers)
    victim.send_signal(signal.SIGKILL)
    at_kill = done_count(store)
    print(f"killed Dask worker {victim.pid} at {at_kill} of {N} done samples (target {target})")
    assert proc.poll() is None and at_kill < N - 1, "the worker was killed after the campaign's last task"
    rc, out = launcher.finish(proc)
    assert rc == 0, out
    assert gone(victim) and resumed_counts(out) == (N, 0)
    check_after_kill(store, reference)  # and the lock was released at exit
    assert_equals_reference(store, reference)


def test_kill_between_a_samples_data_and_its_done_flag(launcher, config_file, reference, tmp_path):
    """Deterministic: SIGKILL just before the 5th done flag is written; sample 4's data is on disk, unflagged."""
    store = tmp_path / "flag.zarr"
    proc = launcher.start(config_file, store, helper_env={"KILL_KEY": "done/c/0", "KILL_AT": "5"})
    rc, out = launcher.finish(proc)
    assert rc == -signal.SIGKILL, out
    assert check_after_kill(store, reference) == 4
    g = open_campaign(store)
    assert np.array_equal(g["patterns"][4], reference["patterns"][4]) and not g["done"][4]
    stats = run_campaign(CampaignConfig.model_validate(CONFIG), store)
    assert stats["simulated"] == N - 4 and stats["repaired"] == []
    assert_equals_reference(store, reference)


@pytest.mark.parametrize("key,contains", [("done/zarr.json", ""), ("zarr.json", '"inverscope_version"')],
                         ids=["before-attributes", "between-attributes"])
def test_kill_while_the_store_is_created(launcher, config_file, reference, tmp_path, key, contains):
    store = tmp_path / "created.zarr"
    proc = launcher.start(config_file, store, helper_env={"KILL_KEY": key, "KILL_AT": "1", "KILL_CONTAINS": contains})
    rc, out = launcher.finish(proc)
    if rc != -signal.SIGKILL:  # the helper must really have killed the creation
        pytest.fail(f"expected the helper to SIGKILL itself, got exit {rc}:\n{out}")
    run_campaign(CampaignConfig.model_validate(CONFIG), store)
    assert_equals_reference(store, reference)
