"""The real-dataset pipelines on raw fixtures generated in each dataset's exact layout.

Conformance-style: every registered dataset that needs ``--root`` is prepared from its generated
fixture, trained for one epoch of ``joint`` (its catalog CPU preset, tiny widths) and attacked.
Then each pipeline's own checks: published shapes, split files, class-count variants, and bad raw
inputs (missing / corrupt files, malformed split files) that must end in a clear error or in
skipped samples recorded in ``meta.json``.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mmbench.config import load_catalog, resolve
from mmbench.data import fixtures
from mmbench.data.fixtures import FIXTURES
from mmbench.data.store import load_meta, load_split, prepare
from mmbench.errors import MMBenchError
from mmbench.models.encoders import DEFAULT_ENCODER
from mmbench.registry import ATTACKS, DATASETS, ENCODERS

REAL = [n for n in DATASETS.names() if not DATASETS.get(n).embedded]
# prepare options that keep the fixtures tiny (the defaults are the published sizes)
SMALL = {
    "cremad": {"duration": 0.5, "image_size": 16, "val_fraction": 0.5},
    "kinetics_sounds": {"duration": 0.5, "image_size": 16, "val_fraction": 0.5, "frames": 2},
    "ave": {"duration": 0.5, "image_size": 16, "hop": 512},
    "vggsound": {"image_size": 16, "val_fraction": 0.5},
    "balanced_av": {"image_size": 16, "val_fraction": 0.5},
    "ucf101": {"image_size": 16, "val_fraction": 0.5},
    "mvsa_single": {"image_size": 16, "max_tokens": 12},
    "food101": {"image_size": 16, "max_tokens": 12},
    "nyud2": {"image_size": 16},
    "sun_rgbd": {"image_size": 16, "val_fraction": 0.4},
    "brca": {"val_fraction": 0.25},
    "csv_views": {"val_fraction": 0.2},
}
FIXTURE_SIZES = {"kinetics_sounds": {"train_per_class": 2}}
TINY_MODEL = ["model.hidden_dim=16", "model.feature_dim=8", "model.depth=2", "optim.batch_size=32", "optim.epochs=1"]


NEEDS = {"balanced_av": "h5py"}  # an optional package the fixture and the reader need


def _prepare(name, tmp_path, options=None, **sizes):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    manifest = FIXTURES[name](tmp_path / "raw", **{**FIXTURE_SIZES.get(name, {}), **sizes})
    opts = {**SMALL.get(name, {}), **(options or {})}
    prepare(name, tmp_path / "raw", tmp_path / "data", options=opts)
    return manifest, load_meta(name, tmp_path / "data")


def _config(name, tmp_path, sets=()):
    preset = (load_catalog().get(name) or {}).get("cpu_preset", {}).get("train", [])
    flags = {"data.dataset": name, "method.name": "joint", "optim.epochs": 1, "seed": 0,
             "output.data_dir": str(tmp_path / "data"), "output.results_dir": str(tmp_path / "results"),
             "output.probe": False}
    return resolve(flags=flags, sets=[*preset, *TINY_MODEL, *sets])


def test_every_non_embedded_dataset_has_a_fixture_generator():
    assert set(REAL) <= set(FIXTURES), f"add raw fixture generators for {sorted(set(REAL) - set(FIXTURES))}"
    assert {"cremad", "kinetics_sounds", "ave", "mvsa_single", "nyud2", "sun_rgbd", "food101", "brca", "rosmap"} <= set(REAL)


@pytest.mark.parametrize("name", REAL)
def test_real_dataset_prepares_trains_one_epoch_and_is_attacked(name, tmp_path):
    from mmbench.attacks.runner import attack_run
    from mmbench.run import train_run

    manifest, meta = _prepare(name, tmp_path)
    counts = manifest.counts
    assert meta.splits["test"] == counts["test"]
    if counts["val"] is None:  # carved from train with a recorded seed
        assert meta.splits["train"] + meta.splits["val"] == counts["train"]
        assert meta.info["split"]["seed"] == 0 and meta.info["split"]["val_from"] == "train"
    else:
        assert (meta.splits["train"], meta.splits["val"]) == (counts["train"], counts["val"])
    assert meta.num_classes == len(manifest.classes)
    options = meta.info["options"]
    assert {k: options[k] for k in SMALL.get(name, {})} == SMALL.get(name, {}), "options recorded in meta.json"
    for split in ("train", "val", "test"):
        data = load_split(name, split, tmp_path / "data")
        assert len(data) == meta.splits[split]
        assert set(data.labels.tolist()) <= set(range(meta.num_classes))
        for m, x in data.inputs.items():
            spec = meta.modalities[m]
            assert tuple(x.shape[1:]) == spec.shape and str(x.dtype).endswith(spec.dtype)
            assert ENCODERS.get(DEFAULT_ENCODER[spec.kind]).kinds
    if meta.builder not in ("csv_views", "brca", "rosmap", "cmu_mosei"):
        assert meta.info["skipped"]["count"] == 0 and meta.info["preprocessing"]

    folder, trained = train_run(_config(name, tmp_path))
    summary = folder.read_summary()
    assert trained and summary["test_samples"] == meta.splits["test"]
    assert 0.0 <= summary["test"]["acc"] <= 1.0

    gaussian = ATTACKS.get("gaussian")
    fits = [m for m, s in meta.modalities.items() if s.kind in gaussian.kinds]
    assert fits
    rows = attack_run(folder, ["gaussian"], [0.0, 1.0], [0], modalities=fits, data_dir=str(tmp_path / "data"))
    assert len(rows) == 2
    clean = next(r for r in rows if r["level"] == 0.0)
    assert clean["acc"] == pytest.approx(summary["test"]["acc"])  # level 0 changes nothing, uint8 included


def test_cremad_default_options_give_the_published_shapes_and_find_the_tones(tmp_path):
    _, meta = _prepare("cremad", tmp_path, options={"duration": 3.0, "image_size": 64})
    assert meta.modalities["audio"].shape == (1, 257, 188)  # 22.05 kHz, 3 s, n_fft 512, hop 353
    assert meta.modalities["audio"].kind == "image" and meta.modalities["audio"].dtype == "float32"
    assert meta.modalities["visual"].shape == (1, 3, 64, 64) and meta.modalities["visual"].dtype == "uint8"
    assert meta.modalities["visual"].kind == "video"
    audio = meta.info["preprocessing"]["audio"]
    assert (audio["sample_rate"], audio["n_fft"], audio["hop"], audio["n_mels"]) == (22050, 512, 353, 0)
    assert meta.classes == ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
    assert meta.info["split"]["source_splits"].startswith("train.csv")
    test = load_split("cremad", "test", tmp_path / "data")
    for x, k in zip(test.inputs["audio"].numpy(), test.labels.tolist()):
        freq = 200.0 * (k + 1) % (0.45 * 16000) + 100.0  # the fixture's tone of class k
        assert abs(int(np.median(x[0].argmax(axis=0))) - round(freq * 512 / 22050)) <= 1


def test_cremad_without_split_files_draws_a_stratified_split(tmp_path):
    fixtures.cremad(tmp_path / "raw", train_per_class=3, test_per_class=1, split_files=False)
    prepare("cremad", tmp_path / "raw", tmp_path / "data",
            options={**SMALL["cremad"], "test_fraction": 0.25, "val_fraction": 0.34})
    meta = load_meta("cremad", tmp_path / "data")
    assert meta.splits["test"] == 6 and meta.splits["train"] + meta.splits["val"] == 18
    assert meta.info["split"]["test_fraction"] == 0.25 and "stratified" in meta.info["split"]["source_splits"]


def test_cremad_skips_missing_and_corrupt_clips_and_records_them(tmp_path):
    fixtures.cremad(tmp_path / "raw", train_per_class=2, test_per_class=2)
    raw = tmp_path / "raw"
    tests = [line.split(",")[0] for line in (raw / "test.csv").read_text().splitlines()]
    (raw / "AudioWAV" / f"{tests[0]}.wav").unlink()  # missing audio
    wav = raw / "AudioWAV" / f"{tests[1]}.wav"
    wav.write_bytes(wav.read_bytes()[:100])  # truncated audio
    frame = sorted((raw / "Image-01-FPS" / tests[2]).iterdir())[0]
    frame.write_bytes(b"\xff\xd8 not really a jpeg")  # corrupt frame
    prepare("cremad", raw, tmp_path / "data", options={**SMALL["cremad"], "frame_pick": "first"})
    meta = load_meta("cremad", tmp_path / "data")
    skipped = meta.info["skipped"]
    assert skipped["count"] == 3 and skipped["by_split"]["test"] == 3
    reasons = {r["id"]: r["reason"] for r in skipped["samples"]}
    assert set(reasons) == set(tests[:3])
    assert "missing" in reasons[tests[0]] and "truncated" in reasons[tests[1]] and "image" in reasons[tests[2]]
    assert meta.splits["test"] == len(tests) - 3
    assert len(load_split("cremad", "test", tmp_path / "data")) == len(tests) - 3

    with pytest.raises(MMBenchError, match=rf"{tests[0]}.*on_error=skip"):
        prepare("cremad", raw, tmp_path / "strict", options={**SMALL["cremad"], "on_error": "error"})
    assert not (tmp_path / "strict" / "cremad").exists()


def test_cremad_layout_errors(tmp_path):
    fixtures.cremad(tmp_path / "raw", train_per_class=2, test_per_class=1)
    raw = tmp_path / "raw"
    (raw / "test.csv").rename(raw / "test.bak")
    with pytest.raises(MMBenchError, match="both train.csv and test.csv"):
        prepare("cremad", raw, tmp_path / "data", options=SMALL["cremad"])
    (raw / "test.bak").write_text("1001_DFA_XXX_XX,XXX\n")
    (raw / "test.bak").rename(raw / "test.csv")
    with pytest.raises(MMBenchError, match=r"test.csv:1: expected '<clip>,<EMOTION>'"):
        prepare("cremad", raw, tmp_path / "data", options=SMALL["cremad"])
    (raw / "Image-01-FPS").rename(raw / "frames")
    with pytest.raises(MMBenchError, match="Image-01-FPS not found; expected layout"):
        prepare("cremad", raw, tmp_path / "data", options=SMALL["cremad"])
    with pytest.raises(MMBenchError, match="on_error=.*must be one of"):
        prepare("cremad", raw, tmp_path / "data", options={"on_error": "ignore", "frames_dir": "frames"})


def test_kinetics_sounds_class_variants_are_checked_never_silent(tmp_path):
    fixtures.kinetics_sounds(tmp_path / "raw", num_classes=34, train_per_class=2, test_per_class=1)
    with pytest.raises(MMBenchError, match=r"34 classes, expected 31 .*ARL.*num_classes=34"):
        prepare("kinetics_sounds", tmp_path / "raw", tmp_path / "data", options=SMALL["kinetics_sounds"])
    prepare("kinetics_sounds", tmp_path / "raw", tmp_path / "data",
            options={**SMALL["kinetics_sounds"], "num_classes": 34})
    meta = load_meta("kinetics_sounds", tmp_path / "data")
    assert meta.num_classes == 34 and meta.info["class_variant"] == 34


def test_kinetics_sounds_flat_layout_named_labels_and_skipped_clips(tmp_path):
    raw = tmp_path / "raw"
    manifest = fixtures.kinetics_sounds(raw, num_classes=3, train_per_class=4, test_per_class=1, layout="flat")
    names = ["playing drums", "playing flute", "chopping wood"]
    (raw / "classes.txt").write_text("\n".join(names) + "\n")
    for split in ("train", "test"):
        lines = (raw / f"my_{split}.txt").read_text().splitlines()
        (raw / f"my_{split}.txt").write_text("".join(f"{c},10,{names[int(k)]}\n" for c, _, k in
                                                     (line.split(",") for line in lines)))
    gone = manifest.ids["train"][0]
    (raw / "audio" / f"{gone}.wav").unlink()
    prepare("kinetics_sounds", raw, tmp_path / "data", options={**SMALL["kinetics_sounds"], "num_classes": 3})
    meta = load_meta("kinetics_sounds", tmp_path / "data")
    assert meta.classes == tuple(names)
    assert "audio/ + visual/" in meta.info["layout"]
    assert meta.info["skipped"]["count"] == 1 and meta.info["skipped"]["samples"][0]["id"] == gone
    assert meta.splits["train"] + meta.splits["val"] == 11


def test_ave_official_splits_duplicates_and_strict_errors(tmp_path):
    raw = tmp_path / "raw"
    manifest = fixtures.ave(raw, num_classes=4, per_split=(3, 1, 1))
    first = (raw / "trainSet.txt").read_text().splitlines()[1]
    with open(raw / "trainSet.txt", "a") as f:  # the same video holds a second event
        f.write(first.replace(first.split("&")[0], fixtures.AVE_CATEGORIES[1]) + "\n")
    options = {**SMALL["ave"], "num_classes": 4}
    prepare("ave", raw, tmp_path / "keep", options=options)
    meta = load_meta("ave", tmp_path / "keep")
    assert meta.splits == {"train": 13, "val": 4, "test": 4} and meta.classes == tuple(sorted(manifest.classes))
    vid = first.split("&")[1]
    prepare("ave", raw, tmp_path / "drop", options={**options, "duplicates": "drop"})
    meta = load_meta("ave", tmp_path / "drop")
    assert meta.splits["train"] == 11 and meta.info["duplicates"]["dropped"] == {"train": [vid]}
    with pytest.raises(MMBenchError, match=r"4 classes, expected 28"):
        prepare("ave", raw, tmp_path / "x", options=SMALL["ave"])
    for frame in (raw / "visual" / manifest.ids["test"][0]).iterdir():
        frame.unlink()
    with pytest.raises(MMBenchError, match=rf"test sample '{manifest.ids['test'][0]}': no frames"):
        prepare("ave", raw, tmp_path / "x", options=options)
    (raw / "valSet.txt").write_text("Category&VideoID&Quality&StartTime&EndTime\nonly two&fields\n")
    with pytest.raises(MMBenchError, match=r"valSet.txt:2: expected 'Category&VideoID"):
        prepare("ave", raw, tmp_path / "x", options=options)


def test_mvsa_text_vocabulary_is_built_on_train_only(tmp_path):
    raw = tmp_path / "raw"
    fixtures.mvsa_single(raw, per_split=(4, 2, 2))
    rows = [json.loads(line) for line in (raw / "test.jsonl").read_text().splitlines()]
    rows[0]["text"] = "zzzunseen words _ only in test"
    (raw / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepare("mvsa_single", raw, tmp_path / "data", options=SMALL["mvsa_single"])
    meta = load_meta("mvsa_single", tmp_path / "data")
    vocab = (tmp_path / "data" / "mvsa_single" / "text_vocab.txt").read_text().splitlines()
    assert vocab[:3] == ["<pad>", "<unk>", "_"] and "zzzunseen" not in vocab
    assert meta.modalities["text"].vocab_size == len(vocab) and meta.modalities["text"].kind == "text"
    assert meta.modalities["text"].tokens == {"pad": 0, "unk": 1, "blank": 2}
    assert meta.classes == ("negative", "neutral", "positive")
    assert "text_vocab.txt" in meta.checksums and "test/text_lengths.npy" in meta.checksums
    test = load_split("mvsa_single", "test", tmp_path / "data")
    row = test.inputs["text"][0].tolist()
    assert row[:6] == [1, 1, 2, 1, 1, 1]  # unseen words -> <unk>, "_" -> blank
    lengths = np.load(tmp_path / "data" / "mvsa_single" / "test" / "text_lengths.npy")
    assert lengths[0] == 6 and ((test.inputs["text"] != 0).sum(1).numpy() == lengths).all()


def test_text_image_store_keeps_raw_text_and_image_sizes(tmp_path):
    from PIL import Image

    from mmbench.data.textimage import load_text_source

    raw = tmp_path / "raw"
    fixtures.mvsa_single(raw, per_split=(4, 2, 3))
    rows = [json.loads(line) for line in (raw / "test.jsonl").read_text().splitlines()]
    rows[0]["text"] = "Ünïcode  two  spaces, kept #as-is"
    (raw / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepare("mvsa_single", raw, tmp_path / "data", options=SMALL["mvsa_single"])
    source = load_text_source("mvsa_single", "test", tmp_path / "data")
    assert source.texts == [r["text"] for r in rows] and source.length == SMALL["mvsa_single"]["max_tokens"]
    test = load_split("mvsa_single", "test", tmp_path / "data")
    assert np.array_equal(source.encode(source.texts), test.inputs["text"].numpy()), "the texts encode to the stored ids"
    hw = np.load(tmp_path / "data" / "mvsa_single" / "test" / "image_hw.npy")
    sizes = []
    for r in rows:
        with Image.open(raw / r["img"]) as im:
            sizes.append((im.height, im.width))
    assert hw.tolist() == [list(s) for s in sizes]


def test_text_image_run_attacked_with_the_word_level_protocols(tmp_path):
    from mmbench.attacks.runner import attack_run
    from mmbench.run import train_run

    _prepare("mvsa_single", tmp_path, per_split=(4, 1, 20))
    folder, _ = train_run(_config("mvsa_single", tmp_path))
    rows = attack_run(folder, protocol="qmf", levels=[0.0, 10.0], data_dir=str(tmp_path / "data"))
    assert {r["protocol_version"] for r in rows} == {"2024.1-faithful"}
    g10 = next(r for r in rows if r["attack"] == "gaussian" and r["level"] == 10.0)
    assert 0 < g10["hit_text"] < 1 and "field_blank" in g10["steps"]
    assert (g10["image_size"], g10["protocol_image_size"]) == ("16x16", "224x224"), "the report marks this run"
    rows = attack_run(folder, protocol="multibench", levels=[0.0, 0.9], data_dir=str(tmp_path / "data"))
    assert any(r["attack"] == "text" and r["level"] == 0.9 and r["hit_text"] > 0 for r in rows)
    meta_path = tmp_path / "data" / "mvsa_single" / "meta.json"  # a store prepared before text_raw was kept
    meta = json.loads(meta_path.read_text())
    meta["info"]["aux_arrays"].remove("text_raw")
    del meta["digest"]  # older stores carry no digest either
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(MMBenchError, match="prepared by an older mmbench.*again with --force"):
        attack_run(folder, protocol="qmf", levels=[10.0], data_dir=str(tmp_path / "data"))


def test_jsonl_errors_and_carved_val(tmp_path):
    raw = tmp_path / "raw"
    fixtures.mvsa_single(raw, per_split=(6, 1, 1))
    (raw / "dev.jsonl").unlink()
    prepare("mvsa_single", raw, tmp_path / "data", options={**SMALL["mvsa_single"], "val_fraction": 0.2})
    meta = load_meta("mvsa_single", tmp_path / "data")
    assert meta.splits["train"] + meta.splits["val"] == 18 and meta.info["split"]["val_from"] == "train"
    with open(raw / "test.jsonl", "a") as f:
        f.write('{"id": "9", "label": "angry", "text": "x", "img": "data/1.jpg"}\n')
    with pytest.raises(MMBenchError, match=r"test labels \['angry'\]"):
        prepare("mvsa_single", raw, tmp_path / "x", options=SMALL["mvsa_single"])
    with open(raw / "train.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(MMBenchError, match=r"train.jsonl:19: not a JSON object"):
        prepare("mvsa_single", raw, tmp_path / "x", options=SMALL["mvsa_single"])


def test_jsonl_missing_image_is_an_error_or_a_recorded_skip(tmp_path):
    raw = tmp_path / "raw"
    fixtures.food101(raw, num_classes=3, per_split=(2, 1, 1))
    img = json.loads((raw / "dev.jsonl").read_text().splitlines()[0])["img"]
    (raw / img).unlink()
    options = {**SMALL["food101"], "num_classes": 3}
    with pytest.raises(MMBenchError, match="missing image"):
        prepare("food101", raw, tmp_path / "x", options=options)
    prepare("food101", raw, tmp_path / "data", options={**options, "on_error": "skip"})
    meta = load_meta("food101", tmp_path / "data")
    assert meta.splits["val"] == 2 and meta.info["skipped"]["by_split"]["val"] == 1


def test_nyud2_splits_halves_and_class_check(tmp_path):
    raw = tmp_path / "raw"
    fixtures.nyud2(raw, num_classes=3, per_split=(4, 1, 2), with_val=False)
    prepare("nyud2", raw, tmp_path / "data", options={**SMALL["nyud2"], "num_classes": 3, "val_fraction": 0.25})
    meta = load_meta("nyud2", tmp_path / "data")
    assert meta.splits == {"train": 9, "val": 3, "test": 6}
    assert meta.modalities["rgb"].shape == (3, 16, 16) and meta.modalities["depth"].shape == (1, 16, 16)
    test = load_split("nyud2", "test", tmp_path / "data")
    depth = test.inputs["depth"].float()
    assert (depth[:, 0, :, -3:].mean() > depth[:, 0, :, :3].mean()), "depth is the right half (a ramp)"
    with pytest.raises(MMBenchError, match=r"3 classes, expected 10"):
        prepare("nyud2", raw, tmp_path / "x", options=SMALL["nyud2"])


def test_sun_rgbd_has_qmfs_19_classes_without_a_val_folder(tmp_path):
    manifest, meta = _prepare("sun_rgbd", tmp_path)
    assert meta.num_classes == 19 and list(meta.classes) == sorted(fixtures.SUN_RGBD_CLASSES)
    assert manifest.counts["val"] is None and not (tmp_path / "raw" / "val").exists()
    assert meta.info["split"]["val_from"] == "train" and "Song" in meta.info["citation"]
    assert meta.modalities["rgb"].shape == (3, 16, 16) and meta.modalities["depth"].shape == (1, 16, 16)
    test = load_split("sun_rgbd", "test", tmp_path / "data")
    depth = test.inputs["depth"].float()
    assert depth[:, 0, :, -3:].mean() > depth[:, 0, :, :3].mean(), "depth is the right half (a ramp)"
    raw = tmp_path / "raw10"
    fixtures.nyud2(raw, num_classes=10)  # NYUD2's 10 classes are not SUN RGB-D's 19
    with pytest.raises(MMBenchError, match=r"sun_rgbd: .*10 classes, expected 19"):
        prepare("sun_rgbd", raw, tmp_path / "x", options=SMALL["sun_rgbd"])


@pytest.mark.parametrize("dataset", ["brca", "rosmap"])
def test_mogonet_presets_name_views_and_classes(dataset, tmp_path):
    _, meta = _prepare(dataset, tmp_path, options={"val_fraction": 0.25})
    assert list(meta.modalities) == ["mRNA", "methylation", "miRNA"]
    widths = fixtures.MOGONET_WIDTHS[dataset]
    assert [s.shape[0] for s in meta.modalities.values()] == list(widths)
    expected = {"brca": ("Normal-like", "Basal-like", "HER2-enriched", "Luminal A", "Luminal B"),
                "rosmap": ("Normal Control", "Alzheimer's Disease")}[dataset]
    assert meta.classes == expected and meta.info["source"] == "https://github.com/txWang/MOGONET"


def test_mogonet_width_and_label_checks(tmp_path):
    fixtures.mogonet(tmp_path / "raw", "rosmap", widths=(200, 150, 200))
    with pytest.raises(MMBenchError, match=r"methylation .* 150 features.*check_widths=false"):
        prepare("rosmap", tmp_path / "raw", tmp_path / "data")
    prepare("rosmap", tmp_path / "raw", tmp_path / "data", options={"check_widths": False})
    np.savetxt(tmp_path / "raw" / "labels_te.csv", np.arange(20) % 3, fmt="%d")
    with pytest.raises(MMBenchError, match="labels go up to 2"):
        prepare("rosmap", tmp_path / "raw", tmp_path / "x", options={"check_widths": False})
    (tmp_path / "raw" / "2_te.csv").unlink()
    with pytest.raises(MMBenchError, match="2_te.csv not found"):
        prepare("rosmap", tmp_path / "raw", tmp_path / "x")


# ---------------------------------------------------------------------------------------
# The catalog
# ---------------------------------------------------------------------------------------

REQUIRED = ("description", "modalities", "classes", "splits", "source", "licence", "citation", "layout",
            "pitfalls", "default_encoders", "defaults", "cpu_preset", "on_error")


@pytest.mark.parametrize("name", [n for n in REAL if n != "csv_views"])
def test_catalog_entry_is_complete_and_consistent(name):
    entry = load_catalog()[name]
    missing = [k for k in REQUIRED if k not in entry]
    assert not missing, f"datasets.yaml {name}: missing {missing}"
    builder = DATASETS.get(name)
    defaults = dataclasses.asdict(builder.Options())
    for key in entry["cpu_preset"]["prepare"]:
        assert key in defaults, f"cpu_preset.prepare option {key!r} is not an option of {name}"
    kinds = {m: spec["kind"] for m, spec in entry["modalities"].items()}
    encoders = entry["defaults"].get("model", {}).get("encoders", {})
    for m, kind in kinds.items():
        assert kind in ENCODERS.get(encoders.get(m, DEFAULT_ENCODER[kind])).kinds
    cfg = resolve(flags={"data.dataset": name}, sets=entry["cpu_preset"]["train"])
    for m, enc in cfg.model.encoders.items():
        assert kinds[m] in ENCODERS.get(enc).kinds
    assert entry["embedded"] is False and "needs --root" in DATASETS.describe(name)


def test_catalog_covers_every_registered_dataset():
    catalog = load_catalog()
    assert set(DATASETS.names()) <= set(catalog)


def test_cli_prepares_a_real_dataset_and_lists_it(tmp_path):
    from typer.testing import CliRunner

    from mmbench.cli import app

    fixtures.cremad(tmp_path / "raw", train_per_class=2, test_per_class=1)
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", "cremad", "--root", str(tmp_path / "raw"), "--data-dir",
                                 str(tmp_path / "data"), "--modalities", "visual", "-o", "image_size=16",
                                 "-o", "val_fraction=0.5"])
    assert result.exit_code == 0, result.output
    assert "6 classes" in result.output and "visual video[1, 3, 16, 16]" in result.output
    meta = load_meta("cremad", tmp_path / "data")
    assert list(meta.modalities) == ["visual"] and "audio" not in meta.info["preprocessing"]
    listing = runner.invoke(app, ["list", "datasets"])
    assert all(n in listing.output for n in ("cremad", "kinetics_sounds", "nyud2", "rosmap"))
