#!/usr/bin/env python
"""Does llama.cpp hold a conversation with our GGUF export as we do? (Not CI: needs
``llama-cpp-python``, which builds llama.cpp from source.)

    python benchmarks/chat_llamacpp.py --home HOME --model NAME --task reverse [--n 50]

1. ``llm-trainer models export NAME --format gguf`` (f32);
2. ``llama_cpp.Llama(path, n_ctx=block_size)``: with no ``chat_format`` given, llama-cpp-python
   renders conversations with the file's own ``tokenizer.chat_template`` (jinja) and stops at
   its end-of-generation tokens (``tokenizer.ggml.eos_token_id`` / ``eot_token_id``);
3. for ``--n`` prompts "TASK: word": ``create_chat_completion`` at temperature 0 against our
   greedy reply through ``Service.chat`` (what ``generate --chat`` calls), and llama.cpp's
   tokens of the rendered prompt against ours (``chat.prompt_ids``).

Prints a JSON summary (``--json PATH`` writes it too); exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat_synthetic import TASKS, words


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", choices=sorted(TASKS), default="reverse")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from llama_cpp import Llama

    from llm_trainer.data.chat import Message, prompt_ids
    from llm_trainer.inference.settings import GenerationSettings
    from llm_trainer.service import Service

    home = args.home.resolve()
    gguf = home / f"{args.model}-chat.gguf"
    env = {**os.environ, "LLM_TRAINER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "llm_trainer", "models", "export", args.model,
                    "--format", "gguf", "--out", str(gguf), "--force"], env=env, check=True,
                   capture_output=True)
    settings = GenerationSettings(max_new_tokens=24, temperature=0.0, top_k=None)
    chat = Service(home).chat(settings, model=args.model, device="cpu")
    session = chat.session
    block = session.generator.block_size
    llm = Llama(model_path=str(gguf), n_ctx=block, verbose=False, seed=0)
    prompts = [f"{args.task}: {w}" for w in words(random.Random(7), args.n)]
    same_text = same_ids = right = 0
    diffs = []
    for prompt in prompts:
        chat.reset()
        ours = "".join(session.reply(prompt, settings))
        out = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}],
                                         temperature=0.0, max_tokens=24)
        theirs = out["choices"][0]["message"]["content"]
        rendered = session.template.render([Message("user", prompt)],
                                           add_generation_prompt=True)
        ids = llm.tokenize(rendered.encode(), add_bos=False, special=True)
        ours_ids = prompt_ids(session.generator.tokenizer, session.template,
                              [Message("user", prompt)])
        same_text += ours == theirs
        same_ids += list(ids) == list(ours_ids)
        right += ours == TASKS[args.task](prompt.split(": ", 1)[1])
        if ours != theirs and len(diffs) < 5:
            diffs.append({"prompt": prompt, "ours": ours, "llama.cpp": theirs})
    summary = {"model": args.model, "gguf": str(gguf), "prompts": len(prompts),
               "same_reply": same_text, "same_prompt_tokens": same_ids,
               "ours_exactly_right": right, "differences": diffs}
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if same_text == same_ids == len(prompts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
