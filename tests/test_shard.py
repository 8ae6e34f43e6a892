"""`latprof sweep --shard I/N`: a partition of the grid, the same everywhere, balanced by cost."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from latprof import grid, shard
from latprof.errors import InputError
from latprof.lut import Setting
from latprof.registry import build_spec

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "luts").glob("*.yaml"))


def _grid(path: Path, device: str) -> list[grid.Point]:
    request = grid.request_from_file(
        grid.load_spec_file(path), device=device, dtype=None, mode=None, path=str(path)
    )
    return grid.expand(request)


def _grids():
    """Every spec file on cuda (the default spec is GPU-only), and on cpu where it expands."""
    out = []
    for path in SPECS:
        for device in ("cuda", "cpu"):
            try:
                out.append((f"{path.stem}-{device}", _grid(path, device)))
            except InputError:
                assert device == "cpu"  # a graph-mode spec is refused on a CPU
    return out


GRIDS = _grids()


def test_every_spec_file_is_covered():
    assert {name.rsplit("-", 1)[0] for name, _ in GRIDS} == {p.stem for p in SPECS}
    assert len(SPECS) >= 3


@pytest.mark.parametrize("name,points", GRIDS, ids=[n for n, _ in GRIDS])
@pytest.mark.parametrize("count", [1, 2, 3, 7, "more"])
def test_shards_cover_the_grid_once_and_balance(name, points, count):
    count = len(points) + 5 if count == "more" else count
    parts = shard.partition(points, count)
    keys = [shard.canonical_key(p) for part in parts for p in part]
    assert len(parts) == count
    assert len(keys) == len(set(keys)), "a point in two shards"
    assert set(keys) == {shard.canonical_key(p) for p in points}
    assert len(keys) == len(grid.dedupe(points))
    # greedy longest-processing-time bound: no shard above the mean by more than one point
    cost = {shard.canonical_key(p): shard.predicted_cost(p) for p in points}
    loads = [sum(cost[shard.canonical_key(p)] for p in part) for part in parts]
    assert max(loads) <= sum(loads) / count + max(cost.values())
    if count > len(points):
        assert sum(1 for part in parts if part) == len(points)
    position = {shard.canonical_key(p): i for i, p in enumerate(points)}
    for part in parts:
        order = [position[shard.canonical_key(p)] for p in part]
        assert order == sorted(order), "a shard keeps the grid's order"
    last = shard.Shard(count - 1, count)  # select() is the same partition
    assert shard.select(points, last) == parts[-1]


def test_balance_follows_cost_not_count():
    """One large LM head and many small FFNs: the head's shard gets few of the small points."""
    big = build_spec("lm_head", 4096, vocab_size=151936)
    setting = Setting("decode", 1, 0, "bf16", "cuda", "torch", "graph")
    small = [build_spec("ffn", w) for w in range(256, 256 + 64 * 20, 64)]
    points = [(big, setting), *[(s, setting) for s in small]]
    parts = shard.partition(points, 2)
    with_big = next(p for p in parts if (big, setting) in p)
    other = next(p for p in parts if (big, setting) not in p)
    assert len(with_big) < len(other)
    costs = [sum(shard.predicted_cost(p) for p in part) for part in parts]
    assert max(costs) <= sum(costs) / 2 + shard.predicted_cost((big, setting))


def test_partition_does_not_depend_on_grid_order_or_duplicates():
    points = _grid(ROOT / "luts" / "quick.yaml", "cpu")
    shuffled = points[:] + points[:5]
    random.Random(7).shuffle(shuffled)
    for count in (2, 3, 7):
        a = [{shard.canonical_key(p) for p in part} for part in shard.partition(points, count)]
        b = [{shard.canonical_key(p) for p in part} for part in shard.partition(shuffled, count)]
        assert a == b


PRINT_PARTITION = """
import json, sys
from latprof import grid, shard
path = sys.argv[1]
req = grid.request_from_file(grid.load_spec_file(path), device="cuda", dtype=None, mode=None,
                             path=path)
parts = shard.partition(grid.expand(req), 7)
print(json.dumps([[list(shard.canonical_key(p)) for p in part] for part in parts]))
"""


def test_partition_is_the_same_in_another_process_with_another_hash_seed():
    path = str(ROOT / "luts" / "default.yaml")
    mine = [
        [list(shard.canonical_key(p)) for p in part]
        for part in shard.partition(_grid(Path(path), "cuda"), 7)
    ]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", PRINT_PARTITION, path],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=ROOT,
    )
    assert json.loads(out.stdout) == mine


@pytest.mark.parametrize(
    "text,message",
    [("2/2", "0-based"), ("0/0", "at least 1"), ("1-4", "expected I/N"), ("a/b", "expected I/N")],
)
def test_bad_shard_is_an_input_error(text, message):
    with pytest.raises(InputError, match=message):
        shard.Shard.parse(text)


def test_parse_and_provenance():
    points = _grid(ROOT / "luts" / "frontier-llama-cpu.yaml", "cpu")
    part = shard.Shard.parse(" 1 / 3 ")
    assert (part.index, part.count, str(part)) == (1, 3, "1/3")
    prov = shard.provenance(points, part)
    assert prov["index"] == 1 and prov["count"] == 3 and prov["grid_points"] == len(points)
    assert prov["points"] == len(shard.select(points, part)) and prov["method"] == shard.METHOD
    assert 0 < prov["predicted_cost_bytes"] < prov["grid_predicted_cost_bytes"]


def test_sweep_cli_shards_fill_one_lut_and_record_the_shard(tmp_path):
    from typer.testing import CliRunner

    from latprof import lut
    from latprof.cli import _register, app

    _register()
    out = tmp_path / "lut.csv"
    flags = [
        "sweep",
        "--device",
        "cpu",
        "--ops",
        "ffn",
        "--widths",
        "128,192",
        "--samples",
        "3",
        "--threads",
        "1",
        "--out",
        str(out),
        "--json",
    ]
    empty = CliRunner().invoke(app, [*flags, "--shard", "5/6"])  # 2 points, 6 shards
    assert empty.exit_code == 0 and json.loads(empty.stdout)["points_total"] == 0
    assert not out.exists()
    for i in range(2):
        result = CliRunner().invoke(app, [*flags, "--shard", f"{i}/2"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["measured"] == 1
    assert sorted(r["width"] for r in lut.read_rows(out)) == [128, 192]
    runs = lut.read_provenance(out)["runs"]
    assert [r["shard"]["index"] for r in runs] == [0, 1]
    assert all(r["shard"]["grid_points"] == 2 and r["pinning"]["cpu_affinity"] for r in runs)
