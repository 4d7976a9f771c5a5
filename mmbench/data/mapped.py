"""Memory-mapped splits: batches gathered from ``.npy`` memmaps by index, prefetched on a background thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mmbench.data.types import DatasetMeta, MultimodalData


@dataclass
class MappedData:
    """A split left on disk: ``inputs`` modality -> memmap ``[N, ...]``; ``labels`` ``[N]``. :meth:`batches`
    draws the same order as :meth:`MultimodalData.batches` for the same generator."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    meta: DatasetMeta

    def __len__(self) -> int:
        return self.labels.shape[0]

    def gather(self, ids: torch.Tensor) -> MultimodalData:
        """Rows ``ids`` (in that order) read with one sorted, vectorised gather per array."""
        idx = ids.numpy()
        order = np.argsort(idx, kind="stable")
        sorted_idx, inverse = idx[order], np.empty_like(order)
        inverse[order] = np.arange(len(order))
        inputs = {m: torch.from_numpy(np.take(x, sorted_idx, axis=0)[inverse]) for m, x in self.inputs.items()}
        batch = MultimodalData(inputs, torch.from_numpy(np.take(self.labels, sorted_idx)[inverse]).long(), self.meta)
        batch.ids = ids
        return batch

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", prefetch: int = 2) -> Iterator[MultimodalData]:
        """Batches on ``device``; the next ``prefetch`` are gathered (and pinned on CUDA) while this one is used."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        device = torch.device(device)
        pin = device.type == "cuda"

        def produce(start: int) -> MultimodalData:
            batch = self.gather(order[start:start + batch_size])
            if pin:
                batch = MultimodalData({m: x.pin_memory() for m, x in batch.inputs.items()},
                                       batch.labels.pin_memory(), self.meta, batch.ids)
            return batch

        for batch in _prefetched(produce, range(0, n, batch_size), prefetch):
            if device.type != "cpu":
                batch = MultimodalData({m: x.to(device, non_blocking=True) for m, x in batch.inputs.items()},
                                       batch.labels.to(device, non_blocking=True), self.meta,
                                       batch.ids.to(device))
            yield batch


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
