"""Exports keep the chat template: the Hugging Face folder (transformers' apply_chat_template
gives our prompt ids, its pipeline answers a list of messages with our greedy reply), the
GGUF file (tokenizer.chat_template, EOS and end-of-turn ids, read back with gguf.GGUFReader)
and the Ollama Modelfile (a Go TEMPLATE, PARAMETER stop at the end-of-turn marker), for our
ChatML and for a template imported from a Hugging Face folder (Llama-3 style), which leaves
unchanged. Tiny in-process checkpoints; the round trip trains one on a single conversation
for a second so that its greedy reply ends at <|im_end|>."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from llm_trainer.data.chat import (
    CHATML,
    IM_END,
    IM_START,
    ChatTemplate,
    Message,
    encode_conversation,
    prompt_ids,
    stop_ids,
    with_chat_tokens,
)
from llm_trainer.data.tokenizer import EOT, TextTokenizer
from llm_trainer.model.gpt import GPT
from llm_trainer.model.shape import ModelShape
from tests.unit.test_ollama_template import CHATML_GO, LLAMA3, QWEN_DEFAULT_SYSTEM

CONTROL = 3  # gguf.TokenType.CONTROL
TAUGHT = [Message("system", "be brief"), Message("user", "hello"),
          Message("assistant", "hi there")]
CONVERSATIONS = [
    TAUGHT[:2],  # the taught prompt: the reply ends at <|im_end|>
    [Message("user", "what is 2+2?"), Message("assistant", "4"), Message("user", "and 3+3?")],
]
MAX_NEW = 12

LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>")


def save(root, name: str, tok: TextTokenizer, chat: ChatTemplate | None, *,
         train_on: list[Message] | None = None, **options):
    """A checkpoint of a tiny GPT-2 shaped model; ``train_on``: overfit it on that one
    conversation's assistant tokens (masked loss), so its greedy reply is that reply."""
    from llm_trainer.checkpoint_io import read_checkpoint, save_checkpoint
    from llm_trainer.config import RunConfig

    shape = ModelShape(**(dict(vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=2,
                               n_embd=32) | options))
    torch.manual_seed(0)
    model = GPT(shape)
    if train_on is not None:
        ids, mask = encode_conversation(tok, chat, train_on)
        x, y = torch.tensor(ids[None, :-1]), torch.tensor(ids[None, 1:])
        trained = torch.tensor(mask[None, 1:])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(150):
            logits, _ = model(x)
            loss = F.cross_entropy(logits[trained], y[trained])
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 0.05
    model.eval()
    path = save_checkpoint(root / "checkpoints" / name, model=model,
                           optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                           trainer_state={"step": 1, "schedule": {}}, config=RunConfig(),
                           shape=shape, tokenizer=tok, step=1, epoch=0.1, val_loss=None,
                           chat=chat)
    return read_checkpoint(path)


def chatml_tokenizer() -> TextTokenizer:
    return with_chat_tokens(TextTokenizer.build_byte(), ChatTemplate.chatml())


def our_reply(ckpt, messages: list[Message]) -> tuple[list[int], bool]:
    """Our greedy chat decoding: the reply's ids before the first stop id, and whether it
    stopped there (rather than at MAX_NEW tokens)."""
    from llm_trainer.checkpoint_io import load_model
    from llm_trainer.inference.generate import TextGenerator
    from llm_trainer.inference.settings import GenerationSettings

    stops = set(stop_ids(ckpt.tokenizer, ckpt.chat))
    generator = TextGenerator(load_model(ckpt), ckpt.tokenizer)
    reply: list[int] = []
    settings = GenerationSettings(max_new_tokens=MAX_NEW, temperature=0.0, top_k=None)
    for token in generator.generate_ids(prompt_ids(ckpt.tokenizer, ckpt.chat, messages),
                                        settings):
        if token in stops:
            return reply, True
        reply.append(token)
    return reply, False


def ids_of(encoded) -> list[int]:
    """apply_chat_template's ids: a list (transformers 4) or a BatchEncoding (5)."""
    return list(encoded if isinstance(encoded, list) else encoded["input_ids"])


def llama3_folder(root):
    """A Hugging Face folder as a Llama-3 style model ships its tokenizer: byte-level BPE
    with the special tokens added, and tokenizer_config.json with its chat_template."""
    from tokenizers import AddedToken

    tok = TextTokenizer.build_byte(eot=False)
    tok.tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in LLAMA3_SPECIALS])
    folder = root / "llama3-instruct"
    folder.mkdir()
    tok.save(folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>", "chat_template": LLAMA3,
        "clean_up_tokenization_spaces": False}))
    return folder


@pytest.mark.slow
def test_hf_export_chats_as_we_do_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from llm_trainer.inference.export import export

    tok = chatml_tokenizer()
    ckpt = save(tmp_path, "chat", tok, ChatTemplate.chatml(), train_on=TAUGHT)
    out = export(ckpt, tmp_path / "hf", "hf")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHATML
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == \
        (EOT, IM_END, EOT)
    assert config["additional_special_tokens"] == [IM_START]
    im_end, eot = tok.tok.token_to_id(IM_END), tok.eot_id
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [im_end, eot]  # end of turn first, EOS as well
    assert generation["pad_token_id"] == eot

    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    pipe = transformers.pipeline("text-generation", model=hf_model, tokenizer=hf_tok)
    stopped = []
    for messages in CONVERSATIONS:
        plain = [m.to_json() for m in messages]
        ours = prompt_ids(tok, ckpt.chat, messages)
        assert ids_of(hf_tok.apply_chat_template(plain, add_generation_prompt=True)) == ours
        reply, stop = our_reply(ckpt, messages)
        stopped.append(stop)
        # the same ids from transformers' greedy generate, ending at the same place
        with torch.no_grad():
            got = hf_model.generate(torch.tensor([ours]), do_sample=False,
                                    max_new_tokens=MAX_NEW)[0, len(ours):].tolist()
        assert got == ([*reply, im_end] if stop else reply)
        answer = pipe(plain, do_sample=False, max_new_tokens=MAX_NEW)[0]["generated_text"]
        assert answer[:-1] == plain
        assert answer[-1] == {"role": "assistant", "content": tok.decode(reply)}
    assert stopped[0] and tok.decode(our_reply(ckpt, TAUGHT[:2])[0]) == "hi there"


@pytest.mark.slow
def test_an_imported_template_survives_every_export(tmp_path):
    """A Llama-3 style folder's own template: unchanged in tokenizer_config.json (rendered by
    transformers as from the original folder, into our ids), in the GGUF file, and as the
    Llama-3 shaped Ollama TEMPLATE stopping at <|eot_id|>."""
    transformers = pytest.importorskip("transformers")
    import gguf

    from llm_trainer.inference.export import export

    folder = llama3_folder(tmp_path)
    chat = ChatTemplate.from_hf_folder(folder)
    assert (chat.kind, chat.end_of_turn) == ("hf", "<|eot_id|>")
    tok = TextTokenizer.from_file(folder / "tokenizer.json")
    ckpt = save(tmp_path, "imported", tok, chat)
    out = export(ckpt, tmp_path / "hf", "hf")
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["chat_template"] == LLAMA3
    assert (config["bos_token"], config["eos_token"]) == ("<|begin_of_text|>", "<|eot_id|>")
    assert ChatTemplate.from_hf_folder(out) == chat
    eot_id = tok.tok.token_to_id("<|eot_id|>")
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"][0] == eot_id
    assert tok.tok.token_to_id("<|end_of_text|>") in generation["eos_token_id"]
    original = transformers.AutoTokenizer.from_pretrained(str(folder))
    exported = transformers.AutoTokenizer.from_pretrained(str(out))
    for messages in CONVERSATIONS:
        plain = [m.to_json() for m in messages]
        text = exported.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)
        assert text.startswith("<|begin_of_text|><|start_header_id|>")
        assert text == original.apply_chat_template(plain, add_generation_prompt=True,
                                                    tokenize=False)
        assert text == chat.render(messages, add_generation_prompt=True)
        assert ids_of(exported.apply_chat_template(plain, add_generation_prompt=True)) == \
            prompt_ids(tok, chat, messages)

    reader = gguf.GGUFReader(str(export(ckpt, tmp_path / "m.gguf", "gguf")))
    assert reader.fields["tokenizer.chat_template"].contents() == LLAMA3
    assert reader.fields["tokenizer.ggml.eot_token_id"].contents() == eot_id
    assert reader.fields["tokenizer.ggml.bos_token_id"].contents() == \
        tok.tok.token_to_id("<|begin_of_text|>")
    modelfile = (export(ckpt, tmp_path / "ollama", "ollama") / "Modelfile").read_text()
    assert '{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>\n\n' \
        '{{ .Content }}<|eot_id|>' in modelfile
    assert 'TEMPLATE """<|begin_of_text|>{{ if .System }}' in modelfile
    assert 'PARAMETER stop "<|eot_id|>"' in modelfile
    assert "# note" not in modelfile


@pytest.mark.slow  # seconds: imports and prepares a dataset, or runs a dashboard
def test_gguf_holds_the_template_and_the_end_of_turn_id(tmp_path):
    import gguf

    from llm_trainer.inference.export import export

    tok = chatml_tokenizer()
    ckpt = save(tmp_path, "chat", tok, ChatTemplate.chatml(), block_size=16)
    reader = gguf.GGUFReader(str(export(ckpt, tmp_path / "chat.gguf", "gguf")))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    assert field("tokenizer.chat_template") == CHATML
    assert field("tokenizer.ggml.eos_token_id") == tok.eot_id == 256
    assert field("tokenizer.ggml.eot_token_id") == tok.tok.token_to_id(IM_END) == 258
    assert field("tokenizer.ggml.bos_token_id") == tok.eot_id
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    for marker in (IM_START, IM_END):  # each one token llama.cpp parses as special
        assert types[tokens.index(marker)] == CONTROL

    plain = save(tmp_path, "base", TextTokenizer.build_byte(), None, block_size=16)
    reader = gguf.GGUFReader(str(export(plain, tmp_path / "base.gguf", "gguf")))
    assert "tokenizer.chat_template" not in reader.fields
    assert "tokenizer.ggml.eot_token_id" not in reader.fields
    assert reader.fields["tokenizer.ggml.eos_token_id"].contents() == 256


def test_ollama_modelfile_has_the_chatml_template_and_stops(tmp_path):
    from llm_trainer.inference.export import export
    from llm_trainer.inference.gguf_export import export_notes

    tok = chatml_tokenizer()
    ckpt = save(tmp_path, "chat", tok, ChatTemplate.chatml(), block_size=16)
    modelfile = (export(ckpt, tmp_path / "ollama", "ollama") / "Modelfile").read_text()
    assert f'TEMPLATE """{CHATML_GO}"""\n' in modelfile
    lines = modelfile.splitlines()
    assert lines.index('PARAMETER stop "<|im_end|>"') < lines.index(f'PARAMETER stop "{EOT}"')
    assert "# note" not in modelfile and export_notes(ckpt, "ollama") == []
    # every special token of the jinja rendering is written by the TEMPLATE
    rendered = ckpt.chat.render(CONVERSATIONS[1] + [Message("assistant", "6")],
                                add_generation_prompt=True)
    specials = {t.content for t in tok.tok.get_added_tokens_decoder().values()}
    used = {t for t in specials if t in rendered}
    assert used == {IM_START, IM_END}
    assert all(t in CHATML_GO for t in used)

    plain = save(tmp_path, "base", TextTokenizer.build_byte(), None, block_size=16)
    modelfile = (export(plain, tmp_path / "plain", "ollama") / "Modelfile").read_text()
    assert 'TEMPLATE "{{ .Prompt }}"' in modelfile.splitlines()
    assert "im_end" not in modelfile


def test_a_template_ollama_cannot_copy_is_exported_with_a_note(tmp_path):
    from llm_trainer.inference.export import export
    from llm_trainer.inference.gguf_export import export_notes

    chat = ChatTemplate(QWEN_DEFAULT_SYSTEM, "hf", None, EOT, IM_END, (IM_START, IM_END))
    ckpt = save(tmp_path, "qwenish", chatml_tokenizer(), chat, block_size=16)
    modelfile = (export(ckpt, tmp_path / "ollama", "ollama") / "Modelfile").read_text()
    lines = modelfile.splitlines()
    assert lines[2].startswith("# note: the model's chat template is not a fixed text")
    assert f'TEMPLATE """{CHATML_GO}"""\n' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in lines
    assert [n for n in export_notes(ckpt, "ollama") if n.startswith("Ollama: ")]
    assert export_notes(ckpt, "gguf") == []  # the GGUF file holds the jinja itself


def test_safetensors_export_keeps_the_template_in_its_config(tmp_path):
    from llm_trainer.inference.export import export

    ckpt = save(tmp_path, "chat", chatml_tokenizer(), ChatTemplate.chatml(), block_size=16)
    config = json.loads((export(ckpt, tmp_path / "raw", "safetensors") / "config.json")
                        .read_text())
    assert ChatTemplate.from_json(config["chat"]) == ChatTemplate.chatml()


@pytest.mark.slow  # the CLI in process
def test_the_gguf_hint_runs_a_chat_model_in_conversation_mode(tmp_path):
    """llama-cli -p "Once upon a time" continues text; a chat model's GGUF is run with -cnv,
    which writes the turns with the file's tokenizer.chat_template."""
    from llm_trainer.store.models import ModelStore
    from tests.helpers import run_cli

    home = tmp_path / "home"
    for name, chat in (("chat", ChatTemplate.chatml()), ("text", None)):
        ModelStore(home).create(name, default_base=name)
        save(home, name, chatml_tokenizer() if chat else TextTokenizer.build_byte(), chat,
             block_size=16)
        proc = run_cli("models", "export", name, "--format", "gguf", "--out",
                       str(tmp_path / f"{name}.gguf"), home=home)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        hint = next(line for line in proc.stdout.splitlines() if "run it:" in line)
        assert hint.endswith(" -cnv" if chat else ' -p "Once upon a time"'), hint
