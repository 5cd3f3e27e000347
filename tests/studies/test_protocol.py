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


def test_load_recipe_merges_changes_into_a_recipe_file(tmp_path):
    from inverscope.studies import load_recipe

    base = load_recipe(ROOT / "recipes" / "lao_sto_quick.yaml")
    changed = load_recipe(ROOT / "recipes" / "lao_sto_quick.yaml",
                          {"campaign": {"num_samples": 30, "microscope": {"phonon_configs": 2}}})
    assert (base.campaign.num_samples, changed.campaign.num_samples) == (216, 30)
    assert (base.campaign.microscope.phonon_configs, changed.campaign.microscope.phonon_configs) == (4, 2)
    # everything else is the file's
    assert changed.campaign.microscope.semiangle_mrad == base.campaign.microscope.semiangle_mrad == 20
    assert changed.classification.train == base.classification.train
    from_dict = load_recipe({"study": "pacbed", "n_train": 50})
    assert type(from_dict).__module__ == "inverscope.studies.pacbed" and from_dict.n_train == 50


@pytest.mark.parametrize("recipe, changes, words", [
    ("missing.yaml", None, "missing.yaml: no such recipe file"),
    ({"study": "xrd"}, None, "recipe: study: got 'xrd'; allowed: lao_sto"),
    ({"study": "pacbed"}, {"n_train": 5}, "n_train"),
    ({"study": "pacbed"}, {"no_such_field": 1}, "no_such_field"),
    ({"study": "pacbed"}, [1], "changes: got list"),
])
def test_load_recipe_errors_are_one_line(tmp_path, recipe, changes, words):
    from inverscope.studies import load_recipe

    if recipe == "missing.yaml":
        recipe = tmp_path / recipe
    with pytest.raises(InverscopeError, match=words.replace("(", r"\(").replace(")", r"\)")) as err:
        load_recipe(recipe, changes)
    assert "\n" not in str(err.value)


def test_run_from_python_writes_what_the_cli_writes(tmp_path):
    import json

    from inverscope import studies
    from tests.studies.test_recognition_imaging_study import SMALL

    lines = []
    with pytest.raises(InverscopeError, match="--workers: the recognition_imaging study does not use it"):
        studies.run(SMALL, tmp_path / "refused", workers=2)
    assert not (tmp_path / "refused").exists()
    metrics = studies.run(SMALL, tmp_path / "out", changes={"recognition": {"max_epochs": 100}}, log=lines.append)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["synthetic"]["shape"] == [4, 120, 128]
    assert metrics["synthetic"]["recognition_accuracy"] > 0.9 and (tmp_path / "out" / "report.html").is_file()
    assert lines and all(isinstance(line, str) for line in lines)
