"""`models export`: write a model for other tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llm_trainer.cli.common import echo, service
from llm_trainer.errors import UsageError


def models_export(
    name: Annotated[str | None, typer.Argument(help="model name (default: the active one)")
                    ] = None,
    out: Annotated[str, typer.Option("--out", help="folder to write (a .gguf file for gguf)")
                   ] = "",
    fmt: Annotated[str, typer.Option("--format", help="hf (transformers GPT-2), safetensors, "
                                                      "gguf (llama.cpp), ollama or peft (a "
                                                      "LoRA model's adapters)")] = "hf",
    checkpoint: Annotated[str, typer.Option(help="latest, best or a step")] = "latest",
    dtype: Annotated[str | None, typer.Option(help="gguf/ollama weights: f32 (default), f16, "
                                                   "q8_0, q5_1, q5_0, q4_1 or q4_0")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite: write into a non-empty "
                                                        "folder, or replace a .gguf file")
                     ] = False,
) -> None:
    """Write a model for other tools: a Hugging Face folder (GPT-2, Llama or Qwen3), bare
    safetensors, a GGUF file for llama.cpp, an Ollama folder (model.gguf + Modelfile), or a
    LoRA model's adapters for peft."""
    import shlex

    if not out:
        example = {"gguf": "exports/my-model.gguf"}.get(fmt, "exports/my-model")
        raise UsageError("--out is required", hint=f"e.g. --out {example}")
    r = service().export_model(name, out, fmt, checkpoint=checkpoint, overwrite=force,
                                dtype=dtype)
    for note in r.notes:
        echo(f"warning: {note}", err=True)
    what = f"{fmt} ({dtype or 'f32'})" if fmt in ("gguf", "ollama") else fmt
    echo(f"exported {r.model} ({r.checkpoint}) as {what} to {r.path}")
    if fmt == "hf":
        echo(f"  load it: AutoModelForCausalLM.from_pretrained({r.path!r})")
    elif fmt == "gguf" and r.context:  # llama.cpp and llama-cpp-python default to another context
        # a chat model: conversation mode, which writes the turns with the file's template
        ask = "-cnv" if r.chat else '-p "Once upon a time"'
        echo(f"  run it: llama-cli -m {shlex.quote(r.path)} -c {r.context} -n "
             f"{r.context // 2} {ask}")
        echo(f"  or: Llama(model_path={r.path!r}, n_ctx={r.context})  # llama-cpp-python")
    elif fmt == "peft":
        echo(f"  load it: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("
             f"{r.base or 'BASE'!r}), {r.path!r})")
        if r.resize:
            echo(f"  the chat template added tokens: base.resize_token_embeddings({r.resize}) "
                 "first")
        if r.base is None:
            echo("  BASE: the transformers folder of the model it was trained on (`llm-trainer "
                 "models export THAT_MODEL --format hf`)")
    elif fmt == "ollama":
        echo(f"  add it to Ollama: ollama create {shlex.quote(r.model)} -f "
             f"{shlex.quote(str(Path(r.path) / 'Modelfile'))}")
