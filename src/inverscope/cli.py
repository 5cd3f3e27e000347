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


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


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
             quiet: bool = typer.Option(False, "--quiet", help="no progress bar")) -> None:
    """Simulate a 4D-STEM dataset (multislice CBED) into OUT/cbed.zarr, montage.png and summary.json."""
    from inverscope.core.config import load_yaml
    from inverscope.studies.simulate4d import SimulateConfig, run_simulation

    try:
        cfg = load_yaml(config, SimulateConfig)
        with _LazyProgress("multislice", quiet) as progress:
            summary = run_simulation(cfg, out, progress=progress, config_text=config.read_text())
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


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
