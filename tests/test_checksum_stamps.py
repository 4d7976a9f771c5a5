"""Prepared files are hashed in full once: later loads trust size + modification time against the stamp,
a changed file is hashed again, and ``mmbench prepare --verify`` hashes everything on demand."""

import json
import os
import time

import numpy as np
import pytest

import mmbench.checksums
from mmbench.data.store import STAMPS, load_meta, load_split, prepare, verify_prepared
from mmbench.errors import MMBenchError
from tests.cli_helpers import assert_one_line_error, run_main

SMALL = {"num_classes": 3, "num_samples": 60, "shapes": ["5", "1x4x4"]}


@pytest.fixture
def prepared(tmp_path):
    """A prepared dataset whose files are an hour old and stamped since (as after any later run)."""
    prepare("synthetic", None, tmp_path, name="syn", options=SMALL)
    hour_ago = time.time_ns() - 3600 * 10**9
    for rel in load_meta("syn", tmp_path).checksums:
        os.utime(tmp_path / "syn" / rel, ns=(hour_ago, hour_ago))
    verify_prepared("syn", tmp_path)
    return tmp_path


def _edit_keeping_size_and_time(path):
    before = os.stat(path)
    x = np.load(path)
    x[0, 0] += 1
    np.save(path, x)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _count_hashes(monkeypatch):
    calls = []
    real = mmbench.checksums.file_sha256
    monkeypatch.setattr(mmbench.checksums, "file_sha256", lambda p: calls.append(p) or real(p))
    return calls


def test_stamped_files_are_not_hashed_again(prepared, monkeypatch):
    meta = load_meta("syn", prepared)
    stamps = json.loads((prepared / "syn" / STAMPS).read_text())
    assert sorted(stamps) == sorted(meta.checksums) and all(stamps[r][2] == meta.checksums[r] for r in stamps)
    calls = _count_hashes(monkeypatch)
    load_split("syn", "train", prepared)
    assert calls == []


def test_a_changed_file_is_hashed_again_and_rejected(prepared, monkeypatch):
    path = prepared / "syn" / "train" / "vector.npy"
    before = os.stat(path)
    x = np.load(path)
    x[0, 0] += 1
    np.save(path, x)
    # file times tick coarsely (a few ms): an edit this soon after prepare could keep the stamped time
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    calls = _count_hashes(monkeypatch)
    with pytest.raises(MMBenchError, match="checksum mismatch"):
        load_split("syn", "train", prepared)
    assert [p.name for p in calls] == ["vector.npy"]


def test_a_change_that_keeps_size_and_time_needs_the_full_check(prepared, monkeypatch, capsys):
    _edit_keeping_size_and_time(prepared / "syn" / "train" / "vector.npy")
    load_split("syn", "train", prepared)  # what the cheap check cannot see
    with pytest.raises(MMBenchError, match="checksum mismatch.*vector.npy"):
        verify_prepared("syn", prepared)
    code, _, err = run_main(monkeypatch, capsys, "prepare", "syn", "--verify", "--data-dir", str(prepared))
    assert_one_line_error(code, err, "checksum mismatch", "vector.npy")


def test_a_file_changed_soon_after_it_was_hashed_is_hashed_again(tmp_path):
    prepare("synthetic", None, tmp_path, name="syn", options=SMALL)
    _edit_keeping_size_and_time(tmp_path / "syn" / "train" / "vector.npy")  # within a file-time tick, say
    with pytest.raises(MMBenchError, match="checksum mismatch.*vector.npy"):
        load_split("syn", "train", tmp_path)


def test_verify_on_demand_hashes_every_file(prepared, monkeypatch, capsys):
    calls = _count_hashes(monkeypatch)
    files, size = verify_prepared("syn", prepared)
    assert files == len(load_meta("syn", prepared).checksums) == len(calls) > 6 and size > 0
    code, out, _ = run_main(monkeypatch, capsys, "prepare", "syn", "--verify", "--data-dir", str(prepared))
    assert code == 0 and f"{files} files" in out


def test_an_unwritable_or_broken_stamp_file_only_costs_the_full_hash(prepared, monkeypatch):
    (prepared / "syn" / STAMPS).write_text("{not json")
    calls = _count_hashes(monkeypatch)
    load_split("syn", "val", prepared)
    assert len(calls) == 3  # vector, image, labels hashed again, then stamped
    calls.clear()
    load_split("syn", "val", prepared)
    assert calls == []


@pytest.mark.parametrize("args", [["syn", "--verify", "--force"], ["nothere", "--verify"]])
def test_verify_usage_errors_are_one_line(prepared, monkeypatch, capsys, args):
    code, _, err = run_main(monkeypatch, capsys, "prepare", *args, "--data-dir", str(prepared))
    assert_one_line_error(code, err, "prepare")
