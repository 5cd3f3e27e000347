"""The examples in the docstrings of the public names run and print what they say.

Every name in ``inverscope.__all__`` (except ``__version__``) has a numpy-style docstring
with a ``Parameters`` (or, for result classes, ``Attributes``) section and at least one
``>>>`` example; the examples are doctests, run here on tiny grids so that they take
well under a second each. Examples that need files a user would have (a trained model
under ``out/``) are marked ``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import inspect

import pytest

import inverscope

NAMES = [name for name in inverscope.__all__ if name != "__version__"]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", NAMES)
def test_docstring_has_sections_and_an_example(name):
    doc = inspect.getdoc(getattr(inverscope, name)) or ""
    lines = [line.strip() for line in doc.splitlines()]
    assert any(line.startswith(">>>") for line in lines), f"{name}: no example (>>>) in its docstring"
    sections = {a for a, b in zip(lines, lines[1:]) if b and set(b) == {"-"} and len(b) == len(a)}
    assert sections & {"Parameters", "Attributes"}, f"{name}: no Parameters or Attributes section"
    assert "Examples" in sections, f"{name}: no Examples section"


@pytest.mark.parametrize("name", NAMES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    obj = getattr(inverscope, name)
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs={})
    assert tests and any(t.examples for t in tests), f"{name}: no doctest found"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed (see above)"
