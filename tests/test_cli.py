"""The ``captioning`` command as a user runs it: every config parses, fit/test/resume work end to end."""

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from captioning.cli import main
from captioning.cli_options import run_function
from captioning.lit.captioner import CaptioningModule
from captioning.report import read_metrics

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def _tiny_overrides(data_kwargs: dict, model_kwargs: dict) -> list[str]:
    args = [f"--data.{k}={v}" for k, v in data_kwargs.items() if k not in ("image_size", "spatial_grid")]
    args += [f"--model.{k}={v}" for k, v in model_kwargs.items()]
    return [*args, "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _fit_command(config: Path) -> list[str]:
    """How a user runs each config: LM configs under ``captioning lm``, ddp.yaml on top of a data set's."""
    if config.name.startswith("lm"):
        return ["lm", "fit", "--config", str(config)]
    if config.name == "ddp.yaml":
        return ["fit", "--config", str(config.parent / "shapes.yaml"), "--config", str(config)]
    return ["fit", "--config", str(config)]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*_fit_command(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["gradient_clip_val"] > 0
    assert printed["seed_everything"] is not None


@pytest.mark.slow
def test_fit_test_and_resume_from_last(tmp_path, monkeypatch, tiny_data_kwargs, tiny_model_kwargs):
    monkeypatch.chdir(tmp_path)
    common = ["--config", str(CONFIGS[0].parent / "shapes.yaml"), *_tiny_overrides(tiny_data_kwargs, tiny_model_kwargs)]
    main(["fit", *common, "--trainer.max_epochs=1"])
    run = tmp_path / "runs" / "shapes" / "version_0"
    checkpoints = run / "checkpoints"
    assert (checkpoints / "best.ckpt").is_file() and (checkpoints / "last.ckpt").is_file()
    first = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert first["epoch"] == 0

    steps_run = []
    step = CaptioningModule.training_step
    monkeypatch.setattr(
        CaptioningModule, "training_step", lambda self, batch, i: steps_run.append(i) or step(self, batch, i)
    )
    main(["fit", *common, "--trainer.max_epochs=2", "--ckpt_path=last"])
    resumed = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1
    assert resumed["global_step"] == 2 * first["global_step"]
    assert len(steps_run) == first["global_step"]  # only the second epoch ran: it went on from where it stopped

    main(["test", *common, f"--ckpt_path={checkpoints / 'best.ckpt'}"])
    # One log for the run: the resumed epoch and the test scores were appended, nothing was lost.
    metrics = read_metrics(run / "csv" / "metrics.csv")
    assert [epoch for _, epoch, _ in metrics["val/bleu4"]] == [0, 1]
    assert len(metrics["test/bleu4"]) == 1
    assert sorted(p.name for p in run.glob("config*.yaml")) == [
        "config.fit-1.yaml",
        "config.test-1.yaml",
        "config.yaml",
    ]
    assert "continue_log: true" not in (run / "config.yaml").read_text()
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_000.jsonl", "epoch_001.jsonl"]

    # `--ckpt_path last` with no run to go on from starts a new one (as Lightning starts afresh).
    shutil.rmtree(checkpoints)
    main(["fit", *common, "--trainer.max_epochs=1", "--ckpt_path=last"])
    metrics = read_metrics(tmp_path / "runs" / "shapes" / "version_1" / "csv" / "metrics.csv")
    assert [epoch for _, epoch, _ in metrics["val/bleu4"]] == [0] and "test/bleu4" not in metrics


def test_subcommand_flags_take_dashes_or_underscores(tmp_path):
    sizes = ["--train=2", "--validation", "1", "--test", "1", "--novel", "1"]
    for folder, flag in (("a", "--image-size"), ("b", "--image_size")):
        main(["make-shapes", "--out", str(tmp_path / folder), *sizes, flag, "32"])
    first, second = (tmp_path / folder / "train" / "00000.png" for folder in ("a", "b"))
    assert Image.open(first).size == (32, 32)
    assert first.read_bytes() == second.read_bytes()


def _options(recursive: bool = False, limit: int | None = None) -> dict:
    """A command with a boolean and an integer option.

    Args:
        recursive: A boolean.
        limit: An integer.
    """
    return {"recursive": recursive, "limit": limit}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], (False, None)), (["--recursive"], (True, None)), (["--recursive", "true"], (True, None)),
     (["--recursive=false"], (False, None)), (["--no-recursive"], (False, None)),
     (["--recursive", "--limit", "3"], (True, 3)), (["--limit=3", "--recursive"], (True, 3))],
)  # fmt: skip
def test_booleans_work_bare_and_with_a_value(flags, expected):
    assert tuple(run_function(_options, flags, prog="captioning x").values()) == expected


@pytest.mark.slow
def test_caption_recursive_bare_reads_subfolders(tiny_checkpoint, shapes_root, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(shapes_root / "novel", photos / "holiday")
    output = tmp_path / "c.jsonl"
    command = ["caption", "--checkpoint", str(tiny_checkpoint), "--input", str(photos), "--output", str(output)]
    with pytest.raises(SystemExit, match="its subfolders have some: add --recursive"):
        main(command)
    main([*command, "--recursive", "--progress", "false"])
    assert len(output.read_text().splitlines()) == len(list((photos / "holiday").glob("*.png")))


def test_help_shows_booleans_take_an_optional_value(capsys):
    with pytest.raises(SystemExit):
        main(["caption", "--help"])
    assert "--recursive [{true,false}]" in capsys.readouterr().out


def test_report_takes_the_run_folder_as_its_first_word(tmp_path):
    with pytest.raises(SystemExit, match="metrics.csv not found: RUN_DIR must be a run folder"):
        main(["report", str(tmp_path)])


def test_bad_input_prints_one_error_line_and_traceback_on_request(tmp_path, capsys):
    command = [
        "caption",
        "--checkpoint",
        str(tmp_path / "none.ckpt"),
        "--input",
        str(tmp_path),
        "--output",
        str(tmp_path / "c.jsonl"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert str(exit_info.value.code).startswith(
        f"error: checkpoint {tmp_path / 'none.ckpt'} not found: train a captioner"
    )
    with pytest.raises(FileNotFoundError):
        main([*command, "--traceback"])
    with pytest.raises(SystemExit) as exit_info:
        main(["predict"])  # folders of images are `captioning caption`
    assert "unknown subcommand 'predict'" in exit_info.value.code
    with pytest.raises(SystemExit) as exit_info:
        main(["captoin"])
    assert "unknown subcommand 'captoin'" in exit_info.value.code and "caption," in exit_info.value.code


@pytest.mark.parametrize(
    ("command", "message"),
    [(["fit", "--model.hiden_dim", "3"], "unknown option --model.hiden_dim: did you mean --model.hidden_dim?"),
     (["lm", "fit", "--model.hiden_dim=3"], "unknown option --model.hiden_dim: did you mean --model.hidden_dim?"),
     (["caption", "--beam-sise", "3"], "unknown option --beam-sise: did you mean --beam-size?")],
)  # fmt: skip
def test_a_mistyped_option_is_named_with_the_closest_valid_one(command, message, capsys):
    with pytest.raises(SystemExit, match=message.replace("?", r"\?")):
        main(command)
    assert "usage:" not in capsys.readouterr().err


def test_lightning_options_take_dashes_too(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS[0].parent / "shapes.yaml"), "--data.batch-size", "3", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["data"]["batch_size"] == 3
