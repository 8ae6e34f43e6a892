"""Latency look-up tables: long-format CSV, one row per (operator spec x setting), plus a JSON
provenance sidecar beside it (`name.csv` -> `name.json`).

Rows are appended one at a time, under an exclusive lock, each as a single write of a complete
line followed by fsync: a sweep killed at any moment loses at most the row it was measuring, and two
sweeps appending to one LUT never interleave bytes.  A torn last line (power loss mid-write) is
skipped on reading, with a warning.

Nothing here imports torch or pandas: `latprof estimate` loads LUTs in milliseconds.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latprof import inputs
from latprof.errors import InputError

#: columns naming what was measured; together they identify a row (see `row_key`)
from latprof.registry import PARAM_COLUMNS
from latprof.specs import OpSpec

SETTING_COLUMNS = ("phase", "batch", "context", "dtype", "device", "backend", "mode")
#: columns holding what was measured and how
MEASURE_COLUMNS = (
    "status",  # ok | oom | error
    "latency_us_median",
    "latency_us_p10",
    "latency_us_p90",
    "latency_cv",  # coefficient of variation of the samples (std / mean)
    "samples",
    "steps_per_sample",
    "copies",  # independent operator copies rotated so weights never sit in cache
    "threads",
    "flags",  # ;-separated: noisy, remeasured, throttled, loaded, concurrent
    "params",
    "bytes_per_step",
    "flops_per_step",
    "bandwidth_gbps",
    "roofline_us",
    "achieved_gbps",
    "pct_of_roofline",
    "sm_clock_mhz_before",
    "sm_clock_mhz_after",
    "temp_c_before",
    "temp_c_after",
    "other_cpu_cores",  # CPU: mean cores other processes used while the group was timed
    "steal_pct",  # CPU: hypervisor steal time during the group, percent
    "device_name",
    "measured_at",
    "error",
)
COLUMNS = ("op", "spec", "width", *PARAM_COLUMNS, *SETTING_COLUMNS, *MEASURE_COLUMNS)
KEY_COLUMNS = ("spec", *SETTING_COLUMNS)
INT_COLUMNS = frozenset(
    {
        "width",
        "batch",
        "context",
        "samples",
        "steps_per_sample",
        "copies",
        "threads",
        "params",
        "bytes_per_step",
        "flops_per_step",
    }
)
FLOAT_COLUMNS = frozenset(
    {
        "latency_us_median",
        "latency_us_p10",
        "latency_us_p90",
        "latency_cv",
        "bandwidth_gbps",
        "roofline_us",
        "achieved_gbps",
        "pct_of_roofline",
        "sm_clock_mhz_before",
        "sm_clock_mhz_after",
        "temp_c_before",
        "temp_c_after",
        "other_cpu_cores",
        "steal_pct",
    }
)

#: `context` value of rows for operators whose decode cost does not depend on the context
ANY_CONTEXT = 0


@dataclass(frozen=True)
class Setting:
    """Where and how a row was measured (everything but the operator spec)."""

    phase: str  # decode | prefill
    batch: int
    context: int  # tokens in the cache (decode) or prompt length (prefill); 0 = any
    dtype: str
    device: str  # cpu | cuda
    backend: str
    mode: str  # graph | eager (cuda); eager on cpu

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SETTING_COLUMNS}


def row_key(spec_key: str, setting: Setting) -> tuple:
    return (spec_key, *(getattr(setting, k) for k in SETTING_COLUMNS))


def key_of_row(row: dict[str, Any]) -> tuple:
    return tuple(row[k] for k in KEY_COLUMNS)


def sidecar_path(lut_path: str | Path) -> Path:
    return Path(lut_path).with_suffix(".json")


def spec_columns(spec: OpSpec) -> dict[str, Any]:
    row: dict[str, Any] = {"op": spec.op, "spec": spec.key, "width": spec.width}
    row.update(spec.column_params())
    return row


def _parse(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if v is None or v == "":
            out[k] = None
        elif k in INT_COLUMNS:
            out[k] = int(v)
        elif k in FLOAT_COLUMNS:
            out[k] = float(v)
        else:
            out[k] = v
    return out


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):  # one row is one line: a reader never has to join lines
        return " ".join(value.splitlines())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@contextmanager
def locked(path: Path, exclusive: bool = True) -> Iterator[None]:
    """Advisory lock on `path.lock` shared by every latprof process touching this LUT."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All complete rows of a LUT CSV.  Raises InputError if the file is not a LUT."""
    return [row for _, row in read_numbered_rows(path)]


def read_numbered_rows(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) for every complete row of a LUT CSV.

    Each physical line is one row (the writer never puts a newline inside a field), so a torn
    row (a writer killed mid-line, its quote left open or its fields short) is never joined with
    the next line: it is skipped with a warning naming it.  A line with more fields than the
    header, or a value of the wrong type, makes the file corrupt (InputError)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"LUT file {path} does not exist; `latprof sweep --out {path}` makes one")
    text = inputs.read_text(path, "LUT", inputs.MAX_LUT_BYTES)
    lines = text.split("\n")
    if not text.strip():
        return []
    header = _split_line(lines[0])
    if header is None:
        raise InputError(f"{path} is not a latprof LUT: its first line is not a CSV header")
    missing = [c for c in ("op", "spec", *SETTING_COLUMNS, "latency_us_median") if c not in header]
    if missing:
        raise InputError(
            f"{path} is not a latprof LUT: its header lacks the column(s) {', '.join(missing)}. "
            "A LUT is the CSV written by `latprof sweep`."
        )
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        values = _split_line(line)
        # a last line without its newline is torn even where its fields happen to add up (cut
        # inside the last field): the writer writes whole lines, and cuts a torn one off
        torn_last = lineno == len(lines)
        if values is None or len(values) < len(header) or torn_last:
            where = "last line" if torn_last else "line"
            print(f"latprof: skipping torn {where} {lineno} of {path}", file=sys.stderr)
            continue
        if len(values) > len(header):
            raise InputError(
                f"{path} line {lineno}: {len(values)} fields where the header has {len(header)}; "
                "the file is corrupt or not a latprof LUT"
            )
        try:
            rows.append((lineno, _parse(dict(zip(header, values, strict=True)))))
        except ValueError as exc:
            raise InputError(f"{path} line {lineno}: {inputs.quote(str(exc), 120)}") from None
    return rows


def _split_line(line: str) -> list[str] | None:
    """One CSV line -> its fields; None if the line is torn (a quote left open)."""
    try:
        return next(csv.reader([line.removesuffix("\r")], strict=True), [])
    except csv.Error:
        return None


def append_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append complete rows (missing columns left empty), writing the header to a new file.

    Takes the LUT lock for the write.  A caller already holding `locked(path)` (to check for
    existing rows and append atomically) calls `append_rows_locked` instead: flock is not
    re-entrant across descriptors, so taking it twice in one process would deadlock."""
    with locked(Path(path)):
        append_rows_locked(path, rows)


def append_rows_locked(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        if os.fstat(fd).st_size > 0:
            _heal_torn_tail(path, fd)
        if os.fstat(fd).st_size == 0:
            os.write(fd, _line(COLUMNS))
        header = _file_header(path)
        if not set(COLUMNS) <= set(header):  # an older LUT: rewrite it once with today's columns
            os.close(fd)
            header = _migrate_header(path, header)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        for row in rows:
            unknown = set(row) - set(COLUMNS)
            if unknown:
                raise ValueError(f"unknown LUT columns {sorted(unknown)}")
            os.write(fd, _line(_format(row.get(c)) for c in header))
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_header(path: Path) -> tuple[str, ...]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return tuple(_split_line(fh.readline().rstrip("\n")) or ())


def _migrate_header(path: Path, header: tuple[str, ...]) -> tuple[str, ...]:
    """Rewrite a LUT whose header lacks some of today's columns (written by an older latprof)
    with today's columns first and any it holds that today's lack after, each row's values
    kept; atomically (a temporary file renamed over it).  The caller holds the lock."""
    new = (*COLUMNS, *(c for c in header if c not in COLUMNS))
    text = path.read_text(encoding="utf-8")
    out = [_line(new)]
    for line in text.split("\n")[1:]:
        values = _split_line(line) if line.strip() else None
        if values is None or len(values) != len(header):
            continue  # torn lines are not carried over (a reader skips them anyway)
        by_name = dict(zip(header, values, strict=True))
        out.append(_line(by_name.get(c, "") for c in new))
    tmp = path.with_name(path.name + f".{os.getpid()}.migrate")
    with open(tmp, "wb") as fh:
        fh.write(b"".join(out))
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return new


def _heal_torn_tail(path: Path, fd: int) -> None:
    """If a killed writer left a last line without its newline, cut that torn line off
    (truncate to just after the last newline): terminating it instead would leave half a row in
    the file for every reader to trip over.  The caller holds the LUT lock."""
    size = os.fstat(fd).st_size
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        end = size
        while end > 0:
            start = max(0, end - 65536)
            fh.seek(start)
            chunk = fh.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
    print(
        f"latprof: {path}: cutting off a torn last line ({size - keep} bytes, a writer killed "
        "mid-row)",
        file=sys.stderr,
    )
    os.ftruncate(fd, keep)  # keep 0: the header itself was torn; the caller writes it again


def _line(values: Iterable[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(list(values))
    return buf.getvalue().encode()


# ---- provenance ----------------------------------------------------------------------------
def read_provenance(path: str | Path) -> dict[str, Any]:
    """The LUT's sidecar: {} if absent; a sidecar that is not a JSON object is refused."""
    side = sidecar_path(path)
    if not side.exists():
        return {}
    text = inputs.read_text(side, "provenance sidecar", inputs.MAX_LUT_BYTES)
    prov = inputs.parse_json(text, str(side))
    if not isinstance(prov, dict):
        raise InputError(
            f"{side}: a provenance sidecar holds a JSON object, not {type(prov).__name__}; "
            "move it away (the rows do not need it) or restore the one `latprof sweep` wrote"
        )
    if not isinstance(prov.get("runs", []), list):
        raise InputError(f"{side}: `runs` must be a list")
    return prov


def record_run(path: str | Path, run: dict[str, Any]) -> dict[str, Any]:
    """Add one sweep run's provenance to the sidecar (under the LUT lock); returns the sidecar.

    Refuses to mix devices: a LUT holds the measurements of one device."""
    path = Path(path)
    with locked(path):
        prov = read_provenance(path)
        if prov.get("device_name") and prov["device_name"] != run["device_name"]:
            raise InputError(
                f"{path} holds measurements of {prov['device_name']!r}, not of this device "
                f"({run['device_name']!r}); write this device's rows to another LUT (--out)"
            )
        if not prov:
            prov = {
                "format": "latprof-lut/1",
                "device_name": run["device_name"],
                "created_at": run["started_at"],
                "runs": [],
            }
        prov["runs"].append(run)
        prov["updated_at"] = run["started_at"]
        for key in (
            "device",
            "device_properties",
            "bandwidth_gbps",
            "bandwidth_source",
            "versions",
        ):
            if key in run:
                prov[key] = run[key]
        tmp = sidecar_path(path).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(prov, indent=2, sort_keys=True) + "\n")
        tmp.replace(sidecar_path(path))
    return prov


@dataclass
class LUT:
    """A loaded LUT: rows, provenance, and an index from `row_key` to the row."""

    path: Path
    rows: list[dict[str, Any]]
    provenance: dict[str, Any] = field(default_factory=dict)
    index: dict[tuple, dict[str, Any]] = field(default_factory=dict)

    #: line -> why that row failed validation (`latprof.lut_validate`); those rows are left
    #: out of `index`, so nothing is ever summed from them
    problems: dict[int, str] = field(default_factory=dict)
    #: the line of each row in `rows` (0 for rows held in memory)
    lines: list[int] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path, strict: bool = True) -> LUT:
        """Read and validate a LUT.  `strict`: any row that fails validation (or a conflicting
        duplicate) is an InputError; otherwise such rows are kept in `rows`, listed in
        `problems`, and left out of `index` (`latprof show` marks them)."""
        from latprof import lut_validate

        path = Path(path)
        numbered = read_numbered_rows(path)
        found = lut_validate.problems(numbered, key_of_row)
        if found and strict:
            raise lut_validate.refusal(path, found)
        index = {key_of_row(r): r for line, r in numbered if line not in found}
        # a later row (a re-measurement of an oom or error point) wins
        rows = [r for _, r in numbered]
        return cls(path, rows, read_provenance(path), index, found, [n for n, _ in numbered])

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[dict[str, Any]],
        provenance: dict[str, Any] | None = None,
        path: str | Path = "<rows in memory>",
    ) -> LUT:
        """A LUT of rows held in memory (as `latprof.sweep.lut_row` makes them), no file."""
        rows = list(rows)
        return cls(Path(path), rows, dict(provenance or {}), {key_of_row(r): r for r in rows})

    def get(self, spec_key: str, setting: Setting) -> dict[str, Any] | None:
        return self.index.get(row_key(spec_key, setting))
