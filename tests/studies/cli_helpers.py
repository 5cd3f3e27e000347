"""Running the CLI in a subprocess and checking its one-line errors (shared by the study tests)."""

import os
import subprocess
import sys


def cli(*args):
    return subprocess.run([sys.executable, "-m", "inverscope.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg", "OMP_WAIT_POLICY": "PASSIVE"}, timeout=600)


def one_line_error(r):
    """The single `error: ...` line of a failed run (exit status 2)."""
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]
