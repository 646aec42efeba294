import pytest
import torch

from llm_trainer.model.gpt import GPT, KVCache
from llm_trainer.model.shape import ModelShape

SHAPE = ModelShape(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    model = GPT(SHAPE)
    idx = torch.randint(0, 50, (3, 16))
    logits, loss = model(idx, torch.randint(0, 50, (3, 16)))
    assert logits.shape == (3, 16, 50)
    assert loss.ndim == 0 and loss.item() == pytest.approx(torch.log(torch.tensor(50.)).item(),
                                                           rel=0.1)
    logits, loss = model(idx)
    assert loss is None and logits.shape == (3, 16, 50)
    assert model(idx, last_only=True)[0].shape == (3, 1, 50)


def test_context_limit_is_enforced():
    with pytest.raises(ValueError, match="exceeds the context of 16"):
        GPT(SHAPE)(torch.zeros(1, 17, dtype=torch.long))


def test_parameter_names_match_hugging_face_gpt2():
    names = set(GPT(SHAPE).state_dict())
    expected = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
                "transformer.ln_f.bias", "lm_head.weight"}
    for i in range(2):
        for part in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                     "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                     "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"):
            expected.add(f"transformer.h.{i}.{part}")
    assert names == expected


def test_embeddings_are_tied():
    model = GPT(SHAPE)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_one_optimizer_step_lowers_the_loss_on_a_repeated_batch():
    torch.manual_seed(0)
    model = GPT(SHAPE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = torch.randint(0, 50, (4, 16))
    _, before = model(idx[:, :-1], idx[:, 1:])
    before.backward()
    opt.step()
    _, after = model(idx[:, :-1], idx[:, 1:])
    assert after.item() < before.item()


def test_kv_cache_matches_full_forward():
    torch.manual_seed(0)
    model = GPT(SHAPE).eval()
    idx = torch.randint(0, 50, (1, 12))
    with torch.no_grad():
        full, _ = model(idx)
        cache = KVCache(SHAPE, 1, "cpu", torch.float32)
        first, _ = model(idx[:, :5], cache=cache)  # a chunk...
        rest = [model(idx[:, i:i + 1], cache=cache)[0] for i in range(5, 12)]  # ...then tokens
    stepped = torch.cat([first, *rest], dim=1)
    assert torch.allclose(full, stepped, atol=1e-5)
