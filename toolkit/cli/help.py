"""golden help [VERB]: a verb's options with worked examples, as operators expect of an Ansible-like tool."""

from __future__ import annotations

import argparse

from toolkit.cli.output import Context
from toolkit.core.errors import InputError

# The commands an operator types first, per verb. Kept beside the verbs' own help so one place
# answers "how do I ...".
EXAMPLES: dict[str, tuple[str, ...]] = {
    "validate": ("golden validate", "golden --project ~/site validate"),
    "bake": ("golden bake base", "golden bake web --refresh    # nightly patching: new package snapshot",
             "golden --json bake base       # machine-readable, for scripts"),
    "images": ("golden images", "golden images --history base --channel prod"),
    "gc": ("golden gc --keep 3 --dry-run", "golden gc --keep 3 -i inventory/"),
    "diff": ("golden diff base@prod base@dev", "golden --json diff base@prod 20261201-0a1b2c3d"),
    "publish": ("golden publish base latest-bake --channel dev",),
    "promote": ("golden promote base --from dev --to staging",),
    "rollback": ("golden rollback base --channel prod",),
    "serve": ("golden serve --listen 0.0.0.0:9090 -i inventory.yml --fleet-token-file /etc/golden/fleet-token",
              "golden serve -i inventory/ --limit 'rack1:rack2' --token-ttl 2h"),
    "pxe": ("golden pxe render --out /etc/golden-pxe --server-url http://10.0.0.1 --interface eth1",),
    "fleet": ("golden fleet", "golden fleet rack12 --state pending", "golden fleet --unknown",
              "golden fleet all -l 'rack1:&web' --stale"),
    "drift": ("golden drift", "golden drift rack12 --logins", "golden --json drift web01"),
    "hw": ("golden hw rack12", "golden hw node7 --history",
           "golden hw node7 --accept --reason 'DIMM swapped, INC-4711'",
           "golden --json hw"),
    "break-glass": ("golden break-glass web01 --reason 'INC-4711 disk full' --ttl 30m --pubkey ~/.ssh/id_ed25519.pub",
                    "golden break-glass --list", "golden break-glass --list web01"),
    "report": ("golden report --out fleet.html", "golden report --out /srv/www/fleet.html -i inventory/"),
    "inventory": ("golden inventory", "golden inventory 'rack1:&web' --limit 'rack1[0:9]' -i inventory/",
                  "golden --json inventory all -i hosts.ini -i netbox.yml --vault-id prod@vault-client.sh"),
    "power": ("golden power rack12 status", "golden power 'rack12:&web*' cycle --limit @retry-hosts.txt",
              "golden power all status --list-hosts"),
    "bootdev": ("golden bootdev rack12 pxe", "golden bootdev web01 disk --persistent"),
    "console": ("golden console web01", "golden console web01 --follow --seconds 5m",
                "golden console web01 --log /var/log/web01.console --reason 'INC-4711 watching a hang'"),
    "lab": ("golden lab up --nodes 2", "golden lab status", "golden lab console lab-n01", "golden lab down"),
    "reimage": ("golden reimage rack12 --image web@prod --canary 1 --wave-size 20% --dry-run",
                "golden reimage rack12 --image web@prod --canary 1 --wave-size 20% --max-failures 2% --yes",
                "golden reimage all -l rack3 --state tainted --boot-timeout 20m --yes",
                "golden reimage --resume 20261126-224501-3fa2c1"),
    "retire": ("golden retire rack7-n12 --reason 'RMA: returned to vendor' --dry-run",
               "golden retire rack7-n12 rack7-n13 --reason 'decommission rack 7' --image cleaner@prod --yes",
               "golden retire --clear rack7-n12 --reason 'disk replaced and erased by hand, ticket 4411'"),
    "nightly": ("golden nightly", "golden nightly --images base,web --promote-to staging --lab-nodes 2",
                "golden nightly --last", "golden nightly --install-timer --at 02:00"),
    "runs": ("golden runs", "golden runs --kind nightly", "golden runs show 20261126-224501-3fa2c1"),
    "role": ("golden role new ntp", "golden role lint", "golden role test ntp --keep"),
    "state": ("golden state migrate --to postgresql://golden@db1/golden",),
    "keys": ("golden keys init", "golden keys list", "golden keys rotate", "golden keys sign-builds base"),
    "help": ("golden help", "golden help reimage"),
}


def epilog(verb: str) -> str | None:
    """The examples block every verb's --help ends with."""
    examples = EXAMPLES.get(verb)
    return "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None


def register(sub: argparse._SubParsersAction) -> None:
    """Add `golden help VERB`."""
    p = sub.add_parser("help", help="a verb's options with examples (golden help reimage)")
    p.add_argument("verb", nargs="?", help="the verb to explain; without one, every verb with its examples")
    p.set_defaults(func=cmd_help)


def _verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cmd_help(args: argparse.Namespace, ctx: Context) -> int:
    """Print a verb's options with examples."""
    from toolkit.cli import build_parser  # here: the parser is built by the package that imports this module

    verbs = _verbs(build_parser())
    if args.verb is None:
        for name, examples in EXAMPLES.items():
            ctx.say(f"{name}:\n" + "\n".join(f"  {e}" for e in examples))
        return 0
    if args.verb not in verbs:
        raise InputError(f"no verb {args.verb!r}", hint=f"verbs: {', '.join(sorted(verbs))}")
    ctx.say(verbs[args.verb].format_help().rstrip())  # its epilog holds the examples
    return 0
