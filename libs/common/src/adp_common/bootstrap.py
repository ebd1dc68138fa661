"""Ids of the bootstrap admin key (ADP_BOOTSTRAP_API_KEY): stable, so every gateway copy ensures the same
rows, and known to the command line that rotates the key."""

from __future__ import annotations

import hashlib

BOOTSTRAP_USER_ID = "usr_bootstrap_admin"


def bootstrap_key_id(key: str) -> str:
    return "key_boot_" + hashlib.sha256(key.encode()).hexdigest()[:16]
