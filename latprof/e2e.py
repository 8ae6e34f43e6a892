"""Whole models, end to end: embedding, the layer stack, final norm + LM head + argmax, one decode
step over static caches; and its timing, done exactly as the sweep times one operator.

`compare` sets these measurements beside the LUT sum.  On a GPU the whole step is one CUDA graph
per context (the paper wraps the entire model in a graph), with an eager mode beside it; on a CPU it
is timed in interleaved rounds with the sweep's statistics.  Like a LUT row, an end-to-end sample
rotates among enough independent model copies that their weights exceed twice the last-level cache:
both sides of the comparison then time weights streamed from memory, as in any real-sized model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from latprof.errors import InputError
from latprof.model import ModelSpec
from latprof.ops import State, block_class, build_block, torch_dtype
from latprof.timing import (
    Measurement,
    TimerConfig,
    Workload,
    copies_for,
    time_cpu,
    time_cuda_eager,
    time_cuda_graph,
)

COPY_BUDGET_BYTES = {"cpu": 2 * 1024**3, "cuda": 16 * 1024**3}
MAX_COPIES = 64


class WholeModel(nn.Module):
    """A decoder built from a `ModelSpec`, random weights (never zeros), greedy decoding.

    `backends` maps operator name -> backend (default "torch" for every operator)."""

    def __init__(
        self,
        model: ModelSpec,
        *,
        backends: dict[str, str] | None = None,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.spec = model
        self.device = torch.device(device)
        self.dtype = dtype
        backends = backends or {}
        kw = dict(device=device, dtype=dtype)
        self.embedding = build_block(model.embedding, seed=seed, **kw)
        self.layers = nn.ModuleList(
            build_block(spec, backend=backends.get(spec.op, "torch"), seed=seed + 1 + i, **kw)
            for i, spec in enumerate(model.layers)
        )
        self.head = build_block(model.lm_head, seed=seed + 10_000, **kw)
        if model.tied_embeddings:
            self.head.tie_to(self.embedding)

    @property
    def graph_capturable(self) -> bool:
        return all(type(b).graph_capturable for b in self.layers)

    def allocate_state(self, batch: int, max_context: int) -> list[State]:
        """Caches for `batch` sequences of up to `max_context` tokens, meta tokens added."""
        return [b.allocate_state(batch, max_context + self.spec.meta_tokens) for b in self.layers]

    def hidden_step(self, ids: torch.Tensor, states: list[State], pos: int) -> torch.Tensor:
        """ids: (batch,) -> final hidden state (batch, width); `pos` counts meta tokens too."""
        x = self.embedding.step(ids, {}, pos)
        for block, state in zip(self.layers, states, strict=True):
            x = block.step(x, state, pos)
        return x

    def step(self, ids: torch.Tensor, states: list[State], pos: int) -> torch.Tensor:
        """One greedy decode step: ids (batch,) -> next ids (batch,)."""
        return self.head.step(self.hidden_step(ids, states, pos), {}, pos)

    def step_logits(self, ids: torch.Tensor, states: list[State], pos: int) -> torch.Tensor:
        return self.head.logits(self.hidden_step(ids, states, pos))

    def prefill_logits(self, ids: torch.Tensor, states: list[State]) -> torch.Tensor:
        """ids: (batch, seq) -> float32 logits (batch, seq, vocab); fills the caches."""
        x = self.embedding.prefill(ids, {})
        for block, state in zip(self.layers, states, strict=True):
            x = block.prefill(x, state)
        return self.head.logits(x)


def fill_caches(model: WholeModel, states: list[State], seed: int = 1234) -> None:
    """Random cache contents in every layer (as after a prompt)."""
    gen = torch.Generator().manual_seed(seed)
    for block, state in zip(model.layers, states, strict=True):
        block.randomize_state(state, gen)


@dataclass(frozen=True)
class E2EPoint:
    """One end-to-end measurement: a model at a batch and context."""

    model: ModelSpec
    batch: int
    context: int
    dtype: str
    device: str
    mode: str
    backends: tuple[tuple[str, str], ...] = ()


def model_bytes(model: ModelSpec, batch: int, context: int, dtype: str) -> int:
    return model.weight_bytes(dtype) + model.state_bytes(batch, context + 1, dtype).total


def copies_needed(point: E2EPoint, llc_bytes: int) -> int:
    per_copy = model_bytes(point.model, point.batch, point.context, point.dtype)
    return copies_for(per_copy, llc_bytes, COPY_BUDGET_BYTES[point.device], MAX_COPIES)


def held_bytes(point: E2EPoint, llc_bytes: int) -> int:
    """Bytes of all the model copies one point holds while it is timed."""
    return model_bytes(point.model, point.batch, point.context, point.dtype) * copies_needed(
        point, llc_bytes
    )


def check_point(point: E2EPoint) -> None:
    """Every backend of the point can run, and graph mode only where every block allows it."""
    backends = dict(point.backends)
    for spec in {*point.model.layers}:
        cls = block_class(spec.op)
        backend = backends.get(spec.op, "torch")
        reason = cls.backend_unavailable(backend, torch.device(point.device))
        if reason:
            raise InputError(f"{spec.op}: backend {backend!r} cannot run here: {reason}")
        if point.mode == "graph" and not cls.graph_capturable:
            raise InputError(
                f"{point.model.name}: its {spec.op} layers synchronise with the host and cannot "
                "be captured in a CUDA graph; compare it with --mode eager"
            )


def build_workload(point: E2EPoint, copies: int, seed: int = 0) -> Workload:
    """`copies` whole models with caches filled to `context`, one greedy step per call."""
    steps = []
    pos = point.context + point.model.meta_tokens
    for c in range(copies):
        model = WholeModel(
            point.model,
            backends=dict(point.backends),
            device=point.device,
            dtype=torch_dtype(point.dtype),
            seed=seed + 97 * c,
        )
        model.eval()
        states = model.allocate_state(point.batch, point.context + 1)
        fill_caches(model, states, seed=c)
        ids = torch.randint(
            0, point.model.vocab_size, (point.batch,), generator=torch.Generator().manual_seed(c)
        ).to(point.device)
        steps.append(_bind(model, ids, states, pos))
    return Workload(steps)


def _bind(model, ids, states, pos):
    return lambda: model.step(ids, states, pos)


def measure(points: Sequence[E2EPoint], llc_bytes: int, config: TimerConfig) -> list[Measurement]:
    """Time each point's whole decode step (CPU: interleaved rounds; CUDA: one graph each)."""
    for p in points:
        check_point(p)
    if not points:
        return []
    if points[0].device == "cpu":
        workloads = [build_workload(p, copies_needed(p, llc_bytes)) for p in points]
        return time_cpu(workloads, config)
    out = []
    for p in points:  # one at a time: a GPU does not drift, and memory stays bounded
        out += time_gpu_models([build_workload(p, copies_needed(p, llc_bytes))], [p], config)
        torch.cuda.empty_cache()
    return out


def time_gpu_models(
    workloads: Sequence[Workload], points: Sequence[E2EPoint], config: TimerConfig
) -> list[Measurement]:
    """Whole-model workloads on a GPU: one CUDA graph each in graph mode, else eager launches."""
    out = []
    for workload, p in zip(workloads, points, strict=True):
        timer = time_cuda_graph if p.mode == "graph" else time_cuda_eager
        out.append(timer(workload, config))
    return out


@torch.inference_mode()
def generation_wall_s(point: E2EPoint, prompt: int, generate: int) -> float:
    """Wall time of `generate` greedy steps after a `prompt`-token (random) cache, one model.

    Positions change every step, so a CUDA graph per step would mean re-capture each token: this
    runs the steps eagerly, on any device, and says so (mode is forced to eager by the caller)."""
    import time

    check_point(point)
    model = WholeModel(
        point.model,
        backends=dict(point.backends),
        device=point.device,
        dtype=torch_dtype(point.dtype),
    )
    model.eval()
    states = model.allocate_state(point.batch, prompt + generate)
    fill_caches(model, states)
    ids = torch.zeros(point.batch, dtype=torch.long, device=point.device)
    start = prompt + point.model.meta_tokens
    for pos in range(start, start + 2):  # warm-up (lazy initialisation, allocator)
        model.step(ids, states, pos)
    if point.device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for pos in range(start, start + generate):
        ids = model.step(ids, states, pos)
    if point.device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0
