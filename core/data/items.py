"""The item shapes every evaluator and calibration objective consumes.

Items carry text exactly as lm-eval-harness builds its requests (prompt and continuation strings,
leading space included), so scoring code never needs to know which task an item came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MultipleChoiceItem:
    """One zero-shot multiple-choice question in lm-eval's request form.

    Option ``i`` is scored as the log-likelihood of ``choices[i]`` given a context:

    * usually the context is ``prompt`` for every option and ``contexts`` is ``None``;
    * for WinoGrande (lm-eval's *partial* scoring) the context differs per option and the
      continuation is shared: ``contexts[i] = sentence_before_blank + option_i`` and every
      ``choices[i]`` is the same string, ``" " + sentence_after_blank``. ``prompt`` then holds the
      shared text before the blank, so ``contexts[i]`` always starts with ``prompt``.

    Use :attr:`requests` rather than reading the fields directly, so both cases are handled.
    """

    prompt: str
    choices: list[str]
    label: int
    task: str
    id: str
    contexts: list[str] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.label < len(self.choices):
            raise ValueError(f"{self.task}/{self.id}: label {self.label} outside {len(self.choices)} choices")
        if self.contexts is not None:
            if len(self.contexts) != len(self.choices):
                raise ValueError(f"{self.task}/{self.id}: contexts and choices differ in length")
            if any(not ctx.startswith(self.prompt) for ctx in self.contexts):
                raise ValueError(f"{self.task}/{self.id}: every context must start with the prompt")

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(context, continuation)`` per option, the pairs lm-eval scores."""
        if self.contexts is None:
            return [(self.prompt, choice) for choice in self.choices]
        return list(zip(self.contexts, self.choices, strict=True))

    def as_prompt_choices(self) -> dict[str, Any]:
        """A ``{"prompt", "choices", "label", "task", "id"}`` dict; ``prompt + choices[i]`` is option i.

        Partial-scoring items are folded: ``choices[i]`` becomes the option word plus the shared
        continuation, so consumers that only know prompt/choices (the margin objective) score the
        full sentence after the shared prefix instead of the continuation alone.
        """
        if self.contexts is None:
            choices = list(self.choices)
        else:
            choices = [ctx[len(self.prompt) :] + cont for ctx, cont in self.requests]
        return {
            "prompt": self.prompt,
            "choices": choices,
            "label": self.label,
            "task": self.task,
            "id": self.id,
        }


_FINAL = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


@dataclass(frozen=True)
class AnswerItem:
    """A generation item (GSM8K): the prompt, the reference worked solution, and its final number.

    ``answer`` is the full reference text (calculator annotations included, as in the data) so it
    can serve as a few-shot exemplar or as the target of the answer objective.
    """

    prompt: str
    answer: str
    id: str
    task: str = "gsm8k"
    question: str = field(default="", compare=False)

    @property
    def final_answer(self) -> str:
        """The text after ``####`` with commas removed, the string exact match compares against."""
        match = _FINAL.search(self.answer)
        if match is None:
            raise ValueError(f"{self.task}/{self.id}: reference answer has no '####' line")
        return match.group(1).replace(",", "").strip()
