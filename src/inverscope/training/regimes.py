"""Three training regimes for a polarization-pattern network, behind :func:`fit_regime`.

The regimes of Martinc et al., "Benchmarking machine learning approaches for polarization
mapping in ferroelectrics using 4D-STEM" (arXiv:2603.15582; reference code
github.com/matejMartinc/4D-STEM-polarization-mapping, MIT). Labels are class indices
``0 .. n_classes - 1``; class ``c`` is the polarization direction at angle ``c * 360 / n_classes``
degrees, counter-clockwise from +x (8 classes: 0, 45, ..., 315 degrees). The network is any of
:mod:`inverscope.models.nets.pattern_classifiers` (or any module with the matching output);
its ``head`` must suit the regime.

Regimes (``RegimeConfig.regime``)
---------------------------------
``classification``
    ``classification`` head with ``n_classes`` logits; cross-entropy. Prediction: argmax;
    confidence: the largest softmax probability; angle: the class angle.
``regression``
    ``regression`` head with 2 outputs, trained towards the unit vector ``(cos a, sin a)`` of the
    class angle ``a``. ``regression_loss="mse"`` (the reference code's; default) is the mean
    squared error over both components; ``"cosine"`` is ``1 - cos`` between output and target
    (ignores the output's length). Prediction: ``angle = atan2(out_y, out_x)`` in [0, 360) and
    the class of the nearest bin (:func:`angle_to_class`; a tie at a bin edge goes to the lower,
    clockwise class, as the reference code's ``bucketize``). Confidence: ``1 - |angle - class
    angle| / (half the bin width)``, 1 at the bin centre and 0 at its edge (an angular-error
    proxy; the output length is not used).
``prototype``
    ``embedding`` head (unit-norm rows). Loss per batch (prototypical, circular soft targets,
    :func:`prototypical_circular_loss`): class prototypes are the normalised means of the batch's
    embeddings of each class present (a sample's own embedding is included); logits are
    ``cos(embedding, prototype) / temperature`` over the classes present in the batch; the loss is
    ``KL(q || softmax(logits))`` (batch mean) with the soft target ``q`` of
    :func:`circular_soft_targets` restricted to the present classes and renormalised. After each
    epoch (on up to ``prototype_samples`` training patterns, for validation) and after training
    (on all training patterns, with the best weights) the prototypes are the normalised class
    means of the training embeddings in inference mode. Prediction: the prototype of largest
    cosine similarity; confidence: that similarity (in [-1, 1]; low values flag patterns unlike
    every class, the anomaly score); angle: the class angle.

Differences from the reference code's prototype loss: it uses unnormalised embeddings,
``-||e - p||`` logits (no temperature) and a zero prototype for classes missing from the batch;
here embeddings are unit norm (the embedding head), logits are scaled cosines and missing
classes are left out of the softmax. Its width ``sigma = 1.25`` class steps is the default
``soft_target_width_deg = 56.25`` (8 classes).

Circular soft targets
---------------------
For a pattern of class ``y`` the target over classes ``c`` is a wrapped Gaussian of the circular
angular distance, ``q_c ~ exp(-d(c, y)^2 / (2 w^2))`` with ``d = min(|a_c - a_y|, 360 - |a_c -
a_y|)`` degrees and ``w = soft_target_width_deg`` (normalised to sum 1). For 8 classes and the
default ``w = 56.25``: own class 0.32, neighbours 0.23, next 0.09, 0.02, opposite 0.002. Small
``w`` approaches one-hot targets.

Filtering (``RegimeConfig.filtering``)
--------------------------------------
The reference code trains only on patterns whose centre-of-mass deviation ``|CoM|`` exceeds the
mean over their scan (the polarised part of each simulated scan; its min-max normalisation does
not change which patterns pass). The caller passes ``com_magnitude`` (one value per training
pattern) and optionally ``com_groups`` (the scan of each pattern; the mean is taken per scan,
otherwise over all training patterns): :func:`com_filter_mask` keeps ``|CoM| > mean`` strictly.

Training loop
-------------
Plain torch on ``cfg.device``: Adam with L2 weight decay (the reference code's optimizer; lr
2e-4, weight decay 1e-4, batch 128, 20 epochs are its settings and the defaults), constant
learning rate, seeded shuffling (``torch.Generator``), ``torch.manual_seed(seed)`` for dropout;
batches of fewer than 2 patterns (an epoch's last remainder) are skipped (batch norm and
prototypes need two). After each epoch the validation accuracy and loss are recorded; the
weights of the best epoch (highest validation accuracy, ties to the lower validation loss) are
restored at the end. ``patience`` stops after that many epochs without a better epoch;
``max_minutes`` stops after the batch that crosses the wall-clock budget (that epoch is still
validated). Deterministic on CPU for a given seed and initial weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch.nn import functional as F

from inverscope.core.config import StrictModel, validate
from inverscope.core.errors import ConfigError, InverscopeError

Regime = Literal["classification", "regression", "prototype"]
#: the net head each regime needs
HEAD_OF_REGIME = {"classification": "classification", "regression": "regression", "prototype": "embedding"}


class RegimeConfig(StrictModel):
    """Settings of :func:`fit_regime` (defaults: the reference code's optimizer settings)."""

    regime: Regime = "classification"
    n_classes: int = Field(8, ge=2, description="polarization classes, angles 360/n apart")
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0, description="Adam L2 weight decay")
    regression_loss: Literal["mse", "cosine"] = "mse"
    soft_target_width_deg: float = Field(56.25, gt=0, description="Gaussian width of the circular soft "
                                         "targets [deg] (prototype regime)")
    temperature: float = Field(0.1, gt=0, description="prototype logits are cosine / temperature")
    prototype_samples: int = Field(8192, ge=1, description="training patterns used for the per-epoch "
                                   "prototypes (validation); the final ones use all")
    filtering: bool = Field(False, description="train only on patterns with |CoM| above their scan mean")
    patience: int | None = Field(None, ge=1, description="stop after this many epochs without a better one")
    seed: int = 0
    max_minutes: float | None = Field(None, gt=0, description="wall-clock budget for training")
    device: str = "cpu"
    eval_batch_size: int = Field(512, ge=1)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        try:
            torch.device(v)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"not a torch device ({err})") from None
        return v


@dataclass
class RegimeResult:
    """What :func:`fit_regime` returns; the net itself is trained in place (best weights, eval mode).

    ``history`` has one row per epoch: ``epoch``, ``train_loss``, ``train_acc`` (on the training
    batches as they were trained; batch prototypes for the prototype regime), ``val_loss``,
    ``val_acc``, ``elapsed_s``. ``val_accuracy`` is the accuracy of the returned net (and final
    prototypes) on the validation set. ``prototypes`` is (n_classes, embedding) float32 for the
    prototype regime (unit rows; NaN rows for classes without training patterns), else None.
    ``train_mask`` is the filtering mask over ``x_train`` (None without filtering).
    ``stopped`` is None, ``"patience"`` or ``"budget"``.
    """

    regime: str
    n_classes: int
    history: list[dict]
    best_epoch: int
    best_val_accuracy: float
    val_accuracy: float
    wall_s: float
    epochs_run: int
    n_train: int
    kept_fraction: float
    train_mask: np.ndarray | None = None
    prototypes: np.ndarray | None = None
    stopped: str | None = None
    config: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- angles and targets

def class_angles_deg(n_classes: int = 8) -> np.ndarray:
    """Angles of the classes [deg]: ``c * 360 / n_classes``."""
    return np.arange(n_classes) * (360.0 / n_classes)


def angle_to_class(angle_deg, n_classes: int = 8) -> np.ndarray:
    """Class of the nearest angular bin for angles [deg] (any real values; wrapped).

    Bin ``c`` covers ``(a_c - s/2, a_c + s/2]`` with ``s = 360 / n_classes``, so a tie at an edge
    goes to the lower (clockwise) class: for 8 classes 22.4 -> 0, 22.5 -> 0, 22.6 -> 1, 350 -> 0.
    """
    step = 360.0 / n_classes
    a = np.mod(np.asarray(angle_deg, dtype=np.float64), 360.0)
    return (np.ceil(a / step - 0.5).astype(np.int64)) % n_classes


def circular_distance_deg(a, b) -> np.ndarray:
    """Shortest angular distance between angles `a` and `b` [deg], in [0, 180]."""
    d = np.mod(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), 360.0)
    return np.minimum(d, 360.0 - d)


def circular_soft_targets(labels, n_classes: int = 8, width_deg: float = 56.25) -> np.ndarray:
    """(n, n_classes) soft targets: wrapped Gaussian of the circular class distance, rows sum to 1.

    ``q_c ~ exp(-d(a_c, a_y)^2 / (2 width_deg^2))``, ``d`` the shortest angular distance [deg].
    """
    if not width_deg > 0:
        raise ConfigError(f"soft_target_width_deg: got {width_deg!r}; must be > 0")
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    _check_labels(y, n_classes, "labels")
    angles = class_angles_deg(n_classes)
    d = circular_distance_deg(angles[None, :], angles[y][:, None])
    w = np.exp(-0.5 * (d / width_deg) ** 2)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def com_filter_mask(com_magnitude, groups=None) -> np.ndarray:
    """Boolean mask of the patterns whose ``|CoM|`` exceeds the mean of their group (strictly).

    Without `groups` the mean is over all of `com_magnitude`; with it (one scan label per pattern)
    each pattern is compared with the mean of its own scan.
    """
    m = np.asarray(com_magnitude, dtype=np.float64).reshape(-1)
    if m.size == 0 or not np.all(np.isfinite(m)):
        raise InverscopeError(f"com_magnitude: got {m.size} values, {int(np.sum(~np.isfinite(m)))} not finite; "
                              "needs finite values, one per training pattern")
    if groups is None:
        return m > m.mean()
    g = np.asarray(groups).reshape(-1)
    if g.shape != m.shape:
        raise InverscopeError(f"com_groups: got {g.size} labels for {m.size} com_magnitude values; needs one each")
    keep = np.zeros(m.shape, dtype=bool)
    for key in np.unique(g):
        sel = g == key
        keep[sel] = m[sel] > m[sel].mean()
    return keep


def unit_vectors(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(n, 2) unit vectors (cos a, sin a) of the class angles of `labels`."""
    a = labels.to(torch.float32) * (2 * math.pi / n_classes)
    return torch.stack([torch.cos(a), torch.sin(a)], 1)


# --------------------------------------------------------------------------- losses

def _soft_targets_t(y: torch.Tensor, n_classes: int, width_deg: float) -> torch.Tensor:
    step = 360.0 / n_classes
    diff = torch.remainder(torch.arange(n_classes, device=y.device)[None, :] - y[:, None], n_classes).to(torch.float32)
    d = torch.minimum(diff, n_classes - diff) * step
    w = torch.exp(-0.5 * (d / width_deg) ** 2)
    return w / w.sum(1, keepdim=True)


def _class_means(emb: torch.Tensor, y: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised class means (n_classes, D) and the presence mask (n_classes,)."""
    sums = torch.zeros(n_classes, emb.shape[1], dtype=emb.dtype, device=emb.device).index_add_(0, y, emb)
    counts = torch.bincount(y, minlength=n_classes)
    return F.normalize(sums, dim=1), counts > 0


def prototypical_circular_loss(emb: torch.Tensor, y: torch.Tensor, n_classes: int, width_deg: float,
                               temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch prototypical loss with circular soft targets (see the module docstring).

    Returns the loss (KL divergence, batch mean) and the batch predictions (nearest batch prototype).
    """
    emb = F.normalize(emb, dim=1)
    protos, present = _class_means(emb, y, n_classes)
    logits = (emb @ protos.T) / temperature
    logits = logits.masked_fill(~present[None, :], -1e9)
    q = _soft_targets_t(y, n_classes, width_deg) * present[None, :]
    q = q / q.sum(1, keepdim=True)
    logp = F.log_softmax(logits, dim=1)
    loss = F.kl_div(logp, q, reduction="batchmean")
    return loss, logits.argmax(1)


def _regression_loss(out: torch.Tensor, y: torch.Tensor, n_classes: int, kind: str) -> torch.Tensor:
    target = unit_vectors(y, n_classes)
    if kind == "mse":
        return F.mse_loss(out, target)
    return (1 - F.cosine_similarity(out, target, dim=1)).mean()


def _angles_of(out: torch.Tensor) -> torch.Tensor:
    return torch.remainder(torch.rad2deg(torch.atan2(out[:, 1], out[:, 0])), 360.0)


def _classes_of_angles(angle: torch.Tensor, n_classes: int) -> torch.Tensor:
    step = 360.0 / n_classes
    return torch.remainder(torch.ceil(angle.to(torch.float64) / step - 0.5).to(torch.int64), n_classes)


# --------------------------------------------------------------------------- checks

def _check_labels(y: np.ndarray, n_classes: int, name: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise InverscopeError(f"{name}: got values in [{y.min()}, {y.max()}]; class indices must be in "
                              f"[0, {n_classes - 1}] (n_classes {n_classes})")


def _as_tensors(x, y, n_classes: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.float32)
    yn = np.asarray(y.cpu().numpy() if isinstance(y, torch.Tensor) else y)
    if xt.ndim not in (3, 4):
        raise InverscopeError(f"x_{name}: got shape {tuple(xt.shape)}; expected (n, h, w) or (n, channels, h, w)")
    if yn.ndim != 1 or len(yn) != len(xt):
        raise InverscopeError(f"y_{name}: got shape {yn.shape} for {len(xt)} patterns; expected one label each")
    if len(yn) and not np.issubdtype(yn.dtype, np.integer):
        raise InverscopeError(f"y_{name}: got dtype {yn.dtype}; expected integer class indices")
    _check_labels(yn, n_classes, f"y_{name}")
    return xt, torch.as_tensor(yn.astype(np.int64))


def _check_head(net: torch.nn.Module, cfg: RegimeConfig) -> None:
    conf = getattr(net, "config", None)
    head = getattr(conf, "head", None)
    if head is None:
        return  # not a pattern classifier: the output width is checked on the first batch
    need = HEAD_OF_REGIME[cfg.regime]
    if head != need:
        raise ConfigError(f"regime {cfg.regime!r}: the net has a {head!r} head; needs an {need!r} head"
                          if need == "embedding" else
                          f"regime {cfg.regime!r}: the net has a {head!r} head; needs a {need!r} head")
    outputs = getattr(conf, "outputs", None)
    if cfg.regime == "classification" and outputs != cfg.n_classes:
        raise ConfigError(f"regime 'classification': the net has {outputs} outputs; needs n_classes = {cfg.n_classes}")
    if cfg.regime == "regression" and outputs != 2:
        raise ConfigError(f"regime 'regression': the net has {outputs} outputs; needs 2 (cos, sin)")


def _check_output(out: torch.Tensor, cfg: RegimeConfig) -> None:
    want = {"classification": cfg.n_classes, "regression": 2}.get(cfg.regime)
    if out.ndim != 2 or (want is not None and out.shape[1] != want):
        raise ConfigError(f"regime {cfg.regime!r}: the net outputs shape {tuple(out.shape)}; "
                          f"needs (batch, {want if want is not None else 'embedding'})")


# --------------------------------------------------------------------------- evaluation

@torch.no_grad()
def _forward_all(net: torch.nn.Module, x: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    outs = [net(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0)


def _prototypes_from(emb: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    protos, present = _class_means(F.normalize(emb, dim=1), y, n_classes)
    protos[~present] = float("nan")
    return protos


def _similarities(emb: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    present = ~torch.isnan(protos).any(1)
    sim = F.normalize(emb, dim=1) @ torch.nan_to_num(protos).T
    return sim.masked_fill(~present[None, :], -float("inf"))


def _evaluate(out: torch.Tensor, y: torch.Tensor, cfg: RegimeConfig, protos: torch.Tensor | None):
    """(loss, accuracy) of network outputs `out` against labels `y`."""
    if len(y) == 0:
        return float("nan"), float("nan")
    if cfg.regime == "classification":
        return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())
    if cfg.regime == "regression":
        pred = _classes_of_angles(_angles_of(out), cfg.n_classes)
        return float(_regression_loss(out, y, cfg.n_classes, cfg.regression_loss)), float((pred == y).float().mean())
    sim = _similarities(out, protos)
    logits = (sim / cfg.temperature).masked_fill(torch.isinf(sim), -1e9)
    q = _soft_targets_t(y, cfg.n_classes, cfg.soft_target_width_deg)
    loss = F.kl_div(F.log_softmax(logits, 1), q, reduction="batchmean")
    return float(loss), float((sim.argmax(1) == y).float().mean())


# --------------------------------------------------------------------------- training

def fit_regime(net: torch.nn.Module, x_train, y_train, x_val, y_val, cfg: RegimeConfig | dict, *,
               com_magnitude=None, com_groups=None, log: Callable[[str], None] | None = print) -> RegimeResult:
    """Train `net` in place under ``cfg.regime``; returns the history, accuracies and prototypes.

    Parameters
    ----------
    net : torch.nn.Module
        A pattern network whose head suits the regime (see the module docstring).
    x_train, x_val : array (n, h, w) or (n, channels, h, w)
        Patterns as the network should see them (any normalisation is the caller's).
    y_train, y_val : int array (n,)
        Class indices in ``[0, n_classes)``.
    cfg : RegimeConfig or dict
        A dict is validated (unknown keys and bad values raise :class:`ConfigError`).
    com_magnitude : array (n_train,), optional
        ``|CoM|`` deviation per training pattern; required when ``cfg.filtering``.
    com_groups : array (n_train,), optional
        Scan label per training pattern for the filtering mean (default: one scan).
    log : callable or None
        Receives one line per epoch.
    """
    if isinstance(cfg, dict):
        cfg = validate(RegimeConfig, cfg, "regime")
    elif not isinstance(cfg, RegimeConfig):
        raise ConfigError(f"regime: got {type(cfg).__name__}; expected a RegimeConfig or a mapping")
    _check_head(net, cfg)
    xt, yt = _as_tensors(x_train, y_train, cfg.n_classes, "train")
    xv, yv = _as_tensors(x_val, y_val, cfg.n_classes, "val")
    n_all = len(xt)
    mask = None
    if cfg.filtering:
        if com_magnitude is None:
            raise ConfigError("regime.filtering: is true but no com_magnitude was given; pass one |CoM| per "
                              "training pattern")
        if np.asarray(com_magnitude).reshape(-1).shape[0] != n_all:
            raise InverscopeError(f"com_magnitude: got {np.asarray(com_magnitude).size} values for {n_all} "
                                  "training patterns; needs one each")
        mask = com_filter_mask(com_magnitude, com_groups)
        idx = torch.from_numpy(np.flatnonzero(mask))
        xt, yt = xt[idx], yt[idx]
    if len(xt) < 2:
        raise InverscopeError(f"x_train: {len(xt)} patterns to train on"
                              f"{' after filtering' if mask is not None else ''}; needs at least 2")
    if len(xv) == 0:
        raise InverscopeError("x_val: no validation patterns; needs at least 1")
    kept = len(xt) / n_all
    device = torch.device(cfg.device)
    net.to(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    proto_idx = torch.randperm(len(xt), generator=torch.Generator().manual_seed(cfg.seed + 1))[:cfg.prototype_samples]
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    budget = cfg.max_minutes * 60 if cfg.max_minutes is not None else math.inf
    history: list[dict] = []
    best = (-1.0, math.inf)
    best_epoch, best_state, best_protos = -1, None, None
    stopped, t0, checked = None, time.perf_counter(), False
    if log:
        log(f"{cfg.regime}: {len(xt)} training patterns"
            f"{f' ({kept:.1%} kept by |CoM| filtering)' if mask is not None else ''}, {len(xv)} validation, "
            f"{cfg.epochs} epochs")
    for epoch in range(cfg.epochs):
        net.train()
        perm = torch.randperm(len(xt), generator=gen)
        total, correct, seen = 0.0, 0, 0
        for s in range(0, len(xt), cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            if len(idx) < 2:
                continue
            xb, yb = xt[idx].to(device), yt[idx].to(device)
            out = net(xb)
            if not checked:
                _check_output(out, cfg)
                checked = True
            if cfg.regime == "classification":
                loss, pred = F.cross_entropy(out, yb), out.argmax(1)
            elif cfg.regime == "regression":
                loss = _regression_loss(out, yb, cfg.n_classes, cfg.regression_loss)
                pred = _classes_of_angles(_angles_of(out.detach()), cfg.n_classes)
            else:
                loss, pred = prototypical_circular_loss(out, yb, cfg.n_classes, cfg.soft_target_width_deg,
                                                        cfg.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((pred == yb).sum())
            seen += len(idx)
            if time.perf_counter() - t0 > budget:
                stopped = "budget"
                break
        net.eval()
        protos = None
        if cfg.regime == "prototype":
            protos = _prototypes_from(_forward_all(net, xt[proto_idx], device, cfg.eval_batch_size),
                                      yt[proto_idx], cfg.n_classes)
        val_loss, val_acc = _evaluate(_forward_all(net, xv, device, cfg.eval_batch_size), yv, cfg, protos)
        row = {"epoch": epoch, "train_loss": total / max(seen, 1), "train_acc": correct / max(seen, 1),
               "val_loss": val_loss, "val_acc": val_acc, "elapsed_s": time.perf_counter() - t0}
        history.append(row)
        if (val_acc, -val_loss) > (best[0], -best[1]):
            best, best_epoch = (val_acc, val_loss), epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best_protos = protos
        if log:
            log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}, "
                f"validation loss {val_loss:.4f} acc {val_acc:.3f}")
        if stopped:
            break
        if cfg.patience is not None and epoch - best_epoch >= cfg.patience:
            stopped = "patience"
            break
    net.load_state_dict(best_state)
    net.eval()
    protos_np = None
    if cfg.regime == "prototype":
        best_protos = _prototypes_from(_forward_all(net, xt, device, cfg.eval_batch_size), yt, cfg.n_classes)
        protos_np = best_protos.numpy().astype(np.float32)
        missing = np.flatnonzero(np.isnan(protos_np).any(1))
        if len(missing) and log:
            log(f"prototype: no training patterns of classes {missing.tolist()}; they are never predicted")
    _, val_accuracy = _evaluate(_forward_all(net, xv, device, cfg.eval_batch_size), yv, cfg, best_protos)
    wall = time.perf_counter() - t0
    if log and stopped:
        log(f"stopped early ({stopped}) after {len(history)} epochs")
    return RegimeResult(regime=cfg.regime, n_classes=cfg.n_classes, history=history, best_epoch=best_epoch,
                        best_val_accuracy=float(best[0]), val_accuracy=val_accuracy, wall_s=wall,
                        epochs_run=len(history), n_train=len(xt), kept_fraction=kept, train_mask=mask,
                        prototypes=protos_np, stopped=stopped, config=cfg.model_dump())


# --------------------------------------------------------------------------- prediction

def predict_classes(net: torch.nn.Module, x, result: RegimeResult, *, batch_size: int = 512,
                    device: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes, confidence and angle [deg] of patterns `x` under the regime of `result`.

    Returns
    -------
    classes : int64 (n,)
    confidence : float32 (n,)
        classification: largest softmax probability; regression: ``1 - |angle - class angle| /
        (180 / n_classes)``; prototype: cosine similarity to the nearest prototype (anomaly score).
    angle_deg : float32 (n,)
        regression: the regressed angle in [0, 360); otherwise the predicted class's angle.
    """
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.float32)
    if xt.ndim not in (3, 4):
        raise InverscopeError(f"x: got shape {tuple(xt.shape)}; expected (n, h, w) or (n, channels, h, w)")
    n = result.n_classes
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    net.eval()
    out = _forward_all(net, xt, dev, batch_size)
    if len(xt) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32)
    step = 360.0 / n
    if result.regime == "classification":
        p = F.softmax(out, 1)
        conf, cls = p.max(1)
        angle = cls.to(torch.float32) * step
    elif result.regime == "regression":
        angle = _angles_of(out)
        cls = _classes_of_angles(angle, n)
        err = torch.as_tensor(circular_distance_deg(angle.numpy(), cls.numpy() * step))
        conf = 1 - err / (step / 2)
    elif result.regime == "prototype":
        if result.prototypes is None:
            raise InverscopeError("result: prototype regime without prototypes; train with fit_regime first")
        sim = _similarities(out, torch.from_numpy(result.prototypes))
        conf, cls = sim.max(1)
        angle = cls.to(torch.float32) * step
    else:
        raise ConfigError(f"result.regime: got {result.regime!r}; allowed: classification, regression, prototype")
    return (cls.numpy().astype(np.int64), conf.numpy().astype(np.float32),
            angle.numpy().astype(np.float32))


__all__ = ["HEAD_OF_REGIME", "RegimeConfig", "RegimeResult", "angle_to_class", "circular_distance_deg",
           "circular_soft_targets", "class_angles_deg", "com_filter_mask", "fit_regime", "predict_classes",
           "prototypical_circular_loss", "unit_vectors"]
