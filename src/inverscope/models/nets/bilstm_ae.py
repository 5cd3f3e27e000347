"""The bidirectional-LSTM autoencoder of Agar et al. (2019) for switching loops.

Encoder: ``encoder_layers`` x Bidirectional LSTM (``lstm_units`` per direction), dropout
after each; the last one returns only its final state (forward final state concatenated
with the backward final state, i.e. after the backward pass has consumed the whole
reversed sequence). BatchNorm, Dense(``latent``, ReLU) (the "encoding" layer: the
embeddings), BatchNorm, repeat ``steps`` times. Decoder: ``decoder_layers`` x
Bidirectional LSTM returning sequences, dropout after each, then a per-step Dense(1).

The LSTM follows Keras 2 conventions so published weights import exactly: weights are
stored as ``kernel`` (in, 4u), ``recurrent_kernel`` (u, 4u), ``bias`` (4u) with gate
order i, f, c, o; cell and output activation tanh; gate activation ``hard_sigmoid``
(clip(0.2 x + 0.5, 0, 1), the Keras default used in the paper) or ``sigmoid``. With
sigmoid gates the fused ``torch.lstm`` kernel is used (cuDNN on GPU); hard_sigmoid runs
as a Python loop over time steps.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from inverscope.core.config import StrictModel

__all__ = ["BiLSTM", "BiLSTMAutoencoder", "BiLSTMAutoencoderConfig", "KerasLSTM", "hard_sigmoid"]


class BiLSTMAutoencoderConfig(StrictModel):
    """Architecture of :class:`BiLSTMAutoencoder` (defaults: the published model)."""

    steps: int = Field(96, ge=1)
    lstm_units: int = Field(64, ge=1)
    encoder_layers: int = Field(4, ge=1)
    decoder_layers: int = Field(4, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    latent: int = Field(16, ge=1)
    gate: Literal["hard_sigmoid", "sigmoid"] = "hard_sigmoid"
    bn_eps: float = Field(1e-3, gt=0.0)
    bn_momentum: float = Field(0.01, gt=0.0, le=1.0)  # torch convention: Keras momentum 0.99 -> 0.01


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras 2 ``hard_sigmoid``: clip(0.2 x + 0.5, 0, 1)."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


class KerasLSTM(nn.Module):
    """One LSTM direction with Keras weight layout; input (n, T, in), batch first."""

    def __init__(self, input_size: int, units: int, gate: str = "hard_sigmoid"):
        super().__init__()
        self.input_size, self.units, self.gate = input_size, units, gate
        self.kernel = nn.Parameter(torch.empty(input_size, 4 * units))
        self.recurrent_kernel = nn.Parameter(torch.empty(units, 4 * units))
        self.bias = nn.Parameter(torch.empty(4 * units))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Keras defaults: glorot uniform kernel, orthogonal recurrent kernel, unit forget bias
        u = self.units
        bound = math.sqrt(6.0 / (self.input_size + 4 * u))
        nn.init.uniform_(self.kernel, -bound, bound)
        with torch.no_grad():
            for k in range(4):
                nn.init.orthogonal_(self.recurrent_kernel[:, k * u : (k + 1) * u])
            self.bias.zero_()
            self.bias[u : 2 * u] = 1.0

    def _act(self, z: torch.Tensor) -> torch.Tensor:
        return hard_sigmoid(z) if self.gate == "hard_sigmoid" else torch.sigmoid(z)

    def step(self, zx: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step given the input projection ``zx`` = x W + b (n, 4u)."""
        u = self.units
        z = zx + h @ self.recurrent_kernel
        i = self._act(z[:, :u])
        f = self._act(z[:, u : 2 * u])
        g = torch.tanh(z[:, 2 * u : 3 * u])
        o = self._act(z[:, 3 * u :])
        c = f * c + i * g
        h = o * torch.tanh(c)
        return h, c

    def forward(self, x: torch.Tensor, reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (outputs (n, T, u) in time order, final state (n, u)).

        With ``reverse`` the sequence is processed from the last step to the first
        (Keras ``go_backwards``); outputs are still returned in the original time order,
        and the final state is the one after step 0.
        """
        n, steps, _ = x.shape
        zx = x @ self.kernel + self.bias  # (n, T, 4u)
        h = x.new_zeros(n, self.units)
        c = x.new_zeros(n, self.units)
        outs: list[torch.Tensor] = [None] * steps  # type: ignore[list-item]
        order = range(steps - 1, -1, -1) if reverse else range(steps)
        for t in order:
            h, c = self.step(zx[:, t], h, c)
            outs[t] = h
        return torch.stack(outs, dim=1), h


class BiLSTM(nn.Module):
    """Keras ``Bidirectional(LSTM, merge_mode='concat')``: [forward, backward] features.

    :meth:`forward` takes batch-first (n, T, in); :meth:`time_major` takes (T, n, in), or
    (n, in) with ``steps`` for an input repeated at every step (Keras RepeatVector), and is
    what :class:`BiLSTMAutoencoder` uses internally.
    """

    def __init__(self, input_size: int, units: int, gate: str = "hard_sigmoid", return_sequences: bool = True):
        super().__init__()
        self.forward_lstm = KerasLSTM(input_size, units, gate)
        self.backward_lstm = KerasLSTM(input_size, units, gate)
        self.gate, self.units, self.return_sequences = gate, units, return_sequences

    def _fused(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sigmoid gates: the fused torch/cuDNN kernel on time-major (T, n, in)."""
        n = x.shape[1]
        params = []
        for d in (self.forward_lstm, self.backward_lstm):
            params += [d.kernel.t(), d.recurrent_kernel.t(), d.bias, torch.zeros_like(d.bias)]
        h0 = x.new_zeros(2, n, self.units)
        out, h_n, _ = torch.lstm(x, (h0, h0), params, True, 1, 0.0, self.training, True, False)
        return out, torch.cat([h_n[0], h_n[1]], dim=-1)

    def _looped(self, x: torch.Tensor, steps: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Both directions in one Python loop over time (batched as a leading dim of 2).

        The 0.2 slope and 0.5 offset of hard_sigmoid are folded into the gate columns of the
        weights, so a step is two batched matmuls, one clamp and a few elementwise ops; no
        (T, n, 4u) intermediate is materialized.
        """
        u = self.units
        constant = steps is not None
        n = x.shape[0] if constant else x.shape[1]
        steps = steps if constant else x.shape[0]
        f, b = self.forward_lstm, self.backward_lstm
        kernel = torch.stack([f.kernel, b.kernel])  # (2, in, 4u)
        rec = torch.stack([f.recurrent_kernel, b.recurrent_kernel])  # (2, u, 4u)
        bias = torch.stack([f.bias, b.bias])[:, None, :]  # (2, 1, 4u)
        hard = self.gate == "hard_sigmoid"
        if hard:
            scale = torch.full((4 * u,), 0.2, dtype=x.dtype, device=x.device)
            scale[2 * u : 3 * u] = 1.0
            shift = torch.full((4 * u,), 0.5, dtype=x.dtype, device=x.device)
            shift[2 * u : 3 * u] = 0.0
            kernel, rec, bias = kernel * scale, rec * scale, bias * scale + shift
        if constant:
            zc = torch.baddbmm(bias, x.unsqueeze(0).expand(2, -1, -1), kernel)  # same input every step
        h = x.new_zeros(2, n, u)
        c = x.new_zeros(2, n, u)
        out = x.new_empty(steps, n, 2 * u) if self.return_sequences else None
        for t in range(steps):
            zx = zc if constant else torch.baddbmm(bias, torch.stack([x[t], x[steps - 1 - t]]), kernel)
            z = torch.baddbmm(zx, h, rec)
            gates = z.clamp(0.0, 1.0) if hard else torch.sigmoid(z)
            g = torch.tanh(z[..., 2 * u : 3 * u])
            c = torch.addcmul(gates[..., u : 2 * u] * c, gates[..., :u], g)
            h = gates[..., 3 * u :] * torch.tanh(c)
            if out is not None:
                out[t, :, :u] = h[0]
                out[steps - 1 - t, :, u:] = h[1]  # backward outputs back in time order
        return out, torch.cat([h[0], h[1]], dim=-1)

    def time_major(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """(T, n, in) -> (T, n, 2u) sequences, or (n, 2u) final states without return_sequences."""
        if self.gate == "sigmoid" and x.is_cuda:
            if steps is not None:
                x = x.unsqueeze(0).expand(steps, -1, -1)
            seq, last = self._fused(x)
        else:
            seq, last = self._looped(x, steps)
        return seq if self.return_sequences else last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Batch-first (n, T, in) -> (n, T, 2u), or (n, 2u) without return_sequences."""
        y = self.time_major(x.transpose(0, 1))
        return y.transpose(0, 1) if self.return_sequences else y


class BiLSTMAutoencoder(nn.Module):
    """Sequence autoencoder: (n, steps) loops -> (reconstruction (n, steps), latent (n, latent))."""

    def __init__(self, config: BiLSTMAutoencoderConfig | None = None):
        super().__init__()
        config = config or BiLSTMAutoencoderConfig()
        self.config = config
        u2 = 2 * config.lstm_units
        self.encoder = nn.ModuleList(
            BiLSTM(1 if k == 0 else u2, config.lstm_units, config.gate, return_sequences=k < config.encoder_layers - 1)
            for k in range(config.encoder_layers)
        )
        self.decoder = nn.ModuleList(
            BiLSTM(config.latent if k == 0 else u2, config.lstm_units, config.gate)
            for k in range(config.decoder_layers)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.bn1 = nn.BatchNorm1d(u2, eps=config.bn_eps, momentum=config.bn_momentum)
        self.encoding = nn.Linear(u2, config.latent)
        self.bn2 = nn.BatchNorm1d(config.latent, eps=config.bn_eps, momentum=config.bn_momentum)
        self.output = nn.Linear(u2, 1)
        bound = math.sqrt(6.0 / (u2 + config.latent))  # Keras glorot uniform, zero bias
        nn.init.uniform_(self.encoding.weight, -bound, bound)
        nn.init.zeros_(self.encoding.bias)
        bound = math.sqrt(6.0 / (u2 + 1))
        nn.init.uniform_(self.output.weight, -bound, bound)
        nn.init.zeros_(self.output.bias)

    def _as_sequence(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        if x.dim() != 3 or x.shape[-1] != 1 or x.shape[1] != self.config.steps:
            steps = self.config.steps
            raise ValueError(f"expected input (n, {steps}) or (n, {steps}, 1), got {tuple(x.shape)}")
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The ``encoding`` layer output (after ReLU, before the second BatchNorm): (n, latent)."""
        h = self._as_sequence(x).transpose(0, 1)  # time-major (T, n, 1)
        for layer in self.encoder:
            h = self.dropout(layer.time_major(h))
        return torch.relu(self.encoding(self.bn1(h)))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (n, latent) as returned by :meth:`encode` -> reconstruction (n, steps)."""
        h = self.bn2(latent)  # RepeatVector: the first decoder layer sees it at every step
        for k, layer in enumerate(self.decoder):
            h = self.dropout(layer.time_major(h, steps=self.config.steps if k == 0 else None))
        return self.output(h).squeeze(-1).transpose(0, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z
