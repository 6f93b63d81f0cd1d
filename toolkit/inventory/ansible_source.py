"""Inventory sources resolved by ansible-core itself, and host patterns matched by it.

We drive ``InventoryManager`` + ``VariableManager`` + ``DataLoader`` in-process rather than run
``ansible-inventory --list``: in-process we get each value's ``Origin`` tag (the file and line
Ansible read it from) for error messages, vault values stay ciphertext (``EncryptedString``)
instead of being decrypted or dropped, parse failures arrive as exceptions rather than as
warnings on a child's stderr, and we save a second Python start. ansible-core takes seconds to
import, so every import here is inside a function: a cached load never pays for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.core.errors import InputError
from toolkit.inventory.fields import GOLDEN_VARS
from toolkit.inventory.limits import check_host_name, check_sources
from toolkit.inventory.vault import VaultOptions, vault_secrets

log = logging.getLogger("golden.inventory")
MAX_DEPTH = 64  # deeper vars are a recursive YAML alias or hostile input, never an inventory


class SourceError(InputError):
    """Ansible could not read an inventory source, or a pattern."""


@dataclass(frozen=True)
class ResolvedHost:
    """A host as Ansible resolves it: its groups and its variables."""
    name: str
    groups: tuple[str, ...]  # Ansible's group_names: every group above the host except 'all', sorted
    vars: dict[str, Any]  # plain values (vault values as VaultValue), Ansible's precedence applied
    origins: dict[str, str]  # var -> "file:line" Ansible read it from, where it knows


@dataclass(frozen=True)
class VaultValue:
    """A vault-encrypted value, kept encrypted until used."""
    ciphertext: str


@dataclass(frozen=True)
class Resolved:
    """An inventory as Ansible resolves it: hosts in order and the group tree."""
    hosts: tuple[ResolvedHost, ...]  # in Ansible's inventory order
    tree: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]  # group -> (direct hosts, child groups)


@contextlib.contextmanager
def _quiet_ansible() -> Iterator[list[str]]:
    """Keep Ansible's warnings off our stderr (golden prints one line); collect them instead."""
    from ansible.utils.display import Display

    display = Display()
    said: list[str] = []
    saved = {n: display.__dict__.get(n) for n in ("warning", "error_as_warning", "deprecated", "display")}
    display.warning = lambda msg, *a, **k: said.append(str(msg))
    display.error_as_warning = lambda msg, exception, *a, **k: said.append(f"{msg} {_first_line(exception)}")
    display.deprecated = lambda *a, **k: None
    display.display = lambda *a, **k: None
    try:
        yield said
    finally:
        for name, value in saved.items():
            if value is None:
                display.__dict__.pop(name, None)
            else:
                display.__dict__[name] = value


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _init_collections() -> None:
    """What ansible's CLI does before it reads an inventory: make collections importable, so plugin
    configs naming ``ansible.builtin.constructed`` or ``netbox.netbox.nb_inventory`` load."""
    from ansible.plugins.loader import init_plugin_loader
    from ansible.utils.collection_loader import AnsibleCollectionConfig

    if AnsibleCollectionConfig.collection_finder is None:  # once per process
        init_plugin_loader()


def _manager(sources: Sequence[str], vault: VaultOptions) -> Any:
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    _init_collections()
    loader = DataLoader()
    loader.set_vault_secrets(vault_secrets(vault))
    # Ansible's own defaults: a folder holding only group_vars/ is no error (its vars still apply);
    # a file a plugin failed on is found in the warnings by _raise_parse_failures.
    with _unparsed_is_failed(False):
        return loader, InventoryManager(loader=loader, sources=list(sources))


def _raise_parse_failures(said: Sequence[str]) -> None:
    """A source a plugin tried and failed on is an error for golden, where Ansible only warns."""
    reasons: list[str] = []
    for line in said:
        if "Failed to parse inventory with" in line:
            reasons.append(line)
        elif line.startswith("Unable to parse ") and reasons:
            source = line[len("Unable to parse "):].split(" as an inventory source")[0]
            reason = _source_failure("", reasons)
            if "recursion" in reason:
                reason += " (a recursive YAML alias?)"
            raise SourceError(f"{source}: {reason}")


@contextlib.contextmanager
def _unparsed_is_failed(value: bool) -> Iterator[None]:
    from ansible import constants as C

    names = ("INVENTORY_ANY_UNPARSED_IS_FAILED", "INVENTORY_UNPARSED_IS_FAILED")
    saved = {n: getattr(C, n) for n in names}
    for n in names:
        setattr(C, n, value)
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(C, n, v)


def _source_failure(source_msg: str, said: list[str]) -> str:
    # Ansible tries every plugin; the useful reason is the one from the plugin that owns the file type.
    reasons = [s for s in said if "Failed to parse inventory with" in s]
    # a plugin config ("plugin: ...") is auto's business; any other YAML file is yaml's
    config = any("'yaml'" in r and "Plugin configuration" in r for r in reasons)
    for plugin in ("'auto'", "'yaml'", "'ini'", "'script'") if config else ("'yaml'", "'ini'", "'auto'", "'script'"):
        for r in reasons:
            if plugin in r:
                return r.split("plugin.", 1)[-1].strip()
    return reasons[0].split("plugin.", 1)[-1].strip() if reasons else source_msg


def _failed_source(exc: BaseException, sources: Sequence[str]) -> str:
    # in a folder, Ansible names the one file it could not parse: name that, not the folder
    text = str(getattr(exc, "message", None) or exc)
    marker = "failed to parse inventory source "
    if marker in text:
        return text.split(marker, 1)[1].strip().splitlines()[0]
    return ", ".join(sources)


def resolve(sources: Sequence[str], vault: VaultOptions) -> Resolved:
    """Every host with its vars exactly as Ansible resolves them (inventory, group_vars, host_vars)."""
    from ansible.errors import AnsibleError

    check_sources(sources)  # before Ansible expands a range into gigabytes
    with _quiet_ansible() as said:
        try:
            loader, inv = _manager(sources, vault)
            _raise_parse_failures(said)
            from ansible.vars.manager import VariableManager

            vm = VariableManager(loader=loader, inventory=inv)
            hosts = tuple(_resolve_host(vm, h) for h in inv.get_hosts("all"))
        except InputError:
            raise
        except AnsibleError as exc:
            reason = _source_failure(_first_line(exc), said)
            if "recursion" in reason:
                reason += " (a recursive YAML alias?)"
            raise SourceError(f"{_failed_source(exc, sources)}: {reason}") from None
        except RecursionError:
            raise SourceError(f"{', '.join(sources)}: nested without end (a recursive YAML alias?)") from None
        except Exception as exc:  # a plugin or the YAML parser failing on hostile input: one line, no traceback
            raise SourceError(f"{', '.join(sources)}: cannot read the inventory: {_first_line(exc)}") from None
        tree = {g.name: (tuple(h.name for h in g.hosts), tuple(c.name for c in g.child_groups))
                for g in inv.groups.values()}
    for line in said:  # what Ansible would have warned about (unknown keys, say), under --debug
        log.debug("ansible: %s", line.strip().splitlines()[0][:300] if line.strip() else "")
    return Resolved(hosts=hosts, tree=tree)


def _resolve_host(vm: Any, host: Any) -> ResolvedHost:
    from ansible import constants as C

    check_host_name(str(host.name))
    try:
        raw = vm.get_vars(host=host, include_hostvars=False, stage="all")
    except RecursionError:
        _find_too_deep(host)
        raise
    templated = _template_golden(vm, host, raw)
    skip = set(C.INTERNAL_STATIC_VARS) | {"groups", "group_names", "inventory_hostname", "inventory_hostname_short",
                                          "inventory_dir", "inventory_file", "playbook_dir", "omit"}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for key, value in raw.items():
        if key in skip:
            continue
        values[str(key)] = plain(templated.get(key, value), f"host {host.name}: {key}")
        where = origin_of(value)
        if where:
            origins[str(key)] = where
    groups = tuple(sorted(g.name for g in host.get_groups() if g.name != "all"))
    return ResolvedHost(name=str(host.name), groups=groups, vars=values, origins=origins)


_BARE_REF = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


def _template_golden(vm: Any, host: Any, raw: Mapping[str, Any]) -> dict[str, Any]:
    """golden's vars that are templates (``bmc_address: "{{ ansible_host }}"``), rendered as a play
    would render them; everything else stays as Ansible resolved it."""
    from ansible.parsing.vault import EncryptedString
    from ansible.template import Templar

    out: dict[str, Any] = {}
    templar = None
    for var in GOLDEN_VARS:
        value = raw.get(var)
        if not isinstance(value, str) or ("{{" not in value and "{%" not in value):
            continue
        bare = _BARE_REF.match(value)
        if bare and isinstance(raw.get(bare.group(1)), EncryptedString):
            out[var] = raw[bare.group(1)]  # "{{ vault_bmc_password }}": keep the ciphertext, decrypt late
            continue
        templar = templar or Templar(loader=vm._loader, variables=raw)
        try:
            out[var] = templar.template(value)
        except Exception as exc:  # undefined variable, bad filter: one line naming where the template is
            raise SourceError(f"{origin_of(value) or 'inventory'}: host {host.name}: {var}: cannot render "
                              f"{value[:80]!r}: {_first_line(exc)}") from None
    return out


def _find_too_deep(host: Any) -> None:
    """Name the var (and its file) that made Ansible recurse without end: a recursive YAML alias."""
    for scope in (host, *host.get_groups()):
        for key, value in scope.vars.items():
            try:
                plain(value, "")
            except (SourceError, RecursionError):
                where = origin_of(value) or "inventory"
                raise SourceError(f"{where}: host {host.name}: {key} is nested without end "
                                  "(a recursive YAML alias?)") from None


def origin_of(value: Any) -> str | None:
    """Where Ansible read ``value`` ("file:line"), or None."""
    from ansible._internal._datatag._tags import Origin

    tag = Origin.get_tag(value)
    if tag is None or not tag.path:
        return None
    return f"{tag.path}:{tag.line_num}" if tag.line_num else str(tag.path)


def plain(value: Any, where: str, depth: int = 0) -> Any:
    """Ansible's tagged values as plain JSON-able ones; vault values kept as ciphertext."""
    from ansible.parsing.vault import EncryptedString

    if depth > MAX_DEPTH:
        raise SourceError(f"{where}: nested deeper than {MAX_DEPTH} levels (a recursive YAML alias?)")
    if isinstance(value, EncryptedString):
        return VaultValue(str(value._ciphertext))
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(k): plain(v, where, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v, where, depth + 1) for v in value]
    return str(value)


# ---- patterns ----

def select_names(tree: Mapping[str, tuple[Sequence[str], Sequence[str]]], pattern: str,
                 limit: str | None = None) -> set[str]:
    """Host names ``ansible PATTERN --limit LIMIT`` selects, matched by ansible-core on a rebuilt inventory."""
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    with _quiet_ansible(), _unparsed_is_failed(False):  # an empty inventory we fill ourselves
        inv = InventoryManager(loader=DataLoader(), sources=[])
        data = inv._inventory
        for group in tree:
            data.add_group(group)
        for group, (hosts, children) in tree.items():
            for child in children:
                data.add_child(group, child)
            for host in hosts:
                data.add_host(host, group)
        data.reconcile_inventory()
        try:
            if limit:
                inv.subset(limit)
            return {str(h.name) for h in inv.get_hosts(pattern)}
        except AnsibleError as exc:
            raise SourceError(f"host pattern {pattern!r}: {_first_line(exc)}") from None
        except Exception as exc:  # a bad regex in ~pattern, say
            raise SourceError(f"host pattern {pattern!r}: {_first_line(exc)}") from None


def env_sources() -> list[str]:
    """Ansible's own default (ANSIBLE_INVENTORY), for when golden is given none."""
    return [s for s in os.environ.get("ANSIBLE_INVENTORY", "").split(",") if s]
