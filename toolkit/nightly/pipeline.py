"""``golden nightly``: per image, decide cheaply, then bake, check, boot-test, publish, promote, roll out.

Each image runs on its own: whatever fails in one is recorded as that image's failed gate and the
next image goes on. Nothing reaches a channel unless every gate before it passed; a failed lab boot
leaves dev and the promotion target where they were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toolkit.bake.build import bake_image, make_plan, resolve_mirrors
from toolkit.core.config import Settings
from toolkit.core.errors import CommandError, GoldenError, InputError, LockedError
from toolkit.core.fsutil import atomic_write
from toolkit.core.progress import Progress
from toolkit.core.stop import check_stop
from toolkit.fleet.fleet import open_fleet
from toolkit.image.diff import diff_manifests
from toolkit.image.spec import load_image
from toolkit.nightly.decide import Action, decide
from toolkit.nightly.lab import NightlyLab
from toolkit.nightly.lock import nightly_lock
from toolkit.nightly.record import new_nightly_run_id, start_record, write_report
from toolkit.nightly.report import Gate, ImageReport, NightlyReport, Outcome, console_excerpt
from toolkit.nightly.upstream import pending_upgrades, read_upstream, suites_for
from toolkit.rollout.journal import RunStatus
from toolkit.rollout.plan import Amount, Policy
from toolkit.rollout.service import ReimageRequest, execute_plan, plan_request
from toolkit.state import open_state
from toolkit.store import open_store
from toolkit.store.artifacts import Build
from toolkit.store.channels import channel_build, check_name, promote, publish, unpassed_checks
from toolkit.store.policy import parse_policy

log = logging.getLogger("golden.nightly")

DEV = "dev"
BAKE_LOCK_WAIT_S = 2 * 3600.0  # a manual bake of the same image holds the store lock this long at most


@dataclass(frozen=True)
class NightlyOptions:
    """What a nightly does: which images, where to promote and roll out, the lab's size."""
    images: tuple[str, ...] = ()  # empty: every spec in images/
    promote_to: str | None = "staging"
    rollout: str | None = None  # host pattern reimaged onto <image>@<promote_to>
    # for --rollout: the -i sources (the CLI passes its Selection, which carries --limit and vault options)
    inventory: Sequence[str] = ()
    lab_nodes: int = 1
    lab_memory_mb: int = 2048
    boot_timeout_s: float = 900.0
    rollout_boot_timeout_s: float = 900.0


class _GateFailed(Exception):
    pass


@dataclass
class _Image:
    report: ImageReport
    say: Callable[[str], None]
    gates: list[Gate] = field(default_factory=list)

    @contextmanager
    def gate(self, name: str) -> Iterator[Gate]:
        """Time a gate; a GoldenError inside it fails the gate (and this image) with its message."""
        g = Gate(name, True, 0.0)
        started = time.monotonic()
        self.say(f"{self.report.image}: {name} ...")
        try:
            try:
                yield g
            except Exception:
                check_stop()  # the gate's child died of the signal that stops us: an interrupt, not a failure
                raise
            check_stop()
        except KeyboardInterrupt:
            g.passed, g.detail = False, "interrupted"
            raise
        except GoldenError as exc:
            g.passed = False
            g.detail = exc.message + (f" ({exc.hint})" if exc.hint else "")
            tail = exc.log_tail if isinstance(exc, CommandError) else ""
            g.excerpt = g.excerpt or (console_excerpt(tail) if tail else "")
        except Exception as exc:  # one image's unexpected failure must not stop the others
            log.exception("nightly: %s: %s failed unexpectedly", self.report.image, name)
            g.passed = False
            g.detail = f"unexpected error: {exc!r}"
        finally:
            g.seconds = round(time.monotonic() - started, 1)
            self.report.gates.append(g)
            self.say(f"{self.report.image}: {name} {'passed' if g.passed else 'FAILED'} in {g.seconds:.0f} s"
                     + (f": {g.detail}" if g.detail and not g.passed else ""))
        if not g.passed:
            raise _GateFailed


class _PhaseLog(Progress):
    """The bake's DIB phases as lines of the nightly's log (its own Progress draws nothing)."""

    def __init__(self, image: str, say: Callable[[str], None]) -> None:
        super().__init__(f"bake {image}", enabled=False)
        self._image, self._emit = image, say

    def phase(self, name: str) -> None:
        if name != self.current:
            self._emit(f"{self._image}: bake: {name}")
        super().phase(name)


def list_images(settings: Settings, wanted: tuple[str, ...]) -> list[str]:
    """The images a nightly covers: ``wanted``, or every spec; InputError for an unknown one."""
    found = sorted(p.stem for p in settings.images_dir.glob("*.yaml"))
    for name in wanted:
        check_name("image", name)
        if name not in found:
            raise InputError(f"--images: no image spec {name!r} in {settings.images_dir}",
                             hint=f"image specs here: {', '.join(found) or '(none)'}")
    return list(wanted) or found


def _bake(settings: Settings, name: str, say: Callable[[str], None] = lambda s: None) -> Build:
    deadline = time.monotonic() + BAKE_LOCK_WAIT_S
    while True:
        try:
            return bake_image(settings, name, refresh=True, progress=_PhaseLog(name, say)).build
        except LockedError:
            # a person's `golden bake` of this image holds its store lock: ours bakes after it
            if time.monotonic() > deadline:
                raise
            time.sleep(10)


def _check_upstream(settings: Settings, spec, reference: Build | None, img: _Image) -> list:
    if reference is None:
        return []
    with img.gate("upstream-check") as g:
        mirrors = resolve_mirrors(spec, settings)
        state = read_upstream(suites_for(spec.base.release, mirrors.main, mirrors.security),
                              settings.cache / "nightly" / "indexes")
        ups = pending_upgrades(reference.manifest.packages, state.candidates)
        g.detail = (f"{len(ups)} newer candidate(s) for the {len(reference.manifest.packages)} packages of "
                    f"{reference.build_id} in {', '.join(sorted(state.indexes))}"
                    f"{'' if state.verified else ' (signatures not checked: no gpgv or keyring)'}")
    return ups


def _run_image(settings: Settings, name: str, opts: NightlyOptions, lab: NightlyLab,
               say: Callable[[str], None]) -> ImageReport:
    started = time.monotonic()
    report = ImageReport(name, Outcome.FAILED, None, None)
    img = _Image(report, say)
    try:
        _pipeline(settings, name, opts, lab, img)
    except _GateFailed:
        report.outcome = Outcome.FAILED
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _pipeline(settings: Settings, name: str, opts: NightlyOptions, lab: NightlyLab, img: _Image) -> None:
    report = img.report
    with img.gate("plan"):
        spec = load_image(name, settings.images_dir, settings.roles_dir)
        store, db = open_store(settings), open_state(settings)
        dev_id = channel_build(db, name, DEV)
        dev = store.find(name, dev_id) if dev_id else None
        plan = make_plan(settings, spec, store, refresh=False)
        stored = store.find(name, plan.build_id)
    report.old_build = dev_id
    upgrades = _check_upstream(settings, spec, stored or dev, img)
    decision = decide(name, plan.build_id, plan.inputs.as_dict(), dev_id, dev.manifest.inputs if dev else None,
                      stored is not None, upgrades)
    report.reasons = list(decision.reasons)
    if decision.action is Action.NO_CHANGE:
        report.outcome, report.new_build = Outcome.NO_CHANGE, dev_id
        return
    if decision.action is Action.REUSE:
        assert stored is not None
        build = stored
    else:
        with img.gate("bake") as g:
            build = _bake(settings, name, img.say)
            g.detail = f"baked {name}/{build.build_id} with refreshed packages"
    report.new_build = build.build_id
    if dev is not None:
        d = diff_manifests(dev.manifest, build.manifest)
        report.diff = asdict(d)
    with img.gate("bake-checks") as g:
        failing = unpassed_checks(build)
        checks = build.manifest.checks
        g.detail = f"{len(checks)} check(s) passed" if not failing else "failing: " + "; ".join(
            f"{c}: {checks[c].detail if c in checks else ''}".strip() for c in failing)
        if failing:
            raise GateFailure(g.detail)
    with img.gate("lab-boot") as g:
        result = lab.boot_test(name, build.build_id, img.say)
        g.detail, g.excerpt = result.detail, result.excerpt
        if not result.passed:
            raise GateFailure(result.detail)
    _publish(settings, name, build, opts, img)


class GateFailure(GoldenError):
    """A gate's evidence says no (its detail is already on the gate)."""


def _publish(settings: Settings, name: str, build: Build, opts: NightlyOptions, img: _Image) -> None:
    report = img.report
    fleet = open_fleet(settings, opts.inventory, required=False)
    with img.gate(f"publish-{DEV}") as g:
        res = publish(fleet.db, fleet.store, name, build.build_id, DEV, reason="golden nightly",
                      followers=fleet.followers(name, DEV))
        g.detail = f"{name}@{DEV}: {res.change.from_build or '(none)'} -> {build.build_id}"
        report.published[DEV] = build.build_id
    report.outcome = Outcome.PUBLISHED
    if not opts.promote_to:
        return
    with img.gate(f"promote-{opts.promote_to}") as g:
        res = promote(fleet.db, fleet.store, name, DEV, opts.promote_to, reason="golden nightly",
                      policy=parse_policy(settings.extra.get("promotion")))
        g.detail = f"{name}@{opts.promote_to}: {res.change.from_build or '(none)'} -> {build.build_id}"
        report.published[opts.promote_to] = build.build_id
    report.outcome = Outcome.PROMOTED
    if opts.rollout:
        _rollout(settings, name, opts, img)


def _rollout(settings: Settings, name: str, opts: NightlyOptions, img: _Image) -> None:
    """Reimage the hosts of ``--rollout`` that follow ``<image>@<promote_to>``: canary, waves, no failures."""
    channel = opts.promote_to
    assert channel and opts.rollout
    inv_sources = opts.inventory
    with img.gate("rollout") as g:
        fleet = open_fleet(settings, inv_sources)
        inv = fleet.inventory()
        selected = {h.name for h in inv.select(opts.rollout)} if inv else set()
        hosts = [h for h in fleet.followers(name, channel) if h in selected]
        if not hosts:
            g.detail = f"no host of {opts.rollout!r} follows {name}@{channel}; nothing to reimage"
            img.report.rollout = {"hosts": [], "summary": g.detail}
            return
        policy = Policy(canary=1, wave_size=Amount(10, percent=True), max_failures=Amount(0),
                        boot_timeout_s=opts.rollout_boot_timeout_s, retries=1)
        req = ReimageRequest(":".join(hosts), f"{name}@{channel}", policy, inv_sources)  # type: ignore[arg-type]  # a Selection: a list of sources
        plan, checks = plan_request(settings, req)
        if not plan.hosts:
            g.detail = f"every host of {opts.rollout!r} following {name}@{channel} is already on it"
            img.report.rollout = {"hosts": [], "summary": g.detail}
            return
        out = execute_plan(settings, req, plan, checks, workers=4)
        img.report.rollout = {"run_id": out.run_id, "results": out.results, "summary": out.summary}
        g.detail = f"reimage run {out.run_id}: {out.summary}"
        if out.status != RunStatus.SUCCEEDED:
            raise GateFailure(g.detail)


def run_nightly(settings: Settings, opts: NightlyOptions, say: Callable[[str], None] = lambda s: None,
                run_id: str | None = None) -> tuple[NightlyReport, Path]:
    """Run the nightly under its lock; the report is written to the run record and returned."""
    settings.require_project()  # before the lock and the run record: outside a project nothing is written
    run_id = run_id or new_nightly_run_id()
    with nightly_lock(settings.locks_dir, run_id):
        names = list_images(settings, opts.images)
        path = start_record(settings.runs_dir, run_id)
        say(f"nightly {run_id}: {len(names)} image(s): {', '.join(names)}")
        started = time.time()
        lab = NightlyLab(settings, opts.lab_nodes, opts.lab_memory_mb, opts.boot_timeout_s,
                         log_path=path / "serve.log")
        images: list[ImageReport] = []
        try:
            for name in names:
                check_stop()
                images.append(_run_image(settings, name, opts, lab, say))
        except BaseException:
            lab.stop()
            atomic_write(path / "status", "interrupted\n", fsync=False)
            raise
        lab.stop()
        report = NightlyReport(run_id, started, time.time(), _options(opts), images)
        write_report(path, report)
        return report, path


def _options(opts: NightlyOptions) -> dict[str, object]:
    d = asdict(opts)
    d["images"] = list(opts.images)
    d["inventory"] = list(opts.inventory)
    return d
