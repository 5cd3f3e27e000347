"""Defect detection from per-scan-position anomaly scores.

A classifier applied to every position of a scan (a 4D-STEM data set, a map of spectra) gives
per position class probabilities, an embedding and the raw pattern. Defects (domain walls,
vacancy columns, a region of another phase, an amorphous layer, a thickness step) show up as
positions that are *unusual* in one of these. Each score below is a ``(rows, cols)`` map,
higher = more anomalous:

* :func:`neighbourhood_disagreement`: fraction of the neighbours in a ``size x size`` window
  whose class differs from the centre's (labels), or the mean circular difference to them
  (angles with a period, e.g. a polarization direction in deg). Peaks on walls between domains.
* :func:`softmax_uncertainty`: ``1 - max_c p_c`` (or the normalized entropy). High where the
  classifier is unsure: mixtures, walls, unseen structures.
* :func:`prototype_distance`: ``1 - max_c cos(e, prototype_c)`` for an embedding ``e``. High for
  embeddings far from every class centre (:func:`class_prototypes`).
* :func:`pca_reconstruction_error`: residual of a PCA fitted on reference (training) patterns,
  relative to the pattern's norm. High for patterns the references do not span.
* :func:`knn_distance`: mean distance to the ``k`` nearest reference features, after
  standardizing each feature by the references' mean and standard deviation.

Evaluation against truth masks: :func:`auroc` (with the ROC curve), :func:`wall_position_error`
(where a line-like defect's score ridge lies relative to the true wall [Å]) and
:func:`score_all`, which computes every score the given inputs allow and the AUROC of each per
defect type (:class:`AnomalyReport`).

Inputs per position are accepted on the grid, ``(rows, cols, ...)``, or flat,
``(n_positions, ...)`` in row-major scan order together with ``scan_shape=(rows, cols)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from inverscope.core.errors import InverscopeError

#: Positions per block in the chunked PCA and k-NN scores (bounds memory to a block of patterns).
CHUNK = 1024


class AnomalyError(InverscopeError):
    """Inputs to an anomaly score or its evaluation are inconsistent."""


# ---------------------------------------------------------------- input checks


def _scan_shape(scan_shape) -> tuple[int, int] | None:
    if scan_shape is None:
        return None
    try:
        rows, cols = (int(v) for v in scan_shape)
    except (TypeError, ValueError):
        raise AnomalyError(f"scan_shape: got {scan_shape!r}; must be (rows, cols)") from None
    if rows < 1 or cols < 1:
        raise AnomalyError(f"scan_shape: got {scan_shape!r}; rows and cols must be positive")
    return rows, cols


def _per_position(arr, name: str, trailing: tuple[int, ...] | int, scan_shape):
    """`arr` as ``(n_positions, *trailing)`` and the scan shape.

    `trailing` is the shape of one position's entry, or its number of dimensions when any shape
    goes. ``(rows, cols, *trailing)`` is taken as a grid, ``(n, *trailing)`` needs `scan_shape`.
    The values are not copied (a memory map stays one).
    """
    a = np.asanyarray(arr)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise AnomalyError(f"{name}: dtype {a.dtype}; must be numeric")
    shape = _scan_shape(scan_shape)
    nt = trailing if isinstance(trailing, int) else len(trailing)
    if isinstance(trailing, tuple) and tuple(a.shape[a.ndim - nt:]) != trailing:
        raise AnomalyError(f"{name}: shape {a.shape}; each position's entry must have shape {trailing} "
                           f"(as the reference's)")
    if a.ndim == nt + 2:
        grid = tuple(a.shape[:2])
        if shape is not None and grid != shape:
            raise AnomalyError(f"{name}: scan grid {grid} does not match scan_shape {shape}")
        flat = a.reshape((grid[0] * grid[1],) + a.shape[2:])
    elif a.ndim == nt + 1:
        if shape is None:
            raise AnomalyError(f"{name}: flat shape {a.shape} (n_positions first) needs scan_shape=(rows, cols)")
        if a.shape[0] != shape[0] * shape[1]:
            raise AnomalyError(f"{name}: {a.shape[0]} positions; scan_shape {shape} has {shape[0] * shape[1]}")
        grid, flat = shape, a
    else:
        raise AnomalyError(f"{name}: shape {a.shape}; must be (rows, cols, ...) or (n_positions, ...) with "
                           f"{nt} dimension(s) per position")
    if 0 in flat.shape:
        raise AnomalyError(f"{name}: shape {a.shape} is empty")
    return flat, grid


def _finite(a: np.ndarray, name: str) -> np.ndarray:
    if not np.all(np.isfinite(a)):
        raise AnomalyError(f"{name}: contains NaN or infinite values")
    return a


def _map(arr, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2 or 0 in a.shape:
        raise AnomalyError(f"{name}: shape {a.shape}; must be a non-empty (rows, cols) map")
    return a


def _mask(arr, name: str, shape: tuple[int, int]) -> np.ndarray:
    a = _map(arr, name)
    if a.shape != shape:
        raise AnomalyError(f"{name}: shape {a.shape} does not match the score map's {shape}")
    if a.dtype != bool:
        if not np.issubdtype(a.dtype, np.number) or not np.all(np.isin(a, (0, 1))):
            raise AnomalyError(f"{name}: must be a boolean mask (or 0/1)")
        a = a.astype(bool)
    return a


# ---------------------------------------------------------------- scores


def neighbourhood_disagreement(labels_or_angles, *, size: int = 3, circular_period: float | None = None,
                               scan_shape=None) -> np.ndarray:
    """Disagreement of each position with its neighbours.

    Parameters
    ----------
    labels_or_angles : array_like
        ``(rows, cols)`` (or ``(n_positions,)`` with `scan_shape`): class labels (compared for
        equality), or angles when `circular_period` is given [any unit, e.g. deg].
    size : int
        Odd window side [positions]; the ``size**2 - 1`` positions around the centre are its
        neighbours. At the scan's border only the neighbours inside the scan count.
    circular_period : float, optional
        Period of the angles (360 for a direction in deg, 180 for an axis). Without it the
        values are labels.

    Returns
    -------
    np.ndarray
        float64 ``(rows, cols)``. Labels: the fraction of neighbours with another label, in
        ``[0, 1]``. Angles: the mean over neighbours of the circular difference
        ``|((a - b + P/2) mod P) - P/2|``, in ``[0, P/2]`` [unit of the angles]; 350 and 10 deg
        with ``P = 360`` are 20 deg apart.
    """
    flat, (rows, cols) = _per_position(labels_or_angles, "labels_or_angles", 0, scan_shape)
    v = _finite(np.asarray(flat, dtype=np.float64), "labels_or_angles").reshape(rows, cols)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 3 or size % 2 == 0:
        raise AnomalyError(f"size: got {size!r}; must be an odd integer >= 3")
    if circular_period is not None and not (np.isfinite(circular_period) and circular_period > 0):
        raise AnomalyError(f"circular_period: got {circular_period!r}; must be a positive number")
    h = size // 2
    pad = np.pad(v, h, mode="constant")
    inside = np.pad(np.ones((rows, cols), bool), h, mode="constant")
    total = np.zeros((rows, cols))
    count = np.zeros((rows, cols))
    for dr in range(-h, h + 1):
        for dc in range(-h, h + 1):
            if dr == 0 and dc == 0:
                continue
            nb = pad[h + dr:h + dr + rows, h + dc:h + dc + cols]
            ok = inside[h + dr:h + dr + rows, h + dc:h + dc + cols]
            if circular_period is None:
                d = (nb != v).astype(np.float64)
            else:
                p = float(circular_period)
                d = np.abs(np.mod(nb - v + p / 2, p) - p / 2)
            total += np.where(ok, d, 0.0)
            count += ok
    return total / np.maximum(count, 1)     # a 1 x 1 scan has no neighbours: 0


def softmax_uncertainty(proba, *, kind: str = "max", scan_shape=None, tolerance: float = 1e-3) -> np.ndarray:
    """Classifier uncertainty per position.

    Parameters
    ----------
    proba : array_like
        Class probabilities ``(rows, cols, n_classes)`` or ``(n_positions, n_classes)`` with
        `scan_shape`; non-negative, each position summing to 1 within `tolerance` (logits are
        refused: apply a softmax first).
    kind : {"max", "entropy"}
        ``"max"``: ``1 - max_c p_c``, in ``[0, 1 - 1/n_classes]``. ``"entropy"``: Shannon
        entropy over ``log(n_classes)``, in ``[0, 1]``. Both are maximal for a uniform row.

    Returns
    -------
    np.ndarray
        float64 ``(rows, cols)`` [dimensionless].
    """
    if kind not in ("max", "entropy"):
        raise AnomalyError(f"kind: got {kind!r}; must be 'max' or 'entropy'")
    flat, grid = _per_position(proba, "proba", 1, scan_shape)
    p = _finite(np.asarray(flat, dtype=np.float64), "proba")
    if p.shape[1] < 2:
        raise AnomalyError(f"proba: {p.shape[1]} class(es); needs at least 2")
    if p.min() < 0 or np.max(np.abs(p.sum(axis=1) - 1)) > tolerance:
        raise AnomalyError(f"proba: must be non-negative and sum to 1 per position (within {tolerance:g}); "
                           f"got sums in [{p.sum(axis=1).min():.4g}, {p.sum(axis=1).max():.4g}], min {p.min():.4g}")
    if kind == "max":
        u = 1.0 - p.max(axis=1)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            u = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1) / np.log(p.shape[1])
    return np.clip(u, 0.0, None).reshape(grid)


def class_prototypes(embeddings, labels, n_classes: int | None = None) -> np.ndarray:
    """Class prototypes: the mean of each class's unit-normalized embeddings, ``(n_classes, d)``.

    Parameters
    ----------
    embeddings : array_like
        ``(n, d)`` reference (training) embeddings; none may be zero.
    labels : array_like
        ``(n,)`` integer classes in ``[0, n_classes)``; every class must occur.
    """
    e = _finite(np.asarray(embeddings, dtype=np.float64), "embeddings")
    y = np.asarray(labels)
    if e.ndim != 2 or y.shape != (e.shape[0],) or e.shape[0] == 0:
        raise AnomalyError(f"embeddings/labels: shapes {e.shape} and {y.shape}; must be (n, d) and (n,)")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise AnomalyError("labels: must be non-negative integers")
    n_classes = int(y.max()) + 1 if n_classes is None else int(n_classes)
    counts = np.bincount(y, minlength=n_classes)
    if counts.size > n_classes or np.any(counts == 0):
        raise AnomalyError(f"labels: each class in [0, {n_classes}) must occur; counts {counts.tolist()}")
    u = e / _norms(e, "embeddings")[:, None]
    return np.stack([u[y == c].mean(axis=0) for c in range(n_classes)])


def _norms(a: np.ndarray, name: str) -> np.ndarray:
    n = np.linalg.norm(a, axis=1)
    if np.any(n == 0):
        raise AnomalyError(f"{name}: {int(np.sum(n == 0))} zero vector(s); the cosine is undefined")
    return n


def prototype_distance(embeddings, prototypes, *, scan_shape=None) -> np.ndarray:
    """Cosine distance to the nearest class prototype.

    Parameters
    ----------
    embeddings : array_like
        ``(rows, cols, d)`` or ``(n_positions, d)`` with `scan_shape`; no zero vector.
    prototypes : array_like
        ``(n_classes, d)`` class centres (e.g. :func:`class_prototypes` of the training set).

    Returns
    -------
    np.ndarray
        float64 ``(rows, cols)``: ``1 - max_c cos(e, prototype_c)``, in ``[0, 2]``; 0 for an
        embedding parallel to a prototype [dimensionless].
    """
    proto = _finite(np.asarray(prototypes, dtype=np.float64), "prototypes")
    if proto.ndim != 2 or 0 in proto.shape:
        raise AnomalyError(f"prototypes: shape {proto.shape}; must be (n_classes, d)")
    flat, grid = _per_position(embeddings, "embeddings", (proto.shape[1],), scan_shape)
    e = _finite(np.asarray(flat, dtype=np.float64), "embeddings")
    cos = (e / _norms(e, "embeddings")[:, None]) @ (proto / _norms(proto, "prototypes")[:, None]).T
    return np.clip(1.0 - cos.max(axis=1), 0.0, 2.0).reshape(grid)


def _reference(train, name: str) -> np.ndarray:
    t = np.asarray(train, dtype=np.float64)
    if t.ndim < 2 or 0 in t.shape:
        raise AnomalyError(f"{name}: shape {t.shape}; must be (n_reference, ...) with at least one value each")
    return _finite(t.reshape(t.shape[0], -1), name), tuple(np.shape(train)[1:])


def _chunks(flat, name: str, chunk: int):
    """Blocks of `flat` as float64 ``(m, features)``, each checked for NaN."""
    chunk = max(int(chunk), 1)
    for start in range(0, flat.shape[0], chunk):
        block = np.asarray(flat[start:start + chunk], dtype=np.float64).reshape(-1, int(np.prod(flat.shape[1:])))
        yield start, _finite(block, name)


def pca_reconstruction_error(patterns_train, patterns, *, n_components: int | float = 10, scan_shape=None,
                             chunk: int = CHUNK) -> np.ndarray:
    """Relative residual of each pattern after projection on a PCA of reference patterns.

    A PCA (centred on the references' mean) with `n_components` components is fitted on
    `patterns_train`; each pattern ``x`` is reconstructed as ``mean + W^T W (x - mean)`` and its
    score is ``||x - x_hat|| / ||x||`` (Frobenius norms over all pixels). Patterns are processed
    `chunk` positions at a time, so memory is bounded by a block (the references are held).

    Parameters
    ----------
    patterns_train : array_like
        ``(n_reference, ...)`` reference patterns, e.g. ``(n, ky, kx)`` images or ``(n, channels)``
        spectra, all of one class set the classifier knows.
    patterns : array_like
        ``(rows, cols, ...)`` or ``(n_positions, ...)`` with `scan_shape`; each entry shaped like
        a reference (a memory map is read block by block).
    n_components : int or float
        Number of components (``1 <= n <= min(n_reference, n_pixels)``), or a fraction in
        ``(0, 1)`` of the references' variance to keep.

    Returns
    -------
    np.ndarray
        float64 ``(rows, cols)`` [dimensionless]. A zero pattern is divided by a tiny fraction
        (``1e-12``) of the references' root-mean-square norm instead of 0.
    """
    from sklearn.decomposition import PCA

    ref, entry = _reference(patterns_train, "patterns_train")
    flat, grid = _per_position(patterns, "patterns", entry, scan_shape)
    n_max = min(ref.shape)
    if isinstance(n_components, bool) or not (
            (isinstance(n_components, (int, np.integer)) and 1 <= n_components <= n_max)
            or (isinstance(n_components, float) and 0 < n_components < 1)):
        raise AnomalyError(f"n_components: got {n_components!r}; must be an integer in [1, {n_max}] "
                           f"(references x pixels) or a variance fraction in (0, 1)")
    if ref.shape[0] < 2:
        raise AnomalyError(f"patterns_train: {ref.shape[0]} reference pattern(s); needs at least 2")
    pca = PCA(n_components=n_components, svd_solver="full").fit(ref)
    mean, w = pca.mean_, pca.components_
    floor = 1e-12 * float(np.sqrt(np.mean(np.sum(ref ** 2, axis=1)))) or 1e-300
    out = np.empty(flat.shape[0])
    for start, x in _chunks(flat, "patterns", chunk):
        xc = x - mean
        resid = xc - (xc @ w.T) @ w
        out[start:start + x.shape[0]] = np.linalg.norm(resid, axis=1) / np.maximum(np.linalg.norm(x, axis=1), floor)
    return out.reshape(grid)


def knn_distance(features_train, features, k: int = 5, *, standardize: bool = True, scan_shape=None,
                 chunk: int = CHUNK) -> np.ndarray:
    """Mean distance to the `k` nearest reference features (:class:`sklearn.neighbors.NearestNeighbors`).

    Each feature (flattened entry) is standardized by the references' mean and standard
    deviation first (a constant reference feature is only centred), so the distance is in
    units of the references' spread per feature; ``standardize=False`` keeps raw units. A
    position that is itself among the references finds itself at distance 0 (pass references
    disjoint from the scan for an unbiased score).

    Parameters
    ----------
    features_train : array_like
        ``(n_reference, ...)`` reference features: embeddings ``(n, d)`` or patterns ``(n, ky, kx)``.
    features : array_like
        ``(rows, cols, ...)`` or ``(n_positions, ...)`` with `scan_shape`, entries shaped like a reference.
    k : int
        Neighbours averaged, ``1 <= k <= n_reference``.

    Returns
    -------
    np.ndarray
        float64 ``(rows, cols)`` mean Euclidean distance [standardized units, or feature units].
    """
    from sklearn.neighbors import NearestNeighbors

    ref, entry = _reference(features_train, "features_train")
    flat, grid = _per_position(features, "features", entry, scan_shape)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= ref.shape[0]:
        raise AnomalyError(f"k: got {k!r}; must be an integer in [1, {ref.shape[0]}] (the number of references)")
    mu = ref.mean(axis=0) if standardize else np.zeros(ref.shape[1])
    sd = ref.std(axis=0) if standardize else np.ones(ref.shape[1])
    sd[sd == 0] = 1.0
    nn = NearestNeighbors(n_neighbors=int(k)).fit((ref - mu) / sd)
    out = np.empty(flat.shape[0])
    for start, x in _chunks(flat, "features", chunk):
        dist, _ = nn.kneighbors((x - mu) / sd)
        out[start:start + x.shape[0]] = dist.mean(axis=1)
    return out.reshape(grid)


# ---------------------------------------------------------------- evaluation


@dataclass
class Roc:
    """Area under the ROC curve of a score map against a truth mask, and the curve.

    Attributes
    ----------
    auroc : float
        Probability that a random defect position scores above a random clean one (ties: half).
    fpr, tpr, thresholds : np.ndarray
        ROC curve points (:func:`sklearn.metrics.roc_curve`, collinear points dropped): a
        position is called a defect when its score is ``>= threshold``.
    n_positive, n_negative : int
        Positions counted as defect / clean (after `ignore`).
    """

    auroc: float
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    n_positive: int
    n_negative: int

    def as_dict(self) -> dict:
        """JSON-ready (the first threshold, ``inf``, is written as None)."""
        return {"auroc": self.auroc, "n_positive": self.n_positive, "n_negative": self.n_negative,
                "fpr": self.fpr.tolist(), "tpr": self.tpr.tolist(),
                "thresholds": [float(t) if np.isfinite(t) else None for t in self.thresholds]}


def auroc(score_map, truth_mask, *, ignore=None) -> Roc:
    """AUROC of `score_map` (higher = defect) for the defect positions `truth_mask`.

    Parameters
    ----------
    score_map : array_like
        ``(rows, cols)`` finite scores.
    truth_mask : array_like
        ``(rows, cols)`` bool, True at defect positions.
    ignore : array_like, optional
        ``(rows, cols)`` bool, positions left out (scan border, other defect types).

    Returns
    -------
    Roc
        The area and the curve. Raises a one-line :class:`AnomalyError` when, after `ignore`,
        the truth is all one class.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    s = _finite(np.asarray(_map(score_map, "score_map"), dtype=np.float64), "score_map")
    t = _mask(truth_mask, "truth_mask", s.shape)
    keep = ~_mask(ignore, "ignore", s.shape) if ignore is not None else np.ones(s.shape, bool)
    y, v = t[keep], s[keep]
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise AnomalyError(f"truth_mask: {n_pos} defect and {y.size - n_pos} clean position(s) "
                           f"(after ignore); AUROC needs both")
    fpr, tpr, thr = roc_curve(y, v)
    return Roc(float(roc_auc_score(y, v)), fpr, tpr, thr, n_pos, int(y.size - n_pos))


@dataclass
class WallPositionError:
    """Distance between a score map's ridge and a line-like defect, one measurement per scan line.

    Attributes
    ----------
    median_angstrom, max_angstrom, mean_angstrom : float
        Of the absolute position errors [Å].
    bias_angstrom : float
        Median signed error, ridge minus truth, along the measuring axis (+ = larger index) [Å].
    n_lines : int
        Measurements (scan lines times walls crossing them).
    line, true_px, ridge_px, error_angstrom : np.ndarray
        Per measurement: scan line index, true wall and ridge positions along the line [px],
        absolute error [Å].
    orientation : str
        ``"vertical"`` (measured along each scan row) or ``"horizontal"`` (along each column).
    """

    median_angstrom: float
    max_angstrom: float
    mean_angstrom: float
    bias_angstrom: float
    n_lines: int
    line: np.ndarray
    true_px: np.ndarray
    ridge_px: np.ndarray
    error_angstrom: np.ndarray
    orientation: str

    def as_dict(self) -> dict:
        return {"median_angstrom": self.median_angstrom, "max_angstrom": self.max_angstrom,
                "mean_angstrom": self.mean_angstrom, "bias_angstrom": self.bias_angstrom,
                "n_lines": self.n_lines, "orientation": self.orientation}


def _runs(row: np.ndarray) -> list[np.ndarray]:
    idx = np.flatnonzero(row)
    return np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if idx.size else []


def wall_position_error(score_map, truth_wall_mask, pixel_size_angstrom: float, *, orientation: str = "auto",
                        search_radius_px: float | None = None) -> WallPositionError:
    """How far the ridge of a score map lies from a line-like defect (a domain wall) [Å].

    For a near-vertical wall, on every scan row the wall mask crosses: the true position is
    the centre (mean column) of each contiguous run of wall pixels in that row (a wall two
    pixels wide between columns 15 and 16 lies at 15.5); the ridge position is the centre of
    the columns where the score reaches its maximum within the run's search window (a flat top
    two columns wide counts as its middle). The window is the part of the row nearer to this
    run than to any other run on the row (several walls), cut to ``+-search_radius_px`` when
    given. The error is ``|ridge - true| * pixel_size_angstrom``. Near-horizontal walls are
    measured the same way along each column.

    Parameters
    ----------
    score_map : array_like
        ``(rows, cols)`` finite scores.
    truth_wall_mask : array_like
        ``(rows, cols)`` bool, True on the wall.
    pixel_size_angstrom : float
        Scan step [Å/position].
    orientation : {"auto", "vertical", "horizontal"}
        ``"auto"``: vertical when the mask covers at least as many rows as columns.
    search_radius_px : float, optional
        Largest distance from the true wall a ridge is looked for [positions].

    Returns
    -------
    WallPositionError
    """
    s = _finite(np.asarray(_map(score_map, "score_map"), dtype=np.float64), "score_map")
    m = _mask(truth_wall_mask, "truth_wall_mask", s.shape)
    if not (np.isfinite(pixel_size_angstrom) and pixel_size_angstrom > 0):
        raise AnomalyError(f"pixel_size_angstrom: got {pixel_size_angstrom!r}; must be a positive number")
    if orientation not in ("auto", "vertical", "horizontal"):
        raise AnomalyError(f"orientation: got {orientation!r}; must be 'auto', 'vertical' or 'horizontal'")
    if search_radius_px is not None and not search_radius_px >= 0:
        raise AnomalyError(f"search_radius_px: got {search_radius_px!r}; must be >= 0")
    if not m.any():
        raise AnomalyError("truth_wall_mask: no wall position (all False)")
    if orientation == "auto":
        orientation = "vertical" if m.any(axis=1).sum() >= m.any(axis=0).sum() else "horizontal"
    if orientation == "horizontal":
        s, m = s.T, m.T
    cols = np.arange(s.shape[1], dtype=np.float64)
    lines, true_px, ridge_px = [], [], []
    for r in range(s.shape[0]):
        centres = [float(run.mean()) for run in _runs(m[r])]
        for i, c in enumerate(centres):
            lo = (centres[i - 1] + c) / 2 if i > 0 else -np.inf
            hi = (centres[i + 1] + c) / 2 if i + 1 < len(centres) else np.inf
            win = (cols > lo) & (cols <= hi)
            if search_radius_px is not None:
                win &= np.abs(cols - c) <= search_radius_px
            v = np.where(win, s[r], -np.inf)
            top = np.flatnonzero(win & (v >= v.max() - 1e-12 * max(abs(v.max()), 1.0)))
            lines.append(r)
            true_px.append(c)
            ridge_px.append(float(top.mean()))
    true_px, ridge_px = np.array(true_px), np.array(ridge_px)
    signed = (ridge_px - true_px) * float(pixel_size_angstrom)
    err = np.abs(signed)
    return WallPositionError(float(np.median(err)), float(err.max()), float(err.mean()), float(np.median(signed)),
                             int(err.size), np.array(lines), true_px, ridge_px, err, orientation)


# ---------------------------------------------------------------- all at once


@dataclass
class AnomalyReport:
    """Every score the inputs allowed, and how well each finds each defect type.

    Attributes
    ----------
    maps : dict
        score name -> float64 ``(rows, cols)`` map (see :func:`score_all` for the names).
    auroc : dict
        score name -> {defect name -> AUROC}; ``"all"`` is the union of the defects. NaN where a
        defect has no position left (after `ignore`).
    roc : dict
        score name -> {defect name -> :class:`Roc`}, the curves behind :attr:`auroc`.
    wall_errors : dict
        score name -> {line-like defect name -> :class:`WallPositionError`}.
    skipped : dict
        score name -> why it was not computed (inputs missing).
    negatives : str
        What the clean positions of one defect type's AUROC are (see :func:`score_all`).
    """

    maps: dict
    auroc: dict = field(default_factory=dict)
    roc: dict = field(default_factory=dict)
    wall_errors: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    negatives: str = "clean"

    def as_dict(self, curves: bool = False) -> dict:
        """JSON-ready summary (no maps); ``curves=True`` adds the ROC points."""
        out = {"scores": sorted(self.maps), "negatives": self.negatives,
               "auroc": {s: dict(v) for s, v in self.auroc.items()},
               "wall_errors": {s: {d: w.as_dict() for d, w in v.items()} for s, v in self.wall_errors.items()},
               "skipped": dict(self.skipped)}
        if curves:
            out["roc"] = {s: {d: r.as_dict() for d, r in v.items()} for s, v in self.roc.items()}
        return out

    def table(self) -> str:
        """AUROC per score (rows) and defect (columns) as aligned text."""
        defects = list(next(iter(self.auroc.values()))) if self.auroc else []
        width = max([len(s) for s in self.maps] + [5])
        lines = [" ".join([f"{'score':<{width}}"] + [f"{d:>12}" for d in defects])]
        for s in self.maps:
            lines.append(" ".join([f"{s:<{width}}"] + [f"{self.auroc.get(s, {}).get(d, float('nan')):>12.3f}"
                                                        for d in defects]))
        return "\n".join(lines)


def score_all(*, scan_shape=None, proba=None, labels=None, angles=None, circular_period: float | None = None,
              embeddings=None, prototypes=None, patterns=None, patterns_train=None, features=None,
              features_train=None, truth: dict | None = None, ignore=None, negatives: str = "clean",
              size: int = 3, n_components: int | float = 10, k: int = 5, line_defects=(),
              pixel_size_angstrom: float | None = None, wall_search_radius_px: float | None = None
              ) -> AnomalyReport:
    """Compute every anomaly score the inputs allow and evaluate it against truth masks.

    Scores (name: inputs needed):

    * ``disagreement``: `labels`, or `proba` (its arg-max) -- :func:`neighbourhood_disagreement`;
    * ``angle_disagreement``: `angles` and `circular_period`;
    * ``softmax_max`` and ``softmax_entropy``: `proba` -- :func:`softmax_uncertainty`;
    * ``prototype_distance``: `embeddings` and `prototypes`;
    * ``pca_error``: `patterns` and `patterns_train` -- :func:`pca_reconstruction_error`;
    * ``knn_distance``: `features` and `features_train` -- :func:`knn_distance`.

    Parameters
    ----------
    truth : dict, optional
        defect name -> ``(rows, cols)`` bool mask. The AUROC of a defect type counts its own
        positions as positives and, with ``negatives="clean"``, only positions in no mask as
        negatives (other defect types are left out); with ``negatives="rest"`` every other
        position. ``"all"`` (a reserved name) is the union of the masks against the rest.
    ignore : array_like, optional
        ``(rows, cols)`` bool positions left out of every AUROC.
    line_defects : iterable of str
        Names in `truth` of line-like defects (domain walls) whose :func:`wall_position_error`
        is computed for every score; needs `pixel_size_angstrom` [Å]. The ridge is looked for
        within `wall_search_radius_px` of the wall (default: the whole scan line, where another
        defect on the same line can win).
    size, n_components, k
        Passed to the scores.

    Returns
    -------
    AnomalyReport
    """
    if negatives not in ("clean", "rest"):
        raise AnomalyError(f"negatives: got {negatives!r}; must be 'clean' or 'rest'")
    line_defects = list(line_defects)
    truth = dict(truth or {})
    if "all" in truth:
        raise AnomalyError("truth: 'all' is reserved for the union of the defect masks; rename that entry")
    missing = [d for d in line_defects if d not in truth]
    if missing:
        raise AnomalyError(f"line_defects: {missing} not among the truth masks {sorted(truth)}")
    if line_defects and pixel_size_angstrom is None:
        raise AnomalyError("pixel_size_angstrom: needed for the wall position error of line_defects")

    maps, skipped = {}, {}
    if labels is None and proba is not None:
        flat, grid = _per_position(proba, "proba", 1, scan_shape)
        labels = np.argmax(_finite(np.asarray(flat, dtype=np.float64), "proba"), axis=1).reshape(grid)
    if labels is not None:
        maps["disagreement"] = neighbourhood_disagreement(labels, size=size, scan_shape=scan_shape)
    else:
        skipped["disagreement"] = "needs labels or proba"
    if angles is not None and circular_period is not None:
        maps["angle_disagreement"] = neighbourhood_disagreement(angles, size=size, circular_period=circular_period,
                                                                scan_shape=scan_shape)
    else:
        skipped["angle_disagreement"] = "needs angles and circular_period"
    if proba is not None:
        maps["softmax_max"] = softmax_uncertainty(proba, kind="max", scan_shape=scan_shape)
        maps["softmax_entropy"] = softmax_uncertainty(proba, kind="entropy", scan_shape=scan_shape)
    else:
        skipped["softmax_max"] = skipped["softmax_entropy"] = "needs proba"
    if embeddings is not None and prototypes is not None:
        maps["prototype_distance"] = prototype_distance(embeddings, prototypes, scan_shape=scan_shape)
    else:
        skipped["prototype_distance"] = "needs embeddings and prototypes"
    if patterns is not None and patterns_train is not None:
        maps["pca_error"] = pca_reconstruction_error(patterns_train, patterns, n_components=n_components,
                                                     scan_shape=scan_shape)
    else:
        skipped["pca_error"] = "needs patterns and patterns_train"
    if features is not None and features_train is not None:
        maps["knn_distance"] = knn_distance(features_train, features, k=k, scan_shape=scan_shape)
    else:
        skipped["knn_distance"] = "needs features and features_train"

    shapes = {name: m.shape for name, m in maps.items()}
    if len(set(shapes.values())) > 1:
        raise AnomalyError(f"scan grids differ between inputs: {shapes}")
    report = AnomalyReport(maps, skipped=skipped, negatives=negatives)
    if not maps or not truth:
        return report
    shape = next(iter(shapes.values()))
    masks = {d: _mask(m, f"truth[{d!r}]", shape) for d, m in truth.items()}
    ign = _mask(ignore, "ignore", shape) if ignore is not None else np.zeros(shape, bool)
    union = np.logical_or.reduce(list(masks.values()))
    cases = {d: (m, ign | (union & ~m) if negatives == "clean" else ign) for d, m in masks.items()}
    cases["all"] = (union, ign)
    for name, score in maps.items():
        report.auroc[name], report.roc[name] = {}, {}
        for d, (pos, left_out) in cases.items():
            n_pos = int((pos & ~left_out).sum())
            if n_pos == 0 or n_pos == int((~left_out).sum()):
                report.auroc[name][d] = float("nan")
                continue
            roc = auroc(score, pos, ignore=left_out)
            report.auroc[name][d], report.roc[name][d] = roc.auroc, roc
        if line_defects:
            report.wall_errors[name] = {d: wall_position_error(score, masks[d], pixel_size_angstrom,
                                                               search_radius_px=wall_search_radius_px)
                                        for d in line_defects if masks[d].any()}
    return report
