"""Trained models from Python in three lines: :class:`Model` and :class:`Prediction`.

::

    import inverscope as isc
    model = isc.Model("out/lao_sto_quick/models/classifier_paper")   # NAME.safetensors + NAME.json
    pred = model.predict("scan.hspy")          # a file, a Zarr store, or an array with sampling_mrad=...
    pred.maps["prob_rough"], pred.units["prob_rough"], pred.uncertainty

:meth:`Model.predict` runs exactly what ``inverscope predict`` runs (the same readers, checks,
resampling by angle and outputs; :func:`inverscope.analysis.maps.predict_files`), so a
prediction from Python and one from the command line agree to the bit. Arrays are first
written to a temporary store of a format ``predict`` reads (a Zarr ``cbed`` store for 4D data,
``.npy`` for images), block by block, so a Zarr or Dask array is never loaded whole; for data
larger than memory, pass the file or store path instead, which is read lazily in chunks.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inverscope.core.errors import InverscopeError

#: model tasks :meth:`Model.predict` applies, with what their data are
KINDS = {
    "classification": "4D-STEM scan (stack model: windows of probe positions along a scan axis)",
    "regression": "4D-STEM scan (stack model: windows of probe positions along a scan axis)",
    "polarization": "4D-STEM scan (one pattern per probe position)",
    "pacbed": "PACBED images (2D) and/or 4D-STEM scans",
    "atoms": "HAADF/ADF images (2D) and movies (3D: frame, row, column)",
}

_UNIT_SUFFIXES = (("_sd_nm", "nm"), ("_nm", "nm"), ("_sd_mrad", "mrad"), ("_mrad", "mrad"), ("_deg", "deg"),
                  ("_err_px", "px"), ("_px", "px"), ("_angstrom", "Å"), ("_s", "s"))


@dataclass
class Prediction:
    """What ``Model.predict`` found: arrays and tables with their units and uncertainties.

    Attributes
    ----------
    kind : str
        The model's task: ``classification``, ``regression``, ``polarization``, ``pacbed`` or ``atoms``.
    maps : dict of str to ndarray
        Maps over the scan. Stack models: ``class_index``, ``confidence``, ``prob_<class>``
        (classification) or ``value``, ``std`` (regression), shape (scan rows, window starts)
        for ``axis=1``. Polarization models: ``class_map``, ``angle_deg``, ``confidence``,
        ``anomaly``, ``disagreement``, ``com_x``, ``com_y``, ``com_angle_deg``, shape (rows,
        columns). PACBED models: ``thickness_nm``, ``thickness_sd_nm``, ``tilt_x_mrad``, ... per
        scan window, named ``<source>/<name>`` when several files were read. Atom models: none.
    tables : dict of str to pandas.DataFrame
        Tables: ``predictions`` (PACBED: one row per pattern), ``atoms`` (one row per atom per
        frame) and ``<movie>_tracks`` (atom tracks).
    units : dict of str to str
        Unit of every map and table column with one (``"1"`` for probabilities and other
        dimensionless numbers, ``"class index"`` for class maps; see ``class_names``).
    uncertainty : dict of str to ndarray
        For each predicted quantity, its uncertainty on the same grid: ``1 - confidence`` for a
        class, the MC-dropout standard deviation for a regression (NaN unless
        ``mc_dropout > 0``), the network's standard deviation for PACBED thickness and tilt
        (16 MC-dropout passes by default). A map's is under the map's name (``"class_index"``,
        ``"thickness_nm"``), a table column's under ``"<table>/<column>"``
        (``"predictions/thickness_nm"``; ``"atoms/probability"``: the ensemble spread per atom).
    class_names : list of str
        Names of the classes, in the order of the class indices (empty for regressions).
    summary : dict
        The run's ``summary.json``: source, settings, what was read and chosen (e.g.
        ``resampled``: resampling by angle from / to which mrad/px), warnings and timings.
    out : Path or None
        Output directory with the files ``inverscope predict`` writes (figures, Zarr/CSV/
        Parquet, summary.json) when ``out=`` was given; None otherwise (they were temporary).

    Examples
    --------
    ``Model.predict`` makes these; ``pred[name]`` is a map (or a table) by name and
    ``pred.warnings`` what ``predict`` warned about. One made by hand:

    >>> import numpy as np
    >>> import inverscope as isc
    >>> pred = isc.Prediction(kind="regression", maps={"value": np.zeros((4, 5)), "std": np.zeros((4, 5))},
    ...                       units={"value": "nm", "std": "nm"})
    >>> pred
    Prediction(kind='regression', maps=[value (4, 5), std (4, 5)], tables=[], uncertainty=[])
    >>> pred["value"].shape, pred.units["value"], pred.warnings
    ((4, 5), 'nm', [])
    """

    kind: str
    maps: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)
    uncertainty: dict = field(default_factory=dict)
    class_names: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    out: Path | None = None

    def __getitem__(self, name: str):
        """A map (or, failing that, a table) by name."""
        if name in self.maps:
            return self.maps[name]
        if name in self.tables:
            return self.tables[name]
        raise KeyError(f"{name!r}: not a map or table of this prediction; maps: {sorted(self.maps)}, "
                       f"tables: {sorted(self.tables)}")

    @property
    def warnings(self) -> list[str]:
        """What ``predict`` warned about (data outside the training range, resampling, ...)."""
        return list(self.summary.get("warnings") or [])

    def __repr__(self) -> str:
        maps = ", ".join(f"{k} {tuple(v.shape)}" for k, v in self.maps.items())
        tables = ", ".join(f"{k} ({len(v)} rows)" for k, v in self.tables.items())
        return (f"Prediction(kind={self.kind!r}, maps=[{maps}], tables=[{tables}], "
                f"uncertainty={sorted(self.uncertainty)})")


class Model:
    """A trained inverscope model (``NAME.safetensors`` + ``NAME.json``) to apply from Python.

    Parameters
    ----------
    path : str or Path
        The model, with or without suffix, e.g. ``out/lao_sto_quick/models/classifier_paper``.
    device : str
        Torch device for ``predict`` (``cpu``, ``cuda``, ``cuda:1``; default ``cpu``).
        Atom-finding and polarization models also take it; PACBED models run on the CPU.

    Attributes
    ----------
    task : str
        ``classification``, ``regression``, ``polarization``, ``pacbed`` or ``atoms``.
    architecture : str
        Network architecture name (e.g. ``stack_cnn3d``, ``pattern_cnn``, ``unet``).
    class_names : list of str
        Class names in the order of the class indices (empty for regressions).
    sampling_mrad : (float, float) or None
        Detector sampling the model was trained at [mrad/px] (4D-STEM and PACBED models).
    path : Path
        The model as given.
    device : str
        The torch device ``predict`` uses.
    meta : dict
        The model's metadata (``NAME.json``).

    Raises
    ------
    InverscopeError
        The files are missing, not inverscope model metadata, or of a task ``predict`` does
        not apply (e.g. a BE-PFM autoencoder: run its study with ``--data`` instead).

    Examples
    --------
    A classifier of the LAO/STO study (``make demo`` trains it, or ``inverscope run
    recipes/lao_sto_quick.yaml --out out/lao_sto_quick``) applied to a (4, 16, 26, 26) scan
    recorded at 1.75 mrad/px; ``predict`` returns a ``Prediction``:

    >>> import inverscope as isc
    >>> model = isc.Model("out/lao_sto_quick/models/classifier_paper")   # doctest: +SKIP
    >>> model.task, model.class_names, model.sampling_mrad   # doctest: +SKIP
    ('classification', ['rough', 'intermixed'], (3.5, 3.5))
    >>> pred = model.predict("scan.npy", sampling_mrad=1.75)   # doctest: +SKIP
    >>> pred.maps["prob_rough"].shape, pred.units["prob_rough"]   # doctest: +SKIP
    ((4, 5), '1')

    The patterns were binned onto the model's 3.5 mrad pixels, and the maps are (scan rows,
    window starts): windows of 12 positions along the scan's second axis give 5 starts.
    Both files of a model are needed:

    >>> isc.Model("no/such/model")
    Traceback (most recent call last):
        ...
    inverscope.core.errors.InverscopeError: no/such/model: a model needs both model.safetensors and model.json
    """

    def __init__(self, path, device: str = "cpu"):
        from inverscope.models.io import load_metadata, model_paths

        self.path = Path(path)
        self.meta = load_metadata(path)
        self.device = str(device)
        if self.task not in KINDS:
            raise InverscopeError(f"{model_paths(path)[1]}: a model of task {self.task!r} "
                                  f"({self.meta.get('architecture')}); Model.predict applies models of tasks "
                                  f"{', '.join(KINDS)}")

    # ------------------------------------------------------------------ description

    @property
    def task(self) -> str:
        """``classification``, ``regression``, ``polarization``, ``pacbed`` or ``atoms``."""
        return str(self.meta.get("task"))

    @property
    def architecture(self) -> str:
        """Network architecture name (e.g. ``stack_cnn3d``, ``pattern_cnn``, ``unet``)."""
        return str(self.meta.get("architecture"))

    @property
    def class_names(self) -> list[str]:
        """Class names in the order of the class indices (empty for regressions)."""
        names = self.meta.get("class_names") or self.meta.get("class_labels") or self.meta.get("names") or []
        return [str(n) for n in names]

    @property
    def sampling_mrad(self) -> tuple[float, float] | None:
        """Detector sampling the model was trained at [mrad/px] (4D-STEM and PACBED models)."""
        inp = self.meta.get("input") or {}
        s = inp.get("sampling_mrad", inp.get("mrad_per_px"))
        if s is None:
            return None
        s = [float(v) for v in (s if isinstance(s, (list, tuple)) else (s, s))]
        return (s[0], s[-1])

    @property
    def data_kind(self) -> str:
        """What :meth:`predict` takes for this model, in words."""
        return KINDS[self.task]

    def __repr__(self) -> str:
        s = f", sampling_mrad={self.sampling_mrad}" if self.sampling_mrad else ""
        c = f", classes={self.class_names}" if self.class_names else ""
        return f"Model({str(self.path)!r}, task={self.task!r}, architecture={self.architecture!r}{c}{s})"

    # ------------------------------------------------------------------ prediction

    def predict(self, data, *, out=None, sampling_mrad: float | None = None, pixel_size: float | None = None,
                mc_dropout: int | None = None, **options) -> Prediction:
        """Apply the model to `data` and return what it found.

        Parameters
        ----------
        data : str, Path, array-like or list of them
            A file or store ``inverscope predict`` reads (4D-STEM: ``.hspy``, ``.emd``, ``.mib``,
            ``.blo``, ``.dm4``, ``.npy``, an inverscope or campaign Zarr store, ...; images:
            ``.png``, ``.tif``, ``.dm3``/``.dm4``, ``.emd``, ``.npy``), or an array: 4D
            ``(scan rows, scan columns, ky, kx)`` for 4D-STEM models (numpy, Zarr or Dask),
            2D ``(rows, columns)`` for a PACBED pattern or an image, 3D ``(frames, rows,
            columns)`` for an atom-finding movie. PACBED and atom models take a list of these.
        out : str or Path, optional
            Keep the files ``inverscope predict`` writes (figures, tables, maps, summary.json)
            in this new or empty directory; by default they are temporary.
        sampling_mrad : float, optional
            4D-STEM models: the data's detector pixel size [mrad/px]. Patterns at another
            sampling than the model's are resampled by angle onto the model's pixels (needed for
            arrays, which carry no calibration, unless they already match the model).
        pixel_size : float, optional
            Atom-finding models: image pixel size [Å/px] (needed for arrays and for files
            without a calibration).
        mc_dropout : int, optional
            Stochastic passes for the uncertainty (stack models: default 0, so a regression's
            ``std`` is NaN; PACBED: default 16).
        **options
            The other options of ``inverscope predict`` by their Python names: ``axis``,
            ``stride``, ``chunk_rows``, ``bin_factor``, ``thickness_index`` (stack models);
            ``bin_factor``, ``crop``, ``chunk_rows`` (polarization); ``semiangle_mrad``,
            ``energy_kev``, ``mrad_per_px``, ``window``, ``library``, ``disc_radius_px``
            (PACBED); ``classes`` (atoms). Options a model's kind does not use are refused.

        Returns
        -------
        Prediction

        Raises
        ------
        InverscopeError
            One line naming what is wrong with the data or an option; nothing is written to
            `out` then.
        """
        from inverscope.analysis.maps import predict_files

        given = {"sampling_mrad": sampling_mrad, "pixel_size": pixel_size, "mc_dropout": mc_dropout, **options}
        if self.task in ("classification", "regression", "polarization", "atoms") and self.device != "cpu":
            given.setdefault("device", self.device)
        if given.get("device") is None:
            given.pop("device", None)
        work = Path(tempfile.mkdtemp(prefix="inverscope-predict-"))
        try:
            items = data if isinstance(data, (list, tuple)) else [data]
            if not items:
                raise InverscopeError("data: got an empty list; give a file, a store or an array")
            paths = [self._as_path(item, work / f"input_{i}") for i, item in enumerate(items)]
            target = Path(out) if out is not None else work / "out"
            summary = predict_files(self.path, paths, target, **given)
            return self._read(target, summary, keep=out is not None)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _as_path(self, item, stem: Path) -> Path:
        """A path ``predict`` reads for `item`; arrays are written under `stem` block by block."""
        if isinstance(item, (str, Path)):
            return Path(item)
        if not hasattr(item, "shape") or not hasattr(item, "dtype"):
            raise InverscopeError(f"data: got {type(item).__name__}; give a file or store path, or an array "
                                  "(numpy, Zarr, Dask)")
        shape = tuple(int(n) for n in item.shape)
        if not np.issubdtype(np.dtype(item.dtype), np.number) or np.issubdtype(np.dtype(item.dtype), np.complexfloating):
            raise InverscopeError(f"data: array of dtype {item.dtype}; give real intensities")
        four_d = self.task in ("classification", "regression", "polarization")
        if four_d and len(shape) != 4:
            raise InverscopeError(f"data: array of shape {shape}; a {self.task} model takes 4D-STEM data "
                                  "(scan rows, scan columns, ky, kx)")
        if self.task == "pacbed" and len(shape) not in (2, 4):
            raise InverscopeError(f"data: array of shape {shape}; a PACBED model takes one pattern (ky, kx) or a "
                                  "4D-STEM scan (scan rows, scan columns, ky, kx)")
        if self.task == "atoms" and len(shape) not in (2, 3):
            raise InverscopeError(f"data: array of shape {shape}; an atom-finding model takes an image (rows, "
                                  "columns) or a movie (frames, rows, columns)")
        if len(shape) == 4:
            return _write_cbed_store(item, stem.with_suffix(".zarr"))
        path = stem.with_suffix(".npy")
        block = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        step = max(1, int(2 ** 26 // max(1, np.prod(shape[1:], dtype=np.int64) * 4)))
        for i in range(0, shape[0], step):
            block[i:i + step] = np.asarray(item[i:i + step], dtype=np.float32)
        block.flush()
        del block
        return path

    def _read(self, out: Path, summary: dict, keep: bool) -> Prediction:
        import pandas as pd

        maps: dict[str, np.ndarray] = {}
        tables: dict[str, pd.DataFrame] = {}
        for key, name in (summary.get("outputs") or {}).items():
            path = out / name
            if name.endswith(".zarr"):
                maps.update(_zarr_arrays(path))
            elif name.endswith(".npz"):
                with np.load(path) as z:
                    maps.update({k: z[k] for k in z.files})
            elif name.endswith(".parquet"):
                tables[Path(name).stem] = pd.read_parquet(path)
            elif name.endswith(".csv") and not (path.with_suffix(".parquet")).is_file():
                if path.with_suffix(".json").is_file():  # PACBED: typed rows in predictions.json
                    doc = json.loads(path.with_suffix(".json").read_text())
                    tables[Path(name).stem] = pd.DataFrame(doc["rows"], columns=doc["columns"])
                else:
                    tables[Path(name).stem] = pd.read_csv(path)
        if self.task == "pacbed" and len(summary.get("sources") or []) == 1:
            maps = {k.split("/", 1)[-1]: v for k, v in maps.items()}
        pred = Prediction(kind=self.task, maps=maps, tables=tables, class_names=self.class_names, summary=summary,
                          out=out if keep else None)
        pred.units = self._units(pred)
        pred.uncertainty = self._uncertainty(pred)
        return pred

    def _units(self, pred: Prediction) -> dict[str, str]:
        units: dict[str, str] = {}
        names = [*pred.maps, *(c for t in pred.tables.values() for c in t.columns)]
        for name in names:
            base = name.split("/")[-1]
            if base in ("class_index", "class_map"):
                units[name] = "class index"
            elif base == "window_centre_index":
                units[name] = "scan position index"
            elif base.startswith("prob_") or base in ("confidence", "probability", "uncertainty", "anomaly",
                                                       "disagreement", "symmetry_score", "disc_contrast",
                                                       "library_correlation", "mirror_family_correlation",
                                                       "saturated_fraction", "saturated_fraction_network"):
                units[name] = "1"
            elif base in ("value", "std") and self.task == "regression":
                t = self.meta.get("thickness_angstrom")
                units[name] = ("1 (step depth / thickness" + (f" {float(t):.1f} Å)" if t else ")"))
            elif base in ("com_x", "com_y"):
                units[name] = "px"
            elif base in ("x", "y"):
                units[name] = "px"
            elif base == "mrad_per_px":
                units[name] = "mrad/px"
            else:
                unit = next((u for suffix, u in _UNIT_SUFFIXES if base.endswith(suffix)), None)
                if unit:
                    units[name] = unit
        return units

    def _uncertainty(self, pred: Prediction) -> dict[str, np.ndarray]:
        m, unc = pred.maps, {}
        for key in list(m):
            prefix, base = (key.rsplit("/", 1)[0] + "/", key.rsplit("/", 1)[1]) if "/" in key else ("", key)
            if base in ("class_index", "class_map") and f"{prefix}confidence" in m:
                unc[key] = (1.0 - m[f"{prefix}confidence"]).astype(np.float32)
            elif base == "value" and f"{prefix}std" in m:
                unc[key] = m[f"{prefix}std"]
            elif "_sd_" not in base:
                sd = re.sub(r"_(nm|mrad)$", r"_sd_\1", base)
                if sd != base and f"{prefix}{sd}" in m:
                    unc[key] = m[f"{prefix}{sd}"]
        for table_name, table in pred.tables.items():
            cols = set(table.columns)
            for col in table.columns:
                sd = re.sub(r"_(nm|mrad)$", r"_sd_\1", col)
                if "_sd_" not in col and sd != col and sd in cols:
                    unc[f"{table_name}/{col}"] = table[sd].to_numpy(dtype=float)
            if table_name == "atoms" and {"probability", "uncertainty"} <= cols:
                unc["atoms/probability"] = table["uncertainty"].to_numpy(dtype=float)
        return unc


def _zarr_arrays(path: Path, prefix: str = "") -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    out = {f"{prefix}{k}": np.asarray(group[k][...]) for k in sorted(group.array_keys())}
    for sub in sorted(group.group_keys()):
        out.update(_zarr_arrays(path / sub, f"{prefix}{sub}/"))
    return out


def _write_cbed_store(array, path: Path) -> Path:
    """A 4D array (rows, cols, ky, kx) as an inverscope ``cbed`` store, one scan row at a time."""
    import zarr

    rows, cols, ky, kx = (int(n) for n in array.shape)
    group = zarr.open_group(str(path), mode="w")
    arr = group.create_array("cbed", shape=(rows, cols, 1, ky, kx), chunks=(1, cols, 1, ky, kx), dtype="float32")
    for r in range(rows):
        arr[r, :, 0] = np.asarray(array[r], dtype=np.float32)
    group.attrs.update({"complete": True, "source": "array given to Model.predict"})
    return path


__all__ = ["Model", "Prediction", "KINDS"]
