"""BatchedMuon is torch.optim.Muon with the Newton-Schulz iteration batched per shape."""

from __future__ import annotations

import pytest
import torch

from llm_trainer.training.muon import BatchedMuon, adjusted_lr

SHAPES = [(48, 16), (16, 16), (64, 16), (16, 64), (48, 16), (64, 16)]  # tall, square, wide


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g) * 0.05) for s in SHAPES]


def _grads(steps: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(s, generator=g) for s in SHAPES] for _ in range(steps)]


def _train(make, grads, nesterov: bool = True):
    params = _params()
    opt = make(params, lr=0.02, weight_decay=0.1, momentum=0.9, nesterov=nesterov)
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        opt.step()
    return params, opt


@pytest.mark.parametrize("nesterov", [True, False])
def test_bf16_batched_muon_equals_torch_muon(nesterov):
    grads = _grads(3)
    ours, opt = _train(BatchedMuon, grads, nesterov)
    theirs, ref = _train(torch.optim.Muon, grads, nesterov)
    for a, b in zip(ours, theirs, strict=True):  # bf16 matmuls batched may round apart by
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)  # an ulp: ~2e-5 per step here
    # the state is torch.optim.Muon's own: checkpoints are interchangeable
    mine, its = opt.state_dict(), ref.state_dict()
    assert mine["param_groups"] == its["param_groups"]
    for i in mine["state"]:
        torch.testing.assert_close(mine["state"][i]["momentum_buffer"],
                                   its["state"][i]["momentum_buffer"], rtol=0, atol=0)


def _fp32_reference(params, grads, lr=0.02, wd=0.1, mu=0.9):
    """torch.optim.Muon's algorithm, one matrix at a time, in fp32."""
    a, b, c = torch.optim._muon.DEFAULT_A, torch.optim._muon.DEFAULT_B, torch.optim._muon.DEFAULT_C
    bufs = [torch.zeros_like(p) for p in params]
    with torch.no_grad():
        for step in grads:
            for p, g, buf in zip(params, step, bufs, strict=True):
                buf.lerp_(g, 1 - mu)
                x = g.lerp(buf, mu)
                tall = x.shape[0] > x.shape[1]
                x = x.T if tall else x
                x = x / x.norm().clamp(min=1e-7)
                for _ in range(5):
                    gram = x @ x.T
                    x = a * x + (b * gram + c * gram @ gram) @ x
                x = x.T if tall else x
                p.mul_(1 - lr * wd).add_(x, alpha=-adjusted_lr(lr, None, p.shape))
    return params


def test_fp32_newton_schulz_is_the_same_algorithm():
    grads = _grads(3)
    ours, _ = _train(lambda ps, **kw: BatchedMuon(ps, ns_dtype=torch.float32, **kw), grads)
    reference = _fp32_reference(_params(), grads)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    moved = max((a - b).abs().max().item() for a, b in zip(ours, _params(), strict=True))
    assert moved > 1e-3  # the weights did change


def test_the_learning_rate_is_adjusted_to_the_shape_as_torch_does():
    assert adjusted_lr(0.02, None, torch.Size([48, 16])) == pytest.approx(0.02 * 3 ** 0.5)
    assert adjusted_lr(0.02, "original", torch.Size([16, 48])) == 0.02
    assert adjusted_lr(0.02, "match_rms_adamw", torch.Size([16, 64])) == pytest.approx(0.032)
