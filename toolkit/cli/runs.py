"""golden runs: bake and reimage runs in one list (with a KIND column); golden runs show ID: one run."""

from __future__ import annotations

import argparse

from toolkit.cli.argtypes import int_range
from toolkit.cli.output import Context, when
from toolkit.core.errors import InputError
from toolkit.core.text import printable
from toolkit.runs import all_runs, nightly_run, run_console, show_any
from toolkit.runs.console import ConsoleTail


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden runs` and its options."""
    p = sub.add_parser("runs", help="list bake, nightly and reimage runs, or show one (a reimage's per-host timeline)")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("run_id", nargs="?")
    p.add_argument("--kind", choices=["bake", "reimage", "nightly"], help="only runs of this kind")
    p.add_argument("--limit", type=int_range(1, 100_000), default=50)
    p.add_argument("--host", metavar="HOST",
                   help="show: only this host's steps of a reimage run, and the end of its serial console")
    p.set_defaults(func=cmd_runs)


def _show(args: argparse.Namespace, ctx: Context) -> int:
    if not args.run_id:
        raise InputError("runs show needs a run id", hint="list runs with: golden runs")
    nightly = nightly_run(ctx.settings(), args.run_id)
    if nightly is not None:
        run_, md = nightly
        if ctx.json:
            ctx.emit({"kind": "nightly", "run": run_, "report_markdown": md})
        else:
            print(md or f"nightly run {run_.id}: {run_.status} (no report yet)", end="")
        return 0
    bake, reimage = show_any(ctx.settings(), args.run_id)
    if bake is not None:
        if ctx.json:
            ctx.emit({"kind": "bake", "run": bake})
        else:
            ctx.say(f"run {bake.id}  bake  {bake.status}  image {bake.image}  started {when(bake.started_at)}")
            if bake.error:
                ctx.say(f"error: {bake.error}")
            ctx.say(f"record: {bake.path} (command, inputs.json, stdout, status, rc)")
        return 0
    assert reimage is not None
    run, steps = reimage
    if args.host is not None:
        steps = [s for s in steps if s.host == args.host]
        if not steps:
            raise InputError(f"run {run.id} did not touch host {args.host!r}", hint=f"golden runs show {run.id}")
    console = run_console(ctx.settings(), run.id, args.host) if args.host else None
    if ctx.json:
        ctx.emit({"kind": "reimage", "run": run, "steps": steps, **({"console": console} if args.host else {})})
        return 0
    ctx.say(f"run {run.id}  reimage  {run.status}  {run.image}/{run.target_build}  pattern {run.pattern!r}  "
            f"by {run.user}")
    if run.plan.get("forced"):
        ctx.say(f"FORCED past the checks gate: {run.plan.get('reason', '')}")
    if run.summary:
        ctx.say(run.summary)
    ctx.table(["time", "host", "wave", "attempt", "step", "phase", "detail"],
              [[when(s.at), s.host, s.wave + 1, s.attempt, s.step, s.phase, s.detail[:60]] for s in steps])
    if args.host:
        _say_console(ctx, args.host, console)
    return 0


def _say_console(ctx: Context, host: str, console: ConsoleTail | None) -> None:
    if console is None:
        ctx.say(f"no serial console of {host} was captured in this run")
        return
    ctx.say(f"--- serial console of {host}, attempt {console.attempt}: last {len(console.lines)} lines "
            f"(all kept: {console.path}) ---")
    for line in console.lines:
        ctx.say(printable(line))


def cmd_runs(args: argparse.Namespace, ctx: Context) -> int:
    """List bake, nightly and reimage runs, or show one run's per-host timeline."""
    if args.action == "show":
        return _show(args, ctx)
    if args.host is not None:
        raise InputError("--host goes with 'runs show RUN'", hint="golden runs show RUN --host HOST")
    runs = all_runs(ctx.settings(), args.limit, args.kind)
    if ctx.json:
        ctx.emit(runs)
        return 0
    ctx.table(["run", "kind", "started", "status", "subject", "summary"],
              [[r.id, r.kind, when(r.started_at), r.status, r.subject, r.summary[:60]] for r in runs])
    return 0
