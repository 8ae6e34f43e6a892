"""Our Triton kernels compiled ahead of time for sm_90 and sm_80 without a GPU
(latprof.kernels.aot): every kernel compiles with the arguments its launcher really passes, and
fits the target's shared memory per block.  Compiling takes 1-5 s per distinct kernel, so the
compile tests are marked slow (CI runs them): one configuration per kernel at sm_90, the old
launch configuration caught, and the full matrix (the default sweep's configurations in three
dtypes plus the extra head dims, both targets: about 170 kernels per target, ~7 min)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from latprof.kernels import aot

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="replaces the Triton driver: run on a machine without a GPU"
)

ROOT = Path(__file__).resolve().parent.parent


def _compile(*args: str, script: str | None = None) -> list[dict]:
    """Run the report (or `script`) in a process without the interpreter the test run uses (it
    replaces Triton's compiler); one JSON object per target."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-c", script] if script else [
        sys.executable, "-m", "latprof.kernels.aot_report", "--json", *args
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=3000)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_sweep_constants_match_the_default_spec():
    spec = yaml.safe_load((ROOT / "luts" / "default.yaml").read_text())
    assert tuple(spec["widths"]) == aot.SWEEP_WIDTHS
    assert tuple(spec["batch"]) == aot.SWEEP_BATCH
    assert tuple(spec["context"]) == aot.SWEEP_CONTEXT
    for op in aot.TRITON_OPS:
        assert "triton" in spec["ops"][op]["backends"]


@pytest.mark.slow
def test_one_configuration_per_kernel_compiles_for_sm90():
    (result,) = _compile("--quick", "--arch", "90")
    assert result["arch"] == 90 and not result["failures"], result["failures"]
    rows = result["rows"]
    assert {r["kernel"] for r in rows} == {
        "_decode_attention_kernel",
        "_combine_splits_kernel",
        "_causal_conv1d_update_kernel",
        "_selective_state_update_kernel",
        "_mamba2_state_update_kernel",
        "_gated_rms_norm_kernel",
    }
    for r in rows:
        assert r["fits"] and r["registers"] > 0 and r["num_warps"] >= 1, r
        assert r["stack_bytes"] == 0, f"{r['kernel']} spills: {r}"
        assert r["dtype"] == "bf16" or r["kernel"] == "_combine_splits_kernel", r
    (attention,) = [r for r in rows if r["kernel"] == "_decode_attention_kernel"]
    # the 16-bit dots run on tensor cores (an interpreter-only float32 upcast would not)
    assert attention["tensor_cores"] and "SPLIT=True" in attention["constexprs"]


OLD_CONFIG = """
from latprof.kernels import aot, decode_attention
decode_attention._LAUNCH_CONFIGS = ((4, 512, 64, 4, 3),)
case = aot.Case("attention", 2048, 1, 8192, "float32", (("head_dim", 256),))
rows, failures = aot.compile_cases(90, (case,))
import json; print(json.dumps(dict(arch=90, rows=rows, failures=failures)))
"""


@pytest.mark.slow
def test_the_old_single_config_is_caught():
    """The check can fail: float32 head_dim 256 at BLOCK_N 64 / 3 stages (the launch config
    before this change) needs more than sm_90's 227 KB per block."""
    (result,) = _compile(script=OLD_CONFIG)
    assert any("bytes of shared memory" in f for f in result["failures"]), result


@pytest.mark.slow
def test_every_configuration_compiles_fits_and_does_not_spill():
    results = _compile()
    assert [r["arch"] for r in results] == list(aot.TARGETS)
    for result in results:
        assert not result["failures"], "\n".join(result["failures"])
        spills = [(r["kernel"], r["example"], r["stack_bytes"]) for r in result["rows"]
                  if r["stack_bytes"]]  # fmt: skip
        assert not spills, spills
