"""A conversation with a chat model (inference/chat.py, app/chat.py): replies end at the
end-of-turn token and leave it out, the history is trimmed to the context by whole exchanges,
and a fine-tuned model's base is found where a run records it. Tiny models whose greedy
replies are known (tests/chat_models.py); no training."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llm_trainer.data.chat import CHATML, IM_END, ChatTemplate, Message, prompt_ids
from llm_trainer.errors import NotFoundError, UsageError
from llm_trainer.inference.chat import ChatSession, _partial_marker, trim_history
from llm_trainer.inference.generate import TextGenerator
from llm_trainer.inference.settings import GenerationSettings
from llm_trainer.service import Service
from tests.chat_models import (
    chain_model,
    chat_tokenizer,
    fine_tuned_from,
    save_chat_model,
    save_lora_chat_model,
)

GREEDY = GenerationSettings(temperature=0.0, top_k=None, max_new_tokens=40)


def session(reply: str = "hi", *, block_size: int = 256, chat: bool = True,
            template: ChatTemplate | None = None, system: str | None = None) -> ChatSession:
    tok = chat_tokenizer(chat)
    return ChatSession(TextGenerator(chain_model(tok, reply, block_size=block_size), tok),
                       template or ChatTemplate.chatml(), system=system)


def test_reply_ends_at_the_end_of_turn_token_without_it():
    s = session("hi")
    ids, _, _ = s.prompt("hello", GREEDY.max_new_tokens)
    # the model itself goes on past its turn: only the stop ends the reply
    raw = s.tokenizer.decode(list(s.generator.generate_ids(ids, GREEDY)))
    assert raw.startswith(f"hi{IM_END}\nhi{IM_END}")
    assert "".join(s.reply("hello", GREEDY)) == "hi"
    assert s.messages == [Message("user", "hello"), Message("assistant", "hi")]


def test_end_of_turn_written_as_text_ends_the_reply_too():
    """A tokenizer without the marker as one token (a base model read with its child's
    template) spells it out: the reply is cut there, and the marker's start is held back."""
    template = ChatTemplate(CHATML, kind="hf", end_of_turn="</s>", special_tokens=())
    s = session("ok</s>xy", chat=False, template=template)
    pieces = list(s.reply("hello", GREEDY))
    assert "".join(pieces) == "ok"
    assert not any("<" in p for p in pieces)
    assert _partial_marker("abc<|im", (IM_END,)) == 4 and _partial_marker("a<b", (IM_END,)) == 0


def test_turns_system_reset_and_save(tmp_path):
    s = session("hi", system="be brief")
    assert "".join(s.reply("one", GREEDY)) == "hi"
    assert "".join(s.reply("two", GREEDY)) == "hi"
    assert [m.role for m in s.last_prompt] == ["system", "user", "assistant", "user"]
    path = s.save(tmp_path / "chat.jsonl")
    row = json.loads(path.read_text())
    assert row == {"messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "one"},
        {"role": "assistant", "content": "hi"}, {"role": "user", "content": "two"},
        {"role": "assistant", "content": "hi"}]}
    s.reset()
    assert s.messages == [Message("system", "be brief")]
    s.set_system("")
    assert s.messages == []
    with pytest.raises(UsageError, match="cannot write"):
        s.save(tmp_path / "no" / "such" / "folder.jsonl")


def test_history_is_trimmed_by_whole_exchanges_and_keeps_the_system_message():
    block, budget = 96, 8
    s = session("hi", block_size=block, system="sys")
    settings = GenerationSettings(temperature=0.0, top_k=None, max_new_tokens=budget)
    for i in range(6):
        assert "".join(s.reply(f"message number {i} " + "x" * 10, settings)) == "hi"
    assert len(s.messages) == 1 + 12  # the session keeps everything
    shown = s.last_prompt
    assert s.dropped >= 1
    assert shown[0] == Message("system", "sys") and shown[-1].role == "user"
    assert shown[-1].content.startswith("message number 5")
    assert shown[1:] == s.messages[-len(shown):-1]  # the newest turns, the reply not yet
    assert [m.role for m in shown[1:]] == ["user", "assistant"] * (len(shown) // 2 - 1) \
        + ["user"]
    # as many exchanges as fit: one more would not
    room = block - budget
    assert len(prompt_ids(s.tokenizer, s.template, shown)) <= room
    one_more = [shown[0], *s.messages[-len(shown) - 2:-1]]
    assert len(prompt_ids(s.tokenizer, s.template, one_more)) > room


def test_trim_history_drops_oldest_pairs_first():
    turns = [Message("user", "a"), Message("assistant", "b"), Message("user", "c"),
             Message("assistant", "d"), Message("user", "e")]
    system = [Message("system", "s")]
    kept, dropped = trim_history(system, turns, lambda m: len(m) <= 4)
    assert kept == turns[2:] and dropped == 1
    kept, dropped = trim_history(system, turns, lambda m: False)
    assert kept == [Message("user", "e")] and dropped == 2
    assert trim_history([], turns, lambda m: True) == (turns, 0)


def test_a_message_longer_than_the_context_is_refused():
    s = session("hi", block_size=32)
    with pytest.raises(UsageError, match="too long for the model"):
        list(s.reply("y" * 40, GREEDY))
    assert s.messages == []


# --------------------------------------------------------------------------- opening models


def test_compare_base_of_a_model_started_from_another(home):
    base = save_chat_model(home, "base-m", "yo")
    fine_tuned_from(home, "base-m", base, "ft-m", "hi")
    chat = Service(home).chat(GREEDY, model="ft-m", compare_base=True, device="cpu",
                              system="sys")
    answers = {side.label: "".join(stream) for side, stream in chat.answers("hello")}
    assert answers == {"ft-m (step-00000001)": "hi",
                       "base: base-m (step-00000001)": "yo"}
    assert chat.base.session.messages[0] == Message("system", "sys")
    assert chat.base.session.messages[-1] == Message("assistant", "yo")  # its own history
    chat.reset()
    assert [s.session.turns for s in chat.sides] == [[], []]


@pytest.mark.slow  # peft's import: seconds
def test_compare_base_of_a_lora_model_reads_its_base_folder(home):
    save_lora_chat_model(home, "lora-m", "ok", "hf:/gone/SmolLM2")
    chat = Service(home).chat(GREEDY, model="lora-m", compare_base=True, device="cpu")
    assert [(s.label, s.is_base) for s in chat.sides] == [
        ("lora-m (step-00000001)", False), ("base: hf:/gone/SmolLM2", True)]
    assert ["".join(stream) for _, stream in chat.answers("hello")] == ["ok", "ok"]


def test_compare_base_refusals(home):
    save_chat_model(home, "scratch", "hi")
    svc = Service(home)
    with pytest.raises(UsageError, match="trained from scratch: it has no base") as err:
        svc.chat(GREEDY, model="scratch", compare_base=True, device="cpu")
    assert "--init-from" in err.value.hint
    base = save_chat_model(home, "base-m", "yo")
    fine_tuned_from(home, "base-m", base, "ft-m", "hi")
    shutil.rmtree(base)
    with pytest.raises(NotFoundError, match="is gone"):
        svc.chat(GREEDY, model="ft-m", compare_base=True, device="cpu")
    assert svc.chat(GREEDY, model="ft-m", device="cpu").base is None  # still talks alone


def test_a_model_without_a_chat_template_is_refused_with_a_hint(home):
    save_chat_model(home, "plain", "hi", chat=False)
    with pytest.raises(UsageError, match="model plain has no chat template") as err:
        Service(home).chat(GREEDY, model="plain", device="cpu")
    assert "train it on chat data" in err.value.hint


def test_chat_base_names_the_init_source_without_reading_files(home):
    base = save_chat_model(home, "base-m", "yo")
    fine_tuned_from(home, "base-m", base, "ft-m", "hi")
    svc = Service(home)
    views = {m.name: m for m in svc.list_models()}
    assert svc.chat_base(views["ft-m"]) == "base-m (step-00000001)"
    assert svc.chat_base(views["base-m"]) is None


def test_compare_base_of_a_model_imported_from_a_hugging_face_folder(home, tmp_path):
    """The base read as the import read it: the folder's weights and tokenizer."""
    from llm_trainer.checkpoint_io import read_checkpoint
    from llm_trainer.config import RunConfig
    from llm_trainer.inference.export import export

    folder = export(read_checkpoint(save_chat_model(home, "src", "yo")), tmp_path / "hf", "hf")
    config = RunConfig().replace(**{"finetune.init_from": f"hf:{folder}"})
    save_chat_model(home, "ft-hf", "hi", config=config, lineage=[
        {"run_id": "r-import", "kind": "train", "from_checkpoint": str(folder)}])
    chat = Service(home).chat(GREEDY, model="ft-hf", compare_base=True, device="cpu")
    assert [(s.label, "".join(stream)) for s, stream in chat.answers("hello")] == [
        ("ft-hf (step-00000001)", "hi"), (f"base: hf:{folder}", "yo")]


def test_a_reply_that_opens_the_next_turn_ends_there():
    """A model that skips <|im_end|> and starts "<|im_start|>user" itself: cut at the marker."""
    tok = chat_tokenizer()
    model = chain_model(tok, "ok")
    start, end = (tok.tok.token_to_id(t) for t in ("<|im_start|>", IM_END))
    k = tok.tok.token_to_id("k")
    with torch.no_grad():  # after "k": the turn start instead of the end
        model.lm_head.weight[end, k] = 0.0
        model.lm_head.weight[start, k] = 20.0
    s = ChatSession(TextGenerator(model, tok), ChatTemplate.chatml())
    ids, _, _ = s.prompt("hello", 5)
    assert s.tokenizer.decode(list(s.generator.generate_ids(ids, GREEDY)))[:3] == "ok<"
    assert "".join(s.reply("hello", GREEDY)) == "ok"
