"""golden reimage: plan waves over a host pattern, confirm, execute with a journal; --resume continues."""

from __future__ import annotations

import argparse
import sys
import time

from toolkit.cli.argtypes import amount, duration, int_range
from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context
from toolkit.core.errors import InputError
from toolkit.core.progress import format_elapsed
from toolkit.fleet.states import HW_CHANGED, HostState
from toolkit.rollout.execute import RunOutcome, WaveProgress
from toolkit.rollout.journal import RunStatus
from toolkit.rollout.plan import Amount, Plan, Policy
from toolkit.rollout.service import ReimageRequest, execute_plan, plan_request, plan_to_dict, resume_run


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden reimage` and its options."""
    p = sub.add_parser("reimage", help="reimage hosts onto a build in waves (canary, health gates, rollback)")
    p.add_argument("pattern", nargs="?", help="Ansible host pattern (groups, globs, ':' unions)")
    p.add_argument("--image", metavar="NAME@CHANNEL|NAME@BUILD",
                   help="what to reimage onto (with --state/--stale: default, the image the selected hosts follow)")
    p.add_argument("--state", choices=[*(s.value for s in HostState), HW_CHANGED],
                   help="only the pattern's hosts in this state, e.g. tainted or drifted, or whose hardware "
                        "changed (hw-changed) (reimaged even when already on the build; pattern default: all)")
    p.add_argument("--stale", action="store_true",
                   help="only the pattern's hosts breaking the staleness policy (stale: in golden.yaml)")
    add_host_options(p)
    p.add_argument("--canary", type=int_range(0, 1_000_000), default=1,
                   help="hosts in the first wave, which must fully pass (1)")
    p.add_argument("--wave-size", type=amount(1), default="10%",
                   help="hosts per wave after the canary: N or P%% (10%%)")
    p.add_argument("--max-unavailable", type=amount(1), help="cap on hosts down at once: N or P%% of the selection")
    p.add_argument("--max-failures", type=amount(0), default="0", help="failure budget for the whole run: N or P%% (0)")
    p.add_argument("--per-rack", type=int_range(1, 1_000_000), help="at most this many hosts of one rack per wave")
    p.add_argument("--boot-timeout", type=duration(1, 86_400), default=900.0, metavar="DURATION",
                   help="how long to wait for a host's report: 90s, 15m, 2h; a bare number is seconds (15m)")
    p.add_argument("--retries", type=int_range(0, 100), default=1,
                   help="attempts after the first before rolling back (1)")
    p.add_argument("--include-current", action="store_true", help="also reimage hosts already on the build")
    p.add_argument("--force", action="store_true",
                   help="reimage onto a build whose checks have not passed (needs --reason; audited)")
    p.add_argument("--reason", default="", help="why --force is needed (recorded in the audit log and the run)")
    p.add_argument("--contest-window", type=duration(0, 3600), default=15.0, metavar="DURATION",
                   help="a report counts only this long after the power action, if no second boot-script fetch "
                        "contested the attempt meanwhile (15s)")
    p.add_argument("--capture-console", action=argparse.BooleanOptionalAction, default=True,
                   help="capture each host's serial console over SOL for its attempt (on by default; "
                        "golden runs show RUN --host H prints it)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run from its journal")
    p.set_defaults(func=cmd_reimage, interrupted="reimage interrupted before its run started: nothing was changed")


def _policy(args: argparse.Namespace) -> Policy:
    return Policy(
        canary=args.canary,
        wave_size=Amount.parse(args.wave_size, "--wave-size"),
        max_unavailable=Amount.parse(args.max_unavailable, "--max-unavailable") if args.max_unavailable else None,
        max_failures=Amount.parse(args.max_failures, "--max-failures"),
        per_rack=args.per_rack,
        boot_timeout_s=args.boot_timeout,
        retries=args.retries,
        include_current=args.include_current,
    )


def _show_plan(ctx: Context, plan: Plan, checks: tuple[str, ...]) -> None:
    ctx.say(f"reimage onto {plan.image}/{plan.target_build}: {len(plan.hosts)} host(s) in {len(plan.waves)} wave(s), "
            f"failure budget {plan.failure_budget}, health checks: {', '.join(checks) or 'none'}")
    for note in plan.notes:
        ctx.say(f"note: {note}")
    rows = []
    for w in plan.waves:
        for h in w.hosts:
            cur, tgt = plan.moves[h]
            hooks = ",".join(dict.fromkeys(k.pattern for k in plan.hooks.hooks_of(h))) if plan.hooks else ""
            rows.append([w.index + 1, "canary" if w.canary else "", h, cur or "-", tgt, plan.slots.get(h, "-"),
                         hooks or "-"])
    ctx.table(["wave", "", "host", "current", "target", "slot", "hooks"], rows)
    for hook in plan.hooks.hooks if plan.hooks else ():
        books = ", ".join(f"{k} {hook.playbook(k).name}" for k in ("drain", "verify", "undrain")  # type: ignore[union-attr]
                          if hook.playbook(k))
        budget = f", at most {hook.max_unavailable} out at once" if hook.max_unavailable else ""
        ctx.say(f"hooks for {hook.pattern}: {books or 'no playbooks'} (timeout {hook.timeout_s:g} s"
                f"{f', settle {hook.settle_s:g} s' if hook.settle_s else ''}{budget})")
    if plan.unchanged:
        ctx.say(f"already on the target, left alone: {', '.join(plan.unchanged)}")


class _Live:
    """Progress on stderr: one line rewritten in place on a terminal; in a log (CI, cron, systemd)
    a line per wave and per change of the host counts, at most one every few seconds, with elapsed time."""

    LOG_EVERY_S = 5.0

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.started = time.monotonic()
        self._last: tuple[int, str] | None = None
        self._last_at = 0.0

    def __call__(self, p: WaveProgress) -> None:
        if self.ctx.json:
            return
        states = " ".join(f"{k}={v}" for k, v in sorted(p.states.items()))
        elapsed = time.monotonic() - self.started
        if self.ctx.interactive:
            line = f"\r[{elapsed:6.0f}s] wave {p.wave + 1}/{p.waves}  {states}  failures {p.failures}/{p.budget}"
            sys.stderr.write(line[:200].ljust(120))
            sys.stderr.flush()
            return
        key = (p.wave, states)
        new_wave = self._last is None or self._last[0] != p.wave
        if key == self._last or (not new_wave and elapsed - self._last_at < self.LOG_EVERY_S):
            return
        self._last, self._last_at = key, elapsed
        print(f"reimage: wave {p.wave + 1}/{p.waves}: {states}; failures {p.failures}/{p.budget} "
              f"(+{format_elapsed(elapsed)})", file=sys.stderr, flush=True)


def _render(ctx: Context, out: RunOutcome) -> int:
    if ctx.interactive:
        sys.stderr.write("\n")
    elif not ctx.json:
        print(f"reimage: run {out.run_id} {out.status.value} after {format_elapsed(out.seconds)}", file=sys.stderr)
    if ctx.json:
        ctx.emit(out)
    else:
        ctx.table(["host", "result"], sorted(out.results.items()))
        ctx.say(f"run {out.run_id}: {out.status.value}: {out.summary}")
    return 0 if out.status == RunStatus.SUCCEEDED else 1


def cmd_reimage(args: argparse.Namespace, ctx: Context) -> int:
    """Plan (--dry-run) or run a reimage of the selected hosts in waves, and print the outcome."""
    settings = ctx.settings()
    if args.resume:
        return _render(ctx, resume_run(settings, args.resume, selection(args), _Live(ctx)))
    by_state = args.state is not None or args.stale
    if not by_state and (not args.pattern or not args.image):
        raise InputError("reimage needs a host pattern and --image NAME@CHANNEL, or --state/--stale "
                         "(or --resume RUN_ID)")
    req = ReimageRequest(args.pattern or "all", args.image or "", _policy(args), selection(args), force=args.force,
                         reason=args.reason, contest_window_s=args.contest_window, state=args.state, stale=args.stale,
                         capture_console=args.capture_console)
    plan, checks = plan_request(settings, req)
    if args.dry_run:
        if ctx.json:
            ctx.emit({"dry_run": True, "plan": plan_to_dict(plan), "checks": list(checks)})
        else:
            _show_plan(ctx, plan, checks)
            ctx.say("dry run: nothing was changed")
        return 0
    if not plan.hosts:
        ctx.say("nothing to do: every selected host is already on the target build")
        if ctx.json:
            ctx.emit({"plan": plan_to_dict(plan), "results": {}})
        return 0
    if not args.yes:
        if not sys.stdin.isatty() or ctx.json:
            raise InputError("reimage asks for confirmation on a terminal; pass --yes to run without asking")
        _show_plan(ctx, plan, checks)
        answer = input(f"reimage {len(plan.hosts)} host(s)? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            ctx.say("nothing done")
            return 1

    def started(run_id: str) -> None:
        if not ctx.json:
            print(f"run {run_id} started (resume with: golden reimage --resume {run_id})", file=sys.stderr)

    return _render(ctx, execute_plan(settings, req, plan, checks, _Live(ctx), started))
