"""Tokenizers, all as Hugging Face ``tokenizers`` objects (saved as tokenizer.json):

- ``bpe``: byte-level BPE (GPT-2 style), trained on the training split;
- ``char``: one token per character seen in the data, plus ``[UNK]``;
- ``byte``: one token per byte (256 tokens), no training, every text round-trips;
- a path to an existing ``tokenizer.json``.

A flat token array is built with ``encode_corpus`` (batched, in parallel, in line-aligned
chunks); streaming decode uses the library's ``DecodeStream``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from llm_trainer.errors import DataError

KINDS = ("bpe", "char", "byte")
EOT = "<|endoftext|>"
UNK = "[UNK]"
CHUNK_CHARS = 1 << 16


class TextTokenizer:
    def __init__(self, tok, kind: str) -> None:
        self.tok = tok
        self.kind = kind

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_file(cls, path: Path, kind: str = "file") -> TextTokenizer:
        from tokenizers import Tokenizer

        if not Path(path).is_file():
            raise DataError(f"tokenizer file not found: {path}",
                            hint="data.tokenizer is bpe, char, byte or a path to tokenizer.json")
        try:
            return cls(Tokenizer.from_file(str(path)), kind)
        except Exception as exc:
            raise DataError(f"{path} is not a tokenizer.json the tokenizers library can load: "
                            f"{str(exc).splitlines()[0] if str(exc) else exc}") from None

    @classmethod
    def from_str(cls, text: str, kind: str) -> TextTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(text), kind)

    @classmethod
    def train_bpe(cls, text: str, vocab_size: int) -> TextTokenizer:
        return cls.train_bpe_from(_chunks(text), vocab_size)

    @classmethod
    def train_bpe_from(cls, pieces, vocab_size: int) -> TextTokenizer:
        """A byte-level BPE trained on an iterable of text pieces (streamed: the text need
        not be in memory at once; pieces must not split words)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(pieces, trainer=trainer, length=None)
        return cls(tok, "bpe")

    @classmethod
    def build_char(cls, text: str) -> TextTokenizer:
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

        vocab = {UNK: 0}
        for i, ch in enumerate(sorted(set(text))):
            vocab[ch] = i + 1
        tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        return cls(tok, "char")

    @classmethod
    def build_byte(cls) -> TextTokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
        return cls(tok, "byte")

    # ------------------------------------------------------------------ use
    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def encode_corpus(self, text: str) -> np.ndarray:
        """The whole text as one flat array of ids (uint16 when the vocabulary fits)."""
        dtype = np.uint16 if self.vocab_size <= 65535 else np.uint32
        chunks = list(_chunks(text))
        out: list[np.ndarray] = []
        for start in range(0, len(chunks), 256):  # bounded memory for big corpora
            encs = self.tok.encode_batch(chunks[start:start + 256], add_special_tokens=False)
            out.extend(np.asarray(e.ids, dtype=dtype) for e in encs)
        return np.concatenate(out) if out else np.zeros(0, dtype=dtype)

    def decode_stream(self):
        """An object whose ``step(token_id)`` returns the next complete text piece or None."""
        from tokenizers.decoders import DecodeStream

        stream = DecodeStream(skip_special_tokens=False)
        tok = self.tok

        class _Step:
            @staticmethod
            def step(token_id: int) -> str | None:
                return stream.step(tok, int(token_id))

        return _Step()

    def to_str(self) -> str:
        return self.tok.to_str()

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_str(), encoding="utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_str().encode()).hexdigest()


def _chunks(text: str, size: int = CHUNK_CHARS):
    """Line-aligned pieces of about ``size`` characters (lines are never split, so the
    byte-level pre-tokenizer sees the same words as in the whole text)."""
    start, n = 0, len(text)
    while start < n:
        end = min(n, start + size)
        if end < n:
            nl = text.find("\n", end)
            end = n if nl < 0 else nl + 1
        yield text[start:end]
        start = end


def tokenizer_kind(spec: str) -> str:
    return spec if spec in KINDS else "file"
