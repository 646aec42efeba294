#!/usr/bin/env python
"""Does llama.cpp run our GGUF export as we do? (Not CI: needs ``llama-cpp-python``.)

For each case (a shakespeare-char-sized model, trained here for ``--steps`` steps unless
``--model`` names one under ``--home``):

1. ``llm-trainer models export NAME --format gguf --dtype D`` for each of ``--dtypes``
   (f32, f16, q8_0 and the 4/5-bit types);
2. load each with ``llama_cpp.Llama(path, logits_all=True, n_ctx=block_size)``;
3. **tokenizer** (f32 file): llama.cpp's tokenisation of the prompt and of ``--text-chars``
   characters of the data equals ours, and its detokenisation gives the text back;
4. **greedy**: ``--tokens`` new tokens, ours from ``TextGenerator.generate_ids`` (KV cache,
   temperature 0, float32) and llama.cpp's as the argmax of ``llm.scores`` after
   ``llm.eval``, from the same prompt ids: identical or not, and how many of the tokens
   agree before the first difference;
5. **logits**: max |ours - llama.cpp| over every position of prompt + our continuation
   (ours from one full forward pass), with llama.cpp's default f16 KV cache for every file
   and with an f32 one for the f32 file; the share of positions whose argmax agrees;
6. the file's size.

Cases: the ``shakespeare-char`` preset with ``data.tokenizer=bpe`` (``--vocab-size``), as
llama.cpp's ``gpt2`` architecture: as the preset trains it (exact erf GELU, no biases), with
``model.activation=gelu_tanh`` (the GELU llama.cpp's gpt2 graph computes), and the ``byte``
tokenizer (no merges: the empty merges array); as its ``llama`` architecture (rope, rmsnorm,
swiglu, 2 key/value heads for 4 query heads, tied head); and as ``qwen3`` (the same with
QK-norm and an untied head). Prints a JSON summary; ``--json PATH`` writes it too. Exit
status 1 if the f32 file's greedy continuation differs, a tokenisation does not match, or an
f32 / f16 file's logit differs by more than ``--tol`` (quantized files are measured, not
judged).

    .venv/bin/python benchmarks/bench_llamacpp.py
    .venv/bin/python benchmarks/bench_llamacpp.py --cases bpe-llama --dtypes f32,q8_0
    .venv/bin/python benchmarks/bench_llamacpp.py --home ~/.llm-trainer --model my-bpe-model
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
PRESET = "shakespeare-char"
LLAMA = ["data.tokenizer=bpe", "model.pos=rope", "model.norm=rmsnorm",
         "model.activation=swiglu", "model.bias=false", "model.n_kv_head=2"]
CASES = {  # name: --set flags on top of the preset
    "bpe-gelu": ["data.tokenizer=bpe"],
    "bpe-gelu_tanh": ["data.tokenizer=bpe", "model.activation=gelu_tanh"],
    "byte-gelu_tanh": ["data.tokenizer=byte", "model.activation=gelu_tanh"],
    "bpe-llama": LLAMA,
    "bpe-qwen3": [*LLAMA, "model.qk_norm=true", "model.tie_embeddings=false"],
}
DTYPES = ("f32", "f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
JUDGED = ("f32", "f16")  # files held to --tol; quantized ones are measured
GGML_TYPE_F32 = 0  # llama.cpp's KV cache type for type_k / type_v


def cli(home: Path, *args: str) -> str:
    env = {**os.environ, "LLM_TRAINER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "llm_trainer", *args], capture_output=True,
                          text=True, env=env, cwd=str(home))
    if proc.returncode != 0:
        raise SystemExit(f"llm-trainer {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def train(home: Path, name: str, flags: list[str], args) -> float:
    sets = [*flags, f"train.max_steps={args.steps}", f"train.eval_interval={args.steps}",
            f"data.vocab_size={args.vocab_size}"]
    t0 = time.perf_counter()
    cli(home, "train", "--preset", PRESET, "--dataset", str(args.data), "--name", name,
        "--foreground", "--sample", "0", *[x for s in sets for x in ("--set", s)])
    return time.perf_counter() - t0


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)], dtype=np.float32)


def llama_greedy(llm, ids: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out: list[int] = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare(home: Path, name: str, args, text: str) -> dict:
    import torch
    from llama_cpp import Llama

    from llm_trainer.checkpoint_io import read_checkpoint
    from llm_trainer.inference.generate import GenerationSettings, TextGenerator
    from llm_trainer.store.checkpoints import resolve_checkpoint

    info = resolve_checkpoint(home / "checkpoints" / name, "latest")
    ckpt = read_checkpoint(info.path)
    shape = ckpt.shape
    gen = TextGenerator.from_checkpoint(info.path, "cpu")
    tok = ckpt.tokenizer
    ids = tok.encode(args.prompt)
    if len(ids) + args.tokens > shape.block_size:
        raise SystemExit(f"prompt ({len(ids)} tokens) + --tokens {args.tokens} must fit the "
                         f"context ({shape.block_size}): llama.cpp's gpt2 cannot slide it")
    ours = list(gen.generate_ids(ids, GenerationSettings(max_new_tokens=args.tokens,
                                                         temperature=0.0, top_k=None)))
    window = ids + ours
    with torch.inference_mode():
        our_logits = gen.model(torch.tensor([window]))[0][0].float().numpy()

    files = {}
    for dtype in args.dtypes.split(","):
        files[dtype] = home / "exports" / f"{name}-{dtype}.gguf"
        cli(home, "models", "export", name, "--format", "gguf", "--dtype", dtype, "--out",
            str(files[dtype]), "--force")

    def load(path: Path, **kw) -> Llama:
        return Llama(model_path=str(path), logits_all=True, n_ctx=shape.block_size,
                     verbose=False, **kw)

    llm = load(files["f32"])
    sample = text[:args.text_chars]
    llama_ids = llm.tokenize(sample.encode(), add_bos=False, special=False)
    prompt_ids = llm.tokenize(args.prompt.encode(), add_bos=False, special=False)
    del llm

    def measure(path: Path, **kw) -> dict:
        llm = load(path, **kw)
        logits = llama_logits(llm, window)
        theirs = llama_greedy(llm, ids, args.tokens)
        del llm
        first = first_difference(theirs, ours)
        return {"file_bytes": path.stat().st_size, "greedy_match": theirs == ours,
                "greedy_agree_tokens": len(ours) if first is None else first,
                "llama_cpp": theirs,
                "max_abs_logit_diff": float(np.abs(logits - our_logits).max()),
                "argmax_agreement": float((logits.argmax(-1) == our_logits.argmax(-1)).mean())}

    per_dtype = {dtype: measure(path) for dtype, path in files.items()}
    f32_kv = measure(files["f32"], type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    return {
        "model": name, "checkpoint": info.path.name, "architecture": gguf_arch(files["f32"]),
        "shape": shape.describe(), "activation": shape.activation,
        "bias": shape.bias, "tokenizer": tok.kind, "vocab_size": shape.vocab_size,
        "merges": len(json.loads(tok.to_str())["model"].get("merges") or []),
        "block_size": shape.block_size, "params": sum(p.numel() for p in gen.model.parameters()),
        "val_loss": info.val_loss,
        "prompt": args.prompt, "prompt_ids": ids,
        "tokenizer_prompt_match": prompt_ids == ids,
        "tokenizer_text_chars": len(sample), "tokenizer_text_tokens": len(tok.encode(sample)),
        "tokenizer_text_match": llama_ids == tok.encode(sample),
        "tokenizer_first_difference": first_difference(llama_ids, tok.encode(sample)),
        "detokenize_match": llm_detokenize_ok(files["f32"], tok.encode(sample), sample,
                                              shape.block_size),
        "greedy_tokens": args.tokens, "ours": ours,
        "greedy_match": per_dtype["f32"]["greedy_match"],
        "continuation": tok.decode(ours),
        "logit_positions": len(window),
        "logit_range": [float(our_logits.min()), float(our_logits.max())],
        "f16_kv_cache": per_dtype,  # llama.cpp's default
        "f32_file_f32_kv_cache": f32_kv,
        "within_tolerance": {d: r["max_abs_logit_diff"] <= args.tol
                             for d, r in [*per_dtype.items(), ("f32 KV", f32_kv)]
                             if d in (*JUDGED, "f32 KV")},
    }


def gguf_arch(path: Path) -> str:
    import gguf

    return gguf.GGUFReader(str(path)).fields["general.architecture"].contents()


def llm_detokenize_ok(path: Path, ids: list[int], text: str, n_ctx: int) -> bool:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=n_ctx, verbose=False, vocab_only=True)
    return llm.detokenize(ids).decode("utf-8", errors="replace") == text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--home", type=Path, help="llm-trainer home (default: a temporary one)")
    ap.add_argument("--model", help="compare this model (under --home) instead of training")
    ap.add_argument("--cases", default=",".join(CASES), help="which models to train")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--prompt", default="ROMEO:\nWhat")
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="GGUF types to export (f32 "
                                                               "is always needed)")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--text-chars", type=int, default=5000)
    ap.add_argument("--tol", type=float, default=1e-2, help="max |logit difference| allowed")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        print("needs llama-cpp-python: CMAKE_ARGS=-DGGML_NATIVE=ON .venv/bin/pip install "
              "llama-cpp-python", file=sys.stderr)
        return 2
    if not args.model and not args.data.is_file():
        print(f"no data at {args.data}: pass --data PATH", file=sys.stderr)
        return 2
    text = args.data.read_text(encoding="utf-8") if args.data.is_file() else args.prompt
    tmp = None if args.home else tempfile.TemporaryDirectory(prefix="bench-llamacpp-")
    home = args.home or Path(tmp.name)
    summary: dict = {"llama_cpp_python": llama_cpp.__version__, "preset": PRESET,
                     "steps": args.steps, "tolerance": args.tol, "cases": []}
    try:
        names = [args.model] if args.model else args.cases.split(",")
        for name in names:
            train_s = None if args.model else train(home, name, CASES[name], args)
            result = compare(home, name, args, text)
            result["train_s"] = None if train_s is None else round(train_s, 1)
            summary["cases"].append(result)
            for dtype, r in result["f16_kv_cache"].items():
                print(f"{name} {dtype}: {r['file_bytes']:,} bytes, greedy "
                      f"{r['greedy_agree_tokens']}/{args.tokens}, max |logit diff| "
                      f"{r['max_abs_logit_diff']:.2e}, argmax {r['argmax_agreement']:.3f}",
                      file=sys.stderr)
    finally:
        if tmp is not None:
            tmp.cleanup()
    text_out = json.dumps(summary, indent=2)
    print(text_out)
    if args.json:
        args.json.write_text(text_out)
    ok = all(c["greedy_match"] and c["tokenizer_text_match"] and c["tokenizer_prompt_match"]
             and all(c["within_tolerance"].values()) for c in summary["cases"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
