"""Shallow networks for 1D signals (loops, spectra): an MLP and a small 1D CNN.

The MLP is the lecture's "shallow" network (Kalinin, shallow and deep networks in imaging):
one or two hidden layers on a handful of PCA scores or on a raw spectrum. The CNN is the
comparison that sees the raw curve.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from inverscope.core.config import StrictModel


class ShallowMLPConfig(StrictModel):
    inputs: int = Field(..., ge=1)             # features per sample (PCA scores or spectrum channels)
    outputs: int = Field(..., ge=1)            # regression targets or classes
    hidden: list[int] = Field(default_factory=lambda: [32])
    activation: Literal["tanh", "relu", "gelu"] = "tanh"
    dropout: float = Field(0.0, ge=0, lt=1)


class ShallowMLP(nn.Module):
    """(batch, inputs) -> (batch, outputs): dense layers with one nonlinearity each, linear head."""

    def __init__(self, config: ShallowMLPConfig):
        super().__init__()
        self.config = config
        act = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}[config.activation]
        layers, width = [], config.inputs
        for h in config.hidden:
            layers += [nn.Linear(width, h), act()]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = h
        layers.append(nn.Linear(width, config.outputs))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class LoopCNN1DConfig(StrictModel):
    steps: int = Field(..., ge=4)              # samples per curve
    outputs: int = Field(..., ge=1)
    channels: list[int] = Field(default_factory=lambda: [16, 32, 32])
    kernel_size: int = Field(5, ge=1)
    hidden: int = Field(64, ge=1)


class LoopCNN1D(nn.Module):
    """(batch, steps) -> (batch, outputs): strided 1D convolutions, global average pooling, dense head."""

    def __init__(self, config: LoopCNN1DConfig):
        super().__init__()
        self.config = config
        layers, c_in = [], 1
        for c in config.channels:
            layers += [nn.Conv1d(c_in, c, config.kernel_size, stride=2, padding=config.kernel_size // 2), nn.GELU()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * c_in, config.hidden), nn.GELU(), nn.Linear(config.hidden, config.outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.unsqueeze(1))
        return self.head(torch.cat([h.mean(-1), h.amax(-1)], dim=1))
