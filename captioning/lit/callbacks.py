"""Lightning callbacks.

``CaptionWriter``: the prediction writer of ``captioning caption --devices N``.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from tqdm import tqdm

from captioning.records import CaptionFile, ErrorLog, merge_parts, part_path


class CaptionWriter(BasePredictionWriter):
    """Each process appends its batches to its own part files; the first merges them at the end.

    A prediction is ``{"records": [{"image", "caption", "log_prob"}, ...], "errors": [(path,
    reason), ...]}``. Process r writes ``<stem>.part<r><suffix>`` and ``<output>.errors.part<r>.jsonl``
    (whole batches, fsync'ed, like the single-process run). Once every process is done (a
    barrier), process 0 moves the parts into the output, keeping each image once: Lightning's
    predict sampler does not pad, but a duplicate from any source (a rerun's leftovers, a
    padding sampler) is dropped by path.

    Args:
        output: The output file the parts are merged into.
        errors: Where process 0 lists the failures.
        done: Keys (``image_key``) already in the output; the merge skips them and adds to it.
        progress: Show a progress bar (process 0 only, counting its own share).
        total: Images over all processes (for the bar).
    """

    def __init__(
        self,
        output: str | os.PathLike,
        errors: ErrorLog,
        done: set[str],
        progress: bool = True,
        total: int | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.errors = errors
        self.done = done
        self.progress = progress
        self.total = total
        self.merged = 0

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank, world = trainer.global_rank, trainer.world_size
        self.part = CaptionFile(part_path(self.output, rank))
        self.error_part = CaptionFile(part_path(self.output, rank, errors=True))
        share = len(range(rank, self.total, world)) if self.total is not None else None  # the sampler's rank::world
        show = self.progress and trainer.is_global_zero
        self.bar = tqdm(
            total=share, desc=f"caption (process 1 of {world})", unit="img", disable=not show, dynamic_ncols=True
        )

    def write_on_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: dict, batch_indices, batch, batch_idx: int, dataloader_idx: int
    ) -> None:  # fmt: skip
        self.part.append(prediction["records"])
        self.error_part.append([{"image": path, "error": reason} for path, reason in prediction["errors"]])
        self.bar.update(len(prediction["records"]) + len(prediction["errors"]))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.part.close()
        self.error_part.close()
        self.bar.close()
        trainer.strategy.barrier("caption_writer_merge")  # every part is complete past this line
        if trainer.is_global_zero:
            self.merged = merge_parts(self.output, self.errors, self.done)
