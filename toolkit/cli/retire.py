"""golden retire: erase every local disk of hosts through the cleaning image, in waves; --clear lets one back."""

from __future__ import annotations

import argparse
import sys

from toolkit.cli.argtypes import amount, duration, int_range
from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context
from toolkit.cli.reimage import _Live, _render, _show_plan
from toolkit.core.errors import InputError
from toolkit.rollout.plan import Amount, Policy
from toolkit.rollout.retire import DEFAULT_CLEANER, clear_retired
from toolkit.rollout.service import ReimageRequest, execute_plan, plan_request, plan_to_dict
from toolkit.store.channels import current_user


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden retire` and its options."""
    p = sub.add_parser("retire", help="erase and verify every local disk of hosts (cleaning image), leaving them "
                                      "clean or clean-failed; --clear lets a host have a build again")
    p.add_argument("hosts", nargs="+", metavar="HOST", help="hosts or Ansible host patterns (groups, globs)")
    p.add_argument("--reason", required=True, help="why (recorded in the audit history with every host)")
    p.add_argument("--clear", action="store_true",
                   help="clear the hosts' cleaning mark (clean or clean-failed) so they may have a build again")
    p.add_argument("--image", default=DEFAULT_CLEANER, metavar="NAME@CHANNEL|NAME@BUILD",
                   help=f"the cleaning image to netboot ({DEFAULT_CLEANER})")
    add_host_options(p)
    p.add_argument("--canary", type=int_range(0, 1_000_000), default=1,
                   help="hosts in the first wave, which must fully pass (1)")
    p.add_argument("--wave-size", type=amount(1), default="10%",
                   help="hosts per wave after the canary: N or P%% (10%%)")
    p.add_argument("--max-failures", type=amount(0), default="0", help="failure budget for the whole run: N or P%% (0)")
    p.add_argument("--boot-timeout", type=duration(1, 7 * 86_400), default=4 * 3600.0, metavar="DURATION",
                   help="how long to wait for a host's cleaning report: erasing a large disk takes hours (4h)")
    p.add_argument("--contest-window", type=duration(0, 3600), default=15.0, metavar="DURATION",
                   help="a report counts only this long after the power action, if no second boot-script fetch "
                        "contested the attempt meanwhile (15s)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_retire, interrupted="retire interrupted: hosts already marked stay cleaning, never "
                                                "available; resume with golden reimage --resume RUN_ID")


def _policy(args: argparse.Namespace) -> Policy:
    # No retry (an erase that failed once is a fact to look at) and no rollback (never back to a build).
    return Policy(canary=args.canary, wave_size=Amount.parse(args.wave_size, "--wave-size"),
                  max_failures=Amount.parse(args.max_failures, "--max-failures"), boot_timeout_s=args.boot_timeout,
                  retries=0, include_current=True, rollback=False)


def _clear(args: argparse.Namespace, ctx: Context, pattern: str) -> int:
    cleared = clear_retired(ctx.settings(), selection(args), pattern, current_user(), args.reason)
    if ctx.json:
        ctx.emit({"cleared": cleared})
    else:
        ctx.say(f"cleared: {', '.join(cleared)} (they follow their inventory image again)")
    return 0


def cmd_retire(args: argparse.Namespace, ctx: Context) -> int:
    """Plan (--dry-run) or run a retire of the selected hosts in waves, or --clear their marks."""
    if not args.reason.strip():
        raise InputError("golden retire needs a non-empty --reason (it is audited with every host)")
    pattern = ":".join(args.hosts)
    if args.clear:
        return _clear(args, ctx, pattern)
    req = ReimageRequest(pattern, args.image, _policy(args), selection(args), reason=args.reason,
                         contest_window_s=args.contest_window, retire=True)
    plan, checks = plan_request(ctx.settings(), req)
    if args.dry_run:
        if ctx.json:
            ctx.emit({"dry_run": True, "plan": plan_to_dict(plan)})
        else:
            _show_plan(ctx, plan, checks)
            ctx.say("dry run: nothing was changed")
        return 0
    if not args.yes:
        if not sys.stdin.isatty() or ctx.json:
            raise InputError("retire erases disks and asks for confirmation on a terminal; pass --yes to run")
        _show_plan(ctx, plan, checks)
        if input(f"erase every disk of {len(plan.hosts)} host(s)? [y/N] ").strip().lower() not in ("y", "yes"):
            ctx.say("nothing done")
            return 1

    def started(run_id: str) -> None:
        if not ctx.json:
            print(f"retire run {run_id} started (resume with: golden reimage --resume {run_id})", file=sys.stderr)

    return _render(ctx, execute_plan(ctx.settings(), req, plan, checks, _Live(ctx), started))
