"""Whole models, end to end: embedding, the layer stack, final norm + LM head + argmax, one decode
step over static caches (`WholeModel`), and `ModelTarget`, the whole model as a target of the
one measurement path (`latprof.measure`), timed exactly as the sweep times one operator.

`compare` sets these measurements beside the LUT sum.  On a GPU the whole step is one CUDA graph
per context (the paper wraps the entire model in a graph), with an eager mode beside it; on a CPU it
is timed in interleaved rounds with the sweep's statistics.  Like a LUT row, an end-to-end sample
rotates among enough independent model copies that their weights exceed twice the last-level cache:
both sides of the comparison then time weights streamed from memory, as in any real-sized model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from latprof.errors import InputError
from latprof.measure import Result, check_runnable
from latprof.model_spec import ModelSpec
from latprof.ops import State, build_block, torch_dtype
from latprof.timing import Measurement


class WholeModel(nn.Module):
    """A decoder built from a `ModelSpec`, random weights (never zeros), greedy decoding.

    `backends` maps operator name -> backend (default "torch" for every operator).  A layer
    whose spec reads the embedding output (`reads_embedding`: shared attention) gets it beside
    the hidden state.  The model's `weight_ties` are real: a tied layer holds its owner's
    shared tensors (`Block.tie_to`), so its parameters and memory are those the spec counts."""

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
        for layer, owner in model.weight_ties:
            self.layers[layer].tie_to(self.layers[owner])
        #: per layer: does its block read the embedding output
        self.reads_embedding = tuple(spec.reads_embedding for spec in model.layers)
        self.head = build_block(model.lm_head, seed=seed + 10_000, **kw)
        if model.tied_embeddings:
            self.head.tie_to(self.embedding)

    def allocate_state(self, batch: int, max_context: int) -> list[State]:
        """Caches for `batch` sequences of up to `max_context` tokens, meta tokens added."""
        return [b.allocate_state(batch, max_context + self.spec.meta_tokens) for b in self.layers]

    def hidden_step(self, ids: torch.Tensor, states: list[State], pos: int) -> torch.Tensor:
        """ids: (batch,) -> final hidden state (batch, width); `pos` counts meta tokens too."""
        x = e = self.embedding.step(ids, {}, pos)  # e: (batch, width), for shared attention
        for block, state, reads_e in zip(self.layers, states, self.reads_embedding, strict=True):
            x = block.step(x, state, pos, e) if reads_e else block.step(x, state, pos)
        return x

    def step(self, ids: torch.Tensor, states: list[State], pos: int) -> torch.Tensor:
        """One greedy decode step: ids (batch,) -> next ids (batch,)."""
        return self.head.step(self.hidden_step(ids, states, pos), {}, pos)

    def step_logits(self, ids: torch.Tensor, states: list[State], pos: int) -> torch.Tensor:
        return self.head.logits(self.hidden_step(ids, states, pos))

    def prefill_logits(self, ids: torch.Tensor, states: list[State]) -> torch.Tensor:
        """ids: (batch, seq) -> float32 logits (batch, seq, vocab); fills the caches."""
        x = e = self.embedding.prefill(ids, {})  # (batch, seq, width)
        for block, state, reads_e in zip(self.layers, states, self.reads_embedding, strict=True):
            x = block.prefill(x, state, e) if reads_e else block.prefill(x, state)
        return self.head.logits(x)


def fill_caches(model: WholeModel, states: list[State], seed: int = 1234) -> None:
    """Random cache contents in every layer (as after a prompt)."""
    gen = torch.Generator().manual_seed(seed)
    for block, state in zip(model.layers, states, strict=True):
        block.randomize_state(state, gen)


@dataclass(frozen=True)
class ModelTarget:
    """A whole model at a batch and context: a target of `latprof.measure`, timed exactly as an
    operator is (copies beyond twice the last-level cache, the same groups, timers and re-measure
    policy).  `backends`: (op, backend) pairs; an operator not named runs "torch"."""

    model: ModelSpec
    batch: int
    context: int
    dtype: str
    device: str
    mode: str
    backends: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return self.model.name

    def backend_for(self, op: str) -> str:
        return dict(self.backends).get(op, "torch")

    def bytes_per_copy(self) -> int:
        state = self.model.state_bytes(self.batch, self.context + 1, self.dtype)
        return self.model.weight_bytes(self.dtype) + state.total

    def check(self) -> None:
        """Every backend of the model can run here, and in a graph where the mode asks for one."""
        for op in dict.fromkeys(spec.op for spec in self.model.layers):
            check_runnable(op, self.backend_for(op), self.device, self.mode, self.model.name)

    def build_model(self, seed: int = 0) -> WholeModel:
        model = WholeModel(
            self.model,
            backends=dict(self.backends),
            device=self.device,
            dtype=torch_dtype(self.dtype),
            seed=seed,
        )
        return model.eval()

    def build_step(self, copy: int) -> Callable[[], object]:
        """Copy `copy`: a model with caches filled to `context`, one greedy step per call."""
        model = self.build_model(seed=97 * copy)
        states = model.allocate_state(self.batch, self.context + 1)
        fill_caches(model, states, seed=copy)
        ids = torch.randint(
            0, self.model.vocab_size, (self.batch,), generator=torch.Generator().manual_seed(copy)
        ).to(self.device)
        pos = self.context + self.model.meta_tokens
        return lambda: model.step(ids, states, pos)


def model_measurements(results: Sequence[Result]) -> list[Measurement]:
    """The measurements of whole-model targets; a model that could not be measured ends the
    comparison (out of memory: a message, exit 2; any other failure: an internal error)."""
    out = []
    for r in results:
        if r.status == "oom":
            raise InputError(
                f"{r.target.label} does not fit in this device's memory at batch "
                f"{r.target.batch}, context {r.target.context} ({r.error[:200]}); compare "
                "smaller models, batches or contexts"
            )
        if r.measurement is None:
            raise RuntimeError(f"{r.target.label}: whole-model measurement failed: {r.error}")
        out.append(r.measurement)
    return out
