"""The API's memory of verified keys: a verified key is served without a database trip for `ttl`
seconds, then looked up again (so a revocation takes effect); the memory stays bounded."""

from __future__ import annotations

from api.keys import Principal, VerifiedKeys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def principal(n: int = 0) -> Principal:
    return Principal(organization_id=f"org_{n}", user_id=None, api_key_id=f"key_{n}")


def test_a_verified_key_is_remembered_for_the_ttl_only() -> None:
    clock = Clock()
    keys = VerifiedKeys(ttl=30, clock=clock)
    assert keys.get("odk_a") is None
    keys.put("odk_a", principal())
    clock.now += 29.9
    assert keys.get("odk_a") == principal()
    assert keys.get("odk_b") is None
    clock.now += 0.1
    assert keys.get("odk_a") is None  # looked up again from here on


def test_the_memory_is_bounded() -> None:
    keys = VerifiedKeys(ttl=30, clock=Clock())
    for n in range(10_001):
        keys.put(f"odk_{n}", principal(n))
    assert len(keys._verified) <= 10_000
    assert keys.get("odk_10000") == principal(10_000)
