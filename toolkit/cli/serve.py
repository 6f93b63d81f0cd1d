"""golden serve: the embedded boot server (artifacts, per-MAC iPXE scripts, agent reports, metrics)."""

from __future__ import annotations

import argparse
import os
import sys

from toolkit.boot.admin import read_token_file
from toolkit.boot.connections import Limits
from toolkit.boot.retention import DEFAULT_PRUNE_EVERY_S, DEFAULT_RETENTION_S, RetentionPolicy
from toolkit.boot.server import ServerConfig, make_server, serve_forever
from toolkit.boot.token import DEFAULT_TTL_S, shared_secret
from toolkit.cli.argtypes import duration, int_range
from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context
from toolkit.core.duration import format_duration
from toolkit.fleet.fleet import open_fleet
from toolkit.fleet.staleness import stale_policy
from toolkit.nightly.record import last_success_at


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the boot server (HTTP: artifacts, /boot/<mac>.ipxe, /report, /metrics)")
    p.add_argument("--listen", default="127.0.0.1:9090", metavar="ADDR:PORT",
                   help="address to listen on (default 127.0.0.1:9090; port 0 picks a free one)")
    p.add_argument("--public-url", metavar="URL",
                   help="base URL machines use for artifacts and reports (default: the Host they asked)")
    add_host_options(p)
    p.add_argument("--kernel-arg", action="append", default=[], metavar="ARG",
                   help="extra kernel argument for every boot (repeatable)")
    p.add_argument("--token-ttl", type=duration(60, 30 * 86400), default=DEFAULT_TTL_S, metavar="DURATION",
                   help=f"lifetime of a boot token; an older one gets 403 (default {format_duration(DEFAULT_TTL_S)})")
    p.add_argument("--fleet-token-file", metavar="FILE", default=os.environ.get("GOLDEN_FLEET_TOKEN_FILE"),
                   help="/fleet then wants this token (Bearer, or the password of HTTP Basic); without one, /fleet "
                        "is served only on a loopback --listen address. Default: GOLDEN_FLEET_TOKEN_FILE")
    _limit_options(p)
    p.set_defaults(func=cmd_serve)


def _limit_options(p: argparse.ArgumentParser) -> None:
    d = Limits()
    p.add_argument("--retention", type=duration(3600, 3650 * 86400), default=DEFAULT_RETENTION_S, metavar="DURATION",
                   help=f"keep boot events this long, e.g. 30d (default {format_duration(DEFAULT_RETENTION_S)}); spent "
                        "and expired tokens go sooner")
    p.add_argument("--prune-every", type=duration(10, 86400), default=DEFAULT_PRUNE_EVERY_S, metavar="DURATION",
                   help=f"how often to prune the state database (default {format_duration(DEFAULT_PRUNE_EVERY_S)})")
    p.add_argument("--workers", type=int_range(1, 1024), default=d.workers, metavar="N",
                   help=f"artifact transfers worked on at once (default {d.workers}; boot scripts, reports and "
                        f"metrics have {d.fast_workers} more of their own); idle connections need none")
    p.add_argument("--max-connections", type=int_range(16, 1_000_000), default=d.max_connections, metavar="N",
                   help=f"open connections kept; past it the oldest idle one is closed (default {d.max_connections})")
    p.add_argument("--idle-timeout", type=duration(1, 3600), default=d.idle_timeout_s, metavar="DURATION",
                   help=f"close a connection idle this long (default {format_duration(d.idle_timeout_s)})")
    p.add_argument("--header-timeout", type=duration(1, 600), default=d.header_timeout_s, metavar="DURATION",
                   help=f"a request head must arrive within this (default {format_duration(d.header_timeout_s)})")
    p.add_argument("--io-timeout", type=duration(1, 3600), default=d.io_timeout_s, metavar="DURATION",
                   help=f"limit on reading a request body and on each write "
                        f"(default {format_duration(d.io_timeout_s)})")
    p.add_argument("--drain", type=duration(0, 300), default=d.drain_s, metavar="DURATION",
                   help=f"on SIGTERM, let in-flight transfers finish this long (default {format_duration(d.drain_s)})")


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
                          retention=RetentionPolicy(events_s=args.retention, token_ttl_s=args.token_ttl,
                                                    every_s=args.prune_every),
                          page_policy=stale_policy(s), nightly_last_success=lambda: last_success_at(s.runs_dir),
                          fleet_token=read_token_file(args.fleet_token_file) if args.fleet_token_file else None)
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
