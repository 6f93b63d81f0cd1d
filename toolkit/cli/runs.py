"""golden runs: list reimage runs; golden runs show ID: per-host timelines from the journal."""

from __future__ import annotations

import argparse
import time

from toolkit.cli.argtypes import int_range
from toolkit.cli.output import Context
from toolkit.core.errors import InputError
from toolkit.rollout.service import list_runs, show_run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list reimage runs, or show one's per-host timeline")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("run_id", nargs="?")
    p.add_argument("--limit", type=int_range(1, 100_000), default=50)
    p.set_defaults(func=cmd_runs)


def _ts(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def cmd_runs(args: argparse.Namespace, ctx: Context) -> int:
    settings = ctx.settings()
    if args.action == "show":
        if not args.run_id:
            raise InputError("runs show needs a run id", hint="list runs with: golden runs")
        run, steps = show_run(settings, args.run_id)
        if ctx.json:
            ctx.emit({"run": run, "steps": steps})
            return 0
        ctx.say(f"run {run.id}  {run.status}  {run.image}/{run.target_build}  pattern {run.pattern!r}  by {run.user}")
        if run.summary:
            ctx.say(run.summary)
        ctx.table(["time", "host", "wave", "attempt", "step", "phase", "detail"],
                  [[_ts(s.at), s.host, s.wave + 1, s.attempt, s.step, s.phase, s.detail[:60]] for s in steps])
        return 0
    runs = list_runs(settings, args.limit)
    if ctx.json:
        ctx.emit(runs)
        return 0
    ctx.table(["run", "started", "status", "image", "target", "pattern", "summary"],
              [[r.id, _ts(r.created_at), r.status, r.image, r.target_build, r.pattern, r.summary[:60]] for r in runs])
    return 0
