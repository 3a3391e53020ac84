"""The registries of evasion attacks, energy-latency searches and defences: names and other
spellings in one place, and what a search needs besides its parameters (``needs``)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from auditor.attacks.energy import SEARCHES, BlackBoxSparsity, search_class
from auditor.attacks.evasion import ATTACKS
from auditor.errors import AuditorError
from auditor.pipeline.energy import make_energy_search
from auditor.scenario import load_scenario
from auditor.validate import validate_file

ROOT = Path(__file__).resolve().parents[2]


def _spellings(registry, name):
    canonical = registry.canonical(name)
    return [canonical, canonical.upper(), f" {canonical.title()} ", *registry.aliases_of(canonical)]


def test_every_spelling_resolves_to_its_class():
    for reg in (ATTACKS, SEARCHES):
        for name, cls in reg.items():
            assert cls.name == name
            for s in _spellings(reg, name):
                assert reg.get(s) is cls, s
    assert search_class("BlackBox") is BlackBoxSparsity and search_class("BlackBoxSparsity") is BlackBoxSparsity
    with pytest.raises(AuditorError, match="unknown search 'nope'; known: whitebox"):
        search_class("nope")


@pytest.mark.parametrize("spelling", _spellings(SEARCHES, "blackbox") + ["BlackBox"])
def test_blackbox_without_surrogate_fails_validate_with_location(tmp_path, spelling):
    """Regression: the audit used to recognise three spellings of the black-box search only, so
    `search: BlackBox` passed `auditor validate` and then failed the audit ("needs a surrogate")."""
    assert "surrogate" in search_class(spelling).needs
    p = tmp_path / "s.yaml"
    p.write_text(f"name: s\nenergy_attacks:\n  - {{search: '{spelling}', count: 2}}\n")
    with pytest.raises(AuditorError, match=r"s\.yaml:3:5: energy_attacks\[0\]: .*needs 'surrogate:'"):
        validate_file(p)
    shutil.copy(ROOT / "models" / "surrogate_cnn.onnx", tmp_path / "sur.onnx")
    p.write_text(f"name: s\nenergy_attacks:\n  - {{search: '{spelling}', count: 2, surrogate: sur.onnx}}\n")
    validate_file(p)
    sc = load_scenario(p)  # and the audit builds it with the surrogate loaded, whatever the spelling
    search, params = make_energy_search(sc.energy_attacks[0], sc.base_dir, sc.preprocessing)
    assert isinstance(search, BlackBoxSparsity) and params["surrogate"].input_shape == (1, 28, 28)
    assert search.params["surrogate"] is params["surrogate"]


def test_searches_without_needs_validate_without_surrogate(tmp_path):
    p = tmp_path / "s.yaml"
    for name, cls in SEARCHES.items():
        if not cls.needs:
            p.write_text(f"name: s\nenergy_attacks:\n  - {{search: {name}, count: 2}}\n")
            validate_file(p)
