"""U-Net for atom finding: shapes, the size error, the ensemble helper, and a tiny overfit."""

import time

import numpy as np
import pytest
import torch

from inverscope.core.errors import InverscopeError
from inverscope.models.nets.unet import UNet, UNetConfig, ensemble_predict


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)          # 2 threads thrash on a loaded 2-core machine (20x slower)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("depth,mode,bn", [(3, "bilinear", True), (4, "transpose", False), (5, "bilinear", False)])
def test_output_shape(depth, mode, bn):
    net = UNet(UNetConfig(n_classes=3, depth=depth, base_channels=4, upsampling=mode, batch_norm=bn, dropout=0.1))
    m = 2 ** depth
    out = net(torch.rand(2, 1, 2 * m, 3 * m))
    assert out.shape == (2, 3, 2 * m, 3 * m)
    assert net.eval()(torch.rand(1, m, m)).shape == (1, 3, m, m)  # (batch, H, W) accepted for 1 channel


def test_size_error_names_sizes_that_fit():
    net = UNet(UNetConfig(n_classes=2, depth=3, base_channels=4))
    with pytest.raises(InverscopeError) as err:
        net(torch.rand(1, 1, 60, 64))
    msg = str(err.value)
    assert "\n" not in msg and "60 x 64" in msg and "multiples of 8" in msg and "56 or 64" in msg
    with pytest.raises(InverscopeError, match="expected"):
        net(torch.rand(1, 2, 64, 64))


def test_config_rejects_bad_depth():
    with pytest.raises(Exception):
        UNetConfig(depth=2)
    with pytest.raises(Exception):
        UNetConfig(depth=6)


def test_ensemble_predict_mean_and_std():
    torch.manual_seed(0)
    nets = [UNet(UNetConfig(n_classes=3, depth=3, base_channels=4)) for _ in range(3)]
    x = torch.rand(2, 1, 16, 16)
    mean, std = ensemble_predict(nets, x)
    assert mean.shape == std.shape == (2, 3, 16, 16)
    assert torch.allclose(mean.sum(1), torch.ones(2, 16, 16), atol=1e-5)
    assert (std > 0).any()
    per_net = torch.stack([torch.softmax(n.eval()(x), dim=1) for n in nets])
    assert torch.allclose(std, per_net.std(0, unbiased=False), atol=1e-6)
    # channels-last nets and input (what inverscope predict uses on CPU) give the same numbers
    for n in nets:
        n.to(memory_format=torch.channels_last)
    mean_cl, std_cl = ensemble_predict(nets, x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(mean_cl, mean, atol=1e-5) and torch.allclose(std_cl, std, atol=1e-5)
    nets[0].train()
    mean1, std1 = ensemble_predict([nets[0]], x)
    assert nets[0].training                                        # mode restored
    assert torch.all(std1 == 0)
    with pytest.raises(InverscopeError):
        ensemble_predict([], x)


def _heatmap_task(n_img=2, size=32, sigma=1.5, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    imgs, targets = [], []
    for _ in range(n_img):
        pts, cls = rng.uniform(4, size - 4, (5, 2)), rng.integers(0, 2, 5)
        m = np.zeros((2, size, size))
        for (x, y), c in zip(pts, cls):
            m[c] += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
        m = np.clip(m, 0, 1)
        imgs.append(m.sum(0) + 0.1 * rng.normal(size=(size, size)))
        t = np.concatenate([m, np.clip(1 - m.sum(0), 0, 1)[None]])
        targets.append(t / t.sum(0, keepdims=True))
    return (torch.tensor(np.array(imgs), dtype=torch.float32)[:, None],
            torch.tensor(np.array(targets), dtype=torch.float32))


def test_overfits_tiny_heatmap_task():
    torch.manual_seed(0)
    x, y = _heatmap_task()
    net = UNet(UNetConfig(n_classes=3, depth=3, base_channels=8))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    t0, losses = time.perf_counter(), []
    for step in range(300):
        opt.zero_grad()
        logp = torch.log_softmax(net(x), 1)
        loss = (y * (torch.log(y.clamp_min(1e-8)) - logp)).sum(1).mean()     # KL(target || softmax)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 10 and step >= 20:
            break
        if time.perf_counter() - t0 > 15:
            pytest.skip(f"machine too slow for the overfit check ({step} steps in 15 s)")
    assert min(losses[-5:]) < losses[0] / 10, (losses[0], losses[-5:])
