"""The one registry convention (auditor/registry.py)."""

import pytest

from auditor.errors import AuditorError
from auditor.registry import Registry


def test_lookup_is_case_insensitive_and_resolves_aliases():
    reg = Registry("widget")
    reg.add("alpha", 1, aliases=("a", "Alpha-1"))

    @reg.register("beta")
    class B:
        pass

    assert reg.get(" ALPHA ") == 1 and reg.get("alpha-1") == 1 and reg.get("a") == 1
    assert reg.get("Beta") is B
    assert reg.canonical("A") == "alpha"
    assert reg.names() == ["alpha", "beta"] and list(reg) == ["alpha", "beta"] and len(reg) == 2
    assert reg.aliases_of("alpha") == ["a", "alpha-1"]
    assert "ALPHA-1" in reg and "gamma" not in reg and 3 not in reg
    assert reg.items() == [("alpha", 1), ("beta", B)]


def test_unknown_and_non_string_names_are_one_line_errors():
    reg = Registry("widget")
    reg.add("alpha", 1)
    with pytest.raises(AuditorError, match=r"unknown widget 'gamma'; known: alpha"):
        reg.get("gamma")
    with pytest.raises(AuditorError, match="widget name must be a string"):
        reg.get(["alpha"])


def test_a_name_or_alias_taken_twice_is_refused():
    reg = Registry("widget")
    reg.add("alpha", 1, aliases=("a",))
    with pytest.raises(ValueError):
        reg.add("ALPHA", 2)
    with pytest.raises(ValueError):
        reg.add("beta", 2, aliases=("a",))
    with pytest.raises(ValueError):
        reg.add("a", 3)
