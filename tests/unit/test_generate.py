import pytest
import torch

from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.errors import UsageError
from llm_trainer.inference.generate import GenerationSettings, TextGenerator
from llm_trainer.inference.sampling import (
    apply_repetition_penalty,
    top_k_filter,
    top_p_filter,
)
from llm_trainer.model.gpt import GPT
from llm_trainer.model.shape import ModelShape
from tests.helpers import corpus_text


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    tok = TextTokenizer.build_char(corpus_text(5000))
    model = GPT(ModelShape(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2,
                         n_embd=32))
    return TextGenerator(model, tok)


GREEDY = dict(temperature=0.0, top_k=None)


@pytest.mark.parametrize("new_tokens", [5, 10, 60])  # within the context, and far beyond it
def test_greedy_with_kv_cache_equals_without(generator, new_tokens):
    ids, _ = generator.prompt_ids("the water")
    settings = GenerationSettings(max_new_tokens=new_tokens, **GREEDY)
    cached = list(generator.generate_ids(ids, settings, use_cache=True))
    plain = list(generator.generate_ids(ids, settings, use_cache=False))
    assert len(cached) == new_tokens
    assert cached == plain


def test_greedy_within_context_equals_argmax_of_the_full_model(generator):
    ids, _ = generator.prompt_ids("the wa")
    got = list(generator.generate_ids(ids, GenerationSettings(max_new_tokens=6, **GREEDY)))
    seq = list(ids)
    with torch.no_grad():
        for _ in range(6):
            logits, _ = generator.model(torch.tensor([seq]))
            seq.append(int(logits[0, -1].argmax()))
    assert got == seq[len(ids):]


def test_long_prompt_keeps_its_last_tokens_with_a_note(generator):
    ids, note = generator.prompt_ids("x" * 40)
    assert len(ids) == 16 and "only its last 16 tokens" in note
    notes = []
    text = "".join(generator.stream("y" * 40, GenerationSettings(max_new_tokens=3),
                                    on_note=notes.append))
    assert notes and len(text) == 3


def test_empty_prompt_is_allowed(generator):
    ids, note = generator.prompt_ids("")
    assert ids and note is None
    out = list(generator.generate_ids(ids, GenerationSettings(max_new_tokens=8, seed=1)))
    assert len(out) == 8


def test_seed_makes_sampling_reproducible(generator):
    s = GenerationSettings(max_new_tokens=20, temperature=1.0, top_k=None, seed=3)
    assert generator.generate("the", s) == generator.generate("the", s)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(max_new_tokens=-1), "--max-new-tokens"), (dict(temperature=-0.5), "--temperature"),
    (dict(top_k=0), "--top-k"), (dict(top_p=1.5), "--top-p"),
    (dict(repetition_penalty=0), "--repetition-penalty")])
def test_invalid_settings_are_usage_errors(kwargs, needle):
    with pytest.raises(UsageError, match=needle):
        GenerationSettings(**kwargs).check()


def test_sampling_filters():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.0])
    assert torch.isinf(top_k_filter(logits, 2)[[0, 3]]).all()
    assert not torch.isinf(top_k_filter(logits, 2)[[1, 2]]).any()
    kept = ~torch.isinf(top_p_filter(logits, 0.5))
    assert kept.tolist() == [False, True, False, False]  # the top token alone has > 50%
    assert (~torch.isinf(top_p_filter(logits, 1.0))).all()
    seen = torch.tensor([False, True, False, True])
    pen = apply_repetition_penalty(torch.tensor([1.0, 2.0, -1.0, -2.0]), seen, 2.0)
    assert pen.tolist() == [1.0, 1.0, -1.0, -4.0]


@pytest.mark.parametrize("bias,activation", [(True, "gelu"), (False, "gelu_tanh")])
def test_one_token_fast_path_matches_the_model(bias, activation):
    from llm_trainer.inference.generate import OneTokenStep
    from llm_trainer.model.gpt import KVCache

    torch.manual_seed(1)
    shape = ModelShape(vocab_size=40, block_size=16, n_layer=2, n_head=4, n_embd=32, bias=bias,
                     activation=activation)
    model = GPT(shape).eval()
    step = OneTokenStep(model)
    tokens = torch.randint(0, 40, (12,)).tolist()
    with torch.no_grad():
        ref_cache, fast_cache = (KVCache(shape, 1, "cpu", torch.float32) for _ in range(2))
        model(torch.tensor([tokens[:4]]), cache=ref_cache)
        model(torch.tensor([tokens[:4]]), cache=fast_cache)
        for t in tokens[4:]:
            ref = model(torch.tensor([[t]]), cache=ref_cache, last_only=True)[0][0, -1]
            fast = step(t, fast_cache)
            assert torch.allclose(ref, fast, atol=1e-5)
        assert fast_cache.length == ref_cache.length == 12
