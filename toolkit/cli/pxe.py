"""golden pxe render: nginx site + dnsmasq proxyDHCP + TFTP iPXE files for a production boot server."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from toolkit.boot.pxe import PxeSettings, render_pxe
from toolkit.cli.output import Context
from toolkit.trust import secureboot


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden pxe render` and its options."""
    p = sub.add_parser("pxe", help="configuration for production boot servers (nginx, dnsmasq)")
    verbs = p.add_subparsers(dest="pxe_command", metavar="ACTION")
    verbs.required = True
    r = verbs.add_parser("render", help="write nginx and dnsmasq proxyDHCP configs and the TFTP iPXE files")
    r.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write into")
    r.add_argument("--server-url", required=True, metavar="URL",
                   help="URL machines reach nginx at, e.g. http://10.0.0.1")
    r.add_argument("--interface", required=True, help="interface dnsmasq answers PXE requests on")
    r.add_argument("--subnet", help="network address of that interface (default: read from the interface)")
    r.add_argument("--listen", default="80", help="nginx listen (port or ADDR:PORT; default 80)")
    r.add_argument("--upstream", action="append", metavar="HOST:PORT",
                   help="where golden serve listens (default 127.0.0.1:9090); repeat for every replica on the "
                        "same state database (the first is this host's golden-serve.service)")
    r.add_argument("--trusted-cache", action="append", default=[], metavar="ADDR",
                   help="a site cache's address or network whose X-Forwarded-For this server believes (repeatable)")
    r.add_argument("--cache-for", metavar="URL",
                   help="render a site cache in front of the central boot server at URL (no golden serve here)")
    r.add_argument("--cache-max-size", default="50g", metavar="SIZE", help="site cache size limit (default 50g)")
    r.add_argument("--nginx-user", help="user nginx workers run as (standalone nginx.conf only)")
    r.add_argument("--store", type=Path, help="image store to serve (default: the settings' store)")
    r.add_argument("--golden-bin", default=_golden_bin(), metavar="PATH",
                   help="golden executable for golden-serve.service (default: this one)")
    r.add_argument("--service-inventory", action="append", default=[], metavar="SOURCE",
                   help="inventory source golden-serve.service passes with -i (repeatable)")
    r.add_argument("--service-user", metavar="USER", help="run the service as USER (default: DynamicUser=yes)")
    r.add_argument("--vault-password-file", metavar="FILE",
                   help="vault password file, handed to the service as a systemd credential")
    r.set_defaults(func=cmd_render)


def _golden_bin() -> str:
    found = shutil.which("golden") or sys.argv[0]
    return str(Path(found).absolute())


def cmd_render(args: argparse.Namespace, ctx: Context) -> int:
    """Write the nginx and dnsmasq configurations and the TFTP iPXE files for production boot servers."""
    s = ctx.settings()
    result = render_pxe(PxeSettings(
        out_dir=args.out, server_url=args.server_url, interface=args.interface, subnet=args.subnet,
        store_dir=args.store or s.store_dir, upstream=(args.upstream or ["127.0.0.1:9090"])[0],
        replicas=tuple((args.upstream or [])[1:]), trusted_caches=tuple(args.trusted_cache),
        cache_for=args.cache_for, cache_max_size=args.cache_max_size, listen=args.listen, nginx_user=args.nginx_user,
        golden_bin=args.golden_bin, home=s.home, inventories=tuple(args.service_inventory),
        service_user=args.service_user, vault_password_file=args.vault_password_file,
        efi_signer=secureboot.db_key(s),
    ))
    if ctx.json:
        ctx.emit(result)
        return 0
    ctx.say(f"wrote {len(result.files)} file(s) to {result.out_dir}:")
    for name in result.files:
        ctx.say(f"  {name}")
    if result.missing:
        ctx.say(f"warning: not found in /usr/lib/ipxe: {', '.join(result.missing)} (apt-get install ipxe)")
    ctx.say("run:")
    for what, cmd in result.commands.items():
        ctx.say(f"  {what}: {cmd}")
    return 0
