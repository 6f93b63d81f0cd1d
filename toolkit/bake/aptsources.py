"""Read the package mirror from the build host's own apt sources.

We never write a mirror host name into the repository: the mirror comes from the spec, the
configuration, or (default) whatever this host already uses for the same release.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit.core.errors import InputError

SOURCES_LIST = Path("/etc/apt/sources.list")
SOURCES_DIR = Path("/etc/apt/sources.list.d")


@dataclass(frozen=True)
class AptSource:
    """One apt source of the build host: its URI, suite and components."""
    uri: str
    suite: str
    components: tuple[str, ...]


def _parse_one_line(text: str) -> list[AptSource]:
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        parts = line.split()[1:]
        if parts and parts[0].startswith("["):
            while parts and not parts[0].endswith("]"):
                parts.pop(0)
            parts.pop(0)
        if len(parts) >= 2:
            out.append(AptSource(parts[0].rstrip("/"), parts[1], tuple(parts[2:])))
    return out


def _parse_deb822(text: str) -> list[AptSource]:
    out = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw:
                continue
            key, _, value = raw.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                out.append(AptSource(uri.rstrip("/"), suite, tuple(fields.get("components", "").split())))
    return out


def host_sources(sources_list: Path = SOURCES_LIST, sources_dir: Path = SOURCES_DIR) -> list[AptSource]:
    """The build host's apt sources, one-line and deb822 files alike."""
    found: list[AptSource] = []
    if sources_list.exists():
        found += _parse_one_line(sources_list.read_text(errors="replace"))
    if sources_dir.is_dir():
        for f in sorted(sources_dir.iterdir()):
            if f.suffix == ".list":
                found += _parse_one_line(f.read_text(errors="replace"))
            elif f.suffix == ".sources":
                found += _parse_deb822(f.read_text(errors="replace"))
    return found


@dataclass(frozen=True)
class Mirrors:
    """The package mirrors a bake uses: the main archive and the security one (None: none)."""
    main: str
    security: str | None


def host_mirrors(release: str, sources: list[AptSource] | None = None) -> Mirrors:
    """The host's mirror for ``release`` and for ``release-security``.

    Raises InputError when the host has no source for that release: then the spec or
    golden.yaml must name one (``base.mirror`` / ``mirror``).
    """
    sources = host_sources() if sources is None else sources
    main = next((s.uri for s in sources if s.suite == release), None)
    if main is None:
        # A host on another release still tells us which Debian mirror it trusts.
        main = next((s.uri for s in sources if "-" not in s.suite and "main" in s.components), None)
    if main is None:
        raise InputError(
            f"no package mirror for {release!r} in this host's apt sources",
            hint="set base.mirror in the image spec or 'mirror:' in golden.yaml (or GOLDEN_MIRROR)",
        )
    security = next((s.uri for s in sources if s.suite == f"{release}-security"), None)
    return Mirrors(main=main, security=security)
