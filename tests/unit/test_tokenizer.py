import pytest

from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.errors import DataError
from tests.helpers import corpus_text

TEXT = corpus_text(20_000) + "\nUnicode: café, naïve, 日本語, emoji 🙂, tab\tend.\n"


@pytest.fixture(scope="module")
def tokenizers():
    return {"bpe": TextTokenizer.train_bpe(TEXT, 400), "char": TextTokenizer.build_char(TEXT),
            "byte": TextTokenizer.build_byte()}


@pytest.mark.parametrize("kind", ["bpe", "char", "byte"])
def test_round_trip(tokenizers, kind):
    tok = tokenizers[kind]
    sample = "The man said: café 🙂!\n\n  two spaces\ttab"
    assert tok.decode(tok.encode(sample)) == sample
    assert tok.decode(tok.encode_corpus(TEXT).tolist()) == TEXT


def test_vocab_sizes(tokenizers):
    assert tokenizers["byte"].vocab_size == 256 + 1  # + the separator
    assert tokenizers["bpe"].vocab_size == 400  # its separator is one of the 400
    assert tokenizers["char"].vocab_size == len(set(TEXT)) + 2  # + [UNK] and the separator
    assert {k: t.eot_id for k, t in tokenizers.items()} == {
        "byte": 256, "bpe": 0, "char": len(set(TEXT)) + 1}


def test_char_unknown_characters_map_to_unk(tokenizers):
    tok = tokenizers["char"]
    assert tok.encode("Ж") == [0]


def test_encode_corpus_matches_plain_encode_for_char(tokenizers):
    tok = tokenizers["char"]
    assert tok.encode_corpus(TEXT).tolist() == tok.encode(TEXT)


@pytest.mark.parametrize("kind", ["bpe", "byte"])
def test_streaming_decode_never_splits_a_character(tokenizers, kind):
    tok = tokenizers[kind]
    sample = "日本語 🙂 café"
    stream = tok.decode_stream()
    pieces = [p for p in (stream.step(i) for i in tok.encode(sample)) if p]
    assert "".join(pieces) == sample
    assert all("\ufffd" not in p for p in pieces)


def test_tokenizer_file_round_trip(tmp_path, tokenizers):
    path = tmp_path / "tokenizer.json"
    tokenizers["bpe"].save(path)
    loaded = TextTokenizer.from_file(path)
    assert loaded.encode("the water") == tokenizers["bpe"].encode("the water")
    assert loaded.sha256 == tokenizers["bpe"].sha256


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        TextTokenizer.from_file(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="not a tokenizer.json"):
        TextTokenizer.from_file(broken)
