"""Every registered method, fusion, encoder, attack, protocol and embedded dataset passes the
conformance checks shipped in :mod:`mmbench.testing` (one test per component and check)."""

from __future__ import annotations

import pytest

from mmbench.data.types import MODALITY_KINDS, ModalitySpec
from mmbench.models.encoders import DEFAULT_ENCODER
from mmbench.registry import ATTACKS, DATASETS, ENCODERS, FUSIONS, PROTOCOLS
from mmbench.testing import all_checks, kind_specs, parametrize_with_checks
from tests.conftest import BUILTIN_METHODS

BUILTIN = {"methods": BUILTIN_METHODS, "fusions": FUSIONS.names(), "encoders": ENCODERS.names(),
           "attacks": ATTACKS.names(), "protocols": PROTOCOLS.names(),
           "datasets": [n for n in DATASETS.names() if DATASETS.get(n).embedded]}


@parametrize_with_checks(**BUILTIN)
def test_conformance(check, tmp_path):
    check(tmp_path)


def test_every_component_has_checks_and_there_are_string_parameters_to_check():
    checks = all_checks(**BUILTIN)
    for kind, names in BUILTIN.items():
        assert {c.name for c in checks if c.kind + "s" == kind} == set(names), kind
    assert len({c.name for c in checks if c.label.startswith("string_parameter")}) >= 5
    assert len({c.id for c in checks}) == len(checks), "test ids must be unique"


def test_every_kind_has_a_default_encoder_that_accepts_it():
    assert set(kind_specs()) == set(MODALITY_KINDS)
    for kind in MODALITY_KINDS:
        assert kind in ENCODERS.get(DEFAULT_ENCODER[kind]).kinds, kind


def test_modality_spec_round_trip():
    spec = ModalitySpec("image", "image", (1, 4, 4), "float32", 0.5, 2.0)
    assert ModalitySpec.from_dict(spec.to_dict()) == spec


def test_testing_imports_pytest_only_when_parametrizing():
    import subprocess
    import sys

    code = ("import sys; import mmbench.testing as t; assert 'pytest' not in sys.modules; "
            "t.all_checks(methods=['joint']); assert 'pytest' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_component_kind_is_refused():
    with pytest.raises(TypeError, match="unknown component kinds"):
        all_checks(method=["joint"])
