"""The learning-rate schedule both LightningModules use: linear warm-up, then cosine decay,
continued across a resumed run."""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L


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


SCHEDULE_KEY = "lr_schedule"
"""Where a checkpoint keeps how far its run's schedule had got (read back by :func:`schedule_segment`)."""


@dataclass(frozen=True)
class ScheduleSegment:
    """The stretch of the schedule one ``fit`` runs: from ``start_progress`` at ``start_step`` to 1
    after ``steps``; ``epochs_at_start`` is how many epochs the run had done at its first step."""

    start_step: int
    start_progress: float
    steps: int
    first_step: int = 0
    epochs_at_start: float = 0.0

    def progress(self, step: int) -> float:
        return self.start_progress + (1 - self.start_progress) * (step - self.start_step) / max(1, self.steps)


def schedule_segment(trainer: L.Trainer, resumed: dict | None, warmup_steps: int = 0) -> ScheduleSegment:
    """What is left of the schedule for this ``fit``.

    A fresh run spreads it over ``estimated_stepping_batches``. A resumed one goes on from where its
    checkpoint left off and ends with the new budget, so resuming with another number of processes
    or another ``max_epochs`` bends the curve instead of jumping: the remaining epochs (or, under a
    step budget, steps) are counted in this run's steps per epoch.
    """
    total = max(1, int(trainer.estimated_stepping_batches))
    if resumed is None:
        return ScheduleSegment(warmup_steps, 0.0, total - warmup_steps)
    step, epochs = resumed["step"], resumed["epochs"]
    if trainer.max_steps != -1 and trainer.max_steps <= total:  # the step budget ends the run
        remaining = trainer.max_steps - step
    else:
        remaining = round(total * (1 - epochs / max(1, trainer.max_epochs)))
    if step < warmup_steps:  # still warming up: the cosine starts where it would have
        return ScheduleSegment(warmup_steps, 0.0, max(1, remaining - (warmup_steps - step)), step, epochs)
    return ScheduleSegment(step, resumed["progress"], max(1, remaining), step, epochs)


def schedule_state(trainer: L.Trainer, segment: ScheduleSegment) -> dict:
    """What :func:`schedule_segment` needs from a checkpoint: the step, the progress and the epochs done.

    Epochs are counted from the step in this fit's steps per epoch, added to those done before it
    (a run resumed on another number of processes has another number of steps per epoch).
    """
    step = trainer.global_step
    steps_per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
    epochs = segment.epochs_at_start + (step - segment.first_step) / max(1, steps_per_epoch)
    return {"step": step, "progress": min(1.0, max(0.0, segment.progress(step))), "epochs": epochs}
