"""Concurrent sweeps: claims under the LUT lock, lapsing claims, the same-device warning, and
the CPU load of other processes recorded per row (issue 16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from latprof import claims, cpu_load, lut, sweep
from latprof.cpu_load import Load

KEYS = [("ffn(width=64)", "decode", 1, 0, "float32", "cpu", "torch", "eager", i) for i in range(4)]


def _other(tmp_path, pid: int) -> claims.Claims:
    return claims.Claims(tmp_path / "lut.csv", pid=pid)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_sweep_takes_only_the_points_nobody_holds(tmp_path):
    first = _other(tmp_path, os.getppid())  # a live process that is not us
    me = claims.Claims(tmp_path / "lut.csv")
    with lut.locked(tmp_path / "lut.csv"):
        assert first.take(KEYS[:2]) == set(KEYS[:2])
        assert me.take(KEYS) == set(KEYS[2:])
        assert me.held_by_others() == set(KEYS[:2])
        me.release(KEYS[2:])
        first.release(KEYS[:1])
        assert me.take(KEYS) == {KEYS[0], *KEYS[2:]}
    record = json.loads(claims.claims_path(tmp_path / "lut.csv").read_text())
    holders = {(c["pid"], c["host"]) for c in record["claims"]}
    assert {pid for pid, _ in holders} == {os.getpid(), os.getppid()}
    assert all(c["expires_at"] > time.time() for c in record["claims"])


def test_claims_of_a_killed_sweep_lapse_at_once(tmp_path):
    dead = _other(tmp_path, _dead_pid())
    me = claims.Claims(tmp_path / "lut.csv")
    with lut.locked(tmp_path / "lut.csv"):
        dead.pid_start = "12345"  # as recorded while it was alive
        dead.take(KEYS)
        assert me.held_by_others() == set()
        assert me.take(KEYS) == set(KEYS)


def test_claims_expire(tmp_path):
    other = claims.Claims(tmp_path / "lut.csv", ttl_s=-1.0, pid=os.getppid())
    with lut.locked(tmp_path / "lut.csv"):
        other.take(KEYS)
        assert claims.Claims(tmp_path / "lut.csv").take(KEYS) == set(KEYS)


def test_a_damaged_claims_record_is_ignored(tmp_path):
    claims.claims_path(tmp_path / "lut.csv").write_text("[not json")
    assert claims.Claims(tmp_path / "lut.csv").take(KEYS[:1]) == {KEYS[0]}


def test_two_sweeps_on_one_device_are_warned_about(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LATPROF_ACTIVE_DIR", str(tmp_path / "active"))
    parent = os.getppid()
    (tmp_path / "active").mkdir()
    entry = {"pid": parent, "pid_start": claims.process_start(parent), "lut": "a.csv"}
    (tmp_path / "active" / f"sweep-{parent}.json").write_text(json.dumps(entry | {"device": "cpu"}))
    dead = _dead_pid()
    stale = {"pid": dead, "pid_start": "1", "device": "cpu", "lut": "b.csv"}
    (tmp_path / "active" / f"sweep-{dead}.json").write_text(json.dumps(stale))
    with claims.ActiveSweep("cpu", "mine.csv") as active:
        assert active.check() and active.check()
    assert capsys.readouterr().err.count("another sweep") == 1  # warned once
    assert not (tmp_path / "active" / f"sweep-{dead}.json").exists()  # the dead one is removed
    with claims.ActiveSweep("cuda:GPU-other", "mine.csv") as active:
        assert not active.check()  # a sweep on another GPU does not disturb this one


def test_other_cpu_load_is_measured_and_flagged():
    load = cpu_load.CpuLoad()
    load.start()
    busy = subprocess.Popen(
        [sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<1.5: pass"]
    )
    busy.wait()
    result = load.stop()
    assert result is not None and result.other_cores > 0.3 and result.loaded
    quiet = Load(other_cores=0.0, steal_pct=0.0, wall_s=1.0)
    row = sweep._flag({"flags": "noisy"}, quiet, concurrent=False)
    assert row["flags"] == "noisy" and row["other_cpu_cores"] == 0.0
    row = sweep._flag({"flags": None}, Load(0.0, 5.0, 1.0), concurrent=True)
    assert row["flags"] == "loaded;concurrent" and row["steal_pct"] == 5.0


def test_a_lut_of_an_older_header_is_migrated_on_append(tmp_path):
    path = tmp_path / "old.csv"
    old = [c for c in lut.COLUMNS if c not in ("other_cpu_cores", "steal_pct")]
    row = {"op": "ffn", "spec": "ffn(width=64,ffn_dim=256,activation=swiglu)", "width": 64}
    path.write_text(",".join(old) + "\n" + ",".join("" for _ in old) + "\n")
    lut.append_rows(path, [row | {"other_cpu_cores": 1.5}])
    header = path.read_text().splitlines()[0].split(",")
    assert header == list(lut.COLUMNS)
    rows = lut.read_rows(path)
    assert len(rows) == 2 and rows[1]["other_cpu_cores"] == 1.5


SWEEP_CMD = [
    sys.executable, "-m", "latprof.cli", "sweep", "--device", "cpu", "--ops", "ffn",
    "--widths", ",".join(str(64 + 32 * i) for i in range(24)), "--batch", "1,2",
    "--samples", "3", "--threads", "1", "--json",
]  # fmt: skip  # 48 points: two CPU groups of 24


@pytest.mark.slow
def test_two_sweeps_on_one_lut_split_the_points(tmp_path):
    out = tmp_path / "lut.csv"
    env = {**os.environ, "LATPROF_ACTIVE_DIR": str(tmp_path / "active")}
    procs = []
    for _ in range(2):
        procs.append(
            subprocess.Popen(
                [*SWEEP_CMD, "--out", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
        )
        time.sleep(4)  # the first has claimed its first group
    docs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr
        docs.append((json.loads(stdout), stderr.decode()))
    rows = lut.read_rows(out)
    keys = [lut.key_of_row(r) for r in rows]
    assert len(rows) == 48 and len(set(keys)) == 48
    measured = [d["measured"] for d, _ in docs]
    assert sum(measured) == 48 and min(measured) > 0  # the work was split, not done twice
    assert any("another sweep" in err for _, err in docs)
    assert any("concurrent" in (r.get("flags") or "") for r in rows)
    assert all(r["other_cpu_cores"] is not None for r in rows)
    assert not claims.claims_path(out).exists()  # every claim released
