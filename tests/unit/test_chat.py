"""Chat data: the four formats and their bad rows, templates rendered as transformers renders
them, the exact positions the loss is taken on, and packing into windows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm_trainer.data.batches import IGNORE, Batches, BatchPlan, DataPosition
from llm_trainer.data.chat import (
    IM_END,
    IM_START,
    BadRow,
    ChatTemplate,
    Message,
    detect_format,
    encode_conversation,
    prompt_ids,
    to_messages,
    with_chat_tokens,
)
from llm_trainer.data.prepare import ChatSettings, prepare_data
from llm_trainer.data.tokenizer import TextTokenizer
from llm_trainer.errors import DataError

U, A, S = "user", "assistant", "system"


@pytest.mark.parametrize(("row", "fmt", "expected"), [
    ({"messages": [{"role": S, "content": "be kind"}, {"role": U, "content": "hi"},
                   {"role": A, "content": "hello"}]}, "messages",
     [(S, "be kind"), (U, "hi"), (A, "hello")]),
    ({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"},
                        {"from": "gpt", "value": "a"}, {"from": "human", "value": "q2"},
                        {"from": "gpt", "value": "a2"}]}, "sharegpt",
     [(S, "s"), (U, "q"), (A, "a"), (U, "q2"), (A, "a2")]),
    ({"instruction": "Translate", "input": "chat", "output": "cat"}, "alpaca",
     [(U, "Translate\n\nchat"), (A, "cat")]),
    ({"instruction": "Say hi", "input": "", "output": "hi"}, "alpaca", [(U, "Say hi"), (A, "hi")]),
    ({"prompt": "2+2=", "completion": "4"}, "prompt_completion", [(U, "2+2="), (A, "4")]),
])
def test_each_format_becomes_messages(row, fmt, expected):
    assert detect_format(list(row)) == fmt
    assert [(m.role, m.content) for m in to_messages(row, fmt)] == expected


@pytest.mark.parametrize(("row", "fmt", "problem", "suggestion"), [
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages",
     "turn 1 has the unknown role 'bot'", "use one of: assistant, system, user"),
    ({"messages": [{"role": U, "content": "q"}, {"role": A, "content": "  "}]}, "messages",
     "an empty assistant turn", "write the reply"),
    ({"messages": [{"role": U, "content": "a"}, {"role": U, "content": "b"},
                   {"role": A, "content": "c"}]}, "messages",
     "two user turns in a row", "merge them into one user turn"),
    ({"conversations": [{"from": "human", "value": "q"}]}, "sharegpt", "no assistant turn",
     "add the reply"),
    ({"conversations": [{"from": "gpt", "value": "a"}]}, "sharegpt",
     "the conversation does not start with a user turn", "begin with the user's message"),
    ({"instruction": "do it"}, "alpaca", "the 'output' field is missing", "give every row"),
    ({"prompt": "p", "completion": None}, "prompt_completion",
     "the 'completion' field is missing", "give every row"),
    ({"messages": "hello"}, "messages", "'messages' is not a list", "make it a list"),
])
def test_bad_rows_say_what_is_wrong_and_what_to_do(row, fmt, problem, suggestion):
    with pytest.raises(BadRow) as bad:
        to_messages(row, fmt)
    assert bad.value.problem == problem
    assert bad.value.suggestion.startswith(suggestion)


def _chatml_tokenizer(text: str = "abcdefghijklmnopqrstuvwxyz :\n") -> TextTokenizer:
    return with_chat_tokens(TextTokenizer.build_char(text + "systemuserassistant"),
                            ChatTemplate.chatml())


def test_the_loss_is_on_exactly_the_replies_and_their_end_of_turn():
    tok, t = _chatml_tokenizer(), ChatTemplate.chatml()
    msgs = [Message(S, "be"), Message(U, "ab"), Message(A, "ba"), Message(U, "cd"),
            Message(A, "dc")]
    ids, mask = encode_conversation(tok, t, msgs)
    pieces = [tok.decode([i]) for i in ids]
    assert "".join(pieces) == t.render(msgs)
    trained = [(i, pieces[i]) for i in np.flatnonzero(mask)]
    # after each "<|im_start|>assistant\n": the reply, <|im_end|> and the newline after it
    starts = [i for i in range(len(pieces)) if pieces[i:i + 3] == [IM_START, *"as"]]
    expected = []
    for s in starts:
        first = s + 1 + len("assistant\n")
        expected += [(first + k, p) for k, p in enumerate(pieces[first:first + 4])]
    assert trained == expected
    assert [p for _, p in trained] == [*"ba", IM_END, "\n", *"dc", IM_END, "\n"]
    everything = encode_conversation(tok, t, msgs, loss_on="all")[1]
    assert not everything[0] and everything[1:].all()


def _qwen_folder(root):
    """A Qwen2.5-style tokenizer folder: its own template, with a default system message."""
    from tests.unit.test_ollama_template import QWEN_DEFAULT_SYSTEM

    tok = _chatml_tokenizer("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:!?'\n")
    folder = root / "qwen"
    folder.mkdir()
    tok.save(folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": IM_END,
        "pad_token": "<|endoftext|>", "chat_template": QWEN_DEFAULT_SYSTEM,
        "clean_up_tokenization_spaces": False}))
    return folder, tok


@pytest.mark.parametrize("which", ["chatml", "qwen"])
def test_rendering_and_ids_equal_transformers_apply_chat_template(tmp_path, which):
    transformers = pytest.importorskip("transformers")
    if which == "qwen":
        folder, tok = _qwen_folder(tmp_path)
        template = ChatTemplate.from_hf_folder(folder)
    else:
        tok, template = _chatml_tokenizer("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                          ".,:!?'\n"), ChatTemplate.chatml()
        folder = tmp_path / "chatml"
        folder.mkdir()
        tok.save(folder / "tokenizer.json")
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template.source,
            "eos_token": IM_END, "clean_up_tokenization_spaces": False}))
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    for msgs in ([Message(U, "Hi there!"), Message(A, "Hello.")],
                 [Message(S, "Be brief."), Message(U, "Why?"), Message(A, "So."),
                  Message(U, "Ok")]):
        plain = [m.to_json() for m in msgs]
        for gen in (False, True):
            assert template.render(msgs, add_generation_prompt=gen) == \
                hf.apply_chat_template(plain, tokenize=False, add_generation_prompt=gen)
        hf_ids = hf.apply_chat_template(plain, add_generation_prompt=True)
        hf_ids = list(hf_ids if isinstance(hf_ids, list) else hf_ids["input_ids"])
        assert prompt_ids(tok, template, msgs) == hf_ids
    assert template.kind == ("hf" if which == "qwen" else "chatml")


def _chat_file(path, n: int, *, long_every: int = 0) -> None:
    with open(path, "w") as fh:
        for i in range(n):
            word = "abcdefgh"[: 3 + i % 5]
            if long_every and i % long_every == 0:
                word = "abcdefgh" * 8  # longer than a window
            fh.write(json.dumps({"messages": [{"role": U, "content": f"rev: {word}"},
                                              {"role": A, "content": word[::-1]}]}) + "\n")
        fh.write('{"messages": [{"role": "user", "content": "x"}, '
                 '{"role": "user", "content": "y"}]}\n')  # one bad row (under 1%: skipped)


@pytest.mark.slow  # prepares two caches per case (~1 s)
@pytest.mark.parametrize("packing", [True, False])
def test_examples_are_packed_whole_into_windows(tmp_path, packing):
    _chat_file(tmp_path / "c.jsonl", 200, long_every=40)
    data = prepare_data(dataset=str(tmp_path / "c.jsonl"), tokenizer_spec="char",
                        vocab_size=300, val_fraction=0.1, text_column=None,
                        data_dir=tmp_path / "data",
                        chat=ChatSettings(block_size=96, packing=packing))
    tok = data.tokenizer
    width = data.window
    assert width == 97 and len(data.train) % width == 0
    start, pad = tok.tok.token_to_id(IM_START), tok.eot_id
    windows = np.asarray(data.train).reshape(-1, width)
    masks = np.asarray(data.train_mask).reshape(-1, width).astype(bool)
    counts = data.manifest["chat"]["train"]
    per_window = []
    for w, m in zip(windows, masks, strict=True):
        assert w[0] == start  # every window begins with an example: none is split
        n = int((w == start).sum()) // 2  # two turns each
        per_window.append(n)
        body = np.flatnonzero(w != pad)
        assert not m[body[-1] + 1:].any()  # padding is never trained
        assert not m[0]
    assert sum(per_window) == counts["examples"]
    assert (max(per_window) > 1) == packing  # packed: several examples share a window
    assert counts["truncated"] == 5 and counts["dropped"] == 0  # i = 0, 40, ... 160 train
    assert data.manifest["chat"]["val"]["bad"] + counts["bad"] == 1

    dropped = prepare_data(dataset=str(tmp_path / "c.jsonl"), tokenizer_spec="char",
                           vocab_size=300, val_fraction=0.1, text_column=None,
                           data_dir=tmp_path / "data",
                           chat=ChatSettings(block_size=96, packing=packing, truncate=False))
    assert dropped.manifest["chat"]["train"]["dropped"] == 5
    assert dropped.manifest["chat"]["train"]["truncated"] == 0

    plan = BatchPlan(n_tokens=len(data.train), seq_len=96, batch_size=4, aligned=True)
    x, y = Batches(data.train, plan, mask=data.train_mask).get(DataPosition())
    assert x.shape == y.shape == (4, 96)
    trained = y != IGNORE
    assert trained.any() and (~trained).any()
    replies = set("abcdefgh") | {IM_END, "\n"}
    for yr in y:  # every trained target is a reply's character, its end of turn or newline
        assert {tok.decode([int(t)]) for t in yr[yr != IGNORE]} <= replies


@pytest.mark.slow  # seconds: imports and prepares a dataset, or runs a dashboard
def test_more_than_one_percent_bad_rows_fail_with_the_rows_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    _chat_file(path, 20)
    with open(path, "a") as fh:
        fh.write('{"messages": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(DataError) as err:
        prepare_data(dataset=str(path), tokenizer_spec="char", vocab_size=300,
                     val_fraction=0.1, text_column=None, data_dir=tmp_path / "data",
                     chat=ChatSettings(block_size=48))
    assert "2 of 22 rows" in str(err.value) and "row 21" in str(err.value)
    assert "data.on_bad_rows=skip" in err.value.hint
    skipped = prepare_data(dataset=str(path), tokenizer_spec="char", vocab_size=300,
                           val_fraction=0.1, text_column=None, data_dir=tmp_path / "data",
                           chat=ChatSettings(block_size=48, on_bad_rows="skip"))
    c = skipped.manifest["chat"]
    assert c["train"]["bad"] + c["val"]["bad"] == 2


NO_SYSTEM = (  # a Gemma-style template: it refuses a system turn with raise_exception
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_a_row_the_template_refuses_is_a_bad_row_with_its_number(tmp_path):
    path = tmp_path / "c.jsonl"
    _chat_file(path, 150)
    rows = path.read_text().splitlines()
    rows[10] = json.dumps({"messages": [{"role": S, "content": "be brief"},
                                        {"role": U, "content": "rev: abc"},
                                        {"role": A, "content": "cba"}]})
    path.write_text("\n".join(rows) + "\n")
    template = ChatTemplate(NO_SYSTEM, "hf", None, None, IM_END, (IM_START, IM_END))
    tok = with_chat_tokens(TextTokenizer.build_char("abcdefgh rev:\nsystemuserassistant"),
                           template)
    with pytest.raises(BadRow) as bad:
        encode_conversation(tok, template, to_messages(json.loads(rows[10]), "messages"))
    assert "System role not supported" in bad.value.problem
    data = prepare_data(dataset=str(path), tokenizer_spec="char", vocab_size=300,
                        val_fraction=0.1, text_column=None, data_dir=tmp_path / "data",
                        chat=ChatSettings(block_size=48, template=template,
                                          on_bad_rows="skip"))
    counts = data.manifest["chat"]
    assert counts["train"]["bad"] + counts["val"]["bad"] == 2  # with _chat_file's last row
    shown = counts["train"]["bad_rows"][0]
    assert shown["row"] == 11 and "System role not supported" in shown["problem"]
    with pytest.raises(DataError) as err:
        prepare_data(dataset=str(path), tokenizer_spec="char", vocab_size=300,
                     val_fraction=0.1, text_column=None, data_dir=tmp_path / "data",
                     chat=ChatSettings(block_size=48, template=template, on_bad_rows="fail"))
    # it stops at the first bad row: no share of rows not yet read ("1 of 11 rows (9.1%)")
    assert str(err.value) == (
        "c.jsonl: row 11 is not a usable conversation and data.on_bad_rows is fail "
        "(row 11: the chat template refuses it: System role not supported)")
