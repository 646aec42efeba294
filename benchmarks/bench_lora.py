"""LoRA against full fine-tuning on a GPT-2-small-shaped model: what trains, what it costs.

    python benchmarks/bench_lora.py [--steps 6] [--seq-len 256] [--batch 2]

Random weights (the figures do not depend on them), built exactly as ``train --init-from``
builds the model (``llm_trainer.model.lora``, the trainer's ``build_optimizer``). For each
of full fine-tuning, ``--freeze-layers 6`` and LoRA r=8 / r=16 on c_attn + c_proj it reports:
trainable parameters, gradient and AdamW state memory (measured: the bytes of the tensors the
optimizer holds after a step), and the median step time (forward + backward + optimizer, fp32,
this machine's cores). Times are compared as ratios to full fine-tuning, measured in one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from llm_trainer.config import load_config
from llm_trainer.model.gpt import GPT, GPTShape
from llm_trainer.model.lora import apply_lora, freeze_layers, trainable
from llm_trainer.training.trainer import build_optimizer

GPT2_SMALL = dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)


def measure(kind: str, args) -> dict:
    torch.manual_seed(0)
    model = GPT(GPTShape(**GPT2_SMALL))
    extra = {}
    if kind.startswith("lora"):
        r = int(kind.split("-r")[1])
        model = apply_lora(model, {"r": r, "alpha": 2 * r, "dropout": 0.0,
                                   "targets": ["c_attn", "c_proj"]})
        extra = {"finetune.lora_r": r}
    elif kind == "freeze-6":
        freeze_layers(model, 6)
    cfg = load_config(overrides={"train.lr": 1e-4, **extra})
    opt, _ = build_optimizer(model, cfg, "cpu")
    n_train, n_all = trainable(model)
    x = torch.randint(0, GPT2_SMALL["vocab_size"], (args.batch, args.seq_len))
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        times.append(time.perf_counter() - t0)
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                if torch.is_tensor(t) and t.dim() > 0)
    grads = sum(p.grad.numel() * p.grad.element_size()
                for p in {id(p): p for p in model.parameters()}.values() if p.grad is not None)
    return {"kind": kind, "trainable": n_train, "total": n_all,
            "trainable_share": n_train / n_all, "optimizer_state_mb": state / 2**20,
            "gradient_mb": grads / 2**20, "step_s": statistics.median(times[1:])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    rows = [measure(k, args) for k in ("full", "freeze-6", "lora-r8", "lora-r16")]
    full = rows[0]
    print(f"{'':10} {'trainable':>12} {'share':>7} {'AdamW state':>12} {'grads':>9} "
          f"{'step':>8} {'vs full':>8}")
    for r in rows:
        print(f"{r['kind']:10} {r['trainable']:>12,} {r['trainable_share']:>7.2%} "
              f"{r['optimizer_state_mb']:>9.1f} MB {r['gradient_mb']:>6.1f} MB "
              f"{r['step_s']:>7.2f}s {r['step_s'] / full['step_s']:>7.2f}x")
    print(json.dumps({"shape": GPT2_SMALL, "batch": args.batch, "seq_len": args.seq_len,
                      "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
