"""Which rows of a LUT an estimate uses: one dtype / device / mode, one backend per operator.

A LUT measured with other settings than asked for is refused unless `force`, and what was forced
becomes a note.  Where the LUT has several backends for an operator the user must name one:
latprof never picks one silently."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latprof.errors import InputError
from latprof.lut import LUT, SETTING_COLUMNS
from latprof.registry import operator
from latprof.settings import BackendRequest
from latprof.specs import canonical_dtype


@dataclass(frozen=True)
class LutSettings:
    """The dtype / device / mode of the LUT rows an estimate uses (values as the rows spell
    them), and what `--force` overrode."""

    dtype: str
    device: str
    mode: str
    device_name: str | None
    notes: tuple[str, ...] = ()

    @property
    def dtype_name(self) -> str:
        return canonical_dtype(self.dtype)


def usable_row(row: dict[str, Any]) -> bool:
    """A successful measurement with every setting column filled in."""
    if row.get("status") not in (None, "ok") or row.get("latency_us_median") is None:
        return False
    return row["op"] is not None and all(row[k] is not None for k in SETTING_COLUMNS)


def _canonical_or_raw(name: str) -> str:
    try:
        return canonical_dtype(name)
    except InputError:
        return name


def resolve_settings(
    lut: LUT, dtype: str | None, device: str | None, mode: str | None, force: bool
) -> LutSettings:
    """Check the LUT against what the user asked; a mismatch is refused unless `force`."""
    rows = [r for r in lut.index.values() if usable_row(r)]
    if not rows:
        raise InputError(f"{lut.path} holds no successful measurements ({len(lut.rows)} rows)")
    notes: list[str] = []
    refuse = (
        "A LUT measured with another {what} than asked for is refused: measure with "
        "`latprof sweep {flag} {asked} ...`, or pass --force to use its numbers anyway."
    )

    def pick(what: str, flag: str, asked: str | None, present: dict[str, str]) -> str:
        """present: comparable value -> value as spelled in the rows."""
        if asked is None:
            if len(present) == 1:
                return next(iter(present.values()))
            raise InputError(
                f"{lut.path} holds rows of several {what}s ({', '.join(sorted(present))}); "
                f"choose one with {flag}"
            )
        if asked in present:
            return present[asked]
        message = f"{lut.path} was measured with {what} {', '.join(sorted(present))}, not {asked}."
        if not force:
            raise InputError(message + " " + refuse.format(what=what, flag=flag, asked=asked))
        if len(present) > 1:
            raise InputError(message + f" --force cannot choose among them; give one with {flag}")
        value = next(iter(present.values()))
        notes.append(f"forced: {what} {asked} asked, the LUT's {value} used")
        return value

    dtypes = {_canonical_or_raw(r["dtype"]): r["dtype"] for r in rows}
    chosen_dtype = pick("dtype", "--dtype", canonical_dtype(dtype) if dtype else None, dtypes)
    devices = {r["device"]: r["device"] for r in rows}
    names = {r["device_name"] for r in rows if r.get("device_name")}
    side_name = lut.provenance.get("device_name")
    if side_name and names and names != {side_name}:  # rows and sidecar disagree: one is wrong
        message = (
            f"{lut.path}: its sidecar says the rows were measured on {side_name!r}, but the rows "
            f"name {', '.join(repr(n) for n in sorted(names))}."
        )
        if not force:
            raise InputError(
                message + " A LUT whose provenance does not match its rows is refused: restore "
                "the sidecar `latprof sweep` wrote, or pass --force to use the rows anyway."
            )
        notes.append(f"forced: sidecar device {side_name!r} does not match the rows")
    if side_name:
        names.add(side_name)
    kind = (device or "auto").strip().lower()
    if kind in ("auto", "cpu", "cuda"):
        chosen_device = pick("device", "--device", None if kind == "auto" else kind, devices)
    else:  # a device name, compared exactly (case and surrounding spaces aside)
        if device.strip().casefold() not in {n.strip().casefold() for n in names}:
            measured_on = ", ".join(sorted(names)) or "an unnamed device"
            message = f"{lut.path} was measured on {measured_on}, not on {device!r}."
            if not force:
                raise InputError(
                    message + " A LUT from another device is refused: measure on that device "
                    "(`latprof sweep` there), or pass --force to use these numbers anyway."
                )
            notes.append(f"forced: device {device!r} asked, the LUT's {measured_on} used")
        chosen_device = pick("device", "--device", None, devices)
    modes = {r["mode"]: r["mode"] for r in rows}
    chosen_mode = pick("mode", "--mode", mode, modes)
    name = lut.provenance.get("device_name") or (sorted(names)[0] if names else None)
    return LutSettings(chosen_dtype, chosen_device, chosen_mode, name, tuple(notes))


class BackendChoice:
    """The backend whose rows answer for each operator.

    `backend`: None (each operator's only backend in the LUT), a name for every operator that has
    it, or {op: name} (anything `latprof.settings.BackendRequest.parse` reads).
    `available`: (op, phase) -> backends with rows.
    A name the LUT lacks is refused unless `force` (then noted in `notes`).
    """

    def __init__(
        self,
        backend: str | dict[str, str] | BackendRequest | None,
        available: dict[tuple[str, str], set[str]],
        lut_path: Path,
        force: bool,
    ) -> None:
        self._default, self._per_op = BackendRequest.parse(backend).single()
        self._available, self._lut_path, self._force = available, lut_path, force
        self.notes: list[str] = []
        self._chosen: dict[str, str | None] = {}
        if self._default and not any(self._default in names for names in available.values()):
            self._refuse(None, self._default, [])

    def _refuse(self, op: str | None, asked: str, available: list[str]) -> str:
        what = f"{op} rows" if op else "rows"
        message = (
            f"--backend {asked}: {self._lut_path} has no {what} measured with {asked}"
            + (f" (it has: {', '.join(available)})" if available else "")
            + "."
        )
        if not self._force or len(available) > 1:
            raise InputError(
                message + " A LUT measured with another backend than asked for is refused: "
                "measure that backend, or pass --force to use the LUT's."
            )
        if available:
            self.notes.append(f"forced: {op} backend {asked} asked, the LUT's {available[0]} used")
            return available[0]
        self.notes.append(f"forced: backend {asked} asked; the LUT has none")
        return asked

    def for_op(self, op: str) -> str | None:
        """The backend whose rows are used for `op`; None if the LUT has no rows for it."""
        if op in self._chosen:
            return self._chosen[op]
        available = sorted(
            self._available.get((op, "decode")) or self._available.get((op, "prefill"), ())
        )
        if op in self._per_op:
            asked = self._per_op[op]
            chosen = (
                asked if asked in available or not available else self._refuse(op, asked, available)
            )
        elif self._default in available:
            chosen = self._default
        elif not available and self._default in operator(op).backend_names:
            chosen = self._default  # no rows yet: what --measure-missing would measure with
        elif len(available) <= 1:
            chosen = available[0] if available else None
        else:
            raise InputError(
                f"{self._lut_path} has {op} rows for several backends ({', '.join(available)}); "
                f"choose one with --backend {op}=NAME (latprof never picks one silently)"
            )
        self._chosen[op] = chosen
        return chosen
