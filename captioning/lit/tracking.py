"""Experiment tracking: W&B that never blocks a run, throughput, and caption samples per epoch.

W&B runs offline unless the user has said otherwise (``WANDB_MODE``, an API key, a ``wandb login``
or a ``WANDB_BASE_URL`` of their own server): a laptop with no account and no network trains
without a prompt or a time-out, and ``wandb sync runs/<name>/<version>/wandb/offline-run-*`` uploads later.

Both loggers take ``save_dir=None`` to mean "the run folder": the CLIs fill it in
(:mod:`captioning.project_cli`); used from Python, ``None`` is the working directory.
"""

from __future__ import annotations

import csv
import json
import netrc
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from captioning.data.images import thumbnail
from captioning.files import write_text_atomic

WANDB_MODES = ("online", "offline", "disabled")


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str | None) -> str:
    """The config's ``mode``, else ``WANDB_MODE``, else online only where credentials exist."""
    mode = mode or os.environ.get("WANDB_MODE") or ("online" if _has_credentials() else "offline")
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    if mode not in WANDB_MODES:
        raise ValueError(f"W&B mode must be one of {WANDB_MODES} (from the logger's mode or WANDB_MODE), got {mode!r}")
    return mode


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger``, offline by default (see the module docstring).

    Args:
        mode: ``online``, ``offline`` or ``disabled``; ``None`` decides as described above.
        project: W&B project; ``None`` takes ``WANDB_PROJECT``, else ``captioning``.
        save_dir: The run folder; W&B writes its ``wandb/`` directory inside it.
        **kwargs: Anything else of Lightning's ``WandbLogger`` / ``wandb.init`` (``entity``, ``log_model``, ``tags``...).
    """

    def __init__(
        self, mode: str | None = None, project: str | None = None, save_dir: str | None = None, **kwargs
    ) -> None:
        resolved = resolve_wandb_mode(mode)
        # Absolute: W&B's background service keeps the working directory it started in.
        save_dir = os.path.abspath(save_dir or ".")
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        project = project or os.environ.get("WANDB_PROJECT", "captioning")
        super().__init__(project=project, save_dir=save_dir, mode=resolved, **kwargs)
        if self._wandb_init.get("anonymous") is None:  # Lightning passes None, which wandb warns about on every run
            self._wandb_init.pop("anonymous", None)


class _ContinuedExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, appending to the ``metrics.csv`` already there instead of deleting it,
    and keeping the run's ``hparams.yaml`` (each command's own settings are in the run's ``config.*.yaml``)."""

    def log_hparams(self, params: dict) -> None:
        if not self._fs.isfile(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)):
            super().log_hparams(params)

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(csv.DictReader(f).fieldnames or [])  # new columns rewrite the header


class CSVLogger(LightningCSVLogger):
    """Lightning's ``CSVLogger`` that can go on with a run's log instead of replacing it.

    Lightning deletes ``metrics.csv`` whenever a logger opens a folder that has one: a resumed
    ``fit`` would lose the epochs before the interruption, and a ``test`` the whole training log,
    and with them the report's curves. The CLIs set ``continue_log`` for ``validate`` / ``test``
    and for a ``fit`` resumed with ``--ckpt_path``; a new ``fit`` starts a new log.

    Args:
        save_dir: The run folder; the log is ``<save_dir>/<name>/<version>/metrics.csv``.
        name: Sub-folder of ``save_dir`` (empty: none).
        version: The log's own folder, ``csv``: the run folder is already one run's.
        continue_log: Append to an existing ``metrics.csv``.
        **kwargs: The rest of Lightning's ``CSVLogger`` (``prefix``, ``flush_logs_every_n_steps``).
    """

    def __init__(
        self,
        save_dir: str | None = None,
        name: str = "",
        version: str = "csv",
        continue_log: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(save_dir or ".", name=name, version=version, **kwargs)
        self.continue_log = continue_log

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.continue_log:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedExperimentWriter(log_dir=self.log_dir)
        return super().experiment


def log_grad_norm(module: L.LightningModule) -> None:
    """Log ``train/grad_norm``, the global L2 norm of the gradients.

    Call it from ``on_before_optimizer_step``: Lightning clips after that hook, so this is the
    norm the clipping acts on.
    """
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if grads:
        module.log("train/grad_norm", torch.nn.utils.get_total_norm(grads), batch_size=1)


class Throughput(L.Callback):
    """Logs ``train/images_per_s``: image-caption pairs per second of training step, per process."""

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: dict, batch_idx: int
    ) -> None:
        elapsed = time.perf_counter() - self._start
        if elapsed > 0:
            pl_module.log("train/images_per_s", len(batch["lengths"]) / elapsed, batch_size=1)


class CaptionSamples(L.Callback):
    """Each validation epoch: the first images of the split with generated and reference captions.

    Written to ``<run>/samples/epoch_NNN.jsonl`` (read by ``captioning report``) and, when a W&B
    logger is attached, logged as a ``wandb.Table`` with the pictures. Every run has its own
    folder, so nothing of another run's is in the way: a resumed run adds to its own samples.
    """

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        samples = getattr(pl_module, "validation_samples", [])
        if trainer.sanity_checking or not samples or trainer.state.fn != "fit":  # `validate` has no epoch of its own
            return
        validation = trainer.datamodule.image_sources("validation")
        sources = [validation[s["index"]] for s in samples]
        rows = [{**s, "image": src if isinstance(src, str) else None} for s, src in zip(samples, sources, strict=True)]
        folder = Path(trainer.default_root_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            folder / f"epoch_{trainer.current_epoch:03d}.jsonl", "".join(json.dumps(r) + "\n" for r in rows)
        )
        for logger in trainer.loggers:
            if isinstance(logger, LightningWandbLogger):
                import wandb

                data = [
                    [
                        wandb.Image(thumbnail(src, 128)) if isinstance(src, str) else None,
                        s["generated"],
                        " | ".join(s["references"]),
                    ]
                    for s, src in zip(samples, sources, strict=True)
                ]
                logger.log_table("val/samples", columns=["image", "generated", "references"], data=data)
