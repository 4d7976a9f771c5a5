"""env.json's hardware facts: CPU model always, GPU names and CUDA/cuDNN versions when CUDA is there."""
from pathlib import Path

import pytest
import torch

from mmbench.results import environment


def test_cpu_model_matches_proc_cpuinfo():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this platform")
    names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
    if not names:
        pytest.skip("/proc/cpuinfo has no 'model name' line here")
    assert environment("cpu")["cpu_model"] == names[0]


def test_gpu_facts_recorded_when_cuda_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: f"Fake GPU {i}")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    env = environment("cpu")
    assert env["gpus"] == ["Fake GPU 0", "Fake GPU 1"]
    assert env["cuda"] == torch.version.cuda and env["cudnn"] == 90100


def test_no_gpu_facts_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "gpus" not in environment("cpu") and "cudnn" not in environment("cpu")
