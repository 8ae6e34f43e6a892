"""The bad-input catalogue (issue 16): one test per kind of hostile or mistaken input a probe of
217 found mishandled.  Each must end in exit 2 with one paragraph (or, for LUT damage, a refusal
naming the line), never a traceback, a hang, a silent accept or a lost measurement."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from latprof import lut, measure, sweep
from latprof.cli import _register, app

_register()
runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
LLAMA_LUT = ROOT / "luts" / "cpu-intel-xeon-2core-llama.csv"
LLAMA_CFG = ROOT / "configs" / "llama-12-blocks.yaml"
HF = Path(__file__).parent / "fixtures" / "hf-configs"
EST = ["--prompt", "128", "--generate", "64"]
SWEEP = ["sweep", "--ops", "ffn", "--widths", "64", "--device", "cpu", "--samples", "3"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def refused(result, *needles: str) -> str:
    """Exit 2, no traceback, every needle in the (unwrapped) message."""
    text = " ".join(result.output.split())
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in text, text
    return text


@pytest.fixture
def no_measuring(monkeypatch):
    """Fails the test if anything is measured: a bad path must be refused before that."""

    def boom(*a, **k):
        raise AssertionError("measured before the bad input was refused")

    monkeypatch.setattr(measure, "measure", boom)
    monkeypatch.setattr(sweep, "measure", boom)


def lut_copy(tmp_path: Path, edit=None, name: str = "lut") -> Path:
    dst = tmp_path / f"{name}.csv"
    lines = LLAMA_LUT.read_text().splitlines(keepends=True)
    dst.write_text("".join(edit(lines) if edit else lines))
    shutil.copy(LLAMA_LUT.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def set_field(line: str, header: str, column: str, value: str) -> str:
    cols = next(csv.reader([header]))
    vals = next(csv.reader([line]))
    vals[cols.index(column)] = value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(vals)
    return buf.getvalue()


# ---- output paths: refused before anything is measured ------------------------------------------
@pytest.mark.parametrize("where", ["proc", "directory", "sys", "sidecar-directory"])
def test_unwritable_out_is_refused_before_measuring(tmp_path, no_measuring, where):
    out = {
        "proc": Path("/proc/latprof.csv"),
        "directory": tmp_path,
        "sys": Path("/sys/latprof.csv"),
        "sidecar-directory": tmp_path / "x.csv",
    }[where]
    if where == "sidecar-directory":
        (tmp_path / "x.json").mkdir()
    refused(invoke(*SWEEP, "--out", out), "--out")


def test_read_only_folder_is_refused_before_measuring(tmp_path, no_measuring, monkeypatch):
    import tempfile

    def read_only(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    refused(invoke(*SWEEP, "--out", tmp_path / "x.csv"), "Read-only file system")


def test_out_that_cannot_be_opened_is_refused(tmp_path, no_measuring, monkeypatch):
    out = tmp_path / "immutable.csv"
    out.write_text("")
    real_open = open

    def fake_open(path, mode="r", *a, **k):
        if str(path) == str(out) and "a" in mode:
            raise PermissionError(1, "Operation not permitted")
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    refused(invoke(*SWEEP, "--out", out), "Operation not permitted")


@pytest.mark.parametrize("plot", ["/proc/plot.png", "DIR", "plot.xyz"])
def test_compare_plot_is_checked_before_any_model_is_measured(tmp_path, no_measuring, plot):
    plot = str(tmp_path) if plot == "DIR" else plot
    result = invoke(
        "compare", LLAMA_CFG, "--lut", LLAMA_LUT, "--device", "cpu", "--context", "128",
        "--plot", plot,
    )  # fmt: skip
    refused(result, "--plot")


# ---- files that are not UTF-8 text ---------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["binary", "utf-16"])
def test_binary_and_utf16_configs_luts_and_specs_are_refused(tmp_path, encoding):
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        data = bytes(range(256)) * 8 if encoding == "binary" else text.encode("utf-16")
        path.write_bytes(data)
        return path

    yaml_cfg = write("model.yaml", LLAMA_CFG.read_text())
    hf_cfg = write("config.json", (HF / "qwen3-0.6b.json").read_text())
    bad_lut = write("lut.csv", LLAMA_LUT.read_text())
    spec = write("spec.yaml", "ops: [ffn]\n")
    refused(invoke("estimate", yaml_cfg, "--memory-only"), "not UTF-8 text")
    refused(invoke("estimate", hf_cfg, "--memory-only"), "not UTF-8 text")
    refused(invoke("estimate", LLAMA_CFG, "--lut", bad_lut, *EST), "not UTF-8 text")
    refused(invoke("show", bad_lut), "not UTF-8 text")
    refused(invoke(*SWEEP[:1], "--spec", spec, "--device", "cpu", "--out", tmp_path / "o.csv"))


# ---- numbers -------------------------------------------------------------------------------------
def test_integers_of_thousands_of_digits_are_refused(tmp_path):
    huge = "1" + "0" * 5000
    cfg = json.loads((HF / "qwen3-0.6b.json").read_text())
    text = json.dumps(cfg).replace(f'"hidden_size": {cfg["hidden_size"]}', f'"hidden_size": {huge}')
    (tmp_path / "config.json").write_text(text)
    refused(invoke("estimate", tmp_path / "config.json", "--memory-only"), "digits")
    (tmp_path / "m.yaml").write_text(LLAMA_CFG.read_text().replace("width: 2048", f"width: {huge}"))
    refused(invoke("estimate", tmp_path / "m.yaml", "--memory-only"), "digits")
    refused(invoke(*SWEEP, "--batch", huge, "--out", tmp_path / "x.csv"), "--batch")
    refused(invoke(*SWEEP, "--batch", str(2**40), "--out", tmp_path / "x.csv"), "limit")
    refused(invoke(*SWEEP[:1], "--op-spec", f"ffn(width={huge})", "--device", "cpu",
                   "--out", tmp_path / "x.csv"))  # fmt: skip


def test_overflowing_floats_are_refused(tmp_path):
    cfg = json.loads((HF / "nemotron-flash-1b.json").read_text())
    text = json.dumps(dict(cfg, ffn_expand_ratio=1.5)).replace("1.5", "1e400")
    (tmp_path / "config.json").write_text(text)
    refused(invoke("estimate", tmp_path / "config.json", "--memory-only"), "ffn_expand_ratio")
    (tmp_path / "m.yaml").write_text(LLAMA_CFG.read_text().replace("width: 2048", "width: 1e400"))
    refused(invoke("estimate", tmp_path / "m.yaml", "--memory-only"), "width")


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-1"])
def test_device_memory_must_be_finite_and_positive(value):
    result = invoke("estimate", LLAMA_CFG, "--memory-only", "--device-memory", value)
    refused(result, "--device-memory")


@pytest.mark.parametrize("command", ["sweep", "decode"])
def test_huge_thread_counts_are_refused(tmp_path, command):
    if command == "sweep":
        args = [*SWEEP, "--threads", str(10**12), "--out", tmp_path / "x.csv"]
    else:
        args = ["decode", LLAMA_CFG, "--device", "cpu", "--threads", str(10**12)]
    refused(invoke(*args), "--threads")


def test_num_hidden_layers_of_a_billion_is_refused_at_once(tmp_path):
    cfg = json.loads((HF / "qwen3-0.6b.json").read_text())
    for value in (10**9, 1e9):
        (tmp_path / "config.json").write_text(json.dumps(dict(cfg, num_hidden_layers=value)))
        refused(invoke("estimate", tmp_path / "config.json", "--memory-only"), "limit")


# ---- structure -----------------------------------------------------------------------------------
def test_deeply_nested_json_and_yaml_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(invoke("estimate", tmp_path / "config.json", "--memory-only"), "nested")
    (tmp_path / "m.yaml").write_text("[" * 20_000 + "]" * 20_000)
    refused(invoke("estimate", tmp_path / "m.yaml", "--memory-only"), "nested")


def _alias_bomb() -> str:
    levels = ["&a [x,x,x,x,x,x,x,x,x]"] + [
        f"&{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefg", "bcdefgh", strict=True)
    ]
    return "[" + ", ".join(levels) + "]"  # 9**8 = 43 million values once expanded


def test_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path):
    (tmp_path / "m.yaml").write_text(f"width: {_alias_bomb()}\nvocab_size: 100\npattern: ffn\n")
    refused(invoke("estimate", tmp_path / "m.yaml", "--memory-only"), "aliases")
    (tmp_path / "s.yaml").write_text(f"ops: [ffn]\nwidths: {_alias_bomb()}\n")
    out = tmp_path / "x.csv"
    refused(invoke("sweep", "--spec", tmp_path / "s.yaml", "--device", "cpu", "--out", out))


def test_error_messages_quote_values_cut_short(tmp_path):
    (tmp_path / "m.yaml").write_text("width: [" + ", ".join(["1"] * 5000) + "]\n")
    text = refused(invoke("estimate", tmp_path / "m.yaml", "--memory-only"), "width")
    assert len(text) < 400


def test_sidecar_that_is_not_an_object_is_refused(tmp_path):
    path = lut_copy(tmp_path)
    path.with_suffix(".json").write_text("[1, 2, 3]\n")
    refused(invoke("show", path), "JSON object")
    refused(invoke("estimate", LLAMA_CFG, "--lut", path, *EST), "JSON object")


# ---- LUT rows validated on load ------------------------------------------------------------------
BAD_ROWS = [
    ("latency_us_median", "-5", "finite and positive"),
    ("latency_us_median", "0", "finite and positive"),
    ("latency_us_median", "nan", "finite and positive"),
    ("latency_us_median", "inf", "finite and positive"),
    ("latency_us_median", "1e30", "ceiling"),
    ("latency_us_p10", "1e7", "p10"),
    ("width", "-2048", "width"),
    ("batch", "0", "batch"),
    ("spec", "attention(width=2048,heads=16", "does not parse"),
    ("spec", "attention(width=4096,heads=16,kv_heads=4,head_dim=128,qk_norm=false)", "spec says"),
    ("dtype", "float8", "dtype"),
]


@pytest.mark.parametrize(("column", "value", "message"), BAD_ROWS)
def test_bad_lut_rows_are_refused_by_estimate_and_marked_by_show(tmp_path, column, value, message):
    def edit(lines):
        out = list(lines)
        idx = next(i for i, line in enumerate(lines) if line.startswith("attention,"))
        out[idx] = set_field(lines[idx], lines[0], column, value)
        return out

    path = lut_copy(tmp_path, edit)
    refused(invoke("estimate", LLAMA_CFG, "--lut", path, *EST), "failed validation", message)
    shown = invoke("show", path, "--json")
    assert shown.exit_code == 0
    doc = json.loads(shown.output)
    assert len(doc["problems"]) == 1 and message in next(iter(doc["problems"].values()))
    assert "INVALID" in invoke("show", path).output


def test_conflicting_duplicate_keys_name_both_lines(tmp_path):
    def edit(lines):
        idx = next(i for i, line in enumerate(lines) if line.startswith("attention,"))
        return [*lines, set_field(lines[idx], lines[0], "latency_us_median", "1.5")]

    path = lut_copy(tmp_path, edit)
    first = next(
        i for i, x in enumerate(path.read_text().splitlines()) if x.startswith("attention")
    )
    last = len(path.read_text().splitlines())
    refused(invoke("estimate", LLAMA_CFG, "--lut", path, *EST), f"line {first + 1}", f"line {last}")
    doc = json.loads(invoke("show", path, "--json").output)
    assert set(doc["problems"]) == {str(first + 1), str(last)}


def test_identical_duplicates_and_remeasured_errors_are_not_conflicts(tmp_path):
    def edit(lines):
        idx = next(i for i, line in enumerate(lines) if line.startswith("attention,"))
        error = set_field(lines[idx], lines[0], "status", "error")
        return [*lines, lines[idx], error]

    path = lut_copy(tmp_path, edit)
    assert invoke("estimate", LLAMA_CFG, "--lut", path, *EST, "--json").exit_code == 0


def test_sidecar_naming_another_device_is_refused_unless_forced(tmp_path):
    path = lut_copy(tmp_path)
    prov = json.loads(path.with_suffix(".json").read_text())
    prov["device_name"] = "NVIDIA H100 80GB HBM3"
    path.with_suffix(".json").write_text(json.dumps(prov))
    refused(invoke("estimate", LLAMA_CFG, "--lut", path, *EST), "sidecar", "H100")
    forced = invoke("estimate", LLAMA_CFG, "--lut", path, *EST, "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert any("sidecar" in n for n in json.loads(forced.output)["notes"])


# ---- one validation for flags and spec files -----------------------------------------------------
@pytest.mark.parametrize(
    ("body", "flag"),
    [
        ("ops: [ffn]\nwidths: [64]\nbatch: [0]\n", ["--batch", "0"]),
        ("ops: [ffn]\nwidths: [0]\n", ["--widths", "0"]),
        ("ops: [attention]\nwidths: [128]\ncontext: [-5]\n", ["--context", "-5"]),
        ("ops: [ffn]\nwidths: [64]\nbatch: [1099511627776]\n", ["--batch", "1099511627776"]),
        ("ops: [ffn]\nwidths: [99999999999]\n", ["--widths", "99999999999"]),
    ],
)
def test_spec_file_values_pass_the_flag_checks(tmp_path, no_measuring, body, flag):
    """The file's value is refused with the very message the flag gets."""
    (tmp_path / "s.yaml").write_text(body)
    out = tmp_path / "x.csv"
    by_file = refused(
        invoke("sweep", "--spec", tmp_path / "s.yaml", "--device", "cpu", "--out", out)
    )
    by_flag = refused(invoke(*SWEEP[:3], *SWEEP[5:], *flag, "--out", out))
    assert by_flag.removeprefix("latprof: error: ") in by_file
    assert not out.exists() or not lut.read_rows(out)


@pytest.mark.parametrize(
    "key",
    [
        "ffn(width=256",
        "ffn(width=256))",
        "ffn(width=256,)",
        "ffn (width=256)",
        "ffn(width=256,width=512)",
        "ffn(width=256)x)",
        "ffn(ffn_dim=512)",
        "ffn(width=)",
    ],
)
def test_op_spec_syntax_is_strict(tmp_path, no_measuring, key):
    args = ["sweep", "--op-spec", key, "--device", "cpu", "--out", tmp_path / "x.csv"]
    refused(invoke(*args))


@pytest.mark.parametrize("value", ["0", "-1", "2", "100000000"])
@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_samples_are_validated_alike_everywhere(tmp_path, no_measuring, command, value):
    if command == "compare":
        args = ["compare", LLAMA_CFG, "--lut", LLAMA_LUT, "--device", "cpu", "--samples", value]
    else:
        args = [*SWEEP[:-2], "--samples", value, "--out", tmp_path / "x.csv"]
    refused(invoke(*args), "--samples must be between 3")


# ---- out of memory -------------------------------------------------------------------------------
def test_a_point_bigger_than_memory_is_oom_without_allocating(tmp_path, monkeypatch):
    def no_build(*a, **k):
        raise AssertionError("tried to allocate a point that cannot fit")

    monkeypatch.setattr(measure, "build_workload", no_build)
    out = tmp_path / "big.csv"
    key = "lm_head(width=65536,vocab_size=400000)"  # 105 GB of float32 weights
    args = ["sweep", "--op-spec", key, "--device", "cpu", "--samples", "3", "--out", out, "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    rows = lut.read_rows(out)
    assert [r["status"] for r in rows] == ["oom"] and "not attempted" in rows[0]["error"]
    again = json.loads(invoke(*args).output)  # an oom point counts as measured
    assert again["skipped_existing"] == 1 and again["measured"] == 0


def test_cpu_allocator_failure_is_oom_and_retry_oom_measures_again(tmp_path, monkeypatch):
    real = measure.build_workload
    fail = {"on": True}

    def fake(target, copies):
        if fail["on"]:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                "memory: you tried to allocate 107374182400 bytes. Error code 12 ([bold]x)"
            )
        return real(target, copies)

    monkeypatch.setattr(measure, "build_workload", fake)
    out = tmp_path / "x.csv"
    args = [*SWEEP, "--threads", "1", "--out", out, "--json"]
    first = json.loads(invoke(*args).output)
    assert first["oom"] == 1 and first["errors"] == 0
    assert json.loads(invoke(*args).output)["measured"] == 0  # not retried
    fail["on"] = False
    retried = json.loads(invoke(*args, "--retry-oom").output)
    assert retried["measured"] == 1 and retried["oom"] == 0
    assert [r["status"] for r in lut.read_rows(out)] == ["oom", "ok"]
    assert measure.is_oom(MemoryError()) and measure.is_oom(torch.cuda.OutOfMemoryError("x"))


def test_rich_markup_in_messages_is_printed_literally(capsys):
    from latprof.report import sweep_summary_table

    summary = sweep.SweepSummary("[bold]lut[/bold].csv", "cpu", errors=1)
    summary.error_messages.append("ffn(width=64): RuntimeError: [red]boom[/red] [bold]x")
    sweep_summary_table(summary)
    captured = capsys.readouterr()
    assert "[red]boom[/red] [bold]x" in " ".join(captured.err.split())
    assert "[bold]lut[/bold].csv" in captured.out


# ---- the last resort -----------------------------------------------------------------------------
def test_unexpected_exception_is_exit_1_with_a_debug_hint(monkeypatch):
    import latprof.estimate

    def bug(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(latprof.estimate, "run_estimate", bug)
    result = invoke("estimate", LLAMA_CFG, "--memory-only")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--debug" in result.output and "ZeroDivisionError" in result.output
    monkeypatch.setenv("LATPROF_DEBUG", "1")
    result = invoke("estimate", LLAMA_CFG, "--memory-only")
    assert isinstance(result.exception, ZeroDivisionError)


# ---- torn rows -----------------------------------------------------------------------------------
def test_a_row_torn_at_every_byte_is_skipped_then_cut_off(tmp_path, capsys):
    lines = LLAMA_LUT.read_text().splitlines(keepends=True)
    header = next(csv.reader([lines[0]]))
    row = lines[2]  # an attention row: its spec field is quoted and holds commas
    assert row.startswith("attention,") and '"' in row
    good = [lines[0], lines[1], lines[3], lines[4]]
    extra = lut._parse(dict(zip(header, next(csv.reader([lines[5]])), strict=True)))
    for cut in range(1, len(row.encode())):  # every byte offset, up to all but the newline
        path = tmp_path / f"t{cut}.csv"
        path.write_bytes("".join(good).encode() + row.encode()[:cut])
        rows = lut.read_rows(path)  # the torn row is skipped, never an error, never joined
        assert len(rows) == 3
        lut.append_rows(path, [extra])
        healed = lut.read_rows(path)
        assert len(healed) == 4 and len(path.read_text().splitlines()) == 5
        assert lut.key_of_row(healed[-1]) == lut.key_of_row(extra)
        assert all(lut.key_of_row(r) != lut.key_of_row(lut.read_rows(LLAMA_LUT)[1]) for r in healed)
        assert lut.LUT.load(path).problems == {}
    assert "torn" in capsys.readouterr().err


def test_a_torn_row_mid_file_is_never_joined_with_the_next(tmp_path):
    lines = LLAMA_LUT.read_text().splitlines(keepends=True)
    row = next(line for line in lines if line.startswith("attention,"))
    torn = row[: row.index('"') + 10] + "\n"  # an open quote (an old heal added the newline)
    path = tmp_path / "t.csv"
    path.write_text("".join(lines[:3]) + torn + "".join(lines[3:]))
    assert len(lut.read_rows(path)) == len(lines) - 1
