"""Recognition imaging: a shallow network learns a few labeled regions and maps the whole scan.

The user labels pixels of known kind (boxes or pixel lists per class on the scan grid); the
spectra of those pixels train a small MLP, which then gives every pixel of the scan a
probability per class (Nikiforov, Jesse, Kalinin et al., Nanotechnology 20, 405708, 2009, on
BE-PFM; the same on EELS). Inside :class:`RecognitionImager`: per-channel standardization
fitted on the labeled pixels, optional PCA, then :class:`~inverscope.models.nets.shallow.ShallowMLP`
trained by :func:`~inverscope.training.shallow.fit_shallow`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pydantic import Field
from sklearn.decomposition import PCA

from inverscope.analysis.unmixing import as_cube
from inverscope.core.config import StrictModel, validate
from inverscope.core.errors import InverscopeError
from inverscope.models.nets import build_net
from inverscope.training.shallow import ShallowTrainConfig, fit_shallow, predict_shallow


class Box(StrictModel):
    """A half-open rectangle of grid pixels: rows r0 <= r < r1, cols c0 <= c < c1."""

    rows: tuple[int, int]
    cols: tuple[int, int]


class LabelSpec(StrictModel):
    """Labeled pixels per class, as written in a recipe.

    ``boxes: {class: {rows: [r0, r1], cols: [c0, c1]}}`` (or a list of such boxes per class) and/or
    ``pixels: {class: [[row, col], ...]}``. Classes are ordered as they first appear (boxes, then
    pixels) unless an explicit order is passed to :func:`labels_to_mask`.
    """

    boxes: dict[str, Box | list[Box]] = Field(default_factory=dict)
    pixels: dict[str, list[tuple[int, int]]] = Field(default_factory=dict)


def _box_pixels(name: str, box: Box, grid: tuple[int, int], field: str) -> np.ndarray:
    (r0, r1), (c0, c1) = box.rows, box.cols
    if r0 >= r1 or c0 >= c1:
        raise InverscopeError(f"{field}: class {name!r} box rows {list(box.rows)} cols {list(box.cols)} names no "
                              "pixel (half-open [r0, r1) needs r0 < r1 and c0 < c1)")
    if r0 < 0 or c0 < 0 or r1 > grid[0] or c1 > grid[1]:
        raise InverscopeError(f"{field}: class {name!r} box rows {list(box.rows)} cols {list(box.cols)} reaches "
                              f"outside the {grid[0]}x{grid[1]} grid (rows 0..{grid[0]}, cols 0..{grid[1]}, half-open)")
    rr, cc = np.mgrid[r0:r1, c0:c1]
    return np.stack([rr.ravel(), cc.ravel()], axis=1)


def _class_pixels(spec: LabelSpec, name: str, grid: tuple[int, int], field: str) -> np.ndarray:
    boxes = spec.boxes.get(name, [])
    parts = [_box_pixels(name, b, grid, field) for b in ([boxes] if isinstance(boxes, Box) else boxes)]
    for r, c in spec.pixels.get(name, []):
        if not (0 <= r < grid[0] and 0 <= c < grid[1]):
            raise InverscopeError(f"{field}: class {name!r} pixel [{r}, {c}] is outside the {grid[0]}x{grid[1]} grid")
        parts.append(np.array([[r, c]]))
    if not parts:
        raise InverscopeError(f"{field}: class {name!r} names no pixel")
    return np.concatenate(parts)


def _class_order(spec: LabelSpec, class_names: Sequence[str] | None, field: str) -> list[str]:
    found = list(dict.fromkeys([*spec.boxes, *spec.pixels]))
    if class_names is None:
        return found
    names = list(class_names)
    extra = [n for n in found if n not in names]
    if extra:
        raise InverscopeError(f"{field}: class {extra[0]!r} is not one of the allowed classes: {', '.join(names)}")
    return names


def _check_classes(names: list[str], field: str) -> None:
    if len(names) < 2:
        raise InverscopeError(f"{field}: need at least 2 classes, got {len(names)}"
                              + (f" ({', '.join(map(repr, names))})" if names else ""))
    if len(set(names)) != len(names):
        raise InverscopeError(f"{field}: class names must be distinct, got {', '.join(map(repr, names))}")


def _mask_from_array(mask, grid: tuple[int, int], class_names, field: str) -> tuple[np.ndarray, list[str]]:
    if class_names is None:
        raise InverscopeError(f"{field}: an integer mask needs its class names")
    names = list(class_names)
    _check_classes(names, field)
    m = np.asarray(mask)
    if m.shape != tuple(grid):
        raise InverscopeError(f"{field}: mask has shape {m.shape} but the grid is {grid[0]}x{grid[1]}")
    if not np.issubdtype(m.dtype, np.integer):
        raise InverscopeError(f"{field}: mask has dtype {m.dtype}; expected integers (-1 = unlabeled)")
    bad = m[(m < -1) | (m >= len(names))]
    if bad.size:
        raise InverscopeError(f"{field}: mask value {int(bad[0])} is not a class; allowed -1 (unlabeled) "
                              f"and 0..{len(names) - 1}")
    for i, name in enumerate(names):
        if not (m == i).any():
            raise InverscopeError(f"{field}: class {name!r} names no pixel")
    return m.astype(np.int64), names


def labels_to_mask(spec, grid_shape: tuple[int, int], class_names: Sequence[str] | None = None,
                   field: str = "labels") -> tuple[np.ndarray, list[str]]:
    """Integer label mask from a recipe's label spec (or check a mask given directly).

    Parameters
    ----------
    spec : LabelSpec, dict or ndarray
        Boxes and/or pixel lists per class (see :class:`LabelSpec`), or an integer (rows, cols)
        mask with -1 for unlabeled pixels.
    grid_shape : (rows, cols)
        Scan grid [pixels].
    class_names : sequence of str, optional
        Class order of the output; required with a mask. With a spec, every class it names
        must be in this list and every listed class must name a pixel.
    field : str
        Name of the recipe field, used in error messages.

    Returns
    -------
    mask : ndarray
        (rows, cols) int64; -1 = unlabeled, else the index into `class_names`.
    class_names : list of str

    Raises
    ------
    InverscopeError
        A class naming no pixel, a pixel or box outside the grid, a pixel claimed by two
        classes, or fewer than 2 classes (one line each).
    """
    grid = (int(grid_shape[0]), int(grid_shape[1]))
    if not isinstance(spec, (LabelSpec, dict)):
        return _mask_from_array(spec, grid, class_names, field)
    if isinstance(spec, dict):
        spec = validate(LabelSpec, spec, field)
    names = _class_order(spec, class_names, field)
    _check_classes(names, field)
    mask = np.full(grid, -1, dtype=np.int64)
    for i, name in enumerate(names):
        px = _class_pixels(spec, name, grid, field)
        owner = mask[px[:, 0], px[:, 1]]
        clash = np.flatnonzero((owner >= 0) & (owner != i))
        if clash.size:
            r, c = px[clash[0]]
            raise InverscopeError(f"{field}: pixel [{r}, {c}] is labeled both {names[owner[clash[0]]]!r} and {name!r}; "
                                  "classes must not overlap")
        mask[px[:, 0], px[:, 1]] = i
    return mask, names


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class RecognitionImager:
    """Shallow-network classifier of spectra, trained on labeled pixels, applied to a whole scan.

    Parameters
    ----------
    hidden : sequence of int
        Widths of the hidden layers of the MLP.
    activation : {'tanh', 'relu', 'gelu'}
    n_components : int, optional
        PCA components of the standardized spectra fed to the network (None: all channels).
    lr, weight_decay, batch_size, max_epochs, patience, validation_fraction
        Training settings (see :class:`~inverscope.training.shallow.ShallowTrainConfig`).
    seed : int
        Seeds the network's initial weights, the PCA and the training minibatches.

    Attributes
    ----------
    mean_, scale_ : ndarray
        (channels,) standardization fitted on the labeled pixels.
    pca_ : PCA or None
    net_ : ShallowMLP
    fit_record_ : ShallowFit
    n_classes_, n_features_in_ : int
    """

    def __init__(self, hidden: Sequence[int] = (32,), activation: str = "tanh", n_components: int | None = None,
                 lr: float = 3e-3, weight_decay: float = 1e-5, batch_size: int = 128, max_epochs: int = 400,
                 patience: int = 40, validation_fraction: float = 0.1, seed: int = 0):
        self.hidden = hidden
        self.activation = activation
        self.n_components = n_components
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.seed = seed

    def get_params(self) -> dict:
        """The constructor arguments (scikit-learn convention)."""
        keys = ("hidden", "activation", "n_components", "lr", "weight_decay", "batch_size", "max_epochs",
                "patience", "validation_fraction", "seed")
        return {k: getattr(self, k) for k in keys}

    def _features(self, flat: np.ndarray) -> np.ndarray:
        z = (flat - self.mean_) / self.scale_
        return z if self.pca_ is None else self.pca_.transform(z)

    def _labeled(self, cube, mask) -> tuple[np.ndarray, np.ndarray]:
        arr = as_cube(cube)
        m = np.asarray(mask)
        if m.shape != arr.shape[:-1] or not np.issubdtype(m.dtype, np.integer):
            raise InverscopeError(f"mask has shape {m.shape} and dtype {m.dtype}; expected integers of shape "
                                  f"{arr.shape[:-1]} (the cube's grid), -1 = unlabeled")
        sel = m >= 0
        classes = np.unique(m[sel])
        if len(classes) < 2 or classes[0] != 0 or classes[-1] != len(classes) - 1:
            raise InverscopeError(f"mask: labeled classes are {classes.tolist()}; need 0..n-1 with n >= 2, "
                                  "each naming at least one pixel")
        return arr[sel], m[sel]

    def _fit_pca(self, z: np.ndarray) -> None:
        self.pca_ = None
        if self.n_components is None:
            return
        limit = min(z.shape)
        if not 1 <= int(self.n_components) <= limit:
            raise InverscopeError(f"n_components: got {self.n_components}; allowed 1..{limit} "
                                  f"(min of {z.shape[0]} labeled pixels and {z.shape[1]} channels)")
        self.pca_ = PCA(n_components=int(self.n_components), random_state=self.seed).fit(z)

    def fit(self, cube, mask) -> RecognitionImager:
        """Train on the labeled pixels of `cube`.

        Parameters
        ----------
        cube : array_like
            (..., channels) spectra [data units].
        mask : array_like
            Integer labels of shape ``cube.shape[:-1]``: -1 unlabeled, classes 0..n-1.

        Returns
        -------
        self
        """
        x, y = self._labeled(cube, mask)
        self.n_features_in_ = x.shape[1]
        self.n_classes_ = int(y.max()) + 1
        self.mean_ = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        self._fit_pca((x - self.mean_) / self.scale_)
        feats = self._features(x)
        with torch.random.fork_rng():
            torch.manual_seed(int(self.seed))
            net = build_net("shallow_mlp", {"inputs": feats.shape[1], "outputs": self.n_classes_,
                                            "hidden": list(self.hidden), "activation": self.activation})
        cfg = ShallowTrainConfig(task="classification", lr=self.lr, weight_decay=self.weight_decay,
                                 batch_size=self.batch_size, max_epochs=self.max_epochs, patience=self.patience,
                                 validation_fraction=self.validation_fraction, seed=int(self.seed))
        self.fit_record_ = fit_shallow(net, feats, y, cfg)
        self.net_ = net
        return self

    def predict_proba(self, cube) -> np.ndarray:
        """Class probabilities of every pixel: (..., n_classes), rows sum to 1."""
        if not hasattr(self, "net_"):
            raise InverscopeError("RecognitionImager is not fitted; call fit(cube, mask) first")
        arr = as_cube(cube)
        if arr.shape[-1] != self.n_features_in_:
            raise InverscopeError(f"cube has {arr.shape[-1]} channels but the imager was fitted on "
                                  f"{self.n_features_in_}")
        flat = arr.reshape(-1, arr.shape[-1])
        logits = predict_shallow(self.net_, self._features(flat).astype(np.float32))
        return _softmax(np.asarray(logits, np.float64)).reshape(*arr.shape[:-1], self.n_classes_)

    def predict(self, cube) -> np.ndarray:
        """Most probable class of every pixel: int64 array of shape ``cube.shape[:-1]``."""
        return np.argmax(self.predict_proba(cube), axis=-1).astype(np.int64)
