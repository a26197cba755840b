"""The Trainer the unit tests use: one CPU process, no logger, checkpoints or progress bar."""

from __future__ import annotations

from pathlib import Path

import lightning as L


def quiet_trainer(root: Path, **kwargs) -> L.Trainer:
    """A Trainer writing under ``root``; ``kwargs`` override or add Trainer options."""
    options = {
        "accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
        "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": root,
    }  # fmt: skip
    return L.Trainer(**{**options, **kwargs})
