"""OPM's drop probabilities and feature drop equal the official release's (GeWu-Lab/BML_TPAMI2024
``code/models/Classifier.py``: ``calcu_q``, ``Modality_drop.execute_drop``) on identical tensors.

The release's file does not import (a stray ``]`` after ``torch.chunk(...)`` in ``execute_drop``), so
the test executes the source of the two pieces it needs with that one character removed. The
release draws its drop mask from torch's global generator; the test reads the mask back from the
zeroed rows and gives it to mmbench's ``drop_features``. Run with ``MMBENCH_REFERENCE_DIR``;
see ``docs/methods/opm.md``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmbench.methods.opm import drop_features, drop_probabilities
from tests.reference import reference_dir

REPO = "BML_TPAMI2024"


def official():
    text = (reference_dir(REPO) / "code" / "models" / "Classifier.py").read_text()
    start, end = text.index("class custom_autograd"), text.index("class Classifier")
    source = text[start:end].replace("torch.chunk(cleaned_fea,num_mod,dim=0) ]", "torch.chunk(cleaned_fea,num_mod,dim=0)")
    namespace = {"torch": torch, "nn": nn, "np": np}
    exec(compile(source, "Classifier.py", "exec"), namespace)
    return namespace


def test_drop_probabilities_equal_calcu_q():
    calcu_q = official()["calcu_q"]
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        s1, s2 = (torch.rand(2, generator=gen) * 64).unbind()
        q_base, lam = torch.rand(2, generator=gen).tolist()
        expected = calcu_q(s1, s2, q_base, lam)
        q = drop_probabilities({"a": s1, "b": s2}, q_base, lam)
        assert [q["a"], q["b"]] == pytest.approx(expected.tolist(), abs=1e-6)


@pytest.mark.parametrize("q", [(0.6, 0.0), (0.5, 0.7)])
def test_drop_features_equal_execute_drop(q):
    ns = official()
    torch.manual_seed(0)
    b, d = 256, 16
    feats = [torch.randn(b, d, dtype=torch.float64), torch.randn(b, d, dtype=torch.float64)]
    dropper = ns["Modality_drop"](torch.tensor([d, d]), p_exe=1.0, device="cpu")
    cleaned, flag = dropper.execute_drop(feats, torch.tensor(q, dtype=torch.float64))
    # the release returns only the samples left with some modality; put its rows back in place
    full = [torch.zeros(b, d, dtype=torch.float64).index_put((flag,), c) for c in cleaned]
    keep = torch.stack([(f != 0).any(1) for f in full], 1)
    ours = drop_features({"a": feats[0], "b": feats[1]}, {"a": q[0], "b": q[1]}, keep)
    assert torch.equal(keep.any(1), flag)
    assert (~keep).any()
    for o, f in zip(ours.values(), full):
        torch.testing.assert_close(o, f, rtol=0, atol=1e-12)
