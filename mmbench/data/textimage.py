"""Image + text datasets in the MMBT / QMF jsonl layout: MVSA-Single and UPMC Food-101.

Raw layout (QMF's ``datasets/<task>/``): ``train.jsonl``, ``dev.jsonl``, ``test.jsonl`` with one JSON
object per line, ``{"id", "label", "text", "img"}``, where ``img`` is the image path relative to the
folder of the jsonl files. ``prepare`` stores

- ``image``: uint8 RGB ``[3, S, S]`` (kind ``image``); by default the shorter side is resized to
  ``S / 0.875`` and the centre ``S x S`` kept, QMF's Resize(256) + CenterCrop(224) at ``S = 224``
  (the default: QMF's published resolution; ``--preset cpu`` stores 32 x 32 for CPU work);
- ``text``: token ids ``[max_tokens]`` int64, 0 = padding (kind ``text``), with ``text_lengths``
  (tokens kept per sample) as an auxiliary array, and the vocabulary in ``text_vocab.txt``
  (one token per line, line number = id). The vocabulary is built on the training split only:
  0 ``<pad>``, 1 ``<unk>``, 2 ``_`` (the blank QMF's text-blanking noise writes), then words with at
  least ``min_freq`` occurrences by decreasing frequency, at most ``max_vocab`` ids. QMF uses the
  BERT word-piece vocabulary: ``tokenizer=FOLDER`` (a Hugging Face tokenizer saved with
  ``save_pretrained``; needs ``mmbench[hf]``) stores that tokenizer's ids instead
  (:mod:`mmbench.data.hf_tokenizer`: ``[CLS] ... [SEP]``, padded with its pad id, its files in
  ``text_tokenizer/``), for the ``bert`` encoder;
- auxiliary arrays for the noise protocols (not model inputs): ``text_raw``, the raw text as
  UTF-8 bytes (uint8 ``[max_text_bytes]``, zero-padded), so that text noise defined on the raw
  string (QMF's whitespace-field blanking) is exact, and ``image_hw``, each image file's own
  ``(height, width)`` before resizing.

Classes are the sorted label names (QMF takes them in order of first appearance in train.jsonl).
``dev.jsonl`` is the validation split; without it a stratified one is carved from train.
A missing or unreadable image stops the preparation (``on_error=error``, the default) or is skipped
and recorded in ``meta.json`` (``on_error=skip``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.base import (
    DatasetBuilder,
    Prepared,
    RawSample,
    check_choice,
    check_class_count,
    ensure_val_samples,
    select_modalities,
    stream,
)
from mmbench.data.hf_tokenizer import STORED, HFTokenizer
from mmbench.data.media import CROP_FRACTION, Vocabulary, image_size, load_image, pack_text
from mmbench.errors import MMBenchError
from mmbench.registry import DATASETS

MODALITIES = ("image", "text")
JSONL_LAYOUT = ("ROOT/train.jsonl, ROOT/dev.jsonl (optional), ROOT/test.jsonl: one "
                '{"id", "label", "text", "img"} object per line, img relative to ROOT')


@dataclass
class TextImageOptions:
    image_size: int = 224  # images stored as image_size x image_size (QMF's published setting)
    resize: str = "crop"  # crop: shorter side to size/0.875, centre crop (QMF); stretch: resize to size x size
    max_tokens: int = 64  # tokens kept per text (longer texts are truncated; the share is recorded)
    max_text_bytes: int = 4096  # raw text kept for the noise protocols (UTF-8 bytes; longer texts are cut)
    min_freq: int = 1  # words seen fewer times in train map to <unk>
    max_vocab: int = 20000  # ids, including <pad>, <unk> and _
    tokenizer: str = ""  # a Hugging Face tokenizer folder (save_pretrained); empty: mmbench's word vocabulary
    val_fraction: float = 0.1  # only without dev.jsonl
    seed: int = 0
    on_error: str = "error"  # error or skip (and record) on a missing / unreadable image


class JsonlTextImageDataset(DatasetBuilder):
    """Shared pipeline for the MMBT/QMF jsonl layout."""

    Options = TextImageOptions
    source = ""
    citation = ""
    fixed_classes: tuple[str, ...] | None = None

    def expected_classes(self) -> int:
        return 0

    def build(self, root: Path | None, modalities: list[str] | None) -> Prepared:
        assert root is not None
        o = self.options
        mods = select_modalities(self.registry_name, modalities, MODALITIES)
        check_choice("on_error", o.on_error, ("error", "skip"))
        check_choice("resize", o.resize, ("crop", "stretch"))
        if o.image_size < 8 or o.max_tokens < 1 or o.max_vocab < 4 or o.min_freq < 1 or o.max_text_bytes < 1:
            raise MMBenchError("options need image_size >= 8, max_tokens >= 1, max_vocab >= 4, min_freq >= 1 "
                               "and max_text_bytes >= 1")
        tokenizer = HFTokenizer.load(o.tokenizer) if o.tokenizer and "text" in mods else None
        if tokenizer is not None and o.max_tokens < tokenizer.min_length():
            raise MMBenchError(f"option max_tokens must be at least {tokenizer.min_length()} with this tokenizer "
                               "(its special tokens and one token of text)")
        records = {}
        for split, name in (("train", "train.jsonl"), ("val", "dev.jsonl"), ("test", "test.jsonl")):
            path = root / name
            if path.is_file():
                records[split] = _read_jsonl(path)
            elif split != "val":
                raise MMBenchError(f"{self.registry_name}: {path} not found; expected layout: {JSONL_LAYOUT}")
        classes = list(self.fixed_classes) if self.fixed_classes else sorted({r["label"] for r in records["train"]})
        check_class_count(self.registry_name, classes, self.expected_classes())
        samples = {}
        for split, rows in records.items():
            unknown = sorted({r["label"] for r in rows} - set(classes))
            if unknown:
                raise MMBenchError(f"{self.registry_name}: {split} labels {unknown[:3]} are not among the classes "
                                   f"{', '.join(classes[:6])}{'...' if len(classes) > 6 else ''}")
            samples[split] = [RawSample(str(r["id"]), classes.index(r["label"]),
                                        {"image": root / r["img"], "text": r["text"]}) for r in rows]
        source = ("train.jsonl / dev.jsonl / test.jsonl (MMBT/QMF)" if "val" in samples
                  else "train.jsonl / test.jsonl; val carved from train")
        split_record = {**ensure_val_samples(samples, o.val_fraction, o.seed), "source_splits": source}
        if "text" in mods:
            vocab = tokenizer or Vocabulary.build((r.source["text"] for r in samples["train"]), o.min_freq, o.max_vocab)
            truncated = {s: sum(vocab.length(r.source["text"]) > o.max_tokens for r in rows)
                         for s, rows in samples.items()}
            cut = {s: sum(len(str(r.source["text"]).encode("utf-8")) > o.max_text_bytes for r in rows)
                   for s, rows in samples.items()}
        layout: dict[str, tuple[tuple[int, ...], str]] = {}
        if "image" in mods:
            layout["image"] = ((3, o.image_size, o.image_size), "uint8")
            layout["image_hw"] = ((2,), "int64")
        if "text" in mods:
            layout["text"] = ((o.max_tokens,), "int64")
            layout["text_lengths"] = ((), "int64")
            layout["text_raw"] = ((o.max_text_bytes,), "uint8")

        def load(sample: RawSample) -> dict[str, np.ndarray]:
            out = {}
            if "image" in layout:
                out["image"] = load_image(sample.source["image"], o.image_size, "RGB", o.resize)
                out["image_hw"] = np.array(image_size(sample.source["image"]), dtype=np.int64)
            if "text" in layout:
                ids, length, _ = vocab.encode(sample.source["text"], o.max_tokens)
                out["text"], out["text_lengths"] = ids, np.int64(length)
                out["text_raw"] = pack_text(sample.source["text"], o.max_text_bytes)[0]
            return out

        preprocessing: dict[str, Any] = {}
        if "image" in mods:
            preprocessing["image"] = {
                "size": [o.image_size, o.image_size], "dtype": "uint8, 0-255 RGB",
                "resize": (f"shorter side to size/{CROP_FRACTION:.3f}, centre crop (Resize(256)+CenterCrop(224) "
                           "at 224)" if o.resize == "crop" else "stretch to size x size") + ", bilinear",
                "normalisation": "inside the model: (x - train mean) / train std",
                "image_hw": "image_hw.npy per split: each file's own (height, width) before resizing"}
        if "text" in mods:
            preprocessing["text"] = {
                "tokenizer": "lower-cased words and punctuation (regex \\w+|[^\\w\\s])",
                "vocabulary": "train split only", "min_freq": o.min_freq, "max_vocab": o.max_vocab,
                "blank_token": "_ (QMF's text-blanking word)", "vocab_file": Vocabulary.FILE,
            } if tokenizer is None else {
                "tokenizer": tokenizer.record(), "ids": "the tokenizer's input_ids with its special tokens, "
                "truncated to max_tokens and padded with its pad id", "tokenizer_files": f"{STORED}/"}
            preprocessing["text"].update({
                "vocab_size": len(vocab), "max_tokens": o.max_tokens, "special_tokens": vocab.special_tokens,
                "truncated_texts": truncated, "lengths": "text_lengths.npy per split (tokens kept)",
                "raw_text": "text_raw.npy per split: UTF-8 bytes, zero-padded", "max_text_bytes": o.max_text_bytes,
                "cut_raw_texts": cut})
        info = {"source": self.source, "citation": self.citation, "split": split_record, "layout": JSONL_LAYOUT,
                "preprocessing": preprocessing, "on_error": o.on_error}
        if "text" in mods:
            info["text"] = {"special_tokens": vocab.special_tokens,
                            **({"vocab_file": Vocabulary.FILE} if tokenizer is None else {"tokenizer_dir": STORED})}
        return Prepared({s: stream(samples[s], load) for s in ("train", "val", "test")}, classes,
                        {m: m for m in mods}, info, layout,
                        vocab_sizes={"text": len(vocab)} if "text" in mods else {},
                        tokens={"text": dict(vocab.special_tokens)} if "text" in mods else {},
                        files=vocab.files() if "text" in mods else {},
                        skip_unreadable=o.on_error == "skip")


@dataclass
class TextSource:
    """What text noise defined on words needs beside the token ids: the vocabulary (mmbench's words or a
    Hugging Face tokenizer, one interface), the stored length, and (when the store kept them) the raw
    texts and each sample's image file size ``(height, width)``, in the order of the split's samples."""

    vocab: Vocabulary | HFTokenizer
    length: int
    texts: list[str] | None = None
    image_hw: np.ndarray | None = None

    def take(self, idx: Any) -> TextSource:
        """The samples at positions ``idx`` (a tensor, list or None for all)."""
        if idx is None:
            return self
        rows = idx.tolist() if hasattr(idx, "tolist") else list(idx)
        return TextSource(self.vocab, self.length, None if self.texts is None else [self.texts[i] for i in rows],
                          None if self.image_hw is None else self.image_hw[rows])

    def encode(self, texts: list[str]) -> np.ndarray:
        """Token ids ``[len(texts), length]`` as ``prepare`` encodes them."""
        return np.stack([self.vocab.encode(t, self.length)[0] for t in texts]) if texts else \
            np.zeros((0, self.length), dtype=np.int64)


def load_text_source(name: str, split: str, data_dir: Any = None) -> TextSource | None:
    """The ``text`` modality's :class:`TextSource` of a prepared dataset; None without a vocabulary."""
    from mmbench.data.media import unpack_text
    from mmbench.data.store import load_aux, load_meta, read_file, stored_folder

    meta = load_meta(name, data_dir)
    spec = meta.modalities.get("text")
    if meta.info.get("text", {}).get("tokenizer_dir") == STORED:
        vocab: Vocabulary | HFTokenizer | None = HFTokenizer.load(stored_folder(name, STORED, data_dir))
    else:
        words = read_file(name, Vocabulary.FILE, data_dir)
        vocab = None if words is None else Vocabulary.from_text(words)
    if vocab is None or spec is None:
        return None
    raw = load_aux(name, split, "text_raw", data_dir)
    texts = None if raw is None else [unpack_text(row) for row in raw]
    return TextSource(vocab, int(spec.shape[0]), texts, load_aux(name, split, "image_hw", data_dir))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MMBenchError(f"{path}:{line_no}: not a JSON object ({e.msg})") from None
            missing = [k for k in ("id", "label", "text", "img") if not isinstance(row, dict) or k not in row]
            if missing:
                raise MMBenchError(f"{path}:{line_no}: missing {', '.join(missing)}; each line needs "
                                   '{"id", "label", "text", "img"}')
            if not isinstance(row["label"], str):
                raise MMBenchError(f"{path}:{line_no}: label must be a class name (one label per sample)")
            rows.append(row)
    if not rows:
        raise MMBenchError(f"{path} holds no samples")
    return rows


@DATASETS.register("mvsa_single")
class MvsaSingleDataset(JsonlTextImageDataset):
    """MVSA-Single: tweet image + text sentiment, 3 classes, MMBT/QMF jsonl splits (needs --root)."""

    source = ("https://mcrlab.net/research/mvsa-sentiment-analysis-on-multi-view-social-data/ (data); "
              "splits: https://github.com/QingyangZhang/QMF (datasets/MVSA_Single/*.jsonl)")
    citation = ("Niu, T., Zhu, S., Pang, L. & El Saddik, A. (2016). Sentiment Analysis on Multi-View Social "
                "Data. MultiMedia Modeling (MMM).")
    fixed_classes = ("negative", "neutral", "positive")


@DATASETS.register("food101")
class Food101Dataset(JsonlTextImageDataset):
    """UPMC Food-101: recipe web-page image + text, 101 classes, MMBT/QMF jsonl splits (needs --root)."""

    source = ("https://visiir.isir.upmc.fr/ (UPMC Food-101); splits: https://github.com/QingyangZhang/QMF "
              "(datasets/food101/*.jsonl, from MMBT)")
    citation = ("Wang, X., Kumar, D., Thome, N., Cord, M. & Precioso, F. (2015). Recipe recognition with "
                "large multimodal food dataset. ICME Workshops.")

    @dataclass
    class Options(TextImageOptions):
        num_classes: int = 101  # 0 = accept any count

    def expected_classes(self) -> int:
        return self.options.num_classes
