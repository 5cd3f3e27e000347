"""Autoencoder training on Lightning: reconstruction MSE plus an L1 activity penalty on the latent.

Works with any network whose forward returns ``(reconstruction, latent)`` (the published
BiLSTM of Agar et al. 2019 or :class:`inverscope.models.nets.conv_ae.SparseConvAE`).
A wall-clock budget (``max_minutes``) stops training; AdamW with a one-cycle schedule sized
from an epoch estimate; AMP (bf16) on CUDA when asked.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from pydantic import Field
from torch.utils.data import DataLoader, TensorDataset

from inverscope.core.config import StrictModel
from inverscope.core.io import write_json_atomic
from inverscope.core.seeding import torch_generator
from inverscope.training.supervised import read_history


class AETrainConfig(StrictModel):
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(64, ge=1)
    max_epochs: int = Field(300, ge=1)
    max_minutes: float | None = Field(5.0, gt=0)
    l1_activity: float = Field(1e-5, ge=0)
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    precision: str = "32-true"
    progress_bar: bool = True


class AutoencoderTask(L.LightningModule):
    def __init__(self, net: torch.nn.Module, cfg: AETrainConfig, steps_per_epoch: int):
        super().__init__()
        self.net, self.cfg, self.steps_per_epoch = net, cfg, steps_per_epoch

    def forward(self, x):
        return self.net(x)

    def _step(self, x):
        recon, z = self.net(x)
        mse = torch.nn.functional.mse_loss(recon, x)
        return mse, mse + self.cfg.l1_activity * z.abs().sum(dim=1).mean()

    def training_step(self, batch, _):
        mse, loss = self._step(batch[0])
        self.log("train_loss", mse, on_epoch=True, on_step=False, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        mse, _ = self._step(batch[0])
        self.log("val_loss", mse, on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.cfg.lr, epochs=self.cfg.max_epochs,
                                                    steps_per_epoch=self.steps_per_epoch, pct_start=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@dataclass
class AEFitResult:
    task: AutoencoderTask
    history: list[dict]
    wall_s: float
    epochs: int


def fit_autoencoder(net, train: np.ndarray, val: np.ndarray, cfg: AETrainConfig, out_dir, name: str) -> AEFitResult:
    """Train on loops (n, steps); logs to ``out_dir/name`` (CSV, TensorBoard), checkpoint at the end."""
    for logger_name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(logger_name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(LeafSpec|does not have many workers).*")
    out = Path(out_dir) / name
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    tr = DataLoader(TensorDataset(torch.as_tensor(train, dtype=torch.float32)), batch_size=cfg.batch_size,
                    shuffle=True, generator=torch_generator(cfg.seed), drop_last=len(train) > cfg.batch_size)
    va = DataLoader(TensorDataset(torch.as_tensor(val, dtype=torch.float32)), batch_size=1024)
    task = AutoencoderTask(net, cfg, max(1, len(tr)))
    max_time = None if cfg.max_minutes is None else {"seconds": int(cfg.max_minutes * 60)}
    trainer = L.Trainer(max_epochs=cfg.max_epochs, max_time=max_time, accelerator=cfg.accelerator, devices=cfg.devices,
                        precision=cfg.precision, enable_progress_bar=cfg.progress_bar, enable_model_summary=False,
                        logger=[L.pytorch.loggers.CSVLogger(out, name="", version="csv"),
                                L.pytorch.loggers.TensorBoardLogger(out, name="", version="tensorboard")],
                        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=out / "checkpoints", save_last=True,
                                                                       save_top_k=0)],
                        log_every_n_steps=1, check_val_every_n_epoch=5)
    t0 = time.perf_counter()
    task.train()  # Lightning keeps the modes it finds: a net left in eval mode (e.g. by reconstruct) would train without dropout
    trainer.fit(task, tr, va)
    wall = time.perf_counter() - t0
    task.eval()
    history = read_history(out / "csv" / "metrics.csv")
    write_json_atomic(out / "history.json", {"history": history})
    return AEFitResult(task, history, wall, trainer.current_epoch)


def reconstruct(net, x: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruction and latent in inference mode (dropout off, BatchNorm moving statistics)."""
    net.eval()
    recs, zs = [], []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            r, z = net(torch.as_tensor(x[i:i + batch_size], dtype=torch.float32))
            recs.append(r.numpy())
            zs.append(z.numpy())
    return np.concatenate(recs), np.concatenate(zs)
