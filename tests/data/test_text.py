"""WikiText-2 and C4 readers against the real offline files."""

from __future__ import annotations

from core.data.paths import default_data_dir, fingerprint
from core.data.text import c4_texts, wikitext2_files, wikitext2_rows, wikitext2_text, wikitext_detokenize

DATA = default_data_dir()


def test_wikitext_test_rows_rebuild_hub_layout() -> None:
    rows = wikitext2_rows("test", DATA)
    assert rows[:3] == ["", " = Robert Boulter = \n", ""]
    assert all("\r" not in row for row in rows)
    assert sum(1 for row in rows if row) == 2891
    assert abs(len(rows) - 4358) <= 6  # the Hub's row count, within the documented stray blanks


def test_wikitext_validation_rows_are_exact() -> None:
    rows = wikitext2_rows("validation", DATA)
    assert len(rows) == 3760
    assert rows[1] == " = Homarus gammarus = \n"
    assert "<unk>" in rows[3]


def test_wikitext_text_is_double_newline_join() -> None:
    text = wikitext2_text("test", DATA)
    assert text.startswith("\n\n = Robert Boulter = \n\n\n\n\n Robert Boulter is an English film")
    assert text == "\n\n".join(wikitext2_rows("test", DATA))
    assert fingerprint(wikitext2_files("test", DATA), DATA) == {
        "wikitext-2-raw/wiki.test.raw": "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c"
    }


def test_detokenizer_matches_lm_eval_rules() -> None:
    assert wikitext_detokenize("a guest @-@ starring role , 1 @,@ 000 ( so ) \n x") == (
        "a guest-starring role, 1,000 (so)\nx"
    )
    assert "@-@" not in wikitext2_text("validation", DATA, detokenize=True)


def test_c4_slice() -> None:
    texts = c4_texts(DATA)
    assert len(texts) == 1000
    assert texts[0].startswith("Beginners BBQ Class Taking Place in Missoula!")
    assert sum(len(text) for text in texts) == 2189457
    assert c4_texts(DATA, limit=3) == texts[:3]
