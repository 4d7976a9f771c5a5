"""Memory-mapped splits (data.load=mmap): the same batches and rows as in memory, the same training
results and run id, and prefetch errors that surface."""

import pytest
import torch

from mmbench.data.mapped import MappedData, _prefetched
from mmbench.data.store import load_split, prepare
from mmbench.run import train_run

SMALL = {"num_classes": 3, "num_samples": 80, "shapes": ["5", "1x4x4"]}


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    dd = tmp_path_factory.mktemp("data")
    prepare("synthetic", None, dd, name="syn", options=SMALL)
    return dd


@pytest.mark.parametrize("shuffle", [True, False])
def test_mapped_batches_equal_in_memory_batches(small_dir, shuffle):
    mem, mapped = load_split("syn", "train", small_dir), load_split("syn", "train", small_dir, mmap=True)
    assert isinstance(mapped, MappedData) and not isinstance(mem, MappedData)
    a = list(mem.batches(7, shuffle=shuffle, generator=torch.Generator().manual_seed(3)))
    b = list(mapped.batches(7, shuffle=shuffle, generator=torch.Generator().manual_seed(3)))
    assert len(a) == len(b) == -(-len(mem) // 7) > 2
    for x, y in zip(a, b):
        assert torch.equal(x.ids, y.ids) and torch.equal(x.labels, y.labels)
        assert x.inputs.keys() == y.inputs.keys()
        assert all(torch.equal(x.inputs[m], y.inputs[m]) for m in x.inputs)
    assert sorted(torch.cat([y.ids for y in b]).tolist()) == list(range(len(mem)))


def _mapped_files(address: int) -> list[str]:
    """The files of this process's memory mappings that contain ``address`` (Linux /proc/self/maps)."""
    found = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            start, end = (int(v, 16) for v in fields[0].split("-"))
            if start <= address < end and len(fields) > 5:
                found.append(fields[5])
    return found


def test_mapped_inputs_are_views_of_the_files_not_copies(small_dir):
    mapped = load_split("syn", "train", small_dir, mmap=True).to("cpu")
    for m, x in mapped.inputs.items():
        assert _mapped_files(x.data_ptr()) == [str(small_dir / "syn" / "train" / f"{m}.npy")]
    mem = load_split("syn", "train", small_dir)
    assert not any(f.endswith(".npy") for x in mem.inputs.values() for f in _mapped_files(x.data_ptr()))


@pytest.mark.parametrize("rows", [slice(3, 20, 2), torch.tensor([9, 2, 2, 40, 0]), "mask"])
def test_mapped_index_equals_in_memory_index(small_dir, rows):
    mem, mapped = load_split("syn", "train", small_dir), load_split("syn", "train", small_dir, mmap=True)
    if isinstance(rows, str):
        rows = torch.arange(len(mem)) % 3 == 1
    a, b = mem.index(rows), mapped.index(rows)
    assert torch.equal(a.labels, b.labels) and all(torch.equal(a.inputs[m], b.inputs[m]) for m in a.inputs)
    assert mapped.select(["image"]).modalities == ["image"]


@pytest.mark.parametrize("method", ["joint", "gblending"])  # gblending also reads a held-out part of train
def test_training_from_a_memory_map_gives_the_same_run(make_cfg, method):
    sets = ["method.super_epoch=1"] if method == "gblending" else []
    mem_cfg = make_cfg(method, epochs=2, sets=sets)
    mapped_cfg = make_cfg(method, epochs=2, sets=sets + ["data.load=mmap"])
    assert mem_cfg.run_id() == mapped_cfg.run_id()  # how the data is read is not part of what the run is
    folder, _ = train_run(mem_cfg)
    metrics, test = folder.read_metrics().drop(columns="seconds", errors="ignore"), folder.read_summary()["test"]
    folder, trained = train_run(mapped_cfg, force=True)
    assert trained and folder.read_config().data.load == "mmap"
    assert metrics.equals(folder.read_metrics().drop(columns="seconds", errors="ignore"))
    assert test == folder.read_summary()["test"]


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
