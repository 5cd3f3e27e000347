"""Descriptor maps: slide a trained stack network along the scan of 4D-STEM data.

A window is ``P`` consecutive probe positions along one scan axis (the model's
``input.positions``); windows start every ``stride`` positions, and each window's
prediction is stored at its **start** position: map column ``j`` (``axis=1``) holds the
window covering scan columns ``j * stride ... j * stride + P - 1``; its centre is
``window_centre_index[j]`` (a scan index, possibly half-integer).

Data are read ``chunk_rows`` scan lines at a time, so memory is bounded by about
``chunk_rows * N * ky * kx * (P + 1)`` floats whatever the size of the scan.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from inverscope.analysis.inference import check_finite, check_stack_shape, expected_stack_shape, predict_stacks
from inverscope.core.errors import InverscopeError


def bin_patterns(x: np.ndarray, factor: int) -> np.ndarray:
    """Sum `factor` x `factor` detector pixel blocks of the last two axes, cropping the remainder symmetrically."""
    f = int(factor)
    if f < 1:
        raise InverscopeError(f"bin: got {factor}; must be a positive integer")
    if f == 1:
        return x
    ky, kx = x.shape[-2:]
    ny, nx = ky // f, kx // f
    if ny == 0 or nx == 0:
        raise InverscopeError(f"bin: got {f}; larger than the detector patterns ({ky} x {kx})")
    y0, x0 = (ky - ny * f) // 2, (kx - nx * f) // 2
    x = x[..., y0:y0 + ny * f, x0:x0 + nx * f]
    return x.reshape(*x.shape[:-2], ny, f, nx, f).sum(axis=(-3, -1))


def _read(data, index, source: str, what: str) -> np.ndarray:
    try:
        return np.asarray(data[index], dtype=np.float32)
    except InverscopeError:
        raise
    except Exception as err:  # zarr / h5py / codecs raise many types on truncated data
        raise InverscopeError(f"{source}: could not read {what} ({type(err).__name__}); the data may be truncated") from None


def _map_names(meta: dict) -> list[str]:
    if meta.get("task") == "regression":
        return ["value", "std"]
    names = meta.get("class_names") or [f"class_{i}" for i in range(int(meta.get("config", {}).get("num_outputs", 2)))]
    return ["class_index", "confidence", *(f"prob_{n}" for n in names)]


def _flat_outputs(pred: dict, meta: dict) -> dict[str, np.ndarray]:
    if "value" in pred:
        return {"value": pred["value"], "std": pred["std"]}
    names = _map_names(meta)[2:]
    out = {"class_index": pred["class_index"], "confidence": pred["confidence"]}
    out.update({n: pred["probabilities"][:, i] for i, n in enumerate(names)})
    return out


def _empty(names: list[str], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {n: np.full(shape, -1, np.int64) if n == "class_index" else np.full(shape, np.nan, np.float32) for n in names}


def descriptor_maps(net: torch.nn.Module, meta: dict, data4d, axis: int = 1, stride: int = 1, chunk_rows: int = 8,
                    bin_factor: int = 1, mc_dropout: int = 0, device: str | torch.device = "cpu",
                    batch_size: int = 256, seed: int = 0, source: str = "data") -> dict[str, np.ndarray]:
    """Maps of the network's descriptors over a scan.

    Parameters
    ----------
    net, meta
        The model and its metadata (:func:`inverscope.models.io.load_model`).
    data4d : array-like, shape (Ny, Nx, ky, kx)
        Lazy (Zarr, Dask, h5py) or in-memory 4D-STEM data.
    axis : int
        Scan axis the windows run along: 1 = along each row, 0 = along each column.
    stride : int
        Step between window starts [scan positions].
    chunk_rows : int
        Scan lines (rows for ``axis=1``, columns for ``axis=0``) read at a time.
    bin_factor : int
        Integer detector binning applied before the shape check.
    mc_dropout, device, batch_size, seed
        As in :func:`inverscope.analysis.inference.predict_stacks`; block ``b`` uses seed ``seed + b``.
    source : str
        Name of the data in error messages.

    Returns
    -------
    dict
        One map per descriptor, shape (Ny, n_windows) for ``axis=1`` or (n_windows, Nx) for
        ``axis=0``, each value at its window's start; classification: ``class_index``,
        ``confidence``, ``prob_<name>``; regression: ``value``, ``std``. Also
        ``window_centre_index`` (n_windows,), the scan index of each window's centre.
    """
    if len(getattr(data4d, "shape", ())) != 4:
        raise InverscopeError(f"{source}: expected 4D data (scan_y, scan_x, ky, kx), got shape {getattr(data4d, 'shape', None)}")
    if axis not in (0, 1) or stride < 1 or chunk_rows < 1:
        raise InverscopeError(f"axis must be 0 or 1, stride and chunk_rows >= 1 (got {axis}, {stride}, {chunk_rows})")
    f = int(bin_factor)
    ny_k, nx_k = data4d.shape[-2:]
    p = expected_stack_shape(meta)[0]
    length, n_lines = data4d.shape[axis], data4d.shape[1 - axis]
    check_stack_shape((p, *bin_patterns(np.zeros((ny_k, nx_k), np.float32), f).shape), meta)
    if length < p:
        raise InverscopeError(f"{source}: {length} scan positions along axis {axis}, fewer than the model's {p} positions per stack")
    starts = np.arange(0, length - p + 1, stride)
    names = _map_names(meta)
    maps = _empty(names, (n_lines, starts.size))
    for b, l0 in enumerate(range(0, n_lines, chunk_rows)):
        l1 = min(l0 + chunk_rows, n_lines)
        index = (slice(l0, l1),) if axis == 1 else (slice(None), slice(l0, l1))
        block = _read(data4d, index, source, f"scan lines {l0}-{l1 - 1}")
        block = bin_patterns(block if axis == 1 else block.transpose(1, 0, 2, 3), f)  # (lines, length, ky, kx)
        check_finite(block, f"{source}, scan lines {l0}-{l1 - 1}")
        win = np.lib.stride_tricks.sliding_window_view(block, p, axis=1)[:, starts]  # (lines, nw, ky, kx, P)
        stacks = np.moveaxis(win, -1, 2).reshape(-1, p, *block.shape[-2:])
        pred = predict_stacks(net, meta, stacks, batch_size, mc_dropout, device, seed + b)
        for name, values in _flat_outputs(pred, meta).items():
            maps[name][l0:l1] = values.reshape(l1 - l0, starts.size)
    out = {k: (v if axis == 1 else v.T) for k, v in maps.items()}
    out["window_centre_index"] = starts + (p - 1) / 2
    return out


def stack_descriptors(net, meta: dict, four, chunk_stacks: int = 256, bin_factor: int = 1, mc_dropout: int = 0,
                      device="cpu", batch_size: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Descriptors of every valid stack of a campaign :class:`~inverscope.datasets.io.FourD`, shaped ``index_shape``."""
    data = four.data
    n = data.shape[0]
    check_stack_shape((data.shape[1], *bin_patterns(np.zeros(data.shape[-2:], np.float32), bin_factor).shape), meta)
    valid = np.ones(n, bool) if four.valid is None else four.valid
    maps = _empty(_map_names(meta), (n,))
    for b, i0 in enumerate(range(0, n, chunk_stacks)):
        i1 = min(i0 + chunk_stacks, n)
        keep = valid[i0:i1]
        if not keep.any():
            continue
        block = bin_patterns(_read(data, slice(i0, i1), four.source, f"stacks {i0}-{i1 - 1}")[keep], bin_factor)
        pred = predict_stacks(net, meta, block, batch_size, mc_dropout, device, seed + b)
        for name, values in _flat_outputs(pred, meta).items():
            maps[name][i0:i1][keep] = values
    shape = four.index_shape or (n,)
    return {k: v.reshape(shape) for k, v in maps.items()}


# --------------------------------------------------------------------------- outputs
def _plot_maps(path: Path, maps: dict[str, np.ndarray], title: str, class_names: list[str], labels: tuple[str, str]) -> None:
    import matplotlib.pyplot as plt

    from inverscope.report.figures import save_figure

    names = [k for k, v in maps.items() if v.ndim >= 2 and (v.dtype.kind != "f" or np.isfinite(v).any())]
    ncols = min(3, max(1, len(names)))
    nrows = max(1, -(-len(names) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        img = maps[name].reshape(maps[name].shape[0], -1).astype(float)
        if name == "class_index":
            n = max(1, len(class_names))
            im = ax.imshow(np.where(img < 0, np.nan, img), cmap=plt.get_cmap("tab10", n), vmin=-0.5, vmax=n - 0.5,
                           aspect="auto", interpolation="nearest")
            bar = fig.colorbar(im, ax=ax, shrink=0.85, ticks=range(n))
            bar.ax.set_yticklabels(class_names, fontsize=7)
        else:
            im = ax.imshow(img, cmap="viridis", aspect="auto", interpolation="nearest")
            fig.colorbar(im, ax=ax, shrink=0.85)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(labels[0], fontsize=7)
        ax.set_xlabel(labels[1], fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def _stats(maps: dict[str, np.ndarray], meta: dict, four) -> dict:
    if meta.get("task") == "regression":
        v = maps["value"][np.isfinite(maps["value"])]
        s = maps["std"][np.isfinite(maps["std"])]
        return {"value": {k: float(fn(v)) if v.size else None for k, fn in (("min", np.min), ("mean", np.mean), ("max", np.max))},
                "std_mean": float(s.mean()) if s.size else None}
    ci = maps["class_index"].ravel()
    names = _map_names(meta)[2:]
    ok = ci >= 0
    out = {"class_fractions": {n[5:]: float(np.mean(ci[ok] == i)) if ok.any() else None for i, n in enumerate(names)},
           "mean_confidence": float(np.nanmean(maps["confidence"])) if ok.any() else None}
    if four.labels is not None:
        known = ok & (four.labels >= 0)
        out["accuracy_vs_labels"] = float(np.mean(ci[known] == four.labels[known])) if known.any() else None
    return out


def predict_to_dir(model_path, data_path, out_dir, axis: int = 1, stride: int = 1, chunk_rows: int = 8,
                   bin_factor: int = 1, thickness_index: int = -1, mc_dropout: int = 0, device: str = "cpu",
                   batch_size: int = 256, seed: int = 0) -> dict:
    """Predict descriptor maps of the data at `data_path` with the model at `model_path` into `out_dir`.

    Writes ``descriptors.zarr`` (one array per map; attributes: model summary, source,
    settings), ``maps.png`` and ``summary.json`` into `out_dir`, all or nothing. A campaign
    store is predicted stack by stack (maps of shape (N, lines, thicknesses)). `out_dir`
    must not exist or be empty. Returns the summary.
    """
    import zarr

    from inverscope.core.device import resolve_device
    from inverscope.core.io import check_output_path, staged_output, write_json_atomic
    from inverscope.datasets.io import open_4dstem
    from inverscope.models.io import load_model

    if axis not in (0, 1):
        raise InverscopeError(f"axis: got {axis}; allowed: 0 or 1 (the scan axis the probe-position stacks run along)")
    out_dir = Path(out_dir)
    check_output_path(out_dir, must_be_empty=True)  # a bad --out is found before the model and data load
    dev = resolve_device(device)
    net, meta = load_model(model_path, device=str(dev))
    if meta.get("architecture") != "stack_cnn3d":
        raise InverscopeError(f"{model_path}: a {meta.get('architecture')} model (task {meta.get('task')!r}); predict "
                              "applies 4D-STEM stack models (stack_cnn3d, as trained by the lao_sto study)")
    four = open_4dstem(data_path, thickness_index)
    t0 = time.perf_counter()
    if four.stacks:
        maps = stack_descriptors(net, meta, four, chunk_rows * 32, bin_factor, mc_dropout, dev, batch_size, seed)
    else:
        maps = descriptor_maps(net, meta, four.data, axis, stride, chunk_rows, bin_factor, mc_dropout, dev,
                               batch_size, seed, four.source)
    wall = time.perf_counter() - t0
    warnings = []
    want = (meta.get("input") or {}).get("sampling_mrad")
    if four.sampling_mrad and want:
        got = [s * bin_factor for s in four.sampling_mrad]
        if not np.allclose(got, want, rtol=0.02):
            warnings.append(f"detector sampling {got} mrad (after binning) differs from the model's {want} mrad")
    settings = {"axis": axis, "stride": stride, "bin_factor": bin_factor, "thickness_index": thickness_index,
                "mc_dropout": mc_dropout, "seed": seed, "window_value_at": "window start"}
    model = {"path": str(model_path), "task": meta.get("task"), "architecture": meta.get("architecture"),
             "class_names": meta.get("class_names"), "input": meta.get("input")}
    summary = {"outputs": {"descriptors": "descriptors.zarr", "maps": "maps.png"}, "source": four.source,
               "data_shape": list(four.data.shape), "stacks": four.stacks, "model": model, "settings": settings,
               "maps": {k: list(v.shape) for k, v in maps.items()}, **_stats(maps, meta, four),
               "wall_s": wall, "warnings": warnings}
    with staged_output(out_dir) as stage:
        group = zarr.open_group(str(stage / "descriptors.zarr"), mode="w")
        for name, values in maps.items():
            group.create_array(name, data=np.ascontiguousarray(values))
        group.attrs.update({"model": model, "source": four.source, "settings": settings,
                            "sampling_mrad": list(four.sampling_mrad) if four.sampling_mrad else None})
        _plot_maps(stage / "maps.png", {k: v for k, v in maps.items() if k != "window_centre_index"},
                   f"{Path(str(model_path)).name} on {Path(str(data_path)).name}", [n[5:] for n in _map_names(meta)[2:]],
                   ("sample", "line x thickness") if four.stacks else
                   (("scan row", "window start (scan column)") if axis == 1 else ("window start (scan row)", "scan column")))
        write_json_atomic(stage / "summary.json", summary)
    return summary


#: options of ``inverscope predict`` for stack models, with their defaults (None in :func:`predict_files`: not given)
STACK_OPTIONS = {"axis": 1, "stride": 1, "chunk_rows": 8, "bin_factor": 1, "thickness_index": -1, "mc_dropout": 0,
                 "device": "cpu"}
#: the command-line flag of each option, for messages
FLAGS = {"axis": "--axis", "stride": "--stride", "chunk_rows": "--chunk-rows", "bin_factor": "--bin",
         "thickness_index": "--thickness-index", "mc_dropout": "--mc-dropout", "device": "--device",
         "semiangle_mrad": "--semiangle-mrad", "energy_kev": "--energy-kev", "mrad_per_px": "--mrad-per-px",
         "window": "--window", "library": "--library", "disc_radius_px": "--disc-radius-px", "crop": "--crop",
         "pixel_size": "--pixel-size", "classes": "--classes"}


def predict_files(model_path, data_paths, out_dir, *, progress=None, **options) -> dict:
    """``inverscope predict``: dispatch on the model's task; options given as None were not given.

    A PACBED model (task ``pacbed``) reads any number of image and 4D-STEM files
    (:func:`inverscope.analysis.pacbed_predict.predict_pacbed`); a polarization model (task
    ``polarization``) maps one 4D-STEM scan or polar 4D-STEM store
    (:func:`inverscope.analysis.polar_predict.predict_polarization`); any other model is a stack model that
    maps one 4D-STEM dataset (:func:`predict_to_dir`); an atom-finding model (task ``atoms``) finds atoms in
    any number of images and movies (:func:`inverscope.analysis.atom_predict.predict_atoms`). Options the
    model's kind does not use are refused.
    """
    from inverscope.core.io import check_output_path
    from inverscope.models.io import load_metadata

    check_output_path(out_dir, must_be_empty=True)  # a bad --out is found before the model and data load
    meta = load_metadata(model_path)
    given = {k: v for k, v in options.items() if v is not None}
    if meta.get("task") == "pacbed":
        from inverscope.analysis.pacbed_predict import PACBED_OPTIONS, predict_pacbed

        _refuse(given, PACBED_OPTIONS, f"a PACBED model ({model_path})")
        return predict_pacbed(model_path, list(data_paths), out_dir, progress=progress, **given)
    if meta.get("task") == "polarization":
        from inverscope.analysis.polar_predict import POLAR_OPTIONS, predict_polarization

        _refuse(given, POLAR_OPTIONS, f"a polarization model ({model_path})")
        if len(data_paths) != 1:
            raise InverscopeError(f"DATA: got {len(data_paths)} files; a polarization model ({model_path}) maps one "
                                  "4D-STEM dataset per run: give one file, or run predict once per file")
        return predict_polarization(model_path, data_paths[0], out_dir, progress=progress, **given)
    if meta.get("task") == "atoms":
        from inverscope.analysis.atom_predict import ATOM_OPTIONS, predict_atoms

        _refuse(given, ATOM_OPTIONS, f"an atom-finding model ({model_path})")
        return predict_atoms(model_path, list(data_paths), out_dir, progress=progress, **given)
    _refuse(given, STACK_OPTIONS, f"a {meta.get('architecture')} model of task {meta.get('task')!r} ({model_path})")
    if len(data_paths) != 1:
        raise InverscopeError(f"DATA: got {len(data_paths)} files; a {meta.get('architecture')} model "
                              f"({model_path}) maps one 4D-STEM dataset per run: give one file, or run predict once per file")
    return predict_to_dir(model_path, data_paths[0], out_dir, **{**STACK_OPTIONS, **given})


def _refuse(given: dict, allowed, what: str) -> None:
    unused = [k for k in given if k not in allowed]
    if unused:
        raise InverscopeError(f"{FLAGS.get(unused[0], unused[0])}: not used by {what}; drop it")


__all__ = ["bin_patterns", "descriptor_maps", "stack_descriptors", "predict_to_dir", "predict_files"]
