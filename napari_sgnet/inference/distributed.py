"""Run a request on dask.distributed: many workers, one store, the same result.

The driver prepares the run exactly like the single-process engine (plan, store
checks, glass, resume), splits the work into blocks of neighbouring tiles and
submits one task per block. A task loads the model once per worker (cached by
model id), predicts its tiles and writes their level-0 labels straight into the
store; blocks are disjoint sets of whole chunks, so workers never write the same
chunk. The driver is the only writer of everything shared: it recomputes the
coarser levels over each finished block and then marks its tiles done. Every tile
is a deterministic function of its position, and the coarser levels of level 0,
so the store equals the single-process one byte for byte: every forward pass has
``batch_size`` tiles whatever the block (:func:`~napari_sgnet.inference.loop.run_tiles`
pads), and every worker runs torch with the driver's thread count (``request.threads``, or
the driver's own default), because a CPU convolution's float result depends on both. On one
machine that oversubscribes the cores (workers x threads); pass ``threads`` to choose.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import zlib
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from napari_sgnet.geometry import Box
from napari_sgnet.inference.lifecycle import Step, execute
from napari_sgnet.inference.loop import run_tiles
from napari_sgnet.inference.models import ModelSpec, get_predictor
from napari_sgnet.inference.plan import TilePlan, WorkItem
from napari_sgnet.inference.predictor_base import Predictor
from napari_sgnet.inference.prepare import PreparedRun, open_slide
from napari_sgnet.inference.request import InferenceRequest, ProgressEvent
from napari_sgnet.inference.sinks import StoreSink, Written, commit_tiles
from napari_sgnet.io.labelstore import DONE_GLASS, LabelStore
from napari_sgnet.io.pyramid import Pyramid

__all__ = ["DistributedExecutor", "make_blocks", "run_distributed"]

log = logging.getLogger(__name__)

_WORKER_SLIDES: dict[tuple[str, float | None], Pyramid] = {}


def make_blocks(work: list[WorkItem], block: int) -> list[list[WorkItem]]:
    """Group work items into ``block x block``-tile blocks, in order of first appearance."""
    blocks: dict[tuple[int, int], list[WorkItem]] = {}
    for item in work:
        (ty, tx), _ = item
        blocks.setdefault((ty // block, tx // block), []).append(item)
    return list(blocks.values())


def _default_workers(device: str) -> int:
    if device != "cpu":
        from napari_sgnet.model.runtime import gpu_count

        if gpu_count():
            return gpu_count()
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _worker_device(device: str) -> str:
    """On a multi-GPU machine, give each worker its own GPU (by worker name)."""
    if device not in ("auto", "cuda"):
        return device
    from napari_sgnet.model.runtime import gpu_count

    count = gpu_count()
    if count <= 1:
        return device
    from distributed import get_worker

    name = get_worker().name
    index = name if isinstance(name, int) else zlib.crc32(str(name).encode())
    return f"cuda:{index % count}"


def _run_block(
    slide: Pyramid | tuple[str, float | None],
    spec: ModelSpec,
    store_path: str,
    plan: TilePlan,
    items: list[WorkItem],
    opts: dict[str, Any],
) -> list[Written]:
    """Worker task: predict a block and write its level 0; returns the written tiles."""
    if not isinstance(slide, Pyramid):
        key = (slide[0], slide[1])
        if key not in _WORKER_SLIDES:
            _WORKER_SLIDES[key] = open_slide(slide[0], mpp=slide[1])
        slide = _WORKER_SLIDES[key]
    if opts.get("torch_threads") and not isinstance(spec.obj, Predictor):
        import torch

        torch.set_num_threads(int(opts["torch_threads"]))
    predictor = get_predictor(spec, _worker_device(opts["device"]), opts["precision"])
    store = LabelStore.open(store_path)
    sink = StoreSink(store, plan, glass_label=opts["glass_label"], tissue=opts.get("tissue"))
    for _ in run_tiles(
        slide,
        plan,
        predictor,
        sink,
        items,
        batch_size=opts["batch_size"],
        prefetch=opts["prefetch"],
        readers=opts["readers"],
        probabilities=store.has_probabilities,
    ):
        pass
    return sink.take_pending()


def _forward_threads(run: PreparedRun) -> int | None:
    """The torch thread count every worker uses: the request's, else the driver's default
    (the single-process engine's), so both compute the same bytes; ``None`` for a plain
    :class:`Predictor` (no torch)."""
    if isinstance(run.spec.obj, Predictor):
        return None
    if run.request.threads is not None:
        return run.request.threads
    import torch

    return int(torch.get_num_threads())


def _connect(
    client: Any, n_workers: int | None, address: str | None, device: str
) -> tuple[Any, int, Callable[[], None], bool]:
    """A client, its worker count, a cleanup callable, and whether we started the cluster."""
    from distributed import Client, LocalCluster

    if client is not None:
        return client, max(1, len(client.scheduler_info()["workers"])), lambda: None, False
    if address:
        client = Client(address)
        return client, max(1, len(client.scheduler_info()["workers"])), client.close, False
    n = n_workers or _default_workers(device)
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)

    def cleanup() -> None:
        client.close()
        cluster.close()

    return client, n, cleanup, True


class DistributedExecutor:
    """Run a prepared request's tiles as one dask task per block; commit as blocks finish.

    Parameters
    ----------
    client, n_workers, scheduler_address, block_tiles
        See :func:`run_distributed`.
    """

    def __init__(
        self,
        client: Any = None,
        n_workers: int | None = None,
        scheduler_address: str | None = None,
        block_tiles: int | None = None,
    ) -> None:
        self.client = client
        self.n_workers = n_workers
        self.scheduler_address = scheduler_address
        self.block_tiles = block_tiles
        self.run: PreparedRun | None = None
        self.futures: list[Any] = []
        self._cleanup: Callable[[], None] | None = None

    def start(self, run: PreparedRun) -> None:
        """Connect (or start a LocalCluster), then submit one task per block."""
        request = run.request
        self.run = run
        client, n, self._cleanup, _owned = _connect(
            self.client, self.n_workers, self.scheduler_address, request.device
        )
        self.client = client
        block = self.block_tiles or max(1, math.isqrt(max(1, len(run.work)) // (4 * n)))
        blocks = make_blocks(run.work, block)
        if isinstance(request.slide, Pyramid):
            slide_ref: Any = client.scatter(run.pyramid, broadcast=True)
        else:
            slide_ref = (str(Path(request.slide).resolve()), request.mpp)
        spec: Any = run.spec if run.spec.obj is None else client.scatter(run.spec, broadcast=True)
        opts = {
            "device": request.device,
            "precision": request.precision,
            "batch_size": request.batch_size,
            "prefetch": request.prefetch,
            "readers": request.readers,
            "glass_label": request.glass_label,
            "tissue": run.tissue,
            "torch_threads": _forward_threads(run),
        }
        self.futures = [
            client.submit(
                _run_block, slide_ref, spec, str(run.store.path), run.plan, items, opts, pure=False
            )
            for items in blocks
        ]
        log.info(
            "%s: %d tiles in %d blocks on %d workers", run.store.path, len(run.work), len(blocks), n
        )

    def steps(self, cancel: threading.Event | None) -> Generator[Step, None, None]:
        """Commit each block as it finishes (the driver is the only committer)."""
        from distributed import as_completed

        assert self.run is not None
        run = self.run
        for future in as_completed(self.futures):
            if cancel is not None and cancel.is_set():
                return
            written: list[Written] = future.result()
            boxes: list[Box] = commit_tiles(run.store, run.plan, written)
            yield [(idx, kind == DONE_GLASS) for idx, kind in written], boxes

    def finish(self) -> list[Box]:
        """Cancel the blocks not yet done and close what :meth:`start` opened."""
        try:
            pending = [f for f in self.futures if not f.done()]
            if pending and self.client is not None:
                self.client.cancel(pending)
        finally:
            if self._cleanup is not None:
                self._cleanup()
        return []


def run_distributed(
    request: InferenceRequest,
    client: Any = None,
    n_workers: int | None = None,
    scheduler_address: str | None = None,
    *,
    cancel: threading.Event | None = None,
    block_tiles: int | None = None,
) -> Generator[ProgressEvent, None, None]:
    """Run ``request`` on dask.distributed, yielding an event per finished block.

    The lifecycle (checks, events, cancel, outcome record) is the single-process
    engine's (:func:`~napari_sgnet.inference.lifecycle.execute`); only the execution
    differs.

    Parameters
    ----------
    request : InferenceRequest
        As for :func:`~napari_sgnet.inference.engine.run_inference`; the store must be
        on a file system every worker sees.
    client : distributed.Client, optional
        Use this client (its cluster is left running).
    n_workers : int, optional
        Workers of the LocalCluster started when neither ``client`` nor
        ``scheduler_address`` is given; default one per GPU, else up to 4 CPU workers.
    scheduler_address : str, optional
        Connect to an external scheduler (e.g. ``"tcp://host:8786"``).
    cancel : threading.Event, optional
        Stop submitting and committing; blocks not yet committed are redone on resume.
    block_tiles : int, optional
        Side of a block in tiles; default gives about four blocks per worker.
    """
    executor = DistributedExecutor(client, n_workers, scheduler_address, block_tiles)
    yield from execute(request, executor, cancel=cancel)
