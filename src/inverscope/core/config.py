"""Pydantic configs loaded from YAML; unknown keys are errors, messages are one line."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from inverscope.core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config: typed, validated, no unknown keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see the recipe examples)"
    value = first.get("input")
    shown = "" if first["type"] in ("missing", "extra_forbidden") or isinstance(value, dict) else f" (got {value!r})"
    return f"{loc}: {msg}{shown}"


def validate(model: type[M], data: object, source: str = "config") -> M:
    """Validate `data` against `model`, raising :class:`ConfigError` with one line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_describe(err)}") from None


def _read_yaml(path: str | Path, what: str):
    """What a YAML file holds; raises :class:`ConfigError` naming the problem (missing file, a
    directory, invalid YAML with its line)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; expected a {what} file")
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what.split()[-1]} file")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{path}: not valid YAML{line}") from None


def read_yaml_mapping(path: str | Path, what: str = "YAML recipe") -> dict:
    """The mapping a YAML file holds; raises :class:`ConfigError` naming the problem (missing file,
    a directory, invalid YAML with its line, not a mapping)."""
    data = _read_yaml(path, what)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    return data


def load_yaml(path: str | Path, model: type[M]) -> M:
    """Read a YAML file into `model`; raises :class:`ConfigError` naming the problem."""
    data = _read_yaml(path, "YAML config")
    return validate(model, data, str(path))
