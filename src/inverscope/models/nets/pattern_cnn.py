"""A residual CNN for single 2D patterns (PACBED, CBED) -> a few regression targets.

Small ResNet-style stages (two 3x3 convolutions with batch norm and a skip per block, stride-2
downsampling between stages), global average pooling, and a dense head with dropout. The
dropout stays switchable at inference for Monte-Carlo uncertainty (``mc_dropout`` in
:func:`inverscope.analysis.pacbed_models.predict_with_uncertainty`). Written here because
torchvision does not load against the pinned torch (DESIGN: no pretrained weights anyway).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from inverscope.core.config import StrictModel


class PatternCNNConfig(StrictModel):
    input_size: int = Field(64, ge=8)                                  # square patterns, pixels per side
    channels: list[int] = Field(default_factory=lambda: [16, 32, 64, 96], min_length=1)
    blocks_per_stage: int = Field(1, ge=1)
    hidden: int = Field(64, ge=1)
    outputs: int = Field(3, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


class PatternCNN(nn.Module):
    """(batch, 1, n, n) or (batch, n, n) -> (batch, outputs)."""

    def __init__(self, config: PatternCNNConfig):
        super().__init__()
        self.config = config
        layers, c_in = [nn.Conv2d(1, config.channels[0], 3, padding=1, bias=False), nn.BatchNorm2d(config.channels[0]),
                        nn.ReLU(inplace=True)], config.channels[0]
        for i, c in enumerate(config.channels):
            for b in range(config.blocks_per_stage):
                layers.append(_Block(c_in, c, 2 if (b == 0 and i > 0) else 1))
                c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in, config.hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(config.dropout), nn.Linear(config.hidden, config.outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x[:, None]
        return self.head(self.features(x).mean(dim=(-1, -2)))


__all__ = ["PatternCNN", "PatternCNNConfig"]
