"""MkDocs hooks of the inverscope docs (``hooks:`` in mkdocs.yml).

At build time they add three generated pages that are not kept in git:

- ``reference/cli.md``: every command of the typer app ``inverscope.cli:app`` with its help,
  usage, arguments and options, read from the click command tree;
- ``reference/recipes.md``: every study's recipe, from ``inverscope.core.recipe_reference``;
- ``benchmarks.md``: the repository's ``BENCHMARKS.md``.

They also set how mkdocs-jupyter executes the tutorials, for which the plugin has no options: the
kernel is the ``python3`` kernelspec, which jupyter_client starts with the Python running mkdocs
(``.venv/bin/python`` under ``make docs``); each notebook runs with its own directory
(``docs/tutorials/``) as working directory, as in Jupyter (the plugin alone would use the directory
mkdocs was started in); every cell has ``CELL_TIMEOUT_S`` seconds; figures use matplotlib's
inline backend even when ``MPLBACKEND`` is set (CI sets ``Agg``). Notebooks write their outputs
into temporary directories, never next to themselves (mkdocs would publish such files).

The Markdown generators need neither mkdocs nor the docs extra, so ``tests/test_docs.py`` can
call them directly.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELL_TIMEOUT_S = 600
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"

#: the pages on_files adds (paths relative to docs/)
GENERATED_PAGES = ("reference/cli.md", "reference/recipes.md", "benchmarks.md")


# ----------------------------------------------------------------------------- CLI reference

def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _param_row(param, ctx) -> str:
    """One table row: the parameter as written on the command line, and its help.

    Uses ``get_help_record``, the part of click's parameter API that typer (which ships its own
    copy of click from 0.2x on) keeps: it gives the declaration with its type, e.g.
    ``--window <int range>``, and the help with ``[required]``, ranges and defaults.
    """
    record = param.get_help_record(ctx)
    if record is None:                             # a plain click Argument has no help record
        record = (param.human_readable_name, getattr(param, "help", None) or "")
    decl, help_text = record
    return f"| `{_escape(decl)}` | {_escape(help_text)} |"


def _is_group(cmd) -> bool:
    return hasattr(cmd, "list_commands") and hasattr(cmd, "get_command")


def _context(cmd, name: str, parent=None):
    return cmd.context_class(cmd, info_name=name, parent=parent)


def _command_markdown(name: str, cmd, parent_ctx) -> list[str]:
    ctx = _context(cmd, name, parent_ctx)
    out = [f"## `{ctx.command_path}`", ""]
    if cmd.help:
        out += [cmd.help.strip(), ""]
    out += ["```text", cmd.get_usage(ctx).strip(), "```", ""]
    arguments = [p for p in cmd.params if p.param_type_name == "argument"]
    options = [p for p in cmd.params if p.param_type_name == "option" and not getattr(p, "hidden", False)]
    for title, params in (("Arguments", arguments), ("Options", options)):
        if params:
            out += [f"**{title}**", "", f"| {title[:-1].lower()} | meaning |", "|---|---|"]
            out += [_param_row(p, ctx) for p in params]
            out.append("")
    if _is_group(cmd):
        for sub_name in cmd.list_commands(ctx):
            out += _command_markdown(sub_name, cmd.get_command(ctx, sub_name), ctx)
    return out


def cli_reference(app=None) -> str:
    """Markdown reference of every command of a typer app (default: ``inverscope.cli:app``)."""
    import typer

    if app is None:
        from inverscope.cli import app
    root = typer.main.get_command(app)
    ctx = _context(root, "inverscope")
    lines = [
        "# Command-line reference",
        "",
        "Generated from the typer app `inverscope.cli:app` when the docs are built; "
        "`inverscope COMMAND --help` prints the same. A tour of the commands is in "
        "[the command-line guide](../guide/cli.md).",
        "",
    ]
    if root.help:
        lines += [root.help.strip(), ""]
    lines += ["```text", root.get_usage(ctx).strip(), "```", ""]
    if not _is_group(root):
        return "\n".join(lines + _command_markdown("inverscope", root, None)) + "\n"
    names = root.list_commands(ctx)
    lines += ["| command | what it does |", "|---|---|"]
    for name in names:
        short = root.get_command(ctx, name).get_short_help_str(limit=120)
        lines.append(f"| [`{name}`](#inverscope-{name}) | {_escape(short)} |")
    lines.append("")
    for name in names:
        lines += _command_markdown(name, root.get_command(ctx, name), ctx)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- recipes, benchmarks

def recipes_reference() -> str:
    """Markdown reference of every study's recipe (every field, type, default, allowed range, meaning)."""
    from inverscope.core.recipe_reference import study_reference
    from inverscope.studies import STUDIES

    head = [
        "# Recipe reference",
        "",
        "Every field of every study's recipe, generated from the pydantic models when the docs are "
        "built (`python -m inverscope.core.recipe_reference --all` prints the same). Unknown keys are "
        "errors; units are in the field names. The recipe's `study:` key picks the table. "
        "How a recipe is written and run: [Recipes and configs](../guide/recipes.md).",
        "",
        "Studies: " + ", ".join(f"[`{s}`](#recipe-of-the-{s}-study)" for s in STUDIES) + ".",
        "",
    ]
    body = "\n\n".join(study_reference(s) for s in STUDIES)
    return "\n".join(head) + "\n" + body + "\n"


def benchmarks_page(root: Path = ROOT) -> str:
    """The repository's BENCHMARKS.md, as it is."""
    return (Path(root) / "BENCHMARKS.md").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- notebook execution

_NOTEBOOK = contextvars.ContextVar("inverscope_docs_notebook", default=None)


def _wrap_nb2html(nb2html):
    """``nb2html`` that executes with the notebook's directory as cwd and the inline backend."""

    def nb2html_in_own_dir(nb_path, *args, **kwargs):
        token = _NOTEBOOK.set(str(Path(nb_path).resolve().parent))
        # the kernel inherits the environment: MPLBACKEND=Agg (set by CI) would stop ipykernel
        # from choosing its inline backend, and the tutorials would lose their figures
        backend = os.environ.get("MPLBACKEND")
        os.environ["MPLBACKEND"] = INLINE_BACKEND
        try:
            return nb2html(nb_path, *args, **kwargs)
        finally:
            _NOTEBOOK.reset(token)
            if backend is None:
                os.environ.pop("MPLBACKEND", None)
            else:
                os.environ["MPLBACKEND"] = backend

    return nb2html_in_own_dir


def _wrap_preprocess(preprocess):
    """``ExecutePreprocessor.preprocess`` that starts the kernel in the current notebook's directory."""

    def preprocess_in_run_dir(self, nb, resources=None, km=None):
        run_dir = _NOTEBOOK.get()
        if run_dir is not None:
            if resources is None:
                resources = {}
            resources.setdefault("metadata", {})["path"] = run_dir
        return preprocess(self, nb, resources, km)

    return preprocess_in_run_dir


def _patch_mkdocs_jupyter() -> None:
    """Per-cell timeout, the notebook's own directory as cwd, figures inline."""
    try:
        from mkdocs_jupyter import convert, nbconvert2
        from nbconvert.preprocessors import ExecutePreprocessor
    except ImportError:  # the docs extra is not installed (e.g. when the tests import this file)
        return
    if getattr(nbconvert2, "_inverscope_patched", False):
        return
    nbconvert2._inverscope_patched = True

    get_app = nbconvert2.get_nbconvert_app

    def get_nbconvert_app(*args, **kwargs):
        app = get_app(*args, **kwargs)
        app.config["ExecutePreprocessor"]["timeout"] = CELL_TIMEOUT_S
        return app

    nbconvert2.get_nbconvert_app = get_nbconvert_app
    convert.nb2html = _wrap_nb2html(convert.nb2html)
    ExecutePreprocessor.preprocess = _wrap_preprocess(ExecutePreprocessor.preprocess)


_patch_mkdocs_jupyter()


# ----------------------------------------------------------------------------- mkdocs events

def on_files(files, config):
    """Add the generated pages."""
    from mkdocs.structure.files import File

    root = Path(config.config_file_path).resolve().parent
    pages = dict(zip(GENERATED_PAGES, (cli_reference(), recipes_reference(), benchmarks_page(root))))
    for src_uri, content in pages.items():
        files.append(File.generated(config, src_uri, content=content))
    return files
