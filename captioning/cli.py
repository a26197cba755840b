"""The ``captioning`` command.

``fit | validate | test`` are LightningCLI (configs in YAML, every constructor argument
an option); the other subcommands are plain functions exposed through jsonargparse, so their
signatures and docstrings are their ``--help``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from jsonargparse import auto_cli
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from captioning.data.captions import CaptionDataModule
from captioning.lit.captioner import CaptioningModule
from captioning.lit.tracking import CSVLogger, run_directory


class LogConfigCallback(SaveConfigCallback):
    """Saves ``config.yaml`` as usual and logs the whole resolved config to every logger (W&B's run config)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        config = self.parser.dump(self.config, skip_none=False, format="json")
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": json.loads(config)})


class ProjectCLI(LightningCLI):
    """What the captioner's and the language model's commands share.

    ``fit``, ``validate`` and ``test`` (``predict`` is ``captioning caption``: folders of images,
    streamed and resumable); ``--num_threads``; the HTML report after ``fit``; and run logs that
    survive: ``validate``, ``test`` and a ``fit`` that restores a checkpoint append to the run's
    ``metrics.csv`` (:class:`captioning.lit.tracking.CSVLogger`) instead of replacing it.
    """

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

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("num_threads", 0) > 0:
            torch.set_num_threads(config.num_threads)

    def before_fit(self) -> None:
        if self._restores_checkpoint(self.config[self.subcommand].get("ckpt_path")):
            self._continue_run_logs()

    def after_fit(self) -> None:
        """Write the run's HTML report (learning curves, and caption samples for a captioner) and say where it is."""
        from captioning.report import report  # matplotlib: only when there is a report to draw

        run_dir = run_directory(self.trainer)
        if self.trainer.is_global_zero and run_dir is not None and (run_dir / "csv" / "metrics.csv").is_file():
            print(f"report: {report(str(run_dir))}")

    def before_validate(self) -> None:
        self._continue_run_logs()

    def before_test(self) -> None:
        self._continue_run_logs()

    def _restores_checkpoint(self, ckpt_path: str | None) -> bool:
        """Whether ``fit`` will go on from a checkpoint: ``last`` starts afresh when there is none yet."""
        if ckpt_path != "last":
            return ckpt_path is not None
        return any(
            Path(callback.dirpath, f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}").is_file()
            for callback in self.trainer.checkpoint_callbacks
            if isinstance(callback, ModelCheckpoint) and callback.dirpath
        )

    def _continue_run_logs(self) -> None:
        for logger in self.trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.continue_log = True


class CaptioningCLI(ProjectCLI):
    """LightningCLI with the encoder settings shared between the model and the data."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        for name in ("backbone", "pretrained", "image_size", "spatial_grid"):
            parser.link_arguments(f"model.{name}", f"data.{name}")
        parser.link_arguments("model.trainable_blocks", "data.cache_features", compute_fn=lambda blocks: blocks == 0)
        parser.link_arguments("data.vocab_tokens", "model.vocab_tokens", apply_on="instantiate")


def lightning_main(args: list[str] | None = None) -> CaptioningCLI:
    return CaptioningCLI(
        CaptioningModule,
        CaptionDataModule,
        seed_everything_default=0,
        save_config_callback=LogConfigCallback,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the module's own AdamW groups and schedule: no --optimizer to override them
        args=args,
    )


def _commands() -> dict[str, Callable]:
    from captioning.caption import caption
    from captioning.data.shapes import make_shapes
    from captioning.evaluate import evaluate
    from captioning.generate import generate
    from captioning.report import report

    return {
        "make-shapes": make_shapes,
        "evaluate": evaluate,
        "report": report,
        "caption": caption,
        "generate": generate,
    }


def _underscore_flag(arg: str) -> str:
    """``--beam-size 3`` -> ``--beam_size 3``: both spellings work (jsonargparse only knows underscores)."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg.partition("=")
    return "--" + name[2:].replace("-", "_") + sep + value


LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test")

USER_ERRORS = (ValueError, OSError)
"""What bad input raises here (a missing file, a malformed line, an option out of range): the
message names the file and the fix, so the command prints it alone, without a traceback."""


def main(argv: list[str] | None = None) -> None:
    """``captioning ...``; ``--traceback`` anywhere shows where an error was raised."""
    args = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in args
    if show_traceback:
        args.remove("--traceback")
        if argv is None:  # LightningCLI and Lightning's DDP launcher read sys.argv
            sys.argv = [sys.argv[0], *args]
    try:
        _dispatch(args, None if argv is None else args)
    except SIGTERMException:  # Lightning's graceful stop on SIGTERM (docker stop, SLURM, timeout) is a SystemExit(0)
        sys.exit("stopped by SIGTERM: `--ckpt_path last` resumes a fit; `captioning caption` resumes when rerun")
    except BrokenPipeError:  # `captioning caption ... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except USER_ERRORS as error:
        if show_traceback:
            raise
        sys.exit(f"error: {error}\n(rerun with --traceback to see where it was raised)")


def _dispatch(args: list[str], argv: list[str] | None) -> None:
    if args and args[0] == "lm":  # the language model's LightningCLI: captioning lm fit --config configs/lm.yaml
        from captioning.lm_cli import lm_main

        lm_main(None if argv is None else args[1:])
        return
    commands = _commands()
    if args and args[0] in commands:
        result = auto_cli(
            commands[args[0]],
            args=[_underscore_flag(a) for a in args[1:]],
            as_positional=False,
            prog=f"captioning {args[0]}",
        )
        if isinstance(result, Path):  # a file the command wrote
            print(result)
        return
    if args and not args[0].startswith("-") and args[0] not in LIGHTNING_SUBCOMMANDS:
        valid = ", ".join([*LIGHTNING_SUBCOMMANDS, *commands, "lm"])
        raise SystemExit(f"error: unknown subcommand {args[0]!r}: choose one of {valid} (captioning SUBCOMMAND --help)")
    if not args:
        raise SystemExit(
            f"usage: captioning SUBCOMMAND ... (one of {', '.join([*LIGHTNING_SUBCOMMANDS, *commands, 'lm'])})"
        )
    if args[0] in ("-h", "--help"):
        print(f"other subcommands: {', '.join(commands)}, lm (captioning SUBCOMMAND --help)\n")
    lightning_main(argv)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()
