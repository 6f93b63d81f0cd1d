"""golden keys init | list | rotate | sign-builds: the fleet's signing keys (toolkit.trust)."""

from __future__ import annotations

import argparse

from toolkit.cli.output import Context
from toolkit.core.errors import InputError
from toolkit.store import open_store
from toolkit.store.artifacts import Store
from toolkit.trust.keys import Keyring, init_keys, list_keys, rotate_signing_key


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="make, list and rotate the keys that sign builds")
    p.add_argument("action", choices=["init", "list", "rotate", "sign-builds"],
                   help="init: make the keys the home lacks; list: trusted keys; rotate: a new signing key, "
                        "the old one stays trusted; sign-builds: sign builds baked before the home had keys")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="sign-builds: only these images (default: all)")
    p.set_defaults(func=cmd_keys)


def _init(ctx: Context, store: Store, keyring: Keyring) -> int:
    done = init_keys(keyring)
    unsigned = [f"{b.image}/{b.build_id}" for b in store.unsigned()]
    if ctx.json:
        ctx.emit({"folder": str(keyring.folder), "kinds": done, "unsigned_builds": unsigned})
        return 0
    for r in done:
        ctx.say(f"{r.kind}: created {', '.join(r.ids)}" if r.created else f"{r.kind}: already there, left alone")
    ctx.say(f"keys in {keyring.folder}; every bake now signs its manifest")
    if unsigned:
        ctx.say(f"{len(unsigned)} stored build(s) are unsigned; publish, promote and golden serve now refuse them "
                "until you run: golden keys sign-builds")
    return 0


def _list(ctx: Context, keyring: Keyring) -> int:
    keys = list_keys(keyring)
    if ctx.json:
        ctx.emit_rows([vars(k) for k in keys])
        return 0
    if not keys:
        ctx.say("no keys: this home signs nothing and checks nothing (golden keys init makes its signing key)")
        return 0
    ctx.table(["key id", "signs", "created", "public key"],
              [[k.key_id, "yes" if k.signs else "-", k.created or "-", k.path] for k in keys])
    return 0


def cmd_keys(args: argparse.Namespace, ctx: Context) -> int:
    if args.images and args.action != "sign-builds":
        raise InputError(f"golden keys {args.action} takes no image names (only sign-builds does)")
    store = open_store(ctx.settings())
    keyring = store.keyring
    assert keyring is not None
    if args.action == "init":
        return _init(ctx, store, keyring)
    if args.action == "list":
        return _list(ctx, keyring)
    if args.action == "rotate":
        old, new = rotate_signing_key(keyring)
        ctx.emit({"old": old, "new": new}) if ctx.json else ctx.say(
            f"signing key rotated: {old} -> {new}; {old} stays trusted, so builds it signed keep verifying")
        return 0
    done = store.sign_builds(args.images)
    if ctx.json:
        ctx.emit_rows([vars(d) for d in done])
    else:
        ctx.table(["image", "build", "key id", "signed"],
                  [[d.image, d.build_id, d.key_id, "now" if d.signed_now else "already"] for d in done])
    return 0
