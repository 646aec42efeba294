"""A jinja chat template as Ollama's Go TEMPLATE: ChatML's exact text; Llama-3 and Gemma
style templates rewritten piece by piece and equal, conversation by conversation, to the
jinja rendering; templates of another shape get ChatML's with a note."""

from __future__ import annotations

import pytest

from llm_trainer.data.chat import ChatTemplate, Message
from llm_trainer.inference.ollama_template import go_render, ollama_template, wrapping

CHATML_GO = (
    '{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\n'
    '{{- range .Messages }}\n'
    '{{- if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
    '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n'
    '{{ end }}\n'
    '{{- end }}<|im_start|>assistant\n')
# a Llama-3 style folder's own template: BOS first, headers, <|eot_id|> ending each turn
LLAMA3 = (
    "{{- bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content']"
    " | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")

GEMMA = (  # refuses system turns; the assistant is "model"
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")
QWEN_DEFAULT_SYSTEM = (  # ChatML, with a system prompt of its own when none is given
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SYSTEM_IN_FIRST_TURN = (  # Gemma 3: the system text goes into the first user turn
    "{% if messages[0]['role'] == 'system' %}{% set first = messages[0]['content'] + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set first = '' %}"
    "{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\n' + "
    "(first if loop.first else '') + message['content'] + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")

CONVERSATIONS = [
    [Message("user", "hi")],
    [Message("system", "be kind"), Message("user", "hi")],
    [Message("system", "s"), Message("user", "a b"), Message("assistant", "c\nd"),
     Message("user", "e"), Message("assistant", "f"), Message("user", "g")],
    [Message("user", "x"), Message("assistant", "y"), Message("user", "z")],
]


def hf(source: str, bos: str | None, eos: str | None, end: str) -> ChatTemplate:
    return ChatTemplate(source, "hf", bos, eos, end, ())


def test_chatml_is_written_as_ollamas_messages_template():
    template = ollama_template(ChatTemplate.chatml(), "<|endoftext|>")
    assert template.text == CHATML_GO
    assert template.stops == ("<|im_end|>", "<|endoftext|>")
    assert template.note is None


@pytest.mark.parametrize(("chat", "head", "stops"), [
    (ChatTemplate.chatml(), "", ("<|im_end|>",)),
    (hf(LLAMA3, "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"), "<|begin_of_text|>",
     ("<|eot_id|>", "<|end_of_text|>")),
])
def test_a_wrapped_template_renders_every_conversation_as_jinja_does(chat, head, stops):
    w = wrapping(chat)
    assert w is not None and w.head == head and w.system is not None
    for messages in CONVERSATIONS:
        turns = [(m.role, m.content) for m in messages]
        assert go_render(w, turns) == chat.render(messages, add_generation_prompt=True)
    template = ollama_template(chat)
    assert template.stops == stops and template.note is None
    assert "{{ .System }}" in template.text and "{{ .Content }}" in template.text


def test_a_template_that_refuses_system_turns_leaves_system_out():
    chat = hf(GEMMA, "<bos>", "<eos>", "<end_of_turn>")
    template = ollama_template(chat)
    assert template.note is None and ".System" not in template.text
    assert template.text.startswith("<bos>{{ range .Messages }}")
    assert template.text.endswith("{{- end }}<start_of_turn>model\n")
    assert template.stops == ("<end_of_turn>", "<eos>")
    w = wrapping(chat)
    for messages in (CONVERSATIONS[0], CONVERSATIONS[3]):
        assert go_render(w, [(m.role, m.content) for m in messages]) == \
            chat.render(messages, add_generation_prompt=True)


BRACES = (  # of the right shape, but its text would need Go-template escaping
    "{% for m in messages %}{{ '{{' + m['role'] + ':' + m['content'] + '}}<|im_end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '{{assistant:' }}{% endif %}")


@pytest.mark.parametrize("source", [QWEN_DEFAULT_SYSTEM, SYSTEM_IN_FIRST_TURN, BRACES])
def test_another_shape_gets_chatmls_template_with_a_note(source):
    chat = hf(source, None, None, "<|im_end|>" if "im_end" in source else "<end_of_turn>")
    assert wrapping(chat) is None
    template = ollama_template(chat, "<|endoftext|>")
    assert template.text == CHATML_GO
    assert "not the model's own" in template.note
    assert template.stops[0] == "<|im_end|>" and "<|endoftext|>" in template.stops
