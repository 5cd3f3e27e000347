"""Running the CLI in a subprocess and checking its one-line errors (shared by the study tests)."""

import os
import subprocess
import sys

import numpy as np
import pytest


def cli(*args):
    return subprocess.run([sys.executable, "-m", "inverscope.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg", "OMP_WAIT_POLICY": "PASSIVE"}, timeout=600)


def one_line_error(r):
    """The single `error: ...` line of a failed run (exit status 2)."""
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


def renders_in_chromium(html, png):
    """Open the report in headless Chromium: figures must show, down the page (required in CI)."""
    from matplotlib.image import imread

    from inverscope.report.browser import find_chromium, screenshot

    if find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (installed by .ci/run)")
        return
    img = imread(screenshot(html, png, width=1200, height=5000))[..., :3]
    coloured = (img.max(axis=-1) - img.min(axis=-1)) > 0.25      # saturated pixels: plots and maps, not text
    assert coloured.sum() > 20000, "the screenshot shows no figures"
    rows = np.flatnonzero(coloured.any(axis=1))
    assert rows.max() - rows.min() > 1500, "figures should appear down the page"
