"""API keys: the file ``<data_dir>/keys.json``, changed only under ``keys.json.lock``.

Format (JSON, ``0600``)::

    {"version": 1, "keys": [{"name": "ingest-gw", "sha256": "<64 hex digits>",
      "scopes": ["ingest"], "users": null, "created": "2026-01-15T10:00:00Z"}, ...]}

``sha256`` is the hash of the secret; the secret itself (``hr_`` + 43 URL-safe characters,
256 random bits) is shown once, when the key is created, and stored nowhere. ``users``
limits the ``read`` scope to those user ids (``null``: every user). A revoked key is
removed from the file. The file is replaced atomically (temp file, fsync, rename, fsync
the directory), so a reader needs no lock: it sees the old list or the new one.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from filelock import Timeout

from service.auth.principal import SCOPES, Principal
from service.storage.files import private_dir, private_lock, replace_atomically, write_private

KEYS_FILE = "keys.json"
SECRET_PREFIX = "hr_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
USER_ID_MAX = 128  # service.validation's limit (not imported: it pulls in the web stack)


class KeysError(Exception):
    """The keys file cannot be read, or a key cannot be created or revoked as asked."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    principal: Principal
    digest: bytes  # SHA-256 of the secret
    created: str


def digest(secret: str | bytes) -> bytes:
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).digest()


def keys_path(data_dir: Path) -> Path:
    return data_dir / KEYS_FILE


def load(path: Path) -> tuple[StoredKey, ...]:
    """The keys in ``path``; none when it does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ()
    return parse(data, path)


def parse(data: bytes, path: Path) -> tuple[StoredKey, ...]:
    try:
        document = json.loads(data)
        return tuple(_stored(entry) for entry in document["keys"])
    except (ValueError, KeyError, TypeError) as exc:
        raise KeysError(f"{path} is not a keys file ({exc!r})") from exc


def _stored(entry: dict[str, object]) -> StoredKey:
    name, scopes, users = entry["name"], entry["scopes"], entry["users"]
    if not isinstance(name, str) or not isinstance(scopes, list) or not set(scopes) <= set(SCOPES):
        raise ValueError(f"bad key entry {entry.get('name')!r}")
    if users is not None and not isinstance(users, list):
        raise ValueError(f"bad users of key {name!r}")
    principal = Principal(name, frozenset(scopes), None if users is None else frozenset(users))
    return StoredKey(principal, bytes.fromhex(str(entry["sha256"])), str(entry["created"]))


def _dump(keys: Iterable[StoredKey]) -> bytes:
    entries = [
        {
            "name": k.principal.name,
            "sha256": k.digest.hex(),
            "scopes": sorted(k.principal.scopes),
            "users": None if k.principal.users is None else sorted(k.principal.users),
            "created": k.created,
        }
        for k in keys
    ]
    return json.dumps({"version": 1, "keys": entries}, indent=1).encode() + b"\n"


def create(
    data_dir: Path, name: str, scopes: Iterable[str], users: Iterable[str], timeout_s: float
) -> str:
    """Add a key; returns its secret (the only time it exists outside the caller)."""
    scope_set, user_set = frozenset(scopes), frozenset(users)
    _check_new(name, scope_set, user_set)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    key = StoredKey(Principal(name, scope_set, user_set or None), digest(secret), created)

    def add(keys: tuple[StoredKey, ...]) -> tuple[StoredKey, ...]:
        if any(k.principal.name == name for k in keys):
            raise KeysError(f"a key named {name!r} exists; revoke it first or pick another name")
        return (*keys, key)

    _change(data_dir, timeout_s, add)
    return secret


def _check_new(name: str, scopes: frozenset[str], users: frozenset[str]) -> None:
    if not NAME.fullmatch(name):
        raise KeysError(f"key name {name!r}: 1 to 64 letters, digits, . _ - (alphanumeric first)")
    if not scopes or not scopes <= set(SCOPES):
        raise KeysError(f"scopes {sorted(scopes)}: each must be one of {', '.join(SCOPES)}")
    if users and scopes != {"read"}:
        raise KeysError("--user limits the read scope: give it only with --scope read alone")
    for user in users:
        if not 1 <= len(user) <= USER_ID_MAX or not user.isprintable():
            raise KeysError(f"user id {user!r}: 1 to {USER_ID_MAX} printable characters")


def revoke(data_dir: Path, name: str, timeout_s: float) -> None:
    def remove(keys: tuple[StoredKey, ...]) -> tuple[StoredKey, ...]:
        kept = tuple(k for k in keys if k.principal.name != name)
        if len(kept) == len(keys):
            raise KeysError(f"no key named {name!r}")
        return kept

    _change(data_dir, timeout_s, remove)


def _change(
    data_dir: Path, timeout_s: float, edit: Callable[[tuple[StoredKey, ...]], tuple[StoredKey, ...]]
) -> None:
    """Read, edit and replace the keys file under its lock (a fresh lock per call)."""
    private_dir(data_dir)
    path = keys_path(data_dir)
    try:
        with private_lock(path.with_name(path.name + ".lock")).acquire(timeout=timeout_s):
            changed = edit(load(path))
            tmp = path.with_name(path.name + ".tmp")
            write_private(tmp, _dump(changed))
            replace_atomically(tmp, path)
    except Timeout as exc:
        raise KeysError(f"{path}.lock not acquired in {timeout_s:g}s") from exc
