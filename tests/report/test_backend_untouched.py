"""Library modules leave matplotlib's backend to the caller (Jupyter keeps its inline figures)."""

import subprocess
import sys

MODULES = ["inverscope.report.plots", "inverscope.report.figures", "inverscope.studies.pacbed_report",
           "inverscope.studies.recognition_imaging_report", "inverscope.studies.atom_finding_report",
           "inverscope.studies.knn_polarization_report", "inverscope.studies.ising_report",
           "inverscope.studies.pfm_report", "inverscope.studies.lao_sto_report", "inverscope.analysis.maps"]


def test_importing_report_modules_keeps_the_callers_backend():
    code = ("import importlib, matplotlib; matplotlib.use('svg'); "
            f"[importlib.import_module(m) for m in {MODULES!r}]; print(matplotlib.get_backend())")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "svg"


def test_the_command_line_selects_agg():
    code = ("import os; os.environ.pop('MPLBACKEND', None); from inverscope.cli import main; main(['info']); "
            "import matplotlib; print(os.environ['MPLBACKEND'], matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].lower() == "agg agg"
