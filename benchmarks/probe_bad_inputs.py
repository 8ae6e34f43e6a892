"""Probe the CLI with bad and hostile inputs (issue 16) and count the outcomes.

Each case runs `latprof ...` in a fresh process with a time limit and is classified:

- handled: the outcome the case expects (usually exit 2 with a one-paragraph message);
- traceback: a Python traceback on stderr (or exit 1 from the last-resort handler);
- hang: the process ran past the time limit;
- silent: exit 0 where the input should have been refused or flagged.

Usage: .venv/bin/python benchmarks/probe_bad_inputs.py [--out benchmarks/results/x.json] [-k NAME]

A case that expects to hang gets 30 s; the others 180 s (a loaded machine is slow to start
torch), except `sweep --samples 100000000`, 90 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LATPROF = [sys.executable, "-m", "latprof.cli"]
LLAMA_LUT = ROOT / "luts" / "cpu-intel-xeon-2core-llama.csv"
LLAMA_CFG = ROOT / "configs" / "llama-12-blocks.yaml"
QWEN = ROOT.parent / "shared" / "fixtures" / "hf-configs" / "qwen3-0.6b.json"
FAST = ["--device", "cpu", "--samples", "3", "--threads", "1"]
EST = ["--prompt", "128", "--generate", "64"]


def run(args: list[str], timeout: float, cwd: Path) -> tuple[int | None, str, str]:
    try:
        res = subprocess.run(
            [*LATPROF, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
        )
        return res.returncode, res.stdout, res.stderr
    except subprocess.TimeoutExpired:
        return None, "", ""


def _lut_copy(tmp: Path, name: str, edit: Callable[[list[str]], list[str]] | None = None) -> Path:
    dst = tmp / f"{name}.csv"
    lines = LLAMA_LUT.read_text().splitlines(keepends=True)
    dst.write_text("".join(edit(lines) if edit else lines))
    shutil.copy(LLAMA_LUT.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def _set_field(line: str, column: str, value: str, header: str) -> str:
    import csv
    import io

    cols = next(csv.reader([header]))
    vals = next(csv.reader([line]))
    vals[cols.index(column)] = value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(vals)
    return buf.getvalue()


def _bad_row(column: str, value: str, row: int = 2) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        out = list(lines)
        out[row] = _set_field(out[row], column, value, lines[0])
        return out

    return edit


def cases(tmp: Path) -> list[dict]:
    """(name, kind, args, expect, timeout) for every probe."""
    out: list[dict] = []

    def add(name, kind, args, expect="refuse", timeout=180.0, check=None):
        out.append(
            dict(name=name, kind=kind, args=args, expect=expect, timeout=timeout, check=check)
        )

    sweep = ["sweep", "--ops", "ffn", "--widths", "64", *FAST]
    (tmp / "adir").mkdir()
    add("out under /proc", "traceback", [*sweep, "--out", "/proc/latprof.csv"])
    add("out is a directory", "traceback", [*sweep, "--out", str(tmp / "adir")])
    add("out not writable (/sys)", "traceback", [*sweep, "--out", "/sys/latprof.csv"])
    add("out parent missing", "traceback", [*sweep, "--out", "/proc/nonexistent/x/y.csv"])
    binary = tmp / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    utf16 = tmp / "utf16.yaml"
    utf16.write_bytes(LLAMA_CFG.read_text().encode("utf-16"))
    add("binary YAML config", "traceback", ["estimate", str(binary), "--lut", str(LLAMA_LUT)])
    add("UTF-16 YAML config", "traceback", ["estimate", str(utf16), "--lut", str(LLAMA_LUT)])
    binjson = tmp / "config.json"
    binjson.write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    add("binary HF JSON", "traceback", ["estimate", str(binjson), "--memory-only"])
    binlut = tmp / "binary.csv"
    binlut.write_bytes(bytes(range(256)) * 4)
    add("binary LUT", "traceback", ["estimate", str(LLAMA_CFG), "--lut", str(binlut), *EST])
    u16lut = tmp / "utf16lut.csv"
    u16lut.write_bytes(LLAMA_LUT.read_text().encode("utf-16"))
    add("UTF-16 LUT", "traceback", ["show", str(u16lut)])
    huge = tmp / "huge-int.json"
    q = json.loads(QWEN.read_text())
    huge.write_text(json.dumps(q).replace('"hidden_size": 1024', '"hidden_size": 1' + "0" * 5000))
    add("5000-digit integer in JSON", "traceback", ["estimate", str(huge), "--memory-only"])
    hugey = tmp / "huge-int.yaml"
    hugey.write_text(LLAMA_CFG.read_text().replace("width: 2048", "width: 1" + "0" * 5000))
    add("5000-digit integer in YAML", "traceback", ["estimate", str(hugey), "--memory-only"])
    ovf = tmp / "overflow.json"
    ovf.write_text(json.dumps(q).replace('"rope_theta": 1000000', '"rope_theta": 1e999'))
    q2 = dict(q, hidden_size=1e400)
    ovf2 = tmp / "overflow2.json"
    ovf2.write_text(json.dumps(q2).replace("Infinity", "1e400"))
    add("overflowing float hidden_size", "traceback", ["estimate", str(ovf2), "--memory-only"])
    ovfy = tmp / "overflow.yaml"
    ovfy.write_text(LLAMA_CFG.read_text().replace("width: 2048", "width: 1.0e+400"))
    add("overflowing float in YAML", "traceback", ["estimate", str(ovfy), "--memory-only"])
    deep = tmp / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    add("deeply nested JSON", "traceback", ["estimate", str(deep), "--memory-only"])
    deepy = tmp / "deep.yaml"
    deepy.write_text("[" * 20000 + "]" * 20000)
    add("deeply nested YAML", "traceback", ["estimate", str(deepy), "--memory-only"])
    side_list = _lut_copy(tmp, "side-list")
    side_list.with_suffix(".json").write_text("[1, 2, 3]\n")
    add("sidecar JSON not an object", "traceback", ["show", str(side_list)])
    add(
        "sidecar not an object (estimate)",
        "traceback",
        ["estimate", str(LLAMA_CFG), "--lut", str(side_list), *EST],
    )
    for value in ("nan", "inf", "-1", "1e400"):
        add(
            f"--device-memory {value}",
            "traceback",
            ["estimate", str(LLAMA_CFG), "--memory-only", "--device-memory", value],
        )
    add(
        "huge --threads (sweep)",
        "traceback",
        [*sweep[:-2], "--threads", str(10**12), "--out", str(tmp / "t.csv")],
    )
    add(
        "huge --threads (decode)",
        "traceback",
        ["decode", str(LLAMA_CFG), "--device", "cpu", "--threads", str(10**12)],
    )
    add(
        "compare --plot unwritable",
        "traceback",
        [
            "compare",
            str(LLAMA_CFG),
            "--lut",
            str(LLAMA_LUT),
            "--device",
            "cpu",
            "--context",
            "128",
            "--samples",
            "3",
            "--plot",
            "/proc/plot.png",
        ],
        timeout=120,
    )
    # ---- silently accepted --------------------------------------------------------------
    header = LLAMA_LUT.read_text().splitlines()[0]
    med = "latency_us_median"
    for label, col, val in [
        ("negative latency", med, "-5"),
        ("zero latency", med, "0"),
        ("NaN latency", med, "nan"),
        ("infinite latency", med, "inf"),
        ("absurd latency", med, "1e30"),
        ("p10 above median", "latency_us_p10", "1e9"),
        ("negative width", "width", "-2048"),
        ("zero batch", "batch", "0"),
        ("unbalanced spec text", "spec", "attention(width=2048,heads=16"),
        ("spec not matching its columns", "width", "4096"),
    ]:
        # row index: find an attention row at context 128 (row 1 of the file is the first)
        path = _lut_copy(tmp, label.replace(" ", "-"), _bad_all_attention(col, val, header))
        add(
            f"LUT row: {label}",
            "silent",
            ["estimate", str(LLAMA_CFG), "--lut", str(path), *EST, "--json"],
        )
    dup = _lut_copy(tmp, "dup", _dup_conflict(header))
    add(
        "conflicting duplicate key",
        "silent",
        ["estimate", str(LLAMA_CFG), "--lut", str(dup), *EST, "--json"],
    )
    other = _lut_copy(tmp, "other-device")
    prov = json.loads(other.with_suffix(".json").read_text())
    prov["device_name"] = "NVIDIA H100 80GB HBM3"
    other.with_suffix(".json").write_text(json.dumps(prov))
    add(
        "sidecar names another device",
        "silent",
        ["estimate", str(LLAMA_CFG), "--lut", str(other), *EST, "--json"],
    )
    b0 = tmp / "b0.yaml"
    b0.write_text("ops: [ffn]\nwidths: [64]\nbatch: [0]\n")
    add(
        "batch: [0] in a spec file",
        "silent",
        ["sweep", "--spec", str(b0), *FAST, "--out", str(tmp / "b0.csv")],
    )
    w0 = tmp / "w0.yaml"
    w0.write_text("ops: {ffn: {widths: [0]}}\n")
    add(
        "ops.ffn.widths: [0] in a spec file",
        "silent",
        ["sweep", "--spec", str(w0), *FAST, "--out", str(tmp / "w0.csv")],
    )
    c0 = tmp / "c0.yaml"
    c0.write_text("ops: [attention]\nwidths: [128]\ncontext: [-5]\n")
    add(
        "context: [-5] in a spec file",
        "silent",
        ["sweep", "--spec", str(c0), *FAST, "--out", str(tmp / "c0.csv")],
    )
    for key in (
        "ffn(width=256",
        "ffn(width=256))",
        "ffn(width=256,)",
        "ffn (width=256)",
        "ffn(width=256,width=512)",
        "ffn(width=256)x)",
    ):
        add(
            f"--op-spec {key!r}",
            "silent",
            ["sweep", "--op-spec", key, *FAST, "--out", str(tmp / "os.csv")],
        )
    for value in ("0", "-1", "2", "100000000"):
        add(
            f"compare --samples {value}",
            "silent",
            [
                "compare",
                str(LLAMA_CFG),
                "--lut",
                str(LLAMA_LUT),
                "--device",
                "cpu",
                "--samples",
                value,
            ],
        )
        add(
            f"sweep --samples {value}",
            "silent",
            [
                *sweep[:2],
                "ffn",
                "--widths",
                "64",
                "--device",
                "cpu",
                "--samples",
                value,
                "--out",
                str(tmp / "s.csv"),
            ],
            timeout=90,
        )
    big = tmp / "big.csv"
    add(
        "100 GB CPU request -> oom",
        "silent",
        [
            "sweep",
            "--op-spec",
            "lm_head(width=65536,vocab_size=400000)",
            *FAST,
            "--out",
            str(big),
            "--json",
        ],
        expect="oom",
        timeout=120,
    )
    # ---- hangs ---------------------------------------------------------------------------
    layers = dict(q, num_hidden_layers=10**9)
    lj = tmp / "layers.json"
    lj.write_text(json.dumps(layers))
    add("num_hidden_layers 1e9", "hang", ["estimate", str(lj), "--memory-only"], timeout=30)
    levels = ["&a [x,x,x,x,x,x,x,x,x]"] + [
        f"&{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefg", "bcdefgh", strict=True)
    ]
    bomb_value = "[" + ", ".join(levels) + "]"  # 9**8 = 43 million items once expanded
    bomb = tmp / "bomb.yaml"
    bomb.write_text(f"width: {bomb_value}\nvocab_size: 100\npattern: attention\n")
    add(
        "YAML alias bomb (model config)",
        "hang",
        ["estimate", str(bomb), "--memory-only"],
        timeout=30,
    )
    sbomb = tmp / "sbomb.yaml"
    sbomb.write_text(f"ops: [ffn]\nwidths: {bomb_value}\n")
    add(
        "YAML alias bomb (sweep spec)",
        "hang",
        ["sweep", "--spec", str(sbomb), *FAST, "--out", str(tmp / "sb.csv")],
        timeout=30,
    )
    markup = tmp / "[bold]x[[bold]-model.yaml"
    markup.write_text("width: [red]\n")
    add(
        "rich markup in a message",
        "silent",
        ["estimate", str(markup), "--memory-only"],
        expect="refuse-literal:[bold]x[[bold]",
    )
    return out


def _bad_all_attention(col: str, val: str, header: str) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        return [
            _set_field(line, col, val, header) if line.startswith("attention,") else line
            for line in lines
        ]

    return edit


def _dup_conflict(header: str) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        first = next(line for line in lines if line.startswith("attention,"))
        return [*lines, _set_field(first, "latency_us_median", "1.5", header)]

    return edit


def classify(case: dict, rc: int | None, out: str, err: str) -> str:
    if rc is None:
        return "hang"
    if "Traceback" in err or rc == 1:
        return "traceback"
    expect = case["expect"]
    if expect == "oom":
        try:
            doc = json.loads(out)
        except ValueError:
            return "handled" if rc == 2 else "silent"
        return "handled" if doc.get("oom") and not doc.get("errors") else "silent"
    if expect.startswith("refuse-literal:"):
        return "handled" if rc == 2 and expect.split(":", 1)[1] in err else "silent"
    return "handled" if rc == 2 else "silent"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("-k", default="")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for case in cases(tmp):
            if args.k and args.k not in case["name"]:
                continue
            rc, out, err = run(case["args"], case["timeout"], tmp)
            outcome = classify(case, rc, out, err)
            last = (err.strip().splitlines() or [""])[-1][:160]
            results.append(dict(name=case["name"], outcome=outcome, rc=rc, stderr_tail=last))
            print(f"{outcome:9s} rc={rc!s:4s} {case['name']}: {last}", flush=True)
    counts: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print(json.dumps({"cases": len(results), **counts}))
    if args.out:
        args.out.write_text(json.dumps({"counts": counts, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("LATPROF_PROBE", "1")
    main()
