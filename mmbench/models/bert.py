"""Hugging Face text encoders (``bert``): a ``transformers`` ``AutoModel`` read from a local folder.

``model.pretrained.<text modality>`` names a folder written by ``save_pretrained``: ``config.json`` and
the weights (``model.safetensors`` or ``pytorch_model.bin``) load the pretrained model; ``config.json``
alone builds the architecture it describes with random weights (``AutoModel.from_config``). Nothing
is downloaded (``local_files_only=True``). The text must be token ids of the model's own tokenizer
(``mmbench prepare food101 -o tokenizer=FOLDER``).

The feature is the model's pooled output, as QMF's text-image code takes it
(QingyangZhang/QMF@fe6c4c6, ``text-image-classification/src/models/bert.py``: ``_, out = self.bert(txt,
token_type_ids=segment, attention_mask=mask)``, BERT's pooler, ``tanh(W h_[CLS] + b)``); a model without a
pooler gives its first token's last hidden state. Padding (the modality's pad id) is masked out of
attention, every token has segment 0 (one text: the model's default), and the usual dropout + projection to
``model.feature_dim`` + ReLU follows, as in mmbench's other encoders.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mmbench.errors import MMBenchError
from mmbench.hf import transformers
from mmbench.registry import ENCODERS

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def load_model(folder: Path) -> nn.Module:
    """``AutoModel`` from ``folder``: its weights when it has them, else random ones from its ``config.json``."""
    hf = transformers()
    try:
        if any((folder / name).is_file() for name in WEIGHT_FILES):
            return hf.AutoModel.from_pretrained(str(folder), local_files_only=True)
        return hf.AutoModel.from_config(hf.AutoConfig.from_pretrained(str(folder), local_files_only=True))
    except Exception as e:  # noqa: BLE001 - any unreadable folder is the user's to replace
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise MMBenchError(f"model.pretrained folder {str(folder)!r} cannot be loaded ({reason}); give a folder "
                           "written by a transformers model's save_pretrained") from None


@ENCODERS.register("bert")
class BertEncoder(nn.Module):
    """Hugging Face text model (BERT) from a local folder (model.pretrained): pooled output, projection."""

    kinds = ("text",)
    #: ``model.pretrained`` names a ``save_pretrained`` folder (config.json; weights optional), not a file
    loads_folder = True

    def __init__(self, input_shape: tuple[int, ...], feature_dim: int, hidden_dim: int, depth: int, dropout: float,
                 vocab_size: int = 0, pad_id: int = 0, folder: Path | None = None):
        super().__init__()
        if folder is None:
            raise ValueError("bert needs the folder model.pretrained names")
        self.model = load_model(Path(folder))
        config = self.model.config
        if vocab_size > config.vocab_size:
            raise MMBenchError(f"the text has {vocab_size} token ids but the model in {folder} knows "
                               f"{config.vocab_size}; prepare the dataset with -o tokenizer=<this model's tokenizer>")
        if input_shape[0] > getattr(config, "max_position_embeddings", input_shape[0]):
            raise MMBenchError(f"the text has {input_shape[0]} tokens but the model in {folder} takes at most "
                               f"{config.max_position_embeddings}; prepare the dataset with a smaller max_tokens")
        self.pad_id = pad_id
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(config.hidden_size, feature_dim), nn.ReLU())
        self.out_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The model's pooled output (its first token's last hidden state without a pooler) ``[B, hidden]``."""
        x = x.long()
        out = self.model(input_ids=x, attention_mask=(x != self.pad_id).long())  # segments: the default 0
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @staticmethod
    def example_folder(folder: Path) -> Path:
        """A tiny BERT architecture (``config.json`` only) in ``folder``, for the conformance checks."""
        hf = transformers()
        hf.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32).save_pretrained(str(folder))
        return folder
