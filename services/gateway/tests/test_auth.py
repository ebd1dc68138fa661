"""API keys: generation, hashing, bearer parsing, the key cache (expiry, negatives, revocation, LRU)."""

from __future__ import annotations

from adp_gateway.auth import Principal, TTLCache, bearer_token, bootstrap_ids, hash_key, new_api_key


def test_keys_and_bearer() -> None:
    k1, k2 = new_api_key(), new_api_key()
    assert k1 != k2 and k1.startswith("adp_") and len(k1) > 40
    assert hash_key(k1) != k1 and len(hash_key(k1)) == 64
    assert bootstrap_ids("x") == bootstrap_ids("x") and bootstrap_ids("x")[1] != bootstrap_ids("y")[1]
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer") is None
    assert bearer_token(None) is None


def test_ttl_cache_expiry_negative_entries_and_revocation() -> None:
    c = TTLCache(5)
    p = Principal("u1", "user", "k1")
    c.put("h1", p, now=100)
    c.put("h2", None, now=100)
    assert c.get("h1", now=104) == (True, p)
    assert c.get("h2", now=104) == (True, None)
    assert c.get("h1", now=105.1) == (False, None)
    c.put("h1", p, now=200)
    c.drop_key_id("k1")
    assert c.get("h1", now=200) == (False, None)
    assert TTLCache(0).get("x") == (False, None)


def test_key_cache_evicts_the_least_recently_used() -> None:
    cache = TTLCache(60, max_entries=3)
    used = Principal(user_id="u", role="user", key_id="k")
    cache.put("in-use", used, now=0)
    for i in range(10):  # a flood of unknown keys
        cache.put(f"unknown-{i}", None, now=1)
        assert cache.get("in-use", now=1) == (True, used)
    assert cache.get("unknown-0", now=1) == (False, None)
