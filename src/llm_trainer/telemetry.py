"""System telemetry: NVML (nvidia-ml-py) for GPUs, psutil for CPU, RAM and the process.

Every field is independently ``None`` with a reason in ``na`` (no NVIDIA driver, NVML library
missing, not permitted, psutil missing...). Sampling never raises.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

GPU_FIELDS = ("gpu_util_pct", "vram_used_mb", "vram_total_mb", "gpu_temp_c", "gpu_power_w")
HOST_FIELDS = ("cpu_pct", "cpu_cores", "load_avg", "ram_used_mb", "ram_total_mb", "rss_mb")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:120]


@dataclass
class NvmlSource:
    """Lazily initialised NVML; remembers why it is unavailable."""

    _nvml: Any = None
    _handles: list = field(default_factory=list)
    _names: list = field(default_factory=list)
    error: str | None = None
    _tried: bool = False

    def _init(self) -> None:
        if self._tried:
            return
        self._tried = True
        try:
            import pynvml
        except Exception:
            self.error = "NVML library missing (pip install nvidia-ml-py)"
            return
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            names = []
            for h in self._handles:
                name = pynvml.nvmlDeviceGetName(h)
                names.append(name.decode() if isinstance(name, bytes) else str(name))
            self._names = names
            self._nvml = pynvml
            if not count:
                self.error = "no NVIDIA GPU visible"
        except Exception as exc:
            msg = _reason(exc)
            low = msg.lower()
            if "driver" in low or "library not found" in low or "shared library" in low:
                self.error = f"no NVIDIA driver ({msg})"
            elif "permission" in low or "no_permission" in low:
                self.error = f"not permitted ({msg})"
            else:
                self.error = f"NVML unavailable ({msg})"

    def sample(self, index: int = 0) -> tuple[dict[str, Any], dict[str, str], list[dict]]:
        """Values and n/a reasons for GPU ``index``, and a short list of all GPUs."""
        self._init()
        values: dict[str, Any] = dict.fromkeys(GPU_FIELDS)
        na: dict[str, str] = {}
        if self._nvml is None or not self._handles:
            for k in GPU_FIELDS:
                na[k] = self.error or "no NVIDIA GPU visible"
            return values, na, []
        nv = self._nvml
        gpus = []
        for i, h in enumerate(self._handles):
            one: dict[str, Any] = {"index": i, "name": self._names[i]}
            reasons: dict[str, str] = {}
            for key, read in (
                ("gpu_util_pct", lambda h=h: float(nv.nvmlDeviceGetUtilizationRates(h).gpu)),
                ("vram_used_mb", lambda h=h: nv.nvmlDeviceGetMemoryInfo(h).used / 2**20),
                ("vram_total_mb", lambda h=h: nv.nvmlDeviceGetMemoryInfo(h).total / 2**20),
                ("gpu_temp_c", lambda h=h: float(nv.nvmlDeviceGetTemperature(h, 0))),
                ("gpu_power_w", lambda h=h: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
            ):
                try:
                    one[key] = read()
                except Exception as exc:
                    one[key] = None
                    text = _reason(exc)
                    reasons[key] = ("not permitted" if "permission" in text.lower()
                                    else f"not supported ({text})")
            gpus.append(one)
            if i == index:
                values.update({k: one[k] for k in GPU_FIELDS})
                na.update(reasons)
        if index >= len(gpus):
            for k in GPU_FIELDS:
                na[k] = f"GPU {index} not visible"
        return values, na, gpus


class Telemetry:
    """One sampler per process (psutil's CPU % needs the previous call's counters)."""

    def __init__(self, *, pid: int | None = None, nvml: NvmlSource | None = None,
                 gpu_index: int = 0) -> None:
        self.pid = pid if pid is not None else os.getpid()
        self.nvml = nvml if nvml is not None else NvmlSource()
        self.gpu_index = gpu_index
        self._psutil = None
        self._psutil_error: str | None = None
        self._proc = None
        try:
            import psutil

            self._psutil = psutil
            psutil.cpu_percent(interval=None)  # prime the counters
        except Exception as exc:
            self._psutil_error = ("psutil missing (pip install psutil)"
                                  if isinstance(exc, ImportError) else _reason(exc))

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {"time": time.time()}
        na: dict[str, str] = {}
        try:
            values, gpu_na, gpus = self.nvml.sample(self.gpu_index)
        except Exception as exc:  # never let telemetry break a caller
            values, gpu_na, gpus = dict.fromkeys(GPU_FIELDS), dict.fromkeys(
                GPU_FIELDS, f"NVML failed ({_reason(exc)})"), []
        out.update(values)
        na.update(gpu_na)
        out["gpus"] = gpus
        out.update(self._host(na))
        out["na"] = na
        return out

    def _host(self, na: dict[str, str]) -> dict[str, Any]:
        values: dict[str, Any] = dict.fromkeys(HOST_FIELDS)
        ps = self._psutil
        if ps is None:
            for k in HOST_FIELDS:
                na[k] = self._psutil_error or "psutil unavailable"
            cores = os.cpu_count()
            if cores:
                values["cpu_cores"] = cores
                na.pop("cpu_cores", None)
            return values
        for key, read in (
            ("cpu_pct", lambda: float(ps.cpu_percent(interval=None))),
            ("cpu_cores", lambda: ps.cpu_count(logical=True) or os.cpu_count()),
            ("load_avg", lambda: [round(x, 2) for x in os.getloadavg()]),
            ("ram_used_mb", lambda: _used_mb(ps.virtual_memory())),
            ("ram_total_mb", lambda: ps.virtual_memory().total / 2**20),
            ("rss_mb", self._rss_mb),
        ):
            try:
                values[key] = read()
            except Exception as exc:
                na[key] = ("not permitted" if "denied" in _reason(exc).lower() or
                           "permission" in _reason(exc).lower() else _reason(exc))
        return values

    def _rss_mb(self) -> float:
        if self._proc is None:
            self._proc = self._psutil.Process(self.pid)
        return self._proc.memory_info().rss / 2**20


def _used_mb(vm) -> float:
    return (vm.total - vm.available) / 2**20


def fmt(sample: dict[str, Any] | None, key: str, unit: str = "", digits: int = 0) -> str:
    """A field for display: the value with its unit, or ``n/a``."""
    if not sample:
        return "n/a"
    value = sample.get(key)
    if value is None:
        return "n/a"
    if isinstance(value, list):
        return " ".join(f"{v:.2f}" for v in value)
    if isinstance(value, int | float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def reason(sample: dict[str, Any] | None, key: str) -> str | None:
    if not sample:
        return "no telemetry yet"
    return (sample.get("na") or {}).get(key)
