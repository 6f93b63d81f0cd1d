"""Has anything changed upstream since a build was baked? Answered from the mirror's indexes, in seconds.

A build's manifest lists every installed package with its version. apt installs, for each package,
its *candidate*: the highest version any configured suite offers (all our suites have the default
pin). So a rebake today would change the package set exactly when some installed package has a
candidate newer than the installed version. We read the candidates from the same suites the bake
configures (``<release>``, ``<release>-updates`` on the main mirror, ``<release>-security`` on the
security mirror): each suite's ``InRelease`` (a few hundred KB, signature checked with ``gpgv``
against Debian's archive keyring when it is installed) names its ``Packages`` index by sha256; an
index is downloaded only when that sha256 is new to us, and its parsed form is cached by it.

What this does not see (and the report says so): a package that a newer dependency would pull in
shows up only as its dependant's upgrade, and a new package of priority required that debootstrap
would add is not looked for. Network I/O and the cache are here; parsing is pure.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import lzma
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.bake.origins import stanzas
from toolkit.core.errors import GoldenError
from toolkit.core.fsutil import atomic_write
from toolkit.core.run import run, which
from toolkit.image.debversion import compare_versions

log = logging.getLogger("golden.nightly")

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
FETCH_TIMEOUT = 60.0
MAX_INDEX_BYTES = 256 << 20
ARCH = "amd64"
_COMPRESSIONS = (".xz", ".gz", "")  # preference: smallest download first


class UpstreamError(GoldenError):
    """The mirror's indexes could not be read or verified; nothing can be said about upstream changes."""


@dataclass(frozen=True)
class Suite:
    """An apt suite of a mirror to read package indexes from."""
    mirror: str  # a checked mirror URL (toolkit.bake.build.resolve_mirrors)
    name: str  # bookworm, bookworm-updates, bookworm-security
    components: tuple[str, ...] = ("main",)


@dataclass(frozen=True)
class Upgrade:
    """A package the mirror has a newer version of."""
    package: str
    installed: str
    candidate: str
    suite: str


@dataclass(frozen=True)
class UpstreamState:
    """Candidate versions across the suites, with the index digests they came from."""

    candidates: dict[str, tuple[str, str]]  # package -> (version, suite)
    indexes: dict[str, str]  # "<suite>/<component>" -> sha256 of its Packages index
    verified: bool  # every InRelease passed gpgv


# ---- pure ----

def release_files(inrelease: str) -> dict[str, tuple[str, int]]:
    """``path -> (sha256, size)`` from the SHA256 section of a Release/InRelease file."""
    out: dict[str, tuple[str, int]] = {}
    in_sha = False
    for line in inrelease.splitlines():
        if not line.startswith(" "):
            in_sha = line.strip() == "SHA256:"
            continue
        if in_sha:
            parts = line.split()
            if len(parts) == 3 and len(parts[0]) == 64 and parts[1].isdigit():
                out[parts[2]] = (parts[0], int(parts[1]))
    return out


def pick_index(files: dict[str, tuple[str, int]], component: str, arch: str = ARCH) -> tuple[str, str, str] | None:
    """``(path, sha256, sha256 of the uncompressed index)`` of the best Packages index of a component."""
    base = f"{component}/binary-{arch}/Packages"
    plain = files.get(base)
    for ext in _COMPRESSIONS:
        if base + ext in files:
            return base + ext, files[base + ext][0], plain[0] if plain else ""
    return None


def index_versions(text: str) -> dict[str, str]:
    """package -> highest version an index offers."""
    out: dict[str, str] = {}
    for s in stanzas(text):
        pkg, ver = s.get("Package"), s.get("Version")
        if pkg and ver and (pkg not in out or compare_versions(ver, out[pkg]) > 0):
            out[pkg] = ver
    return out


def merge_candidates(per_suite: dict[str, dict[str, str]]) -> dict[str, tuple[str, str]]:
    """package -> (candidate version, suite): the highest version of any suite, as apt picks at equal pins."""
    out: dict[str, tuple[str, str]] = {}
    for suite, versions in sorted(per_suite.items()):
        for pkg, ver in versions.items():
            cur = out.get(pkg)
            if cur is None or compare_versions(ver, cur[0]) > 0:
                out[pkg] = (ver, suite)
    return out


def pending_upgrades(installed: dict[str, str], candidates: dict[str, tuple[str, str]]) -> list[Upgrade]:
    """Installed packages whose candidate is newer; ``name:arch`` keys (DIB's multi-arch names) match by name.

    A package no suite offers (built in the image, or dropped from the archive) is no upgrade: apt
    would leave it as it is.
    """
    out = []
    for key, ver in sorted(installed.items()):
        cand = candidates.get(key.split(":", 1)[0])
        if cand is not None and compare_versions(cand[0], ver) > 0:
            out.append(Upgrade(key, ver, cand[0], cand[1]))
    return sorted(out, key=lambda u: (not u.suite.endswith("-security"), u.package))


def suites_for(release: str, main: str, security: str | None) -> list[Suite]:
    """The suites a bake configures (toolkit.bake.dib.apt_sources_conf), in the same order."""
    out = [Suite(main, release), Suite(main, f"{release}-updates")]
    if security:
        out.append(Suite(security, f"{release}-security"))
    return out


# ---- acting: network and cache ----

Fetch = Callable[[str], bytes]


def http_fetch(url: str) -> bytes:
    """The body at ``url``, at most MAX_INDEX_BYTES; UpstreamError otherwise."""
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as resp:  # noqa: S310 - checked mirror URL
            data = resp.read(MAX_INDEX_BYTES + 1)
    except (urllib.error.URLError, OSError) as exc:
        raise UpstreamError(f"could not fetch {url}: {getattr(exc, 'reason', exc)}",
                            hint="check the mirror (base.mirror in the spec, mirror: in golden.yaml, "
                                 "or this host's apt sources)") from None
    if len(data) > MAX_INDEX_BYTES:
        raise UpstreamError(f"{url}: larger than {MAX_INDEX_BYTES >> 20} MiB, not an index")
    return data


def _verify(inrelease: bytes, url: str, scratch: Path) -> bool:
    """True when gpgv accepts the signature; False when it cannot be checked here; UpstreamError when bad."""
    if which("gpgv") is None or not KEYRING.is_file():
        return False
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "InRelease.check"
    path.write_bytes(inrelease)
    res = run(["gpgv", "--keyring", KEYRING, path], capture=True, check=False)
    path.unlink(missing_ok=True)
    if res.returncode != 0:
        raise UpstreamError(f"{url}: the signature does not verify against {KEYRING}",
                            hint="the mirror may be tampered with or stale; nothing is baked from it")
    return True


def _decompress(path: str, data: bytes) -> bytes:
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    return data


def _suite_versions(suite: Suite, component: str, files: dict[str, tuple[str, int]], cache: Path,
                    fetch: Fetch) -> tuple[str, dict[str, str]]:
    picked = pick_index(files, component)
    if picked is None:
        raise UpstreamError(f"{suite.mirror}/dists/{suite.name}: no {component}/binary-{ARCH}/Packages index listed")
    path, sha, _ = picked
    cached = cache / f"{sha}.json"
    if cached.is_file():
        try:
            return sha, json.loads(cached.read_text())
        except ValueError:
            cached.unlink()
    url = f"{suite.mirror}/dists/{suite.name}/{path}"
    data = fetch(url)
    if hashlib.sha256(data).hexdigest() != sha:
        raise UpstreamError(f"{url}: sha256 differs from the one its InRelease names (mirror mid-sync?)",
                            hint="run the nightly again once the mirror has finished syncing")
    versions = index_versions(_decompress(path, data).decode("utf-8", errors="replace"))
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(cached, json.dumps(versions, separators=(",", ":")), fsync=False)
    return sha, versions


def read_upstream(suites: list[Suite], cache: Path, fetch: Fetch = http_fetch) -> UpstreamState:
    """Candidate versions across ``suites``; ``cache`` holds parsed indexes by sha256."""
    per_suite: dict[str, dict[str, str]] = {}
    digests: dict[str, str] = {}
    verified = True
    for suite in suites:
        url = f"{suite.mirror}/dists/{suite.name}/InRelease"
        inrelease = fetch(url)
        verified = _verify(inrelease, url, cache) and verified
        files = release_files(inrelease.decode("utf-8", errors="replace"))
        merged: dict[str, str] = {}
        for component in suite.components:
            sha, versions = _suite_versions(suite, component, files, cache, fetch)
            digests[f"{suite.name}/{component}"] = sha
            for pkg, ver in versions.items():
                if pkg not in merged or compare_versions(ver, merged[pkg]) > 0:
                    merged[pkg] = ver
        per_suite[suite.name] = merged
    return UpstreamState(merge_candidates(per_suite), digests, verified)
