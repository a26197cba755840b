"""Checkpoint files written whole or not at all.

Lightning's own writer stages a checkpoint through fsspec, whose local temporary file lies in the
system's temp folder: where that is another file system, the final move is a copy into the
checkpoint itself, and a full disk leaves a truncated ``last.ckpt`` where the previous one was.
Here the bytes go to a file beside the target, are fsync'ed, and replace it in one rename.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``save_checkpoint`` leaves the previous file intact when it fails."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if "://" in str(path):  # s3://, gs://...: an object store replaces whole objects (Lightning's fsspec path)
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with partial.open("wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
