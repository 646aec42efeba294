import pytest

from llm_trainer.errors import ConfigError, UsageError
from llm_trainer.training.device import DeviceProbe, select_device, select_precision

CPU_ONLY = DeviceProbe()
A30 = DeviceProbe(cuda_names=("NVIDIA A30",), cuda_bf16=(True,))
TWO = DeviceProbe(cuda_names=("NVIDIA A30", "NVIDIA H100 80GB HBM3"), cuda_bf16=(True, True))
T4 = DeviceProbe(cuda_names=("Tesla T4",), cuda_bf16=(False,))
MAC = DeviceProbe(mps=True)


@pytest.mark.parametrize("probe,expected", [
    (CPU_ONLY, "cpu"), (A30, "cuda:0"), (MAC, "mps"), (TWO, "cuda:0")])
def test_auto_prefers_cuda_then_mps_then_cpu(probe, expected):
    choice = select_device("auto", probe)
    assert choice.device == expected and choice.warning is None


def test_explicit_available_devices():
    assert select_device("cuda", A30).device == "cuda:0"
    assert select_device("cuda:1", TWO).device == "cuda:1"
    assert select_device("cpu", A30).device == "cpu"
    assert select_device("mps", MAC).device == "mps"


@pytest.mark.parametrize("hint,expected", [("A30", "cuda:0"), ("h100", "cuda:1"),
                                           ("H100", "cuda:1")])
def test_gpu_name_hint_matches_visible_devices(hint, expected):
    choice = select_device(hint, TWO)
    assert choice.device == expected
    assert choice.requested == hint


@pytest.mark.parametrize("request_,probe,fallback", [
    ("cuda", CPU_ONLY, "cpu"), ("cuda:3", TWO, "cuda:0"), ("A30", CPU_ONLY, "cpu"),
    ("A30", T4, "cuda:0"), ("mps", CPU_ONLY, "cpu"), ("mps", A30, "cuda:0")])
def test_unmet_request_falls_back_with_a_warning(request_, probe, fallback):
    choice = select_device(request_, probe)
    assert choice.device == fallback
    assert choice.warning and "instead" in choice.warning and request_ in choice.requested


def test_strict_device_refuses_to_fall_back():
    with pytest.raises(UsageError, match="requested a GPU matching 'A30'"):
        select_device("A30", CPU_ONLY, strict=True)
    with pytest.raises(UsageError, match="CUDA"):
        select_device("cuda", CPU_ONLY, strict=True)


def test_malformed_device_is_a_config_error():
    with pytest.raises(ConfigError):
        select_device("cuda:x", A30)
    with pytest.raises(ConfigError):
        select_device("a30; rm -rf /", A30)


def test_precision_auto():
    assert select_precision("auto", select_device("auto", A30), A30).name == "bf16"
    t4 = select_precision("auto", select_device("auto", T4), T4)
    assert t4.name == "fp16" and t4.use_scaler
    assert select_precision("auto", select_device("auto", CPU_ONLY), CPU_ONLY).name == "fp32"
    assert select_precision("auto", select_device("auto", MAC), MAC).name == "fp32"


def test_precision_requests_that_cannot_be_met():
    cpu = select_device("cpu", CPU_ONLY)
    fp16 = select_precision("fp16", cpu, CPU_ONLY)
    assert fp16.name == "fp32" and "needs a CUDA GPU" in fp16.warning
    bf16_t4 = select_precision("bf16", select_device("cuda", T4), T4)
    assert bf16_t4.name == "fp16" and bf16_t4.use_scaler and "no bf16" in bf16_t4.warning
    bf16_cpu = select_precision("bf16", cpu, CPU_ONLY)
    assert bf16_cpu.name == "bf16" and "slower" in bf16_cpu.warning
