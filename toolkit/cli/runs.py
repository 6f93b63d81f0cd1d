"""golden runs: bake and reimage runs in one list (with a KIND column); golden runs show ID: one run."""

from __future__ import annotations

import argparse

from toolkit.cli.argtypes import int_range
from toolkit.cli.output import Context, when
from toolkit.core.errors import InputError
from toolkit.runs import all_runs, nightly_run, show_any


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden runs` and its options."""
    p = sub.add_parser("runs", help="list bake, nightly and reimage runs, or show one (a reimage's per-host timeline)")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("run_id", nargs="?")
    p.add_argument("--kind", choices=["bake", "reimage", "nightly"], help="only runs of this kind")
    p.add_argument("--limit", type=int_range(1, 100_000), default=50)
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
    if ctx.json:
        ctx.emit({"kind": "reimage", "run": run, "steps": steps})
        return 0
    ctx.say(f"run {run.id}  reimage  {run.status}  {run.image}/{run.target_build}  pattern {run.pattern!r}  "
            f"by {run.user}")
    if run.plan.get("forced"):
        ctx.say(f"FORCED past the checks gate: {run.plan.get('reason', '')}")
    if run.summary:
        ctx.say(run.summary)
    ctx.table(["time", "host", "wave", "attempt", "step", "phase", "detail"],
              [[when(s.at), s.host, s.wave + 1, s.attempt, s.step, s.phase, s.detail[:60]] for s in steps])
    return 0


def cmd_runs(args: argparse.Namespace, ctx: Context) -> int:
    """List bake, nightly and reimage runs, or show one run's per-host timeline."""
    if args.action == "show":
        return _show(args, ctx)
    runs = all_runs(ctx.settings(), args.limit, args.kind)
    if ctx.json:
        ctx.emit(runs)
        return 0
    ctx.table(["run", "kind", "started", "status", "subject", "summary"],
              [[r.id, r.kind, when(r.started_at), r.status, r.subject, r.summary[:60]] for r in runs])
    return 0
