"""The recipe reference is generated from the pydantic models of every study."""

from __future__ import annotations

from inverscope.core.recipe_reference import main, recipe_reference, study_reference
from inverscope.studies import STUDIES, study_module


def _leaf_paths(model, path="recipe"):
    from pydantic import BaseModel

    out = []
    for name, field in model.model_fields.items():
        tp = field.annotation
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            out += _leaf_paths(tp, f"{path}.{name}")
        else:
            out.append((path, name))
    return out


def test_every_field_of_every_study_is_in_its_reference():
    for study in STUDIES:
        recipe = study_module(study).Recipe
        text = study_reference(study)
        sections = text.split("\n### ")
        for path, name in _leaf_paths(recipe):
            section = next((s for s in sections if s.startswith(f"`{path}`")), None)
            assert section is not None, (study, path)
            assert f"| `{name}` |" in section, (study, path, name)


def test_types_defaults_ranges_and_meanings():
    text = study_reference("atom_finding")
    net = text.split("### `recipe.net`")[1].split("\n### ")[0]
    assert "| `ensemble` | int | `3` | ≥ 1, ≤ 16 |" in text
    images = text.split("### `recipe.images`")[1].split("\n### ")[0]
    # the recipe builds its images section with 64 x 64 px, not the class default 256 x 256
    assert "| `output_shape` | tuple[int, int] | `(64, 64)` |" in images
    assert "| `calibration_error` | float | `0.1` | ≥ 0, < 0.5 | reported = true * (1 + U(-e, e)) |" in images
    assert "depth" in net


def test_required_fields_and_literals():
    from typing import Literal

    from pydantic import BaseModel, Field

    class Inner(BaseModel):
        """An inner section."""
        k: int = Field(2, gt=0, lt=9, description="a | pipe")

    class Outer(BaseModel):
        """The outer model."""
        mode: Literal["a", "b"] = "a"
        need: float
        inner: Inner = Inner()

    text = recipe_reference(Outer, "top")
    assert "### `top`: The outer model." in text and "### `top.inner`: An inner section." in text
    assert "| `need` | float | **required** |" in text
    assert "| `mode` | 'a' \\| 'b' | `'a'` |" in text
    assert "| `k` | int | `2` | > 0, < 9 | a \\| pipe |" in text


def test_command_line(capsys):
    assert main(["pacbed"]) == 0 and "## Recipe of the `pacbed` study" in capsys.readouterr().out
    assert main(["nonsense"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: study: got 'nonsense'")
    assert main([]) == 2
