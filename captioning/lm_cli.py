"""``captioning lm fit|validate|test``: LightningCLI for the language model.

A separate entry rather than ``captioning fit`` in subclass mode: the caption and language
model families link different arguments (encoder settings vs. tokenisation level), and
``configs/shapes.yaml`` keeps its flat ``model:`` / ``data:`` sections. Every option of
:class:`~captioning.lit.language_model.LanguageModule` and
:class:`~captioning.data.text.LanguageModelDataModule` is a flag or a YAML key::

    captioning lm fit --config configs/lm.yaml
    captioning lm fit --config configs/lm_shakespeare.yaml --data.files '[path/to/input.txt]'
    captioning lm --help
"""

from __future__ import annotations

import sys

import torch
from lightning.pytorch.cli import LightningCLI

from captioning.data.text import LanguageModelDataModule
from captioning.lit.language_model import LanguageModule


class LanguageModelCLI(LightningCLI):
    """LightningCLI with the vocabulary and tokenisation level handed from the data to the model."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.level", "model.level")
        parser.link_arguments("data.vocab_tokens", "model.vocab_tokens", apply_on="instantiate")
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


def lm_main(args: list[str] | None = None, run: bool = True) -> LanguageModelCLI:
    """Run ``captioning lm ...`` with ``args`` (the words after ``lm``; ``None``: from the command
    line). Returns the CLI, whose ``trainer`` and ``model`` the caller may inspect (benchmarks, tests)."""
    if args is None and sys.argv[1:2] == ["lm"]:
        sys.argv = [
            f"{sys.argv[0]} lm",
            *sys.argv[2:],
        ]  # LightningCLI reads sys.argv; --help says "captioning lm"
    return LanguageModelCLI(
        LanguageModule,
        LanguageModelDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )
