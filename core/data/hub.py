"""Optional path: the same named sets through the `datasets` package on a connected machine.

Only used when the offline copy is missing. Records come back in the Hub layout, which is the
layout `tasks.py` formats, so both paths yield identical items for identical data. This module
cannot be exercised offline; it is kept small so that what it does is obvious on reading.
"""

from __future__ import annotations

from typing import Any

# task -> (dataset path, config name), the sources lm-eval-harness reads.
HUB_SOURCES: dict[str, tuple[str, str | None]] = {
    "boolq": ("aps/super_glue", "boolq"),
    "piqa": ("baber/piqa", None),
    "hellaswag": ("Rowan/hellaswag", None),
    "winogrande": ("allenai/winogrande", "winogrande_xl"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge"),
    "openbookqa": ("allenai/openbookqa", "main"),
    "gsm8k": ("openai/gsm8k", "main"),
}


def datasets_available() -> bool:
    """True when the optional `datasets` package can be imported."""
    try:
        import datasets  # noqa: F401
    except ImportError:
        return False
    return True


def hub_records(task: str, split: str) -> list[dict[str, Any]]:
    """All records of a (task, split) from the Hub, in the data set's order."""
    import datasets

    path, name = HUB_SOURCES[task]
    data = datasets.load_dataset(path, name, split=split)
    return [dict(record) for record in data]


def hub_wikitext_rows(split: str, raw: bool) -> list[str]:
    """The rows of WikiText-2 (raw or tokenized), blank rows included, as the Hub stores them."""
    import datasets

    config = "wikitext-2-raw-v1" if raw else "wikitext-2-v1"
    return list(datasets.load_dataset("Salesforce/wikitext", config, split=split)["text"])


def hub_c4_texts(limit: int) -> list[str]:
    """The first `limit` documents of C4 en train shard 00000, the shard pruning papers sample."""
    import datasets

    data = datasets.load_dataset(
        "allenai/c4", data_files={"train": "en/c4-train.00000-of-01024.json.gz"}, split="train"
    )
    return [record["text"] for record in data.select(range(min(limit, len(data))))]
