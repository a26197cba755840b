"""The ``captioning`` command.

``fit | validate | test`` are LightningCLI (configs in YAML, every constructor argument
an option); the other subcommands are plain functions exposed through jsonargparse, so their
signatures and docstrings are their ``--help``.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from lightning.pytorch.utilities.exceptions import SIGTERMException

from captioning.cli_options import check_config_family, constructor_options, run_function
from captioning.data.captions import CaptionDataModule
from captioning.lit.captioner import CaptioningModule
from captioning.project_cli import ProjectCLI


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
    # The CLIs get their words explicitly (``captioning lm fit`` hands on those after ``lm``), while
    # sys.argv stays as typed for Lightning's DDP launcher: Lightning's warning about both is moot.
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within")
            _dispatch(args)
    except SIGTERMException:  # Lightning's graceful stop on SIGTERM (docker stop, SLURM, timeout) is a SystemExit(0)
        sys.exit("stopped by SIGTERM: `--ckpt_path last` resumes a fit; `captioning caption` resumes when rerun")
    except KeyboardInterrupt:  # Ctrl-C outside a Trainer (captioning caption, evaluate): nothing written is lost
        sys.exit("interrupted: what was written is kept; `captioning caption` goes on where it stopped when rerun")
    except BrokenPipeError:  # `captioning caption ... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except USER_ERRORS as error:
        if show_traceback:
            raise
        sys.exit(f"error: {error}\n(rerun with --traceback to see where it was raised)")


def _dispatch(args: list[str]) -> None:
    if args and args[0] == "lm":  # the language model's LightningCLI: captioning lm fit --config configs/lm.yaml
        from captioning.lm_cli import lm_main

        _check_family(args[1:], language_model=True)
        lm_main(args[1:])
        return
    commands = _commands()
    if args and args[0] in commands:
        result = run_function(commands[args[0]], args[1:], prog=f"captioning {args[0]}")
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
    _check_family(args, language_model=False)
    lightning_main(args)


def _check_family(args: list[str], language_model: bool) -> None:
    """A caption config given to ``captioning lm fit`` (or the other way round) is named as such."""
    from captioning.data.text import LanguageModelDataModule
    from captioning.lit.language_model import LanguageModule

    captioner = {"model": constructor_options(CaptioningModule), "data": constructor_options(CaptionDataModule)}
    language = {"model": constructor_options(LanguageModule), "data": constructor_options(LanguageModelDataModule)}
    subcommand = next((a for a in args if not a.startswith("-")), "fit")
    if language_model:
        check_config_family(args, language, captioner, f"captioning {subcommand}")
    else:
        check_config_family(args, captioner, language, f"captioning lm {subcommand}")


if __name__ == "__main__":
    main()
