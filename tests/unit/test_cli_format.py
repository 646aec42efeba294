"""How the CLI words a model's architecture and optimizer (`models show`)."""

from llm_trainer.render import describe_shape, describe_tokenizer, optimizer_lines


def test_an_old_checkpoints_shape_reads_as_gpt2():
    old = {"vocab_size": 53, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 16,
           "dropout": 0.0, "bias": True, "activation": "gelu"}  # before the new options
    assert describe_shape(old) == ("2 layers x 16 dims, 2 heads, context 32, vocab 53; "
                                    "learned positions, layernorm, gelu, tied head, biases")
    assert describe_shape(None) == "-"


def test_a_modern_shape_names_each_option():
    arch = {"vocab_size": 66, "block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128,
            "bias": False, "activation": "relu2", "pos": "rope", "norm": "rmsnorm",
            "qk_norm": True, "tie_embeddings": False}
    assert describe_shape(arch).endswith("; rope, rmsnorm, QK-norm, relu2, untied head, "
                                          "no biases")


def test_the_size_options_are_named_when_set():
    arch = {"vocab_size": 300, "block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 32,
            "bias": False, "activation": "swiglu", "pos": "rope", "norm": "rmsnorm",
            "qk_norm": True, "tie_embeddings": True, "n_kv_head": 2, "head_size": 16,
            "mlp_width": 128, "norm_eps": 1e-6}
    assert describe_shape(arch) == (
        "2 layers x 32 dims, 4 heads sharing 2 key/value heads of 16, context 32, vocab 300; "
        "rope, rmsnorm, QK-norm, swiglu, MLP width 128, norm eps 1e-06, tied head, no biases")


def test_the_optimizer_line_shows_muon_only():
    assert optimizer_lines({"train": {"optimizer": "adamw", "lr": 1e-3}}) == []
    assert optimizer_lines(None) == []
    line, = optimizer_lines({"train": {"optimizer": "muon", "muon_lr": 0.02,
                                        "muon_ns_steps": 4, "lr": 0.005}})
    assert line == "optimizer:   muon (lr 0.02, 4 Newton-Schulz steps) + adamw (lr 0.005)"


def test_the_tokenizer_line_is_words_not_json():
    assert describe_tokenizer({"kind": "char", "vocab_size": 66}) == "char, 66 tokens"
    assert describe_tokenizer({"kind": "bpe", "vocab_size": 8192}) == "bpe, 8,192 tokens"
    assert describe_tokenizer(None) == "-"


def test_the_step_time_line_says_estimate_then_actual():
    from llm_trainer.views import RunView

    view = RunView(run_id="r", model="m", model_id=None, status="running")
    assert view.estimate_line() is None
    early = RunView(run_id="r", model="m", model_id=None, status="running",
                    estimated_step_s=0.0312)
    assert early.estimate_line() == "31.2 ms per step (estimated from its first steps)"
    done = RunView(run_id="r", model="m", model_id=None, status="completed",
                   estimated_step_s=0.0312, actual_step_s=0.0330, estimate_error=0.0577)
    assert done.estimate_line().endswith("; actual 33.0 ms (+6%)")


def test_sizes_are_written_one_way_everywhere():
    from llm_trainer.progress import format_bytes

    assert format_bytes(20) == "20 B" and format_bytes(None) == "n/a"
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(6.3 * 2**20) == "6.3 MiB"
    assert format_bytes(6.3 * 2**20, compact=True) == "6.3M"
    assert format_bytes(3 * 2**40) == "3.0 TiB"
