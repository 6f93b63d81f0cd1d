"""Ansible host patterns over a small rack layout, matched by ansible-core (no inventory files).

The real ``ansible --list-hosts`` is the peer for the same kind of table in
tests/integration/test_inventory_peer.py."""

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
    # Ansible reads NAME[a:b] as a subscript of the group (0-based, inclusive), not as a host range
    ("web[01:02]", {"web02", "web03"}),
    ("web[0]", {"web01"}),
    ("web[-1]", {"web03"}),
    ("rack1[1:]", {"web02", "db01"}),
    ("!db", {"web01", "web02", "web03", "lb1"}),
    ("nosuch", set()),
]


@pytest.mark.parametrize(("pattern", "expected"), CASES)
def test_pattern(pattern: str, expected: set[str]) -> None:
    assert match_pattern(pattern, HOSTS, GROUPS) == expected


def test_empty_pattern_is_input_error() -> None:
    with pytest.raises(InventoryError):
        match_pattern(" ", HOSTS, GROUPS)


def test_uncompilable_regex_is_what_ansible_makes_of_it() -> None:
    # ansible-core does not reject '~web[' (golden used to); we follow it
    assert match_pattern("~web[", HOSTS, GROUPS) == {"web01", "web02", "web03"}


def test_limit_narrows_like_ansible() -> None:
    assert match_pattern("all", HOSTS, GROUPS, limit="rack2:!lb1") == {"web03", "db02"}
