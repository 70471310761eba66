"""Calibration batches and the one loss all three objectives reduce to.

Every objective is a weighted sum of per-sequence mean token losses:

* perplexity: each text window weighs 1/n;
* answer: each prompt+answer sequence weighs 1/n, prompt tokens masked;
* margin: per item, the correct choice weighs +1/n and each of its k-1 wrong choices -1/(n(k-1)),
  prompt tokens masked: mean loss of the correct answer minus mean loss of the wrong ones.

Each sequence also names the item it belongs to (``group``): per-item statistics such as the gate Fisher of
the margin objective must add an item's sequences before squaring, as the margin is one loss per item.

One loss function therefore serves every objective, and gradients accumulate over micro-batches exactly.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from core.data.calibration import (
    AnswerCalibrationItem,
    CalibrationItem,
    MultipleChoiceCalibrationItem,
    TextItem,
)
from core.errors import CalibrationError
from core.pruning_spec import Objective, PruneSettings

IGNORE = -100
DEFAULT_BATCH_SIZE = (
    8  # sequences per forward/backward micro-batch: a memory setting of the machine, not of the run
)


@dataclass(frozen=True)
class CalibrationSequence:
    input_ids: list[int]
    labels: list[int]  # IGNORE where a token carries no loss
    weight: float
    group: int = 0  # the calibration item (or text window) this sequence belongs to, unique within a step


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    groups: torch.Tensor | None = None  # each row's ``CalibrationSequence.group``

    def to(self, device: torch.device | str) -> Batch:
        groups = None if self.groups is None else self.groups.to(device)
        return Batch(
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels, self.weights)), groups
        )

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


class CalibrationPool:
    """Tokenises the calibration items once and draws a fresh, seeded sample for every step.

    The draw depends only on (seed, step), so a resumed run sees exactly the batches an uninterrupted one did.
    """

    def __init__(
        self,
        items: Sequence[CalibrationItem],
        tokenizer: PreTrainedTokenizerBase,
        settings: PruneSettings,
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        samples: int | None = None,
    ) -> None:
        self.objective = settings.objective
        self.samples = settings.samples if samples is None else samples
        self.seq_len = settings.seq_len
        self.batch_size = batch_size
        self.seed = settings.seed
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        )
        if self.objective is Objective.perplexity:
            self._stream = self._token_stream(items, tokenizer)
            if len(self._stream) < self.seq_len + 1:
                raise CalibrationError(
                    f"calibration text has {len(self._stream)} tokens, fewer than seq_len={self.seq_len}",
                    field="calibration",
                )
        else:
            self._encoded = [self._encode_item(item, tokenizer) for item in items]

    def _token_stream(
        self, items: Sequence[CalibrationItem], tokenizer: PreTrainedTokenizerBase
    ) -> torch.Tensor:
        texts = [item.text for item in items if isinstance(item, TextItem)]
        if len(texts) != len(items):
            raise CalibrationError("perplexity calibration needs text items", field="calibration")
        ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def _encode_item(
        self, item: CalibrationItem, tokenizer: PreTrainedTokenizerBase
    ) -> tuple[list[int], list[list[int]], int]:
        """(prompt ids, continuation ids per option, index of the correct option)."""
        if isinstance(item, MultipleChoiceCalibrationItem):
            prompt, options, label = item.prompt, item.choices, item.label
        elif isinstance(item, AnswerCalibrationItem):
            prompt, options, label = item.prompt, [item.answer], 0
        else:
            raise CalibrationError(
                f"objective '{self.objective.value}' needs prompt items, got text", field="calibration"
            )
        prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        option_ids = [tokenizer(option, add_special_tokens=False)["input_ids"] for option in options]
        if any(not ids for ids in option_ids):
            raise CalibrationError("an answer tokenises to nothing", field="calibration")
        return prompt_ids, option_ids, label

    def sequences(self, step: int) -> list[CalibrationSequence]:
        rng = random.Random(f"{self.seed}:{step}")
        if self.objective is Objective.perplexity:
            return self._text_windows(rng)
        count = min(self.samples, len(self._encoded))
        chosen = rng.sample(range(len(self._encoded)), count)
        sequences: list[CalibrationSequence] = []
        for group, index in enumerate(chosen):
            prompt_ids, option_ids, label = self._encoded[index]
            wrong = len(option_ids) - 1
            for option, ids in enumerate(option_ids):
                if self.objective is Objective.answer or option == label:
                    weight = 1.0 / count
                else:
                    weight = -1.0 / (count * wrong)
                sequences.append(self._join(prompt_ids, ids, weight, group))
        return sequences

    def _text_windows(self, rng: random.Random) -> list[CalibrationSequence]:
        last_start = len(self._stream) - self.seq_len
        sequences = []
        for group in range(self.samples):
            start = rng.randrange(0, last_start + 1)
            ids = self._stream[start : start + self.seq_len].tolist()
            sequences.append(CalibrationSequence(ids, ids, 1.0 / self.samples, group))
        return sequences

    def _join(self, prompt: list[int], answer: list[int], weight: float, group: int) -> CalibrationSequence:
        answer = answer[: self.seq_len - 1]
        prompt = prompt[-(self.seq_len - len(answer)) :]
        return CalibrationSequence(prompt + answer, [IGNORE] * len(prompt) + answer, weight, group)

    def batches(self, step: int) -> list[Batch]:
        return collate(self.sequences(step), self.batch_size, self.pad_id)


def collate(sequences: Sequence[CalibrationSequence], batch_size: int, pad_id: int) -> list[Batch]:
    """Right-padded micro-batches; sequences of similar length go together to waste less padding."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].input_ids))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = [sequences[i] for i in order[start : start + batch_size]]
        width = max(len(s.input_ids) for s in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, seq in enumerate(rows):
            n = len(seq.input_ids)
            ids[row, :n] = torch.tensor(seq.input_ids)
            labels[row, :n] = torch.tensor(seq.labels)
            mask[row, :n] = 1
        weights = torch.tensor([s.weight for s in rows], dtype=torch.float32)
        groups = torch.tensor([s.group for s in rows], dtype=torch.long)
        batches.append(Batch(ids, mask, labels, weights, groups))
    return batches


def weighted_sequence_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i · mean token loss of sequence i (next-token prediction, IGNORE tokens excluded)."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(shift_labels.shape)
    counted = (shift_labels != IGNORE).sum(dim=1).clamp(min=1)
    per_sequence = token_loss.sum(dim=1) / counted
    return (per_sequence * weights.to(per_sequence.dtype)).sum()


def batch_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    return weighted_sequence_loss(logits, batch.labels, batch.weights)
