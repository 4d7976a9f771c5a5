"""Hugging Face text models (the ``bert`` encoder) and tokenizers (``prepare ... -o tokenizer=FOLDER``).

Nothing downloads: a tiny BERT (hidden 32, 2 layers, 2 heads) and a word-piece vocabulary written here
are saved with ``save_pretrained`` into a temporary folder and read back with ``local_files_only``.
"""

import json
import sys

import pytest
import torch

from mmbench.attacks.text import field_blank
from mmbench.config import ModelConfig
from mmbench.data import fixtures
from mmbench.data.fixtures import _WORDS, FOOD101_EXAMPLES
from mmbench.data.hf_tokenizer import HFTokenizer
from mmbench.data.store import load_meta, load_split
from mmbench.data.textimage import TextSource, load_text_source
from mmbench.data.types import ModalitySpec
from mmbench.models.multimodal import build_encoder
from mmbench.models.pretrained import innermost
from mmbench.registry import ATTACKS
from tests.cli_helpers import assert_one_line_error, run_cli

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "_"]
PIECES = ["!", ".", "#", "tag", "food", "pie", "##s", "##ing", "##e", "0", "1", "2", "3"]
TINY = ["--set", "model.encoders.image=cnn", "--set", "model.hidden_dim=16", "--set", "model.feature_dim=8",
        "--set", "optim.batch_size=16", "--set", "output.probe=false"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny BERT and its tokenizer, saved together as ``save_pretrained`` writes them."""
    hf = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hf")
    words = [w for label in FOOD101_EXAMPLES for w in label.split("_")] + list(_WORDS) + PIECES
    (root / "vocab").mkdir()
    (root / "vocab" / "vocab.txt").write_text("".join(f"{w}\n" for w in dict.fromkeys(SPECIALS + words)))
    out = root / "tiny-bert"
    hf.BertTokenizer.from_pretrained(str(root / "vocab"), local_files_only=True).save_pretrained(str(out))
    torch.manual_seed(0)
    config = hf.BertConfig(vocab_size=len(SPECIALS) + len(words), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    hf.BertModel(config).save_pretrained(str(out))
    return out


def _tokenizer(folder):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _spec(folder, length=10):
    tok = _tokenizer(folder)
    return ModalitySpec("text", "text", (length,), "int64", vocab_size=len(tok), tokens={"pad": tok.pad_token_id})


def _encoder(folder, source=None):
    cfg = ModelConfig(feature_dim=8, dropout=0.0, pretrained={"text": str(source or folder)})
    return innermost(build_encoder(_spec(folder), "bert", cfg)).eval()


def test_features_are_the_models_own_pooled_output_with_padding_masked(folder):
    import transformers

    reference = transformers.BertModel.from_pretrained(str(folder), local_files_only=True).eval()
    tok = _tokenizer(folder)
    texts = ["the apple pie today", "my new photo of baklava with yogurt !", "love"]
    enc = tok(texts, truncation=True, max_length=10, padding="max_length", return_tensors="pt")
    encoder = _encoder(folder)
    with torch.no_grad():
        ours = encoder.features(enc["input_ids"])
        theirs = reference(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
        assert torch.allclose(ours, theirs, atol=1e-5)
        unmasked = reference(input_ids=enc["input_ids"]).pooler_output  # padding attended: a different output
        assert not torch.allclose(ours[2], unmasked[2], atol=1e-4)
        out = encoder(enc["input_ids"])
    assert out.shape == (3, 8) and (out >= 0).all()  # projection to feature_dim + ReLU


def test_the_folder_gives_the_saved_weights_and_config_alone_gives_random_ones(folder, tmp_path):
    import transformers

    saved = transformers.BertModel.from_pretrained(str(folder), local_files_only=True).state_dict()
    loaded = _encoder(folder).model.state_dict()
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "config.json").write_text((folder / "config.json").read_text())
    torch.manual_seed(3)
    fresh = _encoder(folder, tmp_path / "config-only").model.state_dict()
    assert fresh.keys() == saved.keys()
    assert not torch.equal(fresh["embeddings.word_embeddings.weight"], saved["embeddings.word_embeddings.weight"])
    torch.manual_seed(3)
    again = _encoder(folder, tmp_path / "config-only").model.state_dict()
    assert all(torch.equal(fresh[k], again[k]) for k in fresh)  # random init follows the seed


def _prepare(monkeypatch, capsys, folder, tmp_path, *extra):
    fixtures.food101(tmp_path / "raw", num_classes=3, per_split=(3, 1, 2))
    return run_cli(monkeypatch, capsys, "prepare", "food101", "--root", str(tmp_path / "raw"), "--data-dir",
                   str(tmp_path / "data"), "-o", "num_classes=3", "-o", "image_size=16", "-o", "max_tokens=12",
                   "-o", f"tokenizer={folder}", *extra)


def test_prepare_stores_the_tokenizers_ids_and_records_which_tokenizer(monkeypatch, capsys, folder, tmp_path):
    code, err = _prepare(monkeypatch, capsys, folder, tmp_path)
    assert code == 0, err
    tok = _tokenizer(folder)
    rows = [json.loads(line) for line in (tmp_path / "raw" / "test.jsonl").read_text().splitlines()]
    expected = tok([r["text"] for r in rows], truncation=True, max_length=12, padding="max_length")["input_ids"]
    test = load_split("food101", "test", tmp_path / "data")
    assert test.inputs["text"].tolist() == expected
    assert (test.inputs["text"][:, 0] == tok.cls_token_id).all()
    meta = load_meta("food101", tmp_path / "data")
    spec = meta.modalities["text"]
    assert spec.vocab_size == len(tok) and spec.tokens["pad"] == tok.pad_token_id
    assert spec.tokens["blank"] == tok.convert_tokens_to_ids("_") and spec.tokens["cls"] == tok.cls_token_id
    record = meta.info["preprocessing"]["text"]["tokenizer"]
    assert record["name"] == "tiny-bert" and "tokenizer.json" in record["files"] and len(record["sha256"]) == 64
    source = load_text_source("food101", "test", tmp_path / "data")  # from the files stored beside meta.json
    assert isinstance(source.vocab, HFTokenizer) and source.encode(source.texts).tolist() == expected


def test_text_attacks_re_encode_through_the_tokenizer_and_keep_its_special_tokens(folder):
    tok = HFTokenizer.load(folder)
    texts = ["the apple pie", "love my new photo"]
    source = TextSource(tok, 10, texts)
    x = torch.from_numpy(source.encode(texts))
    spec = ModalitySpec("text", "text", (10,), "int64", vocab_size=len(tok), tokens=tok.special_tokens)
    out = field_blank(x, 1.0, torch.Generator().manual_seed(0), spec, source=source)
    expected = _tokenizer(folder)(["_ _ _", "_ _ _ _"], max_length=10, padding="max_length")["input_ids"]
    assert out.tolist() == expected
    blanked = ATTACKS.get("token_blank")(x, 1.0, torch.Generator().manual_seed(0), spec)
    specials = (x == tok.pad_id) | (x == tok.special_tokens["cls"]) | (x == tok.special_tokens["sep"])
    assert torch.equal(blanked[specials], x[specials]) and (blanked[~specials] == spec.tokens["blank"]).all()


def test_bert_trains_on_food101_and_the_qmf_protocol_blanks_its_text(monkeypatch, capsys, folder, tmp_path):
    assert _prepare(monkeypatch, capsys, folder, tmp_path)[0] == 0
    dirs = ["--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results")]
    code, err = run_cli(monkeypatch, capsys, "train", "--dataset", "food101", "--epochs", "1", *dirs, *TINY,
                        "--set", "model.encoders.text=bert", "--set", f"model.pretrained.text={folder}")
    assert code == 0, err
    run = next((tmp_path / "results").glob("runs/*"))
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["pretrained_sha256"]["text"]) == 64
    code, err = run_cli(monkeypatch, capsys, "attack", str(run), "--protocol", "qmf", "--levels", "0,10", *dirs)
    assert code == 0, err
    import pandas as pd

    rows = pd.read_csv(run / "attack.csv")
    hit = rows[(rows["level"] == 10) & rows["steps"].str.contains("field_blank", na=False)]
    assert len(hit) and (hit["hit_text"] > 0).all()


def test_bad_tokenizer_folders_are_one_line_errors(monkeypatch, capsys, folder, tmp_path):
    code, err = _prepare(monkeypatch, capsys, tmp_path / "missing", tmp_path)
    assert_one_line_error(code, err, "tokenizer", "is not a folder")
    (tmp_path / "empty").mkdir()
    code, err = _prepare(monkeypatch, capsys, tmp_path / "empty", tmp_path, "--force")
    assert_one_line_error(code, err, "cannot be loaded", "save_pretrained")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    code, err = _prepare(monkeypatch, capsys, folder, tmp_path, "--force")
    assert_one_line_error(code, err, "pip install 'mmbench[hf]'")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("pretrained, fragments", [
    (None, ["'bert' is built from a folder", "model.pretrained"]),
    ("missing", ["is not a folder"]),
    ("no-config", ["has no config.json"]),
    ("no-transformers", ["pip install 'mmbench[hf]'"]),
])
def test_bad_bert_settings_are_one_line_errors(monkeypatch, capsys, folder, tmp_path, pretrained, fragments):
    assert _prepare(monkeypatch, capsys, folder, tmp_path)[0] == 0
    (tmp_path / "no-config").mkdir()
    source = {"no-transformers": folder, None: None}.get(pretrained, tmp_path / str(pretrained))
    if pretrained == "no-transformers":
        monkeypatch.setitem(sys.modules, "transformers", None)
    sets = ["--set", "model.encoders.text=bert"] + (["--set", f"model.pretrained.text={source}"] if source else [])
    code, err = run_cli(monkeypatch, capsys, "train", "--dataset", "food101", "--epochs", "1", "--data-dir",
                        str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"), *TINY, *sets)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "results").exists()


def test_the_word_vocabulary_is_unchanged_without_a_tokenizer(tmp_path):
    from mmbench.data.store import prepare

    fixtures.food101(tmp_path / "raw", num_classes=3, per_split=(3, 1, 2))
    prepare("food101", tmp_path / "raw", tmp_path / "data", options={"num_classes": 3, "image_size": 16})
    meta = load_meta("food101", tmp_path / "data")
    assert meta.modalities["text"].tokens == {"pad": 0, "unk": 1, "blank": 2}
    assert (tmp_path / "data" / "food101" / "text_vocab.txt").is_file()
    assert not (tmp_path / "data" / "food101" / "text_tokenizer").exists()
