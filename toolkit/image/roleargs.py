"""Role argument specs (``roles/<name>/meta/argument_specs.yml``) as the contract for spec ``vars``.

``golden validate`` (and every bake, through ``load_image``) checks each role's ``vars`` in an
image spec against the role's ``main`` entry point: unknown variables, values Ansible cannot
convert to the declared type (str, int, bool, float, list with elements, dict with options,
path, raw), values outside ``choices``, and required variables that neither the spec nor the
role's ``defaults/main.yml`` sets.

The checking itself is ansible-core's ``ArgumentSpecValidator``, the engine behind
``ansible.builtin.validate_argument_spec`` that Ansible prepends to every role with an argument
spec. Using it rather than our own type table means ``golden validate`` accepts and refuses
exactly what the bake would (Ansible's lenient conversions included: ``"80"`` is a fine int),
only 1.5 minutes earlier and with the spec file, role and variable named.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.core.errors import InputError
from toolkit.core.yamlfile import load_yaml_file

# Types Ansible's validator knows by name (ansible.module_utils.common.parameters.DEFAULT_TYPE_VALIDATORS).
KNOWN_TYPES = frozenset({"str", "list", "dict", "bool", "int", "float", "path", "raw", "jsonarg", "json",
                         "bytes", "bits"})
ENTRY_POINT = "main"


@dataclass(frozen=True)
class RoleArgSpec:
    """The ``main`` entry point of one role's argument spec, with the role's defaults."""

    role: str
    options: dict[str, dict[str, Any]]
    defaults: dict[str, Any]

    def canonical(self, name: str) -> str | None:
        """The option a variable name (or one of its aliases) refers to, or None if unknown."""
        if name in self.options:
            return name
        for option, attrs in self.options.items():
            if name in (attrs.get("aliases") or ()):
                return option
        return None


def _load_yaml(path: Path, where: str | None = None) -> Any:
    """The file's data, None when it is missing; YamlFileError (one line naming it) when unreadable."""
    return load_yaml_file(path, where) if path.is_file() else None


def spec_file(role_dir: Path) -> Path | None:
    """The role's argument_specs file, or None."""
    for name in ("argument_specs.yml", "argument_specs.yaml"):
        if (role_dir / "meta" / name).is_file():
            return role_dir / "meta" / name
    return None


def argspec_file_problems(role_dir: Path, where: str) -> list[str]:
    """Shape problems of a role's argument spec file; ``where`` is its path as the user sees it."""
    path = spec_file(role_dir)
    if path is None:
        return []
    try:
        data = _load_yaml(path, where)
    except InputError as exc:
        return [exc.message]
    specs = data.get("argument_specs") if isinstance(data, dict) else None
    entry = specs.get(ENTRY_POINT) if isinstance(specs, dict) else None
    if not isinstance(entry, dict):
        return [f"{where}: .argument_specs.{ENTRY_POINT}: expected a mapping (the role's main entry point)"]
    options = entry.get("options") or {}
    if not isinstance(options, dict):
        return [f"{where}: .argument_specs.{ENTRY_POINT}.options: expected a mapping of variable names"]
    return _option_problems(options, f"{where}: .argument_specs.{ENTRY_POINT}.options")


def _option_problems(options: dict[str, Any], prefix: str) -> list[str]:
    problems = []
    for name, attrs in options.items():
        if not isinstance(attrs, dict):
            problems.append(f"{prefix}.{name}: expected a mapping (type, description, default, ...)")
            continue
        for key in ("type", "elements"):
            kind = attrs.get(key, "str" if key == "type" else None)
            if kind is not None and kind not in KNOWN_TYPES:
                problems.append(f"{prefix}.{name}.{key}: unknown type {kind!r} "
                                f"(Ansible knows {', '.join(sorted(KNOWN_TYPES))})")
        if isinstance(attrs.get("options"), dict):
            problems += _option_problems(attrs["options"], f"{prefix}.{name}.options")
    return problems


def load_argspec(role_dir: Path) -> RoleArgSpec | None:
    """The role's main entry point, or None when the role has no (usable) argument spec."""
    path = spec_file(role_dir)
    if path is None or argspec_file_problems(role_dir, str(path)):
        return None
    entry = _load_yaml(path)["argument_specs"][ENTRY_POINT]
    try:
        defaults = _load_yaml(role_dir / "defaults" / "main.yml")
    except InputError:
        defaults = None  # golden validate reports the file itself; here it just sets nothing
    return RoleArgSpec(
        role=role_dir.name,
        options=dict(entry.get("options") or {}),
        defaults=defaults if isinstance(defaults, dict) else {},
    )


def _templated(value: Any) -> bool:
    # Ansible templates values before validating them; "{{ x }}" has no type until bake time.
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    return False


def _validate_one(option: str, attrs: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """Ansible's own verdict on one variable; one option at a time so every error is that variable's."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # slow import: only when used

    try:
        result = ArgumentSpecValidator({option: attrs}).validate(params, validate_role_argument_spec=True)
    except Exception as exc:  # a malformed option (choices: 5, ...) must not end in a traceback
        return [f"Ansible cannot check it against its argument spec ({type(exc).__name__}: {exc})"]
    unsupported = {".".join(p) if isinstance(p, tuple) else p for p in result.unsupported_parameters}
    messages = [e.msg for e in result.errors if type(e).__name__ != "UnsupportedError"]
    messages += [f"unknown key {name!r}" for name in sorted(unsupported)]
    return list(dict.fromkeys(messages))  # Ansible repeats some messages (one per conversion it tried)


def var_problems(argspec: RoleArgSpec, given: dict[str, Any], prefix: str) -> list[str]:
    """Every problem of the ``vars`` a spec gives one role; ``prefix`` is ``file: .roles[i].vars``."""
    role = argspec.role
    declared = f"roles/{role}/meta/argument_specs.yml"
    problems = []
    for name in sorted(given):
        option = argspec.canonical(name)
        if option is None:
            near = difflib.get_close_matches(name, list(argspec.options), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            problems.append(f"{prefix}.{name}: role {role!r} has no variable {name!r} "
                            f"({hint}{declared} declares {', '.join(sorted(argspec.options)) or 'none'})")
        elif not _templated(given[name]):
            found = _validate_one(option, argspec.options[option], {name: given[name]})
            problems += [f"{prefix}.{name}: role {role!r}: {m}" for m in found]
    present = {argspec.canonical(n) for n in (*given, *argspec.defaults)}
    for option, attrs in sorted(argspec.options.items()):
        if attrs.get("required") and option not in present:
            problems.append(f"{prefix}.{option}: role {role!r} requires this variable "
                            f"(no default in roles/{role}/defaults/main.yml); set it in the spec")
    return problems


def role_var_problems(refs: list[tuple[str, dict[str, Any]]], where: str, roles_dir: Path) -> list[str]:
    """Problems of every ``(role name, vars)`` in one spec, in spec order; missing roles are skipped
    (``spec.role_problems`` reports them)."""
    problems: list[str] = []
    for i, (name, given) in enumerate(refs):
        role_dir = roles_dir / name
        if not role_dir.is_dir():
            continue
        prefix = f"{where}: .roles[{i}].vars"
        path = spec_file(role_dir)
        if path is None:
            if given:
                problems.append(f"{prefix}: role {name!r} has no meta/argument_specs.yml to check its "
                                f"variables against; declare them there")
            continue
        broken = argspec_file_problems(role_dir, f"roles/{name}/meta/{path.name}")
        argspec = load_argspec(role_dir)
        if broken or argspec is None:
            problems += broken
            continue
        problems += var_problems(argspec, given, prefix)
    return problems
