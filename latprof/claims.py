"""Concurrent sweeps on one LUT split the work instead of timing every point twice.

Before measuring a group, a sweep *claims* its points in the LUT's claims record
(`name.claims.json` beside the LUT), under the LUT's lock; a second sweep skips the points
someone else holds and takes the rest.  A claim names its process (pid, the process's start
time, host) and expires: a claim lapses when its expiry passes, or at once when its process on
this host is gone (a killed sweep), so no point stays held forever.  A sweep that ran out of
points it could take waits for the points others hold, then takes those whose claims lapsed.

Separately, every running sweep registers the device it times in a per-machine folder
(`active_sweeps_dir`): two sweeps timing one device at once disturb each other's numbers (on a
CPU they share cores and memory bandwidth), so a sweep warns when another is timing the same
device, and its rows are flagged `concurrent`.  Sweeps on different GPUs do not warn.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latprof.cpu_load import proc_stat_fields

#: a claim lasts this long unless renewed (each group renews the sweep's claims)
CLAIM_TTL_S = 3600.0
#: how often a sweep waiting for others' points looks again
WAIT_POLL_S = 2.0


def claims_path(lut_path: str | Path) -> Path:
    path = Path(lut_path)
    return path.with_name(path.stem + ".claims.json")


def process_start(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot, /proc/PID/stat field 22), which
    tells a live process from a new one that reused a dead one's pid; None if it is gone."""
    fields = proc_stat_fields(pid)
    return None if fields is None else fields[19]


def _alive(claim: dict[str, Any], host: str) -> bool:
    """Whether a claim still holds: not expired, and its process alive where we can tell."""
    if claim.get("expires_at", 0) < time.time():
        return False
    if claim.get("host") != host:
        return True  # another machine (a shared file system): trust the expiry
    return process_start(int(claim.get("pid", -1))) == claim.get("pid_start")


@dataclass
class Claims:
    """This process's view of one LUT's claims record.  Call its methods under `lut.locked`."""

    lut_path: Path
    ttl_s: float = CLAIM_TTL_S
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=platform.node)

    def __post_init__(self) -> None:
        self.lut_path = Path(self.lut_path)
        self.pid_start = process_start(self.pid)

    # ---- the record -----------------------------------------------------------------------
    def _read(self) -> list[dict[str, Any]]:
        path = claims_path(self.lut_path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return []  # absent or unreadable: a claims record is advisory, rebuilt from here
        claims = data.get("claims") if isinstance(data, dict) else None
        return [c for c in claims or [] if isinstance(c, dict) and isinstance(c.get("key"), list)]

    def _write(self, claims: list[dict[str, Any]]) -> None:
        path = claims_path(self.lut_path)
        if not claims:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_name(path.name + f".{self.pid}.tmp")
        tmp.write_text(json.dumps({"format": "latprof-claims/1", "claims": claims}) + "\n")
        tmp.replace(path)

    def _mine(self, claim: dict[str, Any]) -> bool:
        return claim.get("pid") == self.pid and claim.get("host") == self.host

    # ---- operations (under the LUT lock) ----------------------------------------------------
    def held_by_others(self) -> set[tuple]:
        """Keys other live processes hold."""
        return {tuple(c["key"]) for c in self._read() if not self._mine(c) and _alive(c, self.host)}

    def take(self, keys: Iterable[tuple]) -> set[tuple]:
        """Claim those of `keys` nobody else holds; renews this process's own claims and drops
        lapsed ones.  Returns the keys now ours."""
        now = time.time()
        live = [c for c in self._read() if _alive(c, self.host)]
        others = {tuple(c["key"]) for c in live if not self._mine(c)}
        wanted = [k for k in dict.fromkeys(keys) if k not in others]
        kept = [c for c in live if not self._mine(c)]
        mine = {tuple(c["key"]) for c in live if self._mine(c)} | set(wanted)
        expires = now + self.ttl_s
        kept += [self._claim(k, expires) for k in sorted(mine, key=repr)]
        self._write(kept)
        return set(wanted)

    def release(self, keys: Iterable[tuple]) -> None:
        """Drop this process's claims on `keys` (measured and appended, or given up)."""
        drop = set(keys)
        claims = [
            c
            for c in self._read()
            if _alive(c, self.host) and not (self._mine(c) and tuple(c["key"]) in drop)
        ]
        self._write(claims)

    def _claim(self, key: tuple, expires: float) -> dict[str, Any]:
        return {
            "key": list(key),
            "pid": self.pid,
            "pid_start": self.pid_start,
            "host": self.host,
            "expires_at": round(expires, 1),
        }


# ---- sweeps timing one device at once ----------------------------------------------------------
def active_sweeps_dir() -> Path:
    return Path(os.environ.get("LATPROF_ACTIVE_DIR") or Path(tempfile.gettempdir()) / "latprof")


def device_id(device: str) -> str:
    """What two sweeps must share to disturb each other: the CPU, or one GPU (by UUID where
    torch knows it, else by index and CUDA_VISIBLE_DEVICES)."""
    if device != "cuda":
        return "cpu"
    import torch

    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    if uuid:
        return f"cuda:{uuid}"
    return f"cuda:{os.environ.get('CUDA_VISIBLE_DEVICES', '')}:{index}"


@dataclass
class ActiveSweep:
    """This sweep's entry in the per-machine register, while it runs (a context manager)."""

    device: str
    lut_path: str
    warned: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.pid = os.getpid()
        self.entry = active_sweeps_dir() / f"sweep-{self.pid}.json"

    def __enter__(self) -> ActiveSweep:
        try:
            self.entry.parent.mkdir(parents=True, exist_ok=True)
            self.entry.write_text(
                json.dumps(
                    {
                        "pid": self.pid,
                        "pid_start": process_start(self.pid),
                        "device": self.device,
                        "lut": self.lut_path,
                    }
                )
            )
        except OSError:
            pass  # the register is advisory: a read-only temp folder must not stop a sweep
        return self

    def __exit__(self, *exc: object) -> None:
        self.entry.unlink(missing_ok=True)

    def others(self) -> list[dict[str, Any]]:
        """Other live sweeps timing this device."""
        out = []
        try:
            entries = list(active_sweeps_dir().glob("sweep-*.json"))
        except OSError:
            return []
        for path in entries:
            try:
                info = json.loads(path.read_text())
                pid = int(info["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if pid == self.pid or info.get("device") != self.device:
                continue
            if process_start(pid) != info.get("pid_start"):
                path.unlink(missing_ok=True)  # a sweep that died without removing its entry
                continue
            out.append(info)
        return out

    def check(self) -> bool:
        """Whether another sweep is timing this device now; warns once per other sweep."""
        others = self.others()
        for info in others:
            if info["pid"] not in self.warned:
                self.warned.add(info["pid"])
                print(
                    f"latprof: warning: another sweep (pid {info['pid']}, LUT {info.get('lut')}) "
                    f"is timing this device ({self.device}) at the same time; the two disturb "
                    "each other's timings. Rows measured meanwhile are flagged `concurrent`.",
                    file=sys.stderr,
                )
        return bool(others)
