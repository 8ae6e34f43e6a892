"""Clock / throttle bookkeeping of GPU rows (latprof.gpu_clocks) on CPU, with a fake NVML."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from latprof import gpu_clocks as gc


class FakeNVML:
    """pynvml's surface that latprof uses; clocks / temps / reasons replayed from lists."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, clocks, temps=None, reasons=None, max_clock=1980, uuid_ok=True):
        self.clocks, self.temps = list(clocks), list(temps or [50] * len(clocks))
        self.reasons = list(reasons or [0] * len(clocks))
        self.max_clock, self.uuid_ok = max_clock, uuid_ok
        self.looked_up = []

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if not self.uuid_ok:
            raise RuntimeError("not found")
        self.looked_up.append(("uuid", uuid))
        return uuid

    def nvmlDeviceGetHandleByPciBusId(self, bus):
        self.looked_up.append(("pci", bus))
        return bus

    def nvmlDeviceGetHandleByIndex(self, index):  # never to be used: CUDA_VISIBLE_DEVICES
        raise AssertionError("NVML handle taken by torch's index")

    def nvmlDeviceGetMaxClockInfo(self, handle, kind):
        return self.max_clock

    def nvmlDeviceGetClockInfo(self, handle, kind):
        return self.clocks.pop(0)

    def nvmlDeviceGetTemperature(self, handle, kind):
        return self.temps.pop(0)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return self.reasons.pop(0)


def _watch(nvml, results=("m1", "m2", "m3"), retries=1):
    telemetry = gc.Telemetry(nvml, "h")
    calls, pauses = iter(results), []
    out = gc.measure_watched(lambda: next(calls), telemetry, max_retries=retries,
                             sleep=pauses.append)  # fmt: skip
    return out, pauses


def test_steady_row_records_before_and_after_and_no_flags():
    (m, before, after, flags), pauses = _watch(FakeNVML([1980, 1970], temps=[40, 55]))
    assert m == "m1" and flags == [] and pauses == []
    assert (before.sm_clock_mhz, before.temp_c, after.sm_clock_mhz, after.temp_c) == (
        1980,
        40,
        1970,
        55,
    )


def test_low_clock_before_is_seen_and_the_row_remeasured_after_a_pause():
    (m, _, after, flags), pauses = _watch(FakeNVML([1500, 1980, 1980, 1975]))
    assert m == "m2" and flags == ["remeasured-after-throttle"] and pauses == [gc.PAUSE_S]
    assert after.sm_clock_mhz == 1975


def test_throttle_reason_set_after_flags_the_row_and_names_the_reason():
    nvml = FakeNVML([1980] * 4, reasons=[0, 0x20, 0, 0x40 | 0x1])
    (m, _, _, flags), _ = _watch(nvml)
    assert m == "m2"
    assert flags == ["remeasured-after-throttle", "throttled", "throttle:hw_thermal"]


def test_benign_reasons_do_not_count():
    (_, _, _, flags), _ = _watch(FakeNVML([1980, 1980], reasons=[0x1, 0x2 | 0x100]))
    assert flags == []


def test_event_reasons_api_is_preferred_when_present():
    nvml = FakeNVML([1980, 1980])
    nvml.nvmlDeviceGetCurrentClocksEventReasons = lambda h: 0x4
    (_, before, _, flags), _ = _watch(nvml, retries=0)
    assert before.reasons == 0x4 and flags == ["throttled", "throttle:sw_power_cap"]


def test_missing_nvml_is_a_flag_not_silence():
    m, before, after, flags = gc.measure_watched(lambda: "m", "no-nvml")
    assert m == "m" and flags == ["no-nvml"] and before.sm_clock_mhz is None


def test_handle_by_uuid_then_pci_never_by_torch_index():
    props = SimpleNamespace(uuid="1234-abcd", pci_domain_id=0, pci_bus_id=0x41, pci_device_id=0)
    nvml = FakeNVML([])
    assert gc.nvml_handle(nvml, props) == "GPU-1234-abcd"
    nvml = FakeNVML([], uuid_ok=False)
    assert gc.nvml_handle(nvml, props) == "00000000:41:00.0"


@pytest.mark.parametrize("clock,expected", [(1782, []), (1781, ["clock-low:1781/1980MHz"])])
def test_clock_threshold_is_ninety_percent_of_max(clock, expected):
    assert gc.throttle_flags(gc.Sample(clock, 50), gc.Sample(1980, 50), 1980) == expected
