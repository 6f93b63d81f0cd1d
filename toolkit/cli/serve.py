"""golden serve: the embedded boot server (artifacts, per-MAC iPXE scripts, agent reports, metrics)."""

from __future__ import annotations

import argparse
import os
import sys

from toolkit.boot.admin import read_token_file
from toolkit.boot.connections import Limits
from toolkit.boot.retention import DEFAULT_PRUNE_EVERY_S, DEFAULT_RETENTION_S, RetentionPolicy
from toolkit.boot.running import serve_forever
from toolkit.boot.server import ServerConfig, make_server, parse_listen
from toolkit.boot.token import DEFAULT_TTL_S, shared_secret
from toolkit.cli.argtypes import duration, int_range
from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context
from toolkit.core.duration import format_duration
from toolkit.fleet.fleet import open_fleet
from toolkit.fleet.staleness import stale_policy
from toolkit.nightly.record import last_success_at


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden serve` and its options."""
    p = sub.add_parser("serve", help="run the boot server (HTTP: artifacts, /boot/<mac>.ipxe, /report, /metrics)")
    p.add_argument("--listen", default="127.0.0.1:9090", metavar="ADDR:PORT",
                   help="address to listen on (default 127.0.0.1:9090; port 0 picks a free one)")
    p.add_argument("--public-url", metavar="URL",
                   help="base URL machines use for artifacts and reports (default: the Host they asked)")
    add_host_options(p)
    p.add_argument("--kernel-arg", action="append", default=[], metavar="ARG",
                   help="extra kernel argument for every boot (repeatable)")
    _duration_option(p, "--token-ttl", 60, 30 * 86400, DEFAULT_TTL_S, "lifetime of a boot token; an older one gets 403")
    p.add_argument("--fleet-token-file", metavar="FILE", default=os.environ.get("GOLDEN_FLEET_TOKEN_FILE"),
                   help="/fleet then wants this token (Bearer, or the password of HTTP Basic); without one, /fleet "
                        "is served only on a loopback --listen address. Default: GOLDEN_FLEET_TOKEN_FILE")
    _limit_options(p)
    p.set_defaults(func=cmd_serve)


def _duration_option(p: argparse.ArgumentParser, flag: str, lo: float, hi: float, default: float, what: str) -> None:
    p.add_argument(flag, type=duration(lo, hi), default=default, metavar="DURATION",
                   help=f"{what} (default {format_duration(default)})")


def _limit_options(p: argparse.ArgumentParser) -> None:
    d = Limits()
    _duration_option(p, "--retention", 3600, 3650 * 86400, DEFAULT_RETENTION_S,
                     "keep boot events this long, e.g. 30d; spent and expired tokens go sooner")
    _duration_option(p, "--prune-every", 10, 86400, DEFAULT_PRUNE_EVERY_S, "how often to prune the state database")
    p.add_argument("--workers", type=int_range(1, 1024), default=d.workers, metavar="N",
                   help=f"artifact transfers worked on at once (default {d.workers}; boot scripts, reports and "
                        f"metrics have {d.fast_workers} more of their own); idle connections need none")
    p.add_argument("--max-connections", type=int_range(16, 1_000_000), default=d.max_connections, metavar="N",
                   help=f"open connections kept; past it the oldest idle one is closed (default {d.max_connections})")
    _duration_option(p, "--idle-timeout", 1, 3600, d.idle_timeout_s, "close a connection idle this long")
    _duration_option(p, "--header-timeout", 1, 600, d.header_timeout_s, "a request head must arrive within this")
    _duration_option(p, "--io-timeout", 1, 3600, d.io_timeout_s, "limit on each write to a client")
    _duration_option(p, "--body-timeout", 0.5, 600, d.body_timeout_s,
                     "a request body must arrive within this, else 408")
    p.add_argument("--max-body-readers", type=int_range(1, 100_000), default=d.max_body_readers, metavar="N",
                   help=f"connections sending a body at once; one more gets 503 (default {d.max_body_readers})")
    _duration_option(p, "--drain", 0, 300, d.drain_s, "on SIGTERM, let in-flight transfers finish this long")


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(workers=args.workers, queue=max(64, args.workers * 4), max_connections=args.max_connections,
                  idle_timeout_s=args.idle_timeout, header_timeout_s=args.header_timeout,
                  io_timeout_s=args.io_timeout, drain_s=args.drain, body_timeout_s=args.body_timeout,
                  max_body_readers=args.max_body_readers)


def cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
    """Run the boot server until SIGTERM or Ctrl-C."""
    parse_listen(args.listen)  # a bad --listen is refused before any state is opened
    s = ctx.settings()
    token = read_token_file(args.fleet_token_file) if args.fleet_token_file else None  # before anything opens
    fleet = open_fleet(s, selection(args), required=False)
    config = ServerConfig(fleet=fleet, store=fleet.store, secret=shared_secret(fleet.db, s.home),
                          public_url=args.public_url, extra_args=tuple(args.kernel_arg), token_ttl_s=args.token_ttl,
                          limits=_limits(args),
                          retention=RetentionPolicy(events_s=args.retention, token_ttl_s=args.token_ttl,
                                                    every_s=args.prune_every),
                          page_policy=stale_policy(s), nightly_last_success=lambda: last_success_at(s.runs_dir),
                          fleet_token=token)
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
