"""Recognising model parameters from curves: PCA + shallow MLP (the lecture's network) or a 1D CNN.

:class:`ParameterRecognizer` follows the scikit-learn contract: ``__init__`` stores settings,
``fit(x, y)`` returns self with learned state ending in ``_``, ``predict(x)`` gives (n, targets).
Targets are standardized inside; PCA scores are divided by their training spread before the MLP.
``save``/``load`` use safetensors + JSON (:mod:`inverscope.models.io`), PCA included, no pickles.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from sklearn.decomposition import PCA
from sklearn.metrics import r2_score

from inverscope.core.config import StrictModel
from inverscope.core.errors import InverscopeError
from inverscope.models.io import load_model, save_model
from inverscope.models.nets import build_net
from inverscope.training.shallow import ShallowTrainConfig, fit_shallow, predict_shallow


class RecognizerConfig(StrictModel):
    kind: Literal["pca_mlp", "cnn"] = "pca_mlp"
    n_components: int = Field(16, ge=1)                  # PCA scores fed to the MLP
    hidden: list[int] = Field(default_factory=lambda: [64, 64])
    activation: Literal["tanh", "relu", "gelu"] = "tanh"
    cnn: dict = Field(default_factory=dict)              # LoopCNN1D settings (channels, kernel_size, hidden)
    train: ShallowTrainConfig = Field(default_factory=ShallowTrainConfig)


class ParameterRecognizer:
    """Curves (n, steps) -> parameters (n, targets)."""

    def __init__(self, config: RecognizerConfig | None = None, names: tuple[str, ...] = ()):
        self.config = config or RecognizerConfig()
        self.names = tuple(names)

    def _features(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.steps_:
            raise InverscopeError(f"curves: got shape {x.shape}; this recognizer takes (n, {self.steps_})")
        if self.config.kind == "cnn":
            return x
        return ((x - self.pca_mean_) @ self.pca_components_.T / self.score_scale_).astype(np.float32)

    def fit(self, x, y, seed: int = 0) -> "ParameterRecognizer":
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float64)
        if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
            raise InverscopeError(f"fit: curves {x.shape} and targets {y.shape} must be (n, steps) and (n, targets)")
        cfg = self.config
        self.steps_ = x.shape[1]
        self.target_mean_, self.target_std_ = y.mean(axis=0), np.where(y.std(axis=0) > 0, y.std(axis=0), 1.0)
        if cfg.kind == "pca_mlp":
            pca = PCA(min(cfg.n_components, *x.shape), random_state=seed).fit(x)
            self.pca_mean_, self.pca_components_ = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
            self.score_scale_ = np.sqrt(pca.explained_variance_).astype(np.float32)
            self.explained_variance_ratio_ = pca.explained_variance_ratio_
            arch, net_cfg = "shallow_mlp", {"inputs": len(pca.components_), "outputs": y.shape[1],
                                            "hidden": cfg.hidden, "activation": cfg.activation}
        else:
            arch, net_cfg = "loop_cnn1d", {"steps": self.steps_, "outputs": y.shape[1], **cfg.cnn}
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net_ = build_net(arch, net_cfg)
        self.arch_ = arch
        self.fit_ = fit_shallow(self.net_, self._features(x), (y - self.target_mean_) / self.target_std_,
                                cfg.train.model_copy(update={"task": "regression", "seed": seed}))
        return self

    def predict(self, x) -> np.ndarray:
        return predict_shallow(self.net_, self._features(x)) * self.target_std_ + self.target_mean_

    def score(self, x, y) -> dict[str, float]:
        """R² per target on (x, y)."""
        p, y = self.predict(x), np.asarray(y)
        names = self.names or tuple(f"target{i}" for i in range(y.shape[1]))
        return {n: float(r2_score(y[:, i], p[:, i])) for i, n in enumerate(names)}

    def save(self, path, metadata: dict | None = None):
        meta = {"task": "parameter_recognition", "kind": self.config.kind, "recognizer": self.config.model_dump(mode="json"),
                "names": list(self.names), "steps": self.steps_, "target_mean": self.target_mean_.tolist(),
                "target_std": self.target_std_.tolist(), **(metadata or {})}
        if self.config.kind == "pca_mlp":
            meta.update(pca_mean=self.pca_mean_.tolist(), pca_components=self.pca_components_.tolist(),
                        score_scale=self.score_scale_.tolist())
        return save_model(path, self.net_, self.arch_, meta)

    @classmethod
    def load(cls, path) -> "ParameterRecognizer":
        net, meta = load_model(path)
        if meta.get("task") != "parameter_recognition":
            raise InverscopeError(f"{path}: not a parameter-recognition model (task {meta.get('task')!r})")
        self = cls(RecognizerConfig(**meta["recognizer"]), tuple(meta["names"]))
        self.net_, self.arch_, self.steps_ = net.eval(), meta["architecture"], int(meta["steps"])
        self.target_mean_, self.target_std_ = np.array(meta["target_mean"]), np.array(meta["target_std"])
        if self.config.kind == "pca_mlp":
            self.pca_mean_ = np.array(meta["pca_mean"], np.float32)
            self.pca_components_ = np.array(meta["pca_components"], np.float32)
            self.score_scale_ = np.array(meta["score_scale"], np.float32)
        return self
