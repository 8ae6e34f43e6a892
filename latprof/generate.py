"""Whole generations, the paper's way: a real prefill, then one decode step per token with the
position and the next token id advanced on the device.

`Generation` holds a `WholeModel`, its static caches for meta tokens + prompt + generate, and the
static buffers a CUDA graph replays over: `ids` (batch,) int64, the next input token, and `pos`
(batch,) int32, the position of that token, shared by every layer.  One `advance()`:

    ids <- model.step(ids, states, pos);  pos <- pos + 1

- mode `eager`: `advance()` is called once per token (any device);
- mode `graph` (CUDA): after a warm-up on a side stream, one `advance()` is captured once in a
  CUDA graph and replayed once per token; nothing in the loop reads a value back to the host.

Attention with the `torch` / `sdpa` backends then attends over the whole static cache with a mask
built on the device from `pos` (its cost is that of the cache length P + T, whatever the
position); `triton` / `flash_attn` read `pos` as their `cache_seqlens` and attend over the cached
positions only.  `decode()` times the prefill, the T decode tokens (capture and the first replay
left out, reported apart), and the step latency at several points of the generation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from latprof.e2e import ModelTarget, WholeModel
from latprof.errors import InputError
from latprof.model_spec import ModelSpec

#: points of the generation at which the step latency is sampled (a curve over the context)
CURVE_POINTS = 8


@dataclass
class DecodeResult:
    model: str
    mode: str
    batch: int
    prompt: int
    generate: int
    prefill_s: float
    decode_s: float
    capture_s: float | None  # graph mode: warm-up + capture + first replay, left out of decode_s
    #: (context, µs per step) sampled along the generation
    step_curve_us: list[tuple[int, float]] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)  # (batch, generate) generated ids

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.generate / self.decode_s

    def as_json(self, with_tokens: bool = False) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "tokens"}
        out["tokens_per_s"] = self.tokens_per_s
        if with_tokens:
            out["tokens"] = self.tokens
        return out


def check_positions(model: ModelSpec, prompt: int, generate: int) -> None:
    """Refuse a generation the model's positions do not allow (meta tokens count)."""
    if isinstance(prompt, bool) or not isinstance(prompt, int) or prompt < 0:
        raise InputError(f"prompt must be an integer >= 0, got {prompt!r}")
    if isinstance(generate, bool) or not isinstance(generate, int) or generate < 1:
        raise InputError(f"generate must be an integer >= 1, got {generate!r}")
    total = model.meta_tokens + prompt + generate
    if model.max_positions is not None and total > model.max_positions:
        raise InputError(
            f"{model.name}: {model.meta_tokens} meta + {prompt} prompt + {generate} generated = "
            f"{total} positions, more than the model's {model.max_positions} "
            "(max_position_embeddings); shorten --prompt or --generate"
        )


class Generation:
    """One model, its caches and the static buffers of a generation (see the module docstring)."""

    def __init__(self, target: ModelTarget, prompt: int, generate: int, seed: int = 0) -> None:
        check_positions(target.model, prompt, generate)
        target.check()  # backends can run here; graph mode only where every layer allows it
        if target.mode == "graph" and target.device != "cuda":
            raise InputError("--mode graph needs CUDA graphs, which exist only on cuda")
        self.target, self.prompt, self.generate = target, prompt, generate
        self.model: WholeModel = target.build_model(seed)
        m = target.model
        self.max_context = m.meta_tokens + prompt + generate
        # caches sized for the whole generation (allocate_state adds the meta tokens itself)
        self.states = self.model.allocate_state(target.batch, prompt + generate)
        gen = torch.Generator().manual_seed(seed + 1)
        #: (batch, meta + prompt): meta tokens stand in as token ids of their own
        self.prompt_ids = torch.randint(
            0, m.vocab_size, (target.batch, m.meta_tokens + prompt), generator=gen
        ).to(target.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.ids = torch.zeros(target.batch, dtype=torch.long, device=target.device)
        self.pos = torch.zeros(target.batch, dtype=torch.int32, device=target.device)

    @torch.inference_mode()
    def prefill(self) -> None:
        """The prompt through every layer at once; sets `ids` to the first generated token and
        `pos` to its position.  An empty prompt (and no meta tokens) starts from token 0."""
        n = self.prompt_ids.shape[1]
        if n:
            logits = self.model.prefill_logits(self.prompt_ids, self.states)  # (batch, n, vocab)
            self.ids.copy_(logits[:, -1].argmax(dim=-1))
        self.pos.fill_(n)

    def advance(self) -> None:
        """One decode token on the device: the next id and the position advance in place."""
        self.ids.copy_(self.model.step(self.ids, self.states, self.pos))
        self.pos.add_(1)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _capture(gen: Generation) -> Callable[[], None]:
    """Warm up on a side stream, capture one `advance()` in a CUDA graph and replay it once; the
    tokens these take are rolled back (caches, ids, pos restored), so the timed generation starts
    exactly where the prefill left it.  Returns the graph's replay."""
    saved_ids, saved_pos = gen.ids.clone(), gen.pos.clone()
    saved_states = [{k: t.clone() for k, t in s.items()} for s in gen.states]

    def restore() -> None:
        gen.ids.copy_(saved_ids)
        gen.pos.copy_(saved_pos)
        for state, copy in zip(gen.states, saved_states, strict=True):
            for k, t in state.items():
                t.copy_(copy[k])

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            gen.advance()
    torch.cuda.current_stream().wait_stream(side)
    restore()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        gen.advance()
    restore()
    graph.replay()  # the first replay (lazy initialisation) is not a generation token
    restore()
    torch.cuda.synchronize()
    gen.graph = graph  # keep it alive as long as the generation
    return graph.replay


@torch.inference_mode()
def decode(
    target: ModelTarget,
    prompt: int,
    generate: int,
    seed: int = 0,
    keep_tokens: bool = False,
    on_token: Callable[[int], None] | None = None,
) -> DecodeResult:
    """Prefill `prompt` tokens, then generate `generate` tokens in `target.mode`; timed."""
    gen = Generation(target, prompt, generate, seed)
    device = target.device
    _sync(device)
    t0 = time.perf_counter()
    gen.prefill()
    _sync(device)
    prefill_s = time.perf_counter() - t0
    capture_s = None
    step = gen.advance
    if target.mode == "graph":
        t0 = time.perf_counter()
        step = _capture(gen)
        capture_s = time.perf_counter() - t0
    every = max(1, generate // CURVE_POINTS)
    marks = sorted({*range(0, generate, every), generate})
    start_context = int(gen.prompt_ids.shape[1])
    tokens = [] if keep_tokens else None
    if device == "cuda":
        events = {i: torch.cuda.Event(enable_timing=True) for i in marks}
    stamps: dict[int, float] = {}
    _sync(device)
    for i in range(generate):
        if i in marks:
            if device == "cuda":
                events[i].record()
            else:
                stamps[i] = time.perf_counter()
        step()
        if tokens is not None:
            tokens.append(gen.ids.clone())  # stays on the device: no host sync in the loop
        if on_token and (i + 1) % every == 0:
            on_token(i + 1)
    if device == "cuda":
        events[generate].record()
        torch.cuda.synchronize()
        times = {i: events[marks[0]].elapsed_time(events[i]) / 1e3 for i in marks}
    else:
        stamps[generate] = time.perf_counter()
        times = {i: stamps[i] - stamps[marks[0]] for i in marks}
    decode_s = times[generate]
    curve = [
        (start_context + a, (times[b] - times[a]) / (b - a) * 1e6)
        for a, b in zip(marks, marks[1:], strict=False)
    ]
    result = DecodeResult(
        target.model.name,
        target.mode,
        target.batch,
        prompt,
        generate,
        prefill_s,
        decode_s,
        capture_s,
        curve,
    )
    if tokens is not None:
        result.tokens = torch.stack(tokens, dim=1).tolist()  # (batch, generate), after the loop
    return result


# ---- `latprof decode` ------------------------------------------------------------------------
def step_bytes(model: ModelSpec, batch: int, context: int, dtype: str) -> int:
    """Bytes one decode step at `context` must move: every layer's weights and caches, the
    embedding row and the LM head (the roofline floor is this over the bandwidth)."""
    shift = model.meta_tokens
    total = 0
    for spec, n in model.counts.items():
        c = context + shift if spec.context_dependent else context
        total += n * spec.bytes_per_step(batch, c, dtype)
    total += model.embedding.bytes_per_step(batch, 0, dtype)
    return total + model.lm_head.bytes_per_step(batch, 0, dtype)


def summarize(result: DecodeResult, model: ModelSpec, dtype: str, bandwidth_gbps: float):
    """The figures `latprof decode` reports for one generation (its --json entry)."""
    doc = result.as_json()
    first_ctx, first_us = result.step_curve_us[0]
    last_ctx, last_us = result.step_curve_us[-1]
    floor_first = step_bytes(model, result.batch, first_ctx, dtype) / (bandwidth_gbps * 1e3)
    floor_last = step_bytes(model, result.batch, last_ctx, dtype) / (bandwidth_gbps * 1e3)
    doc.update(
        step_us_first=first_us,
        step_us_last=last_us,
        roofline_us_first=floor_first,
        roofline_us_last=floor_last,
        pct_of_roofline_first=100.0 * floor_first / first_us,
        pct_of_roofline_last=100.0 * floor_last / last_us,
        params=model.param_count(),
    )
    return doc
