"""golden serve: the embedded boot server (artifacts, per-MAC iPXE scripts, agent reports, metrics)."""

from __future__ import annotations

import argparse
import sys

from toolkit.boot.connections import Limits
from toolkit.boot.retention import DEFAULT_PRUNE_EVERY_S, DEFAULT_RETENTION_S, RetentionPolicy
from toolkit.boot.server import ServerConfig, make_server, serve_forever
from toolkit.boot.token import DEFAULT_TTL_S, shared_secret
from toolkit.cli.argtypes import finite_float, int_range
from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context
from toolkit.fleet.fleet import open_fleet
from toolkit.fleet.staleness import stale_policy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the boot server (HTTP: artifacts, /boot/<mac>.ipxe, /report, /metrics)")
    p.add_argument("--listen", default="127.0.0.1:9090", metavar="ADDR:PORT",
                   help="address to listen on (default 127.0.0.1:9090; port 0 picks a free one)")
    p.add_argument("--public-url", metavar="URL",
                   help="base URL machines use for artifacts and reports (default: the Host they asked)")
    add_host_options(p)
    p.add_argument("--kernel-arg", action="append", default=[], metavar="ARG",
                   help="extra kernel argument for every boot (repeatable)")
    p.add_argument("--token-ttl", type=finite_float(60, 30 * 86400), default=DEFAULT_TTL_S, metavar="SECONDS",
                   help=f"lifetime of a boot token; an older one gets 403 (default {DEFAULT_TTL_S:g})")
    _limit_options(p)
    p.set_defaults(func=cmd_serve)


def _limit_options(p: argparse.ArgumentParser) -> None:
    d = Limits()
    p.add_argument("--retention", type=finite_float(0.01, 3650), default=DEFAULT_RETENTION_S / 86400, metavar="DAYS",
                   help=f"keep boot events this many days (default {DEFAULT_RETENTION_S / 86400:g}); spent and expired "
                        "tokens go sooner")
    p.add_argument("--prune-every", type=finite_float(10, 86400), default=DEFAULT_PRUNE_EVERY_S, metavar="SECONDS",
                   help=f"how often to prune the state database (default {DEFAULT_PRUNE_EVERY_S:g})")
    p.add_argument("--workers", type=int_range(1, 1024), default=d.workers, metavar="N",
                   help=f"artifact transfers worked on at once (default {d.workers}; boot scripts, reports and "
                        f"metrics have {d.fast_workers} more of their own); idle connections need none")
    p.add_argument("--max-connections", type=int_range(16, 1_000_000), default=d.max_connections, metavar="N",
                   help=f"open connections kept; past it the oldest idle one is closed (default {d.max_connections})")
    p.add_argument("--idle-timeout", type=finite_float(1, 3600), default=d.idle_timeout_s, metavar="SECONDS",
                   help=f"close a connection idle this long (default {d.idle_timeout_s:g})")
    p.add_argument("--header-timeout", type=finite_float(1, 600), default=d.header_timeout_s, metavar="SECONDS",
                   help=f"a request head must arrive within this (default {d.header_timeout_s:g})")
    p.add_argument("--io-timeout", type=finite_float(1, 3600), default=d.io_timeout_s, metavar="SECONDS",
                   help=f"limit on reading a request body and on each write (default {d.io_timeout_s:g})")
    p.add_argument("--drain", type=finite_float(0, 300), default=d.drain_s, metavar="SECONDS",
                   help=f"on SIGTERM, let in-flight transfers finish this long (default {d.drain_s:g})")


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(workers=args.workers, queue=max(64, args.workers * 4), max_connections=args.max_connections,
                  idle_timeout_s=args.idle_timeout, header_timeout_s=args.header_timeout,
                  io_timeout_s=args.io_timeout, drain_s=args.drain)


def cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
    s = ctx.settings()
    fleet = open_fleet(s, selection(args), required=False)
    config = ServerConfig(fleet=fleet, store=fleet.store, secret=shared_secret(fleet.db, s.home),
                          public_url=args.public_url, extra_args=tuple(args.kernel_arg), token_ttl_s=args.token_ttl,
                          limits=_limits(args),
                          retention=RetentionPolicy(events_s=args.retention * 86400, token_ttl_s=args.token_ttl,
                                                    every_s=args.prune_every),
                          page_policy=stale_policy(s))
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
