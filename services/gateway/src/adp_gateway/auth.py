"""API keys and principals: pure logic (key generation, hashing, header parsing, a TTL cache)."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from adp_common.bootstrap import BOOTSTRAP_USER_ID, bootstrap_key_id

Role = Literal["user", "admin"]
KEY_PREFIX = "adp_"
ANONYMOUS_USER_ID = "anonymous"


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: Role
    key_id: str | None = None
    name: str = ""
    expires_at: float | None = None  # the key's expiry (epoch seconds), checked on every use

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now if now is not None else time.time()) >= self.expires_at


def new_api_key() -> str:
    """A high-entropy key (256 bits) that is shown once; only its hash is stored."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_user_id() -> str:
    return "usr_" + uuid.uuid4().hex[:20]


def new_key_id() -> str:
    return "key_" + uuid.uuid4().hex[:20]


def bootstrap_ids(key: str) -> tuple[str, str]:
    """Stable (user id, key id) for the bootstrap key, so every copy ensures the same rows."""
    return BOOTSTRAP_USER_ID, bootstrap_key_id(key)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (None when absent or malformed)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return token


class TTLCache:
    """A bounded cache of key-hash -> principal (or None for unknown keys) with expiry; when full, the least
    recently used entry goes (a flood of unknown keys cannot empty it of the keys in use)."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()

    def get(self, key: str, now: float | None = None) -> tuple[bool, Principal | None]:
        if self.ttl_s <= 0:
            return False, None
        entry = self._data.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if (now if now is not None else time.monotonic()) >= expires:
            self._data.pop(key, None)
            return False, None
        self._data.move_to_end(key)
        return True, value

    def put(self, key: str, value: Principal | None, now: float | None = None) -> None:
        if self.ttl_s <= 0:
            return
        self._data.pop(key, None)
        while len(self._data) >= self.max_entries:
            self._data.popitem(last=False)
        self._data[key] = ((now if now is not None else time.monotonic()) + self.ttl_s, value)

    def drop_key_id(self, key_id: str) -> None:
        for h, (_, p) in list(self._data.items()):
            if p is not None and p.key_id == key_id:
                self._data.pop(h, None)

    def drop_user_id(self, user_id: str) -> None:
        """Forget the user's keys, and every key remembered as unknown (an enabled user's keys may be
        among them: a disabled user's keys look unknown to the database)."""
        for h, (_, p) in list(self._data.items()):
            if p is None or p.user_id == user_id:
                self._data.pop(h, None)
