"""Build ids do not move: the same inputs give the same id as before (pinned values, computed on the
code before the bake engine was split into builders, attempt and collection).

A bake hit in the store depends on it: a changed id scheme would rebake every image of every home.
The pinned folder digest covers tree_digest (paths, executable bits, bytes, symlink targets); the
three ids cover a DIB bake, a Packer layer on a parent, and a --force rebuild.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from toolkit.bake.plan import BakeInputs, canonical_json, sha256_text, tree_digest


def _role(root: Path) -> Path:
    (root / "tasks").mkdir(parents=True)
    (root / "tasks" / "main.yml").write_text("- name: x\n  debug: msg=hi\n")
    (root / "files").mkdir()
    (root / "files" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "files" / "run.sh", 0o755)
    os.symlink("run.sh", root / "files" / "link")
    return root


def test_the_same_inputs_keep_their_build_ids(tmp_path: Path) -> None:
    digest = tree_digest(_role(tmp_path / "netboot"))
    assert digest == "043aa161b7590055fd29fe5c6b8528a39cf766673ec37d81e54392c8173ab4e6"
    base = BakeInputs(spec_sha256=sha256_text(canonical_json({"name": "base", "packages": ["openssh-server"]})),
                      roles={"netboot": digest}, elements={"golden": "c" * 64}, dib_version="3.43.0",
                      snapshot="2026-01-01T00:00:00Z")
    assert base.build_id() == "d683c210a7d8b98f"
    assert replace(base, parent_build="06ffe720016664e0", packer_version="1.6.6").build_id() == "5880a1c27cda0972"
    assert replace(base, rebuild="20260101T000000.000000Z").build_id() == "5d2184c9826274eb"
