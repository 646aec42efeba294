"""`data inspect` on chat data: each conversation format detected, its malformed rows counted
and shown with their line and suggestion, what data.on_bad_rows would do, turns and prompt /
response token lengths, the --json fields, and --show-template marking exactly what trains."""

from __future__ import annotations

import json

import pytest

from llm_trainer.data import inspect as data_inspect
from llm_trainer.data.chat import IM_END, IM_START, bad_rows_verdict
from llm_trainer.data.inspect_chat import MARK_CLOSE, MARK_OPEN
from tests.helpers import run_cli


def write_jsonl(path, rows, blank_after: int | None = None):
    """One JSON object per line; a blank line after row ``blank_after`` (1-based), so rows and
    lines differ from there on."""
    lines = [json.dumps(r) for r in rows]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def chat(path, *, seq_len=128, on_bad_rows="auto", loss_on="assistant", sample_bytes=None,
         val_fraction=0.1):
    extra = {"sample_bytes": sample_bytes} if sample_bytes else {}
    return data_inspect.inspect_dataset(str(path), tokenizer="byte", vocab_size=8192,
                                        val_fraction=val_fraction, text_column=None,
                                        seq_len=seq_len, data_dir=path.parent / "data",
                                        on_bad_rows=on_bad_rows, loss_on=loss_on, **extra)


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


GOOD = {
    "messages": lambda i: {"messages": msgs(("user", f"question {i}"),
                                            ("assistant", f"answer {i}"))},
    "sharegpt": lambda i: {"conversations": [{"from": "human", "value": f"question {i}"},
                                             {"from": "gpt", "value": f"answer {i}"}]},
    "alpaca": lambda i: {"instruction": f"question {i}", "input": "", "output": f"answer {i}"},
    "prompt_completion": lambda i: {"prompt": f"question {i}", "completion": f"answer {i}"},
}
# per format: (bad row, the problem and the suggestion it must be shown with)
BAD = {
    "messages": [
        ({"messages": msgs(("user", "a"), ("bot", "b"))},
         "turn 2 has the unknown role 'bot'", "use one of: assistant, system, user"),
        ({"messages": msgs(("user", "a"), ("assistant", ""))},
         "an empty assistant turn", "write the reply the model should learn, or drop the turn"),
        ({"messages": msgs(("user", "a"), ("user", "b"), ("assistant", "c"))},
         "two user turns in a row",
         "merge them into one user turn, or add the missing assistant turn between them"),
        ({"id": 7}, "the 'messages' field is missing", "give every row a 'messages' list"),
    ],
    "sharegpt": [
        ({"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]},
         "turn 2 has the unknown role 'robot'", "use one of: assistant, bot, chatgpt, gpt, "
                                                "human, model, system, user"),
        ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": " "}]},
         "an empty assistant turn", "write the reply the model should learn, or drop the turn"),
        ({"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"},
                            {"from": "gpt", "value": "c"}]},
         "two user turns in a row",
         "merge them into one user turn, or add the missing assistant turn between them"),
        ({"conversations": [{"from": "human"}, {"from": "gpt", "value": "c"}]},
         "turn 1 has no text in 'value'", "give every turn a string 'value'"),
    ],
    "alpaca": [
        ({"instruction": "a", "input": "", "output": ""},
         "'output' is empty", "write the output (or drop the row)"),
        ({"input": "x", "output": "y"},
         "the 'instruction' field is missing", "give every row a 'instruction' string"),
    ],
    "prompt_completion": [
        ({"prompt": "a", "completion": "  "},
         "'completion' is empty", "write the completion (or drop the row)"),
        ({"prompt": "a"}, "the 'completion' field is missing",
         "give every row a 'completion' string"),
    ],
}


@pytest.mark.parametrize("fmt", list(GOOD))
def test_each_format_is_detected_and_its_bad_rows_shown_with_line_and_suggestion(tmp_path, fmt):
    bad = BAD[fmt]
    # rows 1-3 good, then the bad ones, then good ones; a blank line after row 2
    rows = [GOOD[fmt](i) for i in range(3)] + [b for b, _, _ in bad] + \
        [GOOD[fmt](i) for i in range(3, 40)]
    path = tmp_path / "chat.jsonl"
    write_jsonl(path, rows, blank_after=2)
    r = chat(path)
    c = r.chat
    assert c.format == fmt and fmt in c.reason and "conversations" in c.reason
    assert r.document_unit == "conversation" and r.text_column is None
    assert (c.rows, c.conversations, c.bad_rows) == (len(rows), 40, len(bad))
    # row k (k > 2) is on line k + 1: the blank line counts as a line, not as a row
    assert [(b.split, b.row, b.line, b.file, b.problem, b.suggestion) for b in c.bad_shown] == [
        ("train", 4 + i, 5 + i, "chat.jsonl", problem, suggestion)
        for i, (_, problem, suggestion) in enumerate(bad)]
    assert c.bad_shown[0].where == "line 5 of chat.jsonl"
    # 2 or 4 bad rows of 42 or 44 are more than the 1% that auto skips
    assert c.verdict == bad_rows_verdict(len(bad), len(rows), "auto") is not None
    assert c.bad_action.startswith("training would stop: ")
    assert any(s.startswith(f"fix the {len(bad)} malformed rows") and "on_bad_rows=skip" in s
               for s in r.suggestions)
    # every usable row measured: one user and one assistant turn each
    assert c.measured == 40 and c.turns == {"min": 2, "median": 2, "max": 2}


def test_bad_rows_verdict_is_the_one_percent_rule():
    assert bad_rows_verdict(0, 100, "fail") is None
    assert bad_rows_verdict(1, 100, "auto") is None  # exactly 1%: skipped
    assert bad_rows_verdict(2, 199, "auto") == (
        "2 of 199 rows (1.0%) are not usable conversations: more than the 1% "
        "data.on_bad_rows=auto skips")
    assert bad_rows_verdict(1, 1000, "fail") == (
        "1 of 1,000 rows (0.1%) are not usable conversations and data.on_bad_rows is fail")
    assert bad_rows_verdict(50, 100, "skip") is None


def test_few_bad_rows_are_skipped_under_auto_and_stop_a_run_under_fail(tmp_path):
    rows = [GOOD["messages"](i) for i in range(150)]
    rows[70] = BAD["messages"][0][0]
    path = tmp_path / "chat.jsonl"
    write_jsonl(path, rows)
    c = chat(path).chat
    assert (c.bad_rows, c.verdict) == (1, None)
    assert c.bad_action == "training would skip these 1 rows (data.on_bad_rows=auto)"
    assert [b.where for b in c.bad_shown] == ["line 71 of chat.jsonl"]
    failing = chat(path, on_bad_rows="fail").chat
    assert failing.verdict == ("1 of 150 rows (0.7%) are not usable conversations and "
                               "data.on_bad_rows is fail")


def test_data_whose_rows_are_all_malformed_is_reported_not_refused(tmp_path):
    path = tmp_path / "chat.jsonl"
    write_jsonl(path, [b for b, _, _ in BAD["prompt_completion"]] + [{"prompt": "b",
                                                                      "completion": ""}])
    r = chat(path)
    c = r.chat
    assert (c.rows, c.conversations, c.bad_rows, c.measured) == (3, 0, 3, 0)
    assert [b.where for b in c.bad_shown] == [f"line {i} of chat.jsonl" for i in (1, 2, 3)]
    assert c.prompt_tokens == {} and c.turns == {}
    assert c.verdict.startswith("3 of 3 rows (100.0%)")
    assert [s for s in r.suggestions if not s.startswith("fix the 3 malformed rows")] == []


def chatml_tokens(messages) -> tuple[int, int]:
    """(all, trained) tokens of a conversation under ChatML and the byte tokenizer with the
    markers as single tokens, counted by hand: <|im_start|> role \\n content <|im_end|> \\n
    per message; an assistant turn trains its content, <|im_end|> and the newline."""
    total = sum(1 + len(m["role"]) + 1 + len(m["content"].encode()) + 1 + 1 for m in messages)
    trained = sum(len(m["content"].encode()) + 2 for m in messages if m["role"] == "assistant")
    return total, trained


def test_turns_and_prompt_and_response_lengths_are_the_trained_tokens(tmp_path):
    convs = [msgs(("user", "hi"), ("assistant", "hello")),
             msgs(("system", "be brief"), ("user", "x" * 40), ("assistant", "y" * 9),
                  ("user", "more"), ("assistant", "z" * 30)),
             msgs(("user", "q" * 10), ("assistant", "r" * 100))]
    path = tmp_path / "chat.jsonl"
    write_jsonl(path, [{"messages": m} for m in convs])
    lengths = [chatml_tokens(m) for m in convs]
    prompts = sorted(t - a for t, a in lengths)
    responses = sorted(a for _, a in lengths)
    seq_len = 140  # between the lengths: 28, 131 and 143 tokens
    assert sorted(t for t, _ in lengths) == [28, 131, 143]
    r = chat(path, seq_len=seq_len, val_fraction=0.3)  # one conversation validates
    c = r.chat
    assert (c.rows, c.conversations, c.bad_rows, c.bad_shown) == (3, 3, 0, [])
    assert c.turns == {"min": 2, "median": 2, "max": 4}  # the system turn is not counted
    assert c.prompt_tokens == {"min": prompts[0], "median": prompts[1], "p95": prompts[2],
                               "max": prompts[2]}
    assert c.response_tokens == {"min": responses[0], "median": responses[1],
                                 "p95": responses[2], "max": responses[2]}
    assert c.over_seq_len == 1 and c.over_action == "truncated"
    assert any(s.startswith("1 conversations (33.3%) are longer than seq_len 140 tokens: "
                            "training would cut them") for s in r.suggestions)
    # loss on every token: the response is all but the first token
    every = chat(path, seq_len=seq_len, loss_on="all", val_fraction=0.3).chat
    assert every.response_tokens["max"] == max(t for t, _ in lengths) - 1
    assert every.prompt_tokens == {"min": 1, "median": 1, "p95": 1, "max": 1}


@pytest.mark.slow  # about a second: the fast suite keeps under 30 s
def test_a_sampled_table_checks_every_row_and_measures_some(tmp_path):
    rows = [GOOD["messages"](i) for i in range(3000)]
    for k in (10, 1500, 2990):
        rows[k] = BAD["messages"][1][0]
    path = tmp_path / "chat.jsonl"
    write_jsonl(path, rows)
    r = chat(path, sample_bytes=20_000)
    c = r.chat
    assert (c.rows, c.conversations, c.bad_rows) == (3000, 2997, 3)  # counted, all of them
    assert [b.row for b in c.bad_shown] == [11, 1501, 2991]
    assert 0 < c.measured < c.conversations and r.sampled
    assert r.splits[0].documents + r.splits[1].documents == c.conversations


# ---------------------------------------------------------------------------- the CLI


def conversations_file(home):
    rows = [{"messages": msgs(("system", "be kind"), ("user", "hello there"),
                              ("assistant", "Hi! How can I help?"), ("user", "reverse: abc"),
                              ("assistant", "cba"))},
            {"messages": msgs(("user", "a"), ("bot", "b"))},
            {"messages": msgs(("user", "2+2"), ("assistant", "4"))}] + \
        [{"messages": msgs(("user", f"q{i}"), ("assistant", f"a{i}"))} for i in range(20)]
    write_jsonl(home / "talk.jsonl", rows)
    return rows


@pytest.mark.slow  # the CLI in process, datasets imported
def test_the_json_report_carries_the_chat_figures_and_the_text_report_shows_them(home):
    conversations_file(home)
    proc = run_cli("data", "inspect", "talk.jsonl", "--tokenizer", "byte", "--json", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(proc.stdout)
    c = r["chat"]
    assert set(c) == {"format", "reason", "template", "loss_on", "rows", "conversations",
                      "measured", "turns", "prompt_tokens", "response_tokens", "seq_len",
                      "over_seq_len", "over_action", "bad_rows", "bad_shown", "on_bad_rows",
                      "verdict", "bad_action"}
    assert (c["format"], c["template"], c["loss_on"]) == ("messages", "chatml", "assistant")
    assert (c["rows"], c["conversations"], c["bad_rows"]) == (23, 22, 1)
    assert c["turns"] == {"min": 2, "median": 2, "max": 4}
    assert set(c["prompt_tokens"]) == set(c["response_tokens"]) == {"min", "median", "p95",
                                                                     "max"}
    assert c["bad_shown"] == [{"split": "train", "row": 2, "file": "talk.jsonl", "line": 2,
                               "problem": "turn 2 has the unknown role 'bot'",
                               "suggestion": "use one of: assistant, system, user",
                               "where": "line 2 of talk.jsonl"}]
    assert c["verdict"].startswith("1 of 23 rows (4.3%)")
    assert r["document_unit"] == "conversation"
    proc = run_cli("data", "inspect", "talk.jsonl", "--tokenizer", "byte", home=home)
    out = proc.stdout
    assert "chat:       messages (its messages column holds conversations" in out
    assert "conversations: 22 of 23 rows" in out
    assert "bad rows:      1: training would stop: 1 of 23 rows (4.3%)" in out
    assert ("  line 2 of talk.jsonl: turn 2 has the unknown role 'bot'; use one of: "
            "assistant, system, user") in out


def marked_spans(text: str) -> tuple[str, list[str]]:
    """The text without the marks, and what each pair of marks encloses."""
    plain, spans, rest = [], [], text
    while MARK_OPEN in rest:
        before, rest = rest.split(MARK_OPEN, 1)
        inside, rest = rest.split(MARK_CLOSE, 1)
        plain += [before, inside]
        spans.append(inside)
    assert MARK_CLOSE not in rest
    return "".join(plain) + rest, spans


def chatml(messages) -> str:
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)


@pytest.mark.slow  # the CLI in process, datasets and jinja imported
@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_show_template_marks_exactly_the_assistant_replies(home, tokenizer):
    rows = conversations_file(home)
    proc = run_cli("data", "inspect", "talk.jsonl", "--show-template", "2", "--tokenizer",
                   tokenizer, "--vocab-size", "300", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"marks:      the text between {MARK_OPEN} and {MARK_CLOSE} is trained" in out
    blocks = out.split("\n--- example ")[1:]
    assert len(blocks) == 2  # the first two usable conversations: the bad row 2 is passed
    assert blocks[0].startswith("1 (line 1 of talk.jsonl): ")
    assert blocks[1].startswith("2 (line 3 of talk.jsonl): ")
    for block, row in zip(blocks, (rows[0], rows[2]), strict=True):
        body = block.split("\n", 1)[1].rstrip("\n")
        plain, spans = marked_spans(body)
        expected = chatml(row["messages"])
        assert plain == expected  # the last reply's newline is inside the marks
        # each reply, its end-of-turn marker and the newline the template writes after it
        assert spans == [m["content"] + IM_END + "\n" for m in row["messages"]
                         if m["role"] == "assistant"]


@pytest.mark.slow  # the CLI in process, datasets and jinja imported
def test_show_template_with_loss_on_all_marks_all_but_the_first_token_and_has_json(home):
    rows = conversations_file(home)
    proc = run_cli("data", "inspect", "talk.jsonl", "--show-template", "1", "--tokenizer",
                   "byte", "--set", "train.loss_on=all", "--json", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    v = json.loads(proc.stdout)
    assert (v["format"], v["template"], v["loss_on"]) == ("messages", "chatml", "all")
    assert "train.loss_on=all: every token but the first" in v["legend"]
    (ex,) = v["examples"]
    text = chatml(rows[0]["messages"])
    assert ex["text"] == text and ex["where"] == "line 1 of talk.jsonl"
    assert ex["trained"] == [[len(IM_START), len(text)]]  # <|im_start|> is one token
    assert ex["trained_tokens"] == ex["tokens"] - 1
    assert ex["marked"] == IM_START + MARK_OPEN + text[len(IM_START):] + MARK_CLOSE


@pytest.mark.slow  # the CLI in process
def test_show_template_on_text_data_is_one_line(home):
    (home / "notes.txt").write_text("just some text\n\nmore text\n", encoding="utf-8")
    proc = run_cli("data", "inspect", "notes.txt", "--show-template", "2", home=home)
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: notes.txt holds no conversations: --show-template "
                                  "shows chat data")


@pytest.mark.slow  # the CLI in process, datasets imported
def test_an_hf_dataset_of_sharegpt_rows_names_bad_rows_by_split_and_row(home):
    folder = home / "hfchat"
    folder.mkdir()
    good = [{"conversations": [{"from": "human", "value": f"q{i}"},
                               {"from": "gpt", "value": f"a{i}"}]} for i in range(30)]
    write_jsonl(folder / "train.jsonl", good)
    write_jsonl(folder / "validation.jsonl",
                [*good[:3], {"conversations": [{"from": "human", "value": "q"}]}])
    proc = run_cli("data", "inspect", f"hf:{folder}", "--tokenizer", "byte", "--json",
                   home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    c = json.loads(proc.stdout)["chat"]
    assert (c["format"], c["rows"], c["bad_rows"]) == ("sharegpt", 34, 1)
    assert [(b["where"], b["problem"]) for b in c["bad_shown"]] == [
        ("row 4 of the val split", "no assistant turn")]


PHI_LIKE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


def hf_folder(home):
    """A model folder's tokenizer (bytes, its markers as special tokens) and its own chat
    template: what `train --init-from hf:FOLDER` takes the tokenizer and template from."""
    from tokenizers import AddedToken

    from llm_trainer.data.tokenizer import TextTokenizer

    folder = home / "tiny-hf"
    folder.mkdir()
    tok = TextTokenizer.build_byte()
    tok.tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in ("<|system|>", "<|user|>", "<|assistant|>",
                                          "<|end|>")])
    tok.save(folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": PHI_LIKE,
                                                              "eos_token": "<|endoftext|>"}))
    return folder


@pytest.mark.slow  # the CLI in process, datasets and jinja imported
def test_init_from_an_hf_folder_uses_its_tokenizer_and_its_own_template(home):
    rows = conversations_file(home)
    folder = hf_folder(home)
    proc = run_cli("data", "inspect", "talk.jsonl", "--init-from", f"hf:{folder}",
                   "--show-template", "1", "--json", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    v = json.loads(proc.stdout)
    assert v["template"] == "hf" and v["tokenizer"]["spec"] == str(folder / "tokenizer.json")
    (ex,) = v["examples"]
    messages = rows[0]["messages"]
    text = "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages)
    assert ex["text"] == text
    assert [ex["text"][a:b] for a, b in ex["trained"]] == [
        m["content"] + "<|end|>\n" for m in messages if m["role"] == "assistant"]
    # the report measures with them too: the markers are one token each
    proc = run_cli("data", "inspect", "talk.jsonl", "--init-from", f"hf:{folder}", "--json",
                   home=home)
    c = json.loads(proc.stdout)["chat"]
    assert c["template"] == "hf"
    # the shortest reply is row 3's "4" <|end|> \n; the shortest prompt a "q0" row's:
    # <|user|> \n q 0 <|end|> \n <|assistant|> \n
    assert c["response_tokens"]["min"] == 1 + 2
    assert c["prompt_tokens"]["min"] == 1 + 1 + 2 + 1 + 1 + 1 + 1


@pytest.mark.slow  # the CLI in process
def test_init_from_takes_an_hf_folder_with_a_tokenizer(home):
    conversations_file(home)
    proc = run_cli("data", "inspect", "talk.jsonl", "--init-from", f"hf:{home}", home=home)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: --init-from: {home.resolve()} has no tokenizer.json")
    proc = run_cli("data", "inspect", "talk.jsonl", "--init-from", "mymodel", home=home)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: data inspect --init-from takes hf:FOLDER")


@pytest.mark.slow  # the CLI in process
def test_a_row_the_folders_template_refuses_is_a_bad_row_with_its_line(home):
    conversations_file(home)  # row 1 has a system turn
    folder = hf_folder(home)
    refuses_system = ("{% if messages[0]['role'] == 'system' %}"
                      "{{ raise_exception('System role not supported') }}{% endif %}" + PHI_LIKE)
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": refuses_system, "eos_token": "<|endoftext|>"}))
    proc = run_cli("data", "inspect", "talk.jsonl", "--init-from", f"hf:{folder}", "--json",
                   home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    c = json.loads(proc.stdout)["chat"]
    assert c["bad_rows"] == 2 and c["conversations"] == 21
    first = c["bad_shown"][0]
    assert first["line"] == 1
    assert first["problem"] == "the chat template refuses it: System role not supported"
    assert "fold a system turn into the first user turn" in first["suggestion"]
