"""A U-Net for atom finding in STEM images: image -> per-class heat-map logits.

Encoder: ``depth`` stages of two 3x3 convolutions ([batch norm] + ReLU each) followed by a 2x2
max-pool; a bottleneck of two more convolutions; decoder: ``depth`` stages that upsample by 2
(``upsampling="bilinear"``: bilinear interpolation then a 1x1 convolution halving the channels;
``"transpose"``: a 2x2 transposed convolution), concatenate the encoder's skip and apply two 3x3
convolutions; finally a 1x1 convolution to ``n_classes`` channels. Channels double per stage from
``base_channels``. Dropout (``Dropout2d``, channel-wise) sits in the bottleneck and the decoder
stages; kept on at inference it gives Monte-Carlo samples.

The output is logits of shape (batch, n_classes, H, W): the same H, W as the input, which must
both be divisible by ``2**depth`` (the pools and upsamplings then line up without cropping).
Train with a per-pixel softmax over the channels (one channel per atom class plus a background
channel, conventionally the last or first: the net does not care) against the Gaussian heat-map
targets; :func:`ensemble_predict` averages the softmax probabilities of several nets.

Written in plain torch (no segmentation package), after Ronneberger, Fischer & Brox (2015) and
the atom-finding U-Nets of Ziatdinov et al. (ACS Nano 2017; AtomAI).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from inverscope.core.config import StrictModel
from inverscope.core.errors import InverscopeError


class UNetConfig(StrictModel):
    """U-Net knobs; see the module docstring."""

    in_channels: int = Field(1, ge=1)
    n_classes: int = Field(2, ge=1)                 # output channels, background included
    depth: int = Field(3, ge=3, le=5)               # number of 2x2 pools; H, W % 2**depth == 0
    base_channels: int = Field(16, ge=1)            # first stage width, doubled per stage
    batch_norm: bool = True
    dropout: float = Field(0.0, ge=0, lt=1)         # Dropout2d in bottleneck and decoder
    upsampling: Literal["bilinear", "transpose"] = "bilinear"


def _double_conv(c_in: int, c_out: int, batch_norm: bool, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in ((c_in, c_out), (c_out, c_out)):
        layers.append(nn.Conv2d(a, b, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.ReLU(inplace=True))
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class _Up(nn.Module):
    """Upsample x2 to ``c_out`` channels, concatenate the skip (``c_out`` channels), two convs."""

    def __init__(self, c_in: int, c_out: int, config: UNetConfig):
        super().__init__()
        self.mode = config.upsampling
        if self.mode == "transpose":
            self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        else:
            self.up = nn.Conv2d(c_in, c_out, 1)
        self.conv = _double_conv(2 * c_out, c_out, config.batch_norm, config.dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.mode == "transpose":
            x = self.up(x)
        else:
            x = self.up(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """(batch, in_channels, H, W) or (batch, H, W) -> logits (batch, n_classes, H, W).

    H and W must be multiples of ``2**config.depth``; anything else raises a one-line
    :class:`InverscopeError` naming the sizes that fit.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        widths = [c.base_channels * 2 ** i for i in range(c.depth + 1)]
        self.down = nn.ModuleList()
        c_in = c.in_channels
        for w in widths[:-1]:
            self.down.append(_double_conv(c_in, w, c.batch_norm))
            c_in = w
        self.bottleneck = _double_conv(widths[-2], widths[-1], c.batch_norm, c.dropout)
        self.up = nn.ModuleList(_Up(widths[i + 1], widths[i], c) for i in reversed(range(c.depth)))
        self.head = nn.Conv2d(widths[0], c.n_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` as (batch, in_channels, H, W) or raise a one-line :class:`InverscopeError`."""
        c = self.config
        if x.ndim == 3 and c.in_channels == 1:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise InverscopeError(f"UNet input: got shape {tuple(x.shape)}; expected (batch, {c.in_channels}, H, W)"
                                  + (" or (batch, H, W)" if c.in_channels == 1 else ""))
        m = 2 ** c.depth
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % m or w % m or h == 0 or w == 0:
            def fits(n: int) -> str:
                lo = (n // m) * m
                return str(n) if lo == n and n else (f"{lo} or {lo + m}" if lo else str(m))
            raise InverscopeError(f"UNet input: got H x W = {h} x {w}; depth {c.depth} needs both to be multiples of "
                                  f"{m} (nearest that fit: H {fits(h)}, W {fits(w)}); pad or crop the image")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.check_input(x)
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, skip in zip(self.up, reversed(skips)):
            x = up(x, skip)
        return self.head(x)


@torch.no_grad()
def ensemble_predict(nets: Sequence[nn.Module] | nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean softmax probabilities of an ensemble and their per-pixel spread.

    Parameters
    ----------
    nets : sequence of nn.Module (or one)
        Networks mapping ``x`` to logits (batch, n_classes, H, W); each is put in eval mode
        for the call and its previous mode restored.
    x : tensor (batch, in_channels, H, W) or (batch, H, W)
        Images (any units; as the nets were trained).

    Returns
    -------
    mean : tensor (batch, n_classes, H, W)
        Ensemble mean of the per-net softmax probabilities (dimensionless, sums to 1 over classes).
    std : tensor (batch, n_classes, H, W)
        Standard deviation across nets of those probabilities (population std, ``ddof=0``;
        zeros for a single net).
    """
    if isinstance(nets, nn.Module):
        nets = [nets]
    nets = list(nets)
    if not nets:
        raise InverscopeError("ensemble_predict nets: got an empty sequence; give at least one network")
    probs = []
    for net in nets:
        was_training = net.training
        net.eval()
        try:
            probs.append(torch.softmax(net(x), dim=1))
        finally:
            net.train(was_training)
    stack = torch.stack(probs)
    mean = stack.mean(0)
    # written out: torch.std over the leading axis is a strided reduction, ~7x slower on CPU
    return mean, (stack - mean).square_().mean(0).sqrt_()


__all__ = ["UNet", "UNetConfig", "ensemble_predict"]
