"""A reference of every study-spec field, generated from the pydantic models (`sonosynth spec --reference`).

The models are the single source: their field descriptions are what the reference says, so the
reference cannot drift from what a spec accepts (`docs/spec.md` is this output; a test compares).
"""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _type_name(annotation: Any) -> str:
    text = str(annotation) if not isinstance(annotation, type) else annotation.__name__
    text = re.sub(r"\b(typing|pathlib|sonosynth\.[a-z_.]+)\.", "", text)
    return text.replace("NoneType", "None").replace("Path", "path")


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _nested_models(arg)]


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.default
    if value is PydanticUndefined:
        return "(computed)"
    if isinstance(value, BaseModel):
        return "(see below)"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return "; ".join(str(v.model_dump(exclude_defaults=True)) for v in value)
    return f"`{value!r}`" if value is not None else "unset"


def models_in_order(root: type[BaseModel]) -> list[type[BaseModel]]:
    """`root` and every model its fields use, depth-first, each once."""
    seen: list[type[BaseModel]] = []

    def visit(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.append(model)
        for field in model.model_fields.values():
            for nested in _nested_models(field.annotation):
                visit(nested)

    visit(root)
    return seen


def spec_reference(root: type[BaseModel] | None = None) -> str:
    """Markdown: one table per model (field, type, default, meaning)."""
    if root is None:
        from sonosynth.experiment.spec import StudySpec

        root = StudySpec
    lines = ["# Study spec reference", "",
             ("Generated from the pydantic models by `sonosynth spec --reference` (do not edit by hand). "
              "A spec is a YAML file (see `configs/`); unknown keys are errors that name the key."), ""]
    for model in models_in_order(root):
        lines += [f"## `{model.__name__}`", ""]
        doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        if doc and not doc.startswith(("Usage docs", "A base class")):
            lines += [doc, ""]
        lines += ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
            nested = _nested_models(field.annotation)
            if nested and not meaning:
                meaning = "see " + ", ".join(f"`{m.__name__}`" for m in nested)
            type_name = _type_name(field.annotation).replace("|", "\\|")
            lines.append(f"| `{name}` | `{type_name}` | {_default(field)} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


__all__ = ["models_in_order", "spec_reference"]
