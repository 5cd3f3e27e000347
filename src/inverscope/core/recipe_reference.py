"""The recipe reference, generated from the pydantic models: every field, type, default, allowed range, meaning.

Each study's ``Recipe`` (see :mod:`inverscope.studies`) is a tree of pydantic models; this walks
it and writes one Markdown table per model (the recipe itself, then each nested section under
its dotted path), so the reference cannot drift from what ``inverscope run`` accepts.

    python -m inverscope.core.recipe_reference atom_finding > recipe_atom_finding.md
    python -m inverscope.core.recipe_reference --all > recipes.md
"""

from __future__ import annotations

import enum
import sys
import typing
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

_BOUNDS = ((annotated_types.Ge, "≥"), (annotated_types.Gt, ">"), (annotated_types.Le, "≤"), (annotated_types.Lt, "<"))


def _type_name(tp: Any) -> str:
    """A short readable name of a field annotation."""
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (list, tuple, dict, set):
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    if isinstance(tp, type):
        if issubclass(tp, BaseModel):
            return f"section `{tp.__name__}`"
        if issubclass(tp, enum.Enum):
            return " \\| ".join(repr(m.value) for m in tp)
        return tp.__name__
    return str(tp).replace("typing.", "")


def _default_value(field):
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is not None:
        return field.default_factory()
    return PydanticUndefined


def _default(field, instance=None, name: str = "") -> str:
    if instance is not None:
        value = getattr(instance, name)
    elif field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "**required**"
    if isinstance(value, BaseModel):
        return "(section defaults)"
    if isinstance(value, enum.Enum):
        value = value.value
    text = repr(value)
    return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}...`"


def _bounds(field) -> str:
    parts = []
    for meta in field.metadata:
        for cls, sym in _BOUNDS:
            if isinstance(meta, cls):
                parts.append(f"{sym} {getattr(meta, next(iter(cls.__dataclass_fields__)))}")
    return ", ".join(parts)


def _nested_models(tp: Any) -> list[type[BaseModel]]:
    """Pydantic models inside an annotation (a section, or the values of a dict/list of sections)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    out = []
    for a in typing.get_args(tp):
        out.extend(_nested_models(a))
    return out


def recipe_reference(model: type[BaseModel], name: str = "recipe") -> str:
    """Markdown reference of `model` and every section nested in it.

    Parameters
    ----------
    model : pydantic model class
        E.g. ``inverscope.studies.atom_finding.Recipe``.
    name : str
        Heading of the top-level table (the dotted paths of the sections start from it).

    Returns
    -------
    str
        One ``###`` heading and table (field, type, default, allowed, meaning) per model.
    """
    lines: list[str] = []
    seen: set[tuple[str, type]] = set()

    def walk(m: type[BaseModel], path: str, instance: BaseModel | None = None) -> None:
        """`instance`: the section's default as its parent builds it (may differ from the class defaults)."""
        if (path, m) in seen:
            return
        seen.add((path, m))
        doc = (m.__doc__ or "").strip().splitlines()
        lines.append(f"### `{path}`" + (f": {doc[0]}" if doc and not doc[0].startswith("!!!") else ""))
        lines.append("")
        lines.append("| field | type | default | allowed | meaning |")
        lines.append("|---|---|---|---|---|")
        nested = []
        for fname, field in m.model_fields.items():
            desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{fname}` | {_type_name(field.annotation)} | {_default(field, instance, fname)} | "
                         f"{_bounds(field)} | {desc} |")
            value = getattr(instance, fname) if instance is not None else _default_value(field)
            for sub in _nested_models(field.annotation):
                nested.append((f"{path}.{fname}", sub, value if isinstance(value, sub) else None))
        lines.append("")
        for p, sub, inst in nested:
            walk(sub, p, inst)

    walk(model, name)
    return "\n".join(lines)


def study_reference(study: str) -> str:
    """The reference of one study's recipe (``study`` as in the recipe's ``study:`` key)."""
    from inverscope.studies import study_module

    mod = study_module(study)
    return f"## Recipe of the `{study}` study\n\n" + recipe_reference(mod.Recipe, "recipe")


def main(argv: list[str] | None = None) -> int:
    from inverscope.studies import STUDIES

    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--all"]:
        print("\n\n".join(study_reference(s) for s in STUDIES))
        return 0
    if len(args) != 1:
        print(f"usage: python -m inverscope.core.recipe_reference STUDY | --all   (studies: {', '.join(STUDIES)})",
              file=sys.stderr)
        return 2
    from inverscope.core.errors import InverscopeError

    try:
        print(study_reference(args[0]))
    except InverscopeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
