"""What ``golden.yaml`` may hold, as one table, and the check that reports every problem with its line.

``SECTIONS`` maps each top-level key to its schema: ``str`` for a plain value, a pydantic model
(``extra="forbid"``), or ``"module:Name"`` naming a model in the module that owns the section, imported
only when the file has that section (so a stage's schema lives beside the stage). ``None`` accepts a
section as it is (its owner checks it when it reads it). An unknown key anywhere is reported with its
line and the nearest known name.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

# top-level key -> schema (see the module docstring); docs/configuration.md describes each one
SECTIONS: dict[str, Any] = {
    "home": str,
    "cache": str,
    "mirror": str,
    "security_mirror": str,
    "inventory": str,
    "state_url": str,
    "store": str,
    "lab": "toolkit.core.config:LabConfig",
    "stale": "toolkit.core.config:StaleConfig",
    "packer": "toolkit.core.config:PackerConfig",
    "secure_boot": "toolkit.trust.secureboot:SecureBootConfig",
    "promotion": "toolkit.store.policy:PromotionConfig",
    "trust": "toolkit.trust.keys:TrustConfig",
    "rollout": None,  # drain/verify hooks: checked by toolkit.rollout where it reads them
}


def register_section(name: str, schema: Any) -> None:
    """Let a stage's module declare its own golden.yaml section."""
    SECTIONS[name] = schema


def schema_of(name: str) -> Any:
    schema = SECTIONS[name]
    if isinstance(schema, str):
        module, _, attr = schema.partition(":")
        return getattr(importlib.import_module(module), attr)
    return schema


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Each mapping key's path (``("lab", "boot_url")``) and its 1-based line in the YAML text."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    return dict(_walk(root, ()))


def _walk(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], int]]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            here = (*path, str(key.value))
            yield here, key.start_mark.line + 1
            yield from _walk(value, here)


def _names(model: Any) -> set[str]:
    """Every field name a section's model accepts, nested models included (for suggestions)."""
    out: set[str] = set()
    fields = getattr(model, "model_fields", {})
    for name, f in fields.items():
        out.add(name)
        for arg in (f.annotation, *getattr(f.annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg is not model:
                out |= _names(arg)
    root = fields.get("root")
    if root is not None:
        for arg in getattr(root.annotation, "__args__", ()):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out |= _names(arg)
    return out - {"root"}


def _suggest(word: str, known: set[str] | Mapping[str, Any]) -> str:
    folded = {k.lower().replace("_", ""): k for k in known}  # bootURL is boot_url, whatever the case
    near = difflib.get_close_matches(word.lower().replace("_", ""), list(folded), n=1, cutoff=0.6)
    return f" (did you mean {folded[near[0]]}?)" if near else ""


def _problem(where: str, lines: Mapping[tuple[str, ...], int], path: tuple[str, ...], what: str) -> str:
    line = next((lines[path[:i]] for i in range(len(path), 0, -1) if path[:i] in lines), None)
    return f"{where}:{line}: .{'.'.join(path)}: {what}" if line else f"{where}: .{'.'.join(path)}: {what}"


def check_config(data: Mapping[str, Any], text: str, where: str = "golden.yaml") -> list[str]:
    """Every problem of a golden.yaml mapping, each as ``golden.yaml:LINE: .path: what`` (empty: valid)."""
    lines = key_lines(text)
    problems: list[str] = []
    for key, value in data.items():
        if key not in SECTIONS:
            problems.append(_problem(where, lines, (str(key),), "unknown key" + _suggest(str(key), SECTIONS)))
            continue
        schema = schema_of(key)
        if schema is None or value is None:
            continue
        if schema is str:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                problems.append(_problem(where, lines, (key,), "Input should be a valid string"))
            continue
        problems += _model_problems(schema, key, value, where, lines)
    return problems


def _model_problems(model: Any, key: str, value: Any, where: str, lines: Mapping[tuple[str, ...], int]) -> list[str]:
    try:
        model.model_validate(value)
    except ValidationError as exc:
        out = []
        for e in exc.errors():
            path = (key, *(str(p) for p in e["loc"] if p != "root"))
            what = ("unknown key" + _suggest(path[-1], _names(model)) if e["type"] == "extra_forbidden"
                    else e["msg"].removeprefix("Value error, "))
            out.append(_problem(where, lines, path, what))
        return out
    return []
