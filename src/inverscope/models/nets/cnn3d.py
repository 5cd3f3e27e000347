"""The 3D-convolutional network of Oxley et al. (2020) for stacks of CBED patterns.

A stack (positions x ky x kx) is one 3D image with one channel. 3D convolutions with
no pooling between them (pooling after each layer loses the relative positions of
diffraction features, which the paper found to hurt), one average pooling, two dense
layers, dropout on every layer (15 % in the paper), and a head: ``num_outputs``
logits (softmax classification) or ``num_outputs`` linear values (regression).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from inverscope.core.config import StrictModel


class StackCNN3DConfig(StrictModel):
    """Architecture of :class:`StackCNN3D`; ``input_shape`` is (positions, ky, kx)."""

    input_shape: tuple[int, int, int]
    channels: list[int] = Field(default_factory=lambda: [16, 32, 32], min_length=1)
    kernel_size: int = Field(3, ge=1)
    pool: tuple[int, int, int] = (2, 2, 2)
    hidden: int = Field(64, ge=1)
    dropout: float = Field(0.15, ge=0.0, lt=1.0)
    num_outputs: int = Field(2, ge=1)


class StackCNN3D(nn.Module):
    """conv3d (+ReLU, dropout) x N -> avgpool -> dense (+ReLU, dropout) -> dense head."""

    def __init__(self, config: StackCNN3DConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 1
        for c in config.channels:
            layers += [nn.Conv3d(c_in, c, config.kernel_size, padding="same"), nn.ReLU(), nn.Dropout(config.dropout)]
            c_in = c
        pool = tuple(min(p, s) for p, s in zip(config.pool, config.input_shape))
        layers.append(nn.AvgPool3d(pool, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        n_flat = c_in * math.prod(math.ceil(s / p) for s, p in zip(config.input_shape, pool))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(n_flat, config.hidden), nn.ReLU(), nn.Dropout(config.dropout),
                                  nn.Linear(config.hidden, config.num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, positions, ky, kx) or (B, 1, positions, ky, kx) -> (B, num_outputs)."""
        if x.dim() == 4:
            x = x.unsqueeze(1)
        return self.head(self.features(x))

    def last_conv(self) -> nn.Module:
        """The last convolution (for layer attributions)."""
        return [m for m in self.features if isinstance(m, nn.Conv3d)][-1]
