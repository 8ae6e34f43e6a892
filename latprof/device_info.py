"""What latprof needs to know about the device it measures: name, last-level cache, memory
bandwidth for the roofline, clocks and temperature (NVML, where available).

Everything is queried inside functions (no import-time device probing)."""

from __future__ import annotations

import os
import platform
import re
import time
from functools import cache
from pathlib import Path

import torch

# Peak DRAM bandwidth from vendor data sheets, GB/s, by marketing name fragment; a fragment matches
# as whole words of the device name (`gpu_peak_bandwidth_gbps`): "L4" is not an L40S, "H200" not a
# GH200.  The roofline uses the data-sheet peak where known, a measured copy bandwidth otherwise.
GPU_PEAK_BANDWIDTH_GBPS = {
    "H200": 4800.0,
    "H100 80GB HBM3": 3350.0,  # SXM
    "H100 NVL": 3900.0,
    "H100 PCIe": 2000.0,
    "A100-SXM4-80GB": 2039.0,
    "A100 80GB PCIe": 1935.0,
    "A100-SXM4-40GB": 1555.0,
    "A100-PCIE-40GB": 1555.0,
    "L40S": 864.0,
    "L4": 300.0,
    "RTX 4090": 1008.0,
    "A10G": 600.0,
}


@cache
def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(torch.cuda.current_device())
    return cpu_model_name()


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_last_level_cache_bytes() -> int:
    """Largest cache size listed in sysfs for cpu0 (L3 on most x86 parts); 32 MiB if unknown."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            best = max(best, int(digits) * scale)
    return best or 32 * 1024**2


def last_level_cache_bytes(device: str) -> int:
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return int(getattr(props, "L2_cache_size", 50 * 1024**2))
    return cpu_last_level_cache_bytes()


def device_memory_bytes(device: str) -> int | None:
    """How many bytes the device has, so that a point which cannot fit is recorded as oom
    without a long (on a CPU, possibly swapping) allocation attempt.  CUDA: the current
    device's total memory; CPU: MemTotal from /proc/meminfo (None where that file is absent)."""
    if device == "cuda":
        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def device_properties(device: str) -> dict:
    if device == "cuda":
        p = torch.cuda.get_device_properties(torch.cuda.current_device())
        return {
            "name": p.name,
            "total_memory_bytes": int(p.total_memory),
            "multiprocessors": int(p.multi_processor_count),
            "compute_capability": f"{p.major}.{p.minor}",
            "l2_cache_bytes": int(getattr(p, "L2_cache_size", 0)),
            "driver": _nvidia_driver_version(),
            "cuda": torch.version.cuda,
        }
    return {
        "name": cpu_model_name(),
        "logical_cpus": os.cpu_count(),
        "last_level_cache_bytes": cpu_last_level_cache_bytes(),
        "machine": platform.machine(),
    }


def _nvidia_driver_version() -> str | None:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # NVML is optional: a missing driver library just leaves this empty
        return None


def gpu_peak_bandwidth_gbps(name: str) -> tuple[str, float] | None:
    """(fragment, GB/s) of the data-sheet entry whose fragment appears in `name` as whole words
    (longest fragment first); None for a GPU not in the table."""
    for fragment in sorted(GPU_PEAK_BANDWIDTH_GBPS, key=len, reverse=True):
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(fragment)}(?![A-Za-z0-9])", name):
            return fragment, GPU_PEAK_BANDWIDTH_GBPS[fragment]
    return None


def memory_bandwidth_gbps(device: str) -> tuple[float, str]:
    """(bandwidth, source) for the roofline: the data-sheet peak for known GPUs, else a measured
    device-to-device copy."""
    if device == "cuda":
        found = gpu_peak_bandwidth_gbps(device_name(device))
        if found:
            return found[1], f"data sheet ({found[0]})"
    return measure_copy_bandwidth_gbps(device), "measured copy (read + write)"


@cache
def measure_copy_bandwidth_gbps(
    device: str, nbytes: int = 512 * 1024**2, repeats: int = 10
) -> float:
    """Best-of-`repeats` bandwidth of copying `nbytes` (counting read + write), GB/s."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


def gpu_clocks() -> tuple[float | None, float | None]:
    """(SM clock MHz, temperature C) of the current CUDA device from NVML; (None, None) where
    NVML is not available.  The NVML device is found by UUID / PCI bus id (`latprof.gpu_clocks`),
    not by torch's index, which CUDA_VISIBLE_DEVICES renumbers."""
    from latprof import gpu_clocks as clocks

    telemetry = clocks.telemetry_for()
    if isinstance(telemetry, str):
        return None, None
    sample = telemetry.sample()
    return sample.sm_clock_mhz, sample.temp_c
