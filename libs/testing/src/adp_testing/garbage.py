"""Find reference cycles that a piece of work leaves behind.

A service under load runs full cyclic-GC collections rarely (adp_common.service.freeze_startup_heap), so
an object freed only by the cyclic GC — anything in a reference cycle once it has lived through a young
collection, as a streaming call's state does — stays in memory until one comes. Per-call cycles made
memory grow with every call. Work checked with `cyclic_garbage` must be freed by reference counting alone.
"""

from __future__ import annotations

import contextlib
import gc
from collections import Counter
from collections.abc import Iterator


def type_name(obj: object) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[Counter[str]]:
    """Count, by type, the objects made inside the block that became cyclic garbage: the GC is off while the
    block runs, then one collection keeps what it finds (DEBUG_SAVEALL) to be counted. Every object that
    existed before the block is held meanwhile, so nothing older — an earlier test's closed connection
    whose last reference goes while the block runs — is counted. Run the code under test once before the
    block (first-call caches, connections), so only the block's work is counted."""
    found: Counter[str] = Counter()
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    existing = gc.get_objects()
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found.update(type_name(o) for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        del existing
        if was_enabled:
            gc.enable()
