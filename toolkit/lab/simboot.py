"""The netboot of a simulated (--no-vm) lab machine, as it looks on the wire.

What firmware, iPXE, the initramfs and the golden agent of a real node send to the boot server,
without the machine, in the order and with the timing of a real boot: at power on fetch
``/boot/<mac>.ipxe`` (firmware and iPXE ask within seconds), read the kernel, initrd and squashfs
URLs it names and fetch the first MiB of each (enough to exercise the artifact path at scale),
then, once the machine's boot time has passed, POST the agent's report with the per-boot token
the script carried. Health checks cannot run without a
machine, so the image's boot-stage checks are reported as passed, marked "simulated".
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("golden.simboot")

FETCH_BYTES = 1 << 20
AGENT_VERSION = "sim-1"


@dataclass(frozen=True)
class BootScript:
    """A parsed iPXE boot script: kernel and initrd URLs and the kernel parameters."""
    kernel_url: str
    initrd_url: str
    params: dict[str, str]

    @property
    def squashfs_url(self) -> str | None:
        """The root file system's URL (``fetch=``), or None."""
        return self.params.get("fetch")


def parse_boot_script(text: str) -> BootScript | None:
    """The URLs and kernel parameters of a golden iPXE script; None for a script that boots nothing."""
    kernel = initrd = None
    params: dict[str, str] = {}
    for raw in text.splitlines():
        words = raw.split()
        if not words:
            continue
        if words[0] == "kernel" and len(words) > 1:
            kernel = words[1]
            for w in words[2:]:
                key, sep, value = w.partition("=")
                params[key.removeprefix("golden.")] = value if sep else ""
        elif words[0] == "initrd":
            urls = [w for w in words[1:] if "://" in w]
            initrd = urls[0] if urls else initrd
    if not kernel or not initrd:
        return None
    return BootScript(kernel, initrd, params)


def _http_only(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise urllib.error.URLError(f"not an http(s) URL: {url!r}")
    return url


def _get(url: str, timeout: float, nbytes: int | None = None) -> bytes:
    headers = {"Range": f"bytes=0-{nbytes - 1}"} if nbytes else {}
    req = urllib.request.Request(_http_only(url), headers=headers)  # noqa: S310 (checked above)
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        return bytes(resp.read(nbytes if nbytes else -1))


def _simulated_checks(boot_url: str, image: str, build: str, timeout: float) -> dict[str, dict[str, Any]]:
    try:
        manifest = json.loads(_get(f"{boot_url}/store/{image}/{build}/manifest.json", timeout))
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    checks = manifest.get("spec", {}).get("checks", []) if isinstance(manifest, dict) else []
    return {c["name"]: {"passed": True, "detail": "simulated"} for c in checks
            if isinstance(c, dict) and (c.get("http") or c.get("unit_active"))}


def netboot(boot_url: str, mac: str, *, timeout: float = 30.0, fetch_bytes: int = FETCH_BYTES,
            boot_time: float = 0.0, sleep: Callable[[float], None] = time.sleep) -> str:
    """Boot once through the boot server; return what happened (for the BMC process's log)."""
    started = time.time()
    try:
        text = _get(f"{boot_url}/boot/{mac}.ipxe", timeout).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return f"{mac}: no boot script ({exc})"
    script = parse_boot_script(text)
    if script is None:
        return f"{mac}: the boot server had nothing to boot"
    try:
        for url in (script.kernel_url, script.initrd_url, script.squashfs_url):
            if url:
                _get(url, timeout, fetch_bytes)
    except (urllib.error.URLError, OSError) as exc:
        return f"{mac}: artifact fetch failed ({exc})"
    remaining = boot_time - (time.time() - started)
    if remaining > 0:
        sleep(remaining)  # the kernel, the initramfs and systemd until the agent runs
    p = script.params
    report = {
        "mac": p.get("mac", mac), "build_id": p.get("build", ""), "image": p.get("image", ""),
        "token": p.get("token", ""), "hostname": f"sim-{mac.replace(':', '')}",
        "booted_at": datetime.fromtimestamp(started, UTC).replace(microsecond=0).isoformat(),
        "uptime_s": round(time.time() - started, 3), "drift": [], "agent_version": AGENT_VERSION,
        "checks": _simulated_checks(boot_url, p.get("image", ""), p.get("build", ""), timeout),
    }
    url = p.get("report") or f"{boot_url}/report"
    try:
        req = urllib.request.Request(_http_only(url), data=json.dumps(report).encode(),  # noqa: S310
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return f"{mac}: booted {p.get('build')}, report HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"{mac}: booted {p.get('build')}, report rejected HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{mac}: report failed ({exc})"
