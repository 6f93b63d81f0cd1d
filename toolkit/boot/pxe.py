"""PXE text: the per-machine iPXE scripts the boot server hands out, and `golden pxe render`.

Production boot servers run boring daemons: nginx serves the store with sendfile and proxies
the dynamic endpoints to ``golden serve``; dnsmasq in proxyDHCP mode chainloads iPXE (BIOS:
undionly.kpxe, UEFI: snponly.efi, both from Debian's ``ipxe`` package) and points it at
``/boot/${mac}.ipxe``. Rendering is pure (``plan_render`` returns files); ``write_render``
puts them in place, each written aside and renamed.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import jinja2

from toolkit.boot import netboot
from toolkit.core.errors import InputError
from toolkit.core.fsutil import atomic_write
from toolkit.core.run import require, run
from toolkit.image.manifest import UKI
from toolkit.store.artifacts import Build
from toolkit.trust import secureboot
from toolkit.trust.secureboot import DbKey

# Package data, so a plain (non-editable) install can render and serve; the top-level pxe/ is a link here.
PXE_DIR = Path(__file__).resolve().parent / "templates"
IPXE_DIR = Path("/usr/lib/ipxe")
# (file in Debian's ipxe package, what it chainloads)
IPXE_BINARIES = ("undionly.kpxe", "snponly.efi", "ipxe.efi")
CHAIN_SCRIPT = "golden.ipxe"


@functools.cache
def _env(pxe_dir: Path) -> jinja2.Environment:
    # One per folder: the Environment keeps compiled templates (and reloads a changed file itself).
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(pxe_dir)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False)  # noqa: S701 - not HTML


# ---- scripts for machines ----

def artifact_url(base_url: str, build: Build, name: str) -> str:
    """The URL of a build's artifact under ``base_url``."""
    return f"{base_url.rstrip('/')}/store/{build.image}/{build.build_id}/{name}"


def machine_script(build: Build, mac: str, token: str, base_url: str, report_url: str,
                   extra_args: Sequence[str] = (), secure_boot: bool = False) -> str:
    """The one call site of the netboot templates (contract 2) for a build and a machine. ``secure_boot``: the
    build's signed UKI (InputError when the build has none), else kernel + initrd."""
    if secure_boot:
        return _uki_script(build, mac, token, base_url, report_url, extra_args)
    return netboot.render_boot_script(
        kernel_url=artifact_url(base_url, build, "vmlinuz"),
        initrd_url=artifact_url(base_url, build, "initrd"),
        squashfs_url=artifact_url(base_url, build, "rootfs.squashfs"),
        sha256=build.manifest.artifacts["rootfs.squashfs"].sha256,
        build_id=build.build_id,
        image=build.image,
        mac=mac,
        token=token,
        report_url=report_url,
        extra_args=tuple(extra_args),
    )


def _uki_script(build: Build, mac: str, token: str, base_url: str, report_url: str,
                extra_args: Sequence[str]) -> str:
    if UKI not in build.manifest.artifacts:
        raise InputError(f"build {build.image}/{build.build_id} has no signed UKI for a secure_boot host",
                         hint="run golden keys init, then bake again (a bake signs when the home has keys)")
    rootfs = artifact_url(base_url, build, "rootfs.squashfs")
    words = netboot.kernel_cmdline(rootfs, build.manifest.artifacts["rootfs.squashfs"].sha256, build.build_id,
                                   build.image, mac, token, report_url, extra_args)
    query = urllib.parse.urlencode({"mac": mac.lower(), "build": build.build_id, "image": build.image,
                                    "token": token})
    refused = f"{base_url.rstrip('/')}{netboot.REFUSED_PATH}?{query}"
    return netboot.render_uki_script(artifact_url(base_url, build, UKI), refused, words, build.build_id, build.image,
                                     mac)


def unknown_script(pxe_dir: Path = PXE_DIR) -> str:
    """The iPXE script for a machine not in the inventory."""
    return (pxe_dir / "unknown.ipxe").read_text()


def no_build_script(host: str, mac: str, problem: str, pxe_dir: Path = PXE_DIR) -> str:
    """The iPXE script for a known host with nothing to boot, saying why."""
    # iPXE would expand ${...} in the echoed text; the problem text is ours but keep it inert anyway.
    safe = re.sub(r"[^A-Za-z0-9 @/._:,()-]", "_", problem)
    return _env(pxe_dir).get_template("no-build.ipxe.j2").render(host=host, mac=mac, problem=safe)


# ---- golden pxe render ----

@dataclass(frozen=True)
class PxeSettings:
    """What ``golden pxe render`` writes for: URLs, interface, store, replicas, caches, nginx and the unit."""
    out_dir: Path
    server_url: str  # what machines use to reach nginx, e.g. http://10.0.0.1
    interface: str  # the interface dnsmasq answers PXE on
    store_dir: Path
    subnet: str | None = None  # network address for the proxy dhcp-range; None: read from the interface
    upstream: str = "127.0.0.1:9090"  # where golden serve listens (on this host: golden-serve.service)
    replicas: tuple[str, ...] = ()  # further golden serve replicas (HOST:PORT) on the same state database
    trusted_caches: tuple[str, ...] = ()  # site caches (address or CIDR) whose X-Forwarded-For is believed
    cache_for: str | None = None  # render a site cache in front of this central URL instead of a server
    cache_max_size: str = "50g"
    listen: str = "80"  # nginx listen directive
    nginx_user: str | None = None
    ipxe_dir: Path = IPXE_DIR
    metrics_allow: tuple[str, ...] = ("127.0.0.1",)
    log_dhcp: bool = True
    # golden-serve.service: how systemd runs golden serve on this boot server
    golden_bin: str = "/opt/golden/bin/golden"
    home: Path = Path("/var/lib/golden")
    inventories: tuple[str, ...] = ()
    service_user: str | None = None  # None: DynamicUser=yes
    vault_password_file: str | None = None  # handed to the service with LoadCredential=
    # The home's Secure Boot db key: the EFI iPXE binaries are written signed, so Secure Boot firmware runs them
    efi_signer: DbKey | None = None


@dataclass(frozen=True)
class RenderedFile:
    """One rendered file: its path under the output folder, content and mode."""
    path: str  # relative to out_dir
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class RenderResult:
    """What was rendered, and which iPXE binaries are missing."""
    out_dir: Path
    files: tuple[str, ...]
    missing: tuple[str, ...] = field(default_factory=tuple)
    commands: dict[str, str] = field(default_factory=dict)


_HOSTPORT_RE = re.compile(r"^[A-Za-z0-9.\[\]:-]+:\d{1,5}$")
_CENTRAL_RE = re.compile(r"^http://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(:\d{1,5})?/?$")
_URL_RE = re.compile(r"^https?://[A-Za-z0-9.\[\]:-]+(/[A-Za-z0-9._~/-]*)?$")


def check_settings(s: PxeSettings) -> None:
    """InputError for the first setting that would not reach a config file safely."""
    if not _URL_RE.match(s.server_url):
        raise InputError(f"--server-url must be an http(s) URL without a query, got {s.server_url!r}")
    if not re.match(r"^[A-Za-z0-9_.:-]{1,15}$", s.interface):
        raise InputError(f"--interface {s.interface!r} is not an interface name")
    try:
        ipaddress.IPv4Address(s.subnet or "")
    except ValueError:
        raise InputError(f"--subnet must be an IPv4 network address, got {s.subnet!r}") from None
    for upstream in (s.upstream, *s.replicas):
        if not _HOSTPORT_RE.match(upstream):
            raise InputError(f"--upstream must be HOST:PORT of golden serve, got {upstream!r}")
    if len({s.upstream, *s.replicas}) != 1 + len(s.replicas):
        raise InputError("--upstream names the same replica twice")
    for net in s.trusted_caches:
        try:
            network = ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise InputError(f"--trusted-cache must be an IP address or network, got {net!a}") from None
        if network.prefixlen == 0:  # every client could then name any address as its own
            raise InputError(f"--trusted-cache {net} trusts every address on the network",
                             hint="name the site caches' own addresses or their network")
    if s.cache_for is not None:
        if not _CENTRAL_RE.match(s.cache_for):
            raise InputError(f"--cache-for must be the central boot server as http://HOST[:PORT], got {s.cache_for!r}")
        if s.replicas or s.trusted_caches:
            raise InputError("--cache-for renders a site cache: --upstream and --trusted-cache belong to the central "
                             "server's render")
    if not re.match(r"^[1-9][0-9]{0,5}[kmg]$", s.cache_max_size):
        raise InputError(f"--cache-max-size must be a size like 500m or 50g, got {s.cache_max_size!r}")
    if not re.match(r"^[A-Za-z0-9.\[\]:]+$", s.listen):
        raise InputError(f"--listen must be a port or ADDR:PORT, got {s.listen!r}")
    _check_unit_values(s)


# What may go into a unit file line unquoted: no spaces, no % specifiers, no newlines.
_UNIT_VALUE_RE = re.compile(r"^[A-Za-z0-9_./@:+,=-]+$")


def _check_unit_values(s: PxeSettings) -> None:
    values = {"--golden-bin": [s.golden_bin], "--home": [str(s.home)], "--service-inventory": list(s.inventories),
              "--vault-password-file": [s.vault_password_file or "x"], "--service-user": [s.service_user or "x"]}
    for flag, items in values.items():
        for v in items:
            if not _UNIT_VALUE_RE.match(v):
                raise InputError(f"{flag} {v!r}: only letters, digits and _./@:+,=- fit in the systemd unit")
    for flag, v in (("--golden-bin", s.golden_bin), ("--home", str(s.home)), ("--vault-password-file",
                                                                              s.vault_password_file or "/")):
        if not v.startswith("/"):
            raise InputError(f"{flag} must be an absolute path, got {v!r}")


def _service_unit(env: jinja2.Environment, s: PxeSettings) -> bytes:
    port = int(s.upstream.rsplit(":", 1)[1])
    home = s.home.resolve()
    store = s.store_dir.resolve()
    return env.get_template("golden-serve.service.j2").render(
        golden=s.golden_bin, home=str(home), listen=s.upstream, inventories=s.inventories,
        user=s.service_user, vault_password_file=s.vault_password_file, privileged_port=port < 1024,
        store_dir=str(store), store_outside=not store.is_relative_to(home),
    ).encode()


def plan_render(s: PxeSettings, pxe_dir: Path = PXE_DIR) -> list[RenderedFile]:
    """Every file of a boot server's configuration; pure apart from reading templates and iPXE binaries."""
    check_settings(s)
    env = _env(pxe_dir)
    out = s.out_dir.resolve()
    run_dir = out / "run"
    tftp_dir = out / "tftp"
    server = s.server_url.rstrip("/")
    if s.cache_for is not None:
        central = urllib.parse.urlsplit(s.cache_for)
        site = RenderedFile("nginx-site.conf", env.get_template("nginx-site-cache.conf.j2").render(
            listen=s.listen, central_url=s.cache_for,
            central=central.netloc if central.port else f"{central.netloc}:80",
            cache_dir=str(out / "cache"), max_size=s.cache_max_size, access_log=str(run_dir / "access.log")).encode())
    else:
        site = RenderedFile("nginx-site.conf", env.get_template("nginx-site.conf.j2").render(
            listen=s.listen, upstreams=(s.upstream, *s.replicas), store_dir=str(s.store_dir.resolve()),
            trusted_caches=s.trusted_caches, access_log=str(run_dir / "access.log"),
            metrics_allow=s.metrics_allow).encode())
    files = [
        site,
        RenderedFile("nginx.conf", env.get_template("nginx.conf.j2").render(
            out_dir=str(out), run_dir=str(run_dir), user=s.nginx_user).encode()),
        RenderedFile("dnsmasq-proxydhcp.conf", env.get_template("dnsmasq-proxydhcp.conf.j2").render(
            interface=s.interface, subnet=s.subnet, tftp_dir=str(tftp_dir), log_dhcp=s.log_dhcp,
            pid_file=str(run_dir / "dnsmasq.pid"), lease_file=str(run_dir / "dnsmasq.leases")).encode()),
        RenderedFile(f"tftp/{CHAIN_SCRIPT}", env.get_template("chain.ipxe.j2").render(server_url=server).encode()),
    ]
    if s.cache_for is None:  # a site cache runs no golden serve of its own
        files.append(RenderedFile("golden-serve.service", _service_unit(env, s)))
    for name in IPXE_BINARIES:
        src = s.ipxe_dir / name
        if src.is_file():
            files.append(RenderedFile(f"tftp/{name}", src.read_bytes()))
    return files


def missing_binaries(s: PxeSettings) -> list[str]:
    """The iPXE binaries not found in ``ipxe_dir``."""
    return [name for name in IPXE_BINARIES if not (s.ipxe_dir / name).is_file()]


def write_render(s: PxeSettings, files: Sequence[RenderedFile]) -> RenderResult:
    """Write the rendered files under the output folder; what was written."""
    out = s.out_dir.resolve()
    for sub in ("run", "tftp", *(("cache",) if s.cache_for is not None else ())):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for f in files:
        target = out / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, f.content, mode=f.mode)
        if s.efi_signer is not None and f.path.endswith(".efi"):
            secureboot.sign_efi(s.efi_signer, target, target)
    return RenderResult(
        out, tuple(f.path for f in files), tuple(missing_binaries(s)),
        commands={
            "nginx": f"nginx -c {out / 'nginx.conf'}",
            "dnsmasq": f"dnsmasq --keep-in-foreground --conf-file={out / 'dnsmasq-proxydhcp.conf'}",
            **({} if s.cache_for is not None else {
                "golden": f"golden serve --listen {s.upstream}",
                "systemd": f"cp {out / 'golden-serve.service'} /etc/systemd/system/ && systemctl daemon-reload && "
                           "systemctl enable --now golden-serve"}),
        },
    )


def interface_subnet(interface: str) -> str:
    """The IPv4 network address of ``interface`` (for dnsmasq's proxy range), read with ``ip``."""
    require("ip", "iproute2")
    res = run(["ip", "-j", "-4", "addr", "show", "dev", interface], capture=True, check=False)
    if res.returncode != 0:
        raise InputError(f"interface {interface!r} does not exist", hint="pass --interface NAME (see: ip link)")
    for entry in json.loads(res.stdout or "[]"):
        for addr in entry.get("addr_info", []):
            if addr.get("family") == "inet":
                net = ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}").network
                return str(net.network_address)
    raise InputError(f"interface {interface!r} has no IPv4 address", hint="pass --subnet A.B.C.0 explicitly")


def render_pxe(s: PxeSettings) -> RenderResult:
    """Render into ``s.out_dir``; the proxy range comes from the interface unless ``s.subnet`` is given."""
    if s.subnet is None:
        s = replace(s, subnet=interface_subnet(s.interface))
    return write_render(s, plan_render(s))
