"""``model.compile``: torch.compile'd encoders train as the eager ones do, and the activation-memory
budget makes the compiled backward keep fewer activations."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.utils
import torch._functorch.config
from torch import nn
from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

from mmbench.config import ModelConfig, resolve
from mmbench.errors import MMBenchError
from mmbench.models.compiled import check_compile, compiled_encoders
from mmbench.models.multimodal import MultimodalModel
from mmbench.run import load_trained, train_run
from tests.cli_helpers import assert_one_line_error, run_main

FAST = ["output.probe=false"]
COMPILED = ["model.compile=true", "model.activation_memory_budget=0.5"]


@pytest.fixture(autouse=True, scope="module")
def _own_compile_cache(tmp_path_factory):
    """Kernels built here, not read from the user's cache: torch 2.13 keys its cached CPU kernels without
    ATEN_CPU_CAPABILITY, so a kernel cached under another capability fails to build."""
    with temporary_cache_dir(str(tmp_path_factory.mktemp("inductor"))):
        yield


def test_compiled_run_trains_as_the_eager_one(make_cfg):
    eager, _ = train_run(make_cfg("joint", sets=FAST))
    cfg = make_cfg("joint", sets=[*FAST, *COMPILED])
    compiled, _ = train_run(cfg)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # both encoders ran compiled
    assert compiled.run_id != eager.run_id
    assert compiled.read_config().model.compile and compiled.read_config().model.activation_memory_budget == 0.5
    a, b = eager.read_metrics(), compiled.read_metrics()
    for column in ("train_loss", "val_loss"):  # same computation, other kernels: float rounding only
        assert b[column].to_numpy() == pytest.approx(a[column].to_numpy(), rel=1e-4, abs=1e-6)
    assert b["val_acc"].tolist() == a["val_acc"].tolist()
    assert torch._functorch.config.activation_memory_budget == 1.0  # restored after the run
    state = torch.load(compiled.path / "model.pt", weights_only=True)
    assert list(state) == list(torch.load(eager.path / "model.pt", weights_only=True))  # eager names: loads anywhere
    _, _, model, test = load_trained(compiled)
    assert not any(getattr(enc, "_compiled_call_impl", None) for enc in model.encoders.values())


class _PointwiseHeavy(nn.Module):
    """An encoder whose activations are mostly cheap to recompute (a class of its own, as mmbench's
    encoders are: torch.compile skips a bare ``nn.Sequential``'s ``Module.compile``)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(), nn.LayerNorm(256),
                                 nn.Linear(256, 32), nn.GELU())

    def forward(self, x):
        return self.net(x)


def _saved_bytes(budget: float) -> int:
    """Bytes the compiled backward of a pointwise-heavy encoder keeps from its forward pass."""
    torch.manual_seed(0)
    model = MultimodalModel({"x": _PointwiseHeavy()}, nn.Linear(32, 2))
    with compiled_encoders(model, budget):
        out = model.encoders["x"](torch.randn(128, 64))
    assert type(out.grad_fn).__name__ == "CompiledFunctionBackward"  # one compiled graph, no eager fallback
    return sum(t.numel() * t.element_size() for t in out.grad_fn.saved_tensors if isinstance(t, torch.Tensor))


def test_a_lower_budget_keeps_fewer_activations():
    assert _saved_bytes(0.1) < 0.8 * _saved_bytes(1.0)


def test_budget_is_patched_inside_the_block_only():
    model = MultimodalModel({"x": nn.Linear(4, 4)}, nn.Linear(4, 2))
    with compiled_encoders(model, 0.3):
        assert torch._functorch.config.activation_memory_budget == 0.3
    assert torch._functorch.config.activation_memory_budget == 1.0
    assert model.encoders["x"]._compiled_call_impl is not None


def test_compile_settings_are_checked_before_anything_is_created(monkeypatch, capsys, data_dir, tmp_path):
    for value in ("0", "1.5", "-0.2"):
        with pytest.raises(MMBenchError, match="activation_memory_budget"):
            resolve(sets=[f"model.activation_memory_budget={value}"])
    args = ["--dataset", "tiny", "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "results"), "--quiet"]
    code, _, err = run_main(monkeypatch, capsys, "train", *args, "--set", "model.activation_memory_budget=0.5")
    assert_one_line_error(code, err, "model.activation_memory_budget=0.5", "model.compile=true")
    assert not (tmp_path / "results").exists()
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(MMBenchError, match="needs a C.. compiler"):
        check_compile(ModelConfig(compile=True), torch.device("cpu"))
    check_compile(ModelConfig(compile=False), torch.device("cpu"))  # no compiler needed when not compiling


def test_defaults_leave_the_run_id_unchanged():
    cfg = resolve()
    d = cfg.to_dict()
    for key in ("compile", "activation_memory_budget"):
        d["model"].pop(key)
    assert type(cfg).from_dict(d).run_id() == cfg.run_id()
    assert resolve(sets=["model.compile=true"]).run_id() != cfg.run_id()
