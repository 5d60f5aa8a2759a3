"""Receive ahead in a background thread, so that receiving and unpacking the next batch overlaps
the training step (grpcio releases the GIL while it waits on the network)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from augserve import _lifetime

T = TypeVar("T")
_DONE = object()


class Prefetcher(Iterator[Any]):
    """Iterates `source` in a thread, `depth` items ahead, applying `transform` there.
    Exceptions from the thread are raised in the consumer. `close()` stops the thread and closes
    the source (cancelling a gRPC stream)."""

    def __init__(
        self,
        source: Iterable[T],
        depth: int = 2,
        transform: Callable[[T], Any] | None = None,
    ):
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._transform = transform
        # A daemon thread, closed at exit (_lifetime): it never keeps the process alive.
        self._thread = threading.Thread(target=self._run, name="augserve-prefetch", daemon=True)
        self._thread.start()
        _lifetime.track(_lifetime.PREFETCHER, self)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if self._transform is not None:
                    item = self._transform(item)
                if not self._put((True, item)):
                    return
            self._put((True, _DONE))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put((False, e))

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        ok, item = self._queue.get()
        if not ok:
            self.close()
            raise item
        if item is _DONE:
            self.close()
            raise StopIteration
        return item

    def close(self) -> None:
        """Stops the thread and closes the source; waits briefly for the thread to end."""
        self._stop.set()
        close = getattr(self._source, "close", None)
        if close is not None:
            close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def prefetch(source: Iterable[T], depth: int = 2, transform: Callable[[T], Any] | None = None):
    """`Prefetcher(source, depth, transform)`."""
    return Prefetcher(source, depth, transform)
