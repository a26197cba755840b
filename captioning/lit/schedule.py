"""The learning-rate schedule both LightningModules use: linear warm-up, then cosine decay."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, progress: float, floor: float = 0.0) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based).

    Rises linearly to 1 over ``warmup_steps`` (Adam's early updates are large and noisy), then
    follows a half cosine from 1 down to ``floor`` as ``progress`` goes from 0 to 1. Progress is
    the caller's: the share of the post-warm-up steps for the captioner, of the step or wall-clock
    budget for the language model, which trains against ``trainer.max_time``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))
