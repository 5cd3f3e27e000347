"""A run SIGKILLed twice resumes at the epoch after the last finished one and keeps its whole history."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]

# The toy problem of test_supervised.py, with random validation labels and a large learning
# rate so that the validation loss does not improve every epoch (the old last.ckpt was only
# rewritten on improvement). The module kills its own process at the start of epoch
# kill_after + 1, i.e. after the checkpoints of epoch kill_after are written.
SCRIPT = textwrap.dedent('''
    import json, os, signal, sys, time
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from inverscope.models.nets import StackCNN3D, StackCNN3DConfig
    from inverscope.models.normalization import fit_normalization
    from inverscope.training.supervised import StackTask, TrainConfig, fit

    out_dir, max_epochs, kill_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    def toy(n, seed, noisy=False):
        rng = np.random.default_rng(seed)
        x = rng.uniform(0, 0.01, size=(n, 4, 7, 7)).astype(np.float32)
        y = rng.integers(0, 2, n)
        x[y == 0, :, 1, 3] += 1.0
        x[y == 1, :, 5, 3] += 1.0
        return x, (rng.integers(0, 2, n) if noisy else y)

    class Killed(StackTask):
        def on_train_epoch_start(self):
            e = self.current_epoch
            if not getattr(self, "_reported", False):
                self._reported = True
                print("FIRST_EPOCH", e, flush=True)
            if e == kill_after + 1:
                os.kill(os.getpid(), signal.SIGKILL)

    torch.manual_seed(0)
    net = StackCNN3D(StackCNN3DConfig(input_shape=(4, 7, 7), channels=[4], hidden=8, num_outputs=2))
    cfg = TrainConfig(optimizer="adam", lr=0.1, max_epochs=max_epochs, batch_size=16, progress_bar=False, seed=0)
    train, val = toy(64, 1), toy(32, 2, noisy=True)
    task = Killed(net, "classification", cfg, fit_normalization(train[0], "none", per_pixel=True))
    t = time.perf_counter()
    res = fit(task, train, val, out_dir, "toy")
    seg = time.perf_counter() - t
    print("RESULT", json.dumps({"wall_s": res.wall_s, "segment_s": seg, "epochs": res.epochs,
                                "history": [h["epoch"] for h in res.history]}), flush=True)
''')


def _segment(script, out_dir, max_epochs, kill_after):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), str(out_dir), str(max_epochs), str(kill_after)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    lines = proc.stdout.splitlines()
    first = [int(ln.split()[1]) for ln in lines if ln.startswith("FIRST_EPOCH")]
    result = [json.loads(ln.split(" ", 1)[1]) for ln in lines if ln.startswith("RESULT")]
    return proc, first[0] if first else None, result[0] if result else None


def _history(out):
    return json.loads((out / "history.json").read_text())


def test_resume_after_two_kills_keeps_every_epoch_and_the_total_time(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "toy"
    last = out / "checkpoints" / "last.ckpt"

    proc, first, _ = _segment(script, tmp_path, 14, 5)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert first == 0
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 5  # written after every epoch
    h1 = _history(out)  # on disk although the run never returned
    assert [h["epoch"] for h in h1["history"]] == list(range(6)) and h1["wall_s"] > 0

    proc, first, _ = _segment(script, tmp_path, 14, 9)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert first == 6  # continues after the last finished epoch, not after the last improvement
    h2 = _history(out)
    assert [h["epoch"] for h in h2["history"]] == list(range(10))
    assert h2["wall_s"] > h1["wall_s"]

    proc, first, res = _segment(script, tmp_path, 14, -2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert first == 10 and res is not None
    assert res["epochs"] == 14 and res["history"] == list(range(14))
    h3 = _history(out)
    assert [h["epoch"] for h in h3["history"]] == list(range(14))
    for h in h3["history"]:
        assert {"train_loss", "train_acc", "val_loss", "val_acc"} <= set(h), h
    # the validation loss does not improve every epoch, so the old "last = last improvement" bug is exercised
    val = [h["val_loss"] for h in h3["history"]]
    assert any(b >= min(val[:i + 1]) for i, b in enumerate(val[1:])), val
    # the total time of the three segments, not only of the last one
    assert res["wall_s"] > h2["wall_s"] and res["wall_s"] > res["segment_s"]
    assert h3["wall_s"] == res["wall_s"]


def test_resume_from_a_checkpoint_without_recorder_state(tmp_path):
    """Checkpoints written before the history recorder: fall back to the saved history.json."""
    from inverscope.training.supervised import fit
    from tests.training.test_supervised import module, toy

    train, val = toy(32, 1), toy(16, 2)
    fit(module(max_epochs=3), train, val, tmp_path, "old")
    out = tmp_path / "old"
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    ckpt["callbacks"] = {k: v for k, v in ckpt["callbacks"].items() if "HistoryRecorder" not in k}
    torch.save(ckpt, out / "checkpoints" / "last.ckpt")
    saved = _history(out)
    (out / "history.json").write_text(json.dumps({"history": saved["history"]}))  # as the old code wrote it
    res = fit(module(max_epochs=5), train, val, tmp_path, "old")
    assert [h["epoch"] for h in res.history] == list(range(5)) and res.epochs == 5
    assert res.history[:3] == saved["history"]
    assert [h["epoch"] for h in _history(out)["history"]] == list(range(5))
