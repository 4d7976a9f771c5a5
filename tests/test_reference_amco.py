"""AMCo against BalanceBenchmark's implementation (the reference; the authors released no code): its
``BaseClassifierAMCoModel.forward`` / ``unimodality_calculate`` (``balancemm/models/avclassify_model.py``),
``ConcatFusion_N`` (``balancemm/models/fusion_arch.py``) and ``AMCoTrainer.training_step``
(``balancemm/trainer/AMCo_trainer.py``), executed from the checkout on mmbench's encoders and heads, give
the same gradients and the same dependent modalities as mmbench's AMCo, step by step over three epochs, float64.

The classes import Lightning and the package's registries, so the test executes the source of these functions
only, on a stand-in ``self``. BalanceMM's mask row is the ``[1, C]`` slice each ``DataParallel`` replica gets
of its ``[2, C]`` mask; its schedule (``pt``) is inline in ``train_loop``, so the test draws the same mask as
mmbench (``tests/test_amco.py`` checks the schedule). Run with ``MMBENCH_REFERENCE_DIR``; see ``docs/methods/amco.md``.
"""

from __future__ import annotations

import ast
import dataclasses
import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmbench.methods.amco import class_mask, mask_level
from mmbench.methods.base import TrainState
from tests.conftest import tiny_method
from tests.reference import reference_dir

REPO = "BalanceBenchmark"


def _functions(path: str, cls: str, names: tuple[str, ...]) -> dict:
    tree = ast.parse((reference_dir(REPO) / path).read_text())
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
    nodes = [n for n in body if isinstance(n, ast.FunctionDef) and n.name in names]
    scope = {"torch": torch, "nn": nn, "F": F, "np": np}
    exec(compile(ast.Module(nodes, []), path, "exec"), scope)
    return scope


def _classes(path: str, names: tuple[str, ...]) -> dict:
    tree = ast.parse((reference_dir(REPO) / path).read_text())
    nodes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in names]
    scope = {"torch": torch, "nn": nn}
    exec(compile(ast.Module(nodes, []), path, "exec"), scope)
    return scope


def balancemm_model(model, num_classes: int, feature_dim: int):
    """BalanceMM's AMCo model functions bound to a stand-in holding mmbench's encoders, concat head and star."""
    model_fns = _functions("balancemm/models/avclassify_model.py", "BaseClassifierAMCoModel",
                           ("forward", "unimodality_calculate"))
    fusion = _classes("balancemm/models/fusion_arch.py", ("ConcatFusion_N",))["ConcatFusion_N"]
    head = fusion(input_dim=feature_dim * len(model.modalities), output_dim=num_classes).double()
    head.fc_out = model.fusion.fc  # the same parameters

    class Stand(types.SimpleNamespace):
        def __call__(self, *args, **kwargs):
            return model_fns["forward"](self, *args, **kwargs)

        def unimodality_calculate(self, mask=None, dependent_modality=None):
            return model_fns["unimodality_calculate"](self, mask, dependent_modality or {})

    return Stand(modalitys=list(model.modalities), n_classes=num_classes, fusion="concat", fusion_module=head,
                 modality_size={m: feature_dim for m in model.modalities}, linear_star=model.star, device="cpu",
                 encoder_process=lambda modality_data, modality_name: model.encoders[modality_name](modality_data))


def test_steps_equal_amco_training_step(data_dir):
    method, model, batch, _ = tiny_method("amco", data_dir, n=32)
    model.double()
    batch = dataclasses.replace(batch, inputs={m: x.double() for m, x in batch.inputs.items()})
    c, d = model.star.in_features, model.fusion.feature_dim
    theirs_model = balancemm_model(model, c, d)
    step_fn = _functions("balancemm/trainer/AMCo_trainer.py", "AMCoTrainer", ("training_step",))["training_step"]
    trainer = types.SimpleNamespace(modulation_starts=0, modulation_ends=80, sigma=0.5, current_epoch=0)
    their_batch = {**batch.inputs, "label": batch.labels}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(0)
    masked_steps = 0
    for epoch in range(3):
        state = TrainState(epoch=epoch, generator=gen)
        method.on_epoch_start(state)
        trainer.current_epoch = epoch
        dependent = {m: False for m in model.modalities}
        for k in range(5):
            replay = torch.Generator().set_state(gen.get_state())
            mask = class_mask(mask_level(method.level, 0.3), c, replay).double()
            model.zero_grad(set_to_none=True)
            _, dependent = step_fn(trainer, theirs_model, their_batch, k, dependent, mask[None], 0.0)
            expected = {n: p.grad.clone() for n, p in model.named_parameters()}
            model.zero_grad(set_to_none=True)
            out = method.forward(model, batch, state)
            loss, logs = method.loss(model, batch, out, state)
            loss.backward()
            for n, p in model.named_parameters():
                torch.testing.assert_close(p.grad, expected[n], rtol=0, atol=1e-12, msg=f"{n}, epoch {epoch} step {k}")
            assert method.dependent == dependent, (epoch, k)
            masked_steps += any(logs[f"masked_{m}"] for m in model.modalities) and logs["mask_rate"] > 0
            opt.step()
    assert masked_steps >= 3  # the comparison covered masked steps
