"""The Ollama folder and llama.cpp's defaults: the Modelfile, parsed, samples as `generate`
does by default (Ollama's own defaults differ: top_p 0.9, repeat_penalty 1.1, top_k 40), the
GGUF's ``general.sampling.*`` keys say the same to llama.cpp, and a model trained on data
stops where its documents ended: the separator training put between documents is the GGUF's
EOS and the Modelfile's stop."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from llm_trainer.data.chat import IM_END, ChatTemplate, with_chat_tokens
from llm_trainer.data.tokenizer import EOT, TextTokenizer
from llm_trainer.inference.settings import GenerationSettings
from llm_trainer.model.gpt import GPT
from llm_trainer.model.shape import ModelShape
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]


def save(root, name: str, tok: TextTokenizer, chat: ChatTemplate | None = None):
    """A checkpoint of an untrained tiny GPT-2 shaped model (no training: what is checked
    here is the files around the weights)."""
    from llm_trainer.checkpoint_io import read_checkpoint, save_checkpoint
    from llm_trainer.config import RunConfig

    shape = ModelShape(vocab_size=tok.vocab_size, block_size=24, n_layer=1, n_head=2, n_embd=32)
    torch.manual_seed(0)
    model = GPT(shape)
    path = save_checkpoint(root / "checkpoints" / name, model=model,
                           optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                           trainer_state={"step": 1, "schedule": {}}, config=RunConfig(),
                           shape=shape, tokenizer=tok, step=1, epoch=0.1, val_loss=None,
                           chat=chat)
    return read_checkpoint(path)


def parse_modelfile(text: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Ollama's Modelfile instructions (FROM, TEMPLATE...), its PARAMETERs but stop, and the
    stops (JSON strings, as written)."""
    import json

    instructions, parameters, stops = {}, {}, []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word != "PARAMETER":
            instructions.setdefault(word, rest)
            continue
        name, _, value = rest.partition(" ")
        if name == "stop":
            stops.append(json.loads(value))
        else:
            assert name not in parameters, f"{name} twice"
            parameters[name] = value
    return instructions, parameters, stops


def ollama_settings(parameters: dict[str, str]) -> GenerationSettings:
    """What Ollama samples with, as our settings: top_k 0 and top_p 1 are 'none' there."""
    top_k, top_p = int(parameters["top_k"]), float(parameters["top_p"])
    return GenerationSettings(max_new_tokens=int(parameters["num_predict"]),
                              temperature=float(parameters["temperature"]),
                              top_k=top_k or None, top_p=None if top_p == 1.0 else top_p,
                              repetition_penalty=float(parameters["repeat_penalty"]),
                              seed=int(parameters["seed"]) if "seed" in parameters else None)


def generate_defaults() -> GenerationSettings:
    """The settings object `llm-trainer generate` builds when given no sampling option."""
    from llm_trainer.cli.options import GENERATION_PARAMETERS

    return GenerationSettings(**{p.name: p.default for p in GENERATION_PARAMETERS})


def test_generate_defaults_are_the_settings_defaults():
    """One source of the numbers: the CLI's option defaults are GenerationSettings' own."""
    assert generate_defaults() == GenerationSettings()


def test_modelfile_samples_as_generate(tmp_path):
    from llm_trainer.inference.export import export

    ckpt = save(tmp_path, "base", TextTokenizer.build_byte())
    out = export(ckpt, tmp_path / "ollama", "ollama")
    instructions, parameters, stops = parse_modelfile((out / "Modelfile").read_text())
    assert instructions["FROM"] == "./model.gguf"
    assert ollama_settings(parameters) == generate_defaults()
    # every parameter where Ollama's default is not ours, written out; the rest of the chain
    # (min_p) off, the penalty over every token seen, and the model's context
    assert parameters == {"temperature": "0.8", "top_k": "200", "top_p": "1.0", "min_p": "0.0",
                          "repeat_penalty": "1.0", "repeat_last_n": "-1", "num_ctx": "24",
                          "num_predict": "200"}
    assert stops == [EOT]
    documented = [line for line in (ROOT / "docs" / "export.md").read_text().splitlines()
                  if line.startswith("PARAMETER ")]
    written = [line for line in (out / "Modelfile").read_text().splitlines()
               if line.startswith("PARAMETER ")]
    assert documented == [line.replace("num_ctx 24", "num_ctx 256") for line in written]
    # llama.cpp's own defaults for the file: the same numbers
    reader = gguf.GGUFReader(str(out / "model.gguf"))
    keys = {k.removeprefix("general.sampling."): f.contents() for k, f in reader.fields.items()
            if k.startswith("general.sampling.")}
    assert keys == {"temp": pytest.approx(0.8), "top_k": 200, "top_p": 1.0, "min_p": 0.0,
                    "penalty_repeat": 1.0, "penalty_last_n": -1}
    assert reader.fields["gpt2.context_length"].contents() == 24


def test_chat_modelfile_stops_at_the_end_of_turn_and_the_separator(tmp_path):
    from llm_trainer.inference.export import export

    tok = with_chat_tokens(TextTokenizer.build_byte(), ChatTemplate.chatml())
    ckpt = save(tmp_path, "chat", tok, ChatTemplate.chatml())
    out = export(ckpt, tmp_path / "ollama", "ollama")
    _, parameters, stops = parse_modelfile((out / "Modelfile").read_text())
    assert stops == [IM_END, EOT]
    assert ollama_settings(parameters) == generate_defaults()
    reader = gguf.GGUFReader(str(out / "model.gguf"))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert tokens[reader.fields["tokenizer.ggml.eot_token_id"].contents()] == IM_END


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bytes", "bpe"])
def test_a_model_trained_on_data_stops_at_its_separator(trained_zoo, tmp_path, name):
    """The zoo's models trained on a text of paragraphs (tests/conftest.py): the tokens they
    trained on hold the separator after each document, and the export names that token as
    EOS (llama.cpp stops there) and as the Modelfile's stop."""
    from llm_trainer.checkpoint_io import read_checkpoint
    from llm_trainer.store.atomic import read_record
    from llm_trainer.store.checkpoints import resolve_checkpoint

    home = tmp_path / "home"
    shutil.copytree(trained_zoo, home)
    ckpt = read_checkpoint(resolve_checkpoint(home / "checkpoints" / name, "latest").path)
    eot = ckpt.tokenizer.eot_id
    assert eot is not None and ckpt.tokenizer.tok.id_to_token(eot) == EOT
    manifests = [read_record(p) for p in (home / "data" / "tokens").glob("*/manifest.json")]
    manifest = next(m for m in manifests if m["tokenizer_sha256"] == ckpt.tokenizer.sha256)
    assert manifest["separator"] == eot
    folder = next(p.parent for p in (home / "data" / "tokens").glob("*/manifest.json")
                  if read_record(p) == manifest)
    train = np.fromfile(next(folder.glob("train-*.bin")), dtype=manifest["dtype"])
    documents = manifest["splits"]["train"]["documents"]
    assert documents > 1 and int((train == eot).sum()) == documents

    out = tmp_path / "ollama"
    proc = run_cli("models", "export", name, "--format", "ollama", "--out", str(out), home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reader = gguf.GGUFReader(str(out / "model.gguf"))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert reader.fields["tokenizer.ggml.eos_token_id"].contents() == eot
    assert tokens[eot] == EOT
    assert reader.fields["tokenizer.ggml.token_type"].contents()[eot] == gguf.TokenType.CONTROL
    assert parse_modelfile((out / "Modelfile").read_text())[2] == [EOT]


EXPORT_ALL = """
import sys
from pathlib import Path
from llm_trainer.checkpoint_io import read_checkpoint
from llm_trainer.inference.export import export
ckpt, out = read_checkpoint(Path(sys.argv[1])), Path(sys.argv[2])
for fmt in ("hf", "safetensors", "ollama"):
    export(ckpt, out / fmt, fmt)
export(ckpt, out / "model.gguf", "gguf")
"""


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_exported_files_follow_the_umask(tmp_path, umask):
    """Every file and folder an export writes gets the mode ``open`` and ``mkdir`` give under
    the user's umask, as config.json always had: not mkstemp's 0600 (model.gguf, Modelfile)
    nor the 0600 safetensors gives model.safetensors. One process per umask (it is read once
    per process)."""
    import os
    import stat
    import subprocess
    import sys

    ckpt = save(tmp_path, "m", TextTokenizer.build_byte())
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", EXPORT_ALL, str(ckpt.path), str(out)],
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: os.umask(umask))
    assert proc.returncode == 0, proc.stderr
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode))
             for p in sorted(out.rglob("*"))}
    assert {"model.gguf", "ollama/model.gguf", "ollama/Modelfile", "hf/model.safetensors",
            "hf/config.json", "safetensors/model.safetensors"} <= set(modes)
    assert modes == {name: oct((0o777 if (out / name).is_dir() else 0o666) & ~umask)
                     for name in modes}


@pytest.mark.parametrize("separator", ["</s>", "<|end_of_text|>"])
def test_another_tokenizers_separator_is_the_eos_and_the_stop(tmp_path, separator):
    """A tokenizer.json whose document separator is not ``<|endoftext|>`` (Llama 3's
    ``<|end_of_text|>``, the ``</s>`` of others): the one training separated documents with
    (``eot_id``) is the GGUF's EOS and the Modelfile's stop."""
    from tokenizers import AddedToken

    from llm_trainer.inference.export import export

    tok = TextTokenizer.build_byte(eot=False)
    tok.tok.add_special_tokens([AddedToken(separator, special=True, normalized=False)])
    tok = TextTokenizer.from_str(tok.to_str(), "file")
    assert tok.eot_id == 256
    out = export(save(tmp_path, "m", tok), tmp_path / "ollama", "ollama")
    reader = gguf.GGUFReader(str(out / "model.gguf"))
    assert reader.fields["tokenizer.ggml.eos_token_id"].contents() == 256
    assert reader.fields["tokenizer.ggml.tokens"].contents()[256] == separator
    assert parse_modelfile((out / "Modelfile").read_text())[2] == [separator]
