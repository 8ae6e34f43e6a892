"""SM clock, temperature and throttle reasons around every GPU measurement (NVML).

Every GPU row records the SM clock (MHz) and temperature (C) before and after it was timed, and
NVML's current clock-event (throttle) reasons before and after.  A row is *throttled* when the SM
clock before or after sat below `CLOCK_FRACTION` of the GPU's maximum SM clock, or when a reason
other than the benign ones (idle, application-clock setting, display clock) was set before or
after.  A throttled row is timed again after a pause of `PAUSE_S` (the GPU cools, boosts again),
up to `MAX_RETRIES` times; the row keeps the last measurement and its flags say what happened:
`throttled` (still, after the retries), `remeasured-after-throttle`, `throttle:<reason>`.

NVML numbers devices by PCI order, torch by CUDA_VISIBLE_DEVICES order: the NVML handle is found
by the device's UUID (`torch.cuda.get_device_properties(i).uuid`), else its PCI bus id, never
by torch's index.  NVML is the `gpu` extra (`nvidia-ml-py`, imported as `pynvml`); where it is
missing on a GPU machine the rows say so (`no-nvml`) instead of leaving the columns silently
empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CLOCK_FRACTION = 0.9
PAUSE_S = 5.0
MAX_RETRIES = 1

#: NVML clocks-event reason bits (nvml.h, nvmlClocksEventReason*)
REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
    0x100: "display_clock",
}
#: reasons that do not slow a running kernel down
BENIGN = 0x1 | 0x2 | 0x100


@dataclass(frozen=True)
class Sample:
    sm_clock_mhz: float | None
    temp_c: float | None
    reasons: int = 0  # bitmask of REASONS


NO_SAMPLE = Sample(None, None, 0)


def reason_names(mask: int) -> list[str]:
    return [name for bit, name in REASONS.items() if mask & bit]


def throttle_flags(before: Sample, after: Sample, max_sm_clock_mhz: float | None) -> list[str]:
    """Why a measurement between `before` and `after` ran throttled; [] when it did not."""
    flags = []
    low = [
        s.sm_clock_mhz
        for s in (before, after)
        if max_sm_clock_mhz and s.sm_clock_mhz is not None
        and s.sm_clock_mhz < CLOCK_FRACTION * max_sm_clock_mhz
    ]  # fmt: skip
    if low:
        flags.append(f"clock-low:{min(low):.0f}/{max_sm_clock_mhz:.0f}MHz")
    bad = (before.reasons | after.reasons) & ~BENIGN
    flags += [f"throttle:{name}" for name in reason_names(bad)]
    return flags


@dataclass
class Telemetry:
    """NVML readings of one CUDA device; `nvml` is the pynvml module (a fake one in tests)."""

    nvml: Any
    handle: Any
    max_sm_clock_mhz: float | None = None
    _reason_fn: Callable | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.max_sm_clock_mhz is None:
            try:
                clock = self.nvml.nvmlDeviceGetMaxClockInfo(self.handle, self.nvml.NVML_CLOCK_SM)
                self.max_sm_clock_mhz = float(clock)
            except Exception:
                self.max_sm_clock_mhz = None
        for name in ("nvmlDeviceGetCurrentClocksEventReasons",
                     "nvmlDeviceGetCurrentClocksThrottleReasons"):  # fmt: skip
            if hasattr(self.nvml, name):
                self._reason_fn = getattr(self.nvml, name)
                break

    def sample(self) -> Sample:
        nvml = self.nvml
        sm = nvml.nvmlDeviceGetClockInfo(self.handle, nvml.NVML_CLOCK_SM)
        temp = nvml.nvmlDeviceGetTemperature(self.handle, nvml.NVML_TEMPERATURE_GPU)
        reasons = int(self._reason_fn(self.handle)) if self._reason_fn else 0
        return Sample(float(sm), float(temp), reasons)


def nvml_handle(nvml: Any, props: Any) -> Any:
    """The NVML handle of the device whose torch properties are `props`: by UUID, else by PCI
    bus id.  torch's index is never used (it is relative to CUDA_VISIBLE_DEVICES)."""
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        text = str(uuid)
        text = text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"
        try:
            return nvml.nvmlDeviceGetHandleByUUID(text)
        except Exception:
            pass
    bus = "{:08x}:{:02x}:{:02x}.0".format(
        getattr(props, "pci_domain_id", 0), props.pci_bus_id, props.pci_device_id
    )
    return nvml.nvmlDeviceGetHandleByPciBusId(bus)


_TELEMETRY: dict[int, Telemetry | str] = {}


def telemetry_for(device_index: int | None = None, nvml: Any = None) -> Telemetry | str:
    """Telemetry of a CUDA device (default: the current one), or why there is none."""
    import torch

    index = torch.cuda.current_device() if device_index is None else device_index
    if nvml is None and index in _TELEMETRY:
        return _TELEMETRY[index]
    try:
        if nvml is None:
            import pynvml as nvml  # type: ignore[import-not-found]
        nvml.nvmlInit()
        found: Telemetry | str = Telemetry(
            nvml, nvml_handle(nvml, torch.cuda.get_device_properties(index))
        )
    except ImportError:
        found = "no-nvml"  # pip install 'latprof[gpu]'
    except Exception as err:  # a driver without NVML, a handle not found
        found = f"no-nvml:{type(err).__name__}"
    _TELEMETRY[index] = found
    return found


def measure_watched(
    measure: Callable[[], Any],
    telemetry: Telemetry | str,
    *,
    pause_s: float = PAUSE_S,
    max_retries: int = MAX_RETRIES,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Any, Sample, Sample, list[str]]:
    """(measurement, sample before, sample after, flags) of `measure()`, timed again after a
    pause while it ran throttled (at most `max_retries` times)."""
    if isinstance(telemetry, str):
        return measure(), NO_SAMPLE, NO_SAMPLE, [telemetry]
    flags: list[str] = []
    for attempt in range(max_retries + 1):
        before = telemetry.sample()
        m = measure()
        after = telemetry.sample()
        why = throttle_flags(before, after, telemetry.max_sm_clock_mhz)
        if not why:
            return m, before, after, flags
        if attempt < max_retries:
            flags = ["remeasured-after-throttle"]
            sleep(pause_s)
    return m, before, after, [*flags, "throttled", *why]
