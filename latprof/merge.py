"""Merge LUTs of one device (shards of a sweep, sweeps of different grids) into one LUT.

Inputs are loaded with `lut.LUT.load`, the loader every command uses, so they are checked alike.
Refused unless forced, naming the difference: inputs of different devices (device name), dtypes,
latprof versions or backend versions (torch, triton, fla, mamba-ssm, flash-attn).  A point in
several inputs (the same `lut.row_key`) is kept once: an `ok` row before an `oom` before an
`error` row, then the lower coefficient of variation, then the first input.  Every input's
provenance is kept in the merged sidecar: its runs in `runs` (each marked with its `source`) and
the rest under `merged_from`.

The output is never half-written: the CSV and the sidecar are written to temporary files beside
OUT, fsynced, then renamed over OUT (CSV first, then sidecar), under OUT's LUT lock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latprof import lut
from latprof.errors import InputError

#: versions whose difference makes rows incomparable (sidecar `versions` keys)
VERSION_KEYS = ("latprof", "torch", "triton", "fla", "mamba_ssm", "flash_attn")
_STATUS_RANK = {"ok": 0, "oom": 1, "error": 2}


@dataclass
class MergeSummary:
    out: str
    inputs: list[str]
    rows_in: int = 0
    rows_out: int = 0
    duplicates_dropped: int = 0
    forced: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _identity(table: lut.LUT) -> dict[str, set]:
    """What must agree between inputs: each field's values in this input."""
    prov = table.provenance
    runs = prov.get("runs") or []
    ident: dict[str, set] = {
        "device": {r["device_name"] for r in table.rows if r.get("device_name")},
        "dtype": {r["dtype"] for r in table.rows if r.get("dtype")},
    }
    if prov.get("device_name"):
        ident["device"].add(prov["device_name"])
    version_sets = [r.get("versions") or {} for r in runs] or [prov.get("versions") or {}]
    for key in VERSION_KEYS:
        values = {str(v.get(key)) for v in version_sets if key in v}
        ident[f"{key} version" if key != "latprof" else "latprof version"] = values
    return ident


def differences(tables: Sequence[lut.LUT]) -> list[str]:
    """One sentence per field on which the inputs disagree (empty: they may be merged).  The
    device must be one across all rows; the other fields must be the same in every input that
    has any (an input's own mix, e.g. rows of two dtypes from two sweeps, merges with its like)."""
    idents = [_identity(t) for t in tables]
    out = []
    for name in idents[0]:
        sets = {frozenset(i[name]) for i in idents if i[name]}
        if (len(set().union(*sets)) > 1) if name == "device" else (len(sets) > 1):
            each = "; ".join(
                f"{t.path}: {', '.join(sorted(i[name])) or '(none)'}"
                for t, i in zip(tables, idents, strict=True)
            )
            out.append(f"{name} differs ({each})")
    return out


def _better(new: dict[str, Any], old: dict[str, Any]) -> bool:
    def rank(row: dict[str, Any]) -> tuple:
        cv = row.get("latency_cv")
        return (_STATUS_RANK.get(row.get("status") or "", 3), float("inf") if cv is None else cv)

    return rank(new) < rank(old)


def merged_rows(tables: Sequence[lut.LUT]) -> tuple[list[dict[str, Any]], int]:
    """Rows of all inputs, each key once (first-seen order), and how many were dropped."""
    best: dict[tuple, dict[str, Any]] = {}
    total = 0
    for table in tables:
        for row in table.rows:
            total += 1
            key = lut.key_of_row(row)
            if key not in best or _better(row, best[key]):
                best[key] = row
    return list(best.values()), total - len(best)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def merged_provenance(tables: Sequence[lut.LUT], summary: MergeSummary, at: str) -> dict[str, Any]:
    first = tables[0].provenance
    prov: dict[str, Any] = {
        "format": "latprof-lut/1",
        "device_name": first.get("device_name")
        or next((r["device_name"] for r in tables[0].rows if r.get("device_name")), None),
        "created_at": min((t.provenance.get("created_at") or at for t in tables), default=at),
        "updated_at": at,
        "runs": [],
        "merged_from": [],
    }
    for key in ("device", "device_properties", "bandwidth_gbps", "bandwidth_source", "versions"):
        if key in first:
            prov[key] = first[key]
    for table in tables:
        rest = {k: v for k, v in table.provenance.items() if k != "runs"}
        prov["runs"] += [{**run, "source": str(table.path)} for run in table.provenance["runs"]]
        prov["merged_from"].append(
            {
                "path": str(table.path),
                "rows": len(table.rows),
                "sha256": _sha256(table.path),
                "provenance": rest,
            }
        )
    prov["merges"] = [*first.get("merges", []), {"at": at, **summary.as_dict()}]
    return prov


def _write_atomically(out: Path, rows: list[dict[str, Any]], prov: dict[str, Any]) -> None:
    tmp_csv = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp_json = out.with_name(f".{lut.sidecar_path(out).name}.{os.getpid()}.tmp")
    try:
        tmp_csv.unlink(missing_ok=True)
        lut.append_rows_locked(tmp_csv, rows)  # header (even with no rows) + rows, fsynced
        with open(tmp_json, "w") as fh:
            fh.write(json.dumps(prov, indent=2, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_csv, out)
        os.replace(tmp_json, lut.sidecar_path(out))
    finally:
        tmp_csv.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)


def load_input(path: str | Path) -> lut.LUT:
    path = Path(path)
    if path.suffix != ".csv":
        raise InputError(f"{path}: a LUT is a .csv file (with its .json sidecar beside it)")
    table = lut.LUT.load(path)
    if not lut.sidecar_path(path).exists():
        raise InputError(
            f"{path} has no provenance sidecar {lut.sidecar_path(path).name}: without it the "
            "merge cannot check the device and versions, nor keep its provenance"
        )
    if not isinstance(table.provenance.get("runs"), list):
        raise InputError(f"{lut.sidecar_path(path)}: not a latprof LUT sidecar (no `runs` list)")
    if table.rows:
        unknown = sorted(set(table.rows[0]) - set(lut.COLUMNS))
        if unknown:
            raise InputError(
                f"{path}: column(s) {', '.join(unknown)} are not LUT columns of this latprof "
                f"{_version()}; merge with the latprof that wrote it"
            )
    return table


def _version() -> str:
    import latprof

    return latprof.__version__


def merge_luts(
    inputs: Sequence[str | Path], out: str | Path, *, force: bool = False
) -> MergeSummary:
    """Merge `inputs` (LUT CSVs) into `out`, which may be one of them."""
    out = Path(out)
    if not inputs:
        raise InputError("latprof merge: name at least one input LUT")
    if out.suffix != ".csv":
        raise InputError(f"{out}: the merged LUT must be a .csv file")
    out.parent.mkdir(parents=True, exist_ok=True)
    with lut.locked(out):  # OUT may be an input a sweep is appending to
        tables = [load_input(p) for p in inputs]
        summary = _merge_into(out, tables, force)
    return summary


def _merge_into(out: Path, tables: list[lut.LUT], force: bool) -> MergeSummary:
    summary = MergeSummary(str(out), [str(t.path) for t in tables])
    diffs = differences(tables)
    if diffs and not force:
        raise InputError(
            "refusing to merge LUTs that were not measured alike: "
            + "; ".join(diffs)
            + ". Rows measured on another device, in another dtype or with other versions of "
            "latprof or its backends are not comparable; pass --force to merge anyway (the "
            "difference is recorded in the merged sidecar)"
        )
    summary.forced = diffs
    rows, summary.duplicates_dropped = merged_rows(tables)
    summary.rows_in = sum(len(t.rows) for t in tables)
    summary.rows_out = len(rows)
    at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    _write_atomically(out, rows, merged_provenance(tables, summary, at))
    return summary
