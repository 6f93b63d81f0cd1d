"""What changed between two builds: packages (added, removed, upgraded, downgraded, with both
versions and the archive each came from; security-suite updates marked and listed first), roles
and spec. Pure: it compares two manifests; resolving references lives with the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from toolkit.image.debversion import compare_versions
from toolkit.image.manifest import Manifest


class Change(StrEnum):
    """How a package changed between two builds."""
    ADDED = "added"
    REMOVED = "removed"
    UPGRADED = "upgraded"
    DOWNGRADED = "downgraded"


@dataclass(frozen=True)
class PackageChange:
    """One package's change between two builds, and whether a security archive brought it."""
    package: str
    change: Change
    old: str | None
    new: str | None
    archive: str  # where the new version came from (the old one's for a removal)
    security: bool


@dataclass(frozen=True)
class RoleChange:
    """One role's change between two builds."""
    role: str
    change: str  # added | removed | changed
    old: str | None
    new: str | None


@dataclass(frozen=True)
class BuildDiff:
    """What changed between two builds: packages, roles, spec and inputs."""
    old: str  # image/build-id
    new: str
    packages: tuple[PackageChange, ...]
    roles: tuple[RoleChange, ...]
    spec: tuple[str, ...]  # top-level spec keys whose value changed
    inputs: tuple[str, ...] = field(default=())  # other inputs that changed (snapshot, DIB version, ...)

    @property
    def security_updates(self) -> tuple[PackageChange, ...]:
        """The changes a security archive brought."""
        return tuple(p for p in self.packages if p.security and p.change != Change.REMOVED)

    @property
    def empty(self) -> bool:
        """True when nothing but the build id differs."""
        return not (self.packages or self.roles or self.spec)


def is_security(archive: str) -> bool:
    """True for a security archive (``bookworm-security``)."""
    return archive.endswith("-security")


def _package_change(name: str, old: str | None, new: str | None, archives: dict[str, str],
                    old_archives: dict[str, str]) -> PackageChange | None:
    if old == new:
        return None
    if old is None:
        kind = Change.ADDED
    elif new is None:
        kind = Change.REMOVED
    else:
        kind = Change.UPGRADED if compare_versions(new, old) > 0 else Change.DOWNGRADED
    archive = (old_archives if new is None else archives).get(name, "")
    return PackageChange(name, kind, old, new, archive, is_security(archive) and new is not None)


def diff_packages(old: dict[str, str], new: dict[str, str], archives: dict[str, str],
                  old_archives: dict[str, str] | None = None) -> tuple[PackageChange, ...]:
    """Package changes, security updates first, then by name."""
    changes = [c for name in sorted(set(old) | set(new))
               if (c := _package_change(name, old.get(name), new.get(name), archives, old_archives or {}))]
    return tuple(sorted(changes, key=lambda c: (not c.security, c.package)))


def diff_roles(old: dict[str, str], new: dict[str, str]) -> tuple[RoleChange, ...]:
    """The roles added, removed or changed (by their content hash)."""
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a != b:
            out.append(RoleChange(name, "added" if a is None else "removed" if b is None else "changed", a, b))
    return tuple(out)


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)))


def diff_manifests(old: Manifest, new: Manifest) -> BuildDiff:
    """What changed from ``old`` to ``new``."""
    inputs = tuple(k for k in _changed_keys(old.inputs, new.inputs) if k not in ("roles", "spec_sha256"))
    return BuildDiff(
        old=f"{old.image}/{old.build_id}", new=f"{new.image}/{new.build_id}",
        packages=diff_packages(old.packages, new.packages, new.package_archives, old.package_archives),
        roles=diff_roles(old.roles, new.roles), spec=_changed_keys(old.spec, new.spec), inputs=inputs,
    )
