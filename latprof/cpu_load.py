"""Other load on a CPU while a group was timed, from /proc: recorded per row and flagged.

A CPU timing is only as good as the machine was quiet: another process's work (a second sweep,
a few short CLI calls, a build) or a hypervisor's steal time inflates the samples without
showing in them.  `CpuLoad` reads the machine's busy and steal time (/proc/stat) and this
process's own CPU time (/proc/self/stat, all its threads) at the start and end of a group; the
difference is what *others* used:

- `other_cores`: mean cores busy with other processes during the group (machine busy time minus
  ours, over the wall time);
- `steal_pct`: percent of the machine's CPU time the hypervisor took (steal).

A row is flagged `loaded` when others used more than `LOADED_CORES` cores on average or steal
exceeded `STEAL_PCT`.  Where /proc is absent (not Linux) nothing is recorded.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

#: mean cores used by other processes above which a row is flagged `loaded`
LOADED_CORES = 0.25
#: steal time (percent of all CPU time) above which a row is flagged `loaded`
STEAL_PCT = 2.0


def _ticks_per_s() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


def machine_ticks() -> tuple[int, int, int] | None:
    """(busy, steal, total) clock ticks of all CPUs since boot, or None without /proc/stat.
    busy = user + nice + system + irq + softirq (idle, iowait and steal are not busy)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    values = [int(v) for v in first[1:]] + [0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def proc_stat_fields(pid: int | str = "self") -> list[str] | None:
    """/proc/PID/stat after the command name (whose parentheses may hold spaces): proc(5)'s
    field N is item N - 3; None where the process or /proc is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def own_ticks() -> int | None:
    """CPU clock ticks this process (all threads) has used: utime + stime."""
    fields = proc_stat_fields()
    if fields is None:
        return None
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


@dataclass
class Load:
    """What others did to the CPU during one interval."""

    other_cores: float
    steal_pct: float
    wall_s: float

    @property
    def loaded(self) -> bool:
        return self.other_cores > LOADED_CORES or self.steal_pct > STEAL_PCT


class CpuLoad:
    """`start()` before a group, `stop()` after it -> Load, or None where /proc is absent."""

    def __init__(self) -> None:
        self._start: tuple | None = None

    def start(self) -> None:
        machine, own = machine_ticks(), own_ticks()
        self._start = (machine, own, time.perf_counter()) if machine and own is not None else None

    def stop(self) -> Load | None:
        if self._start is None:
            return None
        machine, own = machine_ticks(), own_ticks()
        if machine is None or own is None:
            return None
        (busy0, steal0, total0), own0, t0 = self._start
        wall = time.perf_counter() - t0
        tick = _ticks_per_s()
        others_s = max(0.0, (machine[0] - busy0) - (own - own0)) / tick
        total = machine[2] - total0
        steal_pct = 100.0 * (machine[1] - steal0) / total if total > 0 else 0.0
        return Load(round(others_s / wall, 3) if wall > 0 else 0.0, round(steal_pct, 2), wall)
