"""Device-side positions and whole generations (`latprof.generate`, `latprof decode`).

Every operator's step driven by a position tensor equals the int path (outputs and state, fresh
random inputs, awkward step counts); a whole hybrid model's greedy tokens after a real prefill are
identical on both paths; bad input exits 2."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from latprof import e2e, generate
from latprof.cli import _register, app
from latprof.errors import InputError
from latprof.model_spec import ModelSpec
from latprof.ops import backend_unavailable, build_block
from latprof.registry import OPERATORS, build_spec

WIDTH = 128
PREFIX = 5  # tokens prefilled before stepping, so the caches hold real state


def _spec(op: str):
    small = {
        "attention": dict(heads=4, kv_heads=2, head_dim=32),
        "mamba2": dict(head_dim=32, d_state=16),
        "moe": dict(experts=4, top_k=2),
        "deltanet": dict(heads=2, head_dim=64),
        "gated_deltanet": dict(heads=2, head_dim=64),
        "gla": dict(heads=2, head_dim=64),
        "shared_attention": dict(heads=4, kv_heads=2, rope=True, attention_adapters=True),
    }
    return build_spec(op, WIDTH, **small.get(op, {}))


CASES = [
    (op, b.name, steps)
    for op, entry in OPERATORS.items()
    if not entry.implicit
    for b in entry.backends
    for steps in ((1, 7, 63) if b.name in ("torch", "sdpa") else (1, 7))
    # other families ignore the position
    if op in ("attention", "shared_attention") or b.name == "torch"
]


@pytest.mark.parametrize(("op", "backend", "steps"), CASES)
def test_tensor_positions_equal_the_int_path(op, backend, steps):
    reason = backend_unavailable(op, backend, "cpu")
    if reason:
        pytest.skip(reason)
    spec = _spec(op)
    block = build_block(spec, backend=backend, seed=11)
    batch, gen = 2, torch.Generator().manual_seed(steps)
    state = block.allocate_state(batch, PREFIX + steps)
    # shared attention reads the embedding output too: a fresh random one per token
    extra = (lambda: (block.example_input(batch, gen),)) if spec.reads_embedding else tuple
    prompt = block.example_sequence(batch, PREFIX, gen)
    if spec.reads_embedding:
        block.prefill(prompt, state, block.example_sequence(batch, PREFIX, gen))
    else:
        block.prefill(prompt, state)
    twin = {k: v.clone() for k, v in state.items()}
    pos = torch.full((batch,), PREFIX, dtype=torch.int32)
    for i in range(steps):
        x, more = block.example_input(batch, gen), extra()
        expected = block.step(x, state, PREFIX + i, *more)
        out = torch.full_like(expected, float("nan"))
        out.copy_(block.step(x, twin, pos, *more))
        pos.add_(1)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for k in state:
        if k == "seqlens":  # bookkeeping of the int path's fill_, unused with a tensor
            continue
        torch.testing.assert_close(twin[k], state[k], rtol=1e-5, atol=1e-5, msg=k)


@pytest.mark.parametrize("backend", ["torch", "sdpa"])
def test_ragged_positions_attend_per_sequence(backend):
    """Two sequences at different positions in one step equal each stepped on its own."""
    block = build_block(_spec("attention"), backend=backend, seed=2)
    gen = torch.Generator().manual_seed(0)
    state = block.allocate_state(2, 16)
    block.prefill(block.example_sequence(2, 9, gen), state)
    x = block.example_input(2, gen)
    singles = []
    for row, p in ((0, 3), (1, 8)):
        one = {
            k: (v[row : row + 1].clone() if v.dim() and v.shape[0] == 2 else v.clone())
            for k, v in state.items()
        }
        singles.append(block.step(x[row : row + 1], one, p))
    out = block.step(x, state, torch.tensor([3, 8], dtype=torch.int32))
    torch.testing.assert_close(out, torch.cat(singles), rtol=1e-5, atol=1e-5)


def _hybrid() -> ModelSpec:
    ops = [
        "deltanet",
        "ffn",
        "mamba2",
        "moe",
        "attention",
        "mamba",
        "gated_deltanet",
        "gla",
        "attention",
    ]
    return ModelSpec(
        "every-family",
        WIDTH,
        97,
        tuple(_spec(op) for op in ops),
        tied_embeddings=True,
        meta_tokens=3,
    )


@torch.inference_mode()
def test_generation_tokens_equal_the_int_loop():
    target = e2e.ModelTarget(_hybrid(), 2, 0, "float32", "cpu", "eager")
    prompt, steps = 11, 64
    result = generate.decode(target, prompt, steps, seed=5, keep_tokens=True)
    # the same model, prompt and caches, stepped with int positions
    gen = generate.Generation(target, prompt, steps, seed=5)
    logits = gen.model.prefill_logits(gen.prompt_ids, gen.states)
    ids = logits[:, -1].argmax(dim=-1)
    pos = gen.prompt_ids.shape[1]
    tokens = []
    for i in range(steps):
        ids = gen.model.step(ids, gen.states, pos + i)
        tokens.append(ids)
    assert result.tokens == torch.stack(tokens, dim=1).tolist()
    assert result.prefill_s > 0 and result.decode_s > 0 and result.capture_s is None
    contexts = [c for c, _ in result.step_curve_us]
    assert contexts[0] == 3 + prompt and contexts == sorted(contexts)
    assert all(us > 0 for _, us in result.step_curve_us)


def test_positions_beyond_the_model_and_bad_counts():
    model = ModelSpec("short", WIDTH, 97, (_spec("ffn"),), meta_tokens=2, max_positions=10)
    generate.check_positions(model, 4, 4)
    with pytest.raises(InputError, match="more than the model's 10"):
        generate.check_positions(model, 4, 5)
    with pytest.raises(InputError, match="generate must be"):
        generate.check_positions(model, 4, 0)
    with pytest.raises(InputError, match="prompt must be"):
        generate.check_positions(model, -1, 4)


def test_graph_generation_refuses_a_host_synchronising_model():
    target = e2e.ModelTarget(_hybrid(), 1, 0, "bfloat16", "cuda", "graph")
    with pytest.raises(InputError, match="cannot be captured in a CUDA graph"):
        generate.Generation(target, 4, 4)


def _decode(*args):
    _register()
    return CliRunner().invoke(app, ["decode", *args])


def test_decode_cli(tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text(
        "width: 128\nvocab_size: 97\nmeta_tokens: 2\n"
        "defaults: {attention: {heads: 4, kv_heads: 2, head_dim: 32}}\n"
        "pattern: attention ffn\n"
    )
    result = _decode(str(cfg), "--prompt", "7", "--generate", "9", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (m,) = doc["models"]
    r = m["results"]["eager"]
    assert r["generate"] == 9 and r["decode_s"] > 0 and r["tokens_per_s"] > 0
    assert r["step_us_last"] > 0 and r["roofline_us_last"] > 0
    assert m["backends"] == {"attention": "torch", "ffn": "torch"}
    assert any("whole static cache" in n for n in doc["notes"])
    table = _decode(str(cfg), "--prompt", "7", "--generate", "9", "--device", "cpu")
    assert table.exit_code == 0 and "tokens/s" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--generate", "0"), "--generate: must be >= 1"),
        (("--prompt", "-1"), "--prompt"),
        (("--mode", "graph"), "only on cuda"),
        (("--backend", "attention=flash_attn"), "CUDA devices only"),
        (("--batch", "1,2"), "is not one integer"),
    ],
)
def test_decode_bad_input_exits_2(tmp_path, args, message):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("width: 128\nvocab_size: 97\npattern: attention ffn\n")
    result = _decode(str(cfg), "--device", "cpu", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_decode_beyond_max_position_embeddings_exits_2():
    from pathlib import Path

    cfg = Path(__file__).resolve().parents[2] / "shared/fixtures/hf-configs/qwen3-0.6b.json"
    result = _decode(str(cfg), "--device", "cpu", "--prompt", "40960", "--generate", "1")
    assert result.exit_code == 2 and "max_position_embeddings" in result.output


@pytest.mark.gpu
@torch.inference_mode()
def test_graph_generation_equals_eager_on_cuda():
    """One replay per token gives the token sequence of the eager loop (bf16, every graph-capturable
    family; MoE left out: its step reads back to the host)."""
    ops = ["deltanet", "ffn", "mamba2", "attention", "mamba", "gated_deltanet", "gla", "attention"]
    model = ModelSpec("gpu-hybrid", WIDTH, 97, tuple(_spec(op) for op in ops), meta_tokens=3)
    results = {}
    for mode in ("eager", "graph"):
        target = e2e.ModelTarget(model, 2, 0, "bfloat16", "cuda", mode)
        results[mode] = generate.decode(target, 16, 48, seed=1, keep_tokens=True)
    assert results["graph"].tokens == results["eager"].tokens
    assert results["graph"].capture_s is not None
    print(
        f"decode 48 tokens: eager {results['eager'].decode_s:.4f} s, "
        f"graph {results['graph'].decode_s:.4f} s"
    )
