"""docker-compose.yml and the Dockerfile, checked as files (no Docker engine runs here)."""

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from jsonargparse import ArgumentParser

from captioning.cli import main

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
    checkpoint = next(c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint"))
    assert Path(checkpoint["init_args"]["dirpath"]).parts[0] == "runs"


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
    options = parser.parse_args(command[1:])
    work = Path(SERVICES["caption"]["working_dir"])
    mounts = _mounts(SERVICES["caption"])
    assert options.input in mounts  # the photo folder is mounted
    assert str(work / Path(options.checkpoint).parts[0]) in mounts  # the trained checkpoint is visible
    train_checkpoints = next(a for a in SERVICES["train"]["command"] if a.startswith("--config")).split("=")[1]
    shapes = yaml.safe_load((ROOT / train_checkpoints).read_text())
    dirpath = next(c for c in shapes["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint"))[
        "init_args"
    ]["dirpath"]
    assert options.checkpoint == f"{dirpath}/best.ckpt"  # what the train service writes


def test_dockerfile_installs_the_same_pinned_stack_as_the_makefile():
    dockerfile = (ROOT / "Dockerfile").read_text()
    pins = re.search(r"TORCH_PINS := (.+)", (ROOT / "Makefile").read_text()).group(1).split()
    assert all(pin in dockerfile for pin in pins)
    assert 'ENTRYPOINT ["captioning"]' in dockerfile
    for folder in ("captioning", "configs"):
        assert f"COPY {folder} ./{folder}" in dockerfile
