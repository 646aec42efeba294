"""Tokenizers, all as Hugging Face ``tokenizers`` objects (saved as tokenizer.json):

- ``bpe``: byte-level BPE (GPT-2 style), trained on the training split;
- ``char``: one token per character seen in the data, plus ``[UNK]``;
- ``byte``: one token per byte (256 tokens), no training, every text round-trips;
- a path to an existing ``tokenizer.json``.

Every tokenizer a new model gets has a document separator, ``eot_id``: ``<|endoftext|>``,
added as a special token where the kind has none (char, byte, a file without an end-of-text
token; an imported model's tokenizer keeps its own ``<|endoftext|>`` / ``</s>``). A tokenizer
from before separators existed (an old char checkpoint) has none: its data is the plain text.

``encode_documents`` turns documents into the token stream training reads: each document's
ids followed by the separator (or the raw text, separators and all, without one). Char and
byte tokenizers encode through a lookup table over code points / bytes (checked once against
the library on the first text; ~100x the library's speed); the others through
``encode_batch``. Streaming decode uses the library's ``DecodeStream``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from llm_trainer.data.spec import KINDS, tokenizer_kind  # noqa: F401 - re-exported
from llm_trainer.errors import DataError

EOT = "<|endoftext|>"
EOT_NAMES = (EOT, "<|end_of_text|>", "</s>", "<eos>")  # what other tokenizers call theirs
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
    def build_char(cls, text: str, *, eot: bool = True) -> TextTokenizer:
        """One token per character of ``text`` (in code point order, after ``[UNK]``), then
        the separator (``eot``)."""
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

        vocab = {UNK: 0}
        for i, ch in enumerate(sorted(set(text))):
            vocab[ch] = i + 1
        tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        return cls(tok, "char").with_eot() if eot else cls(tok, "char")

    @classmethod
    def build_byte(cls, *, eot: bool = True) -> TextTokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
        return cls(tok, "byte").with_eot() if eot else cls(tok, "byte")

    def with_eot(self) -> TextTokenizer:
        """This tokenizer with a document separator: itself when it has one, else a copy with
        ``<|endoftext|>`` added as a special token (the last id)."""
        if self.eot_id is not None:
            return self
        from tokenizers import AddedToken

        copy = TextTokenizer.from_str(self.to_str(), self.kind)
        copy.tok.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
        return copy

    @property
    def eot_id(self) -> int | None:
        """The id that separates documents, None for a tokenizer without one."""
        if "_eot" not in self.__dict__:
            specials = {t.content for t in self.tok.get_added_tokens_decoder().values()
                        if t.special}
            found = next((self.tok.token_to_id(n) for n in EOT_NAMES if n in specials), None)
            self.__dict__["_eot"] = found
        return self.__dict__["_eot"]

    # ------------------------------------------------------------------ use
    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)

    @property
    def dtype(self) -> np.dtype:
        """The array type of its ids: uint16 when the vocabulary fits, else uint32."""
        return np.dtype(np.uint16 if self.vocab_size <= 65535 else np.uint32)

    def encode_corpus(self, text: str) -> np.ndarray:
        """The whole text as one flat array of ids (no separators: a text, not documents)."""
        return self.encode_texts(list(_chunks(text)), eot=False)

    def encode_texts(self, texts: list[str], *, eot: bool) -> np.ndarray:
        """The texts' ids as one flat array, each text followed by the separator (``eot``;
        the tokenizer must have one) or not. Texts must not split words (whole documents,
        or line-aligned pieces)."""
        return self.encode_documents(texts, eot=eot)[0]

    def encode_documents(self, texts: list[str], *, eot: bool) -> tuple[np.ndarray, list[int]]:
        """``encode_texts`` and the tokens each text became (its separator included)."""
        sep = self.eot_id if eot else None
        if eot and sep is None:
            raise ValueError("this tokenizer has no document separator")
        each = self.encode_each(texts)
        lengths = [len(a) + eot for a in each]
        if sep is not None:
            tail = np.asarray([sep], dtype=self.dtype)
            each = [a for ids in each for a in (ids, tail)]
        return (np.concatenate(each) if each else np.zeros(0, dtype=self.dtype)), lengths

    def encode_each(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's ids, as arrays of ``dtype`` (through the lookup table of a char or byte
        tokenizer, else ``encode_batch`` 256 texts at a time)."""
        table = self._table()
        if table is not None:
            return table.encode_each(texts, self)
        out: list[np.ndarray] = []
        for start in range(0, len(texts), 256):  # bounded memory for big corpora
            encs = self.tok.encode_batch(texts[start:start + 256], add_special_tokens=False)
            out.extend(np.asarray(e.ids, dtype=self.dtype) for e in encs)
        return out

    def _table(self) -> _LookupTable | None:
        """The lookup-table encoder of a char or byte tokenizer (None for other kinds, or
        when the table disagrees with the library on a probe text)."""
        if "_lut" not in self.__dict__:
            self.__dict__["_lut"] = _LookupTable.of(self)
        return self.__dict__["_lut"]

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


class _LookupTable:
    """Char / byte tokenization as one numpy lookup: ids = table[code points] (char) or
    table[UTF-8 bytes] (byte). Texts holding a special token's literal text go through the
    library, which matches those first."""

    PROBE = "Hello, world!\n\tUnicode: \u00e9\u00e8 \u4e2d\u6587 \U0001f600 [UNK] <|x|>\r\n"

    def __init__(self, table: np.ndarray, unit: str, specials: list[str]) -> None:
        self.table, self.unit, self.specials = table, unit, specials

    @classmethod
    def of(cls, tokenizer: TextTokenizer) -> _LookupTable | None:
        model = json.loads(tokenizer.tok.model.__getstate__())
        vocab = model.get("vocab") or {}
        specials = [t.content for t in tokenizer.tok.get_added_tokens_decoder().values()]
        if tokenizer.kind == "char" and model.get("type") == "WordLevel":
            unk = vocab.get(model.get("unk_token"), 0)
            table = np.full(0x110000, unk, dtype=np.uint32)
            for ch, i in vocab.items():
                if len(ch) == 1:
                    table[ord(ch)] = i
            lut = cls(table, "char", specials)
        elif tokenizer.kind == "byte" and model.get("type") == "BPE" and not model.get("merges"):
            from tokenizers import pre_tokenizers  # noqa: F401 - the alphabet's order

            table = np.zeros(256, dtype=np.uint32)
            for b, ch in enumerate(_bytes_to_unicode()):
                table[b] = vocab[ch]
            lut = cls(table, "byte", specials)
        else:
            return None
        probe = cls.PROBE + "".join(sorted(ch for ch in vocab if len(ch) == 1))[:512]
        expected = tokenizer.tok.encode(probe, add_special_tokens=False).ids
        if lut.encode_each([probe], tokenizer)[0].tolist() != expected:
            return None  # a tokenizer we did not build as we think: use the library
        return lut

    def encode_each(self, texts: list[str], tokenizer: TextTokenizer) -> list[np.ndarray]:
        dtype = tokenizer.dtype
        parts: list[np.ndarray] = []
        for text in texts:
            if any(s in text for s in self.specials):
                ids = np.asarray(tokenizer.tok.encode(text, add_special_tokens=False).ids,
                                 dtype=np.uint32)
            elif self.unit == "char":
                ids = self.table[np.frombuffer(text.encode("utf-32-le", "surrogatepass"),
                                               dtype=np.uint32)]
            else:
                ids = self.table[np.frombuffer(text.encode("utf-8", "surrogatepass"),
                                               dtype=np.uint8)]
            parts.append(ids.astype(dtype, copy=False))
        return parts


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte-to-character map (what the ByteLevel pre-tokenizer writes each byte as)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
          + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    by = dict(zip(bs, cs, strict=True))
    return [chr(by[b]) for b in range(256)]


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


