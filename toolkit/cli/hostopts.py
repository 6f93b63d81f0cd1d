"""The host-selection options every verb that acts on inventory hosts shares, spelled as ``ansible`` spells them.

``-i`` (repeatable), ``-l/--limit``, ``--vault-id``, ``--vault-password-file`` and ``--list-hosts``
are defined here once; a verb calls ``add_host_options(parser)`` and passes ``selection(args)``
wherever it used to pass its ``-i`` list. Where the sources come from when ``-i`` is not given is
``toolkit.inventory.selection``'s business.
"""

from __future__ import annotations

import argparse

from toolkit.cli.output import Context
from toolkit.inventory.selection import Selection
from toolkit.inventory.vault import VaultOptions

INVENTORY_HELP = ("inventory source, repeatable like ansible -i (file, folder, script, plugin config; 'lab': the "
                  "lab's). Default: GOLDEN_INVENTORY, ANSIBLE_INVENTORY, golden.yaml, ansible.cfg")


def add_host_options(p: argparse.ArgumentParser, *, list_hosts: bool = True) -> None:
    """``-i``, ``-l``, the vault options and (for verbs that take a pattern) ``--list-hosts``."""
    p.add_argument("-i", "--inventory", action="append", metavar="SOURCE", help=INVENTORY_HELP)
    p.add_argument("-l", "--limit", metavar="SUBSET",
                   help="further limit the hosts, as ansible --limit does (a pattern, or @FILE of names)")
    p.add_argument("--vault-id", action="append", default=[], metavar="ID",
                   help="vault identity (label@source), repeatable; also ANSIBLE_VAULT_IDENTITY_LIST")
    p.add_argument("--vault-password-file", action="append", default=[], metavar="FILE",
                   help="vault password file (an executable one is run); also ANSIBLE_VAULT_PASSWORD_FILE")
    if list_hosts:
        p.add_argument("--list-hosts", action="store_true",
                       help="print the hosts this would act on, as ansible --list-hosts does, and do nothing else")


def selection(args: argparse.Namespace) -> Selection:
    """The verb's host selection: -i sources as given, --limit, vault options."""
    vault = VaultOptions(tuple(getattr(args, "vault_id", ()) or ()), tuple(getattr(args, "vault_password_file", ())
                                                                          or ()))
    return Selection(getattr(args, "inventory", None) or (), getattr(args, "limit", None), vault)


def cmd_list_hosts(args: argparse.Namespace, ctx: Context) -> int:
    """``--list-hosts`` on any verb: the hosts its pattern and --limit select, in Ansible's format."""
    from toolkit.inventory.view import select_hosts

    names = [h.name for h in select_hosts(ctx.settings(), selection(args), getattr(args, "pattern", None) or "all")]
    if ctx.json:
        ctx.emit(names)
        return 0
    ctx.say(f"  hosts ({len(names)}):" + "".join(f"\n    {n}" for n in names))
    return 0
