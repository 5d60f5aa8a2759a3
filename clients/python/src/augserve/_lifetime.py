"""Closes what is still open when the interpreter exits, so that no augserve object keeps a
process alive.

Why: an iterator kept to the end of a script (`it = iter(ds); next(it)`) is finalised during
interpreter shutdown, after daemon threads stop running. Closing its gRPC channel then waits for
a lock that grpcio's own (frozen) polling thread holds, and the process hangs. `atexit`
callbacks run before that, while every thread still runs: closing here cancels each server
stream, ends each prefetch thread and closes each channel cleanly.
"""

from __future__ import annotations

import atexit
import weakref

# Closed in this order: prefetchers (which cancel their streams), streams, then clients.
_open: tuple[weakref.WeakSet, ...] = (weakref.WeakSet(), weakref.WeakSet(), weakref.WeakSet())
PREFETCHER, STREAM, CLIENT = range(3)


def track(kind: int, obj) -> None:
    """Closes `obj` (its `close()`) at exit if it is still alive then."""
    _open[kind].add(obj)


@atexit.register
def _close_all() -> None:
    for objects in _open:
        for obj in list(objects):
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - exiting: nothing else to tell
                pass
