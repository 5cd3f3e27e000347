"""PCAResidualAE: starts exactly at PCA-k, training from there lowers the training error, shapes,
weights round-trip, config errors."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from inverscope.core.config import validate
from inverscope.core.errors import ConfigError
from inverscope.models.nets.pca_residual_ae import PCAResidualAE, PCAResidualAEConfig
from inverscope.training.autoencoder import AETrainConfig, fit_autoencoder, reconstruct


def loops(n, seed, steps=32):
    """Hysteresis-like loops with two nonlinear parameters (amplitude, coercive shift) plus noise."""
    rng = np.random.default_rng(seed)
    half = steps // 2
    v = np.concatenate([np.linspace(1, -1, half), np.linspace(-1, 1, steps - half)])
    a, c = rng.uniform(0.5, 1.5, (n, 1)), rng.uniform(0.1, 0.5, (n, 1))
    branch = np.where(np.arange(steps) < half, 1.0, -1.0)
    return (a * np.tanh((v + branch * c) * 4) + 0.01 * rng.standard_normal((n, steps))).astype(np.float32)


def _mse(net, x):
    return float(np.mean((reconstruct(net, x)[0] - x) ** 2))


@pytest.mark.parametrize("cfg", [{}, {"tied": True}, {"decoder": "per_step", "decoder_hidden": [8, 8]},
                                 {"encoder_hidden": [], "train_basis": False}])
def test_init_reproduces_pca_k(cfg):
    x_tr, x_te = loops(200, 0), loops(50, 1)
    k = 3
    torch.manual_seed(0)
    net = PCAResidualAE.from_data(PCAResidualAEConfig(steps=32, latent=k, encoder_hidden=[16], decoder_hidden=[16])
                                  .model_copy(update=cfg), x_tr)
    pca = PCA(k).fit(x_tr)
    for x in (x_tr, x_te):
        rec, z = reconstruct(net, x)
        np.testing.assert_allclose(rec, pca.inverse_transform(pca.transform(x)), atol=2e-5)
        np.testing.assert_allclose(z, pca.transform(x), atol=2e-4)  # same axes and signs as scikit-learn
    assert abs(_mse(net, x_te) - float(np.mean((pca.inverse_transform(pca.transform(x_te)) - x_te) ** 2))) < 1e-7


def test_short_training_lowers_training_mse(tmp_path):
    x_tr, x_te = loops(256, 0), loops(64, 1)
    torch.manual_seed(0)
    net = PCAResidualAE.from_data(PCAResidualAEConfig(steps=32, latent=2, encoder_hidden=[32], decoder_hidden=[32]), x_tr)
    before = _mse(net, x_tr)
    fit_autoencoder(net, x_tr, x_te, AETrainConfig(max_epochs=15, lr=1e-3, batch_size=32, l1_activity=0.0,
                                                   progress_bar=False, max_minutes=None), tmp_path, "toy")
    after = _mse(net, x_tr)
    # two nonlinear parameters: PCA-2 leaves curvature that the residual branches pick up
    assert after < 0.9 * before


def test_a_net_left_in_eval_mode_trains_in_train_mode(tmp_path):
    x_tr, x_te = loops(64, 0), loops(16, 1)
    net = PCAResidualAE.from_data(PCAResidualAEConfig(steps=32, latent=2, encoder_hidden=[8], decoder_hidden=[8]), x_tr)
    reconstruct(net, x_te)  # leaves the net in eval mode
    assert not net.training
    modes, forward = [], net.forward

    def spy(*args, **kwargs):
        modes.append(net.training)
        return forward(*args, **kwargs)

    net.forward = spy
    fit_autoencoder(net, x_tr, x_te, AETrainConfig(max_epochs=1, batch_size=32, progress_bar=False, max_minutes=None),
                    tmp_path, "mode")
    assert True in modes and not net.training  # trained in train mode (validation runs in eval), handed back in eval


@pytest.mark.parametrize("decoder", ["mlp", "per_step"])
def test_shapes_and_signed_latent(decoder):
    net = PCAResidualAE(PCAResidualAEConfig(steps=20, latent=4, decoder=decoder, encoder_hidden=[8],
                                            decoder_hidden=[8]))
    for shape in [(5, 20), (5, 20, 1)]:
        y, z = net(torch.randn(shape))
        assert y.shape == (5, 20) and z.shape == (5, 4)
    assert (z < 0).any()  # principal scores, not a ReLU code: all k latents are active


def test_gradients_reach_every_parameter_before_and_after_init():
    x = torch.as_tensor(loops(16, 0, steps=16))
    net = PCAResidualAE(PCAResidualAEConfig(steps=16, latent=3, encoder_hidden=[8], decoder_hidden=[8]))
    for stage in ("built", "initialised"):
        net.zero_grad()
        y, z = net(x)
        ((y - x).pow(2).mean() + z.pow(2).mean()).backward()
        # after init the branches' last layers are zero: only they (and the linear part) get gradient at step 0
        names = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        if stage == "built":
            assert not names, names
        else:
            assert all(n.startswith(("f.", "g.")) and not n.startswith(("f.2", "g.2")) for n in names), names
        net.init_from_data(x)


def test_weights_round_trip_with_fitted_scales():
    x = loops(64, 0)
    net = PCAResidualAE.from_data(PCAResidualAEConfig(steps=32, latent=3), x).eval()
    again = PCAResidualAE(PCAResidualAEConfig(**net.config.model_dump())).eval()
    again.load_state_dict(net.state_dict())
    t = torch.as_tensor(x)
    with torch.no_grad():
        assert torch.equal(net(t)[0], again(t)[0])
    assert {"score_scale", "data_scale", "mu", "w_enc", "w_dec"} <= set(net.state_dict())


@pytest.mark.parametrize("bad", [{"steps": 8, "latent": 9}, {"decoder": "lstm"}, {"encoder_hidden": [0]},
                                 {"dropout": 1.0}, {"latnet": 3}, {"activation": "relu6"}])
def test_config_errors(bad):
    with pytest.raises(ConfigError):
        validate(PCAResidualAEConfig, bad, "model.config")


def test_init_from_data_rejects_mismatched_data():
    net = PCAResidualAE(PCAResidualAEConfig(steps=32, latent=3))
    with pytest.raises(ValueError, match="steps"):
        net.init_from_data(loops(10, 0, steps=16))
    with pytest.raises(ValueError, match="at most 2 components"):
        net.init_from_data(loops(2, 0))
