"""A worker's view of the keys file, reloaded when the file changes.

Each request asks ``current()``; at most every ``CHECK_INTERVAL_S`` that costs a ``stat``
of the file (~2 us), and a changed file (inode, size, mtime or ctime: every save is a
rename of a new file) is read again (~30 us for a few keys). So a key created or revoked
by ``ops/maint keys`` is seen by every worker within ``CHECK_INTERVAL_S`` of its next
request, without a restart and without a task per worker.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path

from service.auth.keys import KeysError, StoredKey, load
from service.auth.principal import Principal

CHECK_INTERVAL_S = 0.5  # the spec allows 1 s for a revocation to reach every worker

log = logging.getLogger("service.auth")

_Signature = tuple[int, int, int, int] | None
SEEN_MAX = 1024  # verified secrets remembered per worker


class KeyRing:
    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._next_check = float("-inf")
        self._signature: _Signature = None
        self._keys: tuple[StoredKey, ...] = ()
        self._by_digest: dict[bytes, StoredKey] = {}
        self._seen: dict[bytes, Principal] = {}  # secrets already verified, until a reload
        self._failing = False

    def current(self) -> tuple[StoredKey, ...]:
        """The keys as of at most ``CHECK_INTERVAL_S`` ago."""
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + CHECK_INTERVAL_S
            self._refresh()
        return self._keys

    def find(self, secret: bytes) -> Principal | None:
        """The principal whose key is ``secret``. Keys are found by the secret's SHA-256,
        so how long a lookup takes depends on that hash, which tells an attacker nothing
        about any stored secret (no prefix to grow byte by byte); the match is confirmed
        with a constant-time comparison. (Comparing every stored hash in turn cost ~1 us
        more per request for a handful of keys.)"""
        self.current()
        # a secret verified since the last reload skips the hash (~4k instructions): a dict
        # keyed by the secret, whose hashing is seeded per process, so its timing tells
        # nothing about stored secrets either
        seen = self._seen.get(secret)
        if seen is not None:
            return seen
        wanted = sha256(secret).digest()
        key = self._by_digest.get(wanted)
        if key is None or not hmac.compare_digest(key.digest, wanted):
            return None
        if len(self._seen) < SEEN_MAX:
            self._seen[secret] = key.principal
        return key.principal

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            signature: _Signature = None
        else:
            signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if signature == self._signature:
            return
        try:
            keys = load(self.path)
        except (OSError, KeysError) as exc:
            # fail closed: a revoked key must not come back with an unreadable file; the
            # signature is kept, so the next check reads it again
            if not self._failing:
                log.error("keys file unreadable, every key refused until it is fixed: %s", exc)
            self._keys, self._by_digest, self._failing = (), {}, True
            self._seen = {}
            return
        self._signature, self._keys, self._failing = signature, keys, False
        self._by_digest = {key.digest: key for key in keys}
        self._seen = {}  # a revoked key must be looked up again
