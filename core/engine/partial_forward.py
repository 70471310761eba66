"""Forward passes that end early: statistics of inner layers without computing what lies beyond them."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

from torch import nn

from core.engine.objectives import Batch


class _Stop(Exception):
    """Raised where the pass should end; caught right here, never seen by callers."""


def forward_until(
    model: nn.Module,
    batches: list[Batch],
    stop_at: nn.Module,
    before_each: Callable[[Batch], None] | None = None,
) -> None:
    """Run ``model`` on every batch up to the moment ``stop_at`` would start.

    Hooks already on the model observe the pass (those on ``stop_at`` itself included, registered earlier);
    ``before_each`` sees each batch, moved to the model's device, before its pass.
    """
    device = next(model.parameters()).device

    def stop(*_args: object) -> None:
        raise _Stop

    handle = stop_at.register_forward_pre_hook(stop)
    try:
        for batch in batches:
            batch = batch.to(device)
            if before_each is not None:
                before_each(batch)
            with suppress(_Stop):
                model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    finally:
        handle.remove()
