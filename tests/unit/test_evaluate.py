"""Whole-split evaluation: every token predicted once, exact byte counts, the split's text."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llm_trainer.checkpoint_io import save_checkpoint
from llm_trainer.config import RunConfig
from llm_trainer.data.sources import hold_out
from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.errors import DataError, UsageError
from llm_trainer.model.gpt import GPT
from llm_trainer.model.shape import ModelShape
from llm_trainer.training.evaluate import (
    _byte_of_char,
    evaluate_checkpoint,
    evaluate_text,
    evaluate_tokens,
    split_tokens,
    window_count,
)

BLOCK = 8
TEXT = "é café ✓ naïve — 日本語 text\n" * 6 + "über straße ✓"  # starts with a 2-byte char


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny forwards on a busy CPU: threads only add synchronisation (seconds per test)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(vocab: int, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelShape(vocab_size=vocab, block_size=BLOCK, n_layer=1, n_head=2,
                        n_embd=16)).eval()


def by_hand(model: GPT, tokens) -> tuple[float, int]:
    """One window at a time: window i holds tokens [i*T, i*T+T] and predicts the last T."""
    nats, predicted = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(tokens) - 1, BLOCK):
            w = torch.tensor(tokens[start:start + BLOCK + 1], dtype=torch.long)
            logp = torch.log_softmax(model(w[None, :-1])[0][0].double(), dim=-1)  # (L, V)
            for j in range(len(w) - 1):
                nats -= float(logp[j, w[j + 1]])
                predicted += 1
    return nats, predicted


def test_full_split_loss_equals_a_window_by_window_hand_computation():
    model = tiny(11)
    tokens = np.random.default_rng(0).integers(0, 11, size=7 * BLOCK + 5).astype(np.uint16)
    nats, predicted = by_hand(model, tokens.tolist())
    assert predicted == len(tokens) - 1  # the last, partial window of 4 included
    for batch in (3, 1, 100):  # 3 divides neither the 7 full windows nor 8 windows
        t = evaluate_tokens(model, tokens, BLOCK, batch, "cpu")
        assert t.tokens == len(tokens) - 1 and t.windows == 8
        assert t.nats == pytest.approx(nats, rel=1e-6)
        assert t.loss == pytest.approx(nats / predicted, rel=1e-6)


def test_token_counts_on_window_boundaries_and_too_short_splits():
    model = tiny(11)
    exact = np.arange(3 * BLOCK + 1) % 11  # three full windows, nothing left over
    t = evaluate_tokens(model, exact, BLOCK, 2)
    assert (t.tokens, t.windows) == (3 * BLOCK, 3)
    assert t.nats == pytest.approx(by_hand(model, exact.tolist())[0], rel=1e-6)
    assert window_count(2, BLOCK) == 1 and window_count(1, BLOCK) == 0
    with pytest.raises(DataError, match="at least 2"):
        evaluate_tokens(model, np.array([3]), BLOCK, 4)


@pytest.mark.parametrize("kind", ["byte", "char"])
def test_bits_per_byte_is_nats_over_ln2_over_the_predicted_tokens_bytes(kind):
    tok = TextTokenizer.build_byte() if kind == "byte" else TextTokenizer.build_char(TEXT)
    model = tiny(tok.vocab_size)
    score = evaluate_text(model, tok, TEXT, block_size=BLOCK, batch_size=4)
    first = 1 if kind == "byte" else len(TEXT[0].encode())  # é: 2 bytes, 1 byte token
    assert score.bytes == len(TEXT.encode()) - first
    if kind == "byte":
        assert score.totals.tokens == score.bytes  # one token per byte
    else:
        assert score.totals.tokens == len(TEXT) - 1
    assert score.bits_per_byte == pytest.approx(score.totals.nats / math.log(2) / score.bytes)
    assert score.totals.nats == pytest.approx(by_hand(model, tok.encode_corpus(TEXT).tolist())[0],
                                              rel=1e-6)


def test_unknown_characters_count_as_the_bytes_they_replaced():
    tok = TextTokenizer.build_char("abc \n")
    text = "✓abc ✓ ab\n"
    score = evaluate_text(tiny(tok.vocab_size), tok, text, block_size=BLOCK, batch_size=2)
    assert score.bytes == len(text.encode()) - len("✓".encode())


def test_bpe_bytes_are_exactly_those_of_the_predicted_tokens():
    tok = TextTokenizer.train_bpe(TEXT * 3, 300)
    ids = tok.encode_corpus(TEXT).tolist()
    table = _byte_of_char()
    per_token = [len(tok.tok.id_to_token(i)) for i in ids]
    assert all(c in table for i in ids for c in tok.tok.id_to_token(i))
    assert sum(per_token) == len(TEXT.encode())  # byte-level: the tokens cover the text
    score = evaluate_text(tiny(tok.vocab_size), tok, TEXT, block_size=BLOCK, batch_size=4)
    assert score.bytes == sum(per_token[1:])


def test_val_and_test_text_of_local_datasets(tmp_path):
    folder = tmp_path / "split"
    folder.mkdir()
    for name, text in (("train.txt", "train text\n" * 20), ("valid.txt", "valid text\n"),
                       ("test.txt", "test text\n")):
        (folder / name).write_text(text)
    data = tmp_path / "data"
    kw = {"data_dir": data, "val_fraction": 0.1, "text_column": None}
    tok = TextTokenizer.build_byte()  # documents end with its separator
    val = split_tokens(str(folder), "val", tok, **kw)
    assert (tok.decode(list(val.tokens)), val.origin) == ("valid text<|endoftext|>", "split")
    assert val.bytes == len("valid text") - 1  # the first token is only context
    test = split_tokens(str(folder), "test", tok, **kw)
    assert tok.decode(list(test.tokens)) == "test text<|endoftext|>"

    single = tmp_path / "one.txt"
    single.write_text("".join(f"line {i}\n" for i in range(300)))
    val = split_tokens(str(single), "val", tok, **kw)
    tail = hold_out(single.read_text(), 0.1)[1]
    assert val.origin == "held out" and tok.decode(list(val.tokens)) == (
        tail.rstrip("\n") + "<|endoftext|>")
    with pytest.raises(UsageError, match="has no test split; its splits are train and val"):
        split_tokens(str(single), "test", tok, **kw)
    with pytest.raises(UsageError, match="unknown split 'train'"):
        split_tokens(str(single), "train", tok, **kw)


def test_evaluate_checkpoint_scores_the_held_out_tail_of_its_training_data(tmp_path):
    text = "".join(f"line {i}: {TEXT[i % 20:]}\n" for i in range(40))
    data = tmp_path / "corpus.txt"
    data.write_text(text)
    tok = TextTokenizer.build_byte()
    model = tiny(tok.vocab_size)
    cfg = RunConfig().replace(**{"data.dataset": str(data), "data.tokenizer": "byte",
                                 "data.val_fraction": 0.2})
    no_optimizer = SimpleNamespace(state_dict=dict)  # a torch optimizer imports torch._dynamo
    path = save_checkpoint(tmp_path / "m", model=model, optimizer=no_optimizer,
                           trainer_state={"step": 7}, config=cfg, shape=model.shape,
                           tokenizer=tok, step=7, epoch=0.5, val_loss=None)
    r = evaluate_checkpoint(path, batch_size=5, data_dir=tmp_path / "data")
    tail = hold_out(text, 0.2)[1].rstrip("\n")  # one document, then the separator
    want = evaluate_tokens(model, tok.encode_texts([tail], eot=True), BLOCK, 5)
    assert (r.model, r.step, r.split, r.split_source) == ("m", 7, "val", "held out")
    assert r.tokens == len(tail.encode()) == r.bytes + 1
    assert r.loss == pytest.approx(want.loss, rel=1e-6)
    assert r.perplexity == pytest.approx(math.exp(r.loss))
    assert r.bits_per_byte == pytest.approx(r.nats / math.log(2) / r.bytes)
    assert r.to_json()["dtype"] == "float32"
    with pytest.raises(UsageError, match="has no test split"):
        evaluate_checkpoint(path, split="test", data_dir=tmp_path / "data")


@pytest.mark.slow  # seconds: imports and prepares a dataset, or runs a dashboard
def test_eval_on_another_chat_dataset_skips_its_malformed_rows_and_says_so(tmp_path):
    """A run's data.on_bad_rows decides whether it trains; eval on someone else's chat data
    (5% bad rows: over auto's 1%) scores the usable conversations instead of refusing with a
    hint (--set) that eval does not take."""
    import json

    from llm_trainer.data.chat import ChatTemplate, with_chat_tokens

    def rows(path, n, bad_every=0):
        with open(path, "w") as fh:
            for i in range(n):
                m = [{"role": "user", "content": f"rev: {'abcde'[:2 + i % 4]}"},
                     {"role": "assistant", "content": "edcba"[3 - i % 4:]}]
                fh.write(json.dumps({"messages": m[:1] if bad_every and i % bad_every == 5
                                     else m}) + "\n")

    own, other = tmp_path / "own.jsonl", tmp_path / "other.jsonl"
    rows(own, 60)
    rows(other, 200, bad_every=20)  # rows 6, 26, ...: 10 bad, 1 of them in the last 10%
    template = ChatTemplate.chatml()
    tok = with_chat_tokens(TextTokenizer.build_byte(), template)
    torch.manual_seed(0)
    model = GPT(ModelShape(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2,
                           n_embd=16)).eval()
    cfg = RunConfig().replace(**{"data.dataset": str(own), "data.tokenizer": "byte",
                                 "data.val_fraction": 0.1, "model.block_size": 64})
    no_optimizer = SimpleNamespace(state_dict=dict)
    path = save_checkpoint(tmp_path / "m", model=model, optimizer=no_optimizer,
                           trainer_state={"step": 3}, config=cfg, shape=model.shape,
                           tokenizer=tok, step=3, epoch=0.5, val_loss=None, chat=template)
    r = evaluate_checkpoint(path, dataset=str(other), batch_size=4,
                            data_dir=tmp_path / "data")
    assert r.tokens > 0
    assert any(n.startswith("1 malformed row of the split left out") for n in r.notes)
    mine = evaluate_checkpoint(path, batch_size=4, data_dir=tmp_path / "data")
    assert not any("malformed" in n for n in mine.notes)
