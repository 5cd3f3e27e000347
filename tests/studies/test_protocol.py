"""Every study has the same face and is reached through one table (inverscope.studies.STUDIES)."""

import inspect
from dataclasses import fields
from pathlib import Path

import pydantic
import pytest

from inverscope.core.errors import InverscopeError
from inverscope.studies import STUDIES, RunOptions, study_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_study_has_the_same_face(name):
    mod = study_module(name)
    assert issubclass(mod.Recipe, pydantic.BaseModel)
    params = inspect.signature(mod.run_study).parameters
    assert list(params)[:2] == ["recipe", "out_dir"]
    for kw in ("data_file", "log", "progress", "options"):
        assert params[kw].kind is inspect.Parameter.KEYWORD_ONLY, kw
    assert callable(mod.summary)
    assert mod.OPTIONS <= {f.name for f in fields(RunOptions)}


def test_every_shipped_recipe_names_a_registered_study():
    import yaml

    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if "study" in data or "campaign" in data:
            mod = study_module(data.get("study", "lao_sto"))
            mod.Recipe.model_validate(data)


def test_the_cli_has_no_per_study_branches():
    text = (ROOT / "src" / "inverscope" / "cli.py").read_text()
    assert not [n for n in STUDIES if f'"{n}"' in text or f"'{n}'" in text]


def test_unknown_study_and_unused_options_are_one_line():
    with pytest.raises(InverscopeError, match="study: got 'xrd'; allowed: lao_sto, pfm_switching"):
        study_module("xrd")
    with pytest.raises(InverscopeError, match="--workers: the pfm_switching study does not use it; allowed options: --data"):
        RunOptions(workers=2).refuse_unused("pfm_switching", study_module("pfm_switching").OPTIONS)
    with pytest.raises(InverscopeError, match="--data: the lao_sto study does not use it"):
        RunOptions(data_file="x.h5").refuse_unused("lao_sto", study_module("lao_sto").OPTIONS)
    RunOptions(workers=2, quiet=True, check_resources=False).refuse_unused("lao_sto", study_module("lao_sto").OPTIONS)
