"""The README's reference tables are generated from the code; a stale one fails here."""

from __future__ import annotations

from pathlib import Path

from core.reference_tables import rewrite

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tables_match_the_code() -> None:
    text = README.read_text()
    assert rewrite(text) == text, "regenerate them: python -m core.reference_tables README.md"
