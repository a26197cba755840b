"""The ``captioning`` command.

``fit | validate | test | predict`` are LightningCLI (configs in YAML, every constructor argument
an option); the other subcommands are plain functions exposed through jsonargparse, so their
signatures and docstrings are their ``--help``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from jsonargparse import auto_cli
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from captioning.data.captions import CaptionDataModule
from captioning.lit.captioner import CaptioningModule


class LogConfigCallback(SaveConfigCallback):
    """Saves ``config.yaml`` as usual and logs the whole resolved config to every logger (W&B's run config)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        config = self.parser.dump(self.config, skip_none=False, format="json")
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": json.loads(config)})


class CaptioningCLI(LightningCLI):
    """LightningCLI with the encoder settings shared between the model and the data."""

    def after_fit(self) -> None:
        """Write the run's HTML report (learning curves + caption samples) and say where it is."""
        from captioning.lit.tracking import run_directory
        from captioning.report import report

        run_dir = run_directory(self.trainer)
        if self.trainer.is_global_zero and run_dir is not None and (run_dir / "csv" / "metrics.csv").is_file():
            print(f"report: {report(str(run_dir))}")

    def add_arguments_to_parser(self, parser) -> None:
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
        args=args,
    )


def _commands() -> dict[str, Callable]:
    from captioning.caption import caption
    from captioning.data.shapes import make_shapes
    from captioning.evaluate import evaluate
    from captioning.generate import generate
    from captioning.report import report

    return {"make-shapes": make_shapes, "evaluate": evaluate, "report": report, "caption": caption, "generate": generate}


def _underscore_flag(arg: str) -> str:
    """``--beam-size 3`` -> ``--beam_size 3``: both spellings work (jsonargparse only knows underscores)."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg.partition("=")
    return "--" + name[2:].replace("-", "_") + sep + value


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "lm":  # the language model's LightningCLI: captioning lm fit --config configs/lm.yaml
        from captioning.lm_cli import lm_main

        lm_main(None if argv is None else args[1:])
        return
    commands = _commands()
    if args and args[0] in commands:
        result = auto_cli(commands[args[0]], args=[_underscore_flag(a) for a in args[1:]], as_positional=False)
        if isinstance(result, Path):  # a file the command wrote
            print(result)
    else:
        if args and args[0] in ("-h", "--help"):
            print(f"other subcommands: {', '.join(commands)}, lm (captioning SUBCOMMAND --help)\n")
        lightning_main(argv)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()
