"""Run a function over jobs ahead of the consumer, on background threads, in order.

Reading and decoding windows release the GIL (file IO, codecs, numpy), so a few
threads keep the model fed. The queue is bounded: at most ``depth`` finished or
running results exist at once, so memory stays flat however long the job list.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = ["Prefetcher"]

J = TypeVar("J")
R = TypeVar("R")

_END = object()


class Prefetcher(Generic[J, R]):
    """Iterate ``fn(job)`` for ``jobs``, computed ahead on ``workers`` threads.

    Parameters
    ----------
    jobs : iterable
        Inputs, consumed lazily by a feeder thread.
    fn : callable
        Work per job (e.g. read and decode a batch of windows).
    depth : int
        Results computed ahead of the consumer (queue bound).
    workers : int
        Threads running ``fn``.
    head_start : bool
        Run the first job alone: the others start once the consumer asks for the second
        result. On a machine with few cores the first result (and what the consumer does
        with it, e.g. a forward pass) then does not share the cores with reading ahead:
        a viewport's first tile shows sooner, at the cost of one job not read ahead.

    Notes
    -----
    Exceptions raised by ``fn`` re-raise in the consumer at that job's turn. Always
    :meth:`close` (or use as a context manager) to stop the threads early.
    """

    def __init__(
        self,
        jobs: Iterable[J],
        fn: Callable[[J], R],
        *,
        depth: int = 2,
        workers: int = 1,
        head_start: bool = False,
    ) -> None:
        self._queue: queue.Queue[Future[R] | object] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._go = threading.Event()  # the consumer wants the second result
        if not head_start:
            self._go.set()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="sgnet-read"
        )
        self._feeder = threading.Thread(
            target=self._feed, args=(iter(jobs), fn), name="sgnet-prefetch", daemon=True
        )
        self._feeder.start()

    def _put(self, item: Future[R] | object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _feed(self, jobs: Iterator[J], fn: Callable[[J], R]) -> None:
        try:
            for n, job in enumerate(jobs):
                if n == 1:
                    while not self._go.wait(0.05):
                        if self._stop.is_set():
                            return
                if self._stop.is_set() or not self._put(self._pool.submit(fn, job)):
                    return
        except BaseException as exc:  # an error while iterating the jobs themselves
            failed: Future[R] = Future()
            failed.set_exception(exc)
            self._put(failed)
        self._put(_END)

    def __iter__(self) -> Iterator[R]:
        first = True
        while True:
            if not first:
                self._go.set()
            first = False
            item = self._queue.get()
            if item is _END:
                return
            assert isinstance(item, Future)
            yield item.result()

    def close(self) -> None:
        """Stop reading ahead and join the threads (pending results are dropped)."""
        self._stop.set()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Future):
                item.cancel()
        self._feeder.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher[J, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
