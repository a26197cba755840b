"""docker-compose.yml and the Dockerfile, checked as files (no Docker engine runs here)."""

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from jsonargparse import ArgumentParser

from captioning.cli import main
from captioning.cli_options import allow_bare_booleans, boolean_option_names, normalize_flags

ROOT = Path(__file__).parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _mounts(service: dict) -> dict[str, str]:
    """container path -> host path of a service's bind mounts and volumes."""
    mounts = {}
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        if parts[-1] in ("ro", "rw"):
            parts = parts[:-1]
        mounts[parts[-1]] = ":".join(parts[:-1])  # the host side may hold ${VAR:-default}
    return mounts


def test_services_and_gpus():
    assert set(SERVICES) == {"wandb", "train", "caption"}
    assert SERVICES["wandb"]["image"].startswith("wandb/local")
    assert "8080:8080" in SERVICES["wandb"]["ports"]
    wandb_volume = _mounts(SERVICES["wandb"])["/vol"]
    assert wandb_volume in COMPOSE["volumes"]  # a named volume: the server's data outlives the container
    for name in ("train", "caption"):
        (gpus,) = SERVICES[name]["deploy"]["resources"]["reservations"]["devices"]
        assert gpus["count"] == "all" and "gpu" in gpus["capabilities"]


def test_train_command_is_a_valid_fit_with_ddp(capsys):
    command = SERVICES["train"]["command"]
    assert command[0] == "fit"
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["trainer"]["strategy"] == "ddp" and str(config["trainer"]["devices"]) == "-1"
    # data and checkpoints land in the mounted host folders
    work = Path(SERVICES["train"]["working_dir"])
    mounts = _mounts(SERVICES["train"])
    assert mounts[str(work / "data")] == "./data" and mounts[str(work / "runs")] == "./runs"
    assert Path(config["data"]["root"]).parts[0] == "data"
    assert config["trainer"]["default_root_dir"] == "runs"  # runs/<run_name>/version_<N>/ (captioning.project_cli)


def test_train_reports_to_the_wandb_service():
    env = SERVICES["train"]["environment"]
    url = urlparse(env["WANDB_BASE_URL"])
    assert url.hostname == "wandb" and "wandb" in SERVICES["train"]["depends_on"]
    assert f"{url.port}:{url.port}" in SERVICES["wandb"]["ports"]
    assert env["WANDB_MODE"] == "online"


def test_caption_command_is_accepted_by_the_cli():
    from captioning.caption import caption

    command = SERVICES["caption"]["command"]
    assert command[0] == "caption"
    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(caption)
    allow_bare_booleans(parser)
    options = parser.parse_args(normalize_flags(command[1:], boolean_option_names(parser)))
    work = Path(SERVICES["caption"]["working_dir"])
    mounts = _mounts(SERVICES["caption"])
    assert options.input in mounts  # the photo folder is mounted
    assert str(work / Path(options.checkpoint).parts[0]) in mounts  # the trained checkpoint is visible
    train_config = next(a for a in SERVICES["train"]["command"] if a.startswith("--config")).split("=")[1]
    shapes = yaml.safe_load((ROOT / train_config).read_text())
    newest = f"{shapes['trainer']['default_root_dir']}/{shapes['run_name']}/latest"
    assert options.checkpoint == f"{newest}/checkpoints/best.ckpt"  # what the train service writes
    assert options.recursive is True


def test_dockerfile_installs_the_same_pinned_stack_as_the_makefile():
    dockerfile = (ROOT / "Dockerfile").read_text()
    pins = re.search(r"TORCH_PINS := (.+)", (ROOT / "Makefile").read_text()).group(1).split()
    assert all(pin in dockerfile for pin in pins)
    assert 'ENTRYPOINT ["captioning"]' in dockerfile
    for folder in ("captioning", "configs"):
        assert f"COPY {folder} ./{folder}" in dockerfile
