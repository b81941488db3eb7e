"""``ops/maint keys create|list|revoke``: API keys for a (live or stopped) data directory.

Every running worker sees a change within a second (``ring.CHECK_INTERVAL_S``). ``create``
prints the secret once, alone on the last line, so a script can take it with ``tail -n 1``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from service.auth import keys
from service.auth.principal import SCOPES
from service.auth.ring import CHECK_INTERVAL_S


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    k = sub.add_parser("keys", help="create, list or revoke API keys")
    actions = k.add_subparsers(dest="keys_command", required=True)
    c = actions.add_parser("create", help="a new key; its secret is printed once")
    c.add_argument("name", help="letters, digits, . _ - (the access log names the key by it)")
    c.add_argument(
        "--scope", action="append", required=True, choices=SCOPES, help="repeat for several"
    )
    c.add_argument(
        "--user", action="append", default=[], help="read only this user (repeat for several)"
    )
    actions.add_parser("list", help="names, scopes, users and creation times")
    r = actions.add_parser("revoke", help="remove a key; refused by every worker within 1 s")
    r.add_argument("name")


def run(data_dir: Path, lock_timeout_s: float, args: argparse.Namespace) -> int:
    if args.keys_command == "create":
        secret = keys.create(data_dir, args.name, args.scope, args.user, lock_timeout_s)
        print(f"created key {args.name!r} in {keys.keys_path(data_dir)}")
        print("the secret below is shown only now; send it as 'Authorization: Bearer <secret>'")
        print(secret)
    elif args.keys_command == "revoke":
        keys.revoke(data_dir, args.name, lock_timeout_s)
        within = 2 * CHECK_INTERVAL_S
        print(f"revoked key {args.name!r}; every worker refuses it within {within:g}s")
    else:
        found = keys.load(keys.keys_path(data_dir))
        for key in found:
            p = key.principal
            users = "read: all users" if p.users is None else "read: " + ",".join(sorted(p.users))
            users = users if "read" in p.scopes else "-"
            print(f"{p.name}\t{','.join(sorted(p.scopes))}\t{users}\tcreated {key.created}")
        if not found:
            print(f"no keys in {keys.keys_path(data_dir)}")
    return 0
