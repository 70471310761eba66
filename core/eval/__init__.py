"""Evaluation of dense and pruned models: perplexity, zero-shot accuracy, GSM8K, efficiency, reports."""

from core.eval.evaluate import evaluate_model
from core.eval.report import build_report, comparable, read_report, write_report

__all__ = ["build_report", "comparable", "evaluate_model", "read_report", "write_report"]
