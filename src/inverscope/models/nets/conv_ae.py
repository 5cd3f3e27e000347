"""SparseConvAE: a fast 1D-convolutional autoencoder for hysteresis loops (inverscope's own).

Same interface as the published BiLSTM autoencoder (Agar et al. 2019): loops (n, steps) in,
a ``latent``-wide ReLU embedding (sparse through an L1 activity penalty applied by the
trainer) and the reconstruction out. Strided convolutions see the loop's shape at several
scales at once, which trains in seconds where the recurrent network needs thousands of epochs.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from inverscope.core.config import StrictModel


class SparseConvAEConfig(StrictModel):
    steps: int = Field(96, ge=8)
    channels: list[int] = Field(default_factory=lambda: [32, 64, 64], min_length=1)
    kernel_size: int = Field(5, ge=3)
    latent: int = Field(16, ge=1)
    hidden: int = Field(128, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    #: BatchNorm on the latent pre-activation keeps ReLU units from all dying under the L1 penalty
    latent_batchnorm: bool = True


class SparseConvAE(nn.Module):
    """conv1d (stride 2) x N -> dense -> ReLU latent -> dense -> transposed conv1d x N -> loop."""

    def __init__(self, config: SparseConvAEConfig):
        super().__init__()
        self.config = c = config
        pad = c.kernel_size // 2
        enc, ch = [], 1
        length = c.steps
        for out in c.channels:
            enc += [nn.Conv1d(ch, out, c.kernel_size, stride=2, padding=pad), nn.GELU()]
            ch, length = out, math.floor((length + 2 * pad - c.kernel_size) / 2) + 1
        self._shape = (ch, length)
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(ch * length, c.hidden), nn.GELU(),
                                     nn.Dropout(c.dropout), nn.Linear(c.hidden, c.latent),
                                     nn.BatchNorm1d(c.latent) if c.latent_batchnorm else nn.Identity(), nn.ReLU())
        self.expand = nn.Sequential(nn.Linear(c.latent, c.hidden), nn.GELU(), nn.Linear(c.hidden, ch * length), nn.GELU())
        dec = []
        for out in list(reversed(c.channels[:-1])) + [c.channels[0]]:
            dec += [nn.ConvTranspose1d(ch, out, c.kernel_size, stride=2, padding=pad, output_padding=1), nn.GELU()]
            ch = out
        self.decoder = nn.Sequential(*dec, nn.Conv1d(ch, 1, c.kernel_size, padding=pad))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(n, steps) -> (n, latent), non-negative."""
        return self.encoder(x.reshape(x.shape[0], 1, -1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.expand(z).reshape(z.shape[0], *self._shape)
        y = self.decoder(h)[:, 0]
        steps = self.config.steps
        if y.shape[-1] < steps:
            y = nn.functional.pad(y, (0, steps - y.shape[-1]), mode="replicate")
        return y[:, :steps]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, steps) or (n, steps, 1) -> (reconstruction (n, steps), latent (n, latent))."""
        z = self.encode(x)
        return self.decode(z), z
