"""The `inverscope` command line: calls studies and layers, no logic of its own.

Errors a user can cause print one line (no traceback) and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from inverscope.core.errors import InverscopeError

app = typer.Typer(help="inverscope: learn to read structure out of microscopy data.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)


def _error_line(text: object) -> None:
    """Print `text` as the one `error:` line; user text (paths, values) is never read as rich markup."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(str(text))}", highlight=False, soft_wrap=True)


def _fail(err: Exception) -> None:
    _error_line(err)
    raise typer.Exit(code=2)


def _os_message(err: OSError) -> str:
    """One line for an operating-system error: the path, what went wrong, what to do."""
    import errno

    where = f"{err.filename}: " if err.filename else ""
    hint = {errno.ENOSPC: "the disk is full; free space and rerun (finished work is kept and resumed)",
            errno.EDQUOT: "the disk quota is exhausted; free space and rerun (finished work is kept and resumed)",
            errno.EACCES: "permission denied; choose a location you can write",
            errno.EROFS: "the file system is read-only; choose another --out",
            errno.ENOENT: "no such file or directory"}.get(err.errno, err.strerror or str(err))
    return f"{where}{hint}"


NO_RESOURCE_CHECK = typer.Option(False, "--no-resource-check",
                                 help="start even when the memory or disk estimate exceeds what this machine has")


@app.command()
def info() -> None:
    """Versions, threads and CUDA devices of this machine."""
    from inverscope.core.device import machine_info

    for key, value in machine_info().items():
        typer.echo(f"{key:16s} {value}")


class _LazyProgress:
    """A rich progress bar that appears with the first update, so a job that fails
    validation prints only its one-line error."""

    def __init__(self, description: str, quiet: bool):
        self.description, self.quiet = description, quiet
        self.bar: Progress | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(), console=console)
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=total)
        self.bar.update(self.task, completed=done, total=total)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


@app.command()
def simulate(config: Path = typer.Argument(..., help="YAML config of the 4D-STEM simulation"),
             out: Path = typer.Option(..., "--out", "-o", help="output directory"),
             quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
             no_resource_check: bool = NO_RESOURCE_CHECK) -> None:
    """Simulate a 4D-STEM dataset (multislice CBED) into OUT/cbed.zarr, montage.png and summary.json."""
    from inverscope.core.config import load_yaml
    from inverscope.studies.simulate4d import SimulateConfig, run_simulation

    try:
        cfg = load_yaml(config, SimulateConfig)
        with _LazyProgress("multislice", quiet) as progress:
            summary = run_simulation(cfg, out, progress=progress, config_text=config.read_text(),
                                     check_resources=not no_resource_check)
    except InverscopeError as err:
        _fail(err)
    console.print(f"wrote {out}/cbed.zarr {tuple(summary['shape'])}, {out}/montage.png, {out}/summary.json "
                  f"({summary['seconds_per_pattern'] * 1e3:.1f} ms per pattern)")


@app.command()
def demo(out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="output directory"),
         quiet: bool = typer.Option(False, "--quiet", help="no progress bar")) -> None:
    """The main job on its built-in default (recipes/srtio3_demo.yaml): a small SrTiO3 4D-STEM dataset."""
    from inverscope.studies.simulate4d import demo_config, run_simulation

    try:
        with _LazyProgress("multislice", quiet) as progress:
            summary = run_simulation(demo_config(), out, progress=progress)
    except InverscopeError as err:
        _fail(err)
    console.print(f"wrote {out}/cbed.zarr {tuple(summary['shape'])}, {out}/montage.png, {out}/summary.json "
                  f"({summary['seconds_per_pattern'] * 1e3:.1f} ms per pattern)")


@app.command()
def inspect(store: Path = typer.Argument(..., help="a cbed.zarr written by `inverscope simulate`")) -> None:
    """Print the shape, calibration and provenance of a CBED Zarr store."""
    from inverscope.datasets.store import open_cbed

    try:
        arr, attrs = open_cbed(store)
    except InverscopeError as err:
        _fail(err)
    typer.echo(json.dumps({"shape": list(arr.shape), "chunks": list(arr.chunks), "complete": attrs.get("complete"),
                           "calibration": attrs.get("calibration")}, indent=2))


def _read_mapping(path: Path) -> dict:
    from inverscope.core.config import read_yaml_mapping

    return read_yaml_mapping(path)


class _StageProgress:
    """One lazily created progress bar per named stage."""

    def __init__(self, quiet: bool):
        self.quiet, self.bars = quiet, {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.bars:
            self.bars[stage] = _LazyProgress(stage, self.quiet)
        self.bars[stage](done, total)
        if done >= total:
            self.bars[stage].__exit__()


@app.command()
def run(recipe: Path = typer.Argument(..., help="YAML recipe of a study (see recipes/)"),
        out: Path = typer.Option(..., "--out", "-o", help="output directory (resumes a campaign already there)"),
        scheduler: Optional[str] = typer.Option(None, "--scheduler", help="address of an existing Dask scheduler"),
        workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Dask LocalCluster worker processes (0: in-process)"),
        devices: Optional[str] = typer.Option(None, "--devices", help="Lightning devices per node (DDP when > 1)"),
        num_nodes: Optional[int] = typer.Option(None, "--num-nodes", min=1, help="Lightning nodes (DDP)"),
        data_file: Optional[Path] = typer.Option(None, "--data", help="your own data file (spectroscopy studies)"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
        no_resource_check: bool = NO_RESOURCE_CHECK) -> None:
    """Run a study end to end (simulate or load, train, evaluate, report): OUT/report.html and OUT/metrics.json.

    The recipe's `study` key picks the study (inverscope.studies.STUDIES); options a study
    does not use are refused.
    """
    from inverscope.studies import RunOptions, load_recipe, study_module

    try:
        cfg = load_recipe(recipe)
        name = cfg.study
        mod = study_module(name)
        options = RunOptions(data_file=None if data_file is None else str(data_file), scheduler=scheduler,
                             workers=workers, devices=devices, num_nodes=num_nodes, quiet=quiet,
                             check_resources=not no_resource_check)
        options.refuse_unused(name, mod.OPTIONS)
        metrics = mod.run_study(cfg, out, data_file=options.data_file, progress=_StageProgress(quiet), options=options,
                                log=(lambda m: None) if quiet else (lambda m: console.print(f"[bold]>[/] {m}", soft_wrap=True)))
    except InverscopeError as err:
        _fail(err)
    console.print(f"wrote {out}/report.html and {out}/metrics.json ({mod.summary(metrics)})", soft_wrap=True)


@app.command()
def campaign(config: Path = typer.Argument(..., help="campaign YAML, or a study recipe with a `campaign:` section"),
             out: Path = typer.Option(..., "--out", "-o", help="Zarr store to create or resume"),
             scheduler: Optional[str] = typer.Option(None, "--scheduler", help="address of an existing Dask scheduler"),
             workers: int = typer.Option(0, "--workers", min=0, help="Dask LocalCluster worker processes (0: in-process)"),
             quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
             no_resource_check: bool = NO_RESOURCE_CHECK) -> None:
    """Simulate a campaign into a resumable Zarr store (interrupt and rerun to resume).

    The config's `kind` picks the job (a LAO/STO campaign by default, `pacbed_library`, or `polar_4d`).
    A rerun verifies every item already stored and simulates damaged or missing ones again.
    """
    from inverscope.core.config import validate
    from inverscope.datasets.jobs import DEFAULT_KIND, job_classes
    from inverscope.datasets.jobstore import run_store_job

    try:
        data = _read_mapping(config)
        section = data.get("campaign", data)
        if not isinstance(section, dict):
            raise InverscopeError(f"{config}: campaign: expected a mapping of keys to values")
        try:
            config_cls, job_cls = job_classes(section.get("kind", DEFAULT_KIND))
        except InverscopeError as err:
            raise InverscopeError(f"{config}: {err}") from None
        job = job_cls(validate(config_cls, section, str(config)))
        with _LazyProgress("simulate", quiet) as progress:
            stats = run_store_job(job, out, scheduler=scheduler, n_workers=workers, progress=progress,
                                  check_resources=not no_resource_check,
                                  log=None if quiet else (lambda m: console.print(f"[bold]>[/] {m}", soft_wrap=True)))
    except InverscopeError as err:
        _fail(err)
    repaired = f", {len(stats['repaired'])} of them damaged and simulated again" if stats["repaired"] else ""
    console.print(f"wrote {out}: {stats['simulated']} {job.item}s simulated{repaired}, {stats['skipped']} already "
                  f"there and verified ({stats['wall_s']:.1f} s)", soft_wrap=True)


@app.command()
def predict(model: Path = typer.Argument(..., help="model (NAME.safetensors with NAME.json beside it)"),
            data: list[Path] = typer.Argument(..., help="stack models: one 4D-STEM dataset (a cbed.zarr, a campaign "
                                              "store, or any file rosettasciio reads); PACBED models: image files "
                                              "(png, jpg, tif, npy; one pattern each) and/or 4D-STEM files"),
            out: Path = typer.Option(..., "--out", "-o", help="new output directory"),
            semiangle_mrad: Optional[float] = typer.Option(None, "--semiangle-mrad",
                                                           help="PACBED: the data's convergence semiangle in mrad; "
                                                           "refused unless it is the model's"),
            energy_kev: Optional[float] = typer.Option(None, "--energy-kev", help="PACBED: the data's voltage in kV; "
                                                       "refused unless it is the model's"),
            mrad_per_px: Optional[float] = typer.Option(None, "--mrad-per-px", help="PACBED: camera calibration "
                                                        "in mrad/px (default: from the disc radius)"),
            window: Optional[int] = typer.Option(None, "--window", min=1, help="PACBED, 4D-STEM files: scan positions "
                                                 "per side averaged into one PACBED; windows tile the scan (default 8)"),
            library: Optional[Path] = typer.Option(None, "--library", help="PACBED: the study's library.zarr, to show "
                                                   "the simulated pattern at each prediction"),
            disc_radius_px: Optional[tuple[float, float]] = typer.Option(None, "--disc-radius-px",
                                                                         help="PACBED: allowed disc radius MIN MAX in px"),
            axis: Optional[int] = typer.Option(None, "--axis", help="stack models: scan axis the probe-position stacks "
                                               "run along (default 1)"),
            stride: Optional[int] = typer.Option(None, "--stride", min=1, help="stack models: step between windows "
                                                 "in scan positions (default 1)"),
            chunk_rows: Optional[int] = typer.Option(None, "--chunk-rows", min=1, help="stack models: scan rows read at "
                                                     "a time (bounds memory; default 8)"),
            bin_factor: Optional[int] = typer.Option(None, "--bin", min=1, help="stack models: bin detector pixels by "
                                                     "this factor first (default 1)"),
            crop: Optional[int] = typer.Option(None, "--crop", min=1, help="polarization models: keep the centred "
                                               "N x N detector px (after --bin); N must be the model's pattern side"),
            sampling_mrad: Optional[float] = typer.Option(None, "--sampling-mrad", help="stack and polarization "
                                                          "models: the data's detector pixel size in mrad/px (one "
                                                          "value: square pixels; overrides the file's calibration). "
                                                          "Patterns whose sampling (this or the file's, after --bin) "
                                                          "differs from the model's are resampled by angle onto the "
                                                          "model's pixels (summed when coarser, bilinear when finer)"),
            thickness_index: Optional[int] = typer.Option(None, "--thickness-index",
                                                          help="thickness of a simulated store (default: the last)"),
            mc_dropout: Optional[int] = typer.Option(None, "--mc-dropout", min=0, help="stochastic passes for the "
                                                     "uncertainty (default 0 for stack models, 16 for PACBED)"),
            pixel_size: Optional[float] = typer.Option(None, "--pixel-size", help="atom-finding models: pixel size in "
                                                       "Å/px (overrides the files' calibration)"),
            classes: Optional[str] = typer.Option(None, "--classes", help="atom-finding models: keep only these "
                                                  "classes (comma-separated names)"),
            device: Optional[str] = typer.Option(None, "--device", help="stack models: cpu, cuda, cuda:1, ..."),
            quiet: bool = typer.Option(False, "--quiet", help="no progress bar")) -> None:
    """Apply a trained model: a stack model maps one 4D-STEM dataset in chunks (descriptor maps with
    per-position confidence); a PACBED model reads thickness and tilt from image files and 4D-STEM scans.

    4D-STEM data recorded at another detector sampling than the model's (the file's calibration or
    --sampling-mrad) are resampled by angle to the model's mrad/px and pattern size; summary.json
    records it under "resampled". Without a known sampling the patterns must fit the model after
    --bin (and --crop)."""
    from inverscope.analysis.maps import describe_resampling, predict_files

    try:
        with _LazyProgress("predict", quiet) as progress:
            summary = predict_files(model, data, out, progress=progress, semiangle_mrad=semiangle_mrad,
                                    energy_kev=energy_kev, mrad_per_px=mrad_per_px, window=window, library=library,
                                    disc_radius_px=disc_radius_px, axis=axis, stride=stride, chunk_rows=chunk_rows,
                                    bin_factor=bin_factor, crop=crop, thickness_index=thickness_index,
                                    mc_dropout=mc_dropout, pixel_size=pixel_size, classes=classes, device=device,
                                    sampling_mrad=sampling_mrad)
    except InverscopeError as err:
        _fail(err)
    if summary.get("resampled"):
        console.print(describe_resampling(summary["resampled"]), soft_wrap=True, highlight=False)
    wall = summary.get("wall_s", (summary.get("timings_s") or {}).get("total", 0.0))
    written = ", ".join(f"{out}/{name}" for name in [*summary["outputs"].values(), "summary.json"])
    console.print(f"wrote {written} ({wall:.1f} s)", soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Console entry: every error a user can cause ends as one `error:` line and exit status 2.

    Usage errors (a missing argument, a value out of range), typed inverscope errors and
    operating-system errors (read-only or full disk, permissions) print one line and no
    traceback; library warnings are silenced so nothing prints before that line. Set
    ``INVERSCOPE_DEBUG=1`` to see tracebacks of operating-system errors.
    """
    import os
    import warnings

    # the command line only writes figures to files: no GUI backend, even with a display (library
    # modules leave the backend alone, so figures stay inline in Jupyter)
    os.environ["MPLBACKEND"] = "Agg"
    try:  # typer >= 0.20 vendors click; older versions use click itself
        from typer._click.exceptions import NoArgsIsHelpError
    except ImportError:  # pragma: no cover
        from click.exceptions import NoArgsIsHelpError
    usage_errors = (typer.TyperException,)
    try:
        import click

        usage_errors += (click.ClickException,)
    except ImportError:  # pragma: no cover
        pass
    if not os.environ.get("INVERSCOPE_DEBUG"):
        for module in ("zarr", "numcodecs", "dask", "distributed", "lightning", "torch"):
            warnings.filterwarnings("ignore", module=module)
    try:
        code = app(args=argv, standalone_mode=False, prog_name="inverscope")
    except NoArgsIsHelpError as err:
        console.print(err.ctx.get_help() if getattr(err, "ctx", None) else str(err), highlight=False, soft_wrap=True)
        return 0
    except usage_errors as err:  # usage errors: bad options, missing arguments, out-of-range values
        _error_line(' '.join(err.format_message().split()))
        return 2
    except (typer.Abort, KeyboardInterrupt):
        console.print("[bold red]error:[/] interrupted", highlight=False)
        return 130
    except InverscopeError as err:
        _error_line(err)
        return 2
    except OSError as err:
        if os.environ.get("INVERSCOPE_DEBUG"):
            raise
        _error_line(_os_message(err))
        return 2
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
