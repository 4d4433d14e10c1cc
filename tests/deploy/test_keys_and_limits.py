"""API keys are stored hashed and revocable; token buckets allow the burst, then refill in time."""

from __future__ import annotations

import pytest

from ragtune.errors import BadInputError
from serving.deploy import keys
from serving.deploy.ratelimit import RateLimiter


def test_keys_are_stored_hashed_and_verify_until_revoked(workspace):
    first = keys.create_key(workspace, "mobile app", 30)
    second = keys.create_key(workspace, "website", 5)
    assert first != second and first.startswith("rtk_")
    secret = keys.parse_key(first)[1]
    raw = workspace.db_path.read_bytes() + b"".join(p.read_bytes() for p in workspace.root.glob("*.sqlite3-wal"))
    assert secret.encode() not in raw and first.encode() not in raw
    with workspace.db() as conn:
        rows = {r["key_id"]: dict(r) for r in conn.execute("SELECT * FROM deploy_keys")}
    assert len({r["salt"] for r in rows.values()}) == 2 and all(len(r["hash"]) == 64 for r in rows.values())

    info = keys.verify_key(workspace, first)
    assert info.name == "mobile app" and info.rate_limit_per_min == 30
    assert keys.verify_key(workspace, first[:-2] + ("AA" if not first.endswith("AA") else "BB")) is None
    assert keys.verify_key(workspace, "sk-not-a-ragtune-key") is None

    keys.revoke_key(workspace, "mobile app")
    assert keys.verify_key(workspace, first) is None
    assert keys.verify_key(workspace, second) is not None
    listed = {k.name: k for k in keys.list_keys(workspace)}
    assert listed["mobile app"].revoked and not listed["website"].revoked
    assert listed["website"].last_used_at is not None
    assert all(secret not in str(k.to_dict()) for k in listed.values())


def test_key_input_is_checked(workspace):
    with pytest.raises(BadInputError, match="name"):
        keys.create_key(workspace, "  ", 10)
    with pytest.raises(BadInputError, match="between 1 and"):
        keys.create_key(workspace, "x", 0)
    with pytest.raises(BadInputError, match="No API key"):
        keys.revoke_key(workspace, "nope")


def test_token_bucket_allows_burst_then_refills():
    now = [1000.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert all(limiter.check("k", 6).allowed for _ in range(6))
    refused = limiter.check("k", 6)
    assert not refused.allowed and 9 < refused.retry_after_s <= 10  # one token every 10 s
    assert limiter.check("other", 6).allowed  # buckets are per key
    now[0] += 10
    assert limiter.check("k", 6).allowed
    assert not limiter.check("k", 6).allowed
    now[0] += 600
    assert sum(limiter.check("k", 6).allowed for _ in range(10)) == 6  # never more than the burst
