"""The docs site's generated pages (docs/hooks.py) and its configuration (mkdocs.yml).

The Markdown generators need only inverscope; the checks of the mkdocs configuration and of
the tutorial execution settings need the docs extra (``pip install -e ".[docs]"``) and are
skipped without it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = [
    "01_simulate_your_own_structure.py", "02_lao_sto.py", "03_pacbed.py", "04_atom_finding.py",
    "05_pfm_switching.py", "06_ising_recognition.py", "07_recognition_imaging.py",
    "08_knn_polarization.py", "09_apply_a_model_to_your_own_file.py", "10_scale_out.py",
]


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("inverscope_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section(text: str, command: str) -> str:
    return text.split(f"## `inverscope {command}`")[1].split("\n## ")[0]


def test_cli_reference_lists_every_command_and_option(hooks):
    import typer

    from inverscope.cli import app

    text = hooks.cli_reference()
    root = typer.main.get_command(app)
    assert set(root.commands) >= {"info", "simulate", "demo", "inspect", "run", "campaign", "predict"}
    for name, cmd in root.commands.items():
        assert f"## `inverscope {name}`" in text, name
        assert f"(#inverscope-{name})" in text, name          # the table of commands links to it
        section = _section(text, name)
        assert f"Usage: inverscope {name}" in section, name
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        assert len(rows) == sum(not getattr(p, "hidden", False) for p in cmd.params), name
        for param in cmd.params:
            if param.param_type_name == "option":
                for opt in param.opts:
                    assert any(opt in row.split("|")[1].strip(" `").replace(",", " ").split() for row in rows), (name, opt)
            else:
                assert any(row.startswith(f"| `{param.name}") for row in rows), (name, param.name)
            if param.help:
                assert param.help.split()[0] in section, (name, param.name)


def test_cli_reference_of_predict_in_detail(hooks):
    import typer

    from inverscope.cli import app

    predict = typer.main.get_command(app).commands["predict"]
    section = _section(hooks.cli_reference(), "predict")
    options = [p for p in predict.params if p.param_type_name == "option"]
    assert {"--out", "--bin", "--crop", "--sampling-mrad", "--mc-dropout", "--pixel-size", "--device"} <= {
        o for p in options for o in p.opts}
    for param in options:
        row = next(line for line in section.splitlines() if line.startswith(f"| `{param.opts[-1]}")
                   or line.startswith(f"| `{param.opts[0]}") or f", {param.opts[0]} " in line)
        assert _clean(param.help) in _clean(row), param.name
    assert "| `-o, --out <path>` | new output directory  [required] |" in section
    assert "[x>=1]" in next(line for line in section.splitlines() if "--window" in line)    # ranges are shown
    assert "required" in next(line for line in section.splitlines() if line.startswith("| `model"))


def _clean(text: str) -> str:
    return " ".join(text.replace("\\|", "|").split())


def test_recipe_reference_has_every_study(hooks):
    from inverscope.studies import STUDIES

    text = hooks.recipes_reference()
    assert text.startswith("# Recipe reference")
    for study in STUDIES:
        assert f"## Recipe of the `{study}` study" in text, study
        assert f"(#recipe-of-the-{study}-study)" in text, study
    assert "| `ensemble` | int | `3` | ≥ 1, ≤ 16 |" in text     # a field with its type, default and range


def test_benchmarks_page_is_the_file(hooks):
    assert hooks.benchmarks_page() == (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")


def test_mkdocs_config_nav_and_validation():
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    import yaml

    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert cfg["validation"] == {"omitted_files": "warn", "absolute_links": "warn",
                                 "unrecognized_links": "warn", "anchors": "warn"}

    def pages(nav):
        for item in nav:
            for value in item.values():
                yield from pages(value) if isinstance(value, list) else [value]

    listed = list(pages(cfg["nav"]))
    assert [p for p in listed if p.startswith("tutorials/")] == [f"tutorials/{t}" for t in TUTORIALS]
    spec = importlib.util.spec_from_file_location("h", ROOT / "docs" / "hooks.py")
    hooks_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks_mod)
    for page in listed:
        if not page.startswith("tutorials/"):
            assert (ROOT / "docs" / page).is_file() or page in hooks_mod.GENERATED_PAGES, page
    jupyter = next(p["mkdocs-jupyter"] for p in cfg["plugins"] if isinstance(p, dict) and "mkdocs-jupyter" in p)
    assert jupyter["include"] == ["tutorials/*.py"] and jupyter["execute"] is True
    assert jupyter["allow_errors"] is False


def test_tutorials_run_with_a_cell_timeout(hooks):
    pytest.importorskip("mkdocs_jupyter", reason="the docs extra is not installed (pip install -e '.[docs]')")
    from mkdocs_jupyter import nbconvert2

    app = nbconvert2.get_nbconvert_app(execute=True, kernel_name="python3", allow_errors=False)
    assert app.config["ExecutePreprocessor"]["timeout"] == hooks.CELL_TIMEOUT_S == 600
    assert app.config["ExecutePreprocessor"]["allow_errors"] is False


def test_tutorial_kernels_get_the_inline_backend_and_their_directory(hooks, monkeypatch, tmp_path):
    seen = {}

    def fake_preprocess(self, nb, resources=None, km=None):    # what the kernel would be started with
        seen.update(path=resources["metadata"]["path"], backend=os.environ.get("MPLBACKEND"))
        return nb, resources

    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the hook's wrappers, as _patch_mkdocs_jupyter installs them, around a fake conversion
    wrapped = hooks._wrap_preprocess(fake_preprocess)
    nb2html = hooks._wrap_nb2html(lambda path, **kw: wrapped(None, {}, {}))
    nb = tmp_path / "tut" / "01_x.py"
    nb.parent.mkdir()
    nb2html(str(nb), execute=True)
    assert seen == {"path": str(nb.parent.resolve()), "backend": hooks.INLINE_BACKEND}
    assert os.environ["MPLBACKEND"] == "Agg"                    # restored after the notebook
