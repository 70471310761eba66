"""Plain-text corpora: WikiText-2 (perplexity test, calibration validation) and a C4 slice.

WikiText-2 is returned in the form pruning papers tokenize: the Hugging Face rows joined with
``"\\n\\n"`` (LLM-Pruner, SparseGPT and Wanda all do ``"\\n\\n".join(data["text"])``). The offline
copies are line files, so the rows are rebuilt from them:

* ``test`` reads ``wikitext-2-raw/wiki.test.raw``. It has CRLF line endings and its blank lines were
  dropped; the Hub rows are ``line + "\\n"`` for text lines and ``""`` for blank lines. The blank rows
  are re-inserted where the WikiText layout puts them (one before and one after each heading, two
  before an article title). This reproduces the tokenized validation file's 3,760 rows with one
  exception and gives 4,364 test rows against the Hub's 4,358, i.e. six stray ``"\\n\\n"`` in 1.3 MB,
  which moves the token count by a few tokens in ~300k.
* ``validation`` reads ``wikitext-2/wiki.valid.tokens`` (tokenized: ``<unk>``, ``@-@``), which keeps
  its blank lines, so its rows are exact.

``detokenize=True`` applies lm-eval's ``wikitext_detokenizer`` (undoes ``" @-@ "``, spaced punctuation
and the like), which suits calibration text better; perplexity numbers use the text as published.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from core.data import hub
from core.data.paths import resolve_data_dir

WIKITEXT_FILES: dict[str, str] = {
    "test": "wikitext-2-raw/wiki.test.raw",
    "validation": "wikitext-2/wiki.valid.tokens",
}
C4_FILE = "c4/c4-train.00000-of-01024.first1000.jsonl"

_HEADING = re.compile(r"^ (= )+.*? (= )+$")
_TITLE = re.compile(r"^ = [^=].* = $")


def wikitext2_files(split: str, data_dir: Path | None = None) -> list[Path]:
    """The file a WikiText-2 split reads, for dataset fingerprints."""
    if split not in WIKITEXT_FILES:
        raise ValueError(f"wikitext-2 split must be one of {sorted(WIKITEXT_FILES)}, not {split!r}")
    return [resolve_data_dir(data_dir) / WIKITEXT_FILES[split]]


def _rows_with_blanks(lines: list[str]) -> list[str]:
    """Re-insert the blank rows the raw test copy dropped, following WikiText's heading layout."""
    rows: list[str] = []
    for line in lines:
        if _HEADING.match(line):
            blanks = 2 if (_TITLE.match(line) and rows) else 1
            rows.extend([""] * blanks)
            rows.extend([line + "\n", ""])
        else:
            rows.append(line + "\n")
    return rows


def wikitext2_rows(split: str = "test", data_dir: Path | None = None) -> list[str]:
    """The split as Hugging Face rows: ``"line\\n"`` for text, ``""`` for blank lines."""
    (path,) = wikitext2_files(split, data_dir)
    if not path.is_file():
        if hub.datasets_available():
            return hub.hub_wikitext_rows(split, raw=split == "test")
        raise FileNotFoundError(f"{path} is missing and the `datasets` package is not installed")
    text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if split == "test":
        return _rows_with_blanks([line for line in lines if line.strip()])
    return [line + "\n" if line.strip() else "" for line in lines]


def wikitext_detokenize(text: str) -> str:
    """lm-eval-harness's ``wikitext_detokenizer``, verbatim in behaviour."""
    string = text
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    string = string.replace(" : ", ": ")
    string = string.replace(" ; ", "; ")
    string = string.replace(" . ", ". ")
    string = string.replace(" ! ", "! ")
    string = string.replace(" ? ", "? ")
    string = string.replace(" , ", ", ")
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    return string.replace(" 's", "'s")


def wikitext2_text(split: str = "test", data_dir: Path | None = None, detokenize: bool = False) -> str:
    """The whole split as one string, ``"\\n\\n".join(rows)`` as the pruning papers build it.

    ``"test"`` is WikiText-2 raw (perplexity only, never calibrate on it); ``"validation"`` is the
    tokenized WikiText-2 validation split, disjoint from the test articles (calibration).
    """
    text = "\n\n".join(wikitext2_rows(split, data_dir))
    return wikitext_detokenize(text) if detokenize else text


def c4_files(data_dir: Path | None = None) -> list[Path]:
    """The C4 slice file, for dataset fingerprints."""
    return [resolve_data_dir(data_dir) / C4_FILE]


def c4_texts(data_dir: Path | None = None, limit: int | None = None) -> list[str]:
    """Documents of the C4 en train shard 00000 prefix (1,000 offline), in shard order."""
    (path,) = c4_files(data_dir)
    if not path.is_file():
        if hub.datasets_available():
            return hub.hub_c4_texts(limit if limit is not None else 1000)
        raise FileNotFoundError(f"{path} is missing and the `datasets` package is not installed")
    texts: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if limit is not None and len(texts) >= limit:
                break
            if line.strip():
                texts.append(json.loads(line)["text"])
    return texts
