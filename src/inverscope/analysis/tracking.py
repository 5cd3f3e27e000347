"""Atom tracking through STEM movies: drift, linking, diffusion, class transitions, scoring.

Tables are pandas DataFrames with one row per atom per frame: ``frame`` (int), positions ``x``
(column) and ``y`` (row) in pixels (``x_px``/``y_px`` from
:func:`inverscope.analysis.atom_finding.locate_atoms` are accepted too), optionally ``class``,
and after linking ``particle`` (int track id).

Functions
---------
:func:`drift_correct`
    Frame-to-frame rigid drift by (Hann-windowed) cross-correlation
    (``skimage.registration.phase_cross_correlation``, sub-pixel by upsampled DFT), accumulated,
    and the frames shifted back onto frame 0.
:func:`correct_positions`
    Subtract that drift from atom tables (locate on the raw frames, then correct the positions).
:func:`link_atoms`
    trackpy's nearest-neighbour linking with gap closing (``memory``).
:func:`msd_per_class`, :func:`diffusion_constant`
    Mean squared displacement by lag and class; ``D`` from ``MSD = 4 D t (+ c)`` in 2D.
:func:`transition_matrix`
    Row-normalised class-change counts between consecutive frames of the same track.
:func:`mota`
    CLEAR-MOT multiple object tracking accuracy (Bernardin & Stiefelhagen 2008).
:func:`simulate_movie`
    Ground-truth positions of a movie (random walks, class switching, vacancies appearing,
    drift) for tests and studies; positions only, rendering is left to the caller.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from inverscope.analysis.atom_finding import _assign
from inverscope.core.errors import InverscopeError


# --------------------------------------------------------------------------- helpers

def _pos_columns(df: pd.DataFrame, name: str) -> tuple[str, str]:
    for xc, yc in (("x", "y"), ("x_px", "y_px")):
        if xc in df.columns and yc in df.columns:
            return xc, yc
    raise InverscopeError(f"{name}: has columns {list(df.columns)}; needs positions 'x', 'y' (or 'x_px', 'y_px')")


def _check_table(df, name: str, need: Sequence[str] = ("frame",)) -> tuple[pd.DataFrame, str, str]:
    if not isinstance(df, pd.DataFrame):
        raise InverscopeError(f"{name}: got {type(df).__name__}; expected a pandas DataFrame")
    xc, yc = _pos_columns(df, name)
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InverscopeError(f"{name}: lacks column(s) {missing}; has {list(df.columns)}")
    if not (np.all(np.isfinite(df[xc].to_numpy(float))) and np.all(np.isfinite(df[yc].to_numpy(float)))):
        raise InverscopeError(f"{name}: has NaN or infinite positions in {xc!r}/{yc!r}")
    return df, xc, yc


# --------------------------------------------------------------------------- drift

@dataclass
class DriftResult:
    """``frames``: (n_frames, rows, columns) shifted back onto frame 0 (bicubic, edges repeated);
    ``drift_px``: (n_frames, 2) cumulative content displacement (dx, dy) of each frame relative to
    frame 0 in pixels (row 0 is (0, 0)); ``step_error``: the registration error per step that
    ``phase_cross_correlation`` reports (dimensionless; NaN for frame 0)."""

    frames: np.ndarray
    drift_px: np.ndarray
    step_error: np.ndarray


def drift_correct(frames, *, upsample_factor: int = 100, reference: str = "previous",
                  window: bool = True, normalization: str | None = None) -> DriftResult:
    """Rigid drift of a movie by phase cross-correlation, and the frames corrected for it.

    Parameters
    ----------
    frames : array (n_frames, rows, columns) or sequence of 2D arrays
        The movie (any intensity units). Every frame must have frame 0's shape, be finite and
        not constant.
    upsample_factor : int
        Sub-pixel precision 1/``upsample_factor`` px of the cross-correlation peak.
    reference : {"previous", "first"}
        ``"previous"``: register each frame on the one before and accumulate the steps (follows
        slowly changing content and large total drift); ``"first"``: register every frame on
        frame 0 directly (no accumulated error, but content must stay comparable).
    window : bool
        Multiply frames (mean removed) by a 2D Hann window before correlating, which suppresses
        the spurious zero-shift peak of the non-periodic image edges.
    normalization : {None, "phase"}
        ``phase_cross_correlation``'s normalisation. None (plain cross-correlation) is the
        default: whitening (``"phase"``) amplifies the high frequencies, where sparse atom images
        hold mostly noise and edge artefacts, and was off by up to 0.4 px on blob images where
        the plain correlation with a Hann window was within 0.05 px.

    Returns
    -------
    DriftResult
        ``drift_px[i] = (dx, dy)``: frame i's content sits at frame 0's position + (dx, dy) px.
    """
    from skimage.registration import phase_cross_correlation

    if isinstance(frames, np.ndarray) and frames.ndim != 3:
        raise InverscopeError(f"frames: got shape {frames.shape}; expected (n_frames, rows, columns)")
    arrs = [np.asarray(f, dtype=float) for f in frames]
    if not arrs:
        raise InverscopeError("frames: got an empty movie")
    for i, a in enumerate(arrs):
        if a.ndim != 2:
            raise InverscopeError(f"frames[{i}]: got shape {a.shape}; expected a 2D frame")
        if a.shape != arrs[0].shape:
            raise InverscopeError(f"frames[{i}]: got shape {a.shape}; frame 0 is {arrs[0].shape}; "
                                  "all frames must match")
        if not np.all(np.isfinite(a)):
            raise InverscopeError(f"frames[{i}]: contains NaN or infinite pixels")
        if np.ptp(a) == 0:
            raise InverscopeError(f"frames[{i}]: is constant; nothing to register")
    if normalization not in (None, "phase"):
        raise InverscopeError(f"normalization: got {normalization!r}; allowed: None, 'phase'")
    if reference not in ("previous", "first"):
        raise InverscopeError(f"reference: got {reference!r}; allowed: 'previous', 'first'")
    if int(upsample_factor) != upsample_factor or upsample_factor < 1:
        raise InverscopeError(f"upsample_factor: got {upsample_factor!r}; must be an integer >= 1")
    h, w = arrs[0].shape
    win = np.outer(np.hanning(h), np.hanning(w)) if window else 1.0

    def prep(a):
        return (a - a.mean()) * win

    n = len(arrs)
    drift = np.zeros((n, 2))
    err = np.full(n, np.nan)
    prepped = [prep(a) for a in arrs]
    for i in range(1, n):
        ref = prepped[i - 1] if reference == "previous" else prepped[0]
        shift, e, _ = phase_cross_correlation(ref, prepped[i], upsample_factor=int(upsample_factor),
                                              normalization=normalization)
        step = np.array([-shift[1], -shift[0]])              # (dy, dx) to undo -> content moved by (dx, dy)
        drift[i] = (drift[i - 1] + step) if reference == "previous" else step
        err[i] = float(e)
    corrected = np.stack([ndimage.shift(a, (-d[1], -d[0]), order=3, mode="nearest") for a, d in zip(arrs, drift)])
    return DriftResult(corrected, drift, err)


def correct_positions(table: pd.DataFrame, drift_px) -> pd.DataFrame:
    """Subtract the per-frame drift (:attr:`DriftResult.drift_px`, (n_frames, 2) (dx, dy) px)
    from a table's positions (``x``/``y`` or ``x_px``/``y_px``, pixels); returns a copy."""
    df, xc, yc = _check_table(table, "table")
    d = np.asarray(drift_px, dtype=float)
    if d.ndim != 2 or d.shape[1] != 2:
        raise InverscopeError(f"drift_px: got shape {d.shape}; expected (n_frames, 2)")
    fr = df["frame"].to_numpy(int)
    if len(fr) and (fr.min() < 0 or fr.max() >= len(d)):
        raise InverscopeError(f"table: frames {fr.min()}..{fr.max()} but drift_px covers 0..{len(d) - 1}")
    out = df.copy()
    out[xc] = df[xc].to_numpy(float) - d[fr, 0]
    out[yc] = df[yc].to_numpy(float) - d[fr, 1]
    return out


# --------------------------------------------------------------------------- linking

def link_atoms(tables, search_range: float, memory: int = 3, **trackpy_kwargs) -> pd.DataFrame:
    """Link per-frame atom positions into tracks with trackpy.

    Parameters
    ----------
    tables : DataFrame with a ``frame`` column, or a sequence of per-frame DataFrames
        Positions ``x``, ``y`` (or ``x_px``, ``y_px``) in pixels; a sequence's i-th table is
        frame i (its own ``frame`` column, if any, is overwritten). Other columns (``class``,
        ``probability``, ...) are carried along.
    search_range : float
        Largest displacement between linked positions, pixels (per frame of gap, not scaled).
    memory : int
        Frames a particle may vanish and still keep its id (gap closing).
    **trackpy_kwargs
        Passed to ``trackpy.link`` (e.g. ``adaptive_stop``, ``link_strategy``).

    Returns
    -------
    pandas.DataFrame
        The input rows plus ``particle`` (int track id), sorted by (frame, particle).
    """
    import trackpy

    if isinstance(tables, pd.DataFrame):
        df, xc, yc = _check_table(tables, "tables")
        df = df.copy()
    else:
        parts = []
        for i, t in enumerate(tables):
            _check_table(t, f"tables[{i}]", need=())
            parts.append(t.assign(frame=i))
        if not parts:
            raise InverscopeError("tables: got an empty sequence of frames")
        df = pd.concat(parts, ignore_index=True)
        df, xc, yc = _check_table(df, "tables")
    if not (np.isfinite(search_range) and search_range > 0):
        raise InverscopeError(f"search_range: got {search_range!r}; must be a positive number of pixels")
    if int(memory) != memory or memory < 0:
        raise InverscopeError(f"memory: got {memory!r}; must be an integer >= 0")
    df["frame"] = df["frame"].astype(int)
    if "particle" in df.columns:
        df = df.drop(columns="particle")
    if df.empty:
        return df.assign(particle=pd.Series(dtype=int))
    trackpy.quiet()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*inplace keyword.*")      # trackpy 0.7 on pandas 3
            linked = trackpy.link(df.reset_index(drop=True), float(search_range), pos_columns=[xc, yc],
                                  t_column="frame", memory=int(memory), **trackpy_kwargs)
    except trackpy.linking.SubnetOversizeException:
        raise InverscopeError(f"search_range: {search_range} px links too many candidates at this density; "
                              "lower it or drift-correct first") from None
    linked["particle"] = linked["particle"].astype(int)
    return linked.sort_values(["frame", "particle"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- diffusion

def msd_per_class(tracks: pd.DataFrame, pixel_size: float = 1.0, frame_time: float = 1.0, *, max_lag: int = 10,
                  class_column: str = "class", id_column: str = "particle",
                  subtract_mean_displacement: bool = False) -> pd.DataFrame:
    """Ensemble mean squared displacement per class and lag.

    A displacement of particle p from frame f to f + L counts towards lag L when p is present
    in both frames (gaps allowed in between) and has the same class in both (class changes are
    therefore left out); with no ``class_column`` every displacement is class ``"all"``.

    Parameters
    ----------
    tracks : DataFrame
        Linked positions (``frame``, ``x``/``y`` or ``x_px``/``y_px`` in pixels, ``id_column``).
    pixel_size : float
        Length per pixel (e.g. Å/px); the MSD comes out in that unit squared.
    frame_time : float
        Time between frames (e.g. s); ``t = lag * frame_time``.
    max_lag : int
        Largest lag in frames.
    subtract_mean_displacement : bool
        Use the variance of the displacements (the squared mean displacement per class and lag
        removed), which takes out a common residual drift.

    Returns
    -------
    pandas.DataFrame
        Columns ``class, lag`` (frames), ``t`` (frame_time units), ``msd`` (pixel_size units^2),
        ``sem`` (its standard error: std of the squared displacements over sqrt(n / lag), a rough
        allowance for overlapping time windows), ``n`` (displacements used).
    """
    df, xc, yc = _check_table(tracks, "tracks", need=("frame", id_column))
    if not (np.isfinite(pixel_size) and pixel_size > 0 and np.isfinite(frame_time) and frame_time > 0):
        raise InverscopeError(f"pixel_size/frame_time: got {pixel_size!r}/{frame_time!r}; must be positive numbers")
    if int(max_lag) != max_lag or max_lag < 1:
        raise InverscopeError(f"max_lag: got {max_lag!r}; must be an integer >= 1")
    cls = df[class_column].to_numpy() if class_column in df.columns else np.array(["all"] * len(df), dtype=object)
    base = pd.DataFrame({"p": df[id_column].to_numpy(), "f": df["frame"].to_numpy(int),
                         "x": df[xc].to_numpy(float) * pixel_size, "y": df[yc].to_numpy(float) * pixel_size, "c": cls})
    if base.duplicated(["p", "f"]).any():
        raise InverscopeError(f"tracks: a particle appears twice in one frame (duplicate ({id_column}, frame) rows)")
    rows = []
    for lag in range(1, int(max_lag) + 1):
        later = base.assign(f=base["f"] - lag)
        m = base.merge(later, on=["p", "f"], suffixes=("0", "1"))
        m = m[m["c0"] == m["c1"]]
        dx, dy = (m["x1"] - m["x0"]).to_numpy(), (m["y1"] - m["y0"]).to_numpy()
        for c, idx in pd.Series(np.arange(len(m))).groupby(m["c0"].to_numpy()).groups.items():
            idx = np.asarray(idx)
            ddx, ddy = dx[idx], dy[idx]
            if subtract_mean_displacement:
                ddx, ddy = ddx - ddx.mean(), ddy - ddy.mean()
            sq = ddx ** 2 + ddy ** 2
            n = len(sq)
            sem = float(sq.std(ddof=1) / np.sqrt(max(n / lag, 1.0))) if n > 1 else np.nan
            rows.append({"class": c, "lag": lag, "t": lag * frame_time, "msd": float(sq.mean()), "sem": sem, "n": n})
    out = pd.DataFrame(rows, columns=["class", "lag", "t", "msd", "sem", "n"])
    return out.sort_values(["class", "lag"], kind="stable").reset_index(drop=True)


def diffusion_constant(msd: pd.DataFrame, *, n_lags: int = 4, offset: bool = False) -> pd.DataFrame:
    """Diffusion constant from ``MSD = 4 D t`` (2D; ``+ c`` with ``offset=True``) per class.

    The fit uses the first ``n_lags`` lags (short lags carry the most independent information for
    Brownian motion; Michalet, PRE 82, 041914 (2010)), weighted by 1/``sem``^2 when the table has
    a finite positive ``sem``, otherwise unweighted. The offset ``c`` absorbs static localisation
    error (``c = 4 sigma_loc^2``) and motion blur.

    Parameters
    ----------
    msd : DataFrame
        From :func:`msd_per_class` (``t``, ``msd``, optional ``sem``, ``class``, ``lag``).
    n_lags : int
        Number of smallest lags used (at least 2 with ``offset``).
    offset : bool
        Fit the constant ``c`` too.

    Returns
    -------
    pandas.DataFrame
        One row per class: ``D`` (msd units / t units, e.g. Å^2/s), ``D_se`` (standard error:
        from the ``sem`` weights when present, otherwise from the fit residuals), ``offset``
        (msd units; 0 when not fitted), ``offset_se``, ``n_lags`` used.
    """
    if not isinstance(msd, pd.DataFrame) or not {"t", "msd"} <= set(msd.columns):
        raise InverscopeError("msd: expected a DataFrame with columns 't' and 'msd' (from msd_per_class)")
    if int(n_lags) != n_lags or n_lags < (2 if offset else 1):
        raise InverscopeError(f"n_lags: got {n_lags!r}; must be an integer >= {2 if offset else 1}")
    groups = msd.groupby("class", sort=True) if "class" in msd.columns else [("all", msd)]
    rows = []
    for c, g in groups:
        g = g.sort_values("t").head(int(n_lags))
        g = g[np.isfinite(g["msd"].to_numpy(float))]
        t, y = g["t"].to_numpy(float), g["msd"].to_numpy(float)
        sem = g["sem"].to_numpy(float) if "sem" in g.columns else np.full(len(g), np.nan)
        weighted = len(g) > 0 and bool(np.all(np.isfinite(sem) & (sem > 0)))
        k = 2 if offset else 1
        if len(g) < k:
            rows.append({"class": c, "D": np.nan, "D_se": np.nan, "offset": np.nan, "offset_se": np.nan,
                         "n_lags": len(g)})
            continue
        A = np.stack([4 * t, np.ones_like(t)], axis=1)[:, :k]
        wts = 1 / sem if weighted else np.ones_like(t)
        Aw, yw = A * wts[:, None], y * wts
        coef, *_ = np.linalg.lstsq(Aw, yw, rcond=None)
        cov = np.linalg.pinv(Aw.T @ Aw)
        if not weighted:
            dof = len(g) - k
            cov = cov * (float(np.sum((yw - Aw @ coef) ** 2)) / dof if dof > 0 else np.nan)
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
        rows.append({"class": c, "D": float(coef[0]), "D_se": float(se[0]),
                     "offset": float(coef[1]) if offset else 0.0, "offset_se": float(se[1]) if offset else 0.0,
                     "n_lags": len(g)})
    return pd.DataFrame(rows, columns=["class", "D", "D_se", "offset", "offset_se", "n_lags"])


# --------------------------------------------------------------------------- class transitions

def transition_matrix(tracks: pd.DataFrame, *, class_column: str = "class", id_column: str = "particle",
                      labels: Sequence | None = None, return_counts: bool = False):
    """Per-frame class transition probabilities estimated from tracks.

    Counts ``N[a, b]`` of a particle having class ``a`` in frame f and ``b`` in frame f + 1
    (both frames present; steps across a gap are not counted), then rows divided by their sums
    (a row with no counts is NaN).

    Returns
    -------
    pandas.DataFrame, or (probabilities, counts) with ``return_counts``
        Rows: class in frame f (``from``), columns: class in frame f + 1 (``to``).
    """
    need = ("frame", id_column, class_column)
    if not isinstance(tracks, pd.DataFrame) or any(c not in tracks.columns for c in need):
        raise InverscopeError(f"tracks: expected a DataFrame with columns {list(need)}")
    base = tracks[[id_column, "frame", class_column]].rename(columns={id_column: "p", "frame": "f", class_column: "c"})
    nxt = base.assign(f=base["f"] - 1)
    m = base.merge(nxt, on=["p", "f"], suffixes=("0", "1"))
    labs = list(labels) if labels is not None else sorted(set(base["c"].tolist()), key=lambda v: (str(type(v)), v))
    counts = pd.crosstab(m["c0"], m["c1"]).reindex(index=labs, columns=labs, fill_value=0)
    counts.index.name, counts.columns.name = "from", "to"
    sums = counts.sum(axis=1).to_numpy(float)
    probs = counts.div(np.where(sums > 0, sums, np.nan), axis=0)
    return (probs, counts) if return_counts else probs


# --------------------------------------------------------------------------- CLEAR-MOT

@dataclass
class MOTResult:
    """CLEAR-MOT scores (:func:`mota`); ``motp`` is the mean distance of matched pairs in the
    position units."""

    mota: float
    motp: float
    misses: int
    false_positives: int
    id_switches: int
    n_true: int
    n_matches: int


def mota(pred_tracks: pd.DataFrame, true_tracks: pd.DataFrame, max_distance: float, *,
         pred_id: str = "particle", true_id: str = "particle") -> MOTResult:
    """Multiple object tracking accuracy (CLEAR-MOT, Bernardin & Stiefelhagen, EURASIP JIVP 2008).

    Definition: ``MOTA = 1 - (misses + false positives + id switches) / n_true`` with the sums
    over all frames and ``n_true`` the number of ground-truth positions (object-frames). Per
    frame, a true object keeps last frame's predicted partner if that partner is present and
    within ``max_distance``; the remaining objects are matched one-to-one within ``max_distance``
    by the Hungarian method (most pairs, then smallest summed distance). A *miss* is an unmatched
    true position, a *false positive* an unmatched prediction, an *id switch* a true object
    matched to a different predicted id than at its previous match (in any earlier frame).
    MOTA is at most 1 and can be negative.

    Parameters
    ----------
    pred_tracks, true_tracks : DataFrame
        ``frame``, positions (``x``/``y`` or ``x_px``/``y_px``, one unit for both) and an id column.
    max_distance : float
        Largest distance of a match, position units.
    """
    p, pxc, pyc = _check_table(pred_tracks, "pred_tracks", need=("frame", pred_id))
    t, txc, tyc = _check_table(true_tracks, "true_tracks", need=("frame", true_id))
    if not (np.isfinite(max_distance) and max_distance > 0):
        raise InverscopeError(f"max_distance: got {max_distance!r}; must be a positive number")
    pg = {f: g for f, g in p.groupby("frame")}
    tg = {f: g for f, g in t.groupby("frame")}
    misses = fps = idsw = n_true = n_match = 0
    dist_sum = 0.0
    current: dict = {}           # true id -> pred id matched in the previous frame
    last: dict = {}              # true id -> pred id at its latest match
    for f in sorted(set(pg) | set(tg)):
        tf, pf = tg.get(f), pg.get(f)
        tids = tf[true_id].to_numpy() if tf is not None else np.zeros(0)
        pids = pf[pred_id].to_numpy() if pf is not None else np.zeros(0)
        txy = tf[[txc, tyc]].to_numpy(float) if tf is not None else np.zeros((0, 2))
        pxy = pf[[pxc, pyc]].to_numpy(float) if pf is not None else np.zeros((0, 2))
        tpos = {k: i for i, k in enumerate(tids)}
        ppos = {k: i for i, k in enumerate(pids)}
        matches: dict = {}
        for tid, pid in current.items():
            if tid in tpos and pid in ppos and np.linalg.norm(txy[tpos[tid]] - pxy[ppos[pid]]) <= max_distance:
                matches[tid] = pid
        used_p = {ppos[v] for v in matches.values()}
        free_t = np.array([i for i, k in enumerate(tids) if k not in matches], int)
        free_p = np.array([j for j in range(len(pids)) if j not in used_p], int)
        if len(free_t) and len(free_p):
            for i, j in _assign(txy[free_t], pxy[free_p], float(max_distance)):
                matches[tids[free_t[i]]] = pids[free_p[j]]
        for tid, pid in matches.items():
            if tid in last and last[tid] != pid:
                idsw += 1
            last[tid] = pid
            dist_sum += float(np.linalg.norm(txy[tpos[tid]] - pxy[ppos[pid]]))
        n_true += len(tids)
        n_match += len(matches)
        misses += len(tids) - len(matches)
        fps += len(pids) - len(matches)
        current = matches
    score = 1.0 - (misses + fps + idsw) / n_true if n_true else np.nan
    return MOTResult(mota=score, motp=dist_sum / n_match if n_match else np.nan, misses=misses,
                     false_positives=fps, id_switches=idsw, n_true=n_true, n_matches=n_match)


# --------------------------------------------------------------------------- simulation

def simulate_movie(n_frames: int, n_particles: int, box, D=0.5, drift=(0.0, 0.0), p_transition=None,
                   seed: int = 0, *, frame_time: float = 1.0, vacancy_rate: float = 0.0, vacancy_D: float = 0.0,
                   min_separation: float = 0.0) -> pd.DataFrame:
    """True positions of a simulated atom movie (no images).

    Every particle does a 2D random walk, ``x += N(0, 2 D dt)`` per axis per frame with
    ``dt = frame_time``, reflected at the box walls (so the MSD is ``4 D t`` while ``sqrt(4 D t)``
    is small against the box). Its class (integers 0..K-1) follows a Markov chain with the
    per-frame row-stochastic ``p_transition`` (K x K; None: one class), starting from the
    chain's stationary distribution. New *vacancies* appear at uniform random positions, a
    Poisson number with mean ``vacancy_rate`` per frame after frame 0, get class K (they do not
    switch class), new particle ids, and diffuse with ``vacancy_D``. A common ``drift`` is added
    to every position of a frame.

    Parameters
    ----------
    n_frames, n_particles : int
        Movie length and initial number of particles.
    box : float or (width, height)
        Field of view in pixels; positions lie in [0, width] x [0, height] before drift.
    D : float or sequence of K floats
        Diffusion constant(s) in px^2 per ``frame_time`` unit, per class when a sequence.
    drift : (dx, dy) or array (n_frames, 2)
        Constant drift velocity in px per frame, or each frame's absolute offset (dx, dy) px.
    p_transition : array (K, K), optional
        ``p_transition[a, b]``: probability that class a becomes b from one frame to the next.
    seed : int
        Random seed (numpy ``default_rng``).
    frame_time : float
        Time per frame (the unit D is given in).
    min_separation : float
        Initial positions at least this far apart (pixels; rejection sampling).

    Returns
    -------
    pandas.DataFrame
        ``frame, particle, x, y, class`` (x, y include drift, pixels) and ``x_sample, y_sample``
        (without drift). ``attrs`` holds ``D`` (per class), ``p_transition``, ``drift_px``
        ((n_frames, 2) offsets), ``frame_time``, ``box``.
    """
    rng = np.random.default_rng(seed)
    if int(n_frames) != n_frames or n_frames < 1 or int(n_particles) != n_particles or n_particles < 0:
        raise InverscopeError(f"n_frames/n_particles: got {n_frames!r}/{n_particles!r}; need integers >= 1 / >= 0")
    bw, bh = (float(box), float(box)) if np.ndim(box) == 0 else tuple(float(b) for b in box)
    if not (bw > 0 and bh > 0):
        raise InverscopeError(f"box: got {box!r}; must be positive (pixels)")
    P = np.eye(1) if p_transition is None else np.asarray(p_transition, dtype=float)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or np.any(P < 0) or not np.allclose(P.sum(1), 1.0):
        raise InverscopeError(f"p_transition: got shape {P.shape}; must be a square matrix of probabilities "
                              "whose rows sum to 1")
    K = len(P)
    Dk = np.broadcast_to(np.asarray(D, dtype=float), (K,)).copy() if np.ndim(D) == 0 or len(D) == K else None
    if Dk is None or np.any(Dk < 0) or not np.all(np.isfinite(Dk)):
        raise InverscopeError(f"D: got {D!r}; must be one non-negative number or {K} (one per class)")
    Dall = np.append(Dk, float(vacancy_D))
    dr = np.asarray(drift, dtype=float)
    if dr.shape == (2,):
        offsets = np.arange(n_frames)[:, None] * dr[None]
    elif dr.shape == (n_frames, 2):
        offsets = dr.copy()
    else:
        raise InverscopeError(f"drift: got shape {dr.shape}; expected (2,) or ({n_frames}, 2)")
    # stationary distribution of the chain: left eigenvector of eigenvalue 1
    vals, vecs = np.linalg.eig(P.T)
    pi = np.abs(np.real(vecs[:, np.argmin(np.abs(vals - 1))]))
    pi = pi / pi.sum()

    def place(n, existing):
        pts = []
        for _ in range(n):
            for _try in range(1000):
                q = rng.uniform((0, 0), (bw, bh))
                if min_separation <= 0 or all(np.hypot(*(q - e)) >= min_separation for e in existing + pts):
                    break
            pts.append(q)
        return pts

    pos = np.array(place(int(n_particles), []), dtype=float).reshape(-1, 2)
    cls = rng.choice(K, size=len(pos), p=pi)
    ids = np.arange(len(pos))
    next_id = len(pos)
    cum = np.cumsum(P, axis=1)
    rows = []
    for f in range(int(n_frames)):
        if f > 0:
            step = rng.normal(size=pos.shape) * np.sqrt(2 * Dall[cls] * frame_time)[:, None]
            pos = pos + step
            for ax, L in ((0, bw), (1, bh)):          # reflect (repeat for steps longer than the box)
                v = np.mod(pos[:, ax], 2 * L)
                pos[:, ax] = np.where(v > L, 2 * L - v, v)
            sw = cls < K
            u = rng.random(int(sw.sum()))
            cls[sw] = np.minimum((u[:, None] > cum[cls[sw]]).sum(1), K - 1)
            n_new = rng.poisson(vacancy_rate) if vacancy_rate > 0 else 0
            if n_new:
                new = np.array(place(n_new, list(pos)), dtype=float).reshape(-1, 2)
                pos = np.vstack([pos, new])
                cls = np.append(cls, np.full(n_new, K))
                ids = np.append(ids, np.arange(next_id, next_id + n_new))
                next_id += n_new
        rows.append(pd.DataFrame({"frame": f, "particle": ids, "x": pos[:, 0] + offsets[f, 0],
                                  "y": pos[:, 1] + offsets[f, 1], "class": cls.copy(),
                                  "x_sample": pos[:, 0], "y_sample": pos[:, 1]}))
    out = pd.concat(rows, ignore_index=True)
    out.attrs.update({"D": Dall.tolist(), "p_transition": P.tolist(), "drift_px": offsets.tolist(),
                      "frame_time": float(frame_time), "box": (bw, bh), "vacancy_class": K})
    return out


__all__ = ["DriftResult", "drift_correct", "correct_positions", "link_atoms", "msd_per_class",
           "diffusion_constant", "transition_matrix", "MOTResult", "mota", "simulate_movie"]
