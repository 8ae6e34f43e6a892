"""Registers, stack (spills) and shared memory of every Triton kernel of `latprof.kernels`, compiled
ahead of time (no GPU needed) for each target and every configuration the default sweep and the
extra head dims use (`latprof.kernels.aot`).

    python -m latprof.kernels.aot_report [--arch 90 --arch 80] [--dtype bfloat16] [--no-extra]

Prints one line per distinct compiled kernel (kernels whose constexprs agree but whose integer
arguments specialise differently, e.g. a stride of 1, are listed once each) and exits 1 when a
kernel does not compile or needs more shared memory than its target allows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from latprof.kernels import aot


def format_rows(table: list[dict]) -> str:
    head = "arch kernel dtype warps stages smem_KiB/limit regs stack_B cases constexprs"
    lines = [head]
    for r in table:
        lines.append(
            f"sm_{r['arch']} {r['kernel']} {r['dtype']} {r['num_warps']} {r['num_stages']} "
            f"{r['shared_kib']:.1f}/{r['limit_kib']:.0f}{'' if r['fits'] else ' TOO-BIG'} "
            f"{r['registers']} {r['stack_bytes']} {r['cases']} {r['constexprs']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, action="append", choices=sorted(aot.SM_COUNT))
    parser.add_argument("--dtype", action="append", choices=aot.SWEEP_DTYPES)
    parser.add_argument("--no-extra", action="store_true", help="the default sweep's cases only")
    parser.add_argument("--quick", action="store_true", help="one configuration per kernel")
    parser.add_argument("--json", action="store_true", help="one JSON object per target")
    args = parser.parse_args(argv)
    dtypes = tuple(args.dtype or aot.SWEEP_DTYPES)
    if args.quick:
        cases = tuple(c for c in aot.QUICK_CASES if c.dtype in dtypes)
    else:
        cases = aot.sweep_cases(dtypes)
        if not args.no_extra:
            cases += tuple(c for c in aot.EXTRA_CASES if c.dtype in dtypes)
    failures = []
    for arch in args.arch or aot.TARGETS:
        start = time.perf_counter()
        table, failed = aot.compile_cases(arch, cases)
        failures += failed
        if args.json:
            print(json.dumps(dict(arch=arch, rows=table, failures=failed)), flush=True)
            continue
        print(format_rows(table))
        print(
            f"# sm_{arch}: {len(cases)} cases, {len(table)} distinct kernels compiled in "
            f"{time.perf_counter() - start:.0f} s, {len(failed)} failures\n",
            flush=True,
        )
    if not args.json:
        for line in failures:
            print("FAIL", line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
