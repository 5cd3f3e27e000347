"""Every registered network: builds from its saved config, round-trips through safetensors + JSON
with identical outputs, gives the output shape its config promises, and trains (gradients reach
every parameter)."""

import pytest
import torch

from inverscope.models.io import load_model, save_model
from inverscope.models.nets import NETS, build_net

#: name -> (config, input shape, expected output shape or None for (reconstruction, latent) pairs)
CASES = {
    "unet": ({"n_classes": 3, "depth": 3, "base_channels": 4}, (2, 1, 16, 16), (2, 3, 16, 16)),
    "stack_cnn3d": ({"input_shape": [4, 9, 9], "channels": [4], "hidden": 8, "num_outputs": 3}, (2, 4, 9, 9), (2, 3)),
    "bilstm_ae": ({"steps": 16, "lstm_units": 4, "encoder_layers": 1, "decoder_layers": 1, "latent": 3}, (2, 16), None),
    "sparse_conv_ae": ({"steps": 16, "channels": [4], "latent": 3, "hidden": 8}, (2, 16), None),
    "pca_residual_ae": ({"steps": 16, "latent": 3, "encoder_hidden": [8], "decoder_hidden": [8]}, (2, 16), None),
    "vgg_pattern": ({"depth": 11, "width": 0.0625, "input_size": 32}, (3, 1, 32, 32), (3, 8)),
    "resnet_pattern": ({"depth": 18, "width": 0.0625, "input_size": 32, "head": "regression"}, (3, 32, 32), (3, 2)),
    "polarization_cnn": ({"input_size": 32, "channels": [4, 8], "pool_after": [True, True], "hidden": 16},
                         (3, 32, 32), (3, 8)),
    "shallow_mlp": ({"inputs": 5, "outputs": 2, "hidden": [7]}, (3, 5), (3, 2)),
    "loop_cnn1d": ({"steps": 16, "outputs": 2, "channels": [4], "hidden": 8}, (3, 16), (3, 2)),
    "pattern_cnn": ({"input_size": 16, "channels": [4, 8], "hidden": 8, "outputs": 3}, (3, 16, 16), (3, 3)),
}


def test_every_registered_net_has_a_contract_case():
    assert set(CASES) == set(NETS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_build_save_load_forward_backward(name, tmp_path):
    config, shape, out_shape = CASES[name]
    torch.manual_seed(0)
    net = build_net(name, config).eval()
    x = torch.rand(shape)
    with torch.no_grad():
        out = net(x)
    first = out[0] if isinstance(out, tuple) else out
    if out_shape is not None:
        assert tuple(first.shape) == out_shape
    save_model(tmp_path / "m", net, name, {"task": "contract"})
    again, meta = load_model(tmp_path / "m.safetensors")
    with torch.no_grad():
        out2 = again(x)
    for a, b in zip(out if isinstance(out, tuple) else (out,), out2 if isinstance(out2, tuple) else (out2,)):
        assert torch.equal(a, b)
    assert meta["architecture"] == name
    net.train()
    res = net(x)
    loss = sum(r.pow(2).mean() for r in (res if isinstance(res, tuple) else (res,)))
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, missing
