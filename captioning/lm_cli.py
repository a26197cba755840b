"""``captioning lm fit|validate|test``: LightningCLI for the language model.

A separate entry rather than ``captioning fit`` in subclass mode: the caption and language
model families link different arguments (encoder settings vs. tokenisation level), and
``configs/shapes.yaml`` keeps its flat ``model:`` / ``data:`` sections. Every option of
:class:`~captioning.lit.language_model.LanguageModule` and
:class:`~captioning.data.text.LanguageModelDataModule` is a flag or a YAML key::

    captioning lm fit --config configs/lm.yaml
    captioning lm fit --config configs/lm_shakespeare.yaml --data.files '[path/to/input.txt]'
    captioning lm fit --help
"""

from __future__ import annotations

from captioning.data.text import LanguageModelDataModule
from captioning.lit.language_model import LanguageModule
from captioning.project_cli import ProjectCLI


class LanguageModelCLI(ProjectCLI):
    """LightningCLI with the vocabulary and tokenisation level handed from the data to the model."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.link_arguments("data.level", "model.level")
        parser.link_arguments("data.vocab_tokens", "model.vocab_tokens", apply_on="instantiate")


def lm_main(args: list[str], run: bool = True) -> LanguageModelCLI:
    """Run ``captioning lm ...`` with ``args`` (the words after ``lm``). Returns the CLI, whose
    ``trainer`` and ``model`` the caller may inspect (benchmarks, tests).

    ``sys.argv`` is left as the user typed it: Lightning's DDP launcher starts the other
    processes with it, and they must run ``captioning lm ...`` again.
    """
    return LanguageModelCLI(
        LanguageModule,
        LanguageModelDataModule,
        seed_everything_default=0,
        parser_kwargs={"prog": "captioning lm"},
        auto_configure_optimizers=False,  # the module's own AdamW and schedule: no --optimizer to override them
        args=args,
        run=run,
    )
