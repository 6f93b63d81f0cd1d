"""golden inventory: the hosts an Ansible pattern selects, with rack, MAC, BMC, image and UEFI."""

from __future__ import annotations

import argparse

from toolkit.cli.hostopts import add_host_options, selection
from toolkit.cli.output import Context
from toolkit.inventory.view import list_inventory


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden inventory` and its options."""
    p = sub.add_parser("inventory", help="hosts as Ansible resolves them, with golden's fields (never passwords)")
    p.add_argument("pattern", nargs="?", default="all", help="Ansible host pattern (default: all)")
    add_host_options(p)
    p.set_defaults(func=cmd_inventory)


def cmd_inventory(args: argparse.Namespace, ctx: Context) -> int:
    """Show the hosts as Ansible resolves them, with golden's fields and never a password."""
    hosts = list_inventory(ctx.settings(), selection(args), args.pattern)
    if ctx.json:
        ctx.emit_rows([h.as_dict() for h in hosts])
        return 0
    ctx.table(["HOST", "RACK", "MAC", "BMC", "PROTOCOL", "USER", "IMAGE", "UEFI", "INSTALL"], [
        (h.name, h.rack or "-", h.mac or "-", f"{h.bmc_address}:{h.bmc_port}" if h.bmc_address else "-",
         h.bmc_protocol or "-", h.bmc_user or "-", h.image or "-", "yes" if h.uefi else "no", h.install)
        for h in hosts])
    return 0
