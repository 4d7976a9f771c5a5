"""Memory-mapped splits (``data.load=mmap``): inputs stay on disk, batches are gathered by index and
prefetched on a background thread, so a split larger than RAM trains with flat process memory."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from mmbench.data.types import DatasetMeta, MultimodalData


class MappedData(MultimodalData):
    """A split whose ``inputs`` are tensors over copy-on-write memory maps of the prepared ``.npy`` files.

    It is a :class:`MultimodalData` that is never copied whole: :meth:`to` only moves the (small)
    labels and records the device; :meth:`batches` (the same order as the in-memory path for the same
    generator) and :meth:`index` gather rows with one sorted read per array and move them to that
    device (pinned and non-blocking on CUDA). The next ``prefetch`` batches are read while one is used.
    """

    def __init__(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor, meta: DatasetMeta,
                 device: torch.device | str = "cpu", prefetch: int = 2):
        super().__init__(inputs, labels.to(device), meta)
        self.device, self.prefetch = torch.device(device), prefetch

    @classmethod
    def from_arrays(cls, inputs: dict[str, np.memmap], labels: np.ndarray, meta: DatasetMeta) -> MappedData:
        return cls({m: torch.from_numpy(x) for m, x in inputs.items()}, torch.from_numpy(labels).long(), meta)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MappedData:
        return MappedData(self.inputs, self.labels, self.meta, device, self.prefetch)

    def select(self, modalities: list[str]) -> MappedData:
        return MappedData({m: self.inputs[m] for m in modalities}, self.labels, self.meta.select(modalities),
                          self.device, self.prefetch)

    def index(self, idx: torch.Tensor | slice) -> MultimodalData:
        """Rows ``idx`` (a slice, positions or a boolean mask) read into memory on the data's device."""
        if isinstance(idx, slice):
            rows = torch.arange(len(self))[idx]
        else:
            idx = idx.cpu()
            rows = idx.nonzero().flatten() if idx.dtype == torch.bool else idx
        return self._gather(rows, pin=False).to(self.device)

    def _gather(self, rows: torch.Tensor, pin: bool) -> MultimodalData:
        """Rows in the given order, read in ascending order (sequential on disk), pinned if asked. The copy is
        numpy's, single-threaded: a torch op on the prefetch thread would start a second OpenMP team
        competing with training's (about 1.5x slower epochs on 2 cores, ``benchmarks/larger_than_ram.py``)."""
        r = rows.numpy()
        order = np.argsort(r, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        ascending = r[order]

        def read(x: torch.Tensor) -> torch.Tensor:
            out = torch.from_numpy(np.take(x.numpy(), ascending, axis=0)[inverse])
            return out.pin_memory() if pin else out

        return MultimodalData({m: read(x) for m, x in self.inputs.items()}, self.labels.cpu()[rows], self.meta)

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[MultimodalData]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        pin = self.device.type == "cuda"

        def produce(start: int) -> MultimodalData:
            ids = order[start:start + batch_size]
            batch = self._gather(ids, pin)
            batch.ids = ids
            return batch

        for batch in _prefetched(produce, range(0, n, batch_size), self.prefetch):
            yield batch.to(self.device, non_blocking=True) if self.device.type != "cpu" else batch


_DONE = object()


def _prefetched(produce, keys, depth: int) -> Iterator:
    """``produce(k)`` for each key, computed ahead on one thread through a queue of ``depth`` items;
    an error in the thread is raised here, and leaving the loop early stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def work() -> None:
        try:
            for k in keys:
                if stop.is_set():
                    return
                q.put((produce(k), None))
        except BaseException as e:  # re-raised in the consumer
            q.put((None, e))
        q.put((_DONE, None))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item, err = q.get()
            if err is not None:
                raise err
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.01)
