"""The install plan a disk host's installer (roles/installer's ``golden-install``) carries out.

Pure: ``plan_install`` turns the planned layout, the target slot, the build and the host's boot tries
into the JSON the node reads. The node decides nothing but what only it can see (is the disk blank,
ours or someone else's; does a partition hold a file system): which slot, which entry name and text,
which stale entries go, and how a blank disk is partitioned (``sfdisk_script``) are all decided here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from toolkit.install import entries
from toolkit.install.layout import DATA_LABEL, ESP_LABEL, Layout, slot_label
from toolkit.install.settings import MIB
from toolkit.install.slots import Slot

PLAN_FORMAT = 1  # bump when a field changes meaning; golden-install refuses other formats


@dataclass(frozen=True)
class InstallPlan:
    """Everything ``golden-install`` needs besides the squashfs, kernel and initrd files."""
    format: int
    device: str  # the whole disk, /dev/vda
    sfdisk: str  # the table a blank disk gets (never applied to a disk that has one)
    partitions: tuple[tuple[str, str], ...]  # (GPT name, type GUID) that make a disk "ours"
    esp_label: str
    data_label: str
    slot: str  # a | b
    slot_label: str
    build: str
    sha256: str  # of rootfs.squashfs, checked on the source and again on the written slot
    entry_name: str  # loader/entries/<entry_name>, with the boot counter
    entry_text: str
    stale_prefix: str  # entries of the target slot (any build, any counter) removed before the write
    kernel_dir: str  # on the ESP, relative: golden/a
    loader_conf: str

    def to_json(self) -> str:
        """The plan as the node reads it (one JSON object, sorted keys)."""
        return json.dumps(asdict(self), sort_keys=True, indent=1)


def sfdisk_script(layout: Layout) -> str:
    """``sfdisk`` input for the layout, in MiB so it holds for 512-byte and 4K-sector disks alike."""
    lines = ["label: gpt"]
    for p in layout.partitions:
        lines.append(f'start={p.start // MIB}MiB, size={p.size // MIB}MiB, type={p.type_guid.upper()}, '
                     f'name="{p.label}"')
    return "\n".join(lines) + "\n"


def plan_install(layout: Layout, slot: Slot, build: str, sha256: str, tries: int, generation: int,
                 options: str) -> InstallPlan:
    """The plan that writes ``build`` to ``slot`` with ``tries`` boot tries; ``generation`` orders it
    above every earlier entry (the caller passes a number that only grows, e.g. the install time)."""
    entry = entries.new_entry(slot, build, tries)
    return InstallPlan(
        format=PLAN_FORMAT, device=layout.device, sfdisk=sfdisk_script(layout),
        partitions=tuple((p.label, p.type_guid) for p in layout.partitions),
        esp_label=ESP_LABEL, data_label=DATA_LABEL, slot=slot.value, slot_label=slot_label(slot),
        build=build, sha256=sha256.lower(), entry_name=entry.name,
        entry_text=entries.entry_conf(entry, generation, options),
        stale_prefix=entries.slot_prefix(slot), kernel_dir=entries.entry_dir(slot).lstrip("/"),
        loader_conf=entries.loader_conf())
