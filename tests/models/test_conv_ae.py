"""SparseConvAE: shapes, non-negative latent, and it learns a low-dimensional family of loops."""

import numpy as np
import torch

from inverscope.models.nets.conv_ae import SparseConvAE, SparseConvAEConfig
from inverscope.training.autoencoder import AETrainConfig, fit_autoencoder, reconstruct


def loops(n, seed):
    rng = np.random.default_rng(seed)
    v = np.concatenate([np.linspace(1, -1, 24), np.linspace(-1, 1, 24)])
    a, c = rng.uniform(0.5, 1.5, (n, 1)), rng.uniform(0.1, 0.5, (n, 1))
    branch = np.where(np.arange(48) < 24, 1.0, -1.0)
    return (a * np.tanh((v + branch * c) * 4)).astype(np.float32)


def test_shapes_and_latent():
    net = SparseConvAE(SparseConvAEConfig(steps=50, latent=4))
    y, z = net(torch.randn(3, 50))
    assert y.shape == (3, 50) and z.shape == (3, 4) and (z >= 0).all()


def test_learns_a_two_parameter_family(tmp_path):
    torch.manual_seed(0)
    x_tr, x_te = loops(256, 0), loops(64, 1)
    net = SparseConvAE(SparseConvAEConfig(steps=48, latent=8, channels=[16, 32], hidden=64))
    before = np.mean((reconstruct(net, x_te)[0] - x_te) ** 2)
    fit_autoencoder(net, x_tr, x_te, AETrainConfig(max_epochs=40, lr=3e-3, batch_size=32, progress_bar=False,
                                                   max_minutes=None), tmp_path, "toy")
    after = np.mean((reconstruct(net, x_te)[0] - x_te) ** 2)
    assert after < 0.05 * before and after < 0.01
