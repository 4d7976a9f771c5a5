"""Memory-mapped splits: same batches, in the same order, as the in-memory path; prefetch errors surface."""

import numpy as np
import pytest
import torch

from mmbench.data.mapped import _prefetched
from mmbench.data.store import load_split, map_split, prepare

SMALL = {"num_classes": 3, "num_samples": 80, "shapes": ["5", "1x4x4"]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    dd = tmp_path_factory.mktemp("data")
    prepare("synthetic", None, dd, name="syn", options=SMALL)
    return dd


@pytest.mark.parametrize("shuffle", [True, False])
def test_mapped_batches_equal_in_memory_batches(data_dir, shuffle):
    mem, mapped = load_split("syn", "train", data_dir), map_split("syn", "train", data_dir)
    assert all(isinstance(x, np.memmap) for x in mapped.inputs.values())
    a = list(mem.batches(7, shuffle=shuffle, generator=torch.Generator().manual_seed(3)))
    b = list(mapped.batches(7, shuffle=shuffle, generator=torch.Generator().manual_seed(3)))
    assert len(a) == len(b) == -(-len(mem) // 7) > 2
    for x, y in zip(a, b):
        assert torch.equal(x.ids, y.ids) and torch.equal(x.labels, y.labels)
        assert x.inputs.keys() == y.inputs.keys()
        assert all(torch.equal(x.inputs[m], y.inputs[m]) for m in x.inputs)
    assert sorted(torch.cat([y.ids for y in b]).tolist()) == list(range(len(mem)))


def test_prefetch_raises_worker_error_and_stops_early():
    def produce(k):
        if k == 3:
            raise ValueError("boom")
        return k
    it = _prefetched(produce, range(10), 2)
    assert [next(it), next(it), next(it)] == [0, 1, 2]
    with pytest.raises(ValueError, match="boom"):
        next(it)
    early = _prefetched(lambda k: k, range(1000), 2)
    assert next(early) == 0
    early.close()  # leaving early must not hang
