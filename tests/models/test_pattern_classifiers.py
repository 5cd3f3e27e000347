"""Pattern classifiers (VGG-BN, ResNet, the paper's custom CNN): shapes for every architecture x
head, unit-norm embeddings, gradients everywhere, parameter counts against the standard
architectures (computed here from the layer shapes), and config validation."""

import pytest
import torch

from inverscope.core.config import validate
from inverscope.core.errors import ConfigError
from inverscope.models.nets import NETS, build_net
from inverscope.models.nets.pattern_classifiers import (
    SHIPPED,
    count_parameters,
)

CLASSES = {name: NETS[name] for name in ("polarization_cnn", "vgg_pattern", "resnet_pattern")}

#: small variants of every architecture (id -> (registered name, config))
SMALL = {
    "cnn": ("polarization_cnn", {"channels": [4, 8, 8], "hidden": 16}),
    "cnn_padded_nobn": ("polarization_cnn", {"channels": [4, 8], "pool_after": [True, True], "padding": 1,
                                             "batch_norm": False, "hidden": 0}),
    "vgg11": ("vgg_pattern", {"depth": 11, "width": 0.0625}),
    "vgg16": ("vgg_pattern", {"depth": 16, "width": 0.0625, "hidden": 32, "dropout": 0.2}),
    "resnet18": ("resnet_pattern", {"depth": 18, "width": 0.0625}),
    "resnet18_imagenet_stem": ("resnet_pattern", {"depth": 18, "width": 0.0625, "stem": "imagenet"}),
    "resnet50": ("resnet_pattern", {"depth": 50, "width": 0.0625}),
}
HEADS = {"classification": 8, "regression": 2, "embedding": 16}


def make(name: str, config: dict):
    """Through build_net once the parent registers the names; through the same validation until then."""
    if name in NETS:
        return build_net(name, config)
    cls, cfg_cls = CLASSES[name]
    return cls(validate(cfg_cls, config, "model"))


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)                                       # shared 2-core machines: no oversubscription
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("key", sorted(SMALL))
def test_shapes_unit_embeddings_and_gradients(key, head):
    name, cfg = SMALL[key]
    torch.manual_seed(0)
    net = make(name, {**cfg, "head": head, "outputs": HEADS[head]})
    x = torch.rand(2, 1, 64, 64)
    net.eval()
    with torch.no_grad():
        y = net(x)
        assert torch.equal(net(x[:, 0]), y)                       # (batch, n, n) is the 1-channel image
    assert y.shape == (2, HEADS[head])
    assert torch.isfinite(y).all()
    if head == "embedding":
        torch.testing.assert_close(y.norm(dim=1), torch.ones(2))
    if head == "regression":
        assert y.abs().max() <= 1                                 # tanh-bounded unit-vector components
    net.train()
    y = net(x)
    (y * torch.randn_like(y)).sum().backward()                    # random projection: nonzero through the L2 norm
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_outputs_default_by_head_and_regression_without_tanh():
    assert make("vgg_pattern", {"depth": 11, "width": 0.0625}).config.outputs == 8
    assert make("vgg_pattern", {"depth": 11, "width": 0.0625, "head": "regression"}).config.outputs == 2
    assert make("resnet_pattern", {"width": 0.0625, "head": "embedding"}).config.outputs == 128
    torch.manual_seed(0)
    net = make("polarization_cnn", {"channels": [4, 4, 4], "hidden": 8, "head": "regression",
                                    "regression_activation": "none"}).eval()
    with torch.no_grad():
        assert net(100 * torch.rand(4, 64, 64)).abs().max() > 1


def test_global_pooling_nets_take_any_size_from_32_and_the_cnn_only_its_own():
    torch.manual_seed(0)
    for name, cfg in (("vgg_pattern", {"depth": 16, "width": 0.0625}),
                      ("resnet_pattern", {"depth": 18, "width": 0.0625})):
        net = make(name, cfg).eval()
        for n in (32, 48, 80):
            assert net(torch.rand(2, 1, n, n)).shape == (2, 8)
    cnn = make("polarization_cnn", {"channels": [4, 4, 4], "hidden": 8, "input_size": 48}).eval()
    assert cnn(torch.rand(2, 48, 48)).shape == (2, 8)
    with pytest.raises(ValueError, match="48 x 48"):
        cnn(torch.rand(2, 64, 64))
    with pytest.raises(ValueError, match="expected input"):
        make("vgg_pattern", {"depth": 11, "width": 0.0625, "in_channels": 2})(torch.rand(2, 64, 64))


# ---------------------------------------------------------------- parameter counts from layer shapes

def conv(c_in, c_out, k, bias=False):
    return c_in * c_out * k * k + (c_out if bias else 0)


def bn(c):
    return 2 * c                                                   # weight + bias (running stats are buffers)


def linear(n_in, n_out):
    return n_in * n_out + n_out


#: Simonyan & Zisserman configurations A (11) and D (16)
VGG = {11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
       16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]}


def vgg_bn_features(depth, c_in):
    total = 0
    for v in VGG[depth]:
        if v != "M":
            total += conv(c_in, v, 3, bias=True) + bn(v)
            c_in = v
    return total


def resnet_body(depth):
    """Parameters after the stem and before the fc layer; returns (count, feature width)."""
    total, c_in = 0, 64
    if depth == 18:
        for planes, n, stride in ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)):
            for b in range(n):
                s = stride if b == 0 else 1
                total += conv(c_in, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
                if s != 1 or c_in != planes:
                    total += conv(c_in, planes, 1) + bn(planes)
                c_in = planes
    else:
        for planes, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for b in range(n):
                s = stride if b == 0 else 1
                out = 4 * planes
                total += (conv(c_in, planes, 1) + bn(planes) + conv(planes, planes, 3) + bn(planes)
                          + conv(planes, out, 1) + bn(out))
                if s != 1 or c_in != out:
                    total += conv(c_in, out, 1) + bn(out)
                c_in = out
    return total, c_in


def test_layer_shape_arithmetic_reproduces_the_published_imagenet_counts():
    """torchvision's documented counts (3-channel input, 1000 classes) validate the helpers above."""
    imagenet_vgg_head = linear(512 * 7 * 7, 4096) + linear(4096, 4096) + linear(4096, 1000)
    assert vgg_bn_features(11, 3) + imagenet_vgg_head == 132_868_840
    assert vgg_bn_features(16, 3) + imagenet_vgg_head == 138_365_992
    for depth, published in ((18, 11_689_512), (50, 25_557_032)):
        body, feat = resnet_body(depth)
        assert conv(3, 64, 7) + bn(64) + body + linear(feat, 1000) == published


def test_parameter_counts_match_the_standard_architectures_with_1_channel_and_8_classes():
    head = linear(512, 8)
    for depth in (11, 16):
        net = make("vgg_pattern", {"depth": depth, "width": 1.0, "outputs": 8})
        assert count_parameters(net) == vgg_bn_features(depth, 1) + head, depth
    for depth in (18, 50):
        body, feat = resnet_body(depth)
        for stem, k in (("small", 3), ("imagenet", 7)):
            net = make("resnet_pattern", {"depth": depth, "width": 1.0, "stem": stem, "outputs": 8})
            assert count_parameters(net) == conv(1, 64, k) + bn(64) + body + linear(feat, 8), (depth, stem)
    # the paper's custom CNN without batch norm: valid 3x3 convs 16-32-64, pools after 2nd and 3rd, dense 512
    paper = (conv(1, 16, 3, True) + conv(16, 32, 3, True) + conv(32, 64, 3, True)
             + linear(64 * 14 * 14, 512) + linear(512, 8))
    assert count_parameters(make("polarization_cnn", {"batch_norm": False})) == paper
    with_bn = paper - 16 - 32 - 64 + bn(16) + bn(32) + bn(64)     # conv biases replaced by batch norm
    assert count_parameters(make("polarization_cnn", {})) == with_bn


def test_shipped_configs_validate():
    for arch, cfg in SHIPPED.values():
        _, cfg_cls = CLASSES[arch]
        validate(cfg_cls, cfg, "model")


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("name,config,field", [
    ("vgg_pattern", {"depth": 12}, "depth"),
    ("resnet_pattern", {"depth": 34}, "depth"),
    ("vgg_pattern", {"width": 0}, "width"),
    ("resnet_pattern", {"width": 0}, "width"),
    ("vgg_pattern", {"input_size": 31}, "input_size"),
    ("resnet_pattern", {"input_size": 16}, "input_size"),
    ("polarization_cnn", {"input_size": 24}, "input_size"),
    ("polarization_cnn", {"channels": [8, 8], "pool_after": [True]}, "pool_after"),
    ("polarization_cnn", {"channels": [8] * 6, "pool_after": [True] * 6}, "input_size"),
    ("vgg_pattern", {"head": "segmentation"}, "head"),
    ("resnet_pattern", {"outputs": 0}, "outputs"),
    ("resnet_pattern", {"stem": "big"}, "stem"),
    ("vgg_pattern", {"dropout": 1.0}, "dropout"),
    ("vgg_pattern", {"widht": 0.5}, "widht"),
])
def test_bad_configs_raise_config_error(name, config, field):
    with pytest.raises(ConfigError, match=field):
        make(name, config)


def test_registered_in_nets():
    names = [n for n in CLASSES if n not in NETS]
    if names:
        pytest.skip(f"not yet registered in inverscope.models.nets.NETS: {names}")
    for name, (cls, cfg_cls) in CLASSES.items():
        assert NETS[name] == (cls, cfg_cls)
        with pytest.raises(ConfigError, match="depth|input_size"):
            build_net(name, {"depth": 12} if name != "polarization_cnn" else {"input_size": 8})
