"""The CUDA paths, on a GPU only (every test is marked `gpu`; conftest skips them elsewhere).

- every operator's decode step captured in a CUDA graph through the sweep's own machinery
  (`measure.build_workload` + `timing.time_cuda_graph`), for every backend available here, and timed
  eagerly (`timing.time_cuda_eager`); graph replay computes what an eager step computes;
- every fast backend's decode step equals the PyTorch reference's from a mid-sequence state;
- whole models timed end to end in graph and eager mode; greedy steps equal the prefill forward;
- `latprof sweep --device cuda` through the CLI writes complete rows.

Triton kernels against their references on the GPU live in tests/test_kernels_*.py.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from op_checks import clone_state, stepper

from latprof import device_info, e2e, lut
from latprof.errors import InputError
from latprof.lut import ANY_CONTEXT, Setting
from latprof.measure import OperatorTarget, build_workload, copies_needed, measure
from latprof.model import ModelSpec
from latprof.ops import State, backend_unavailable, build_block
from latprof.registry import OPERATOR_NAMES, build_spec, operator
from latprof.specs import OpSpec
from latprof.timing import Measurement, TimerConfig, time_cuda_eager, time_cuda_graph

pytestmark = pytest.mark.gpu

DTYPE = "bfloat16"
#: small timer settings: these tests check the machinery, not the numbers
CONFIG = TimerConfig(warmup_steps=2, samples=5, cv_threshold=1.0, max_remeasure=0, graph_steps=4)
COPIES = 3  # graph_steps 4 rounded up to whole rotations over 3 copies: 6 steps per replay
ATTENTION_CONTEXT = 1024
#: state entries that are tables or bookkeeping, not computed state
NOT_STATE = ("cos", "sin", "cos_lowp", "sin_lowp", "seqlens")

OP_BACKENDS = [
    (op, b.name) for op in OPERATOR_NAMES for b in operator(op).backends if b.graph_capturable
]
FAST_BACKENDS = [(op, b) for op, b in OP_BACKENDS if b != "torch"]


@pytest.fixture(autouse=True)
def cuda_memory():
    yield
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def require(op: str, backend: str) -> None:
    """Skip (with the block's own reason) when `backend` of `op` cannot run on this machine."""
    reason = backend_unavailable(op, backend, "cuda")
    if reason:
        pytest.skip(f"{op}/{backend}: {reason}")


def decode_setting(spec: OpSpec, batch: int, backend: str, mode: str, context: int) -> Setting:
    ctx = context if spec.context_dependent else ANY_CONTEXT
    return Setting("decode", batch, ctx, DTYPE, "cuda", backend, mode)


def assert_sane(m: Measurement, steps: int) -> None:
    """Positive, finite samples; quantiles in order; `steps` decode steps per sample."""
    assert len(m.samples_us) == CONFIG.samples
    assert all(math.isfinite(s) and s > 0 for s in m.samples_us), m.samples_us
    assert m.median_us > 0
    assert m.quantile_us(0.1) <= m.median_us <= m.quantile_us(0.9)
    assert m.steps_per_sample == steps


def whole_rotations(copies: int) -> int:
    k = max(CONFIG.graph_steps, copies)
    return k + (-k % copies)


# ---- 1. one operator, graph and eager ----------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("width", [256, 512])
@pytest.mark.parametrize("op,backend", OP_BACKENDS, ids=[f"{o}-{b}" for o, b in OP_BACKENDS])
def test_graph_timing_of_every_operator_and_backend(op, backend, width, batch):
    require(op, backend)
    spec = build_spec(op, width)
    setting = decode_setting(spec, batch, backend, "graph", ATTENTION_CONTEXT)
    target = OperatorTarget(spec, setting)
    target.check()
    workload = build_workload(target, COPIES)
    m = time_cuda_graph(workload, CONFIG)
    assert_sane(m, whole_rotations(COPIES))
    assert m.steps_per_sample % COPIES == 0


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("op", OPERATOR_NAMES)
def test_eager_timing_of_every_operator(op, batch):
    spec = build_spec(op, 256)
    setting = decode_setting(spec, batch, "torch", "eager", ATTENTION_CONTEXT)
    target = OperatorTarget(spec, setting)
    target.check()  # eager mode accepts every block, moe included
    m = time_cuda_eager(build_workload(target, COPIES), CONFIG)
    assert_sane(m, whole_rotations(COPIES))


def test_moe_is_refused_in_graph_mode():
    spec = build_spec("moe", 256)
    with pytest.raises(InputError, match="--mode eager"):
        OperatorTarget(spec, decode_setting(spec, 1, "torch", "graph", 0)).check()


def test_a_graph_captured_at_a_longer_context_does_more_work():
    """A graph for context c must do the work of context c: 32k cached tokens cost more than 128
    (batch 8: 134 MB of K and V read per step, tens of microseconds at HBM bandwidth; one copy
    already exceeds twice the L2)."""
    spec = build_spec("attention", 256)
    medians = {}
    for context in (128, 32768):
        setting = decode_setting(spec, 8, "torch", "graph", context)
        workload = build_workload(OperatorTarget(spec, setting), 1)
        medians[context] = time_cuda_graph(workload, CONFIG).median_us
        torch.cuda.empty_cache()
    print(f"attention w256 b8 graph: {medians}")
    assert medians[32768] > 1.3 * medians[128], medians


def assert_same_step(
    what: str, out: torch.Tensor, expected: torch.Tensor, logits: torch.Tensor | None = None
) -> None:
    """bf16 outputs within 2e-2 (in float32); token ids equal up to ties: an id that differs must
    score within 2e-2 of the best in `logits` (float32 (batch, vocab) of the eager step)."""
    assert out.shape == expected.shape, what
    if out.is_floating_point():
        assert torch.isfinite(out).all(), f"{what}: non-finite output"
        torch.testing.assert_close(out.float(), expected.float(), atol=2e-2, rtol=2e-2, msg=what)
    else:
        assert logits is not None
        picked = logits.gather(1, out.view(-1, 1)).squeeze(1)  # (batch,)
        assert (picked >= logits.max(dim=1).values - 2e-2).all(), f"{what}: {out} vs {expected}"


def assert_same_state(what: str, state: State, expected: State) -> None:
    for name, tensor in expected.items():
        if name in NOT_STATE:
            continue
        torch.testing.assert_close(
            state[name].float(), tensor.float(), atol=2e-2, rtol=2e-2, msg=f"{what}: {name}"
        )


@pytest.mark.parametrize("op,backend", OP_BACKENDS, ids=[f"{o}-{b}" for o, b in OP_BACKENDS])
@torch.inference_mode()
def test_graph_replay_equals_an_eager_step(op, backend):
    """Capture one step (static input and state), replay once, compare with an eager step from a
    clone of the same state: the outputs and the updated states agree."""
    require(op, backend)
    spec = build_spec(op, 320)
    block = build_block(spec, backend=backend, device="cuda", dtype=torch.bfloat16, seed=0).eval()
    batch, pos = 3, 100
    state = block.allocate_state(batch, pos + 1)
    block.randomize_state(state, torch.Generator().manual_seed(5))
    x = block.example_input(batch, torch.Generator().manual_seed(7))  # static input
    step = stepper(block, batch, torch.Generator().manual_seed(8))
    graph_state, eager_state = clone_state(state), clone_state(state)

    scratch = clone_state(state)  # warm-up (Triton compiles) on a side stream, on a scratch state
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step(x, scratch, pos)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = step(x, graph_state, pos)
    graph.replay()
    torch.cuda.synchronize()

    expected = step(x, eager_state, pos)
    logits = block.logits(x) if op == "lm_head" else None
    assert_same_step(f"{op}/{backend} graph vs eager", static_out, expected, logits)
    assert_same_state(f"{op}/{backend} graph vs eager", graph_state, eager_state)
    if expected.is_floating_point() and spec.input_kind == "hidden":
        assert (expected.float() - x.float()).abs().max() > 1e-3, "the mixer added nothing"
    for name in eager_state:  # the step did update the state it was given
        if name not in NOT_STATE:
            assert not torch.equal(eager_state[name], state[name]), f"{name} not updated"


# ---- 2. fast backends against the reference ----------------------------------------------------
PREFILL_TOKENS = 37


@pytest.mark.parametrize("op,backend", FAST_BACKENDS, ids=[f"{o}-{b}" for o, b in FAST_BACKENDS])
@torch.inference_mode()
def test_fast_backend_step_equals_the_reference(op, backend):
    """From the state a 37-token prefill leaves (PyTorch reference), one decode step of the fast
    backend equals the reference's step: output (after the residual) and updated state."""
    require(op, backend)
    spec = build_spec(op, 320)
    batch, max_context = 3, 64
    kw = dict(device="cuda", dtype=torch.bfloat16, seed=0)
    ref = build_block(spec, backend="torch", **kw).eval()
    fast = build_block(spec, backend=backend, **kw).eval()
    for (name, p), q in zip(ref.named_parameters(), fast.parameters(), strict=True):
        assert torch.equal(p, q), f"{name}: same seed, different weights"

    gen = torch.Generator().manual_seed(11)
    prompt = ref.example_sequence(batch, PREFILL_TOKENS, gen)  # (batch, 37, width)
    x = ref.example_input(batch, gen)  # (batch, width)
    ref_state = ref.allocate_state(batch, max_context)
    if spec.reads_embedding:  # shared attention: the embedding outputs of prompt and token
        e_prompt, e = (
            ref.example_sequence(batch, PREFILL_TOKENS, gen),
            ref.example_input(batch, gen),
        )
        ref.prefill(prompt, ref_state, e_prompt)
        ref_step = lambda x, state, pos: ref.step(x, state, pos, e)  # noqa: E731
        fast_step = lambda x, state, pos: fast.step(x, state, pos, e)  # noqa: E731
    else:
        ref.prefill(prompt, ref_state)
        ref_step, fast_step = ref.step, fast.step
    fast_state = fast.allocate_state(batch, max_context)
    for name, tensor in ref_state.items():
        if name not in NOT_STATE:
            fast_state[name].copy_(tensor)

    ref_after = clone_state(ref_state)
    expected = ref_step(x, ref_after, PREFILL_TOKENS)
    out = fast_step(x, fast_state, PREFILL_TOKENS)
    torch.cuda.synchronize()
    what = f"{op}/{backend} vs torch"
    assert (expected.float() - x.float()).abs().max() > 1e-3, "the mixer added nothing"
    assert_same_step(what, out, expected)
    assert_same_state(what, fast_state, ref_after)


# ---- 3. whole models ---------------------------------------------------------------------------
WIDTH = 256
FAST = (
    ("attention", "triton"),
    ("mamba", "triton"),
    ("mamba2", "triton"),
    ("deltanet", "fla"),
    ("gated_deltanet", "fla"),
    ("gla", "fla"),
)


def hybrid(width: int = WIDTH, vocab: int = 4096, moe: bool = False) -> ModelSpec:
    """A small hybrid with every graph-capturable mixer family (and a MoE layer if asked)."""
    layers = [
        build_spec("attention", width),
        build_spec("ffn", width),
        build_spec("mamba2", width),
        build_spec("deltanet", width),
        build_spec("ffn", width, activation="relu2"),
        build_spec("gated_deltanet", width),
        build_spec("gla", width),
        build_spec("mamba", width),
        build_spec("attention", width, heads=4, kv_heads=2, head_dim=64, qk_norm=True),
    ]
    if moe:
        layers.insert(2, build_spec("moe", width, experts=4, top_k=2))
    return ModelSpec("gpu-hybrid", width, vocab, tuple(layers), tied_embeddings=True)


@pytest.mark.parametrize("backends", [(), FAST], ids=["torch", "fast"])
def test_whole_model_graph_beats_eager(backends):
    for op, backend in backends:
        require(op, backend)
    model = hybrid()
    llc = device_info.last_level_cache_bytes("cuda")
    targets = [
        e2e.ModelTarget(model, 1, 512, DTYPE, "cuda", m, backends) for m in ("graph", "eager")
    ]
    graph, eager = e2e.model_measurements(measure(targets, llc, CONFIG))
    copies = copies_needed(targets[0], llc)
    for m in (graph, eager):
        assert_sane(m, whole_rotations(copies))
    ratio = eager.median_us / graph.median_us
    print(
        f"{model.name} ({'fast' if backends else 'torch'} backends) batch 1, context 512: "
        f"graph {graph.median_us:.1f} us, eager {eager.median_us:.1f} us, eager/graph {ratio:.2f}"
    )
    assert ratio > 1.0


def test_whole_model_with_moe_is_refused_in_graph_mode():
    target = e2e.ModelTarget(hybrid(moe=True), 1, 64, DTYPE, "cuda", "graph")
    with pytest.raises(InputError, match="--mode eager"):
        measure([target], device_info.last_level_cache_bytes("cuda"), CONFIG)


@pytest.mark.parametrize("steps", [1, 7, 20])
@torch.inference_mode()
def test_greedy_steps_match_prefill_logits_on_cuda(steps, monkeypatch):
    """float32 on the GPU (TF32 off): step-by-step logits equal the prefill forward's."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = e2e.WholeModel(hybrid(width=128, vocab=97, moe=True), device="cuda", seed=3).eval()
    gen = torch.Generator().manual_seed(steps)
    ids = torch.randint(0, 97, (2, steps), generator=gen).to("cuda")  # (batch, steps)
    full = model.prefill_logits(ids, model.allocate_state(2, steps))  # (2, steps, vocab)
    states = model.allocate_state(2, steps)
    stepped = torch.stack([model.step_logits(ids[:, t], states, t) for t in range(steps)], 1)
    assert torch.isfinite(full).all()
    torch.testing.assert_close(stepped, full, atol=1e-3, rtol=1e-3)
    assert (stepped.argmax(-1) == full.argmax(-1)).float().mean() > 0.95


# ---- 4. the CLI --------------------------------------------------------------------------------
NVML_COLUMNS = ("sm_clock_mhz_before", "temp_c_before", "sm_clock_mhz_after", "temp_c_after")


def test_cli_sweep_on_cuda_writes_graph_rows(tmp_path):
    from typer.testing import CliRunner

    from latprof.cli import _register, app

    _register()
    out = tmp_path / "gpu.csv"
    args = ["sweep", "--device", "cuda", "--ops", "ffn,attention", "--widths", "256"]
    args += ["--batch", "1", "--context", "128", "--out", str(out), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["measured"] == 2 and summary["errors"] == 0 and summary["oom"] == 0, summary

    rows = lut.read_rows(out)
    assert sorted(r["op"] for r in rows) == ["attention", "ffn"]
    # NVML is a dependency on GPU machines (the `gpu` extra): its columns must be filled in
    assert device_info.gpu_clocks()[0] is not None, "pynvml missing: pip install 'latprof[gpu]'"
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert (r["mode"], r["device"], r["dtype"]) == ("graph", "cuda", "bfloat16")
        assert r["device_name"] and r["bandwidth_gbps"] > 0
        assert r["latency_us_p10"] <= r["latency_us_median"] <= r["latency_us_p90"]
        assert r["latency_us_median"] > 0 and r["achieved_gbps"] > 0
        assert r["copies"] >= 1 and r["steps_per_sample"] % r["copies"] == 0
        assert all(c in r for c in NVML_COLUMNS)
        assert all(r[c] is not None and r[c] > 0 for c in NVML_COLUMNS), r
        assert "no-nvml" not in (r["flags"] or ""), r
    assert [r["context"] for r in rows if r["op"] == "attention"] == [128]
    assert [r["context"] for r in rows if r["op"] == "ffn"] == [ANY_CONTEXT]
