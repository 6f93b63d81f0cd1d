"""The install plan (toolkit/install/plan.py) and golden-install's pure decisions, as tables: the sfdisk
script of a layout, the plan's names and entry text per slot, the plan reader's refusals, how a disk's
``sfdisk --json`` is classified (blank, golden's, someone else's) and which entries a slot's write removes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.fixtures.common import load_script
from toolkit.install import entries
from toolkit.install.layout import ESP_TYPE, LINUX_DATA_TYPE, ROOT_X86_64_TYPE, Disk, plan_layout
from toolkit.install.plan import PLAN_FORMAT, InstallPlan, plan_install, sfdisk_script
from toolkit.install.settings import MIB, DiskSettings
from toolkit.install.slots import Slot

INSTALLER = Path(__file__).resolve().parents[2] / "roles" / "installer" / "files" / "golden-install"
GIB = 1 << 30
SHA = "ab" * 32


GI = load_script(INSTALLER, "golden_install")
LAYOUT = plan_layout([Disk("vda", 10 * GIB)], DiskSettings())


def _plan(slot: Slot = Slot.A, build: str = "base-7", tries: int = 3) -> InstallPlan:
    return plan_install(LAYOUT, slot, build, SHA.upper(), tries, 42, "console=ttyS0")


def test_sfdisk_script_counts_in_mib_so_any_sector_size_fits() -> None:
    assert sfdisk_script(LAYOUT) == (
        "label: gpt\n"
        f'start=1MiB, size=512MiB, type={ESP_TYPE.upper()}, name="esp"\n'
        f'start=513MiB, size=4096MiB, type={ROOT_X86_64_TYPE.upper()}, name="golden-a"\n'
        f'start=4609MiB, size=4096MiB, type={ROOT_X86_64_TYPE.upper()}, name="golden-b"\n'
        f'start=8705MiB, size=1534MiB, type={LINUX_DATA_TYPE.upper()}, name="golden-data"\n')


@pytest.mark.parametrize(("slot", "build", "tries", "name", "prefix", "kdir"), [
    (Slot.A, "base-7", 3, "golden-a-base-7+3.conf", "golden-a-", "golden/a"),
    (Slot.B, "base-7", 3, "golden-b-base-7+3.conf", "golden-b-", "golden/b"),
    (Slot.B, "web-20260101.1", 1, "golden-b-web-20260101.1+1.conf", "golden-b-", "golden/b"),
])
def test_plan_names_the_slot_entry_and_kernel_dir(slot: Slot, build: str, tries: int, name: str, prefix: str,
                                                   kdir: str) -> None:
    plan = _plan(slot, build, tries)
    assert (plan.slot, plan.slot_label, plan.entry_name, plan.stale_prefix, plan.kernel_dir) == (
        slot.value, f"golden-{slot.value}", name, prefix, kdir)
    assert plan.entry_text == entries.entry_conf(entries.new_entry(slot, build, tries), 42, "console=ttyS0")
    assert f"linux /{kdir}/vmlinuz\n" in plan.entry_text and "version 42\n" in plan.entry_text
    assert "default" not in plan.loader_conf  # a pinned default would defeat the counter (nixpkgs#84204)


def test_plan_round_trips_through_the_installer_reader() -> None:
    plan = GI.load_plan(_plan().to_json())
    assert plan["format"] == PLAN_FORMAT and plan["sha256"] == SHA  # lower-cased as sha256sum prints it
    assert plan["device"] == "/dev/vda"
    assert plan["partitions"] == [["esp", ESP_TYPE], ["golden-a", ROOT_X86_64_TYPE], ["golden-b", ROOT_X86_64_TYPE],
                                  ["golden-data", LINUX_DATA_TYPE]]


def _without(key: str) -> str:
    d = json.loads(_plan().to_json())
    del d[key]
    return json.dumps(d)


@pytest.mark.parametrize(("text", "says"), [
    ("{not json", "the plan is not JSON"),
    ("[]", "the plan lacks format, device"),
    (_without("sha256"), "the plan lacks sha256"),
    (json.dumps({**json.loads(_plan().to_json()), "format": 99}), f"plan format 99 is not {PLAN_FORMAT}"),
])
def test_bad_plans_are_refused_with_exit_2(text: str, says: str) -> None:
    with pytest.raises(GI.PlanError, match="^" + says.replace("(", r"\(")) as e:
        GI.load_plan(text)
    assert e.value.code == 2 and e.value.hint


WANTED = json.loads(_plan().to_json())["partitions"]


def _table(parts: list[tuple[str, str]], label: str = "gpt", sector: int = 512) -> dict:
    return {"partitiontable": {"label": label, "device": "/dev/vda", "sectorsize": sector, "partitions": [
        {"node": f"/dev/vda{i}", "start": 2048 * i, "size": 1000 * i, "type": guid.upper(), "name": name}
        for i, (name, guid) in enumerate(parts, 1)]}}


OURS = [(str(n), str(g)) for n, g in WANTED]


def test_a_blank_disk_classifies_as_none_and_ours_by_name_in_bytes() -> None:
    assert GI.classify_table(None, WANTED) is None
    parts = GI.classify_table(_table(OURS), WANTED)
    assert parts["golden-b"] == GI.Part("golden-b", 3 * 2048 * 512, 3 * 1000 * 512)
    assert GI.classify_table(_table(OURS, sector=4096), WANTED)["esp"] == GI.Part("esp", 2048 * 4096, 1000 * 4096)
    extra = GI.classify_table(_table([*OURS, ("scratch", LINUX_DATA_TYPE)]), WANTED)
    assert set(extra) == {"esp", "golden-a", "golden-b", "golden-data"}  # another partition beside ours is left be


@pytest.mark.parametrize(("what", "table"), [
    ("a data partition missing", _table(OURS[:3])),
    ("slot b of the wrong type", _table([*OURS[:2], ("golden-b", LINUX_DATA_TYPE), OURS[3]])),
    ("an MBR table", _table(OURS, label="dos")),
    ("another system's GPT", _table([("EFI System", ESP_TYPE), ("root", ROOT_X86_64_TYPE)])),
])
def test_a_table_that_is_not_goldens_is_refused(what: str, table: dict) -> None:
    with pytest.raises(GI.DiskError, match="holds a partition table that is not golden's") as e:
        GI.classify_table(table, WANTED)
    assert e.value.code == 1 and "golden retire" in e.value.hint, what


@pytest.mark.parametrize(("names", "prefix", "stale"), [
    ([], "golden-a-", []),
    (["golden-a-v1+3.conf", "golden-b-v2.conf"], "golden-a-", ["golden-a-v1+3.conf"]),
    (["golden-a-v1+0-3.conf", "golden-a-v0.conf", "golden-b-v2+1-2.conf"], "golden-a-",
     ["golden-a-v0.conf", "golden-a-v1+0-3.conf"]),
    (["golden-b-v2.conf", "golden-b-v2.conf.tmp", "debian.conf"], "golden-b-", ["golden-b-v2.conf"]),
])
def test_stale_entries_are_the_target_slots_only(names: list[str], prefix: str, stale: list[str]) -> None:
    assert GI.stale_entries(names, prefix) == stale


def test_a_squashfs_larger_than_the_slot_is_refused() -> None:
    plan = json.loads(_plan().to_json())
    with pytest.raises(GI.DiskError, match="does not fit slot a"):
        GI.check_fits(plan, 16 * MIB + 1, GI.Part("golden-a", MIB, 16 * MIB))
    GI.check_fits(plan, 16 * MIB, GI.Part("golden-a", MIB, 16 * MIB))


def test_a_plan_for_a_disk_this_machine_lacks_exits_2_before_anything(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    squashfs, kernel, initrd = (tmp_path / n for n in ("rootfs.squashfs", "vmlinuz", "initrd"))
    for f in (squashfs, kernel, initrd):
        f.write_bytes(b"x")
    plan = json.loads(plan_install(plan_layout([Disk("nodisk9", 10 * GIB)], DiskSettings()), Slot.A, "base-7",
                                   hashlib.sha256(b"x").hexdigest(), 3, 1, "").to_json())
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    rc = GI.main(["--plan", str(tmp_path / "plan.json"), "--squashfs", str(squashfs), "--kernel", str(kernel),
                  "--initrd", str(initrd)])
    out, err = capsys.readouterr()
    assert (rc, out) == (2, "")
    assert err == ("golden-install: /dev/nodisk9 is not a block device on this machine (set disk_device to auto or "
                   "to a disk that golden hw HOST lists)\n")
