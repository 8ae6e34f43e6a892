"""The sweep: grid expansion, skipping measured rows, OOM rows, kill-safety, concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from latprof import lut, measure, sweep
from latprof.errors import InputError
from latprof.grid import GridRequest, expand
from latprof.lut import ANY_CONTEXT
from latprof.settings import BackendRequest, Settings
from latprof.timing import TimerConfig

FAST = TimerConfig(warmup_steps=1, samples=5, min_sample_s=0.0005, max_remeasure=0)


def _request(backends=("torch",), batch=(1,), context=(16, 32), **kw) -> GridRequest:
    base = dict(ops=("attention", "ffn"), widths=(128, 256))
    base.update(kw)
    settings = Settings("cpu", "float32", "eager", batch, context, BackendRequest.parse(backends))
    return GridRequest(settings=settings, **base)


def test_context_independent_ops_are_measured_once():
    points = expand(_request())
    ffn = [s for spec, s in points if spec.op == "ffn"]
    attn = [s for spec, s in points if spec.op == "attention"]
    assert {s.context for s in ffn} == {ANY_CONTEXT} and len(ffn) == 2
    assert sorted({s.context for s in attn}) == [16, 32] and len(attn) == 4


def test_backend_not_supported_by_an_op_is_an_error():
    with pytest.raises(InputError, match="ffn has no backend"):
        expand(_request(backends=("sdpa",)))
    points = expand(_request(backends=("torch", "attention=sdpa")))
    assert {s.backend for spec, s in points if spec.op == "attention"} == {"sdpa"}


def test_triton_backends_on_cpu_are_refused_with_the_reason():
    with pytest.raises(InputError, match="interpreter"):
        expand(_request(ops=("mamba2",), backends=("mamba2=triton",)))


def test_sweep_appends_rows_and_rerun_measures_nothing(tmp_path):
    out = tmp_path / "lut.csv"
    points = expand(_request(ops=("ffn", "attention"), widths=(128,), context=(16,)))
    first = sweep.run_sweep(points, out, config=FAST, threads=1)
    assert first.measured == 2 and first.errors == 0
    rows = lut.read_rows(out)
    assert all(r["status"] == "ok" and r["latency_us_median"] > 0 for r in rows)
    assert all(r["latency_us_p10"] <= r["latency_us_median"] <= r["latency_us_p90"] for r in rows)
    assert all(r["threads"] == 1 and r["copies"] >= 1 and r["bytes_per_step"] > 0 for r in rows)
    again = sweep.run_sweep(points, out, config=FAST, threads=1)
    assert again.measured == 0 and again.skipped_existing == 2
    assert len(lut.read_rows(out)) == 2


def test_out_of_memory_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real = measure.build_workload

    def fake(target, copies):
        if target.spec.width == 256:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")
        return real(target, copies)

    monkeypatch.setattr(measure, "build_workload", fake)
    points = expand(_request(ops=("ffn",)))
    summary = sweep.run_sweep(points, tmp_path / "lut.csv", config=FAST, threads=1)
    status = {r["width"]: r["status"] for r in lut.read_rows(tmp_path / "lut.csv")}
    assert status == {128: "ok", 256: "oom"} and summary.oom == 1


def test_copies_exceed_twice_the_last_level_cache():
    ((spec, setting),) = expand(_request(ops=("ffn",), widths=(128,)))
    llc = 4 * 1024**2
    target = measure.OperatorTarget(spec, setting)
    n = measure.copies_needed(target, llc)
    assert n * target.bytes_per_copy() >= 2 * llc or n == measure.MAX_COPIES


SWEEP_POINTS = 40
SWEEP_CMD = [
    sys.executable,
    "-m",
    "latprof.cli",
    "sweep",
    "--device",
    "cpu",
    "--ops",
    "ffn",
    "--widths",
    ",".join(str(64 + 32 * i) for i in range(20)),  # 40 points: two CPU groups (24 + 16)
    "--batch",
    "1,2",
    "--samples",
    "3",
    "--threads",
    "1",
    "--json",
]


def _run_sweep_cli(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*SWEEP_CMD, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
def test_sigkill_loses_nothing_measured_and_rerun_fills_the_rest(tmp_path):
    out = tmp_path / "lut.csv"
    proc = _run_sweep_cli(out)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or not lut.read_rows(out)):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = lut.read_rows(out)
    # the first group's rows are complete; the group in flight is lost, nothing else
    assert measure.CPU_GROUP_MAX_TARGETS < SWEEP_POINTS  # else one group, and nothing to kill
    assert 1 <= len(kept) < SWEEP_POINTS and all(r["status"] == "ok" for r in kept)
    rerun = _run_sweep_cli(out)
    stdout, _ = rerun.communicate(timeout=300)
    rows = lut.read_rows(out)
    keys = [lut.key_of_row(r) for r in rows]
    assert len(rows) == SWEEP_POINTS and len(set(keys)) == SWEEP_POINTS
    assert b'"skipped_existing": ' + str(len(kept)).encode() in stdout


@pytest.mark.slow
def test_two_sweeps_on_one_lut_do_not_corrupt_it(tmp_path):
    out = tmp_path / "lut.csv"
    procs = [_run_sweep_cli(out) for _ in range(2)]
    for p in procs:
        p.communicate(timeout=300)
        assert p.returncode == 0
    rows = lut.read_rows(out)
    keys = [lut.key_of_row(r) for r in rows]
    assert len(rows) == SWEEP_POINTS and len(set(keys)) == SWEEP_POINTS


def test_spec_file_mode_override_per_operator_and_unknown_keys(tmp_path):
    from latprof.grid import request_from_file

    data = {"ops": {"ffn": {}, "moe": {"mode": "eager"}}, "widths": [128]}
    req = request_from_file(data, device="cuda", dtype=None, mode=None, path="spec.yaml")
    modes = {spec.op: s.mode for spec, s in expand(req)}
    assert modes == {"ffn": "graph", "moe": "eager"}
    with pytest.raises(InputError, match="unknown key"):
        request_from_file(
            {"ops": {"ffn": {"width": [1]}}}, device="cpu", dtype=None, mode=None, path="spec.yaml"
        )


def test_interleave_groups_bound_count_and_bytes():
    from latprof.timing import interleave_groups

    sizes = [5, 5, 5, 20, 1, 1, 1, 1]
    groups = interleave_groups(sizes, lambda n: n, max_items=3, max_bytes=12)
    assert groups == [[5, 5], [5], [20], [1, 1, 1], [1]]  # an oversized item stands alone
    assert sum(groups, []) == sizes


def test_prefill_rows_record_the_backend_prefill_runs():
    """Block.prefill always runs the PyTorch path: a prefill row never carries a decode backend
    it did not use (asked for triton, the prefill point says torch, once)."""
    from latprof.grid import points_for
    from latprof.registry import PREFILL_BACKEND, build_spec

    spec = build_spec("mamba2", 256)
    for backend in ("triton", "mamba_ssm", "torch"):
        common = dict(batches=[1], contexts=[64], dtype="float32", device="cpu", mode="eager")
        (point,) = points_for(spec, phase="prefill", backend=backend, **common)
        assert point[1].backend == PREFILL_BACKEND == "torch"
        (decode,) = points_for(spec, phase="decode", backend=backend, **common)
        assert decode[1].backend == backend
