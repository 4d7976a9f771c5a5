"""Text tokenised with a Hugging Face tokenizer read from a local folder (``prepare ... -o tokenizer=FOLDER``).

:class:`HFTokenizer` has the interface of mmbench's word :class:`~mmbench.data.media.Vocabulary`
(``encode``, ``length``, ``itos`` / ``stoi``, ``special_tokens``, ``files``), so the text-image builders
and the word-level text attacks use either without knowing which. The stored ids are the tokenizer's
``input_ids`` with its special tokens (BERT: ``[CLS] ... [SEP]``), truncated and padded with its pad id
to ``max_tokens``. The tokenizer's own files are stored beside ``meta.json`` (``text_tokenizer/``), so
an attack re-encodes perturbed text exactly as ``prepare`` did, without the original folder.
"""

from __future__ import annotations

import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.checksums import files_sha256
from mmbench.errors import MMBenchError
from mmbench.hf import local_folder, transformers

STORED = "text_tokenizer"  # the folder beside meta.json holding the tokenizer's files
#: the files a tokenizer folder identifies itself by (those present are hashed into meta.json's record)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")


class HFTokenizer:
    """A ``transformers`` tokenizer (``AutoTokenizer``) with :class:`~mmbench.data.media.Vocabulary`'s interface."""

    def __init__(self, tokenizer: Any, folder: Path):
        self.tokenizer, self.folder = tokenizer, folder
        if tokenizer.pad_token_id is None:
            raise MMBenchError(f"the tokenizer in {folder} has no padding token; give a tokenizer that pads "
                               "(BERT's does)")

    @classmethod
    def load(cls, source: str | Path) -> HFTokenizer:
        """The tokenizer saved (``save_pretrained``) in the folder ``source``; one-line errors."""
        folder = local_folder(str(source), "tokenizer")
        hf = transformers()
        try:
            tokenizer = hf.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable folder is the user's to replace
            raise MMBenchError(f"tokenizer {str(source)!r} cannot be loaded ({type(e).__name__}); give a folder "
                               "written by a tokenizer's save_pretrained") from None
        return cls(tokenizer, folder)

    def __len__(self) -> int:
        return len(self.tokenizer)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def special_tokens(self) -> dict[str, int]:
        """``pad``, ``unk``, ``cls``, ``sep`` ids where the tokenizer has them, and ``blank``: the id of
        ``_`` (QMF's blanked word) when it is one known token."""
        t = self.tokenizer
        out = {k: int(v) for k, v in (("pad", t.pad_token_id), ("unk", t.unk_token_id), ("cls", t.cls_token_id),
                                      ("sep", t.sep_token_id)) if v is not None}
        blank = t.convert_tokens_to_ids(t.tokenize("_"))
        if len(blank) == 1 and blank[0] != t.unk_token_id:
            out["blank"] = int(blank[0])
        return out

    def min_length(self) -> int:
        """The shortest ``length`` that keeps one token of text beside the special tokens."""
        return self.tokenizer.num_special_tokens_to_add() + 1

    def length(self, text: str) -> int:
        """Ids ``text`` encodes to before truncation, special tokens included."""
        return len(self.tokenizer(str(text))["input_ids"])

    def encode(self, text: str, length: int) -> tuple[np.ndarray, int, bool]:
        """``(ids [length] int64 padded with the pad id, ids kept, whether it was truncated)``."""
        enc = self.tokenizer(str(text), truncation=True, max_length=length, padding="max_length")
        return (np.asarray(enc["input_ids"], dtype=np.int64), int(sum(enc["attention_mask"])),
                self.length(text) > length)

    @cached_property
    def itos(self) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(range(len(self))))

    @cached_property
    def stoi(self) -> dict[str, int]:
        return dict(self.tokenizer.get_vocab())

    def files(self) -> dict[str, bytes]:
        """The tokenizer's files as ``save_pretrained`` writes them, under :data:`STORED` (stored beside meta.json)."""
        with tempfile.TemporaryDirectory() as tmp:
            self.tokenizer.save_pretrained(tmp)
            return {f"{STORED}/{p.name}": p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}

    def record(self) -> dict[str, Any]:
        """Which tokenizer: its folder's name, class, and the SHA-256 of its own tokenizer files."""
        names = [n for n in TOKENIZER_FILES if (self.folder / n).is_file()]
        return {"name": self.folder.resolve().name, "class": type(self.tokenizer).__name__,
                "sha256": files_sha256(self.folder, names), "files": names,
                "transformers": transformers().__version__}
