"""Value types of image specs: names, package names, mirror URLs, paths, bounded strings.

Spec values end up as ``disk-image-create`` arguments, folder names, apt sources lines and
``systemctl`` arguments, so each one is checked to be exactly one thing of its kind: never an
option, never a path where a name belongs, never two entries joined into one.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator


def show(value: str, limit: int = 40) -> str:
    """A user's value quoted for an error message, cut short so a hostile one cannot flood it."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _matching(pattern: str, expected: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"expected {expected}, got {show(value)}")
        return value

    return AfterValidator(check)


# Element and role names end up as DIB arguments and folder names: never an option, never a path.
ElementName = Annotated[str, _matching(
    r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
    "an element name (letters, digits, '_', '.', '-'; starting with a letter or digit; at most 64)")]
RoleName = Annotated[str, _matching(
    r"[a-z][a-z0-9_]{0,63}", "a role name (lowercase letters, digits, '_'; starting with a letter; at most 64)")]
# One Debian package (policy 5.6.1), optionally pinned; DIB joins them with ',' into -p and splits
# them again on ',' and whitespace, so neither may appear in one.
PackageName = Annotated[str, _matching(
    r"[a-z0-9][a-z0-9+.-]{1,127}(=[0-9][A-Za-z0-9.+~:-]{0,127})?",
    "one Debian package name (lowercase letters, digits, '+', '-', '.'), optionally NAME=VERSION")]
# systemctl receives it as an argument: it must not look like an option.
UnitName = Annotated[str, _matching(
    r"[A-Za-z0-9_.@:\\][A-Za-z0-9_.@:\\-]{0,255}", "a systemd unit name such as nginx.service")]


def check_mirror_url(value: str) -> str:
    """The URL unchanged, or ValueError: it lands in an apt sources line and in the manifest, so it
    is one http(s) URL with a host, no whitespace or control characters, and no password."""
    if len(value) > 2048 or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError(f"a mirror URL has no whitespace or control characters, got {show(value)}")
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise ValueError(f"not a URL: {show(value)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {show(value)}")
    if parts.username or parts.password:
        raise ValueError("a mirror URL must not carry credentials (it is recorded in the manifest)")
    if parts.query or parts.fragment:
        raise ValueError(f"a mirror URL has no query or fragment, got {show(value)}")
    return value


MirrorUrl = Annotated[str, AfterValidator(check_mirror_url)]


def check_chroot_path(value: str) -> str:
    """``value``; ValueError unless it is an absolute path inside the image without '..'."""
    if not value.startswith("/") or ".." in value.split("/") or len(value) > 4096:
        raise ValueError(f"expected an absolute path inside the image without '..', got {show(value)}")
    return value


def check_allow_path(value: str) -> str:
    """A drift allowlist entry: an absolute path (shell globs allowed) below the root, never the root itself."""
    check_chroot_path(value)
    if not value.isprintable() or value.rstrip("/*") == "":
        raise ValueError(f"expected a path below / (globs allowed), not the whole file system, got {show(value)}")
    return value


def check_url_path(value: str) -> str:
    """``value``; ValueError unless it is a URL path with no whitespace."""
    if not value.startswith("/") or len(value) > 2048 or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError(f"expected a URL path starting with '/' and no whitespace, got {show(value)}")
    return value


def one_line(value: str) -> str:
    """Text shown in tables and terminals: no newlines, no escape sequences or other control characters."""
    if not value.isprintable():
        raise ValueError(f"expected one line of text without control characters, got {show(value)}")
    return value


def no_nul(value: str) -> str:
    """``value``; ValueError when it holds a NUL."""
    if "\0" in value:
        raise ValueError("must not contain a NUL character")
    return value


def no_duplicates(values: list[str]) -> list[str]:
    """The list unchanged, or ValueError naming each repeated entry (linear: 40,000 entries in ms)."""
    repeated = sorted(v for v, n in Counter(values).items() if n > 1)
    if repeated:
        more = f" and {len(repeated) - 10} more" if len(repeated) > 10 else ""
        raise ValueError(f"listed more than once: {', '.join(show(v) for v in repeated[:10])}{more}")
    return values
