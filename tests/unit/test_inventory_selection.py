"""Where a verb's inventory comes from without -i, first place found wins, as Ansible looks; the lab's only by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.core.config import Settings
from toolkit.inventory.selection import NoInventoryError, find_sources


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("GOLDEN_INVENTORY", "ANSIBLE_INVENTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANSIBLE_CONFIG", str(tmp_path / "absent.cfg"))
    monkeypatch.chdir(tmp_path)
    return Settings(project=tmp_path, home=tmp_path / "home", cache=tmp_path / "cache")


def test_order_cli_then_env_then_golden_yaml_then_ansible_cfg(settings, tmp_path, monkeypatch) -> None:
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\ninventory = inv/a.ini, ~/b.yml  ; two sources\n")
    assert find_sources(None, settings) == (tmp_path / "inv/a.ini", Path.home() / "b.yml")  # ./ansible.cfg
    monkeypatch.setenv("ANSIBLE_CONFIG", str(cfg))
    assert find_sources(None, settings.with_(inventory=tmp_path / "y.yml")) == (tmp_path / "y.yml",)
    monkeypatch.setenv("ANSIBLE_INVENTORY", "x.ini,x2.ini")
    assert find_sources(None, settings.with_(inventory=tmp_path / "y.yml")) == (Path("x.ini"), Path("x2.ini"))
    monkeypatch.setenv("GOLDEN_INVENTORY", "g.yml")
    assert find_sources(None, settings) == (Path("g.yml"),)
    assert find_sources(["c1", "c2"], settings) == (Path("c1"), Path("c2"))


def test_the_lab_only_when_named(settings, monkeypatch) -> None:
    lab = settings.home / "lab" / "inventory.yaml"
    lab.parent.mkdir(parents=True)
    lab.write_text("all: {}\n")
    with pytest.raises(NoInventoryError, match="no inventory: tried"):
        find_sources(None, settings)  # a running lab is no reason to use its inventory
    assert find_sources(["lab"], settings) == (lab,)
    assert find_sources(None, settings.with_(inventory=Path("lab"))) == (lab,)  # inventory: lab in golden.yaml
    monkeypatch.setenv("GOLDEN_INVENTORY", "lab")
    assert find_sources(None, settings) == (lab,)


def test_ansible_cfg_without_inventory_is_named_as_tried(settings, tmp_path) -> None:
    (tmp_path / "ansible.cfg").write_text("[defaults]\nforks = 5\n")
    with pytest.raises(NoInventoryError) as exc:
        find_sources(None, settings)
    assert f"inventory in {tmp_path / 'ansible.cfg'} (not set)" in exc.value.message
