"""Training of shallow networks on small in-memory tables (loops, spectra): plain PyTorch.

A few thousand rows and a few thousand weights train in seconds; at that size Lightning's
per-epoch machinery costs more than the optimisation, so this loop is written out: AdamW,
minibatches from a seeded generator, a held-back validation fraction, early stopping on the
validation loss with the best weights restored. ``task="regression"`` minimises MSE on the
targets as given (standardize them first); ``task="classification"`` minimises cross-entropy
on integer labels, with classes weighted by inverse frequency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from inverscope.core.config import StrictModel
from inverscope.core.errors import InverscopeError
from inverscope.core.seeding import torch_generator


class ShallowTrainConfig(StrictModel):
    task: Literal["regression", "classification"] = "regression"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    batch_size: int = Field(128, ge=1)
    max_epochs: int = Field(400, ge=1)
    patience: int = Field(40, ge=1)            # epochs without a better validation loss before stopping
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    max_minutes: float | None = Field(None, gt=0)
    seed: int = 0


@dataclass
class ShallowFit:
    best_epoch: int
    epochs: int
    wall_s: float
    history: list[dict] = field(default_factory=list)


def _loss_fn(task: str, y: torch.Tensor):
    if task == "regression":
        return torch.nn.functional.mse_loss
    counts = torch.bincount(y, minlength=int(y.max()) + 1).float()
    weight = torch.where(counts > 0, counts.sum() / (len(counts) * counts.clamp(min=1)), torch.zeros_like(counts))
    return lambda out, target: torch.nn.functional.cross_entropy(out, target, weight=weight)


def fit_shallow(net: torch.nn.Module, x: np.ndarray, y: np.ndarray, cfg: ShallowTrainConfig) -> ShallowFit:
    """Train `net` on rows `x` with targets `y` (float array, or int labels); returns the fit record.

    The validation rows are a seeded random `validation_fraction` of the rows; the net ends with
    the weights of the epoch with the lowest validation loss.
    """
    x = np.asarray(x, np.float32)
    if len(x) != len(y):
        raise InverscopeError(f"training table has {len(x)} rows but {len(y)} targets")
    if len(x) < 2:
        raise InverscopeError(f"training needs at least 2 rows, got {len(x)}")
    xt = torch.from_numpy(x)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.float32 if cfg.task == "regression" else torch.long)
    g = torch_generator(cfg.seed)
    perm = torch.randperm(len(x), generator=g)
    n_val = max(1, int(round(cfg.validation_fraction * len(x))))
    val, tr = perm[:n_val], perm[n_val:]
    loss_fn = _loss_fn(cfg.task, yt[tr])
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, best_epoch, history = float("inf"), None, 0, []
    t0 = time.perf_counter()
    epoch = 0
    for epoch in range(cfg.max_epochs):
        net.train()
        order = tr[torch.randperm(len(tr), generator=g)]
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            opt.zero_grad()
            loss = loss_fn(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        net.eval()
        with torch.no_grad():
            v = float(loss_fn(net(xt[val]), yt[val]))
        history.append({"epoch": epoch, "train_loss": total / max(len(tr), 1), "val_loss": v})
        if v < best:
            best, best_epoch = v, epoch
            best_state = {k: t.detach().clone() for k, t in net.state_dict().items()}
        if epoch - best_epoch >= cfg.patience:
            break
        if cfg.max_minutes is not None and time.perf_counter() - t0 > 60 * cfg.max_minutes:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return ShallowFit(best_epoch, epoch + 1, time.perf_counter() - t0, history)


def predict_shallow(net: torch.nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Network outputs for rows `x` (raw outputs: logits for a classifier)."""
    net.eval()
    xt = torch.from_numpy(np.asarray(x, np.float32))
    with torch.no_grad():
        return np.concatenate([net(xt[i:i + batch_size]).numpy() for i in range(0, len(xt), batch_size)]) \
            if len(xt) else np.zeros((0,), np.float32)
