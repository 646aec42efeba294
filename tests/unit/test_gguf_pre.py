"""``tokenizer.ggml.pre`` is chosen as llama.cpp's convert_hf_to_gguf.py chooses it: the
SHA-256 of the ids a tokenizer gives a fixed text, computed here as the converter computes it
(transformers' AutoTokenizer over the saved folder) and looked up among the hashes llama.cpp
knows. Our own GPT-2 shaped tokenizers stay ``gpt-2``; a Qwen2 or SmolLM style tokenizer
llama.cpp was never shown is refused in one line naming its hash, as the converter refuses
it."""

from __future__ import annotations

import hashlib
import json

import pytest
from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from llm_trainer.data.tokenizer import EOT, TextTokenizer
from llm_trainer.errors import UsageError
from llm_trainer.inference.gguf_export import gguf_vocab
from llm_trainer.inference.gguf_pre import CHECK_TEXT, KNOWN, check_hash
from tests.helpers import corpus_text

# Qwen2's tokenizer.json: Split on this regex (isolated), then ByteLevel without its own regex
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def trained(pre, normalizer=None, *, bos: bool = False, truncate: bool = False) -> TextTokenizer:
    """A small byte-level BPE with ``pre`` as its pre-tokenizer, trained on our test corpus,
    as an imported tokenizer.json (kind "file")."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([corpus_text(20_000, seed=5)], trainers.BpeTrainer(
        vocab_size=400, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    if bos:  # a Llama 3 style post-processor: BOS first, part of the converter's hash
        tok.post_processor = processors.TemplateProcessing(
            single=f"{EOT} $A", special_tokens=[(EOT, tok.token_to_id(EOT))])
    if truncate:  # saved with a truncation the converter (transformers) does not apply
        tok.enable_truncation(max_length=8)
    return TextTokenizer.from_str(tok.to_str(), "file")


def qwen2_style() -> TextTokenizer:
    return trained(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), normalizers.NFC())


def smollm_style() -> TextTokenizer:
    return trained(pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]))


def converter_hash(tok: TextTokenizer, folder) -> str:
    """convert_hf_to_gguf.py's get_vocab_base_pre: AutoTokenizer on the model folder,
    ``chktok = tokenizer.encode(chktxt)``, ``sha256(str(chktok).encode()).hexdigest()``."""
    from transformers import AutoTokenizer

    folder.mkdir()
    tok.save(folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOT}))
    return hashlib.sha256(str(AutoTokenizer.from_pretrained(folder).encode(CHECK_TEXT))
                          .encode()).hexdigest()


def test_the_check_text_is_the_converters():
    """The converter's chktxt, character for character (emoji sequences, Khmer marks...):
    with it the GPT-2 tokenizer.json of openai-community/gpt2 hashes to the converter's
    3ce83efd... ('gpt-2'), checked once against the real file; pinned here."""
    assert hashlib.sha256(CHECK_TEXT.encode()).hexdigest() == \
        "a36179c1e2b1cfcfbfad1dc779addad2ffc778201e4cf0d538bddeafa2c526da"
    assert KNOWN["3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454"] == "gpt-2"
    assert {"llama-bpe", "qwen2", "smollm"} <= set(KNOWN.values())


@pytest.mark.slow  # transformers' import
def test_our_hash_is_the_converters(tmp_path):
    ours = TextTokenizer.train_bpe(corpus_text(20_000, seed=3), 320)
    cases = {"bpe": ours, "qwen2": qwen2_style(), "smollm": smollm_style(),
             "bos+truncation": trained(pre_tokenizers.ByteLevel(add_prefix_space=False),
                                       bos=True, truncate=True)}
    for name, tok in cases.items():
        assert check_hash(tok.tok) == converter_hash(tok, tmp_path / name), name


def test_our_tokenizers_are_gpt2s_split():
    for tok in (TextTokenizer.train_bpe(corpus_text(20_000, seed=3), 320),
                TextTokenizer.build_byte()):
        assert gguf_vocab(tok).pre == "gpt-2"


@pytest.mark.parametrize("make", [qwen2_style, smollm_style])
def test_a_tokenizer_llama_cpp_does_not_know_is_refused_naming_its_hash(make):
    tok = make()
    with pytest.raises(UsageError) as err:
        gguf_vocab(tok)
    message = str(err.value)
    assert message.startswith("llama.cpp cannot use this model's file tokenizer (a Sequence "
                              "pre-tokenizer instead of ByteLevel")
    assert f"chkhsh {check_hash(tok.tok)[:16]}" in message and "\n" not in message
    assert "Qwen2" in err.value.hint
