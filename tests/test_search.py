"""`latprof search`: spaces, the evolution, scores and their faults, the journal, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_frontier import llama_lut
from typer.testing import CliRunner

from latprof import search as se
from latprof.cli import _register, app
from latprof.config_yaml import load_yaml_model
from latprof.errors import InputError
from latprof.estimate import Estimator

SPACE = """
name: tiny
widths: [256, 512, 768]
blocks: {min: 2, max: 6}
mixers: [attention]
ffn_per_block: [0, 1, 2]
vocab_size: 1000
tied_embeddings: false
"""


@pytest.fixture
def space(tmp_path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


@pytest.fixture
def lut(tmp_path) -> Path:
    return llama_lut(tmp_path / "lut.csv")


def _search(space, lut, **kw) -> se.Search:
    args = dict(budget_s=1.0, prompt=128, generate=64, population=8, tournament=3, seed=0)
    args.update(kw)
    return se.Search(se.Space.load(space), Estimator(lut), **args)


def _budget(space, lut, frac=0.5) -> float:
    """A budget between the cheapest and the dearest model of the space."""
    s = _search(space, lut, budget_s=1e9)
    lat = [s.latency(se.random_genome(s.space, s.rng)).latency_s for _ in range(200)]
    return min(lat) + frac * (max(lat) - min(lat))


def test_same_seed_same_front_and_everything_within_budget(space, lut):
    budget = _budget(space, lut)
    a = _search(space, lut, budget_s=budget).run(10)
    b = _search(space, lut, budget_s=budget).run(10)
    assert [c.key for c in a.front] == [c.key for c in b.front] and a.front
    assert all(c.latency_s <= budget for c in a.front)
    assert a.counts.get("over_budget", 0) > 0  # the budget binds
    scores = [c.score for c in a.front]
    assert scores == sorted(scores) and len(set(scores)) == len(scores)  # a strict front
    c = _search(space, lut, budget_s=budget, seed=1).run(10)
    assert [x.key for x in c.front] != [x.key for x in a.front] or c.evaluated != a.evaluated


def test_candidates_are_models_of_the_space(space, lut):
    s = _search(space, lut, budget_s=1e9)
    for _ in range(50):
        g = se.mutate(se.random_genome(s.space, s.rng), s.space, s.rng)
        model = g.model(s.space)
        assert 2 <= len(g.blocks) <= 6 and g.width in (256, 512, 768)
        ffns = sum(n for _, n in g.blocks)
        assert len(model.layers) == len(g.blocks) + ffns


def test_pareto_front():
    def cand(lat, score):
        g = se.Genome(256, (("attention", 0),), ())
        return se.Candidate(f"{lat}-{score}", g, lat, 0, "ok", score)

    pts = [cand(1, 5), cand(2, 4), cand(3, 7), cand(4, 7), cand(5, 9)]
    assert [(c.latency_s, c.score) for c in se.pareto_front(pts, False)] == [(1, 5), (3, 7), (5, 9)]
    assert [(c.latency_s, c.score) for c in se.pareto_front(pts, True)] == [(1, 5), (2, 4)]


def test_ratios_and_constraints(tmp_path, lut):
    path = tmp_path / "s.yaml"
    path.write_text(
        SPACE.replace("mixers: [attention]", "mixers: [attention, mamba2]")
        + "ratios: ['1:1']\nconstraints: {max_attention_layers: 2}\n"
    )
    space = se.Space.load(path)
    g = se.Genome(256, (("attention", 0), ("mamba2", 0), ("attention", 0)), ())
    assert "ratio 2:1" in se.violation(g, space, g.model(space))
    g = se.Genome(256, (("attention", 0), ("mamba2", 0)) * 3, ())
    assert "3 attention layers" in se.violation(g, space, g.model(space))
    g = se.Genome(256, (("attention", 1), ("mamba2", 0)), ())
    assert se.violation(g, space, g.model(space)) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("widths: [256]\nmixers: []\n", "mixers lists at least one"),
        ("widths: [256]\nmixers: [ffn]\n", "not a mixer family"),
        ("widths: [256]\nmixers: [attention]\nblocks: {min: 5, max: 2}\n", "an empty space"),
        (
            "widths: [256]\nmixers: [attention]\nblocks: {min: 10, max: 12}\nmax_operators: 5\n",
            "contradictory space",
        ),
        ("widths: [256]\nmixers: [attention]\nratios: ['1:3']\n", "exactly two mixers"),
        ("widths: [256]\nmixers: [attention, mamba2]\nratios: ['x']\n", "is not a:b"),
        ("widths: [300]\nmixers: [deltanet]\nparams: {deltanet: {heads: [7]}}\n", "deltanet"),
        ("widths: [256]\nmixers: [attention]\nconstraints: {max_cost: 1}\n", "unknown constraint"),
        ("widths: []\nmixers: [attention]\n", "non-empty list"),
        ("wdths: [256]\n", "unknown key"),
    ],
)
def test_bad_spaces(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        se.Space.load(path)


def test_a_budget_nothing_meets_names_the_cheapest(space, lut):
    with pytest.raises(InputError, match=r"cheapest latency found was"):
        _search(space, lut, budget_s=1e-6).run(2)


def test_python_and_command_scores_and_their_faults(space, lut, tmp_path):
    budget = _budget(space, lut, 0.8)
    sys.path.insert(0, str(Path(__file__).parent))
    s = _search(
        space, lut, budget_s=budget, score=se.Score("python:search_scores:negative_attention")
    )
    assert s.run(3).top[0].score is not None
    failing = _search(space, lut, budget_s=budget, score=se.Score("python:search_scores:broken"))
    with pytest.raises(InputError, match="failed for every candidate.*always fails"):
        failing.run(2)
    counts = failing._counts()
    assert counts.get("score_failed", 0) > 0
    script = tmp_path / "score.py"
    script.write_text(
        "import sys, yaml, time\n"
        "d = yaml.safe_load(open(sys.argv[1]))\n"
        "w = d['width']\n"
        "if w == 512: time.sleep(5)\n"  # hangs past the timeout
        "if w == 768: print('no number here'); sys.exit(0)\n"
        "print('loss', 10.0 - w / 1000)\n"
    )
    cmd = se.Score(f"cmd:{sys.executable} {script}", timeout_s=1.0)
    s = _search(space, lut, budget_s=budget, score=cmd, minimize=True, jobs=2, out=tmp_path / "o")
    result = s.run(2)
    assert result.counts.get("score_failed", 0) > 0 and result.front
    whys = {c.why for c in s.seen.values() if c.status == "score_failed"}
    assert any("timed out" in w for w in whys) and any("no number" in w for w in whys)
    assert all(c.genome.width == 256 for c in result.front)


def test_journal_resume_reuses_scores(space, lut, tmp_path):
    budget = _budget(space, lut)
    out = tmp_path / "run"
    first = _search(space, lut, budget_s=budget, out=out).run(5)
    lines = (out / "journal.jsonl").read_text().splitlines()
    assert lines and first.resumed == 0
    with open(out / "journal.jsonl", "a") as fh:
        fh.write('{"key": "torn')  # a killed writer's last line
    again = _search(space, lut, budget_s=budget, out=out).run(5)
    assert again.resumed == len(lines)
    assert [c.key for c in again.front] == [c.key for c in first.front]


def run_cli(*args):
    _register()
    return CliRunner().invoke(app, ["search", *args])


def test_cli_outputs(space, lut, tmp_path):
    budget = _budget(space, lut)
    out = tmp_path / "s"
    args = (
        str(space),
        "--lut",
        str(lut),
        "--budget-s",
        f"{budget}",
        "--generations",
        "5",
        "--population",
        "8",
        "--tournament",
        "3",
        "--seed",
        "0",
        "--out",
        str(out),
    )
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["pareto_front"] and doc["evaluated"] > 0
    assert (out / "front.csv").read_text().startswith("key,latency_s,score")
    assert (out / "front.png").stat().st_size > 1000
    tops = sorted((out / "top").glob("*.yaml"))
    assert tops and load_yaml_model(tops[0]).vocab_size == 1000
    table = run_cli(*args)
    assert table.exit_code == 0 and "Pareto front" in table.stdout
    assert "resumed" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--budget-s", "1", "--budget-ms", "5"), "give the latency budget once"),
        ((), "give the latency budget once"),
        (("--budget-s", "1e-9"), "cheapest latency found"),
        (("--budget-s", "1", "--score", "bogus"), "give params"),
        (("--budget-s", "1", "--score", "python:nosuchmodule:f"), "cannot load it"),
        (("--budget-s", "1", "--population", "1"), "--population must be"),
        (("--budget-s", "1", "--generations", "0"), "--generations must be"),
        (("--budget-s", "nan"), "budget must be positive"),
    ],
)
def test_cli_bad_input_exits_2(space, lut, args, message):
    result = run_cli(str(space), "--lut", str(lut), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_a_killed_search_resumes_from_its_journal(space, lut, tmp_path):
    """SIGKILL mid-search (a slow command score), then the same command again: it takes the
    scores already in the journal and ends with the front of an uninterrupted run."""
    budget = _budget(space, lut)
    script = tmp_path / "slow_score.py"
    script.write_text(
        "import sys, time, yaml\ntime.sleep(0.2)\n"
        "print(yaml.safe_load(open(sys.argv[1]))['width'])\n"
    )

    def cmd(out):
        return [
            sys.executable,
            "-m",
            "latprof.cli",
            "search",
            str(space),
            "--lut",
            str(lut),
            "--budget-s",
            f"{budget}",
            "--generations",
            "3",
            "--population",
            "8",
            "--tournament",
            "3",
            "--seed",
            "0",
            "--score",
            f"cmd:{sys.executable} {script}",
            "--out",
            str(out),
            "--json",
        ]

    proc = subprocess.Popen(
        cmd(tmp_path / "k"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    journal = tmp_path / "k" / "journal.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (
        not journal.exists() or len(journal.read_text().splitlines()) < 4
    ):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(journal.read_text().splitlines())
    assert done_before >= 4
    resumed = json.loads(
        subprocess.run(cmd(tmp_path / "k"), capture_output=True, text=True, check=True).stdout
    )
    clean = json.loads(
        subprocess.run(cmd(tmp_path / "c"), capture_output=True, text=True, check=True).stdout
    )
    assert resumed["resumed_from_journal"] >= done_before - 1
    assert [c["key"] for c in resumed["pareto_front"]] == [c["key"] for c in clean["pareto_front"]]
