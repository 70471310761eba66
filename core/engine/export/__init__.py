"""Export of a pruned checkpoint folder to other runtimes' formats (today: GGUF for llama.cpp)."""

from __future__ import annotations

from core.engine.export.writer import GGUF_TYPES, export_gguf

__all__ = ["GGUF_TYPES", "export_gguf"]
