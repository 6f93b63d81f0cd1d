"""Lifecycle hooks of a reimage: the operators' own playbooks that drain, verify and return a host.

``golden.yaml``::

    rollout:
      hooks:
        - hosts: web                      # an Ansible host pattern
          drain: playbooks/lb-drain.yml   # take the host out of rotation (before its power cycle)
          verify: playbooks/web-verify.yml  # check the service from outside (after its boot report)
          undrain: playbooks/lb-enable.yml  # return it (only after verify passed)
          timeout: 5m                     # per hook run (s, m, h)
          settle: 10s                     # after the drain, before the power cycle: connections finish
          max_unavailable: 1              # or "25%" of the hosts the pattern matches

A host matched by several entries runs every drain (in file order), every verify, and every
undrain (in reverse order), and obeys every budget (so the strictest wins). This module is pure:
it checks the section and plans which playbooks and budgets apply to which host. Running a
playbook is ``toolkit.core.playbook``; holding budgets against the state database is
``toolkit.rollout.rotation``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError

from toolkit.core.duration import parse_duration
from toolkit.core.errors import InputError
from toolkit.rollout.plan import Amount

KINDS = ("drain", "verify", "undrain")
MAX_TIMEOUT_S = 24 * 3600.0
# What an Ansible host pattern may hold: names, globs, ranges, unions, intersections, exclusions, a
# leading ~ for a regex. Whitespace, quotes and shell or YAML punctuation never belong in one.
_UNIT = re.compile(r"[0-9][smhdw]$")
_PATTERN = re.compile(r"^[A-Za-z0-9_.*?:,&!~\[\]\-^$|()+{}\\/@]+$")


class _HookModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hosts: str
    drain: str | None = None
    verify: str | None = None
    undrain: str | None = None
    timeout: str = "5m"
    settle: str | None = None
    max_unavailable: StrictInt | StrictStr | None = None  # strict: YAML's true is not 1


class _RolloutModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hooks: list[_HookModel] = []


@dataclass(frozen=True)
class Hook:
    """One checked entry of ``rollout.hooks``: playbooks as absolute paths, durations in seconds."""

    index: int
    pattern: str
    drain: Path | None = None
    verify: Path | None = None
    undrain: Path | None = None
    timeout_s: float = 300.0
    settle_s: float = 0.0
    max_unavailable: Amount | None = None

    def playbook(self, kind: str) -> Path | None:
        """The playbook of this kind (drain, verify, undrain) as written (relative to the project), if any."""
        return getattr(self, kind)

    def to_dict(self) -> dict[str, Any]:
        """As the journal stores it (a resumed run uses the hooks its plan had)."""
        return {"index": self.index, "pattern": self.pattern, "timeout_s": self.timeout_s, "settle_s": self.settle_s,
                "max_unavailable": str(self.max_unavailable) if self.max_unavailable else None,
                **{k: str(self.playbook(k)) if self.playbook(k) else None for k in KINDS}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Hook:
        """The hook ``to_dict`` stored."""
        mu = d.get("max_unavailable")
        drain, verify, undrain = (Path(d[k]) if d.get(k) else None for k in KINDS)
        return cls(int(d["index"]), str(d["pattern"]), drain, verify, undrain, timeout_s=float(d["timeout_s"]),
                   settle_s=float(d.get("settle_s") or 0.0),
                   max_unavailable=Amount.parse(mu, "max_unavailable") if mu else None)


def check_pattern(pattern: str, where: str) -> str:
    """The pattern, stripped; InputError for an empty one, a stray character or unbalanced brackets."""
    p = pattern.strip()
    if not p:
        raise InputError(f"{where}: empty host pattern", hint="use a group, a host name or a glob, e.g. web")
    if not _PATTERN.match(p):
        raise InputError(f"{where}: {pattern!r} is not an Ansible host pattern (it holds a space, quote or "
                         "other character patterns never contain)", hint="e.g. web, web:&rack1, web[0:9]")
    if p.count("[") != p.count("]") or p.count("(") != p.count(")"):
        raise InputError(f"{where}: {pattern!r} has unbalanced brackets", hint="e.g. web[0:9]")
    return p


def parse_budget(value: int | str, where: str) -> Amount:
    """``max_unavailable``: a whole number >= 1, or a percentage from 1% to 100%."""
    if isinstance(value, bool):
        raise InputError(f"{where}: expected a number or a percentage like 25%, got {value!r}")
    amount = Amount.parse(str(value), where)
    if amount.value < 1:
        raise InputError(f"{where}: {value!r} lets no host out of rotation, so none could ever be reimaged",
                         hint="use 1 or more, or a percentage from 1% to 100%")
    return amount


def _duration(text: str, where: str, hi: float) -> float:
    """A hook's duration: with its unit, always (``5m``): a bare ``300`` in a file is a guess at what was meant."""
    if not _UNIT.search(text.strip()):
        raise InputError(f"{where} needs a unit (s, m or h), like 5m; got {text!r}")
    return parse_duration(text, where, lo=1.0, hi=hi)


def _hook(i: int, m: _HookModel, project: Path) -> Hook:
    where = f"golden.yaml: .rollout.hooks[{i}]"
    pattern = check_pattern(m.hosts, f"{where}.hosts")
    books: dict[str, Path | None] = {}
    for kind in KINDS:
        text = getattr(m, kind)
        if text is None:
            books[kind] = None
            continue
        path = Path(text) if Path(text).is_absolute() else project / text
        if not path.is_file():
            raise InputError(f"{where}.{kind}: no playbook {text} (looked for {path})",
                             hint="playbook paths are relative to the project folder")
        books[kind] = Path(text)  # as written: a resumed run resolves it against its own project
    if (books["drain"] is None) != (books["undrain"] is None):
        raise InputError(f"{where}: has a {'drain' if books['drain'] else 'undrain'} playbook but no "
                         f"{'undrain' if books['drain'] else 'drain'} one; a host drained must have a way back",
                         hint="give both drain and undrain, or neither")
    if not any(books.values()) and m.max_unavailable is None:
        raise InputError(f"{where}: names no playbook and no max_unavailable, so it does nothing",
                         hint="give drain/verify/undrain playbooks, a max_unavailable, or remove the entry")
    timeout = _duration(m.timeout, f"{where}.timeout", MAX_TIMEOUT_S)
    settle = _duration(m.settle, f"{where}.settle", 3600.0) if m.settle else 0.0
    budget = parse_budget(m.max_unavailable, f"{where}.max_unavailable") if m.max_unavailable is not None else None
    return Hook(i, pattern, books["drain"], books["verify"], books["undrain"], timeout, settle, budget)


def load_hooks(section: Any, project: Path) -> tuple[Hook, ...]:
    """The checked hooks of a ``rollout:`` section (None: no hooks); InputError naming every problem's path."""
    if section is None:
        return ()
    try:
        model = _RolloutModel.model_validate(section)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
            what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            problems.append(f"golden.yaml: .rollout{loc}: {what}")
        raise InputError("; ".join(problems), hint="a hook takes: " + ", ".join(_HookModel.model_fields)) from None
    return tuple(_hook(i, m, project) for i, m in enumerate(model.hooks))


# ---- planning: which hooks and budgets apply to which host ----

@dataclass(frozen=True)
class Group:
    """The hosts one hook pattern matches in the inventory, and how many of them may be out at once."""

    key: str  # the pattern: two entries with the same pattern are one group
    members: frozenset[str]
    budget: int | None  # None: no max_unavailable for this pattern

    def to_dict(self) -> dict[str, Any]:
        """The group as --dry-run --json shows it."""
        return {"key": self.key, "budget": self.budget, "size": len(self.members)}


@dataclass(frozen=True)
class HookPlan:
    """Per host: the hooks it runs (file order) and the groups it counts against."""

    hooks: tuple[Hook, ...] = ()
    groups: tuple[Group, ...] = ()
    by_host: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # host -> hook indexes

    def hooks_of(self, host: str) -> tuple[Hook, ...]:
        """The entries matching ``host``, in file order."""
        return tuple(self.hooks[i] for i in self.by_host.get(host, ()))

    def playbooks(self, host: str, kind: str) -> list[tuple[Hook, Path]]:
        """The (hook, playbook) pairs of one kind for a host; undrains in reverse order (the last drained first)."""
        pairs = [(h, p) for h in self.hooks_of(host) if (p := h.playbook(kind)) is not None]
        return list(reversed(pairs)) if kind == "undrain" else pairs

    def groups_of(self, host: str) -> list[Group]:
        """The groups ``host`` counts against."""
        keys = {h.pattern for h in self.hooks_of(host)}
        return [g for g in self.groups if g.key in keys]

    def settle_s(self, host: str) -> float:
        """How long to wait after ``host``'s drain before its power cycle (the longest of its entries)."""
        return max((h.settle_s for h in self.hooks_of(host) if h.drain), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """As the journal stores it and --dry-run --json shows it."""
        return {"hooks": [h.to_dict() for h in self.hooks],
                "groups": [{**g.to_dict(), "members": sorted(g.members)} for g in self.groups],
                "by_host": {k: list(v) for k, v in sorted(self.by_host.items())}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> HookPlan:
        """The plan ``to_dict`` stored (an empty one for none)."""
        if not d:
            return cls()
        return cls(tuple(Hook.from_dict(h) for h in d["hooks"]),
                   tuple(Group(g["key"], frozenset(g["members"]), g["budget"]) for g in d["groups"]),
                   {k: tuple(v) for k, v in d["by_host"].items()})


def plan_hooks(hooks: Sequence[Hook], select: Callable[[str], set[str]], hosts: Sequence[str]) -> HookPlan:
    """Which hooks apply to each of ``hosts``; ``select(pattern)`` is the inventory's own matching.

    A budget given as a percentage is of every host the pattern matches in the inventory (not
    only the selected ones), rounded down but at least 1, so a group can always move. A pattern
    that matches no host of the inventory is an error: a typo must not let live hosts reboot undrained.
    """
    if not hooks:
        return HookPlan()
    wanted = set(hosts)
    members: dict[str, set[str]] = {}
    budgets: dict[str, int | None] = {}
    by_host: dict[str, list[int]] = {}
    for h in hooks:
        matched = members.setdefault(h.pattern, select(h.pattern))
        if not matched:
            raise InputError(f"golden.yaml: .rollout.hooks[{h.index}].hosts: {h.pattern!r} matches no host of the "
                             "inventory", hint="fix the pattern, or remove the entry if these hosts are gone")
        if h.max_unavailable is not None:
            n = h.max_unavailable.of(len(matched), at_least_one=True)
            old = budgets.get(h.pattern)
            budgets[h.pattern] = n if old is None else min(old, n)
        else:
            budgets.setdefault(h.pattern, None)
        for name in sorted(matched & wanted):
            by_host.setdefault(name, []).append(h.index)
    groups = tuple(Group(k, frozenset(v), budgets[k]) for k, v in members.items())
    return HookPlan(tuple(hooks), groups, {k: tuple(v) for k, v in by_host.items()})

