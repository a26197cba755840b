"""The ``captioning`` command.

``fit | validate | test | predict`` are LightningCLI (configs in YAML, every constructor argument
an option); the other subcommands are plain functions exposed through jsonargparse, so their
signatures and docstrings are their ``--help``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from jsonargparse import auto_cli
from lightning.pytorch.cli import LightningCLI

from captioning.data.captions import CaptionDataModule
from captioning.lit.captioner import CaptioningModule


class CaptioningCLI(LightningCLI):
    """LightningCLI with the encoder settings shared between the model and the data."""

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
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def _commands() -> dict[str, Callable]:
    from captioning.data.shapes import make_shapes
    from captioning.evaluate import evaluate

    return {"make-shapes": make_shapes, "evaluate": evaluate}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    commands = _commands()
    if args and args[0] in commands:
        auto_cli(commands[args[0]], args=args[1:], as_positional=False)
    else:
        if args and args[0] in ("-h", "--help"):
            print(f"other subcommands: {', '.join(commands)} (captioning SUBCOMMAND --help)\n")
        lightning_main(argv)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()
