"""Classical baselines (scikit-learn pipelines) on the same stacks the networks see.

PCA + logistic regression for classification, PCA + ridge regression for the step
position. Inputs are flattened stacks; standardization is fitted on the training set.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def pca_logistic(n_components: int = 32, seed: int = 0, c: float = 1.0):
    """Unfitted PCA(n) + logistic regression pipeline for flattened stacks."""
    return make_pipeline(StandardScaler(), PCA(n_components=n_components, random_state=seed),
                         LogisticRegression(C=c, max_iter=2000, random_state=seed))


def pca_ridge(n_components: int = 16, seed: int = 0):
    """Unfitted PCA(n) + ridge regression (alpha by cross-validation)."""
    return make_pipeline(StandardScaler(), PCA(n_components=n_components, random_state=seed),
                         RidgeCV(alphas=np.logspace(-3, 3, 13)))


def fit_baseline(kind: str, x: np.ndarray, y: np.ndarray, n_components: int, seed: int = 0):
    """Fit a 'classification' or 'regression' baseline, capping components at the data's rank."""
    n = int(min(n_components, len(x) - 1, _flat(x).shape[1]))
    model = pca_logistic(n, seed) if kind == "classification" else pca_ridge(n, seed)
    return model.fit(_flat(x), y)


def baseline_predict(model, x: np.ndarray) -> np.ndarray:
    return model.predict(_flat(x))
