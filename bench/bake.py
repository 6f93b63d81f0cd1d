"""Bake: our cold bake against plain ``disk-image-create`` with the same elements, a no-op rebake
(cache hit) and a role-only change.

    .venv/bin/python -m bench.bake [--image base]      # full: five DIB runs, ~10 min on 2 cores
    .venv/bin/python -m bench.bake --skip-role-change  # four DIB runs, ~8 min
    .venv/bin/python -m bench.bake --role-only         # cold bake + role-only rebake, ~4 min
    .venv/bin/python -m bench.bake --quick             # no-op rebake only, seconds
    .venv/bin/python -m bench.bake --packer            # builder: packer (images/seeded.yaml), ~25 min
    .venv/bin/python -m bench.bake --packer --once     # one golden bake + one plain packer build, ~12 min

Everything happens in a throwaway GOLDEN_HOME and a throwaway copy of the project's images/,
roles/ and elements/ (the role-only change edits the copy), never in the test fixture home; the
shared DIB caches (debootstrap tarball, apt archives under the settings' cache) are used as a
bake would. Order: cold bake, no-op rebake, plain DIB, plain DIB, forced rebake (the cold bake
again, ``--force``), role-only rebake. Ours and the peer run twice each in A-B-B-A order, so a
cache the first run warms or a load that drifts during the run favours neither side; the overhead
compares the means of the two pairs.

The role-only rebake changes one role's defaults after the cold bake captured the pre-role root,
so it starts from that root (the roles, the initramfs, DIB's finalise and image, our squashfs still
run); its target is a fraction of the cold bake of the same run. The cached root the benchmark made
is removed at the end (its package snapshot is the throwaway home's, so nothing else could use it).

Plain DIB is the exact invocation the bake makes (same elements, packages, environment and
hook plan, raw output), prepared by the bake's own helpers and run directly, so the difference
is what golden adds around DIB: planning, the squashfs, the bake checks, hashing and the store.

--packer times images/seeded.yaml (builder: packer on base; base is hard-linked from the fixture
store, so no DIB run): golden bake, then plain ``packer build`` twice on the very template the bake
generated (its disk, key and playbook remade the same way beforehand, untimed), then
``golden bake --force``; the overhead is everything golden does outside packer (planning,
unpacking the parent, mkfs, packer validate, sealing, initramfs, checks, squashfs, store).

--quick needs no DIB run: it hard-links the newest fixture build and its package-snapshot stamp
into the throwaway home, then times ``golden bake`` expecting a cache hit.
Results go to bench/results/bake-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, loadavg, machine, machine_line, ratio, render_table, verdict, write_results

GOLDEN = str(Path(sys.executable).parent / "golden")
FIXTURE_STORE = Path.home() / ".cache" / "golden-tests" / "bake-home" / "store"
TARGET_NOOP_S = 5.0
TARGET_OVERHEAD = 0.10
TARGET_ROLE_ONLY = 0.40  # of a cold bake (issue 13)
PROJECT_PARTS = ("images", "roles", "elements", "golden.yaml")


def copy_project(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for part in PROJECT_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, symlinks=True)
        elif src.is_file():
            shutil.copy2(src, dest / part)
    (dest / "roles").mkdir(exist_ok=True)
    return dest


def settle() -> None:
    """Flush what the previous run wrote (a bake leaves ~1.5 GB of dirty pages behind), so its
    writeback is not charged to the next run."""
    os.sync()
    time.sleep(2)


def golden_bake(env: dict[str, str], image: str, *, force: bool = False) -> dict[str, Any]:
    settle()
    t0 = time.monotonic()
    p = subprocess.run([GOLDEN, "--json", "bake", image, *(["--force"] if force else [])], env=env, cwd=ROOT,
                       capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"golden bake {image} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout)
    return {"wall_s": round(wall, 2), "reported_s": out["seconds"], "dib_s": out.get("dib_seconds"),
            "packer_s": out.get("packer_seconds"),
            "cache_hit": out["cache_hit"], "build_id": out["build_id"], "pre_role_root": out.get("pre_role_root")}


def plain_dib(project: Path, home: Path, image: str) -> dict[str, Any]:
    """Run disk-image-create exactly as the bake would, without anything golden does around it."""
    from toolkit.bake import cleanup
    from toolkit.bake.build import make_plan
    from toolkit.bake.dib import BakePaths, dib_command
    from toolkit.bake.dibbuild import _prepare_cache, _write_hook_plan, resolve_mirrors
    from toolkit.core.config import load_settings
    from toolkit.image.spec import load_image
    from toolkit.store.artifacts import Store

    settings = load_settings(project=project, home=home)
    spec = load_image(image, settings.images_dir, settings.roles_dir)
    store = Store(settings.store_dir)
    plan = make_plan(settings, spec, store, refresh=False)
    work = home / "plain-dib"
    paths = BakePaths(work / "work")
    for d in (paths.tmp, paths.out):
        d.mkdir(parents=True)
    lease = _prepare_cache(settings, paths, plan)
    try:
        _write_hook_plan(paths, plan, settings)
        inv = dib_command(plan, paths, resolve_mirrors(spec, settings), use_debootstrap_cache=lease.use_tarball,
                          project=ROOT)
        settle()
        t0 = time.monotonic()
        with open(home / "plain-dib.log", "wb") as log:
            p = subprocess.run(list(inv.argv), env=inv.env, stdout=log, stderr=subprocess.STDOUT, check=False)
        wall = time.monotonic() - t0
    finally:
        lease.release()
        cleanup.release(work)
        shutil.rmtree(work, ignore_errors=True)
    if p.returncode != 0:
        tail = (home / "plain-dib.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"plain disk-image-create failed (exit {p.returncode}):\n{tail}")
    return {"wall_s": round(wall, 2), "argv": list(inv.argv)[:6] + ["..."] + list(inv.argv)[-len(plan.elements):]}


def change_role(project: Path, image: str) -> str:
    """Touch one role of the image the way a role edit would: a new task-free defaults line."""
    from toolkit.image.spec import load_image

    spec = load_image(image, project / "images", project / "roles")
    role = spec.roles[-1].name
    defaults = project / "roles" / role / "defaults" / "main.yml"
    defaults.parent.mkdir(parents=True, exist_ok=True)
    text = defaults.read_text() if defaults.is_file() else "---\n"
    defaults.write_text(text.rstrip("\n") + f"\nbench_role_change: {int(time.time())}\n")
    return role


def seed_from_fixture(home: Path, image: str) -> str | None:
    """Hard-link the fixture's builds of ``image`` and its snapshot stamp (read-only use)."""
    src = FIXTURE_STORE / image
    if not src.is_dir():
        return None
    dest = home / "store" / image
    dest.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name.startswith(".package-snapshot"):
            shutil.copy2(entry, dest / entry.name)
        elif entry.is_dir() and (entry / "manifest.json").is_file():
            shutil.copytree(entry, dest / entry.name, copy_function=os.link)
    return str(src)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="base")
    ap.add_argument("--quick", action="store_true", help="only the no-op rebake, against the fixture's builds")
    ap.add_argument("--skip-role-change", action="store_true",
                    help="leave out the role-only rebake (a third DIB run), to stay within ~12 min")
    ap.add_argument("--role-only", action="store_true",
                    help="only the cold bake and the role-only rebake (no plain DIB, no --force run)")
    ap.add_argument("--packer", action="store_true", help="builder: packer against plain packer build")
    ap.add_argument("--once", action="store_true", help="with --packer: one run of each (A-B), not A-B-B-A")
    args = ap.parse_args()
    if args.packer:
        return packer_main(args.once)
    started, load_start = time.monotonic(), loadavg()
    rows: list[tuple[Any, ...]] = []
    targets: list[dict[str, Any]] = []
    data: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="golden-bakebench-", dir=Path.home() / ".cache") as tmp:
        project = copy_project(Path(tmp) / "project")
        home = Path(tmp) / "home"
        home.mkdir()
        env = {**os.environ, "GOLDEN_HOME": str(home), "GOLDEN_PROJECT": str(project)}
        if args.quick:
            seeded = seed_from_fixture(home, args.image)
            if seeded is None:
                raise SystemExit(f"--quick needs a fixture build of {args.image} under {FIXTURE_STORE}")
            print(f"seeded the throwaway home with the builds in {seeded}", flush=True)
        else:
            print(f"cold bake of {args.image} (load {loadavg()[0]}) ...", flush=True)
            data["cold"] = golden_bake(env, args.image)
            print(f"  {data['cold']}", flush=True)
        noop = golden_bake(env, args.image)
        data["noop"] = noop
        print(f"no-op rebake: {noop}", flush=True)
        if not noop["cache_hit"]:
            print("  (not a cache hit: the fixture's builds are from other inputs; this was a real bake)")
        if not args.quick and not args.role_only:
            for key in ("plain_dib", "plain_dib_2"):
                print(f"plain disk-image-create, same elements (load {loadavg()[0]}) ...", flush=True)
                data[key] = plain_dib(project, home, args.image)
                print(f"  {data[key]['wall_s']} s", flush=True)
            print(f"cold bake again, --force (load {loadavg()[0]}) ...", flush=True)
            data["cold_2"] = golden_bake(env, args.image, force=True)
            print(f"  {data['cold_2']}", flush=True)
        if not args.quick and not args.skip_role_change:
            role = change_role(project, args.image)
            print(f"role-only change (role {role}) rebake (load {loadavg()[0]}) ...", flush=True)
            data["role_change"] = {**golden_bake(env, args.image), "role": role}
            print(f"  {data['role_change']}", flush=True)
            if data["role_change"]["pre_role_root"]:
                from toolkit.bake.rootcache import RootCache
                from toolkit.core.config import load_settings

                cache = RootCache(load_settings(project=project, home=home).cache / "pre-role")
                cache.path(data["role_change"]["pre_role_root"]).unlink(missing_ok=True)
    cold, dib, role_s = data.get("cold"), data.get("plain_dib"), data.get("role_change")
    if cold and dib and "cold_2" in data:
        ours = [data["cold"]["wall_s"], data["cold_2"]["wall_s"]]
        peer = [data["plain_dib"]["wall_s"], data["plain_dib_2"]["wall_s"]]
        mean_ours, mean_peer = sum(ours) / 2, sum(peer) / 2
        over = mean_ours / mean_peer - 1
        data["overhead"] = {"ours_mean_s": round(mean_ours, 2), "peer_mean_s": round(mean_peer, 2),
                            "overhead": round(over, 4)}
        rows.append(("cold bake (golden bake)", ours[0], round(ratio(ours[0], mean_peer) or 0, 3), "vs plain DIB mean"))
        rows.append(("plain disk-image-create", peer[0], round(ratio(peer[0], mean_peer) or 0, 3), "peer"))
        rows.append(("plain disk-image-create", peer[1], round(ratio(peer[1], mean_peer) or 0, 3), "peer"))
        rows.append(("golden bake --force", ours[1], round(ratio(ours[1], mean_peer) or 0, 3), "vs plain DIB mean"))
        rows.append(("mean of ours / mean of plain DIB", round(mean_ours, 2), round(1 + over, 3), "overhead"))
        # Where the difference comes from: golden's own work around its DIB run (planning, squashfs,
        # hashing, store) against the variation of DIB itself between identical runs.
        own = [r["wall_s"] - r["dib_s"] for r in (data["cold"], data["cold_2"]) if r.get("dib_s")]
        if own:
            mean_own = sum(own) / len(own)
            data["overhead"]["golden_own_mean_s"] = round(mean_own, 2)
            rows.append(("  of which golden's own work", round(mean_own, 2), round(ratio(mean_own, mean_peer) or 0, 3),
                         "vs plain DIB mean"))
            rows.append(("  plain DIB run-to-run spread", round(abs(peer[0] - peer[1]), 2),
                         round(ratio(abs(peer[0] - peer[1]), mean_peer) or 0, 3), "vs plain DIB mean"))
        targets.append({"target": f"cold-bake overhead over plain DIB < {TARGET_OVERHEAD:.0%}",
                        "value": f"{over:+.1%}", "met": over < TARGET_OVERHEAD})
    if cold and not dib:
        rows.append(("cold bake (golden bake)", cold["wall_s"], 1.0, "itself"))
    rows.append(("no-op rebake (cache hit)" if noop["cache_hit"] else "no-op rebake (NOT a hit)", noop["wall_s"],
                 round(ratio(noop["wall_s"], cold["wall_s"]) or 0, 4) if cold else None,
                 "vs cold bake" if cold else "-"))
    targets.append({"target": f"no-op rebake < {TARGET_NOOP_S:g} s", "value": f"{noop['wall_s']} s",
                    "met": noop["cache_hit"] and noop["wall_s"] < TARGET_NOOP_S})
    if role_s and cold:
        frac = ratio(role_s["wall_s"], cold["wall_s"]) or 0
        how = "from cached pre-role root" if role_s["pre_role_root"] else "full DIB run (no cached root)"
        rows.append((f"role-only change ({role_s['role']}), {how}", role_s["wall_s"], round(frac, 3),
                     "vs cold bake"))
        data["role_only_ratio"] = round(frac, 4)
        targets.append({"target": f"role-only rebake <= {TARGET_ROLE_ONLY:.0%} of a cold bake",
                        "value": f"{frac:.1%}", "met": bool(role_s["pre_role_root"]) and frac <= TARGET_ROLE_ONLY})
    mode = "quick" if args.quick else ("role-only" if args.role_only else "full")
    return _report(mode, args.image, started, load_start, data, rows, targets)


def _report(mode: str, image: str, started: float, load_start: Any, data: dict[str, Any],
            rows: list[tuple[Any, ...]], targets: list[dict[str, Any]]) -> int:
    """Print the runs and the targets, write the JSON; every mode of this benchmark ends here."""
    result = {"benchmark": "bake", "mode": mode, "image": image,
              "machine": machine(), "load_start": load_start, "load_end": loadavg(),
              "seconds": round(time.monotonic() - started, 1), **data, "targets": targets}
    print()
    print(f"Bake benchmark ({mode}, image {image}; wall seconds of the whole command)")
    print(machine_line(result["machine"], load_start, result["load_end"]))
    print(render_table(("RUN", "WALL S", "RATIO", "AGAINST"), rows))
    print()
    print(render_table(("TARGET", "VALUE", "RESULT"), [(t["target"], t["value"], verdict(t["met"])) for t in targets]))
    print(f"wrote {write_results('bake', result)}")
    return 0


PACKER_IMAGE = "seeded"


def plain_packer(home: Path, build_path: Path) -> dict[str, Any]:
    """``packer build`` on the template the bake of ``build_path`` generated, with its work folder
    (disk, throwaway key, playbook) remade by the bake's own helpers first (untimed)."""
    from toolkit.bake import cleanup
    from toolkit.bake.packer import PackerPaths
    from toolkit.bake.packerbuild import make_key, prepare_disk
    from toolkit.runs.record import RunRecord
    from toolkit.store.artifacts import Store

    store = Store(home / "store")
    build = store.find(PACKER_IMAGE, build_path.name)
    assert build is not None and build.manifest.parent_build
    parent = store.find("base", build.manifest.parent_build)
    assert parent is not None
    tpl_text = (build.logs / "packer-template.json").read_text()
    paths = PackerPaths(Path(json.loads(tpl_text)["builders"][0]["iso_url"]).parent)
    paths.work.mkdir(parents=True)
    try:
        make_key(paths)
        shutil.copyfile(build.logs / "packer-playbook.yml", paths.playbook)
        rec = RunRecord.create(paths.work, "prep")
        prepare_disk(paths, parent, rec)
        paths.template.write_text(tpl_text)
        # TMPDIR short, as golden's bake does: packer's plugins listen on unix sockets there (108 bytes)
        short_tmp = tempfile.mkdtemp(prefix="gpk-")
        env = {**os.environ, "CHECKPOINT_DISABLE": "1", "PACKER_CACHE_DIR": str(paths.work / "packer-cache"),
               "TMPDIR": short_tmp}
        settle()
        t0 = time.monotonic()
        with open(home / "plain-packer.log", "wb") as log:
            p = subprocess.run(["packer", "build", "-color=false", str(paths.template)], env=env, stdout=log,
                               stderr=subprocess.STDOUT, check=False)
        wall = time.monotonic() - t0
    finally:
        cleanup.release(paths.work)
        shutil.rmtree(paths.work, ignore_errors=True)
        if "short_tmp" in locals():
            shutil.rmtree(short_tmp, ignore_errors=True)
    if p.returncode != 0:
        tail = (home / "plain-packer.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"plain packer build failed (exit {p.returncode}):\n{tail}")
    return {"wall_s": round(wall, 2)}


def packer_main(once: bool) -> int:
    started, load_start = time.monotonic(), loadavg()
    data: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="golden-bakebench-", dir=Path.home() / ".cache") as tmp:
        project = copy_project(Path(tmp) / "project")
        home = Path(tmp) / "home"
        home.mkdir()
        if seed_from_fixture(home, "base") is None:
            raise SystemExit(f"--packer needs a fixture build of base under {FIXTURE_STORE} (run the bake tests)")
        env = {**os.environ, "GOLDEN_HOME": str(home), "GOLDEN_PROJECT": str(project)}
        print(f"golden bake {PACKER_IMAGE} (load {loadavg()[0]}) ...", flush=True)
        data["ours"] = golden_bake(env, PACKER_IMAGE)
        build_path = home / "store" / PACKER_IMAGE / data["ours"]["build_id"]
        print(f"  {data['ours']}", flush=True)
        if data["ours"]["cache_hit"]:
            raise SystemExit("the packer bake was a cache hit: nothing was measured")
        runs = ("peer",) if once else ("peer", "peer_2")
        for key in runs:
            print(f"plain packer build, same template (load {loadavg()[0]}) ...", flush=True)
            data[key] = plain_packer(home, build_path)
            print(f"  {data[key]['wall_s']} s", flush=True)
        if not once:
            print(f"golden bake {PACKER_IMAGE} --force (load {loadavg()[0]}) ...", flush=True)
            data["ours_2"] = golden_bake(env, PACKER_IMAGE, force=True)
            print(f"  {data['ours_2']}", flush=True)
        data["noop"] = golden_bake(env, PACKER_IMAGE)
    ours = [data[k]["wall_s"] for k in ("ours", "ours_2") if k in data]
    peer = [data[k]["wall_s"] for k in runs]
    mean_ours, mean_peer = sum(ours) / len(ours), sum(peer) / len(peer)
    over = mean_ours / mean_peer - 1
    data["overhead"] = {"ours_mean_s": round(mean_ours, 2), "peer_mean_s": round(mean_peer, 2),
                        "overhead": round(over, 4)}
    rows: list[tuple[Any, ...]] = [("golden bake (builder: packer)", ours[0],
                                    round(ratio(ours[0], mean_peer) or 0, 3), "vs plain packer mean")]
    rows += [("plain packer build, same template", w, round(ratio(w, mean_peer) or 0, 3), "peer") for w in peer]
    if len(ours) > 1:
        rows.append(("golden bake --force", ours[1], round(ratio(ours[1], mean_peer) or 0, 3), "vs plain packer mean"))
    rows.append(("mean of ours / mean of plain packer", round(mean_ours, 2), round(1 + over, 3), "overhead"))
    # Where it goes: golden's wall time outside its own packer build run, and packer's spread.
    own = [data[k]["wall_s"] - data[k]["packer_s"] for k in ("ours", "ours_2") if data.get(k, {}).get("packer_s")]
    if own:
        data["overhead"]["golden_own_mean_s"] = round(sum(own) / len(own), 2)
        rows.append(("  of which outside packer build", round(sum(own) / len(own), 2),
                     round(ratio(sum(own) / len(own), mean_peer) or 0, 3), "vs plain packer mean"))
    rows.append(("no-op rebake (cache hit)" if data["noop"]["cache_hit"] else "no-op rebake (NOT a hit)",
                 data["noop"]["wall_s"], None, "-"))
    targets = [{"target": f"packer bake overhead over plain packer build < {TARGET_OVERHEAD:.0%}",
                "value": f"{over:+.1%}", "met": over < TARGET_OVERHEAD},
               {"target": f"no-op rebake < {TARGET_NOOP_S:g} s", "value": f"{data['noop']['wall_s']} s",
                "met": data["noop"]["cache_hit"] and data["noop"]["wall_s"] < TARGET_NOOP_S}]
    return _report("packer-once" if once else "packer", PACKER_IMAGE, started, load_start, data, rows, targets)


if __name__ == "__main__":
    sys.exit(main())
