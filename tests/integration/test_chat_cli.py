"""`llm-trainer chat` and `generate --chat` through the real CLI: the REPL driven through
stdin in a real process (a pipe, not a terminal), one chat turn printing only the reply, the
base model's answer beside it, and the refusals in one line. Tiny models whose greedy replies
are known (tests/chat_models.py); no training."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.chat_models import base_and_fine_tuned, save_chat_model
from tests.helpers import run_cli

GREEDY = ("--temperature", "0", "--max-new-tokens", "40")


@pytest.fixture
def chat_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    base_and_fine_tuned(home)
    save_chat_model(home, "plain", "hi", chat=False)
    return home


def test_generate_chat_prints_only_the_reply_and_stops_at_end_of_turn(chat_home):
    proc = run_cli("generate", "--model", "ft-m", "--chat", "--prompt", "hello", *GREEDY,
                   home=chat_home)
    assert proc.returncode == 0, proc.stderr
    # no prompt echoed, no template markers, and it stopped long before 40 tokens
    # (without the stop the model goes on: "hi<|im_end|>\nhi<|im_end|>...")
    assert proc.stdout == "hi\n"


def test_generate_chat_compare_base_shows_both_labelled(chat_home):
    proc = run_cli("generate", "--model", "ft-m", "--chat", "--prompt", "hello",
                   "--system", "be brief", "--compare-base", *GREEDY, home=chat_home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ("[ft-m (step-00000001)]\nhi\n"
                           "[base: base-m (step-00000001)]\nyo\n")


@pytest.mark.parametrize("args,line,hint", [
    (("--model", "plain", "--chat", "--prompt", "hi"),
     "error: model plain has no chat template", "hint: train it on chat data"),
    (("--model", "base-m", "--chat", "--prompt", "hi", "--compare-base"),
     "error: model base-m was trained from scratch: it has no base model to compare with",
     "hint: --compare-base is for a model started with --init-from"),
    (("--model", "ft-m", "--system", "x"), "error: --system is for a chat turn",
     "hint: add --chat"),
    (("--model", "ft-m", "--chat"), "error: generate --chat needs the user's message",
     "hint: e.g. llm-trainer generate --chat"),
])
def test_refusals_are_one_line_and_a_hint(chat_home, args, line, hint):
    proc = run_cli("generate", *args, home=chat_home)
    assert proc.returncode == 2
    assert proc.stdout == ""
    first, second = proc.stderr.splitlines()
    assert first.startswith(line) and second.startswith(hint)


@pytest.mark.slow  # a real process (torch's import)
def test_chat_repl_through_stdin(chat_home, tmp_path):
    out1, out2 = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    lines = ["/system be brief", "hello", "", "again", "/nope", f"/save {out1}", "/reset",
             "/help", "//slash", f"/save {out2}", "/exit", "never answered"]
    proc = subprocess.run(
        [sys.executable, "-m", "llm_trainer", "chat", "ft-m", *GREEDY], input="\n".join(lines)
        + "\n", capture_output=True, text=True, timeout=120, cwd=chat_home,
        env={**os.environ, "LLM_TRAINER_HOME": str(chat_home), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hi\nhi\nhi\n"  # hello, again, /slash; no prompt on a pipe
    err = proc.stderr
    assert "chatting with ft-m (step-00000001)" in err
    assert "system message set: be brief" in err and "conversation reset" in err
    assert "unknown command /nope" in err and "/save FILE" in err
    assert json.loads(out1.read_text()) == {"messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"}, {"role": "user", "content": "again"},
        {"role": "assistant", "content": "hi"}]}
    assert json.loads(out2.read_text())["messages"] == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "/slash"},
        {"role": "assistant", "content": "hi"}]
    assert len(out1.read_text().splitlines()) == 1  # one JSONL row


@pytest.mark.slow  # a real process (torch's import)
def test_chat_repl_compare_base_and_end_of_input(chat_home):
    proc = subprocess.run(
        [sys.executable, "-m", "llm_trainer", "chat", "ft-m", "--compare-base", *GREEDY],
        input="hello\n", capture_output=True, text=True, timeout=120, cwd=chat_home,
        env={**os.environ, "LLM_TRAINER_HOME": str(chat_home), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr  # the end of the input ends it
    assert proc.stdout == ("[ft-m (step-00000001)]\nhi\n"
                           "[base: base-m (step-00000001)]\nyo\n")


def test_generate_chat_from_a_checkpoint_folder(chat_home):
    folder = chat_home / "checkpoints" / "ft-m" / "step-00000001"
    proc = run_cli("generate", "--checkpoint", str(folder), "--chat", "--prompt", "hello",
                   "--compare-base", *GREEDY, home=chat_home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("hi\n[base: base-m (step-00000001)]\nyo\n")


@pytest.mark.slow  # a real process on a pseudo-terminal
def test_chat_at_a_terminal_prompts_and_ends_at_ctrl_d(chat_home):
    import pty
    import select
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_trainer", "chat", "ft-m", *GREEDY], stdin=slave,
        stdout=slave, stderr=slave, cwd=chat_home, close_fds=True,
        env={**os.environ, "LLM_TRAINER_HOME": str(chat_home), "HF_HUB_OFFLINE": "1",
             "TERM": "dumb"})
    os.close(slave)
    seen = b""

    def read_until(needle: bytes, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while needle not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        assert needle in seen, seen

    try:
        read_until(b"> ")
        os.write(master, b"hello\n")
        read_until(b"hi\r\n> ")
        os.write(master, b"\x04")  # Ctrl-D at the prompt
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
