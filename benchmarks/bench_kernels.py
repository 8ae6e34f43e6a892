"""Time latprof's Triton decode kernels against library kernels on a CUDA GPU.

    python benchmarks/bench_kernels.py [--batch 1,8,32] [--context 1024,4096,16384,32768]

- attention: `decode_attention` (RoPE + cache write + split-KV attention) vs. PyTorch SDPA
  (attention only, over a contiguous (batch, kv_heads, context, head_dim) copy of the cache) and,
  if installed, flash_attn's `flash_attn_with_kvcache` (the same fused op);
- mamba: `selective_state_update` vs. mamba-ssm's Triton `selective_state_update`;
- mamba2: the fused `mamba2_state_update` vs. conv update + mamba-ssm's multi-head
  `selective_state_update` (two launches, as in mamba-ssm's `Mamba2.step`).

mamba-ssm's kernel file is loaded without running the `mamba_ssm` package `__init__` (which needs
its CUDA extension).  Every time is the median of CUDA-graph replays (`triton.testing.
do_bench_cudagraph`); each graph cycles through enough copies of the inputs to exceed twice the L2
cache, so weights and states come from memory as they would inside a model.  Each line shows the
bytes a step must move, the GB/s achieved and the percentage of the bandwidth floor (bytes / peak).
Without CUDA the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import sys
import types
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F


def parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def load_mamba_ssm_ssu() -> Callable | None:
    """mamba-ssm's Triton selective_state_update, or None if mamba-ssm is not installed.

    The kernel file imports `mamba_ssm.ops.triton.softplus`; bare parent packages registered in
    sys.modules let that import resolve without executing mamba_ssm/__init__.py."""
    spec = importlib.util.find_spec("mamba_ssm")  # finds, does not import, a top-level package
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).parent
    for name, folder in (
        ("mamba_ssm", root),
        ("mamba_ssm.ops", root / "ops"),
        ("mamba_ssm.ops.triton", root / "ops" / "triton"),
    ):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(folder)]
            sys.modules[name] = package
    module = importlib.import_module("mamba_ssm.ops.triton.selective_state_update")
    return module.selective_state_update


def load_flash_attn() -> Callable | None:
    if importlib.util.find_spec("flash_attn") is None:
        return None
    try:
        from flash_attn import flash_attn_with_kvcache
    except ImportError as err:
        print(f"flash_attn is installed but does not import ({err}); skipping it")
        return None
    return flash_attn_with_kvcache


class Bench:
    """Times callables with CUDA graphs and prints them against the bandwidth floor."""

    def __init__(self, bandwidth_gbps: float | None):
        import triton.testing

        self._do_bench = triton.testing.do_bench_cudagraph
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        self.device_name = props.name
        self.l2_bytes = getattr(props, "L2_cache_size", 50 * 2**20)
        self.bandwidth_gbps = bandwidth_gbps or self.measure_copy_bandwidth()

    def measure_copy_bandwidth(self) -> float:
        """Device-to-device copy of 1 GiB: the bandwidth a streaming kernel can reach."""
        src = torch.empty(2**30, dtype=torch.uint8, device="cuda")  # (1 GiB,)
        dst = torch.empty_like(src)
        ms = self._do_bench(lambda: dst.copy_(src), rep=100, return_mode="median")
        return 2 * src.numel() / (ms * 1e-3) / 1e9

    def copies(self, bytes_per_call: int) -> int:
        """How many independent input copies a graph must rotate through to miss in L2."""
        return max(1, min(64, math.ceil(2 * self.l2_bytes / max(bytes_per_call, 1))))

    def time_us(self, calls: list[Callable[[], object]]) -> float:
        """Median time of one call, each graph replay running every call (one per copy) once."""

        def run_all():
            for call in calls:
                call()

        run_all()  # compile / autotune outside the graph
        torch.cuda.synchronize()
        return self._do_bench(run_all, rep=50, return_mode="median") * 1e3 / len(calls)

    def report(self, row: str, backend: str, calls: list[Callable], nbytes: int) -> None:
        try:
            us = self.time_us(calls)
        except Exception as err:  # a backend failing at one shape should not end the sweep
            print(f"{row}  {backend:<22} failed: {type(err).__name__}: {err}")
            return
        gbps = nbytes / (us * 1e-6) / 1e9
        floor = 100.0 * gbps / self.bandwidth_gbps
        print(
            f"{row}  {backend:<22} {us:10.2f} us  {nbytes / 1e6:10.2f} MB  "
            f"{gbps:8.1f} GB/s  {floor:5.1f}% of floor"
        )


# ---------------------------------------------------------------------------------------------
# attention


def bench_attention(bench: Bench, batches, contexts, heads=16, kv_heads=4, head_dim=128):
    from latprof.kernels.decode_attention import decode_attention

    flash = load_flash_attn()
    dtype, dev = torch.bfloat16, "cuda"
    print(f"\nattention: {heads} heads, {kv_heads} kv heads, head_dim {head_dim}, bf16")
    for batch in batches:
        for context in contexts:
            max_context = context + 64
            nbytes = 2 * batch * (context + 1) * kv_heads * head_dim * 2  # K and V read / written
            nbytes += 2 * batch * heads * head_dim * 2  # q in, out
            cache_bytes = 2 * batch * max_context * kv_heads * head_dim * 2
            n = min(bench.copies(nbytes), max(1, int(8e9 // cache_bytes)))
            inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2, device=dev) / head_dim)
            angles = torch.arange(max_context, device=dev)[:, None] * inv_freq[None, :]
            cos, sin = angles.cos(), angles.sin()  # (max_context, head_dim // 2) each
            seqlens = torch.full((batch,), context, dtype=torch.int32, device=dev)
            ours, sdpa, fa = [], [], []
            for _ in range(n):
                q = torch.randn(batch, heads, head_dim, dtype=dtype, device=dev)
                k_new, v_new = torch.randn(2, batch, kv_heads, head_dim, dtype=dtype, device=dev)
                # (batch, max_context, kv_heads, head_dim) each
                kc = torch.randn(batch, max_context, kv_heads, head_dim, dtype=dtype, device=dev)
                vc = torch.randn_like(kc)
                ours.append(partial(decode_attention, q, k_new, v_new, kc, vc, seqlens, cos, sin))
                if flash is not None:
                    fa.append(
                        partial(
                            flash,
                            q[:, None],
                            kc,
                            vc,
                            k=k_new[:, None],
                            v=v_new[:, None],
                            rotary_cos=cos.to(dtype),
                            rotary_sin=sin.to(dtype),
                            cache_seqlens=seqlens,
                            causal=True,
                            rotary_interleaved=False,
                        )
                    )
            for _ in range(min(n, max(1, int(4e9 // cache_bytes)))):
                # SDPA's preferred layout: (batch, kv_heads, context + 1, head_dim)
                k = torch.randn(batch, kv_heads, context + 1, head_dim, dtype=dtype, device=dev)
                v = torch.randn_like(k)
                q = torch.randn(batch, heads, 1, head_dim, dtype=dtype, device=dev)
                sdpa.append(partial(F.scaled_dot_product_attention, q, k, v, enable_gqa=True))
            row = f"  batch {batch:3d}  context {context:6d}"
            bench.report(row, "latprof triton", ours, nbytes)
            bench.report(row, "sdpa (attention only)", sdpa, nbytes)
            if flash is not None:
                bench.report(row, "flash_attn kvcache", fa, nbytes)
            del ours, sdpa, fa
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# mamba and mamba2


def bench_mamba(bench: Bench, batches, ssu, dim=4096, d_state=16):
    from latprof.kernels.mamba_step import selective_state_update

    dev, dtype = "cuda", torch.bfloat16
    print(f"\nmamba selective state update: dim {dim}, d_state {d_state}, bf16 in, fp32 state")
    for batch in batches:
        nbytes = 2 * batch * dim * d_state * 4  # state read + written
        nbytes += dim * d_state * 4 + 4 * batch * dim * 2 + 2 * batch * d_state * 2 + 2 * dim * 4
        ours, theirs = [], []
        for _ in range(bench.copies(nbytes)):
            state = torch.randn(batch, dim, d_state, device=dev)  # (batch, dim, d_state)
            x, dt, z = torch.randn(3, batch, dim, dtype=dtype, device=dev)
            A = -torch.rand(dim, d_state, device=dev)  # (dim, d_state)
            B, C = torch.randn(2, batch, d_state, dtype=dtype, device=dev)
            D, dt_bias = torch.randn(2, dim, device=dev)
            args = (state, x, dt, A, B, C, D, z, dt_bias)
            ours.append(partial(selective_state_update, *args))
            if ssu is not None:
                theirs.append(partial(ssu, *args[:6], D=D, z=z, dt_bias=dt_bias, dt_softplus=True))
        row = f"  batch {batch:3d}"
        bench.report(row, "latprof triton", ours, nbytes)
        if ssu is not None:
            bench.report(row, "mamba_ssm triton", theirs, nbytes)


def conv_then_ssu(
    ssu,
    xBC,
    dt,
    conv_state,
    conv_w,
    conv_b,
    ssm_state,
    A,
    D,
    dt_bias,
    *,
    n_groups,
    head_dim,
    d_state,
):
    """The unfused Mamba2 step: conv update, then mamba-ssm's multi-head selective_state_update
    with per-head parameters broadcast over head_dim (stride-0 views, as `Mamba2.step` does)."""
    from latprof.kernels.mamba_step import causal_conv1d_update

    batch, heads = dt.shape
    d_inner = heads * head_dim
    xbc = causal_conv1d_update(xBC, conv_state, conv_w, conv_b)  # (batch, conv_dim)
    x = xbc[:, :d_inner].view(batch, heads, head_dim)
    B, C = xbc[:, d_inner:].view(batch, 2, n_groups, d_state).unbind(1)
    return ssu(
        ssm_state,
        x,
        dt[:, :, None].expand(-1, -1, head_dim),
        A[:, None, None].expand(-1, head_dim, d_state),
        B,
        C,
        D=D[:, None].expand(-1, head_dim),
        dt_bias=dt_bias[:, None].expand(-1, head_dim),
        dt_softplus=True,
    )


def bench_mamba2(bench: Bench, batches, ssu, heads=96, head_dim=64, d_state=128, n_groups=1):
    from latprof.kernels.mamba2_step import mamba2_state_update

    dev, dtype, d_conv = "cuda", torch.bfloat16, 4
    d_inner = heads * head_dim
    conv_dim = d_inner + 2 * n_groups * d_state
    sizes = dict(n_groups=n_groups, head_dim=head_dim, d_state=d_state)
    print(
        f"\nmamba2 step: {heads} heads x head_dim {head_dim}, d_state {d_state}, "
        f"{n_groups} group(s), bf16 in, fp32 state"
    )
    for batch in batches:
        nbytes = 2 * batch * heads * head_dim * d_state * 4  # ssm state read + written
        nbytes += 2 * batch * conv_dim * d_conv * 2 + conv_dim * (d_conv + 1) * 2  # conv
        nbytes += batch * (conv_dim + d_inner + heads) * 2 + 3 * heads * 4
        ours, theirs = [], []
        for _ in range(bench.copies(nbytes)):
            xBC = torch.randn(batch, conv_dim, dtype=dtype, device=dev)  # (batch, conv_dim)
            dt = torch.randn(batch, heads, dtype=dtype, device=dev)  # (batch, heads)
            conv_state = torch.randn(batch, conv_dim, d_conv, dtype=dtype, device=dev)
            conv_w = torch.randn(conv_dim, d_conv, dtype=dtype, device=dev)
            conv_b = torch.randn(conv_dim, dtype=dtype, device=dev)
            # (batch, heads, head_dim, d_state)
            ssm_state = torch.randn(batch, heads, head_dim, d_state, device=dev)
            A = -torch.rand(heads, device=dev)
            D, dt_bias = torch.randn(2, heads, device=dev)
            args = (xBC, dt, conv_state, conv_w, conv_b, ssm_state, A, D, dt_bias)
            ours.append(partial(mamba2_state_update, *args, **sizes))
            if ssu is not None:
                theirs.append(partial(conv_then_ssu, ssu, *args, **sizes))
        row = f"  batch {batch:3d}"
        bench.report(row, "latprof fused triton", ours, nbytes)
        if ssu is not None:
            bench.report(row, "conv + mamba_ssm ssu", theirs, nbytes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=parse_ints, default=[1, 8, 32])
    parser.add_argument("--context", type=parse_ints, default=[1024, 4096, 16384, 32768])
    parser.add_argument(
        "--bandwidth-gbps",
        type=float,
        default=None,
        help="peak memory bandwidth for the floor (default: measured copy)",
    )
    parser.add_argument("--only", choices=["attention", "mamba", "mamba2"], default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_kernels.py needs a CUDA GPU and none is available here; nothing was timed.")
        return 0
    bench = Bench(args.bandwidth_gbps)
    print(
        f"{bench.device_name}: floor bandwidth {bench.bandwidth_gbps:.0f} GB/s "
        f"({'given' if args.bandwidth_gbps else 'measured copy'}), "
        f"L2 {bench.l2_bytes / 2**20:.0f} MiB"
    )
    ssu = load_mamba_ssm_ssu()
    if ssu is None:
        print("mamba-ssm is not installed: its selective_state_update is left out")
    if args.only in (None, "attention"):
        bench_attention(bench, args.batch, args.context)
    if args.only in (None, "mamba"):
        bench_mamba(bench, args.batch, ssu)
    if args.only in (None, "mamba2"):
        bench_mamba2(bench, args.batch, ssu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
