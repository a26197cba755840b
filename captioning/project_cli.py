"""What the captioner's and the language model's LightningCLIs share: run folders and run logs.

Every ``fit`` / ``validate`` / ``test`` works in one run folder (:mod:`captioning.run_folders`):
``<trainer.default_root_dir>/<run_name>/version_<N>/``. A new ``fit`` makes the next version;
``--ckpt_path last`` goes on with the newest run that has a ``last.ckpt``, in its own folder;
``validate`` / ``test`` (and ``fit`` from an explicit checkpoint) append to the run whose
checkpoint they read. The configs name no paths: loggers and checkpoint callbacks whose paths
are unset are pointed at the run folder here, before anything is instantiated.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from captioning.cli_options import allow_bare_booleans, check_known_options, normalize_flags
from captioning.lit.checkpoint_io import AtomicCheckpointIO
from captioning.run_folders import (
    RunFolder,
    create_run,
    discard_if_unused,
    job_run,
    newest_resumable,
    point_latest,
    run_of_checkpoint,
)

RUN_FOLDER_ENV = "CAPTIONING_RUN_FOLDER"
"""How the first process tells the processes Lightning's DDP launcher starts which run folder is theirs."""

NEEDS_LOGGER = ("LearningRateMonitor", "DeviceStatsMonitor")
"""Lightning callbacks that refuse to run without a logger: with ``--trainer.logger false`` they step aside."""

CHECKPOINT_OVERHEAD = 3
"""A training checkpoint holds the weights and AdamW's two moments: about three times the parameters."""


class LogConfigCallback(SaveConfigCallback):
    """Saves the resolved config into the run folder, never over an earlier one, and logs it to every logger.

    The first command of a run writes ``config.yaml``; a resumed ``fit``, ``validate`` or ``test``
    of the same run adds ``config.<stage>-<k>.yaml``, so what each command ran with stays on record.
    """

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run, stage = Path(trainer.default_root_dir), getattr(stage, "value", stage)
        path = run / "config.yaml"
        k = 1
        while path.exists():
            path, k = run / f"config.{stage}-{k}.yaml", k + 1
        self.parser.save(self.config, str(path), skip_none=False, multifile=False)
        config = self.parser.dump(self.config, skip_none=False, format="json")
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": json.loads(config)})


class RunFolderCallback(L.Callback):
    """Points ``<root>/<name>/latest`` at this run once it starts training (not when it fails on its
    data), and on Ctrl-C says what the run folder keeps and how to go on."""

    def __init__(self, run: RunFolder) -> None:
        self.run = run

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            point_latest(self.run)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            if self.run.last_checkpoint.is_file():
                print(f"interrupted: {self.run.path} keeps its last.ckpt; add --ckpt_path last to go on from it")
            else:
                print(
                    f"interrupted: {self.run.path} has no checkpoint yet (the first comes at an epoch's end): start again"
                )


class ProjectCLI(LightningCLI):
    """``fit``, ``validate`` and ``test`` in run folders (see the module docstring), ``--num_threads``,
    ``--run_name``, bare booleans, and the HTML report after ``fit``.

    ``predict`` is ``captioning caption`` (folders of images, streamed and resumable).
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("save_config_callback", LogConfigCallback)
        kwargs.setdefault("save_config_kwargs", {"save_to_log_dir": False})
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name != "predict"}

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--num_threads",
            type=int,
            default=0,
            help="CPU threads for torch (0: torch's default, one per core). On a machine whose cores are "
            "busy with other work, 1 can be much faster than 2: a recurrent net runs many tiny parallel "
            "regions per step, and each waits for its slowest thread.",
        )
        parser.add_argument(
            "--run_name",
            type=str,
            default="run",
            help="Runs are written to <trainer.default_root_dir, default runs>/<run_name>/version_<N>/, "
            "with <run_name>/latest a link to the newest.",
        )
        allow_bare_booleans(parser)

    def parse_arguments(self, parser, args) -> None:
        """A mistyped option is named with the closest valid one; dashes in option names work as underscores."""
        words = list(args) if isinstance(args, list) else []
        subcommand = next((w for w in words if not w.startswith("-")), None)
        if subcommand in self.subcommands():
            check_known_options(
                words[words.index(subcommand) + 1 :], parser._subcommands_action._name_parser_map[subcommand]
            )
            args = normalize_flags(words, booleans=set())  # --data.batch-size is --data.batch_size
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if config.get("num_threads", 0) > 0:
            torch.set_num_threads(config.num_threads)
        self.config_as_given = config.clone()  # what config.yaml records: rerunnable, naming no run's paths
        self.run, self.appending = self._choose_run(config)
        _point_outputs_at(config, self.run, self.appending)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except BaseException:  # a bad option value: the run folder made for this command stays empty
            if not self.appending:
                discard_if_unused(self.run)
            raise
        for callback in self.trainer.callbacks:
            if isinstance(callback, LogConfigCallback):
                callback.config = self.config_as_given

    def before_fit(self) -> None:
        _check_free_space(self.run, self.model)
        if type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # a user's own plugin stays
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        self.trainer.callbacks.append(RunFolderCallback(self.run))

    def after_fit(self) -> None:
        """Write the run's HTML report (learning curves, and caption samples for a captioner) and say where it is."""
        if not self.trainer.is_global_zero:
            return
        if self.run.metrics.is_file():
            from captioning.report import report  # matplotlib: only when there is a report to draw

            print(f"report: {report(str(self.run.path))}")
        else:
            print(f"no report: {self.run.metrics} was not written (the CSV logger is off)")
        print(f"run folder: {self.run.path}")
        _finish_wandb(self.trainer)

    def after_validate(self) -> None:
        _finish_wandb(self.trainer)

    def after_test(self) -> None:
        _finish_wandb(self.trainer)

    def _choose_run(self, config: Namespace) -> tuple[RunFolder, bool]:
        """This command's run folder, and whether it already existed (the command appends to it)."""
        inherited = os.environ.get(RUN_FOLDER_ENV)
        if inherited and os.environ.get("LOCAL_RANK", "0") != "0":  # a DDP process started by the first one
            return RunFolder(Path(inherited)), True
        root = config.trainer.default_root_dir or "runs"
        ckpt_path = config.get("ckpt_path")
        run = None
        if ckpt_path == "last":
            run = newest_resumable(root, config.run_name)
            if run is None:
                if self.subcommand != "fit":
                    raise FileNotFoundError(
                        f"--ckpt_path last: no run under {Path(root, config.run_name)} has a last.ckpt"
                    )
                print(
                    f"--ckpt_path last: no run under {Path(root, config.run_name)} has a last.ckpt; starting a new run"
                )
            config.ckpt_path = str(run.last_checkpoint) if run else None
        elif ckpt_path is not None:
            if not Path(ckpt_path).is_file():
                raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
            run = run_of_checkpoint(ckpt_path)
        appending = run is not None
        if run is None:
            job = _external_job_id()
            if job:
                run, appending = job_run(root, config.run_name, job)
            else:
                run = create_run(root, config.run_name)
        os.environ[RUN_FOLDER_ENV] = str(run.path)
        print(f"run folder: {run.path}" + (" (appending)" if appending else ""))
        return run, appending


def _external_job_id() -> str | None:
    """The job id shared by processes that torchrun or SLURM started (each one runs this CLI itself)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if "GROUP_RANK" in os.environ and run_id != "none":  # torchrun's default --rdzv-id is "none": not a job's own
        return run_id
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_ID" in os.environ:  # one srun step of a job
        return f"{os.environ['SLURM_JOB_ID']}.{os.environ['SLURM_STEP_ID']}"
    return None


def _point_outputs_at(config: Namespace, run: RunFolder, appending: bool) -> None:
    """Loggers and checkpoints whose paths the config leaves unset write into ``run``."""
    trainer = config.trainer
    trainer.default_root_dir = str(run.path)
    loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    for logger in loggers:
        if not isinstance(logger, Namespace) or "init_args" not in logger:
            continue
        args = logger.init_args
        if "save_dir" in args and args.save_dir is None:
            args.save_dir = str(run.path)
        if "continue_log" in args:
            args.continue_log = appending
        if logger.class_path.endswith("WandbLogger") and args.get("name") is None:
            args.name = f"{config.run_name}/{run.path.name}"
    callbacks = trainer.callbacks or []
    if isinstance(callbacks, Namespace):  # one callback given alone
        trainer.callbacks = callbacks = [callbacks]
    if trainer.logger is False:
        stepping_aside = [c for c in callbacks if c.class_path.rsplit(".", 1)[-1] in NEEDS_LOGGER]
        for callback in stepping_aside if os.environ.get("LOCAL_RANK", "0") == "0" else []:
            print(f"--trainer.logger false: {callback.class_path.rsplit('.', 1)[-1]} is not used")
        trainer.callbacks = callbacks = [c for c in callbacks if c not in stepping_aside]
    for callback in callbacks:
        if callback.class_path.endswith("ModelCheckpoint") and callback.init_args.get("dirpath") is None:
            callback.init_args.dirpath = str(run.checkpoints)


def _finish_wandb(trainer: L.Trainer) -> None:
    """Close this command's W&B run: a process exit would, but a second command run in the same
    process (a notebook, a script calling the CLI twice) would otherwise log into this one."""
    if any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
        import wandb

        wandb.finish()


def _check_free_space(run: RunFolder, model: torch.nn.Module) -> None:
    """Refuse to start a run whose file system cannot hold one checkpoint (a full disk fails at the first save)."""
    needed = CHECKPOINT_OVERHEAD * sum(t.numel() * t.element_size() for t in model.state_dict().values())
    free = shutil.disk_usage(run.path).free
    if free < needed:
        raise OSError(
            f"{run.path} has {free / 2**20:.0f} MiB free, a checkpoint of this model needs about "
            f"{needed / 2**20:.0f} MiB: free some space or pass --trainer.default_root_dir on another disk"
        )
