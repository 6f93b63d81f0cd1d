"""golden serve: the embedded boot server (artifacts, per-MAC iPXE scripts, agent reports, metrics)."""

from __future__ import annotations

import argparse
import sys

from toolkit.boot.server import ServerConfig, make_server, serve_forever
from toolkit.boot.token import DEFAULT_TTL_S, load_or_create_secret
from toolkit.cli.argtypes import finite_float
from toolkit.cli.output import Context
from toolkit.fleet.fleet import open_fleet


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the boot server (HTTP: artifacts, /boot/<mac>.ipxe, /report, /metrics)")
    p.add_argument("--listen", default="127.0.0.1:9090", metavar="ADDR:PORT",
                   help="address to listen on (default 127.0.0.1:9090; port 0 picks a free one)")
    p.add_argument("--public-url", metavar="URL",
                   help="base URL machines use for artifacts and reports (default: the Host they asked)")
    p.add_argument("-i", "--inventory", help="inventory file (default: GOLDEN_INVENTORY, then golden.yaml)")
    p.add_argument("--kernel-arg", action="append", default=[], metavar="ARG",
                   help="extra kernel argument for every boot (repeatable)")
    p.add_argument("--token-ttl", type=finite_float(60, 30 * 86400), default=DEFAULT_TTL_S, metavar="SECONDS",
                   help=f"lifetime of a boot token; an older one gets 403 (default {DEFAULT_TTL_S:g})")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
    s = ctx.settings()
    fleet = open_fleet(s, args.inventory, required=False)
    config = ServerConfig(fleet=fleet, store=fleet.store, secret=load_or_create_secret(s.home),
                          public_url=args.public_url, extra_args=tuple(args.kernel_arg), token_ttl_s=args.token_ttl)
    server = make_server(args.listen, config)
    if ctx.json:
        ctx.emit({"listening": server.url, "inventory": fleet.inventory_path, "store": fleet.store.root})
    else:
        ctx.say(f"golden serve: listening on {server.url} (store {fleet.store.root}, "
                f"inventory {fleet.inventory_path or 'none'})")
    sys.stdout.flush()
    try:
        serve_forever(server)
    except KeyboardInterrupt:
        pass
    return 0
