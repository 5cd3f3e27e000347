"""PCAResidualAE: an autoencoder that starts as PCA-k and can only learn what PCA misses.

Encoder and decoder are each a linear PCA map plus a small nonlinear residual branch,

    z     = W_e^T (x - mu) + s * f((x - mu) / sigma)          (latent, k = ``latent`` wide)
    x_hat = mu + W_d z + sigma * g(z / s)

where ``mu`` is the training mean, ``W_e = W_d`` the first k principal axes, ``s`` the
standard deviation of each principal score and ``sigma`` the root-mean-square of the centred
data (fixed scales, so the branches see and emit unit-sized numbers). :meth:`PCAResidualAE.init_from_data`
sets ``mu``, ``W_e``, ``W_d``, ``s`` and ``sigma`` from PCA of the training loops and zeroes the
last layer of both branches, so before the first optimiser step the network reproduces PCA-k's
reconstructions exactly and training starts from PCA's solution. The latent is k signed scores
(no ReLU): every latent is active, so the network is compared with PCA of exactly k components.

The decoder branch ``g`` is either an MLP from z to the whole loop (``decoder="mlp"``) or a
per-step MLP shared across the loop that sees z, the step's position in the loop and the
step's PCA basis row (``decoder="per_step"``: far fewer weights per output, tends to overfit less).
Built without data (e.g. when loading saved weights) the branches get ordinary random
initialisation; call :meth:`init_from_data` before training.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from inverscope.core.config import StrictModel

_ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class PCAResidualAEConfig(StrictModel):
    steps: int = Field(96, ge=2)
    #: k: the number of latents (= principal components the linear part starts from)
    latent: int = Field(16, ge=1)
    #: hidden widths of the encoder's residual branch f (empty: a purely linear encoder)
    encoder_hidden: list[int] = Field(default_factory=lambda: [128])
    #: hidden widths of the decoder's residual branch g (empty: a purely linear decoder)
    decoder_hidden: list[int] = Field(default_factory=lambda: [128])
    #: "mlp": g maps z to the whole loop; "per_step": one MLP over (z, step position, basis row) per step
    decoder: Literal["mlp", "per_step"] = "mlp"
    activation: Literal["gelu", "silu", "tanh"] = "gelu"
    #: decoder basis W_d is the encoder's W_e (one matrix) instead of its own copy
    tied: bool = False
    #: let mu and the PCA bases train (False: they stay at PCA's values; only the branches learn)
    train_basis: bool = True
    #: dropout inside both branches
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _latent_fits(self):
        if self.latent > self.steps:
            raise ValueError(f"latent ({self.latent}) cannot exceed steps ({self.steps}): "
                             "PCA has at most as many components as the loop has steps")
        if any(h < 1 for h in self.encoder_hidden + self.decoder_hidden):
            raise ValueError("hidden widths must be >= 1")
        return self


def _mlp(n_in: int, hidden: list[int], n_out: int, act: type[nn.Module], dropout: float) -> nn.Sequential | None:
    if not hidden:
        return None
    layers, w = [], n_in
    for h in hidden:
        layers += [nn.Linear(w, h), act()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        w = h
    layers.append(nn.Linear(w, n_out))
    return nn.Sequential(*layers)


class PCAResidualAE(nn.Module):
    """PCA-k encoder/decoder plus zero-initialised nonlinear residual branches (see the module docstring).

    Forward returns ``(reconstruction (n, steps), latent (n, latent))`` like the other autoencoders,
    so :func:`inverscope.training.autoencoder.fit_autoencoder` trains it (use ``l1_activity=0``:
    the latent is signed PCA scores, not a sparse ReLU code).
    """

    def __init__(self, config: PCAResidualAEConfig):
        super().__init__()
        self.config = c = config
        act = _ACTIVATIONS[c.activation]
        basis = torch.linalg.qr(torch.randn(c.steps, c.latent))[0]  # orthonormal placeholder until init_from_data
        self.mu = nn.Parameter(torch.zeros(c.steps), requires_grad=c.train_basis)
        self.w_enc = nn.Parameter(basis.clone(), requires_grad=c.train_basis)
        self.w_dec = None if c.tied else nn.Parameter(basis.clone(), requires_grad=c.train_basis)
        # fixed scales (saved with the weights): per-score std s (latent,) and data rms sigma ()
        self.register_buffer("score_scale", torch.ones(c.latent))
        self.register_buffer("data_scale", torch.ones(()))
        self.register_buffer("position", torch.linspace(-1.0, 1.0, c.steps))
        self.f = _mlp(c.steps, c.encoder_hidden, c.latent, act, c.dropout)
        n_in = c.latent + 1 + c.latent if c.decoder == "per_step" else c.latent
        self.g = _mlp(n_in, c.decoder_hidden, 1 if c.decoder == "per_step" else c.steps, act, c.dropout)

    # -- initialisation --------------------------------------------------------------------
    @torch.no_grad()
    def init_from_data(self, x) -> "PCAResidualAE":
        """Set the linear part to PCA-k of the training loops `x` (n, steps) and zero the branches' output.

        Afterwards ``forward`` returns PCA-k's reconstruction (to float precision) and the
        principal scores as latent. Returns ``self``.
        """
        c = self.config
        x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        x = x.reshape(len(x), -1)
        if x.shape[1] != c.steps:
            raise ValueError(f"init_from_data: loops have {x.shape[1]} steps, the network {c.steps}")
        if len(x) < 2:
            raise ValueError("init_from_data: need at least 2 loops")
        mu = x.mean(0)
        xc = x - mu
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
        k = c.latent
        if len(s) < k:
            raise ValueError(f"init_from_data: {len(x)} loops give at most {len(s)} components, latent is {k}")
        basis = vt[:k].T                                   # (steps, k), orthonormal columns
        # same sign convention as scikit-learn (largest |loading| of each axis positive)
        basis *= np.sign(basis[np.abs(basis).argmax(0), np.arange(k)])
        score_std = s[:k] / math.sqrt(len(x) - 1)
        dev = self.mu.device
        self.mu.copy_(torch.as_tensor(mu, dtype=torch.float32, device=dev))
        self.w_enc.copy_(torch.as_tensor(basis, dtype=torch.float32, device=dev))
        if self.w_dec is not None:
            self.w_dec.copy_(self.w_enc)
        self.score_scale.copy_(torch.as_tensor(np.maximum(score_std, 1e-8), dtype=torch.float32, device=dev))
        self.data_scale.fill_(float(max(np.sqrt(np.mean(xc ** 2)), 1e-8)))
        for branch in (self.f, self.g):
            if branch is not None:
                nn.init.zeros_(branch[-1].weight)
                nn.init.zeros_(branch[-1].bias)
        return self

    @classmethod
    def from_data(cls, config: PCAResidualAEConfig, x) -> "PCAResidualAE":
        """Build and :meth:`init_from_data` in one call."""
        return cls(config).init_from_data(x)

    # -- forward ---------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(n, steps) -> (n, latent): principal scores plus the learned correction."""
        x = x.reshape(x.shape[0], -1)
        xc = x - self.mu
        z = xc @ self.w_enc
        if self.f is not None:
            z = z + self.score_scale * self.f(xc / self.data_scale)
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n, latent) -> (n, steps)."""
        w = self.w_enc if self.w_dec is None else self.w_dec
        y = self.mu + z @ w.T
        if self.g is None:
            return y
        zn = z / self.score_scale
        if self.config.decoder == "mlp":
            r = self.g(zn)
        else:
            n, steps = z.shape[0], self.config.steps
            per_step = torch.cat([self.position[:, None], w.detach() * math.sqrt(steps)], dim=1)  # (steps, 1 + k)
            inp = torch.cat([zn[:, None, :].expand(n, steps, -1), per_step[None].expand(n, -1, -1)], dim=2)
            r = self.g(inp)[..., 0]
        return y + self.data_scale * r

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, steps) or (n, steps, 1) -> (reconstruction (n, steps), latent (n, latent))."""
        z = self.encode(x)
        return self.decode(z), z
