"""BalanceMM's datasets (CMU-MOSEI, UCF-101, VGGSound, BalancedAV) prepared from fixtures in each
exact raw layout: shapes, classes, splits, values against the raw files, skipped-and-recorded clips,
and bad raw inputs that end in one clear error (exit 2 through the CLI)."""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys

import numpy as np
import pytest

from mmbench.data import fixtures
from mmbench.data.store import load_meta, load_split, prepare
from mmbench.errors import MMBenchError
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.conftest import BUILTIN_METHODS


def _raw_mosei(path):
    with open(path, "rb") as f:
        return pickle.load(f)  # our own fixture file


# ---------------------------------------------------------------------------------------
# CMU-MOSEI
# ---------------------------------------------------------------------------------------


def test_mosei_three_sequences_official_splits_and_balancemm_labels(tmp_path):
    manifest = fixtures.cmu_mosei(tmp_path / "raw", per_split=(10, 4, 6), steps=5)
    prepare("cmu_mosei", tmp_path / "raw", tmp_path / "data")
    meta = load_meta("cmu_mosei", tmp_path / "data")
    assert meta.splits == manifest.counts == {"train": 10, "val": 4, "test": 6}
    assert meta.classes == ("negative", "non-negative")
    assert {m: (s.kind, s.shape) for m, s in meta.modalities.items()} == {
        "text": ("sequence", (300, 5)), "audio": ("sequence", (74, 5)), "visual": ("sequence", (35, 5))}
    raw = _raw_mosei(tmp_path / "raw" / "mosei_senti_data_noalign.pkl")
    for split, key in (("train", "train"), ("val", "valid"), ("test", "test")):
        data = load_split("cmu_mosei", split, tmp_path / "data")
        score = raw[key]["labels"][:, 0, 0]
        assert score[1] == 0 and data.labels[1] == 1, "a neutral score is non-negative (BalanceMM's acc2)"
        assert data.labels.tolist() == (score >= 0).astype(int).tolist()
        audio = np.where(np.isfinite(raw[key]["audio"]), raw[key]["audio"], 0).transpose(0, 2, 1)
        assert np.array_equal(data.inputs["audio"].numpy(), audio)
        assert np.array_equal(data.inputs["visual"].numpy(), raw[key]["vision"].transpose(0, 2, 1))
    assert meta.info["non_finite_replaced"]["train/audio"] == 3 and meta.info["non_finite_replaced"]["test/text"] == 0


def test_mosei_aligned_file_and_dropping_empty_text(tmp_path):
    fixtures.cmu_mosei(tmp_path / "raw", per_split=(8, 4, 4), aligned=True)
    with pytest.raises(MMBenchError, match=r"mosei_senti_data_noalign.pkl not found; expected layout"):
        prepare("cmu_mosei", tmp_path / "raw", tmp_path / "data")
    path = tmp_path / "raw" / "mosei_senti_data.pkl"
    raw = _raw_mosei(path)
    raw["test"]["text"][2] = 0.0
    with open(path, "wb") as f:
        pickle.dump(raw, f)
    prepare("cmu_mosei", tmp_path / "raw", tmp_path / "keep", options={"aligned": True})
    prepare("cmu_mosei", tmp_path / "raw", tmp_path / "drop", options={"aligned": True, "drop_empty_text": True})
    assert load_meta("cmu_mosei", tmp_path / "keep").splits["test"] == 4
    dropped = load_meta("cmu_mosei", tmp_path / "drop")
    assert dropped.splits["test"] == 3 and dropped.info["dropped_empty_text"] == {"train": 0, "val": 0, "test": 1}


class _Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (type(self.path).touch, (self.path,))


def test_mosei_pickle_is_never_executed_and_bad_files_are_clear_errors(tmp_path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    fixtures.cmu_mosei(raw, per_split=(8, 4, 4))
    path = raw / "mosei_senti_data_noalign.pkl"
    data = _raw_mosei(path)
    with open(path, "wb") as f:
        pickle.dump({**data, "train": {**data["train"], "id": _Touch(tmp_path / "pwned")}}, f)
    with pytest.raises(MMBenchError, match=r"asks for pathlib.*Path.touch"):
        prepare("cmu_mosei", raw, tmp_path / "data")
    assert not (tmp_path / "pwned").exists()
    with open(path, "wb") as f:
        pickle.dump({"train": data["train"], "test": data["test"]}, f)
    code, err = run_cli(monkeypatch, capsys, "prepare", "cmu_mosei", "--root", str(raw), "--data-dir", str(tmp_path / "d"))
    assert_one_line_error(code, err, "no split 'valid'", "expected layout")
    data["valid"]["labels"][0] = np.nan
    data["test"]["vision"] = data["test"]["vision"][:, :, 0]
    with open(path, "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(MMBenchError, match=r"\['valid'\]\['labels'\]: 1 sentiment scores are not finite"):
        prepare("cmu_mosei", raw, tmp_path / "data")
    data["valid"]["labels"][0] = 1.0
    with open(path, "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(MMBenchError, match=r"\['test'\]\['vision'\]: expected a numeric array \[N, T, D\]"):
        prepare("cmu_mosei", raw, tmp_path / "data")
    path.write_bytes(b"not a pickle")
    with pytest.raises(MMBenchError, match="not a readable pickle of arrays"):
        prepare("cmu_mosei", raw, tmp_path / "data")
    assert not (tmp_path / "data" / "cmu_mosei").exists() and not (tmp_path / "d" / "cmu_mosei").exists()


def test_every_method_trains_on_three_feature_sequences_or_refuses_clearly(tmp_path):
    """CMU-MOSEI is the first text + audio + visual dataset: every registered method either trains on its
    three ``sequence`` modalities or, when it declares fewer, refuses and trains on two chosen ones."""
    from mmbench.config import resolve
    from mmbench.registry import METHODS
    from mmbench.run import train_run

    fixtures.cmu_mosei(tmp_path / "raw", per_split=(16, 6, 6), steps=4)
    prepare("cmu_mosei", tmp_path / "raw", tmp_path / "data")

    def config(method, *sets):
        required = [f"method.{f.name}=text" for f in dataclasses.fields(METHODS.get(method).Params)
                    if f.default is None and "modality" in f.name]
        return resolve(flags={"data.dataset": "cmu_mosei", "method.name": method, "optim.epochs": 1, "seed": 0,
                              "output.data_dir": str(tmp_path / "data"), "output.probe": False,
                              "output.results_dir": str(tmp_path / "results")},
                       sets=["model.hidden_dim=16", "model.feature_dim=8", "optim.batch_size=8", *required, *sets])

    for method in BUILTIN_METHODS:
        limit = METHODS.get(method).max_modalities
        if limit is not None and limit < 3:
            with pytest.raises(MMBenchError, match=rf"'{method}' is defined for at most {limit} modalities, the data has 3"):
                train_run(config(method))
            folder, trained = train_run(config(method, "data.modalities=[text,audio]"))
        else:
            folder, trained = train_run(config(method))
        assert trained and 0.0 <= folder.read_summary()["test"]["acc"] <= 1.0, method


# ---------------------------------------------------------------------------------------
# UCF-101
# ---------------------------------------------------------------------------------------


def test_ucf101_two_streams_sorted_classes_and_flow_channels(tmp_path):
    raw = tmp_path / "raw"
    manifest = fixtures.ucf101(raw, num_classes=4, train_per_class=4, test_per_class=2, rgb_frames=6, flow_frames=9)
    prepare("ucf101", raw, tmp_path / "data", options={"num_classes": 4, "image_size": 16, "val_fraction": 0.25})
    meta = load_meta("ucf101", tmp_path / "data")
    assert meta.classes == tuple(sorted(manifest.classes))
    assert meta.splits == {"train": 12, "val": 4, "test": 8}
    assert meta.modalities["visual"].shape == (3, 3, 16, 16) and meta.modalities["flow"].shape == (3, 2, 16, 16)
    assert meta.info["split"]["source_splits"].startswith("trainlist01.txt / testlist01.txt")
    test = load_split("ucf101", "test", tmp_path / "data")
    flow = test.inputs["flow"].float()
    assert (flow[:, :, 0, :, -3:].mean() > flow[:, :, 0, :, :3].mean() + 20), "u: the horizontal ramp"
    assert (flow[:, :, 1, -3:, :].mean() > flow[:, :, 1, :3, :].mean() + 20), "v: the vertical ramp"
    with pytest.raises(MMBenchError, match=r"4 classes, expected 101"):
        prepare("ucf101", raw, tmp_path / "x", options={"image_size": 16})


def test_ucf101_missing_streams_are_skipped_and_list_errors(tmp_path):
    import shutil

    raw = tmp_path / "raw"
    manifest = fixtures.ucf101(raw, num_classes=3, train_per_class=4, test_per_class=2)
    options = {"num_classes": 3, "image_size": 16, "val_fraction": 0.25}
    gone = manifest.ids["test"][:2]
    shutil.rmtree(raw / "flow" / "v" / gone[0])
    shutil.rmtree(raw / "rgb" / gone[1])
    prepare("ucf101", raw, tmp_path / "data", options=options)
    skipped = load_meta("ucf101", tmp_path / "data").info["skipped"]
    assert {r["id"] for r in skipped["samples"]} == set(gone) and skipped["by_split"]["test"] == 2
    assert all("missing" in r["reason"] for r in skipped["samples"])
    with pytest.raises(MMBenchError, match=rf"{gone[0]}.*on_error=skip"):
        prepare("ucf101", raw, tmp_path / "x", options={**options, "on_error": "error"})
    with pytest.raises(MMBenchError, match=r"trainlist02.txt not found; expected layout"):
        prepare("ucf101", raw, tmp_path / "x", options={**options, "split": 2})
    with pytest.raises(MMBenchError, match=r"option split=4 must be one of"):
        prepare("ucf101", raw, tmp_path / "x", options={**options, "split": 4})
    with open(raw / "ucfTrainTestlist" / "testlist01.txt", "a") as f:
        f.write("Juggling/v_Juggling_g01_c01.avi\n")
    with pytest.raises(MMBenchError, match=r"testlist01.txt:7: class 'Juggling' is not in classInd.txt"):
        prepare("ucf101", raw, tmp_path / "x", options=options)
    assert not (tmp_path / "x" / "ucf101").exists()


# ---------------------------------------------------------------------------------------
# VGGSound
# ---------------------------------------------------------------------------------------


def test_vggsound_csv_spectrograms_as_released_and_skipped_clips(tmp_path):
    raw = tmp_path / "raw"
    manifest = fixtures.vggsound(raw, num_classes=3, train_per_class=4, test_per_class=2, frames=5)
    train, test = manifest.ids["train"], manifest.ids["test"]
    (raw / "audio_test" / f"{test[0]}.npy").unlink()  # missing spectrogram
    for frame in sorted((raw / "video_test" / test[1]).iterdir())[:2]:
        frame.unlink()  # 3 frames left: BalanceMM needs more than 3
    np.save(raw / "audio_test" / f"{test[2]}.npy", np.zeros((16, 7), np.float32))  # another shape
    options = {"num_classes": 3, "image_size": 16, "val_fraction": 0.25}
    prepare("vggsound", raw, tmp_path / "data", options=options)
    meta = load_meta("vggsound", tmp_path / "data")
    assert meta.classes == tuple(sorted(manifest.classes)) and meta.splits == {"train": 9, "val": 3, "test": 3}
    assert meta.modalities["audio"].shape == (1, 16, 20) and meta.modalities["audio"].kind == "image"
    reasons = {r["id"]: r["reason"] for r in meta.info["skipped"]["samples"]}
    assert set(reasons) == set(test[:3])
    assert "missing spectrogram" in reasons[test[0]] and "fewer than min_frames=4" in reasons[test[1]]
    assert "shape [16, 7]" in reasons[test[2]]
    data = load_split("vggsound", "test", tmp_path / "data")
    kept = [c for c in test if c not in reasons]
    assert np.array_equal(data.inputs["audio"][0, 0].numpy(), np.load(raw / "audio_test" / f"{kept[0]}.npy"))
    bands = data.inputs["audio"][:, 0].mean(-1).argmax(-1)
    assert bands.tolist() == data.labels.tolist(), "each class's band survives as stored"
    assert len(train) == 12
    with pytest.raises(MMBenchError, match=rf"test sample '{test[0]}'.*missing spectrogram"):
        prepare("vggsound", raw, tmp_path / "x", options={**options, "on_error": "error"})
    with pytest.raises(MMBenchError, match=r"3 classes, expected 309"):
        prepare("vggsound", raw, tmp_path / "x", options={"image_size": 16})
    with open(raw / "vggsound.csv", "a") as f:
        f.write("abc,10,dog barking,validation\n")
    with pytest.raises(MMBenchError, match=r"vggsound.csv:19: expected '<YouTube id>,<start>,<label>,<train\|test>'"):
        prepare("vggsound", raw, tmp_path / "x", options=options)


# ---------------------------------------------------------------------------------------
# BalancedAV
# ---------------------------------------------------------------------------------------


def test_balanced_av_hdf5_frames_pickled_spectrograms_and_validation_subset(tmp_path):
    pytest.importorskip("h5py")
    raw = tmp_path / "raw"
    manifest = fixtures.balanced_av(raw, num_classes=3, per_split=(4, 2), frames=7)
    annotation = json.loads((raw / "annotations.json").read_text())
    moved = [c for c in manifest.ids["train"] if c.endswith("train0")]  # one clip per class: validation
    for clip in moved:
        annotation["database"][clip]["subset"] = "validation"
    (raw / "annotations.json").write_text(json.dumps(annotation))
    options = {"num_classes": 3, "image_size": 16}
    prepare("balanced_av", raw, tmp_path / "data", options=options)
    meta = load_meta("balanced_av", tmp_path / "data")
    assert meta.classes == tuple(manifest.classes) and meta.splits == {"train": 9, "val": 3, "test": 6}
    assert "validation" in meta.info["split"]["source_splits"]
    assert meta.modalities["visual"].shape == (3, 3, 16, 16) and meta.modalities["audio"].shape == (1, 16, 20)
    test = load_split("balanced_av", "test", tmp_path / "data")
    with open(raw / "audio" / f"{manifest.ids['test'][0]}.pkl", "rb") as f:
        assert np.array_equal(test.inputs["audio"][0, 0].numpy(), pickle.load(f))
    colour = test.inputs["visual"].float().mean(dim=(1, 3, 4))  # [N, 3] mean RGB
    assert (colour[test.labels == 2, 0].mean() > colour[test.labels == 0, 0].mean() + 50), "class colours decoded"


def test_balanced_av_bad_clips_skipped_never_executed_and_errors(tmp_path, monkeypatch, capsys):
    pytest.importorskip("h5py")
    raw = tmp_path / "raw"
    manifest = fixtures.balanced_av(raw, num_classes=2, per_split=(4, 3))
    test = manifest.ids["test"]
    (raw / "visual" / f"{test[0]}.hdf5").unlink()
    (raw / "visual" / f"{test[1]}.hdf5").write_bytes(b"not hdf5")
    with open(raw / "audio" / f"{test[2]}.pkl", "wb") as f:
        pickle.dump(_Touch(tmp_path / "pwned"), f)
    options = {"num_classes": 2, "image_size": 16, "val_fraction": 0.25}
    prepare("balanced_av", raw, tmp_path / "data", options=options)
    reasons = {r["id"]: r["reason"] for r in load_meta("balanced_av", tmp_path / "data").info["skipped"]["samples"]}
    assert set(reasons) == set(test[:3]) and not (tmp_path / "pwned").exists()
    assert "missing frames file" in reasons[test[0]] and "HDF5" in reasons[test[1]]
    assert "Path.touch" in reasons[test[2]]
    (raw / "annotations.json").write_text(json.dumps({"labels": ["a"], "database": {"x": {"subset": "train"}}}))
    code, err = run_cli(monkeypatch, capsys, "prepare", "balanced_av", "--root", str(raw), "--data-dir",
                        str(tmp_path / "d"), "-o", "num_classes=0")
    assert_one_line_error(code, err, "clip 'x' needs a subset in training, validation, testing")


def test_balanced_av_without_h5py_is_one_clear_error_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if it were not installed
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "annotations.json").write_text(json.dumps({"labels": [], "database": {}}))
    code, err = run_cli(monkeypatch, capsys, "prepare", "balanced_av", "--root", str(tmp_path / "raw"),
                        "--data-dir", str(tmp_path / "data"))
    assert_one_line_error(code, err, "pip install h5py", "mmbench[balanced_av]")
    assert not (tmp_path / "data").exists()
