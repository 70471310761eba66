"""Small helpers shared by the evaluators: where a model lives and how to make a run repeatable."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (evaluated models are never sharded here)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def resolve_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    """Move the model when a device is asked for; otherwise evaluate where it already is."""
    if device is None:
        return model_device(model)
    target = torch.device(device)
    if model_device(model) != target:
        model.to(target)
    return target


def seed_everything(seed: int) -> None:
    """Fix Python's and torch's generators so sampling in calibration and evaluation repeats."""
    random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def deterministic(seed: int = 0) -> Iterator[None]:
    """Eval mode, no grad, fixed seeds and deterministic kernels; restores the previous settings.

    ``warn_only`` keeps ops without a deterministic kernel usable; on CPU every op used here is
    deterministic for a fixed batch composition, which is what makes two runs bit-identical.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    seed_everything(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put a model in eval mode for the block and restore its training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
