"""The start-up check of gunicorn's binds, run in the master (no Polars, no web framework).

Only the master knows where the server listens (``--bind`` overrides the settings file),
so it decides whether that is loopback only, tells the workers through ``HR_LISTEN``, and
refuses to start a server reachable from other machines with access control on and no key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from service.auth.keys import KeysError, keys_path, load
from service.config import Listen, Settings


def listen_scope(addresses: Iterable[object]) -> Listen:
    """``loopback`` when every address is a loopback one or a unix socket (a path)."""
    for address in addresses:
        if isinstance(address, str | bytes):
            continue  # a unix socket: only this machine reaches it
        host = str(address[0]) if isinstance(address, tuple) else ""  # fd://: unknown
        if host != "localhost" and not _loopback_ip(host):
            return "network"
    return "loopback"


def _loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def refusal(settings: Settings, addresses: list[object]) -> str | None:
    """Why a server at ``addresses`` must not start, or None."""
    if settings.auth == "off" or listen_scope(addresses) == "loopback":
        return None
    path = keys_path(settings.data_dir)
    try:
        if load(path):
            return None
        why = f"no API key exists ({path} holds none)"
    except (OSError, KeysError) as exc:
        why = f"the keys file cannot be read ({exc})"
    where = ", ".join(_text(a) for a in addresses)
    return (
        f"access control is on (HR_AUTH={settings.auth}) and the server would listen beyond "
        f"loopback ({where}), but {why}. Create a key first: "
        f"ops/maint --data-dir {settings.data_dir} keys create NAME --scope admin "
        "(or --scope ingest / --scope read [--user ID ...]); or listen on 127.0.0.1 only, "
        "or set HR_AUTH=off to serve without keys."
    )


def _text(address: object) -> str:
    if isinstance(address, tuple):
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)
