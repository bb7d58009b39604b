"""Who an API key belongs to, and the keys this process verified recently."""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel
from sqlalchemy import select

from models.tables import ApiKey, Database, hash_api_key


class Principal(BaseModel):
    """Who is calling: the key's organization and user."""

    organization_id: str
    user_id: str | None
    api_key_id: str


def lookup_key(database: Database, key: str) -> Principal | None:
    with database.session() as session:
        record = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key))).first()
        if record is None or record.revoked_at is not None:
            return None
        return Principal(organization_id=record.organization_id, user_id=record.user_id, api_key_id=record.id)


class VerifiedKeys:
    """Keys this process verified recently, by hash, so a request spends no database trip on its key.

    Only good keys are kept, for `ttl` seconds: a revoked key stops working within that time, and an
    unknown key is looked up every time (a key issued a moment ago works at once)."""

    def __init__(self, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._verified: dict[str, tuple[Principal, float]] = {}

    def get(self, key: str) -> Principal | None:
        hit = self._verified.get(hash_api_key(key))
        if hit is None or hit[1] <= self.clock():
            return None
        return hit[0]

    def put(self, key: str, principal: Principal) -> None:
        if len(self._verified) >= 10_000:  # many keys: start over rather than grow without bound
            self._verified.clear()
        self._verified[hash_api_key(key)] = (principal, self.clock() + self.ttl)
