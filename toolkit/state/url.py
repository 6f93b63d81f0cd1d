"""State URLs: which backend a ``state_url`` names, and the URL (or a driver message) without its password.

Kept apart from ``postgres.py`` so SQLite users never import psycopg (a fifth of a second per command).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

_PASSWORD_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.I)


def is_postgres_url(url: str) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL."""
    return url.startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the authority and in ``password=`` parameters)."""
    url = _PASSWORD_KV.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "postgresql://***"
    if password is None:
        return url
    user, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}"))


def scrub(text: str, url: str) -> str:
    """A driver message with the URL's password removed, whatever form it takes there."""
    try:
        password = urlsplit(url).password if is_postgres_url(url) else None
    except ValueError:
        password = None
    text = _PASSWORD_KV.sub(r"\1***", text)
    for form in {password, unquote(password)} if password else ():
        text = text.replace(form, "***")  # as written in the URL, and as the driver would have decoded it
    return text
