"""Telemetry fields are independently n/a with a reason and sampling never raises."""

import builtins
import sys

from llm_trainer.telemetry import GPU_FIELDS, HOST_FIELDS, NvmlSource, Telemetry, fmt, reason


class FakeMemory:
    used, total = 3 * 2**30, 24 * 2**30


class FakeUtil:
    gpu = 87


class FakeNvml:
    """Stands in for the pynvml module: this machine has no NVIDIA GPU."""

    def __init__(self, power_error=None):
        self.power_error = power_error

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"handle{i}"

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA A30"

    def nvmlDeviceGetUtilizationRates(self, h):
        return FakeUtil()

    def nvmlDeviceGetMemoryInfo(self, h):
        return FakeMemory()

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 61

    def nvmlDeviceGetPowerUsage(self, h):
        if self.power_error:
            raise self.power_error
        return 123_000


def test_real_machine_without_nvidia_gives_reasons_and_host_values():
    snap = Telemetry().sample()
    for key in GPU_FIELDS:
        assert snap[key] is None and reason(snap, key)
    assert snap["cpu_cores"] >= 1 and snap["ram_total_mb"] > 0 and snap["rss_mb"] > 0
    assert fmt(snap, "gpu_util_pct") == "n/a"


def test_nvml_values_are_read_per_field(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(power_error=RuntimeError(
        "Insufficient Permissions")))
    snap = Telemetry(nvml=NvmlSource()).sample()
    assert snap["gpu_util_pct"] == 87 and snap["gpu_temp_c"] == 61
    assert snap["vram_used_mb"] == 3 * 1024 and snap["vram_total_mb"] == 24 * 1024
    assert snap["gpu_power_w"] is None and "not" in reason(snap, "gpu_power_w")
    assert snap["gpus"][0]["name"] == "NVIDIA A30"


def test_nvml_library_missing(monkeypatch):
    real_import = builtins.__import__

    def no_pynvml(name, *args, **kwargs):
        if name == "pynvml":
            raise ImportError("No module named 'pynvml'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    snap = Telemetry(nvml=NvmlSource()).sample()
    assert "NVML library missing" in reason(snap, "gpu_util_pct")


def test_nvml_init_failure_is_a_reason_not_an_exception(monkeypatch):
    class Broken(FakeNvml):
        def nvmlInit(self):
            raise RuntimeError("Driver Not Loaded")

    monkeypatch.setitem(sys.modules, "pynvml", Broken())
    snap = Telemetry(nvml=NvmlSource()).sample()
    assert reason(snap, "vram_used_mb").startswith("no NVIDIA driver")


def test_psutil_missing(monkeypatch):
    real_import = builtins.__import__

    def no_psutil(name, *args, **kwargs):
        if name == "psutil":
            raise ImportError("No module named 'psutil'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psutil)
    snap = Telemetry().sample()
    assert snap["cpu_pct"] is None and "psutil missing" in reason(snap, "cpu_pct")
    assert snap["cpu_cores"] >= 1  # os.cpu_count still answers


def test_psutil_raising_in_one_field_leaves_the_others(monkeypatch):
    import psutil

    def boom(*a, **k):
        raise PermissionError("access denied")

    monkeypatch.setattr(psutil, "virtual_memory", boom)
    snap = Telemetry().sample()
    assert snap["ram_total_mb"] is None and reason(snap, "ram_total_mb") == "not permitted"
    assert snap["cpu_cores"] is not None
    for key in HOST_FIELDS:
        assert key in snap


def test_an_exploding_nvml_source_never_breaks_sampling():
    class Exploding(NvmlSource):
        def sample(self, index=0):
            raise ValueError("boom")

    snap = Telemetry(nvml=Exploding()).sample()
    assert "NVML failed" in reason(snap, "gpu_util_pct")
