"""Weight ties (`ModelSpec.weight_ties`): validation, parameter and memory counts (shared parts
counted once, latency and caches per use), the YAML field and its round trip, and a whole tiny
Zamba2-like model whose tied blocks really share tensors, decoding step by step as its prefill
does."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from latprof import e2e
from latprof.cli import _register, app
from latprof.config_yaml import load_yaml_model, model_to_yaml
from latprof.errors import InputError
from latprof.memory import memory_report
from latprof.model_spec import ModelSpec
from latprof.registry import build_spec

WIDTH = 48
VOCAB = 97


def _shared(**params):
    defaults = dict(
        heads=4, kv_heads=2, ffn_dim=100, adapter_rank=6, attention_adapters=True, rope=True
    )
    return build_spec("shared_attention", WIDTH, **{**defaults, **params})


def _mamba2():
    return build_spec("mamba2", WIDTH, head_dim=16, d_state=8)


def _zamba_like(ties=((4, 1), (7, 1)), **fields) -> ModelSpec:
    """mamba2, then three hybrid layers (shared block + mamba2) sharing one block's weights."""
    s, m = _shared(), _mamba2()
    layers = (m, s, m, m, s, m, m, s, m)
    return ModelSpec("tiny-zamba", WIDTH, VOCAB, layers, weight_ties=ties, **fields)


# ---- counts ------------------------------------------------------------------------------------
def test_tied_uses_count_their_shared_part_once_and_their_state_every_time():
    tied, untied = _zamba_like(), _zamba_like(ties=())
    s = tied.layers[1]
    assert untied.param_count() - tied.param_count() == 2 * s.shared_param_count()
    assert tied.weight_bytes("bf16") == 2 * tied.param_count()
    # every use keeps its own KV cache, and runs (the LUT sum counts each use: `counts`)
    assert tied.state_bytes(2, 30, "bf16") == untied.state_bytes(2, 30, "bf16")
    assert tied.state_bytes(2, 30, "bf16").kv_cache == 3 * s.state_bytes(2, 30, "bf16").kv_cache
    assert tied.counts == untied.counts and tied.counts[s] == 3
    report = memory_report(tied, batch=1, context=16, dtype="bf16")
    assert report.weights == 2 * tied.param_count()


def test_without_norm_weights_a_tied_use_drops_its_norms_once():
    tied = _zamba_like(norm_weights=False)
    untied = _zamba_like(ties=(), norm_weights=False)
    s = tied.layers[1]
    # the shared part holds the norms; an untied use loses them, a tied one holds neither
    assert untied.param_count() - tied.param_count() == 2 * (
        s.shared_param_count() - s.pre_norm_params()
    )


# ---- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ties", "match"),
    [
        (((4, 9),), "outside 0..8"),
        (((-1, 1),), "outside 0..8"),
        (((1, 4),), "owner must be an earlier layer"),
        (((4, 4),), "owner must be an earlier layer"),
        (((4, 3),), "only layers of the same spec share weights"),
        (((3, 0),), "mamba2 has no weights a use can share"),
        (((4, 1), (4, 1)), "ties layer 4 twice"),
        (((4, 1), (7, 4)), "layer 4 reuses another layer's weights and is an owner too"),
        (((4, "1"),), "not a \\(layer, owner\\) pair"),
        (((4, 1, 0),), "not a \\(layer, owner\\) pair"),
        ([(4, 1)], "must be a tuple"),
    ],
)
def test_impossible_ties_are_input_errors(ties, match):
    with pytest.raises(InputError, match=match):
        _zamba_like(ties=ties)


def test_only_an_operator_with_a_shared_part_can_be_tied():
    ffn = build_spec("ffn", WIDTH)
    with pytest.raises(InputError, match="ffn has no weights a use can share"):
        ModelSpec("ffns", WIDTH, VOCAB, (ffn, ffn), weight_ties=((1, 0),))


def test_different_shared_specs_cannot_tie():
    a, b = _shared(), _shared(adapter_rank=3)
    with pytest.raises(InputError, match="only layers of the same spec"):
        ModelSpec("two", WIDTH, VOCAB, (a, b), weight_ties=((1, 0),))


# ---- YAML ---------------------------------------------------------------------------------------
def test_yaml_round_trip_keeps_the_ties(tmp_path):
    model = _zamba_like()
    path = tmp_path / "tiny-zamba.yaml"
    path.write_text(model_to_yaml(model))
    assert yaml.safe_load(path.read_text())["weight_ties"] == [[4, 1], [7, 1]]
    back = load_yaml_model(path)
    assert back.weight_ties == model.weight_ties
    assert back == dataclasses.replace(model, source=str(path))
    untied = tmp_path / "untied.yaml"
    untied.write_text(model_to_yaml(_zamba_like(ties=())))
    assert "weight_ties" not in yaml.safe_load(untied.read_text())


TIED_YAML = """\
width: 48
vocab_size: 97
blocks:
  shared: {op: shared_attention, heads: 4, kv_heads: 2, ffn_dim: 100, adapter_rank: 6}
  m2: {op: mamba2, head_dim: 16, d_state: 8}
pattern: "m2 (shared m2)*3"
weight_ties: %s
"""


@pytest.mark.parametrize(
    ("ties", "match"),
    [
        ("[[3, 1], [5, 1]]", None),
        ("[[3, 1], [5]]", ":7: a weight_ties entry is \\[layer, owner\\]"),
        ("{3: 1}", ":7: weight_ties must be a list"),
        ("[[3, true]]", "a weight_ties entry is"),
        ("[[2, 1]]", ":7: .*only layers of the same spec"),
        ("[[30, 1]]", ":7: .*outside 0..6"),
    ],
)
def test_yaml_weight_ties_are_read_and_checked(tmp_path, ties, match):
    path = tmp_path / "tied.yaml"
    path.write_text(TIED_YAML % ties)
    if match is None:
        model = load_yaml_model(path)
        assert model.weight_ties == ((3, 1), (5, 1))
        assert [s.op for s in model.layers[1::2]] == ["shared_attention"] * 3
        return
    with pytest.raises(InputError, match=match):
        load_yaml_model(path)


# ---- whole model -------------------------------------------------------------------------------
def test_whole_model_shares_the_tied_tensors_and_its_memory_is_the_spec_count():
    spec = _zamba_like()
    model = e2e.WholeModel(spec, seed=1)
    owner, use = model.layers[1], model.layers[4]
    assert use.wqkv is owner.wqkv and use.w_down is owner.w_down
    assert use.linear is not owner.linear and use.qkv_down is not owner.qkv_down
    # parameters() yields a shared tensor once: the whole model holds what the spec counts
    assert sum(p.numel() for p in model.parameters()) == spec.param_count()
    untied = e2e.WholeModel(_zamba_like(ties=()), seed=1)
    assert sum(p.numel() for p in untied.parameters()) == _zamba_like(ties=()).param_count()


@pytest.mark.parametrize("steps", [1, 6])
def test_tied_model_greedy_steps_match_prefill_logits(steps):
    model = e2e.WholeModel(_zamba_like(tied_embeddings=True), seed=4)
    ids = torch.randint(0, VOCAB, (3, steps), generator=torch.Generator().manual_seed(steps))
    with torch.inference_mode():
        full = model.prefill_logits(ids, model.allocate_state(3, steps))
        states = model.allocate_state(3, steps)
        stepped = torch.stack([model.step_logits(ids[:, t], states, t) for t in range(steps)], 1)
        by_tensor = model.allocate_state(3, steps)
        at = [
            model.step_logits(ids[:, t], by_tensor, torch.full((3,), t, dtype=torch.int32))
            for t in range(steps)
        ]
    assert torch.isfinite(full).all()
    torch.testing.assert_close(stepped, full, atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(torch.stack(at, 1), full, atol=2e-4, rtol=2e-4)


def test_the_embedding_output_reaches_the_shared_blocks():
    """Swapping the shared blocks' embedding input for zeros changes the logits: the model
    hands them the embedding output, not the hidden state twice."""
    model = e2e.WholeModel(_zamba_like(), seed=2)
    ids = torch.randint(0, VOCAB, (2, 4), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = model.prefill_logits(ids, model.allocate_state(2, 4))
        block = model.layers[1]
        real = block.prefill
        block.prefill = lambda x, state, e: real(x, state, torch.zeros_like(e))
        changed = model.prefill_logits(ids, model.allocate_state(2, 4))
    assert (ref - changed).abs().max() > 1e-3


def test_model_target_times_a_tied_model_step():
    target = e2e.ModelTarget(
        _zamba_like(), 2, 8, "float32", "cpu", "eager", (("shared_attention", "sdpa"),)
    )
    target.check()
    state = _zamba_like().state_bytes(2, 9, "float32")
    assert target.bytes_per_copy() == 4 * _zamba_like().param_count() + state.total
    with torch.inference_mode():
        next_ids = target.build_step(0)()
    assert next_ids.shape == (2,) and next_ids.dtype == torch.long


@pytest.mark.slow  # measures its LUT rows first: about a minute on a free 2-core CPU
def test_compare_runs_a_tied_zamba_like_model(tmp_path):
    _register()
    config = tmp_path / "tiny-zamba.yaml"
    config.write_text(TIED_YAML % "[[3, 1], [5, 1]]")
    lut = tmp_path / "lut.csv"
    args = ["compare", str(config), "--device", "cpu", "--lut", str(lut), "--context", "8,32"]
    args += ["--samples", "3", "--measure-missing", "--generate", "4", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sorted(p["context"] for p in report["points"]) == [8, 32]
    assert all(p["estimate_us"] > 0 and p["measured_us"] > 0 for p in report["points"])
    assert report["generations"][0]["measured_s"] > 0
    assert "shared_attention(width=48" in lut.read_text()
