"""Ansible host patterns over a small rack layout (pure)."""

from __future__ import annotations

import pytest

from toolkit.inventory.hosts import InventoryError, match_pattern

HOSTS = ["web01", "web02", "web03", "db01", "db02", "lb1"]
GROUPS = {
    "all": frozenset(HOSTS),
    "rack1": frozenset({"web01", "web02", "db01"}),
    "rack2": frozenset({"web03", "db02", "lb1"}),
    "web": frozenset({"web01", "web02", "web03"}),
    "db": frozenset({"db01", "db02"}),
}

CASES = [
    ("all", set(HOSTS)),
    ("*", set(HOSTS)),
    ("web01", {"web01"}),
    ("rack1", {"web01", "web02", "db01"}),
    ("web0*", {"web01", "web02", "web03"}),
    ("rack*", set(HOSTS)),
    ("rack1:rack2", set(HOSTS)),
    ("web01,db02", {"web01", "db02"}),
    ("rack1:&web", {"web01", "web02"}),
    ("rack1:!db", {"web01", "web02"}),
    ("all:!rack2:!web01", {"web02", "db01"}),
    ("web:&rack2:!lb1", {"web03"}),
    ("~db0[12]", {"db01", "db02"}),
    ("web[01:02]", {"web01", "web02"}),
    ("!db", {"web01", "web02", "web03", "lb1"}),
    ("nosuch", set()),
]


@pytest.mark.parametrize(("pattern", "expected"), CASES)
def test_pattern(pattern: str, expected: set[str]) -> None:
    assert match_pattern(pattern, HOSTS, GROUPS) == expected


def test_empty_pattern_is_input_error() -> None:
    with pytest.raises(InventoryError):
        match_pattern(" ", HOSTS, GROUPS)


def test_bad_regex_named() -> None:
    with pytest.raises(InventoryError, match="regular expression"):
        match_pattern("~web[", HOSTS, GROUPS)
