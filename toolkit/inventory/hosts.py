"""The fleet inventory: any Ansible inventory, read by ansible-core, whose groups are racks.

Sources are whatever ``ansible -i`` accepts: YAML and INI files, inventory folders with
``group_vars/`` and ``host_vars/``, ranges (``web[01:40]``), scripts and plugin configs
(``constructed``, ``netbox.netbox.nb_inventory``), several at once. Ansible resolves every
host's vars; golden then checks its own: ``mac``, ``bmc_address``, ``bmc_port`` (623, or 443 for
Redfish), ``bmc_protocol`` (ipmi or redfish), ``bmc_user``, ``bmc_password`` (plain or vault),
``bmc_ca_file`` and ``bmc_verify`` (Redfish TLS: verified unless ``bmc_verify: false``),
``image`` ("<name>@<channel>" or "<name>@<build-id>"), ``uefi`` (a boolean as Ansible reads one),
``install`` (ram, the default, or disk) and the disk layout's ``disk_device``, ``disk_esp_size``,
``disk_slot_size``, ``disk_data_mount`` and ``disk_boot_tries`` (``toolkit.install.settings``).
A bad value is one InventoryError naming the file Ansible read it from, the host and the var.

Host patterns and ``--limit`` are matched by ansible-core itself (subscripts ``rack1[0:4]``,
``~regex``, ``a:&b``, ``a:!b``), on an inventory rebuilt from the cached group tree.
The resolved inventory is cached (see ``cache``), so a 10,000-host fleet loads in well under
a second while its files are unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import re
import tempfile
from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

from toolkit.bmc.endpoint import BmcEndpoint, BmcProtocol
from toolkit.core.config import Settings
from toolkit.core.errors import InputError
from toolkit.core.secret import Secret
from toolkit.install.settings import DiskSettings, InstallMode
from toolkit.inventory import cache, fields
from toolkit.inventory.selection import find_sources
from toolkit.inventory.vault import LazySecret, VaultError, VaultOptions, cache_key, decrypt_vault, seal, unseal

DEFAULT_BMC_PORT = 623
PROTOCOLS = ("ipmi", "redfish")
VAULT_PASSWORD_ENVS = ("GOLDEN_VAULT_PASSWORD_FILE", "ANSIBLE_VAULT_PASSWORD_FILE")
CACHE_KEY_FILE = "inventory-cache.key"
_SECRET_NAME = re.compile(r"pass|secret|token|private_key|api_key|credential", re.IGNORECASE)
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # a pattern Ansible reads as exactly one group or host


class InventoryError(InputError):
    """The inventory is missing or unreadable, or a host's vars are unusable."""


@dataclass(frozen=True)
class Host:
    """An inventory host as golden uses it: name, groups, MAC, rack, image reference and BMC."""
    name: str
    groups: tuple[str, ...]
    mac: str | None
    bmc: BmcEndpoint | None
    image: str | None
    uefi: bool
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    install: InstallMode = InstallMode.RAM
    disk: DiskSettings | None = None  # the disk layout's settings, on a disk host

    @property
    def endpoint(self) -> BmcEndpoint:
        """The host's BMC endpoint; one without an address when the inventory gives none."""
        return self.bmc or BmcEndpoint(name=self.name, address="")

    @property
    def rack(self) -> str:
        """The host's rack: its group named like a rack, else its first group (groups are racks)."""
        groups = [g for g in self.groups if g not in ("all", "ungrouped")]
        racks = [g for g in groups if "rack" in g]
        return (racks or groups or [""])[0]


@dataclass(frozen=True)
class Inventory:
    """The hosts and groups of one or more inventory sources."""
    path: Path  # the first source
    hosts: tuple[Host, ...]
    # group name -> names of the hosts in it (directly or through child groups)
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict, compare=False, hash=False)
    sources: tuple[str, ...] = field(default=(), compare=False)
    # group -> (its own hosts, its child groups), what ansible-core needs to match patterns
    tree: Mapping[str, tuple[Sequence[str], Sequence[str]]] = field(default_factory=dict, compare=False,
                                                                     hash=False, repr=False)
    limit: str | None = None  # as ansible --limit: hosts outside it are not in this inventory at all

    def subset(self, limit: str | None) -> Inventory:
        """This inventory as ``ansible --limit LIMIT`` sees it: only the hosts the limit selects. The
        group tree stays whole, so a pattern like ``rack1[0:4]`` still counts from the group's start."""
        if not limit:
            return self
        hosts = tuple(self.select("all", limit))
        return dataclasses.replace(self, hosts=hosts, tree=self.tree or _tree_of(self), limit=limit)

    @cached_property
    def _by_name(self) -> dict[str, Host]:
        return {h.name: h for h in self.hosts}

    @property
    def where(self) -> str:
        """The sources, as messages name them."""
        return ", ".join(self.sources) if self.sources else str(self.path)

    def host(self, name: str) -> Host:
        """The host ``name``; InventoryError when there is none."""
        found = self._by_name.get(name)
        if found is None:
            raise InventoryError(f"{self.where}: no host named {name!r}")
        return found

    def by_mac(self, mac: str) -> Host | None:
        """The host with ``mac``, or None."""
        mac = mac.lower()
        return next((h for h in self.hosts if h.mac == mac), None)

    def select(self, pattern: str, limit: str | None = None) -> list[Host]:
        """Hosts ``ansible PATTERN --limit LIMIT`` selects, in inventory order. No match is an InventoryError."""
        if not pattern.strip():
            raise InventoryError("empty host pattern", hint="use 'all', a group, a host name or a glob")
        limit = limit or self.limit
        names = self._fast_names(pattern) if not limit else None
        if names is None:
            names = _select_names(self.tree or _tree_of(self), pattern, limit)
        if not names:
            raise InventoryError(
                f"{self.where}: host pattern {pattern!r}{f' with --limit {limit!r}' if limit else ''} matches no host",
                hint=f"groups here: {', '.join(sorted(self.groups)) or '(none)'}",
            )
        return [h for h in self.hosts if h.name in names]

    def _fast_names(self, pattern: str) -> set[str] | frozenset[str] | None:
        # A bare group or host name means what Ansible says (a group wins over a host of the same
        # name) without paying for ansible-core's import; anything else goes to Ansible.
        if not _PLAIN_NAME.match(pattern):
            return None
        if pattern in self.groups:
            return self.groups[pattern]
        return {pattern} if pattern in self._by_name else None

    def open_passwords(self, hosts: Iterable[Host]) -> None:
        """Decrypt the BMC passwords these hosts need, here and once (one per distinct password):
        forked BMC workers then inherit them instead of each running the vault script again."""
        for h in hosts:
            if h.bmc is None:
                continue
            try:
                h.bmc.password.reveal()
            except VaultError as exc:  # the vault password changed since the cache was written
                raise InventoryError(f"{self.where}: host {h.name}: bmc_password: {exc.message}",
                                     hint=exc.hint) from None

    def require_bmc(self, hosts: Iterable[Host]) -> None:
        """Before anything talks to BMCs: every selected host must name one."""
        for h in hosts:
            if h.bmc is None:
                raise InventoryError(f"{self.where}: host {h.name}: bmc_address is not set (needed to reach its BMC)",
                                     hint="set bmc_address (and bmc_user, bmc_password) in its host or group vars")


def _select_names(tree: Mapping[str, tuple[Sequence[str], Sequence[str]]], pattern: str,
                  limit: str | None) -> set[str]:
    from toolkit.inventory.ansible_source import SourceError, select_names

    try:
        return select_names(tree, pattern, limit)
    except SourceError as exc:
        raise InventoryError(exc.message, hint=exc.hint) from None


def _tree_of(inv: Inventory) -> dict[str, tuple[list[str], list[str]]]:
    return flat_tree([h.name for h in inv.hosts], inv.groups)


def flat_tree(hosts: Sequence[str], groups: Mapping[str, Iterable[str]]) -> dict[str, tuple[list[str], list[str]]]:
    """A group tree with every member placed directly in its group, in ``hosts`` order."""
    order = {h: i for i, h in enumerate(hosts)}
    no_children: list[str] = []
    tree = {g: (sorted((h for h in members if h in order), key=order.__getitem__), no_children)
            for g, members in groups.items() if g != "all"}
    return tree | {"all": (list(hosts), no_children)}


def match_pattern(pattern: str, hosts: Iterable[str], groups: Mapping[str, frozenset[str]],
                  limit: str | None = None) -> set[str]:
    """Names of the hosts an Ansible pattern selects from flat groups, matched by ansible-core."""
    if not pattern.strip():
        raise InventoryError("empty host pattern", hint="use 'all', a group, a host name or a glob")
    host_list = list(hosts)
    known = set(host_list)
    return {h for h in _select_names(flat_tree(host_list, groups), pattern, limit) if h in known}


# ---------------------------------------------------------------------------------------------
# loading: resolve with Ansible (or read the cache), check golden's fields, build Hosts


def default_cache_dir() -> Path:
    """GOLDEN_CACHE, else ``$XDG_CACHE_HOME/golden`` or ``~/.cache/golden``."""
    if os.environ.get("GOLDEN_CACHE"):
        return Path(os.environ["GOLDEN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "golden"


def _sources_of(path: Path | str | Sequence[Path | str]) -> tuple[str, ...]:
    items = [path] if isinstance(path, str | Path) else list(path)
    if not items:
        raise InventoryError("no inventory given", hint="pass -i PATH or set GOLDEN_INVENTORY")
    return tuple(str(p) for p in items)


def _check_exists(sources: Sequence[str]) -> None:
    for s in sources:
        if "," in s and not os.path.exists(s):
            continue  # an Ansible host list ("a,b,")
        if not os.path.exists(s):
            raise InventoryError(f"{s}: inventory file not found", hint="pass -i PATH or set GOLDEN_INVENTORY")


def load_inventory(path: Path | str | Sequence[Path | str], *, vault: VaultOptions | None = None,
                   cache_dir: Path | None = None, use_cache: bool = True) -> Inventory:
    """The inventory from one or more Ansible sources, resolved by ansible-core or read from the cache."""
    sources = _sources_of(path)
    _check_exists(sources)
    options = (vault or VaultOptions()).with_env()
    cdir = cache_dir or default_cache_dir()
    key, dynamic = cache.compute_key(sources, options.stamp(), cache.ansible_stamp())
    cpath = cache.cache_path(cdir, sources)
    with _no_gc():
        doc = cache.read(cpath, key) if use_cache else None
        if doc is not None and not _key_present(doc, cdir):
            doc = None  # its sealed passwords cannot be opened any more: resolve again
        if doc is None:
            doc = _resolve_doc(sources, options, cdir)
            if use_cache:
                try:
                    cache.write(cpath, key, dynamic, doc)
                except OSError:
                    pass  # a read-only cache folder costs speed, never correctness
        return _inventory_from_doc(sources, doc, options, cdir)


def _key_present(doc: Mapping[str, Any], cdir: Path) -> bool:
    sealed = any(pw and "sealed" in pw for pw in doc.get("pw", ()))
    return not sealed or (cdir / CACHE_KEY_FILE).exists()


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    # Building 10,000 hosts allocates ~100,000 objects and no cycles; the cyclic GC would rescan them
    # over and over (a third of a cached load's time).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_inventory(text: str, path: Path) -> Inventory:
    """Inventory text, loaded uncached; ``path`` only names it (in messages and Inventory.path).

    Ansible reads files, so the text goes to a private temporary file of the same name."""
    with tempfile.TemporaryDirectory(prefix="golden-inventory-") as tmp:
        src = Path(tmp) / (path.name or "inventory.yaml")
        src.write_text(text)
        try:
            inv = load_inventory(src, use_cache=False)
        except InventoryError as exc:
            raise InventoryError(exc.message.replace(str(src), str(path)), hint=exc.hint) from None
    return dataclasses.replace(inv, path=path, sources=(str(path),))


def _resolve_doc(sources: Sequence[str], options: VaultOptions, cdir: Path) -> dict[str, Any]:
    from toolkit.inventory.ansible_source import SourceError, resolve

    try:
        resolved = resolve(sources, options)
    except (SourceError, VaultError) as exc:
        raise InventoryError(exc.message, hint=exc.hint) from None
    where = ", ".join(sources)
    records = [_record(h, where, options, cdir) for h in resolved.hosts]
    _check_unique_macs(records, where)
    return _compact(sources, records, resolved.tree)


def _fail(origins: Mapping[str, str], where: str, host: str, exc: fields.FieldError | VaultError,
          var: str | None = None) -> InventoryError:
    var = var or getattr(exc, "var", None) or "?"
    problem = str(exc) if isinstance(exc, fields.FieldError) else f"{var}: {exc.message}"
    return InventoryError(f"{origins.get(var, where)}: host {host}: {problem}", hint=exc.hint)


def _record(h: Any, where: str, options: VaultOptions, cdir: Path) -> dict[str, Any]:
    """One host checked and made JSON-able: golden's fields typed, the password as ciphertext."""
    from toolkit.inventory.ansible_source import VaultValue

    values: dict[str, Any] = {}
    for var in fields.GOLDEN_VARS:
        value = h.vars.get(var)
        if isinstance(value, VaultValue) and var != "bmc_password":
            try:
                value = decrypt_vault(value.ciphertext, options)
            except VaultError as exc:
                raise _fail(h.origins, where, h.name, exc, var) from None
        values[var] = value
    try:
        mac = fields.check_mac(values["mac"])
        bmc = fields.check_bmc(values, _base_dir(h.origins.get("bmc_ca_file"), where))
        image = fields.check_image(values["image"])
        uefi = fields.check_bool("uefi", values["uefi"])
        install = fields.check_install(values["install"])
        disk = fields.check_disk(values)
    except fields.FieldError as exc:
        raise _fail(h.origins, where, h.name, exc) from None
    return {"name": h.name, "groups": list(h.groups), "mac": mac, "image": image, "uefi": uefi,
            "install": install.value, "disk": dataclasses.asdict(disk) if install == InstallMode.DISK else None,
            "bmc": None if bmc is None else {"address": bmc.address, "port": bmc.port, "protocol": bmc.protocol.value,
                                             "user": bmc.user, "verify": bmc.verify, "ca_file": bmc.ca_file},
            "pw": _password_record(h, where, options, cdir), "vars": _masked(h.vars),
            "origins": {k: v for k, v in h.origins.items() if k in fields.GOLDEN_VARS}}


def _base_dir(origin: str | None, where: str) -> Path:
    """Where a relative ``bmc_ca_file`` starts: the folder of the file that set it (Ansible's
    "file:line"), else that of the first inventory source."""
    for candidate in ((origin or "").rpartition(":")[0], origin or "", where.split(", ")[0]):
        path = Path(candidate)
        if candidate and path.exists():
            return path if path.is_dir() else path.parent
    return Path.cwd()


def _password_record(h: Any, where: str, options: VaultOptions, cdir: Path) -> dict[str, str] | None:
    from toolkit.inventory.ansible_source import VaultValue

    value = h.vars.get("bmc_password")
    if value is None:
        return None
    if isinstance(value, VaultValue):
        try:
            decrypt_vault(value.ciphertext, options)  # a wrong vault password fails now, naming the host
        except VaultError as exc:
            raise _fail(h.origins, where, h.name, exc, "bmc_password") from None
        return {"vault": value.ciphertext}
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InventoryError(f"{h.origins.get('bmc_password', where)}: host {h.name}: bmc_password must be a "
                             f"string, got {type(value).__name__}")
    return {"sealed": seal(str(value), cache_key(cdir / CACHE_KEY_FILE))}


def _masked(values: Mapping[str, Any]) -> dict[str, Any]:
    """Host vars as Host.vars and the cache hold them: vault values and anything named like a
    secret (ansible_password, netbox_token, ...) masked, since the cache is a file on disk."""
    from toolkit.inventory.ansible_source import VaultValue

    def mask(k: str, v: Any) -> Any:
        if isinstance(v, VaultValue) or (_SECRET_NAME.search(k) and v not in (None, "")):
            return "***"
        if isinstance(v, dict):
            return {str(kk): mask(str(kk), x) for kk, x in v.items()}
        if isinstance(v, list):
            return [mask(k, x) if isinstance(x, dict | list | VaultValue) else x for x in v]
        return v

    return {k: mask(k, v) for k, v in values.items()}


def _check_unique_macs(records: Sequence[Mapping[str, Any]], where: str) -> None:
    seen: dict[str, str] = {}
    for r in records:
        mac = r["mac"]
        if mac is None:
            continue
        if mac in seen:
            raise InventoryError(f"{r['origins'].get('mac', where)}: host {r['name']}: mac {mac} is also "
                                 f"host {seen[mac]}'s", hint="every machine needs its own MAC")
        seen[mac] = r["name"]


class _Table:
    """Distinct JSON values, stored once in the cache and referred to by index (10,000 hosts share a few)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._index: dict[str, int] = {}

    def ref(self, value: Any) -> int:
        key = json.dumps(value, sort_keys=True)
        if key not in self._index:
            self._index[key] = len(self.items)
            self.items.append(value)
        return self._index[key]


def _compact(sources: Sequence[str], records: Sequence[Mapping[str, Any]],
             tree: Mapping[str, tuple[Sequence[str], Sequence[str]]]) -> dict[str, Any]:
    """The cache document: one row per host, shared values (groups, BMC settings, vars) in tables."""
    groups, bmcs, pws, extras, disks = _Table(), _Table(), _Table(), _Table(), _Table()
    rows = []
    for r in records:
        b = r["bmc"]
        own = {k: v for k, v in r["vars"].items() if k in fields.GOLDEN_VARS}
        extra = {k: v for k, v in r["vars"].items() if k not in fields.GOLDEN_VARS}
        rows.append([r["name"], groups.ref(r["groups"]), r["mac"], r["image"], r["uefi"],
                     b["address"] if b else None,
                     bmcs.ref([b["port"], b["protocol"], b["user"], b["verify"], b["ca_file"]] if b else None),
                     pws.ref(r["pw"]), extras.ref(extra), own, r["install"], disks.ref(r["disk"])])
    return {"sources": list(sources), "hosts": rows, "groups": groups.items, "bmc": bmcs.items, "pw": pws.items,
            "vars": extras.items, "disks": disks.items,
            "tree": {g: [list(hs), list(cs)] for g, (hs, cs) in tree.items()}}


def _inventory_from_doc(sources: Sequence[str], doc: Mapping[str, Any], options: VaultOptions,
                        cdir: Path) -> Inventory:
    group_sets = [tuple(g) for g in doc["groups"]]
    secrets = [_password(pw, options, cdir) for pw in doc["pw"]]  # one Secret per distinct password
    extras = [MappingProxyType(v) for v in doc["vars"]]
    bmcs = doc["bmc"]
    disks = [None if d is None else DiskSettings(**d) for d in doc["disks"]]
    hosts = []
    for name, gi, mac, image, uefi, address, bi, pi, vi, own, install, di in doc["hosts"]:
        bmc = None
        if address is not None:
            port, protocol, user, verify, ca_file = bmcs[bi]
            bmc = BmcEndpoint(name=name, address=address, port=port, protocol=BmcProtocol(protocol), user=user,
                              password=secrets[pi], verify_tls=verify, ca_file=ca_file)
        hosts.append(Host(name=name, groups=group_sets[gi], mac=mac, bmc=bmc, image=image, uefi=uefi,
                          vars=ChainMap(own, extras[vi]), install=InstallMode(install), disk=disks[di]))
    tree = {g: (tuple(v[0]), tuple(v[1])) for g, v in doc["tree"].items()}
    members: dict[str, set[str]] = {g: set() for g in tree}
    members.setdefault("all", set())
    for h in hosts:
        members["all"].add(h.name)
        for g in h.groups:
            members.setdefault(g, set()).add(h.name)
    return Inventory(path=Path(sources[0]), hosts=tuple(hosts), groups={g: frozenset(m) for g, m in members.items()},
                     sources=tuple(sources), tree=tree)


def _password(pw: Mapping[str, str] | None, options: VaultOptions, cdir: Path) -> Secret:
    # Decrypted on first reveal(): a cached load of 10,000 hosts decrypts nothing it does not use.
    if pw is None:
        return Secret("")
    if "vault" in pw:
        ciphertext = pw["vault"]
        return LazySecret(lambda: decrypt_vault(ciphertext, options))
    token = pw["sealed"]
    return LazySecret(lambda: unseal(token, cache_key(cdir / CACHE_KEY_FILE)))


def resolve_inventory_sources(cli_value: str | Path | Sequence[str | Path] | None,
                              settings: Settings) -> tuple[Path, ...]:
    """Every -i source given (repeatable, like ``ansible -i``), else the first place that names some
    (``toolkit.inventory.selection``); never the lab's unless asked for."""
    return find_sources(cli_value, settings)


def resolve_inventory_path(cli_value: str | Path | Sequence[str | Path] | None, settings: Settings) -> Path:
    """The first inventory source (the one messages name)."""
    return resolve_inventory_sources(cli_value, settings)[0]
