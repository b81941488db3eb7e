"""Who a request comes from: a key's name and what it may do. Routes ask it; they never
read the ``Authorization`` header themselves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SCOPES = ("ingest", "read", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]
    users: frozenset[str] | None = None  # the ``read`` scope covers only these; None: all

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def may_ingest(self) -> bool:
        return self.admin or "ingest" in self.scopes

    def may_read(self, user_id: str) -> bool:
        if self.admin:
            return True
        return "read" in self.scopes and (self.users is None or user_id in self.users)

    def may_read_all(self) -> bool:
        return self.admin or ("read" in self.scopes and self.users is None)


# what every request may do while access control is off
ANYONE = Principal("", frozenset(SCOPES))


def principal_of(state: Mapping[str, object]) -> Principal:
    """The request's principal from its ASGI ``scope["state"]``; ``ANYONE`` when access
    control is off (the layer is not installed, so nothing was checked)."""
    found = state.get("principal")
    return found if isinstance(found, Principal) else ANYONE
