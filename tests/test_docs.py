"""The field reference is generated from the schemas; the committed copy must be current."""

from pathlib import Path

from auditor.docs import reference_markdown


def test_reference_is_up_to_date():
    committed = Path("docs/reference.md").read_text()
    assert committed == reference_markdown(), "regenerate with: python -m auditor.docs > docs/reference.md"


def test_every_field_is_documented():
    text = reference_markdown()
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert len(rows) > 60
    undocumented = [r for r in rows if r.split("|")[4].strip() == ""]
    assert not undocumented, undocumented[:5]
