"""golden lab: a virtual rack of QEMU machines behind virtual IPMI BMCs on loopback."""

from __future__ import annotations

import argparse

from toolkit.cli.argtypes import finite_float, int_range, rate01
from toolkit.cli.output import Context
from toolkit.core.progress import Progress
from toolkit.lab.machines import LabStatus, console_text, down_lab, status_lab, up_lab
from toolkit.lab.network import LabNetwork
from toolkit.lab.vbmc import SimOptions


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden lab up|status|console|down` and their options."""
    p = sub.add_parser("lab", help="virtual lab rack: up, status, console, down")
    lsub = p.add_subparsers(dest="lab_command", metavar="ACTION")
    lsub.required = True
    up = lsub.add_parser("up", help="start N machines behind virtual BMCs (harmless when already up)")
    up.add_argument("--nodes", type=int_range(1, 10_000), default=2, help="number of machines (default 2)")
    up.add_argument("--no-vm", action="store_true", help="simulated machines (power state only), for scale tests")
    up.add_argument("--boot-url", help="boot server URL as seen from the VMs "
                                       "(default: lab.boot_url in golden.yaml, else http://10.0.2.2:9090)")
    up.add_argument("--base-port", type=int_range(1024, 65_535),
                    help="first BMC UDP port (default: first free from 16230)")
    up.add_argument("--uefi", action="store_true",
                    help="OVMF machines whose firmware does UEFI PXE itself (no iPXE ROM); inventory uefi: true; "
                         "needs --bridge")
    up.add_argument("--secure-boot", action="store_true",
                    help="with --uefi: OVMF's Secure Boot firmware with golden's keys (golden keys init) enrolled "
                         "per machine; inventory secure_boot: true (the machines chain the build's signed UKI)")
    up.add_argument("--bridge", metavar="BR",
                    help="a tap per machine in bridge BR instead of user-mode networking; they boot from what "
                         "answers DHCP there (e.g. the proxyDHCP of 'golden pxe render')")
    up.add_argument("--netns", metavar="NS", help="the network namespace BR is in (with --bridge)")
    up.add_argument("--redfish", action="store_true",
                    help="Redfish BMCs over HTTPS (certificate from a lab CA the inventory names in bmc_ca_file) "
                         "instead of IPMI")
    up.add_argument("--memory", type=int_range(128, 1_048_576), default=1536, help="MiB per machine (default 1536)")
    up.add_argument("--disks", type=int_range(1, 8), default=1,
                    help="virtio disks per machine, each with a serial (default 1: 8 GiB; more: 1 GiB each)")
    up.add_argument("--latency", type=finite_float(0, 60), default=0.0,
                    help="--no-vm: seconds added to each chassis command")
    up.add_argument("--fail-rate", type=rate01, default=0.0, help="--no-vm: share of power commands that fail")
    up.add_argument("--drop-rate", type=rate01, default=0.0, help="--no-vm: share of BMC replies dropped")
    up.add_argument("--boot-time", type=finite_float(0, 3600), default=0.0,
                    help="--no-vm: seconds a simulated boot takes")
    up.add_argument("--seed", type=int_range(0, 2**63 - 1), default=0, help="--no-vm: seed for drops and failures")
    up.set_defaults(func=cmd_up, interrupted=(
        "lab up interrupted: everything it had started was stopped and its files removed"))
    lsub.add_parser("status", help="show the lab's machines and BMC ports").set_defaults(func=cmd_status)
    con = lsub.add_parser("console", help="print a machine's serial console log")
    con.add_argument("node")
    con.add_argument("--lines", type=int_range(0, 10_000_000), default=200, help="last N lines (0 = all)")
    con.set_defaults(func=cmd_console)
    lsub.add_parser("down", help="stop every machine and BMC; remove the lab's files").set_defaults(func=cmd_down)


def _render(status: LabStatus, ctx: Context, headline: str) -> int:
    if ctx.json:
        ctx.emit(status)
        return 0
    ctx.say(headline)
    if status.nodes:
        ctx.table(("NODE", "RACK", "MAC", "BMC", "POWER", "BOOTDEV", "PID"),
                  [(n.name, n.rack, n.mac, f"127.0.0.1:{n.bmc_port}", n.power, n.bootdev, n.pid or "-")
                   for n in status.nodes])
    if status.inventory:
        ctx.say(f"inventory: {status.inventory} (-i lab)  boot URL: {status.boot_url}  firmware: {status.firmware}"
                f"{' with Secure Boot' if status.secure_boot else ''}  "
                f"network: {status.network}")
    return 0


def cmd_up(args: argparse.Namespace, ctx: Context) -> int:
    """Start the virtual lab rack (harmless when it is already up)."""
    sim = SimOptions(latency=args.latency, fail_rate=args.fail_rate, drop_rate=args.drop_rate,
                     boot_time=args.boot_time, seed=args.seed)
    with Progress("lab up", enabled=ctx.interactive, lines=ctx.log_lines) as progress:
        status = up_lab(ctx.settings(), args.nodes, no_vm=args.no_vm, boot_url=args.boot_url,
                        base_port=args.base_port, memory_mb=args.memory, disks=args.disks, sim=sim,
                        on_step=progress.phase,
                        network=LabNetwork(uefi=args.uefi, netns=args.netns, bridge=args.bridge,
                                           secure_boot=args.secure_boot),
                        redfish=args.redfish)
    head = "lab already up" if status.already_up else f"lab up: {len(status.nodes)} node(s) in {status.seconds:.1f} s"
    return _render(status, ctx, head)


def cmd_status(args: argparse.Namespace, ctx: Context) -> int:
    """Show the lab's machines and their BMC ports."""
    status = status_lab(ctx.settings())
    return _render(status, ctx, "lab is up" if status.up else "lab is down")


def cmd_console(args: argparse.Namespace, ctx: Context) -> int:
    """Print a lab machine's serial console log."""
    text = console_text(ctx.settings(), args.node, args.lines)
    if ctx.json:
        ctx.emit({"node": args.node, "console": text})
    else:
        print(text)
    return 0


def cmd_down(args: argparse.Namespace, ctx: Context) -> int:
    """Stop every lab machine and BMC and remove the lab's files."""
    status = down_lab(ctx.settings())
    if ctx.json:
        ctx.emit({"down": True, "seconds": status.seconds, "nodes": len(status.nodes)})
    else:
        ctx.say(f"lab down: {len(status.nodes)} node(s) stopped, files removed in {status.seconds:.1f} s")
    return 0
