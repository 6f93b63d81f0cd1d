"""Build ids: stable under reordering, sensitive to every input that changes the image."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from toolkit.bake.plan import ELEMENTS_DIR, canonical_json, plan_bake, snapshot_stamp, tree_digest
from toolkit.image.spec import ImageSpec

ROOT = Path(__file__).resolve().parents[2]


def _spec(**extra) -> ImageSpec:
    data = {
        "name": "demo",
        "packages": ["openssh-server", "iproute2"],
        "roles": [{"name": "alpha", "vars": {"a": 1, "b": {"x": 1, "y": 2}}}, {"name": "beta"}],
        "checks": [{"name": "f", "file": "/etc/hostname"}, {"name": "h", "http": {"port": 80}}],
    }
    data.update(extra)
    return ImageSpec.model_validate(data)


@pytest.fixture
def roles(tmp_path: Path) -> Path:
    for name in ("alpha", "beta"):
        (tmp_path / name / "tasks").mkdir(parents=True)
        (tmp_path / name / "tasks" / "main.yml").write_text(f"- name: {name}\n  ansible.builtin.meta: noop\n")
    return tmp_path


@pytest.fixture
def elements(tmp_path: Path) -> Path:
    dest = tmp_path / "elements"
    shutil.copytree(ELEMENTS_DIR, dest)
    return dest


def _id(spec: ImageSpec, roles: Path, elements: Path, dib: str = "3.43.0", snap: str = "2026-01-01T00:00:00Z") -> str:
    return plan_bake(spec, roles, dib, snap, elements_dir=elements).build_id


def test_build_id_is_stable(roles, elements):
    assert _id(_spec(), roles, elements) == _id(_spec(), roles, elements)
    assert len(_id(_spec(), roles, elements)) == 16


def test_dict_key_order_does_not_change_the_id(roles, elements):
    reordered = _spec(roles=[{"vars": {"b": {"y": 2, "x": 1}, "a": 1}, "name": "alpha"}, {"name": "beta"}])
    assert _id(reordered, roles, elements) == _id(_spec(), roles, elements)


def test_role_file_change_changes_the_id(roles, elements):
    before = _id(_spec(), roles, elements)
    (roles / "beta" / "tasks" / "main.yml").write_text("- name: changed\n  ansible.builtin.meta: noop\n")
    assert _id(_spec(), roles, elements) != before


def test_new_role_file_changes_the_id(roles, elements):
    before = _id(_spec(), roles, elements)
    (roles / "alpha" / "templates").mkdir()
    (roles / "alpha" / "templates" / "x.j2").write_text("x")
    assert _id(_spec(), roles, elements) != before


def test_unused_role_does_not_change_the_id(roles, elements):
    before = _id(_spec(), roles, elements)
    (roles / "gamma" / "tasks").mkdir(parents=True)
    (roles / "gamma" / "tasks" / "main.yml").write_text("[]")
    assert _id(_spec(), roles, elements) == before


def test_element_change_and_mode_change_change_the_id(roles, elements):
    before = _id(_spec(), roles, elements)
    hook = elements / "golden-netboot" / "post-root.d" / "60-golden-initramfs"
    hook.chmod(0o644)
    after_mode = _id(_spec(), roles, elements)
    assert after_mode != before
    hook.write_text(hook.read_text() + "\n# changed\n")
    assert _id(_spec(), roles, elements) not in (before, after_mode)


@pytest.mark.parametrize("change", [
    {"packages": ["openssh-server", "iproute2", "curl"]},
    {"roles": [{"name": "beta"}, {"name": "alpha", "vars": {"a": 1, "b": {"x": 1, "y": 2}}}]},
    {"roles": [{"name": "alpha", "vars": {"a": 2, "b": {"x": 1, "y": 2}}}, {"name": "beta"}]},
    {"dib_env": {"DIB_DEBIAN_COMPONENTS": "main,contrib"}},
])
def test_spec_changes_change_the_id(roles, elements, change):
    assert _id(_spec(**change), roles, elements) != _id(_spec(), roles, elements)


def test_dib_version_and_snapshot_change_the_id(roles, elements):
    base = _id(_spec(), roles, elements)
    assert _id(_spec(), roles, elements, dib="3.44.0") != base
    assert _id(_spec(), roles, elements, snap="2026-02-01T00:00:00Z") != base


def test_plan_keeps_only_bake_checks_and_lists_elements(roles, elements):
    plan = plan_bake(_spec(elements=["enable-serial-console"]), roles, "3.43.0", "s", elements_dir=elements)
    assert [c.name for c in plan.bake_checks] == ["f"]
    assert plan.elements == ("debian-minimal", "golden-netboot", "enable-serial-console")
    assert plan.inputs.roles.keys() == {"alpha", "beta"}


def test_snapshot_stamp_is_sticky_until_refresh():
    now = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert snapshot_stamp(None, refresh=False, now=now) == "2026-03-04T05:06:07Z"
    assert snapshot_stamp("2026-01-01T00:00:00Z", refresh=False, now=now) == "2026-01-01T00:00:00Z"
    assert snapshot_stamp("2026-01-01T00:00:00Z", refresh=True, now=now) == "2026-03-04T05:06:07Z"


def test_canonical_json_sorts_keys():
    assert canonical_json({"b": 1, "a": [{"d": 1, "c": 2}]}) == '{"a":[{"c":2,"d":1}],"b":1}'


def test_tree_digest_ignores_bytecode(tmp_path):
    (tmp_path / "a").write_text("x")
    before = tree_digest(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    assert tree_digest(tmp_path) == before


def test_real_base_spec_plans(project_root):
    from toolkit.image.spec import load_image

    spec = load_image("base", project_root / "images", project_root / "roles")
    plan = plan_bake(spec, project_root / "roles", "3.43.0", "2026-01-01T00:00:00Z")
    assert set(plan.inputs.roles) == {r.name for r in spec.roles}


def test_unsupported_output_is_refused(roles, elements):
    from toolkit.core.errors import BakeError

    with pytest.raises(BakeError, match="output tar cannot be baked yet"):
        plan_bake(_spec(outputs=["tar"]), roles, "3.43.0", "s", elements_dir=elements)


def test_project_elements_count_in_the_id(roles, elements, tmp_path):
    extra = tmp_path / "project-elements"
    (extra / "mine").mkdir(parents=True)
    (extra / "mine" / "element-deps").write_text("")
    with_extra = plan_bake(_spec(), roles, "3.43.0", "s", elements_dir=elements, project_elements=extra)
    assert with_extra.elements_path == (elements, extra)
    assert with_extra.build_id != plan_bake(_spec(), roles, "3.43.0", "s", elements_dir=elements).build_id
    (extra / "mine" / "element-deps").write_text("base\n")
    assert plan_bake(_spec(), roles, "3.43.0", "s", elements_dir=elements,
                     project_elements=extra).build_id != with_extra.build_id


def test_a_forced_rebuild_gets_its_own_id_and_plain_ids_do_not_move(tmp_path):
    from toolkit.bake.plan import BakeInputs

    plain = BakeInputs("s", {"r": "1"}, {"golden": "2"}, "3.40", "snap")
    again = BakeInputs("s", {"r": "1"}, {"golden": "2"}, "3.40", "snap", rebuild="20261202T000000.000000Z")
    assert "rebuild" not in plain.as_dict()  # ids baked before --force meant a new id are unchanged
    assert again.build_id() != plain.build_id()
    assert again.as_dict()["rebuild"] == "20261202T000000.000000Z"


def test_snapshot_epoch_is_the_stamp_in_seconds():
    from toolkit.bake.plan import snapshot_epoch
    from toolkit.core.errors import BakeError

    assert snapshot_epoch("1970-01-02T00:00:00Z") == 86400
    assert snapshot_epoch("2026-12-02T05:29:36Z") == 1796189376
    with pytest.raises(BakeError, match="not of the form"):
        snapshot_epoch("yesterday")
