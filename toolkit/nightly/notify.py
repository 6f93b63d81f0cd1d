"""``--notify URL``: POST the JSON report to a webhook once the nightly is done.

Best effort (fail open: the report is already in the run record); a refusal or timeout is
returned as words for the CLI to warn about.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from toolkit.core.errors import InputError

TIMEOUT = 30.0


def check_notify_url(url: str) -> str:
    """``url``; InputError unless it is an http(s) URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise InputError(f"--notify {url!r}: expected an http(s) URL, e.g. https://chat.example/hooks/golden")
    return url


def post_report(url: str, body: str) -> str | None:
    """None when the receiver answered 2xx; otherwise what went wrong."""
    headers = {"Content-Type": "application/json", "User-Agent": "golden-nightly"}
    req = urllib.request.Request(check_notify_url(url), data=body.encode(), method="POST", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:  # noqa: S310 - checked http(s) URL
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
