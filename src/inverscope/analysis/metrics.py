"""Evaluation metrics for classification and step-position regression."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [true, predicted]."""
    m = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(m, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return m


def classification_summary(y_true, y_pred, class_names: list[str]) -> dict:
    m = confusion(y_true, y_pred, len(class_names))
    return {"accuracy": float(np.trace(m) / max(m.sum(), 1)), "confusion": m.tolist(), "n": int(m.sum()),
            "class_names": list(class_names)}


def regression_summary(true_fraction, pred_fraction, thickness_angstrom: float, tolerance: float = 0.10) -> dict:
    """MAE [Å and fraction] and the share of predictions within ±`tolerance` of the thickness."""
    t, p = np.asarray(true_fraction, float), np.asarray(pred_fraction, float)
    err = np.abs(p - t)
    return {"thickness_angstrom": float(thickness_angstrom), "n": int(t.size),
            "mae_fraction": float(err.mean()) if t.size else float("nan"),
            "mae_angstrom": float(err.mean() * thickness_angstrom) if t.size else float("nan"),
            "within_tolerance": float((err <= tolerance).mean()) if t.size else float("nan"),
            "tolerance_fraction": tolerance}
