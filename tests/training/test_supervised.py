"""Lightning training: learns a separable problem, logs, checkpoints, resumes; models round-trip."""

import json

import numpy as np
import pytest
import torch

from inverscope.core.errors import InverscopeError
from inverscope.models.io import load_model, save_model
from inverscope.models.nets import StackCNN3D, StackCNN3DConfig
from inverscope.models.normalization import fit_normalization
from inverscope.training.supervised import StackTask, TrainConfig, fit


def toy(n, seed):
    """Stacks whose class is a bright spot in the upper or lower half of the pattern."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.01, size=(n, 4, 7, 7)).astype(np.float32)
    y = rng.integers(0, 2, n)
    x[y == 0, :, 1, 3] += 1.0
    x[y == 1, :, 5, 3] += 1.0
    return x, y


def module(max_epochs=8, seed=0):
    torch.manual_seed(seed)
    net = StackCNN3D(StackCNN3DConfig(input_shape=(4, 7, 7), channels=[4], hidden=8, num_outputs=2))
    cfg = TrainConfig(optimizer="adam", lr=0.01, max_epochs=max_epochs, batch_size=16, progress_bar=False, seed=seed)
    xtr, _ = toy(64, 1)
    return StackTask(net, "classification", cfg, fit_normalization(xtr, "none", per_pixel=True), augment=None)


def test_learns_logs_checkpoints_and_resumes(tmp_path):
    train, val = toy(64, 1), toy(32, 2)
    res = fit(module(), train, val, tmp_path, "toy")
    assert res.history[-1]["val_acc"] >= 0.95 and res.epochs == 8
    out = tmp_path / "toy"
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "csv" / "metrics.csv").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    res2 = fit(module(max_epochs=10), train, val, tmp_path, "toy")  # resumes at epoch 8
    epochs = [h["epoch"] for h in res2.history]
    assert epochs == list(range(10)) and res2.epochs == 10


def test_same_seed_same_weights(tmp_path):
    train, val = toy(32, 1), toy(16, 2)
    a = fit(module(max_epochs=2), train, val, tmp_path / "a", "t").module.net.state_dict()
    b = fit(module(max_epochs=2), train, val, tmp_path / "b", "t").module.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_model_roundtrip_and_bad_metadata(tmp_path):
    m = module()
    save_model(tmp_path / "m", m.net, "stack_cnn3d", {"task": "classification", "class_names": ["a", "b"]})
    net, meta = load_model(tmp_path / "m.safetensors")
    x = torch.rand(3, 4, 7, 7)
    m.net.eval()
    assert torch.equal(net(x), m.net(x)) and meta["class_names"] == ["a", "b"]
    raw = json.loads((tmp_path / "m.json").read_text())
    raw["config"]["channels"] = [5]
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(InverscopeError, match="do not match"):
        load_model(tmp_path / "m")
    (tmp_path / "m.json").unlink()
    with pytest.raises(InverscopeError, match="needs both"):
        load_model(tmp_path / "m")


def test_streaming_training_from_fresh_simulations(tmp_path):
    """Train straight from the torch simulator: no store is written."""
    from torch.utils.data import DataLoader

    from inverscope.datasets.examples import StreamingSimulation
    from tests.datasets.test_campaign import tiny_config

    cfg = tiny_config()
    torch.manual_seed(0)
    net = StackCNN3D(StackCNN3DConfig(input_shape=(5, 9, 9), channels=[2], hidden=4, num_outputs=2))
    stream = StreamingSimulation(cfg, ["rough", "intermixed"], start=0, max_samples=3)
    val = StreamingSimulation(cfg, ["rough", "intermixed"], start=100, max_samples=2)
    x0 = np.stack([x.numpy() for x, _ in StreamingSimulation(cfg, ["rough", "intermixed"], max_samples=2)])
    task = StackTask(net, "classification", TrainConfig(max_epochs=1, progress_bar=False, optimizer="adam", lr=1e-3),
                     fit_normalization(x0, "none", per_pixel=True))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = fit(task, DataLoader(stream, batch_size=4), DataLoader(val, batch_size=8), tmp_path, "stream",
              limit_train_batches=2)
    assert res.epochs == 1 and "val_loss" in res.history[-1]
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not list(tmp_path.rglob("*.zarr"))
