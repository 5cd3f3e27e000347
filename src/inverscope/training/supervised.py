"""Supervised training of stack networks on Lightning: classification and regression.

:class:`StackTask` wraps any network (it does not know the architecture) with a task,
an optimizer config, on-the-fly augmentation (training and validation, as in Oxley et
al. 2020) and per-detector-pixel standardization. :func:`fit` runs a Lightning
``Trainer`` with checkpoints (resume from the last one), early stopping, CSV and
TensorBoard logs, a progress bar, and DDP across ``devices`` / ``num_nodes``.

``checkpoints/last.ckpt`` is rewritten at the end of every training epoch (after that
epoch's validation) and carries the per-epoch history and the cumulative training time,
so a run killed at any point resumes at the epoch after the last finished one and still
reports every epoch once and the time of all its segments; ``history.json`` is rewritten
every epoch as well.
"""

from __future__ import annotations

import csv
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from pydantic import Field
from torch.utils.data import DataLoader, TensorDataset

from inverscope.core.config import StrictModel
from inverscope.core.io import write_json_atomic
from inverscope.core.seeding import torch_generator
from inverscope.datasets.augment import AugmentConfig, Augmenter
from inverscope.models.normalization import normalization_tensors, normalize

Task = Literal["classification", "regression"]


class TrainConfig(StrictModel):
    """Optimizer and loop settings; the defaults are the paper's (SGD, lr 0.04, momentum 0, 200 epochs)."""

    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.04, gt=0)
    momentum: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(32, ge=1)
    max_epochs: int = Field(200, ge=1)
    patience: int | None = Field(None, ge=1)
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    precision: str = "32-true"
    progress_bar: bool = True


class StackTask(L.LightningModule):
    """A network plus task, loss, optimizer, augmentation and normalization."""

    def __init__(self, net: torch.nn.Module, task: Task, train: TrainConfig, normalization: dict,
                 augment: AugmentConfig | None = None):
        super().__init__()
        self.net, self.task, self.train_cfg = net, task, train
        self.augmenter = Augmenter(augment) if augment is not None else None
        self.transform, mean, std = normalization_tensors(normalization)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self._gen = torch_generator(train.seed + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(normalize(x, self.transform, self.mean, self.std))

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.augmenter(x, gen) if self.augmenter is not None else x

    def _loss(self, out, y):
        if self.task == "classification":
            return torch.nn.functional.cross_entropy(out, y), (out.argmax(1) == y).float().mean()
        pred = out.squeeze(-1)
        return torch.nn.functional.mse_loss(pred, y), (pred - y).abs().mean()

    def training_step(self, batch, _):
        x, y = batch
        loss, metric = self._loss(self(self._augment(x, self._gen)), y)
        name = "acc" if self.task == "classification" else "mae"
        self.log("train_loss", loss, on_epoch=True, on_step=False, prog_bar=True)
        self.log(f"train_{name}", metric, on_epoch=True, on_step=False)
        return loss

    def on_validation_epoch_start(self):
        self._val_gen = torch_generator(self.train_cfg.seed + 2)  # same augmented validation set each epoch

    def validation_step(self, batch, _):
        x, y = batch
        loss, metric = self._loss(self(self._augment(x, self._val_gen)), y)
        name = "acc" if self.task == "classification" else "mae"
        self.log("val_loss", loss, on_epoch=True, prog_bar=True)
        self.log(f"val_{name}", metric, on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        c = self.train_cfg
        if c.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        cls = torch.optim.Adam if c.optimizer == "adam" else torch.optim.AdamW
        return cls(self.parameters(), lr=c.lr, weight_decay=c.weight_decay)


@dataclass
class FitResult:
    module: StackTask
    history: list[dict]
    best_checkpoint: str | None
    wall_s: float
    epochs: int


class _HistoryRecorder(L.Callback):
    """Per-epoch metrics and cumulative training time, saved inside every checkpoint.

    At each training epoch end (after that epoch's validation, before the checkpoint
    callbacks, which Lightning runs last) it appends the epoch's ``train_*`` / ``val_*``
    aggregates and rewrites ``history.json``. Its ``state_dict`` travels in the checkpoint,
    so a resumed run continues the history and the wall time of the earlier segments.
    ``fallback`` seeds the history for checkpoints written before the recorder existed.
    """

    def __init__(self, path: Path, t0: float, fallback: list[dict] | None = None, fallback_wall: float = 0.0):
        self.path, self.t0 = Path(path), t0
        self.history: list[dict] = [dict(h) for h in fallback or []]
        self.wall_before = float(fallback_wall)  # training time of the earlier segments
        self.wall_s = self.wall_before
        self.restored = False

    def elapsed(self) -> float:
        return self.wall_before + (time.perf_counter() - self.t0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        e = trainer.current_epoch
        row: dict = {"epoch": e}
        for k, v in trainer.callback_metrics.items():
            if k in ("epoch", "step"):
                continue
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    continue
                v = v.item()
            row[k] = float(v)
        self.history = [h for h in self.history if h["epoch"] < e] + [row]
        self.wall_s = self.elapsed()
        if trainer.is_global_zero:
            self.write()

    def write(self, wall_s: float | None = None) -> None:
        wall = self.wall_s if wall_s is None else wall_s
        write_json_atomic(self.path, {"history": self.history, "wall_s": wall})

    def state_dict(self) -> dict:
        return {"history": [dict(h) for h in self.history], "wall_s": self.wall_s}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]
        self.wall_before = self.wall_s = float(state_dict.get("wall_s", 0.0))
        self.restored = True


def _loader(x, y, task, batch_size, shuffle, seed):
    yt = torch.as_tensor(y, dtype=torch.long if task == "classification" else torch.float32)
    ds = TensorDataset(torch.as_tensor(x, dtype=torch.float32), yt)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=torch_generator(seed) if shuffle else None)


def read_history(csv_path) -> list[dict]:
    """Per-epoch metrics from a Lightning CSVLogger file (train and val rows merged)."""
    rows: dict[int, dict] = {}
    path = Path(csv_path)
    if not path.is_file():
        return []
    with path.open() as fh:
        for r in csv.DictReader(fh):
            e = int(float(r["epoch"]))
            rows.setdefault(e, {"epoch": e}).update({k: float(v) for k, v in r.items() if v not in ("", None) and k not in ("epoch", "step")})
    return [rows[e] for e in sorted(rows)]


def fit(module: StackTask, train_xy, val_xy, out_dir, name: str, resume: bool = True,
        limit_train_batches: int | None = None) -> FitResult:
    """Train `module`; logs and checkpoints go to ``out_dir/name``.

    ``train_xy`` and ``val_xy`` are (x, y) arrays or DataLoaders; a DataLoader over
    :class:`inverscope.datasets.examples.StreamingSimulation` trains on fresh simulations
    that never touch disk (then set ``limit_train_batches``: batches per epoch).
    With ``resume`` a run whose ``last.ckpt`` exists continues from it.
    """
    c = module.train_cfg
    out = Path(out_dir) / name
    for logger_name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(logger_name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    L.seed_everything(c.seed, workers=True, verbose=False)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    resuming = resume and last.is_file()
    earlier, earlier_wall = [], 0.0
    if resuming:  # only used when the checkpoint predates the history recorder
        saved = out / "history.json"
        if saved.is_file():
            raw = json.loads(saved.read_text())
            earlier, earlier_wall = raw["history"], float(raw.get("wall_s", 0.0))
        else:
            earlier = read_history(out / "csv" / "metrics.csv")
    t0 = time.perf_counter()
    recorder = _HistoryRecorder(out / "history.json", t0, earlier, earlier_wall)
    monitor_mode = ("val_loss", "min")
    best_cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, monitor=monitor_mode[0], mode=monitor_mode[1],
                                                  filename="best")
    # `save_last` only rewrites last.ckpt when a monitored checkpoint is saved (when val_loss improves):
    # a second, unmonitored checkpoint named "last" is written at every training epoch end instead
    last_cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, monitor=None, save_top_k=1, filename="last",
                                                  save_on_train_epoch_end=True, enable_version_counter=False)
    callbacks = [recorder, best_cb, last_cb]
    if c.patience:
        callbacks.append(L.pytorch.callbacks.EarlyStopping(monitor="val_loss", patience=c.patience, mode="min"))
    loggers = [L.pytorch.loggers.CSVLogger(out, name="", version="csv"),
               L.pytorch.loggers.TensorBoardLogger(out, name="", version="tensorboard")]
    strategy = "ddp" if (str(c.devices) not in ("1", "auto") or c.num_nodes > 1) else "auto"
    trainer = L.Trainer(max_epochs=c.max_epochs, limit_train_batches=limit_train_batches, accelerator=c.accelerator, devices=c.devices, num_nodes=c.num_nodes,
                        strategy=strategy, precision=c.precision, callbacks=callbacks, logger=loggers,
                        enable_progress_bar=c.progress_bar, enable_model_summary=False, log_every_n_steps=1,
                        deterministic="warn")
    train = train_xy if isinstance(train_xy, DataLoader) else _loader(*train_xy, module.task, c.batch_size, True, c.seed)
    val = val_xy if isinstance(val_xy, DataLoader) else _loader(*val_xy, module.task, 256, False, c.seed)
    trainer.fit(module, train, val, ckpt_path=str(last) if resuming else None)
    wall = recorder.elapsed()  # this segment plus the earlier ones
    best = best_cb.best_model_path or None
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    module.eval()
    history = [dict(h) for h in recorder.history]
    if trainer.is_global_zero:
        recorder.write(wall)
    return FitResult(module, history, best, wall, trainer.current_epoch)
