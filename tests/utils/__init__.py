"""Helpers shared by the test packages (tiny models and tokenizers built offline)."""
