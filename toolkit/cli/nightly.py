"""golden nightly: the nightly rebuild loop (or --last: its latest report; --install-timer: a systemd timer)."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import urllib.parse
from pathlib import Path

from toolkit.cli.argtypes import duration, int_range, refuse_without
from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context
from toolkit.core.errors import InputError
from toolkit.core.logs import stderr_line
from toolkit.core.progress import format_elapsed
from toolkit.nightly.notify import check_notify_url, post_report
from toolkit.nightly.pipeline import NightlyOptions, run_nightly
from toolkit.nightly.record import last_report
from toolkit.nightly.report import render_markdown, to_dict, to_json
from toolkit.nightly.timer import TimerSettings, check_at, write_units
from toolkit.store.channels import check_name


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden nightly` and its options."""
    p = sub.add_parser("nightly", help="per image: skip when nothing changed, else bake, lab boot test, publish to "
                                       "dev, promote; report (exit 1 when any image failed)")
    p.add_argument("--images", metavar="A,B", help="only these image specs (default: every spec in images/)")
    p.add_argument("--promote-to", default="staging", metavar="CHANNEL",
                   help="promote from dev to this channel when every gate passed (default staging; 'none': don't)")
    p.add_argument("--rollout", metavar="PATTERN",
                   help="then reimage the hosts of PATTERN that follow IMAGE@<promote-to> (canary 1, waves of 10%%)")
    add_host_options(p, list_hosts=False)  # the inventory of --rollout and of channel followers
    p.add_argument("--lab-nodes", type=int_range(1, 16), default=1, help="lab machines per boot test (1)")
    p.add_argument("--lab-memory", type=int_range(512, 65_536), default=2048, metavar="MIB",
                   help="MiB per lab machine (2048)")
    p.add_argument("--boot-timeout", type=duration(30, 86_400), default=900.0, metavar="DURATION",
                   help="how long a lab machine has to boot the candidate and report healthy (15m)")
    p.add_argument("--notify", metavar="URL", help="POST the JSON report to this URL when done")
    p.add_argument("--last", action="store_true", help="print the latest nightly report; run nothing")
    p.add_argument("--install-timer", action="store_true",
                   help="write golden-nightly.service and .timer (systemd) running this command nightly")
    p.add_argument("--at", metavar="HH:MM", help="with --install-timer: time of day (02:00)")
    p.add_argument("--unit-dir", metavar="DIR",
                   help="with --install-timer: where to write the units (/etc/systemd/system)")
    p.set_defaults(func=cmd_nightly, interrupted=(
        "nightly interrupted: the running bake or reimage was stopped and rolled back as it does on its own; "
        "its run record says 'interrupted'; channels changed only for images that had passed every gate"))


def _options(args: argparse.Namespace) -> NightlyOptions:
    images = tuple(i.strip() for i in (args.images or "").split(",") if i.strip())
    for name in images:
        check_name("image", name)
    promote_to = None if args.promote_to in ("", "none") else check_name("channel", args.promote_to)
    if promote_to == "dev":
        raise InputError("--promote-to dev: the nightly publishes to dev itself; name the next channel (staging)")
    if args.rollout and not promote_to:
        raise InputError("--rollout needs --promote-to: hosts are reimaged onto IMAGE@<promote-to>")
    if args.notify:
        check_notify_url(args.notify)
    return NightlyOptions(images=images, promote_to=promote_to, rollout=args.rollout,
                          inventory=selection(args), lab_nodes=args.lab_nodes,
                          lab_memory_mb=args.lab_memory, boot_timeout_s=args.boot_timeout,
                          rollout_boot_timeout_s=args.boot_timeout)


def _timer_args(args: argparse.Namespace) -> tuple[str, ...]:
    out: list[str] = []
    if args.images:
        out += ["--images", args.images]
    out += ["--promote-to", args.promote_to or "none"]
    if args.rollout:
        out += ["--rollout", args.rollout]
    for inv in args.inventory or ():
        out += ["-i", inv if inv == "lab" else str(Path(inv).resolve())]
    if args.limit:
        out += ["-l", args.limit]
    for vid in args.vault_id:
        out += ["--vault-id", vid]
    for pwfile in args.vault_password_file:
        out += ["--vault-password-file", str(Path(pwfile).resolve())]
    if args.lab_nodes != 1:
        out += ["--lab-nodes", str(args.lab_nodes)]
    if args.boot_timeout != 900.0:
        out += ["--boot-timeout", f"{args.boot_timeout:g}"]
    if args.notify:
        out += ["--notify", args.notify]
    return tuple(out)


def _install_timer(args: argparse.Namespace, ctx: Context) -> int:
    s = ctx.settings()
    args.at, args.unit_dir = args.at or "02:00", args.unit_dir or "/etc/systemd/system"
    check_at(args.at)
    golden = shutil.which("golden") or str(Path(sys.executable).with_name("golden"))
    ts = TimerSettings(golden=str(Path(golden).resolve()), project=s.project, home=s.home.resolve(), at=args.at,
                       args=_timer_args(args), inventory=str(s.inventory.resolve()) if s.inventory else None)
    written = write_units(ts, Path(args.unit_dir))
    if ctx.json:
        ctx.emit({"written": [str(p) for p in written], "at": args.at})
    else:
        ctx.say(f"wrote {', '.join(str(p) for p in written)} (daily at {args.at}, Persistent=true)")
        ctx.say("enable it: systemctl daemon-reload && systemctl enable --now golden-nightly.timer")
    return 0


def _last(ctx: Context) -> int:
    run, report = last_report(ctx.settings().runs_dir)
    if report is None:
        msg = f"nightly run {run.id} has no report: it is {run.status}"
        if ctx.json:
            ctx.emit({"run_id": run.id, "status": run.status, "report": None})
        else:
            ctx.say(msg + (" (still running, or killed)" if run.status == "running" else ""))
        return 1
    if ctx.json:
        ctx.emit(to_dict(report))
    else:
        sys.stdout.write(render_markdown(report))
        ctx.say(f"(also {run.path / 'report.html'})")
    return report.exit_code


def cmd_nightly(args: argparse.Namespace, ctx: Context) -> int:
    """Run the nightly pipeline once, show the last run (--last), or install its systemd timer."""
    refuse_without(args, "install_timer", "at", "unit_dir")
    if args.last:
        return _last(ctx)
    if args.install_timer:
        return _install_timer(args, ctx)
    opts = _options(args)
    started = time.monotonic()

    def say(line: str) -> None:
        if not ctx.json:
            stderr_line(f"[+{format_elapsed(time.monotonic() - started)}] {line}")

    report, path = run_nightly(ctx.settings(), opts, say)
    if args.notify:
        problem = post_report(args.notify, to_json(report))
        if problem:
            host = urllib.parse.urlsplit(args.notify).hostname  # the path may hold a webhook token
            print(f"golden: warning: --notify to {host} failed: {problem}; the report is in {path}",
                  file=sys.stderr)
    if ctx.json:
        ctx.emit({**to_dict(report), "record": str(path)})
    else:
        sys.stdout.write(render_markdown(report))
        ctx.say(f"(report: {path / 'report.md'}, {path / 'report.html'})")
    return report.exit_code
