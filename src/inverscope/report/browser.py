"""Headless Chromium: find it and screenshot an HTML file to PNG."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from inverscope.core.errors import InverscopeError

_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """Return a Chromium executable, or ``None``.

    Checks the ``INVERSCOPE_CHROMIUM`` environment variable first, then ``PATH``
    for ``chromium``, ``chromium-browser`` and ``google-chrome``.

    Returns
    -------
    str or None
        Path of the executable.
    """
    env = os.environ.get("INVERSCOPE_CHROMIUM")
    if env:
        return shutil.which(env) or (env if Path(env).is_file() else None)
    return next((p for p in map(shutil.which, _NAMES) if p), None)


def _command(exe: str, html: Path, png: Path, width: int, height: int, profile: str) -> list[str]:
    """Return the headless Chromium command line for one screenshot."""
    return [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={width},{height}",
        f"--screenshot={png}", html.as_uri(),
    ]


def screenshot(html_path: str | os.PathLike, png_path: str | os.PathLike, width: int = 1280,
               height: int = 4000, timeout_s: float = 60) -> Path:
    """Render `html_path` in headless Chromium and save a PNG screenshot.

    Parameters
    ----------
    html_path : str or os.PathLike
        HTML file to render.
    png_path : str or os.PathLike
        Where the PNG goes (overwritten).
    width, height : int
        Window size in CSS pixels.
    timeout_s : float
        Give up after this many seconds.

    Returns
    -------
    Path
        `png_path`.

    Raises
    ------
    InverscopeError
        If Chromium is missing, fails, times out or writes no PNG.
    """
    exe = find_chromium()
    if exe is None:
        raise InverscopeError("chromium: not found; install chromium or set INVERSCOPE_CHROMIUM")
    html, png = Path(html_path).resolve(), Path(png_path).resolve()
    if not html.is_file():
        raise InverscopeError(f"screenshot: HTML file {str(html)!r} does not exist")
    png.unlink(missing_ok=True)
    profile = tempfile.mkdtemp(prefix="inverscope-chromium-")
    try:
        proc = subprocess.run(_command(exe, html, png, width, height, profile),
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise InverscopeError(f"chromium: screenshot of {html.name} timed out after {timeout_s} s") from None
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if proc.returncode != 0 or not png.is_file() or png.stat().st_size == 0:
        tail = (proc.stderr.strip().splitlines() or ["no error output"])[-1][:300]
        raise InverscopeError(f"chromium: no screenshot of {html.name} (exit {proc.returncode}): {tail}")
    return png
