"""`latprof frontier`: widest model per depth under a budget, from a (synthetic) LUT."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_estimate_support import synthetic_latency, synthetic_rows
from typer.testing import CliRunner

from latprof import frontier as fr
from latprof.cli import _register, app
from latprof.config_yaml import load_yaml_model
from latprof.errors import InputError
from latprof.estimate import Estimator
from latprof.lut import append_rows, record_run
from latprof.registry import build_spec

WIDTHS = (256, 512, 768, 1024)
CONTEXTS = (128, 256)
VOCAB = 1000


def llama_lut(path: Path, widths=WIDTHS) -> Path:
    specs = []
    for w in widths:
        specs += [build_spec("attention", w), build_spec("ffn", w)]
        specs += [build_spec(op, w, vocab_size=VOCAB) for op in ("embedding", "lm_head")]
    record_run(path, {"started_at": "2026-12-01T00:00:00+00:00", "device_name": "synthetic-cpu"})
    append_rows(path, synthetic_rows(specs, batches=(1,), contexts=CONTEXTS))
    return path


@pytest.fixture
def lut(tmp_path) -> Path:
    return llama_lut(tmp_path / "lut.csv")


def expected_latency_s(depth: int, width: int, prompt: int, generate: int) -> float:
    """The synthetic LUT summed by hand: linear in context between the measured 128 and 256."""
    attn, ffn = build_spec("attention", width), build_spec("ffn", width)
    io = [build_spec(op, width, vocab_size=VOCAB) for op in ("embedding", "lm_head")]
    total = 0.0
    for c in range(prompt, prompt + generate):
        step = depth * (synthetic_latency(attn, 1, c) + synthetic_latency(ffn, 1, 0))
        total += step + sum(synthetic_latency(s, 1, 0) for s in io)
    return total / 1e6


def test_grid_latency_and_params_are_the_lut_sum(lut):
    family = fr.llama_family(VOCAB)
    est = Estimator(lut)
    points = fr.grid(family, (2, 4), (256, 1024), est, batch=1, prompt=128, generate=64)
    for p in points:
        assert p.status == "ok"
        assert p.latency_s == pytest.approx(expected_latency_s(p.depth, p.width, 128, 64))
        assert p.params == family.model(p.depth, p.width).param_count()


def test_widest_model_within_each_budget(lut):
    family = fr.llama_family(VOCAB)
    est = Estimator(lut)
    lat = {(d, w): expected_latency_s(d, w, 128, 64) for d in (2, 4) for w in WIDTHS}
    budget = lat[(4, 512)] * 1.0001  # depth 4 fits up to 512, depth 2 wider
    result = fr.frontier(family, (4, 2), WIDTHS, est, prompt=128, generate=64, budgets=[budget])
    (row,) = result.budgets
    assert row.best_per_depth[4].width == 512
    fits2 = max(w for w in WIDTHS if lat[(2, w)] <= budget)
    assert fits2 > 512 and row.best_per_depth[2].width == fits2
    params = {d: p.params for d, p in row.best_per_depth.items()}
    assert row.ratio == pytest.approx(params[2] / params[4]) and row.ratio > 1
    assert row.best_depth == 2 and result.depths == (2, 4)
    assert "no --loss-model" in " ".join(result.notes)


def test_auto_budgets_span_the_grid(lut):
    est = Estimator(lut)
    result = fr.frontier(fr.llama_family(VOCAB), (2, 4), WIDTHS, est, prompt=128, generate=8)
    budgets = [r.budget_s for r in result.budgets]
    assert len(budgets) == fr.AUTO_BUDGETS and budgets == sorted(budgets)
    assert all(all(p is not None for p in r.best_per_depth.values()) for r in result.budgets)


def test_a_budget_no_model_meets_names_the_fastest(lut):
    est = Estimator(lut)
    with pytest.raises(InputError, match=r"smallest latency reached is .* \(depth 2, width 256\)"):
        fr.frontier(fr.llama_family(VOCAB), (2, 4), WIDTHS, est, prompt=128, budgets=[1e-9])


def test_widths_outside_the_lut_are_left_out_or_extrapolated(lut):
    est = Estimator(lut)
    wide = (*WIDTHS, 1280)
    result = fr.frontier(
        fr.llama_family(VOCAB), (2,), wide, est, prompt=128, generate=8, budgets=[10.0]
    )
    assert [p.status for p in result.points][-1] == "outside"
    assert any("1280" in n for n in result.notes)
    loose = Estimator(lut, allow_extrapolation=True)
    result = fr.frontier(
        fr.llama_family(VOCAB),
        (2,),
        wide,
        est,
        prompt=128,
        generate=8,
        budgets=[10.0],
        extrapolating=loose,
    )
    assert result.points[-1].status == "extrapolated" and result.points[-1].latency_s > 0
    assert result.budgets[0].best_per_depth[2].width == 1280


def test_nothing_answerable_says_what_and_why(lut):
    with pytest.raises(InputError, match=r"without extrapolation .*contexts 0-7"):
        fr.frontier(fr.llama_family(VOCAB), (2,), WIDTHS, Estimator(lut), prompt=0, generate=8)


def test_shape_rules_and_empty_inputs():
    with pytest.raises(InputError, match="multiples of 128"):
        fr.llama_family().model(12, 300)
    with pytest.raises(InputError, match="start:stop:step"):
        fr.parse_widths("1:2")
    assert fr.parse_widths("512:1024:256") == (512, 768, 1024)
    assert fr.parse_budgets("auto") is None and fr.parse_budgets("5,2.5") == (2.5, 5.0)
    for bad in ("0", "x", "nan", "-1"):
        with pytest.raises(InputError, match="--budgets"):
            fr.parse_budgets(bad)


def test_template_families(tmp_path):
    good = tmp_path / "hybrid.yaml"
    good.write_text(
        "name: hybrid\nwidth: free\nvocab_size: 1000\n"
        "defaults:\n  attention: {head_dim: 64}\n  mamba2: {head_dim: 64}\n"
        "block: mamba2 ffn attention ffn\n"
    )
    family = fr.load_family(str(good))
    model = family.model(3, 512)
    assert [s.op for s in model.layers] == ["mamba2", "ffn", "attention", "ffn"] * 3
    assert model.vocab_size == 1000 and model.layers[2].heads == 8
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("width: 1024\nvocab_size: 1000\nblock: ffn\n")
    with pytest.raises(InputError, match="width: free"):
        fr.load_family(str(fixed))
    both = tmp_path / "both.yaml"
    both.write_text("width: free\nvocab_size: 1000\nblock: ffn\npattern: ffn\n")
    with pytest.raises(InputError, match="neither `pattern:`"):
        fr.load_family(str(both))
    with pytest.raises(InputError, match="unknown family"):
        fr.load_family("lama")
    rigid = tmp_path / "rigid.yaml"
    rigid.write_text(
        "width: free\nvocab_size: 1000\ndefaults: {attention: {heads: 16}}\nblock: attention ffn\n"
    )
    with pytest.raises(InputError, match="width 1000 breaks its shape rules"):
        fr.load_family(str(rigid)).model(2, 1000)


def test_loss_model(tmp_path):
    path = tmp_path / "loss.yaml"
    path.write_text("E: 1.5\nA: 1.0\nalpha: 1.0\nC: 100.0\ngamma: 0.5\n")
    loss = fr.LossModel.load(path)
    assert loss.loss(4, 1024, 10_000) == pytest.approx(1.5 + 1 / 4 + 100 / 100)
    for text, message in (
        ("E: 1\nA: 1\n", "A and alpha go together"),
        ("E: 1\nA: 1\nalpha: x\n", "alpha must be a number"),
        ("A: 1\nalpha: 1\n", "needs E"),
        ("E: 1\nZ: 3\n", "unknown key"),
        ("E: 1\nF: 1\ndelta: 0.3\n", "needs tokens"),
        ("E: 1\n", "no term besides E"),
        ("- 1\n", "a YAML mapping"),
    ):
        path.write_text(text)
        with pytest.raises(InputError, match=message):
            fr.LossModel.load(path)


def run_cli(*args: str):
    _register()
    return CliRunner().invoke(app, ["frontier", *args])


def test_cli_table_json_plot_and_export(lut, tmp_path):
    base = ("--lut", str(lut), "--depths", "2,4", "--widths", "256:1024:256", "--vocab", "1000")
    result = run_cli(*base, "--budgets", "auto", "--plot", str(tmp_path / "f.png"))
    assert result.exit_code == 0, result.output
    assert "ratio d2/d4" in result.stdout and (tmp_path / "f.png").stat().st_size > 1000
    result = run_cli(*base, "--json", "--export", str(tmp_path / "picks"))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["score"] == "params" and len(doc["points"]) == 8
    picked = {
        (p["depth"], p["width"])
        for row in doc["budgets"]
        for p in row["per_depth"].values()
        if p is not None
    }
    files = sorted((tmp_path / "picks").glob("*.yaml"))
    assert len(files) == len(picked)
    model = load_yaml_model(files[0])
    assert (model.layers.count(model.layers[0]), model.vocab_size) in ((2, 1000), (4, 1000))
    assert yaml.safe_load(files[0].read_text())["description"].startswith("frontier pick")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--depths", ""), "give at least one depth"),
        (("--depths", "12,x"), "not an integer"),
        (("--widths", "300"), "multiples of 128"),
        (("--budgets", "1e-9"), "no model of the grid meets it"),
        (("--family", "nope"), "unknown family"),
        (("--batch", "1,4"), "is not one integer"),
        (("--loss-model", "/nonexistent.yaml"), ""),
    ],
)
def test_cli_bad_input_exits_2(lut, args, message):
    result = run_cli("--lut", str(lut), "--vocab", "1000", "--widths", "256,512", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_frontier_cli_never_imports_torch(lut):
    code = (
        "import sys; from latprof.cli import _register, app; _register(); "
        f"sys.argv = ['latprof', 'frontier', '--lut', {str(lut)!r}, '--vocab', '1000', "
        "'--depths', '2,4', '--widths', '256:1024:256', '--json'];\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in ('torch', 'pandas') if m in sys.modules]; "
        "print('IMPORTED', bad, file=sys.stderr); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["family"] == "llama"


def test_example_family_and_loss_model_load():
    root = Path(__file__).resolve().parent.parent / "configs" / "frontier"
    family = fr.load_family(str(root / "nemotron-flash-block.yaml"))
    model = family.model(3, 2048)
    assert len(model.layers) == 24 and model.meta_tokens == 256 and model.tied_embeddings
    assert model.summary() == "3 deltanet, 12 ffn, 6 mamba2, 3 attention"
    loss = fr.LossModel.load(root / "chinchilla-loss.yaml")
    assert loss.loss(12, 1024, 10**9) < loss.loss(12, 1024, 10**8)  # more parameters, lower loss


def test_the_first_auto_budget_holds_every_depth():
    """4.0549 s would round to 4.05 and leave out the depth whose fastest model takes it."""
    pts = [
        fr.GridPoint(12, 256, 1, 3.0),
        fr.GridPoint(12, 512, 2, 9.0),
        fr.GridPoint(24, 256, 1, 4.0549),
        fr.GridPoint(24, 512, 2, 12.0),
    ]
    budgets = fr.auto_budgets(pts, (12, 24))
    assert budgets[0] == 4.06 and budgets == tuple(sorted(budgets))
    rows = fr.budget_rows(pts, (12, 24), budgets, by_loss=False)
    assert all(p is not None for p in rows[0].best_per_depth.values())
