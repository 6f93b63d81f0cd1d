"""Two labs that start at the same moment can both find the same UDP ports free; the loser must
choose again instead of failing (CI saw 'Address already in use' from parallel tests)."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from toolkit.core.config import Settings
from toolkit.lab import machines


def test_port_taken_between_probe_and_bind_is_chosen_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(project=tmp_path, home=tmp_path / "home", cache=tmp_path / "cache")
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    taken = blocker.getsockname()[1]
    # the race, made certain: the first probe says the taken port is free, as it did for the racer
    real_pick = machines._pick_base_port
    calls: list[int] = []

    def pick(count: int, start: int) -> int:
        calls.append(start)
        return taken if len(calls) == 1 else real_pick(count, start)

    monkeypatch.setattr(machines, "_pick_base_port", pick)
    steps: list[str] = []
    try:
        status = machines.up_lab(settings, 1, no_vm=True, boot_url="http://127.0.0.1:9", on_step=steps.append)
        assert status.up
        assert status.nodes[0].bmc_port != taken
        assert len(calls) == 2
        assert any(f"UDP port {taken} was taken" in s for s in steps)
    finally:
        machines.down_lab(settings)
        blocker.close()


def test_an_explicit_port_that_is_taken_is_an_error(tmp_path: Path) -> None:
    settings = Settings(project=tmp_path, home=tmp_path / "home", cache=tmp_path / "cache")
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(machines.LabError, match="did not start"):
            machines.up_lab(settings, 1, no_vm=True, boot_url="http://127.0.0.1:9",
                            base_port=blocker.getsockname()[1])
        assert not machines.status_lab(settings).up
    finally:
        machines.down_lab(settings)
        blocker.close()
