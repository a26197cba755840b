"""Command-line conventions users expect, on top of jsonargparse.

- Booleans work bare and with a value: ``--recursive``, ``--recursive true``, ``--recursive=false``,
  ``--no-recursive``.
- Dashes or underscores: ``--beam-size 3`` is ``--beam_size 3``.
- A config of the other model family is named as such (``captioning lm fit`` vs ``captioning fit``)
  before anything is read or written.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser

_BOOLEAN_HINTS = (bool, Optional[bool])  # noqa: UP045 - the hint as jsonargparse stores it


def allow_bare_booleans(parser: ArgumentParser) -> None:
    """Let every boolean option of ``parser`` stand alone (``--recursive`` means ``--recursive true``)."""
    for action in parser._actions:
        if getattr(action, "_typehint", None) in _BOOLEAN_HINTS and action.option_strings:
            action.nargs = "?"
            action.const = True
            action.metavar = "{true,false}"


def boolean_option_names(parser: ArgumentParser) -> set[str]:
    """``recursive``, ``model.pretrained``, ...: the options :func:`allow_bare_booleans` applies to."""
    return {
        option[2:]
        for action in parser._actions
        if getattr(action, "_typehint", None) in _BOOLEAN_HINTS
        for option in action.option_strings
        if option.startswith("--")
    }


def normalize_flags(args: Iterable[str], booleans: set[str]) -> list[str]:
    """``--beam-size 3`` -> ``--beam_size 3``; ``--no-recursive`` -> ``--recursive=false`` (for a boolean)."""
    normalized = []
    for arg in args:
        if not arg.startswith("--"):
            normalized.append(arg)
            continue
        name, sep, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        if not sep and name.startswith("no_") and name[3:] in booleans:
            normalized.append(f"--{name[3:]}=false")
        else:
            normalized.append(f"--{name}{sep}{value}")
    return normalized


def check_known_options(args: Iterable[str], parser: ArgumentParser) -> None:
    """Refuse the first ``--flag`` ``parser`` does not know, in the user's spelling, with the closest
    valid option (jsonargparse would print its whole usage, in its own spelling)."""
    known = {option for action in parser._actions for option in action.option_strings if option.startswith("--")}
    groups = {o.rsplit(".", 1)[0] for o in known if "." in o and not o.endswith(".help")}  # --model: keys are options
    open_ended = {option for option in known if option not in groups}  # --trainer.logger.init_args.x is free-form
    for arg in args:
        if not arg.startswith("--"):
            continue
        typed = arg.partition("=")[0]
        flag = "--" + typed[2:].replace("-", "_").removesuffix("+")
        if flag in known or any(flag.startswith(f"{option}.") for option in open_ended):
            continue
        if flag.startswith("--no_") and f"--{flag[5:]}" in known:
            continue
        close = difflib.get_close_matches(flag, sorted(known), n=1, cutoff=0.6)
        suggestion = close[0] if "-" not in typed[2:] or not close else "--" + close[0][2:].replace("_", "-")
        raise SystemExit(f"error: unknown option {typed}" + (f": did you mean {suggestion}?" if close else ""))


def run_function(function: Callable, args: list[str], prog: str) -> Any:
    """Parse ``args`` against ``function``'s signature (its docstring is the help) and call it.

    A function with one required parameter also takes it as the first word: ``captioning report
    runs/shapes`` is ``captioning report --run_dir runs/shapes``.
    """
    required = [p.name for p in inspect.signature(function).parameters.values() if p.default is p.empty]
    if len(required) == 1 and args and not args[0].startswith("-"):
        args = [f"--{required[0]}", *args]
    parser = ArgumentParser(prog=prog, description=inspect.getdoc(function))
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML file with any of the options below.")
    parser.add_function_arguments(function, as_group=False, fail_untyped=True)
    allow_bare_booleans(parser)
    check_known_options(args, parser)
    config = parser.parse_args(normalize_flags(args, boolean_option_names(parser)))
    config.pop("config", None)
    return function(**parser.instantiate_classes(config).as_dict())


def config_files(args: list[str]) -> list[Path]:
    """The ``--config`` files among ``args`` (``--config X`` or ``--config=X``)."""
    files = []
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            files.append(Path(args[i + 1]))
        elif arg.startswith("--config="):
            files.append(Path(arg.partition("=")[2]))
    return files


def check_config_family(args: list[str], own: dict[str, set[str]], other: dict[str, set[str]], command: str) -> None:
    """Refuse a config written for the other model family, naming ``command``, the one that reads it.

    Args:
        args: The command line.
        own: Section (``model``, ``data``) -> the options this command's classes take.
        other: The same for the other family.
        command: How to run the other family, e.g. ``captioning lm fit``.
    """
    for path in config_files(args):
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue  # jsonargparse reports unreadable configs in its own words
        if not isinstance(config, dict):
            continue
        unknown = {
            (section, key)
            for section in own
            if isinstance(config.get(section), dict)
            for key in config[section]
            if key not in own[section]
        }
        if unknown and all(key in other[section] for section, key in unknown):
            raise SystemExit(f"error: {path} is a config for `{command}`: run `{command} --config {path}`")


def constructor_options(cls: type) -> set[str]:
    """The keyword arguments a class takes: what its YAML section may hold."""
    return {name for name in inspect.signature(cls.__init__).parameters if name != "self"}
