"""Classifiers for single diffraction patterns (4D-STEM polarization mapping).

The model family of Martinc et al., "Benchmarking machine learning approaches for
polarization mapping in ferroelectrics using 4D-STEM" (arXiv:2603.15582; reference code
github.com/matejMartinc/4D-STEM-polarization-mapping, MIT): 64 x 64 single-channel patterns,
8 polarization classes (directions 0, 45, ..., 315 degrees). Written in plain torch because
torchvision does not load against the pinned torch; no pretrained weights (the paper's
ImageNet initialisation is not reproduced).

Networks
--------
:class:`PolarizationCNN`
    The paper's compact custom CNN: 3x3 convolutions 16-32-64, max-pool after the 2nd and 3rd,
    flatten, dense 512 + ReLU, then the head. Batch norm after each convolution is on by
    default (``batch_norm=False`` gives the paper's layer stack exactly).
:class:`VGGPatternNet`
    VGG-11 or VGG-16 with batch norm (torchvision's ``vgg11_bn``/``vgg16_bn`` feature stacks),
    ``in_channels`` input, channel ``width`` multiplier, global average pooling, then the head
    (the three 4096-wide dense layers of ImageNet VGG are dropped).
:class:`ResNetPatternNet`
    ResNet-18 (basic blocks) or ResNet-50 (bottleneck blocks, expansion 4, stride on the 3x3
    convolution as in torchvision v1.5), global average pooling, then the head.

Heads (``head``)
----------------
``classification``
    ``outputs`` logits, shape (batch, outputs), no softmax.
``regression``
    ``outputs`` values (2 for the polarization unit vector (cos theta, sin theta)); bounded to
    [-1, 1] by ``tanh`` as in the reference code unless ``regression_activation="none"``.
``embedding``
    ``outputs``-wide embedding for prototype training, **L2-normalised** per row (unit norm),
    so squared Euclidean distance to a centroid is ``2 - 2 cos`` and similarity-to-centroid
    classification is cosine similarity. (The reference code uses unnormalised embeddings with
    Euclidean distance; normalising bounds the logits ``-d`` and makes a temperature explicit.)
    Centroids of unit vectors are not unit vectors; renormalise them if cosine is wanted.

``outputs`` defaults by head: 8 (classification), 2 (regression), 128 (embedding). Every head
is ``[dropout] -> [Linear(features, hidden) -> ReLU -> dropout] -> Linear(., outputs)``; the
hidden layer exists only when ``hidden > 0``.

Input is (batch, in_channels, n, n) float, or (batch, n, n) when ``in_channels == 1``.
``input_size`` (pixels per side, >= 32) fixes the flattened width of :class:`PolarizationCNN`;
VGG and ResNet pool globally, so it is nominal there and any n >= 32 runs.

Parameter counts of the shipped configs (:data:`SHIPPED`, 1 input channel, classification
head, 8 classes; measured with :func:`count_parameters`):

========================  ==================================================  ===========
name                      architecture and config                             parameters
========================  ==================================================  ===========
``polarization_cnn``      PolarizationCNN defaults (paper's CNN + batch norm)    6,450,552
``vgg11_bn_quick``        VGG-11-BN, width 0.25                                    579,240
``vgg16_bn``              VGG-16-BN, width 1.0 (paper scale)                    14,726,088
``resnet18_quick``        ResNet-18, width 0.25, small stem                        700,920
``resnet18``              ResNet-18, width 1.0, small stem                      11,171,784
``resnet50``              ResNet-50, width 1.0, small stem (paper scale)        23,515,592
========================  ==================================================  ===========

For reference: the ImageNet-stem ResNets are 11,174,344 (ResNet-18) and 23,518,152
(ResNet-50), the 7x7 single-channel stem having 2,560 more weights than the 3x3 one; VGG-11-BN
at width 1.0 is 9,228,936; ``PolarizationCNN(batch_norm=False)`` (the reference code's custom
CNN exactly) is 6,450,440. These equal torchvision's counts (11,689,512 / 25,557,032 /
138,365,992 for ResNet-18 / ResNet-50 / VGG-16-BN) less the 3-channel stem's extra weights and
the ImageNet classifier, plus the 1-channel stem and the 8-class head (checked independently
in ``tests/models/test_pattern_classifiers.py``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from inverscope.core.config import StrictModel

Head = Literal["classification", "regression", "embedding"]
#: ``outputs`` when the config leaves it out, by head
DEFAULT_OUTPUTS = {"classification": 8, "regression": 2, "embedding": 128}
#: smallest pattern side in pixels (VGG's five 2x2 max-pools need 32)
MIN_INPUT_SIZE = 32


class _HeadConfig(StrictModel):
    """Knobs shared by every pattern classifier (see the module docstring for the heads)."""

    in_channels: int = Field(1, ge=1)
    input_size: int = Field(64, ge=MIN_INPUT_SIZE)          # square patterns, pixels per side
    head: Head = "classification"
    outputs: int = Field(8, ge=1)                            # classes, 2, or embedding width
    hidden: int = Field(0, ge=0)                             # 0: linear head straight from the features
    dropout: float = Field(0.0, ge=0, lt=1)
    regression_activation: Literal["tanh", "none"] = "tanh"

    @model_validator(mode="before")
    @classmethod
    def _default_outputs(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("outputs") is None:
            head = data.get("head", "classification")
            if head in DEFAULT_OUTPUTS:
                data = {**data, "outputs": DEFAULT_OUTPUTS[head]}
        return data


class _Head(nn.Module):
    """(batch, features) -> (batch, outputs), with the head's output transform."""

    def __init__(self, features: int, config: _HeadConfig):
        super().__init__()
        c = config
        layers: list[nn.Module] = [nn.Dropout(c.dropout)] if c.dropout > 0 else []
        if c.hidden > 0:
            layers += [nn.Linear(features, c.hidden), nn.ReLU(inplace=True)]
            layers += [nn.Dropout(c.dropout)] if c.dropout > 0 else []
            features = c.hidden
        layers.append(nn.Linear(features, c.outputs))
        self.net = nn.Sequential(*layers)
        self.kind = c.head
        self.tanh = c.head == "regression" and c.regression_activation == "tanh"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = self.net(h)
        if self.kind == "embedding":
            return F.normalize(y, dim=1)
        return torch.tanh(y) if self.tanh else y


def _as_image(x: torch.Tensor, in_channels: int) -> torch.Tensor:
    if x.ndim == 3 and in_channels == 1:
        return x[:, None]
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected input (batch, {in_channels}, n, n)"
                         f"{' or (batch, n, n)' if in_channels == 1 else ''}, got {tuple(x.shape)}")
    return x


def _init_weights(module: nn.Module) -> None:
    """He-normal convolutions (fan_out, as torchvision), unit/zero batch norm; torch default Linear."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class _PatternNet(nn.Module):
    """features(x) -> (batch, feature_dim); forward(x) -> head(features(x))."""

    config: _HeadConfig
    feature_dim: int

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_channels, n, n) -> globally pooled features (batch, feature_dim) of ``self.encoder``
        (VGG, ResNet; the custom CNN flattens instead)."""
        return self.encoder(x).mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_channels, n, n) or (batch, n, n) -> (batch, outputs); see the module docstring."""
        return self.head(self.features(_as_image(x, self.config.in_channels)))


# --------------------------------------------------------------------------- custom CNN

class PolarizationCNNConfig(_HeadConfig):
    """The paper's custom CNN; defaults reproduce its layer stack (plus batch norm).

    ``channels[i]`` is stage i's 3x3 convolution width; ``pool_after[i]`` adds a 2x2 max-pool
    after it; ``padding`` 0 is the reference code's 'valid' convolution (64 -> 62 -> 60 -> 30 ->
    28 -> 14, so 64 x 14 x 14 = 12,544 flattened features); ``hidden`` 512 is its dense layer.
    """

    channels: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1)
    pool_after: list[bool] = Field(default_factory=lambda: [False, True, True], min_length=1)
    padding: Literal[0, 1] = 0
    batch_norm: bool = True
    hidden: int = Field(512, ge=0)

    @model_validator(mode="after")
    def _check_stack(self):
        if len(self.pool_after) != len(self.channels):
            raise ValueError(f"pool_after has {len(self.pool_after)} entries; needs one per channels entry "
                             f"({len(self.channels)})")
        if any(c < 1 for c in self.channels):
            raise ValueError(f"channels must all be >= 1, got {self.channels}")
        if self.spatial_size() < 1:
            raise ValueError(f"input_size {self.input_size} shrinks below one pixel in this convolution stack")
        return self

    def spatial_size(self) -> int:
        """Side of the last feature map in pixels (<= 0: the stack does not fit the input)."""
        n = self.input_size
        for pool in self.pool_after:
            n = n + 2 * self.padding - 2
            if pool:
                n //= 2
        return n


class PolarizationCNN(_PatternNet):
    """Compact conv -> [BN] -> ReLU -> [max-pool] stages, flatten, dense head.

    Parameters
    ----------
    config : PolarizationCNNConfig

    Notes
    -----
    Input (batch, in_channels, input_size, input_size) or (batch, input_size, input_size);
    output (batch, outputs). Unlike the VGG/ResNet nets the features are flattened, not pooled,
    so the input side must equal ``config.input_size``.
    """

    def __init__(self, config: PolarizationCNNConfig):
        super().__init__()
        self.config = c = config
        layers: list[nn.Module] = []
        c_in = c.in_channels
        for c_out, pool in zip(c.channels, c.pool_after):
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=c.padding, bias=not c.batch_norm))
            if c.batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            if pool:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.encoder = nn.Sequential(*layers)
        self.feature_dim = c_in * c.spatial_size() ** 2
        self.head = _Head(self.feature_dim, c)
        _init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_channels, n, n) -> flattened features (batch, feature_dim)."""
        h = self.encoder(x)
        if h.shape[1] * h.shape[2] * h.shape[3] != self.feature_dim:
            raise ValueError(f"PolarizationCNN was built for {self.config.input_size} x {self.config.input_size} "
                             f"patterns, got {x.shape[-2]} x {x.shape[-1]}")
        return h.flatten(1)


# --------------------------------------------------------------------------- VGG

#: torchvision's VGG layouts (conv widths at width 1.0; "M" = 2x2 max-pool)
VGG_LAYOUTS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGGPatternNetConfig(_HeadConfig):
    """VGG-``depth`` with batch norm; ``width`` scales every conv width (1.0 = 64-128-256-512-512)."""

    depth: Literal[11, 16] = 16
    width: float = Field(1.0, gt=0, le=4)


class VGGPatternNet(_PatternNet):
    """VGG-11/16-BN feature stack, global average pooling, head.

    Parameters
    ----------
    config : VGGPatternNetConfig

    Notes
    -----
    Convolutions are 3x3, padding 1, with bias (as torchvision's ``vgg*_bn``), each followed by
    batch norm and ReLU; five 2x2 max-pools take 64 x 64 to 2 x 2 (32 x 32 to 1 x 1), which
    global average pooling reduces to ``feature_dim = round(512 * width)`` features.
    Input (batch, in_channels, n, n) or (batch, n, n), n >= 32; output (batch, outputs).
    """

    def __init__(self, config: VGGPatternNetConfig):
        super().__init__()
        self.config = c = config
        layers: list[nn.Module] = []
        c_in = c.in_channels
        for v in VGG_LAYOUTS[c.depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                c_out = _scaled(int(v), c.width)
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
                c_in = c_out
        self.encoder = nn.Sequential(*layers)
        self.feature_dim = c_in
        self.head = _Head(c_in, c)
        _init_weights(self)


# --------------------------------------------------------------------------- ResNet

class ResNetPatternNetConfig(_HeadConfig):
    """ResNet-``depth``; ``width`` scales the stage widths (1.0 = 64-128-256-512, x4 for depth 50).

    ``stem``: ``small`` (default) is one 3x3 convolution, stride 1, no max-pool; ``imagenet``
    is torchvision's 7x7 stride-2 convolution + 3x3 stride-2 max-pool (the reference code's
    ResNet-50 stem).
    """

    depth: Literal[18, 50] = 18
    width: float = Field(1.0, gt=0, le=4)
    stem: Literal["small", "imagenet"] = "small"


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes))
        self.skip = _shortcut(c_in, planes, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int):
        super().__init__()
        out = planes * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(c_in, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out))
        self.skip = _shortcut(c_in, out, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


#: depth -> (block, blocks per stage)
RESNET_LAYOUTS = {18: (_BasicBlock, [2, 2, 2, 2]), 50: (_Bottleneck, [3, 4, 6, 3])}


class ResNetPatternNet(_PatternNet):
    """ResNet-18/50 for small patterns: stem, four stages, global average pooling, head.

    Parameters
    ----------
    config : ResNetPatternNetConfig

    Notes
    -----
    Stem choice: the default ``small`` stem is a single 3x3 convolution with stride 1 and no
    max-pool (the CIFAR-style ResNet stem). The ImageNet stem (7x7 stride 2 + max-pool) divides
    the side by 4 before the first block, so a 64 x 64 pattern reaches the last stage as 2 x 2:
    the fine structure of the diffraction disks that encodes the polarization direction is gone
    after two layers. With the small stem the stages see 64, 32, 16 and 8 pixels per side, at
    about 16x the compute of the ImageNet stem (see ``benchmarks/pattern_classifier_speed.py``).
    ``stem="imagenet"`` gives the reference code's layout.

    Blocks are torchvision's (v1.5: bottleneck stride on the 3x3 convolution; 1x1 convolution +
    batch norm shortcut where shape changes). Input (batch, in_channels, n, n) or (batch, n, n),
    n >= 32; output (batch, outputs); ``feature_dim = round(512 * width) * expansion``.
    """

    def __init__(self, config: ResNetPatternNetConfig):
        super().__init__()
        self.config = c = config
        block, counts = RESNET_LAYOUTS[c.depth]
        c0 = _scaled(64, c.width)
        if c.stem == "small":
            stem = [nn.Conv2d(c.in_channels, c0, 3, padding=1, bias=False), nn.BatchNorm2d(c0), nn.ReLU(inplace=True)]
        else:
            stem = [nn.Conv2d(c.in_channels, c0, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(c0),
                    nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1)]
        layers: list[nn.Module] = list(stem)
        c_in = c0
        for i, (base, n) in enumerate(zip((64, 128, 256, 512), counts)):
            planes = _scaled(base, c.width)
            for b in range(n):
                layers.append(block(c_in, planes, 2 if (b == 0 and i > 0) else 1))
                c_in = planes * block.expansion
        self.encoder = nn.Sequential(*layers)
        self.feature_dim = c_in
        self.head = _Head(c_in, c)
        _init_weights(self)


# --------------------------------------------------------------------------- helpers

def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of `net` (batch-norm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


#: name -> (registered architecture name, config dict): the configs the study ships
SHIPPED: dict[str, tuple[str, dict]] = {
    "polarization_cnn": ("polarization_cnn", {}),
    "vgg11_bn_quick": ("vgg_pattern", {"depth": 11, "width": 0.25}),
    "vgg16_bn": ("vgg_pattern", {"depth": 16, "width": 1.0}),
    "resnet18_quick": ("resnet_pattern", {"depth": 18, "width": 0.25}),
    "resnet18": ("resnet_pattern", {"depth": 18, "width": 1.0}),
    "resnet50": ("resnet_pattern", {"depth": 50, "width": 1.0}),
}

__all__ = ["DEFAULT_OUTPUTS", "MIN_INPUT_SIZE", "SHIPPED", "PolarizationCNN", "PolarizationCNNConfig",
           "ResNetPatternNet", "ResNetPatternNetConfig", "VGGPatternNet", "VGGPatternNetConfig", "count_parameters"]
