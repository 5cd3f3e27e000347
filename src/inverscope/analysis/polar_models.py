"""Polarization-pattern models as files: the input transform, saving and loading.

A polarization model reads one CBED pattern per probe position and answers one of
``n_classes`` in-plane polarization directions (class ``c`` at ``c * 360 / n_classes`` degrees,
counter-clockwise from +x of the detector; see :mod:`inverscope.training.regimes`). It is a
network of :mod:`inverscope.models.nets.pattern_classifiers` trained under one regime, saved
with :func:`inverscope.models.io.save_model` (task ``polarization``) and this metadata:

``input``
    ``pixels`` (square side the network takes), ``mrad_per_px`` (detector pixel it was trained
    on), ``semiangle_mrad``, ``energy_ev``, ``centre_px`` (undiffracted beam, ``(P // 2, P // 2)``)
    and ``transform`` (the text of :func:`polar_input`).
``normalization``
    ``mean``, ``std``: the standardization after the transform (two scalars, or two ``(P, P)`` lists).
``regime``
    ``classification``, ``regression`` or ``prototype``; ``prototypes`` ((n_classes, d) lists) for
    the last.
``n_classes``, ``class_angles_deg``, ``class_labels``
    What the outputs mean.

:func:`load_polar_model` returns the network, the metadata and a
:class:`~inverscope.training.regimes.RegimeResult` that
:func:`~inverscope.training.regimes.predict_classes` takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from inverscope.core.errors import InverscopeError
from inverscope.training.regimes import RegimeResult, class_angles_deg, predict_classes

TASK = "polarization"
TRANSFORM = ("log1p(pattern / mean(pattern)), then (x - mean) / std with the training set's mean and std "
             "(two scalars, or one per detector pixel)")


def polar_input(patterns, mean=None, std=None, *, per_pixel: bool = False):
    """Patterns ``(..., h, w)`` as a network sees them, and the standardization used.

    Each pattern is divided by its own mean (so dose and total scattered intensity drop out),
    put through ``log1p`` (the bright disc and the faint dark field both matter), then
    standardized: with one mean and standard deviation over everything, or (``per_pixel``)
    with one per detector pixel, so the weak asymmetries of the dark field weigh as much as
    the bright disc (what a linear model on standardized pixels sees). Computed here when
    not given: pass the training set's (scalars or ``(h, w)`` arrays) for any other data.
    Non-finite patterns raise.

    Returns
    -------
    x : float32 array like `patterns`
    mean, std : float or float32 ``(h, w)``
    """
    x = np.asarray(patterns, dtype=np.float32)
    if x.ndim < 2:
        raise InverscopeError(f"patterns: got shape {x.shape}; need (..., h, w)")
    if not np.all(np.isfinite(x)):
        bad = int((~np.isfinite(x)).reshape(-1, *x.shape[-2:]).any(axis=(1, 2)).sum())
        raise InverscopeError(f"patterns: {bad} pattern(s) hold NaN or infinite values; mask or drop them first")
    m = x.mean(axis=(-2, -1), keepdims=True)
    x = np.log1p(np.clip(x, 0, None) / np.where(m > 0, m, 1.0))
    if mean is None:
        if per_pixel:
            flat = x.reshape(-1, *x.shape[-2:])
            mean, std = flat.mean(axis=0), flat.std(axis=0)
            std = np.where(std > 1e-6 * max(float(std.max()), 1e-30), std, 1.0).astype(np.float32)
        else:
            mean, std = float(x.mean()), float(x.std()) or 1.0
    mean = float(mean) if np.ndim(mean) == 0 else np.asarray(mean, np.float32)
    std = float(std) if np.ndim(std) == 0 else np.asarray(std, np.float32)
    if np.ndim(mean) and np.shape(mean) != x.shape[-2:]:
        raise InverscopeError(f"patterns: {x.shape[-2]} x {x.shape[-1]} px; the per-pixel standardization is "
                              f"{np.shape(mean)[0]} x {np.shape(mean)[1]}")
    return ((x - mean) / std).astype(np.float32), mean, std


def polar_metadata(*, regime: RegimeResult, pixels: int, mrad_per_px: float, semiangle_mrad: float, energy_ev: float,
                   mean, std, class_labels: list[str] | None = None, extra: dict | None = None) -> dict:
    """The metadata :func:`inverscope.models.io.save_model` writes beside a polarization network."""
    n = regime.n_classes
    meta = {"task": TASK, "regime": regime.regime, "n_classes": n, "class_angles_deg": class_angles_deg(n).tolist(),
            "class_labels": list(class_labels) if class_labels else [f"{a:g} deg" for a in class_angles_deg(n)],
            "input": {"pixels": int(pixels), "mrad_per_px": float(mrad_per_px), "semiangle_mrad": float(semiangle_mrad),
                      "energy_ev": float(energy_ev), "centre_px": [int(pixels) // 2] * 2, "transform": TRANSFORM},
            "normalization": {"mean": np.asarray(mean, float).tolist(), "std": np.asarray(std, float).tolist()}}
    if regime.prototypes is not None:
        meta["prototypes"] = np.asarray(regime.prototypes, float).tolist()
    meta.update(extra or {})
    return meta


@dataclass
class PolarModel:
    """A loaded polarization network with what it needs to read patterns."""

    net: torch.nn.Module
    meta: dict
    result: RegimeResult
    path: str

    @property
    def pixels(self) -> int:
        return int(self.meta["input"]["pixels"])

    def predict(self, patterns, *, batch_size: int = 512) -> dict[str, np.ndarray]:
        """``class``, ``confidence``, ``angle_deg`` of raw patterns ``(n, P, P)`` (transform applied here)."""
        x, _, _ = polar_input(patterns, self.meta["normalization"]["mean"], self.meta["normalization"]["std"])
        if x.shape[-2:] != (self.pixels, self.pixels):
            raise InverscopeError(f"patterns: {x.shape[-2]} x {x.shape[-1]} px; model {self.path} takes "
                                  f"{self.pixels} x {self.pixels}")
        with torch.inference_mode():
            c, conf, ang = predict_classes(self.net, x, self.result, batch_size=batch_size)
        return {"class": c, "confidence": conf, "angle_deg": ang}


def load_polar_model(path, device: str = "cpu") -> PolarModel:
    """Load a polarization model written by the KNN polarization study (or :func:`polar_metadata`)."""
    from inverscope.models.io import load_model, model_paths

    net, meta = load_model(path, device=device)
    where = model_paths(path)[1]
    if meta.get("task") != TASK:
        raise InverscopeError(f"{where}: task {meta.get('task')!r}; not a polarization model")
    try:
        n, regime = int(meta["n_classes"]), str(meta["regime"])
        p = int(meta["input"]["pixels"])
        for key in ("mean", "std"):
            v = np.asarray(meta["normalization"][key], np.float32)
            if v.shape not in ((), (p, p)) or not np.all(np.isfinite(v)):
                raise ValueError(f"normalization.{key}")
        protos = np.asarray(meta["prototypes"], np.float32) if regime == "prototype" else None
    except (KeyError, TypeError, ValueError) as err:
        raise InverscopeError(f"{where}: polarization metadata incomplete ({err!r} missing or malformed)") from None
    result = RegimeResult(regime=regime, n_classes=n, history=[], best_epoch=-1, best_val_accuracy=float("nan"),
                          val_accuracy=float("nan"), wall_s=0.0, epochs_run=0, n_train=0, kept_fraction=1.0,
                          prototypes=protos)
    return PolarModel(net, meta, result, str(path))


__all__ = ["TASK", "TRANSFORM", "PolarModel", "load_polar_model", "polar_input", "polar_metadata"]
