"""Device and precision selection.

``select_device`` and ``select_precision`` are pure functions of the request and a
``DeviceProbe`` (what the machine has), so they are tested with made-up machines;
``probe_devices`` asks torch.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

from llm_trainer.errors import ConfigError, UsageError

CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


@dataclass(frozen=True)
class DeviceProbe:
    cuda_names: tuple[str, ...] = ()  # one per visible CUDA device
    cuda_bf16: tuple[bool, ...] = ()
    mps: bool = False
    cpu_name: str = "CPU"
    cpu_bf16: bool = False  # native bf16 matmul (AVX512-BF16 or AMX): faster than fp32

    @property
    def cuda_count(self) -> int:
        return len(self.cuda_names)


@dataclass(frozen=True)
class DeviceChoice:
    requested: str
    device: str  # "cpu" | "cuda:N" | "mps"
    name: str  # human name, e.g. "NVIDIA A30"
    warning: str | None = None

    @property
    def type(self) -> str:
        return self.device.split(":")[0]

    def to_json(self) -> dict:
        return {"requested": self.requested, "selected": self.device, "name": self.name,
                "warning": self.warning}


@dataclass(frozen=True)
class PrecisionChoice:
    requested: str
    name: str  # "fp32" | "bf16" | "fp16"
    use_scaler: bool = False
    warning: str | None = None
    notes: list[str] = field(default_factory=list)


def probe_devices() -> DeviceProbe:
    import platform

    import torch

    names, bf16 = [], []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            names.append(torch.cuda.get_device_name(i))
            major, _ = torch.cuda.get_device_capability(i)
            bf16.append(major >= 8)
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return DeviceProbe(tuple(names), tuple(bf16), mps, platform.processor() or "CPU",
                       cpu_bf16=cpu_has_native_bf16())


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: there bf16 matmuls run ~2x faster than fp32 (measured on an EPYC
    with AVX512-BF16: 409 vs 180 GFLOP/s). Without them bf16 is emulated and far slower."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        fn = getattr(cpu, name, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # an old or unusual build: assume no
            continue
    return False


def _best(probe: DeviceProbe) -> tuple[str, str]:
    if probe.cuda_count:
        return "cuda:0", probe.cuda_names[0]
    if probe.mps:
        return "mps", "Apple MPS"
    return "cpu", "CPU"


def _describe(probe: DeviceProbe) -> str:
    if probe.cuda_count:
        return ", ".join(f"cuda:{i} {n}" for i, n in enumerate(probe.cuda_names))
    return "no CUDA GPU" + (", Apple MPS" if probe.mps else "")


def select_device(requested: str, probe: DeviceProbe, *, strict: bool = False) -> DeviceChoice:
    """Resolve ``auto | cpu | cuda | cuda:N | mps | <GPU name hint>`` against ``probe``.

    A request that cannot be met falls back to the best available device with a warning,
    or raises with ``strict``."""
    req = (requested or "auto").strip()
    low = req.lower()
    if low == "auto":
        dev, name = _best(probe)
        return DeviceChoice(req, dev, name)
    if low == "cpu":
        return DeviceChoice(req, "cpu", "CPU")
    wanted: str | None = None  # what could not be met, for the message
    if low == "cuda" or CUDA_INDEX.match(low):
        index = int(CUDA_INDEX.match(low).group(1)) if ":" in low else 0
        if index < probe.cuda_count:
            return DeviceChoice(req, f"cuda:{index}", probe.cuda_names[index])
        wanted = (f"CUDA device {index}" if probe.cuda_count else "a CUDA GPU")
    elif low.startswith("cuda:"):
        raise ConfigError(f"runtime.device '{req}' is not valid",
                          hint="use auto, cpu, cuda, cuda:N (N a number), mps or a GPU name")
    elif low == "mps":
        if probe.mps:
            return DeviceChoice(req, "mps", "Apple MPS")
        wanted = "Apple MPS"
    else:  # a GPU name hint such as A30 or H100
        if not re.fullmatch(r"[\w .+-]{1,64}", req):
            raise ConfigError(f"runtime.device '{req}' is not valid",
                              hint="use auto, cpu, cuda, cuda:N, mps or a GPU name like A30")
        for i, name in enumerate(probe.cuda_names):
            if low in name.lower():
                return DeviceChoice(req, f"cuda:{i}", name)
        wanted = f"a GPU matching '{req}'"
    dev, name = _best(probe)
    message = f"requested {wanted}, but this machine has {_describe(probe)}"
    if strict:
        raise UsageError(message, hint="drop --strict-device to fall back, or pick another "
                                       "--device (auto, cpu, cuda:N)")
    return DeviceChoice(req, dev, name, warning=f"{message}; using {dev} ({name}) instead")


def select_precision(requested: str, device: DeviceChoice, probe: DeviceProbe) -> PrecisionChoice:
    """auto: bf16 autocast on CUDA with bf16, fp16 + GradScaler on older CUDA; on a CPU bf16
    autocast only where the CPU has native bf16 (AVX512-BF16 / AMX), else fp32: emulated bf16
    (and fp16) matmuls on a CPU are 100x or more slower than fp32."""
    req = (requested or "auto").lower()
    cuda_bf16 = False
    if device.type == "cuda":
        index = int(device.device.split(":")[1])
        cuda_bf16 = probe.cuda_bf16[index] if index < len(probe.cuda_bf16) else False
    if req == "auto":
        if device.type == "cuda":
            return PrecisionChoice(req, "bf16") if cuda_bf16 else \
                PrecisionChoice(req, "fp16", use_scaler=True)
        if device.type == "cpu" and probe.cpu_bf16:
            return PrecisionChoice(req, "bf16")
        return PrecisionChoice(req, "fp32")
    if req == "fp32":
        return PrecisionChoice(req, "fp32")
    if req == "fp16":
        if device.type == "cuda":
            return PrecisionChoice(req, "fp16", use_scaler=True)
        return PrecisionChoice(req, "fp32", warning=f"fp16 mixed precision needs a CUDA GPU; "
                                                    f"using fp32 on {device.device}")
    if req == "bf16":
        if device.type == "cuda":
            if cuda_bf16:
                return PrecisionChoice(req, "bf16")
            return PrecisionChoice(req, "fp16", use_scaler=True,
                                   warning=f"{device.name} has no bf16 support; using fp16 with "
                                           "loss scaling")
        if device.type == "mps":
            return PrecisionChoice(req, "fp32", warning="bf16 autocast is not supported on MPS "
                                                        "here; using fp32")
        if probe.cpu_bf16:
            return PrecisionChoice(req, "bf16")
        return PrecisionChoice(req, "bf16", warning="this CPU has no native bf16 (AVX512-BF16 "
                                                    "or AMX): bf16 is emulated and far slower "
                                                    "than fp32")
    raise ConfigError(f"runtime.precision must be auto, fp32, bf16 or fp16 (got {requested!r})")


def tune_allocator() -> None:
    """Keep freed activation buffers in the heap instead of returning them to the OS after
    every step: glibc's default gives each step's large tensors fresh mmap'd pages, and the
    page faults cost ~25% of a small model's CPU step time (measured: 398k -> 74k faults for
    300 steps of the shakespeare-char preset)."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD: the largest glibc allows
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def one_cpu_thread(device, small: bool):
    """Run a block of many tiny ops (decoding one token, scoring a small model) on one CPU
    thread: splitting each op across threads costs more in synchronisation than it saves
    (measured on a busy 2-core machine: decoding 1,290 tokens/s on one thread against 19 on
    two; a tiny model scored 500 tokens in 0.01 s against 1.3 s). Elsewhere: unchanged."""
    import torch

    if not small or not str(device).startswith("cpu"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
