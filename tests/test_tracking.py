"""W&B offline by default, its files agree with the CSV log, and the local HTML report."""

import csv
import time
from pathlib import Path

import pytest
import wandb

from captioning.cli import main
from captioning.lit.tracking import resolve_wandb_mode

from wandb_records import history_rows, read_records, summary

SHAPES = Path(__file__).parents[1] / "configs" / "shapes.yaml"


@pytest.fixture()
def no_wandb_account(tmp_path, monkeypatch):
    """No mode, no key, no login (empty HOME), and a network that refuses at once."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")


def test_mode_resolution(no_wandb_account, monkeypatch):
    assert resolve_wandb_mode(None) == "offline"
    assert resolve_wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_wandb_mode(None) == "online"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode(None) == "online"
    with pytest.raises(ValueError, match="WANDB_MODE"):
        resolve_wandb_mode("sometimes")


def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_default_logger_runs_offline_and_agrees_with_the_csv_log(
    no_wandb_account, tmp_path, monkeypatch, tiny_data_kwargs, tiny_model_kwargs
):
    monkeypatch.chdir(tmp_path)
    args = [f"--data.{k}={v}" for k, v in tiny_data_kwargs.items() if k not in ("image_size", "spatial_grid")]
    args += [f"--model.{k}={v}" for k, v in tiny_model_kwargs.items()]
    start = time.monotonic()
    main(["fit", "--config", str(SHAPES), *args, "--trainer.max_epochs=2", "--trainer.log_every_n_steps=1",
          "--trainer.enable_progress_bar=false"])  # fmt: skip
    wandb.finish()  # the command line's process exit does this; in-process we flush the run ourselves
    assert time.monotonic() - start < 240  # never waited on the network

    run = tmp_path / "runs" / "shapes" / "version_0"
    (wandb_file,) = run.glob("wandb/offline-run-*/run-*.wandb")
    rows = _csv_rows(run / "csv" / "metrics.csv")
    val_rows = [r for r in rows if r.get("val/bleu4")]
    assert len(val_rows) == 2

    assert summary(wandb_file)["val/bleu4"] == pytest.approx(float(val_rows[-1]["val/bleu4"]))
    history = history_rows(wandb_file)
    logged = [h for h in history if "val/bleu4" in h]
    assert [h["trainer/global_step"] for h in logged] == [int(r["step"]) for r in val_rows]
    assert [h["val/bleu4"] for h in logged] == pytest.approx([float(r["val/bleu4"]) for r in val_rows])
    train_steps = sorted({int(r["step"]) for r in rows if r.get("train/loss")})
    assert train_steps == sorted({h["trainer/global_step"] for h in history if "train/loss" in h})
    assert any("train/grad_norm" in h for h in history) and any("train/images_per_s" in h for h in history)
    assert any(h.get("val/samples/_type") == "table-file" for h in history)  # the wandb.Table of samples
    configs = [r.config for r in read_records(wandb_file) if r.HasField("config")]
    assert any(item.key == "config" for c in configs for item in c.update)  # the resolved config

    report = (run / "report.html").read_text()
    assert report.count('src="data:image/png;base64,') >= 3  # loss, BLEU, gradient norm (+ lr)
    assert report.count("<figure>") >= 8 and "data:image/jpeg;base64," in report  # the gallery
    assert 'src="http' not in report and "<script" not in report  # opens without network


def test_report_command_names_a_wrong_folder(tmp_path, capsys):
    with pytest.raises(SystemExit, match="metrics.csv not found: RUN_DIR must be a run folder"):
        main(["report", "--run_dir", str(tmp_path)])
