"""How many bytes the device has, to record a point that cannot fit as oom without allocating it.

CPU: MemTotal from /proc/meminfo (None where that file is absent); CUDA: the current device's
total memory.  A target whose copies need more than this would only fail after a long, and on a
CPU possibly swapping, allocation attempt.
"""

from __future__ import annotations

from pathlib import Path


def device_memory_bytes(device: str) -> int | None:
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def too_big_message(needed: int, available: int, device: str) -> str:
    return (
        f"OutOfMemory: needs {needed / 1e9:,.1f} GB for its copies, more than the "
        f"{available / 1e9:,.1f} GB this {device} has; not attempted"
    )
