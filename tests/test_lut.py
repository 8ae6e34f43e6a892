"""LUT file format: append, read back, torn lines, provenance, refusal of foreign files."""

from __future__ import annotations

import pytest

from latprof import lut
from latprof.errors import InputError
from latprof.lut import LUT, Setting
from latprof.registry import build_spec


def _row(width: int, latency: float, context: int = 0) -> dict:
    spec = build_spec("ffn", width)
    row = lut.spec_columns(spec)
    row.update(Setting("decode", 1, context, "float32", "cpu", "torch", "eager").as_dict())
    row.update(
        status="ok", latency_us_median=latency, bytes_per_step=spec.bytes_per_step(1, 0, "float32")
    )
    return row


def test_append_and_read_back_round_trips_types(tmp_path):
    path = tmp_path / "t.csv"
    lut.append_rows(path, [_row(256, 12.5), _row(512, 30.25)])
    lut.append_rows(path, [_row(1024, 99.0)])
    rows = lut.read_rows(path)
    assert [r["width"] for r in rows] == [256, 512, 1024]
    assert rows[1]["latency_us_median"] == pytest.approx(30.25)
    assert isinstance(rows[0]["batch"], int) and rows[0]["activation"] == "swiglu"
    assert path.read_text().count("op,spec,width") == 1  # header written once


def test_index_finds_row_by_spec_and_setting(tmp_path):
    path = tmp_path / "t.csv"
    lut.append_rows(path, [_row(256, 12.5)])
    table = LUT.load(path)
    setting = Setting("decode", 1, 0, "float32", "cpu", "torch", "eager")
    assert table.get(build_spec("ffn", 256).key, setting)["latency_us_median"] == 12.5
    assert table.get(build_spec("ffn", 512).key, setting) is None


def test_torn_last_line_is_skipped_and_healed(tmp_path, capsys):
    path = tmp_path / "t.csv"
    lut.append_rows(path, [_row(256, 12.5)])
    with open(path, "a") as fh:  # a writer killed mid-line
        fh.write("ffn,ffn(width=512")
    assert len(lut.read_rows(path)) == 1
    assert "torn last line" in capsys.readouterr().err
    lut.append_rows(path, [_row(1024, 99.0)])  # the torn line is cut off, not terminated
    assert [r["width"] for r in lut.read_rows(path)] == [256, 1024]
    assert "ffn(width=512" not in path.read_text()


def test_not_a_lut_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError, match="not a latprof LUT"):
        lut.read_rows(path)
    with pytest.raises(InputError, match="does not exist"):
        lut.read_rows(tmp_path / "missing.csv")


def test_provenance_refuses_a_second_device(tmp_path):
    path = tmp_path / "t.csv"
    run = {"started_at": "now", "device_name": "CPU A", "device": "cpu"}
    lut.record_run(path, run)
    lut.record_run(path, run)
    assert len(lut.read_provenance(path)["runs"]) == 2
    with pytest.raises(InputError, match="holds measurements of 'CPU A'"):
        lut.record_run(path, {**run, "device_name": "NVIDIA H100 80GB HBM3"})


def test_unknown_column_is_a_bug_not_silently_dropped(tmp_path):
    with pytest.raises(ValueError, match="unknown LUT columns"):
        lut.append_rows(tmp_path / "t.csv", [{**_row(256, 1.0), "latency_ms": 1.0}])
