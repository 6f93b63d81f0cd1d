"""The fleet inventory: an Ansible YAML inventory whose groups are racks.

Host vars golden reads: ``mac``, ``bmc_address``, ``bmc_port`` (623), ``bmc_protocol`` (ipmi or
redfish), ``bmc_user``, ``bmc_password`` (plain or ``!vault``), ``image`` ("<name>@<channel>" or
"<name>@<build-id>"), ``uefi`` (bool). Group vars apply to every host below the group; a deeper
group wins over its parents and host vars win over groups, as in Ansible.

Host patterns follow Ansible: names, groups, globs (``web*``), regexes (``~web[0-9]+``), ``all``/``*``,
``a:b`` or ``a,b`` unions, ``a:&b`` intersections, ``a:!b`` exclusions.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolkit.bmc.endpoint import BmcEndpoint, BmcProtocol
from toolkit.core.config import Settings
from toolkit.core.errors import InputError
from toolkit.core.mac import is_mac, normalize_mac
from toolkit.core.secret import Secret
from toolkit.image.ref import ImageRefError, parse_image_ref

DEFAULT_BMC_PORT = 623
PROTOCOLS = ("ipmi", "redfish")
VAULT_PASSWORD_ENVS = ("GOLDEN_VAULT_PASSWORD_FILE", "ANSIBLE_VAULT_PASSWORD_FILE")


class InventoryError(InputError):
    """The inventory file is missing, malformed, or a host's vars are unusable."""


@dataclass(frozen=True)
class Host:
    name: str
    groups: tuple[str, ...]
    mac: str | None
    bmc: BmcEndpoint | None
    image: str | None
    uefi: bool
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def endpoint(self) -> BmcEndpoint:
        """The host's BMC endpoint; one without an address when the inventory gives none."""
        return self.bmc or BmcEndpoint(name=self.name, address="")


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: tuple[Host, ...]
    # group name -> names of the hosts in it (directly or through child groups)
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict, compare=False, hash=False)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise InventoryError(f"{self.path}: no host named {name!r}")

    def by_mac(self, mac: str) -> Host | None:
        mac = mac.lower()
        return next((h for h in self.hosts if h.mac == mac), None)

    def select(self, pattern: str) -> list[Host]:
        """Hosts matching an Ansible host pattern, in inventory order. No match is an InventoryError."""
        names = match_pattern(pattern, [h.name for h in self.hosts], self.groups)
        if not names:
            raise InventoryError(
                f"{self.path}: host pattern {pattern!r} matches no host",
                hint=f"groups here: {', '.join(sorted(self.groups)) or '(none)'}",
            )
        return [h for h in self.hosts if h.name in names]


# ---------------------------------------------------------------------------------------------
# host patterns (pure)


def _split_pattern(pattern: str) -> list[str]:
    """Split on ',' and on ':' that is not part of an IPv6 address or a range like web[1:3]."""
    parts: list[str] = []
    for chunk in pattern.split(","):
        depth = 0
        cur = ""
        for ch in chunk:
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
            if ch == ":" and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _match_term(term: str, hosts: list[str], groups: Mapping[str, frozenset[str]]) -> set[str]:
    if term in ("all", "*"):
        return set(hosts)
    if term in groups:
        return set(groups[term])
    if term.startswith("~"):
        try:
            rx = re.compile(term[1:])
        except re.error as exc:
            raise InventoryError(f"host pattern {term!r}: bad regular expression: {exc}") from None
        found = {h for h in hosts if rx.match(h)}
        for g, members in groups.items():
            if rx.match(g):
                found |= members
        return found
    range_match = re.fullmatch(r"(.*)\[(\d+):(\d+)\](.*)", term)
    if range_match:
        prefix, lo, hi, suffix = range_match.groups()
        width = len(lo) if lo.startswith("0") else 0
        wanted = {f"{prefix}{str(n).zfill(width)}{suffix}" for n in range(int(lo), int(hi) + 1)}
        return {h for h in hosts if h in wanted}
    if any(c in term for c in "*?["):
        found = set(fnmatch.filter(hosts, term))
        for g in fnmatch.filter(list(groups), term):
            found |= groups[g]
        return found
    return {term} if term in hosts else set()


def match_pattern(pattern: str, hosts: Iterable[str], groups: Mapping[str, frozenset[str]]) -> set[str]:
    """Names of the hosts an Ansible pattern selects: unions first, then ``&`` and ``!`` terms."""
    host_list = list(hosts)
    terms = _split_pattern(pattern)
    if not terms:
        raise InventoryError("empty host pattern", hint="use 'all', a group, a host name or a glob")
    plus = [t for t in terms if not t.startswith(("&", "!"))]
    selected: set[str] = set()
    for t in plus:
        selected |= _match_term(t, host_list, groups)
    if not plus:  # a pattern of only exclusions means "all but ..."
        selected = set(host_list)
    for t in terms:
        if t.startswith("&"):
            selected &= _match_term(t[1:], host_list, groups)
    for t in terms:
        if t.startswith("!"):
            selected -= _match_term(t[1:], host_list, groups)
    return selected


# ---------------------------------------------------------------------------------------------
# loading


class _VaultText:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Loader(yaml.SafeLoader):
    pass


def _construct_vault(loader: yaml.SafeLoader, node: yaml.Node) -> _VaultText:
    return _VaultText(str(loader.construct_scalar(node)))  # type: ignore[arg-type]


def _construct_number(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    # YAML 1.1 reads an unquoted 52:54:00:00:01:01 as a base-60 integer; nobody means that here.
    value = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    if ":" in value:
        return value
    if node.tag.endswith(":int"):
        return yaml.SafeLoader.construct_yaml_int(loader, node)  # type: ignore[arg-type]
    return yaml.SafeLoader.construct_yaml_float(loader, node)  # type: ignore[arg-type]


_Loader.add_constructor("!vault", _construct_vault)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_number)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_number)


def _vault_password_file() -> Path | None:
    for env in VAULT_PASSWORD_ENVS:
        if os.environ.get(env):
            return Path(os.environ[env])
    return None


def _decrypt(vault: _VaultText, where: str) -> str:
    pw_file = _vault_password_file()
    if pw_file is None:
        raise InventoryError(
            f"{where}: value is ansible-vault encrypted but no vault password file is set",
            hint=f"set {VAULT_PASSWORD_ENVS[0]} (or {VAULT_PASSWORD_ENVS[1]}) to the vault password file",
        )
    try:
        password = pw_file.read_bytes().strip()
    except OSError as exc:
        raise InventoryError(f"{where}: cannot read vault password file {pw_file}: {exc.strerror}") from None
    from ansible.parsing.vault import AnsibleVaultError, VaultLib, VaultSecret

    try:
        clear = VaultLib([("default", VaultSecret(password))]).decrypt(vault.text.strip())
    except AnsibleVaultError:
        # never chain the library's exception: it may carry ciphertext details
        raise InventoryError(
            f"{where}: cannot decrypt the vault value",
            hint=f"check that {pw_file} holds the password the value was encrypted with",
        ) from None
    return clear.decode("utf-8")


@dataclass
class _RawGroup:
    name: str
    depth: int
    vars: dict[str, Any]
    hosts: dict[str, dict[str, Any]]
    parents: set[str]


def _as_mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InventoryError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _walk_groups(path: Path, data: dict[str, Any]) -> dict[str, _RawGroup]:
    groups: dict[str, _RawGroup] = {}

    def visit(name: str, body: Any, depth: int, parent: str | None) -> None:
        where = f"{path}: group {name}"
        body = _as_mapping(body, where)
        unknown = set(body) - {"hosts", "vars", "children"}
        if unknown:
            raise InventoryError(f"{where}: unknown key(s) {sorted(unknown)}; expected hosts, vars, children")
        g = groups.setdefault(name, _RawGroup(name, depth, {}, {}, set()))
        g.depth = max(g.depth, depth)
        if parent:
            g.parents.add(parent)
        g.vars.update(_as_mapping(body.get("vars"), f"{where}.vars"))
        for host, hvars in _as_mapping(body.get("hosts"), f"{where}.hosts").items():
            g.hosts.setdefault(str(host), {}).update(_as_mapping(hvars, f"{path}: host {host}"))
        for child, cbody in _as_mapping(body.get("children"), f"{where}.children").items():
            visit(str(child), cbody, depth + 1, name)

    for top, body in data.items():
        visit(str(top), body, 0 if top == "all" else 1, None if top == "all" else "all")
    return groups


def _ancestors(name: str, groups: dict[str, _RawGroup]) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        g = todo.pop()
        for p in groups[g].parents if g in groups else ():
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen


def _build_host(path: Path, name: str, member_of: list[_RawGroup], host_vars: dict[str, Any]) -> Host:
    merged: dict[str, Any] = {}
    for g in sorted(member_of, key=lambda g: (g.depth, g.name)):
        merged.update(g.vars)
    merged.update(host_vars)
    where = f"{path}: host {name}"

    def text(key: str) -> str | None:
        v = merged.get(key)
        if v is None:
            return None
        if isinstance(v, _VaultText):
            return _decrypt(v, f"{where}: {key}")
        if isinstance(v, dict | list):
            raise InventoryError(f"{where}: {key} must be a string, got {type(v).__name__}")
        return str(v)

    mac = text("mac")
    if mac is not None:
        if not is_mac(mac):
            raise InventoryError(f"{where}: mac {mac!r} is not a MAC address like 52:54:00:12:34:56")
        mac = normalize_mac(mac)
    bmc: BmcEndpoint | None = None
    address = text("bmc_address")
    if address:
        protocol = (text("bmc_protocol") or "ipmi").lower()
        if protocol not in PROTOCOLS:
            raise InventoryError(f"{where}: bmc_protocol {protocol!r} must be one of {', '.join(PROTOCOLS)}")
        port_s = text("bmc_port") or str(DEFAULT_BMC_PORT if protocol == "ipmi" else 443)
        try:
            port = int(port_s)
        except ValueError:
            raise InventoryError(f"{where}: bmc_port {port_s!r} is not a number") from None
        if not 0 < port < 65536:
            raise InventoryError(f"{where}: bmc_port {port} is outside 1..65535")
        bmc = BmcEndpoint(name=name, address=address, port=port, protocol=BmcProtocol(protocol),
                          user=text("bmc_user") or "", password=Secret(text("bmc_password") or ""))
    image = text("image")
    if image is not None:
        try:
            parse_image_ref(image)
        except ImageRefError as exc:
            raise InventoryError(f"{where}: image {image!r} must be '<name>@<channel>' or '<name>@<build-id>'",
                                 hint=exc.hint) from None
    uefi_v = merged.get("uefi", False)
    if isinstance(uefi_v, str):
        uefi_v = uefi_v.lower() in ("1", "true", "yes", "on")
    groups = tuple(sorted(g.name for g in member_of if g.name != "all"))
    # the vars mapping never holds a clear or encrypted password: callers use bmc.password
    safe_vars = {k: ("***" if k == "bmc_password" or isinstance(v, _VaultText) else v) for k, v in merged.items()}
    return Host(name=name, groups=groups, mac=mac, bmc=bmc, image=image, uefi=bool(uefi_v), vars=safe_vars)


def parse_inventory(text: str, path: Path) -> Inventory:
    """Parse inventory text (``path`` is only for messages and Inventory.path)."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass plus !vault
    except yaml.YAMLError as exc:
        raise InventoryError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    data = _as_mapping(data, f"{path}: top level")
    groups = _walk_groups(path, data)
    order: list[str] = []
    host_vars: dict[str, dict[str, Any]] = {}
    direct: dict[str, set[str]] = {}
    for group in groups.values():
        for h, hv in group.hosts.items():
            if h not in host_vars:
                order.append(h)
                host_vars[h] = {}
            host_vars[h].update(hv)
            direct.setdefault(h, set()).add(group.name)
    members: dict[str, set[str]] = {name: set() for name in groups}
    members.setdefault("all", set())
    hosts: list[Host] = []
    for h in order:
        in_groups = set(direct[h])
        for g in list(in_groups):
            in_groups |= _ancestors(g, groups)
        in_groups.add("all")
        for g in in_groups:
            members.setdefault(g, set()).add(h)
        hosts.append(_build_host(path, h, [groups[g] for g in in_groups if g in groups], host_vars[h]))
    return Inventory(path=path, hosts=tuple(hosts), groups={k: frozenset(v) for k, v in members.items()})


def load_inventory(path: Path) -> Inventory:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(f"{path}: inventory file not found", hint="pass -i PATH or set GOLDEN_INVENTORY") from None
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read inventory: {exc.strerror}") from None
    return parse_inventory(text, path)


def resolve_inventory_path(cli_value: str | Path | None, settings: Settings) -> Path:
    """Where the inventory is, as Ansible finds it: -i, then GOLDEN_INVENTORY, then golden.yaml;
    last, the running lab's inventory, so every command works against the lab unchanged."""
    if cli_value:
        return Path(cli_value)
    if os.environ.get("GOLDEN_INVENTORY"):
        return Path(os.environ["GOLDEN_INVENTORY"])
    if settings.inventory is not None:
        return settings.inventory
    lab_inventory = settings.home / "lab" / "inventory.yaml"  # written by 'golden lab up'
    if lab_inventory.exists():
        return lab_inventory
    raise InventoryError(
        "no inventory given",
        hint="pass -i PATH, set GOLDEN_INVENTORY, or put 'inventory: PATH' in golden.yaml "
             "(the lab writes one: see 'golden lab status')",
    )
