"""Typed configuration: pydantic models filled from YAML presets plus explicit overrides.

Each configurable component keeps its presets in one YAML file in `sonosynth/presets/`,
mapping preset names (`smoke`, `cpu`, `paper`) to field values. Unknown keys are errors, so a
typo in a preset or override never silently falls back to a default.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sonosynth.errors import SonosynthError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config: unknown keys are rejected, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming its field as a dotted path under `prefix` (e.g. `generators[1].overrides`)."""
    problems = []
    for error in exc.errors():
        field = prefix
        for part in error["loc"]:
            field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
        value = error.get("input")
        shown = f" (got {value!r})" if isinstance(value, (int, float, str, bool)) and len(repr(value)) <= 40 else ""
        problems.append(f"{field or '(top level)'}: {error['msg']}{shown}")
    return "; ".join(problems)


def read_yaml(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SonosynthError(f"{path}: file not found.") from exc
    except yaml.YAMLError as exc:
        raise SonosynthError(f"{path}: not valid YAML ({exc}).") from exc


def preset_names(component: str) -> list[str]:
    return sorted(_presets(component))


def _presets(component: str) -> dict[str, dict]:
    resource = resources.files("sonosynth.presets").joinpath(f"{component}.yaml")
    if not resource.is_file():
        raise SonosynthError(f"no presets for {component!r}.")
    data = yaml.safe_load(resource.read_text(encoding="utf-8")) or {}
    return {name: values or {} for name, values in data.items()}


def _merge_value(base: Any, value: Any, where: str) -> Any:
    if isinstance(value, dict) and isinstance(base, dict):
        return deep_merge(base, value, where)
    if isinstance(value, dict) and isinstance(base, list):
        # `--set generators.0.samples_per_model=5` addresses an item of a list by its index.
        merged = list(base)
        for key, item in value.items():
            index = int(key) if isinstance(key, int) or str(key).lstrip("-").isdigit() else None
            if index is None or not 0 <= index < len(base):
                raise SonosynthError(f"{where}.{key}: no such item; {where} has {len(base)} item(s), "
                                     f"indexed 0 to {len(base) - 1}.")
            merged[index] = _merge_value(base[index], item, f"{where}.{index}")
        return merged
    return value


def deep_merge(base: dict, update: dict, where: str = "") -> dict:
    """`update` laid over `base`: nested mappings merge, list items are addressed by index, the rest replaces."""
    merged = dict(base)
    for key, value in update.items():
        path = f"{where}.{key}" if where else str(key)
        merged[key] = _merge_value(merged.get(key), value, path)
    return merged


def preset_values(component: str, preset: str | os.PathLike) -> dict[str, Any]:
    """The field values of a named preset of `component`, or of a user's YAML file."""
    presets = _presets(component)
    if str(preset) in presets:
        return presets[str(preset)]
    if Path(preset).suffix in (".yaml", ".yml"):
        values = read_yaml(preset) or {}
        if not isinstance(values, dict):
            raise SonosynthError(f"{preset}: a preset file is a YAML mapping of config fields.")
        return values
    raise SonosynthError(f"unknown {component} preset {str(preset)!r}; choose one of {sorted(presets)} or a YAML file.")


def load_config(model: type[ConfigT], component: str, preset: str | os.PathLike = "cpu",
                overrides: dict[str, Any] | None = None) -> ConfigT:
    """A validated config from a named preset (or a YAML file path) plus overrides.

    `preset` is either a preset name from `sonosynth/presets/<component>.yaml` or a path to a
    YAML file holding field values (a user's own preset).
    """
    values = deep_merge(preset_values(component, preset), overrides or {})
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise SonosynthError(f"{component} preset {str(preset)!r}: {format_validation_error(exc)}") from exc


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`key=value` strings (dotted keys for nested fields) into a nested dict; values parsed as YAML."""
    result: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SonosynthError(f"override {pair!r} is not key=value.")
        key, raw = pair.split("=", 1)
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return result
