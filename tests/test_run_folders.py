"""Every run in its own folder: a new fit never touches an earlier run; resume, validate and test
append to the run they belong to; the CLI conventions users expect (bare booleans, logger off)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from captioning.cli import main
from captioning.lit.checkpoint_io import AtomicCheckpointIO
from captioning.report import read_metrics
from captioning.run_folders import create_run, job_run, newest_resumable, point_latest, run_of_checkpoint

CONFIGS = Path(__file__).parents[1] / "configs"


def _tiny(data_kwargs: dict, model_kwargs: dict) -> list[str]:
    """configs/shapes.yaml on the tiny set, 2 training steps and 1 validation batch per epoch."""
    args = ["fit", "--config", str(CONFIGS / "shapes.yaml")]
    args += [f"--data.{k}={v}" for k, v in data_kwargs.items() if k not in ("image_size", "spatial_grid")]
    args += [f"--model.{k}={v}" for k, v in model_kwargs.items()]
    return [*args, "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]  # fmt: skip


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture()
def fit(tmp_path, monkeypatch, tiny_data_kwargs, tiny_model_kwargs):
    """``captioning fit`` (or ``subcommand``) on the tiny set, run from ``tmp_path/work``."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    def run(*extra: str, subcommand: str = "fit") -> None:
        args = _tiny(tiny_data_kwargs, tiny_model_kwargs)
        if subcommand != "fit":
            args = [subcommand, *(a for a in args[1:] if not a.startswith("--trainer.limit_train_batches"))]
        main([*args, *extra])

    return run


@pytest.mark.slow
def test_a_second_fit_of_one_config_leaves_the_first_run_byte_identical(fit, tmp_path):
    fit()
    first = tmp_path / "work" / "runs" / "shapes" / "version_0"
    before = _digests(first)
    assert {"run.json", "config.yaml", "report.html", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
            "csv/metrics.csv", "samples/epoch_000.jsonl"} <= set(before)  # fmt: skip
    assert any(name.startswith("wandb/offline-run-") for name in before)
    saved = (first / "config.yaml").read_text()
    assert "version_0" not in saved and "default_root_dir: runs\n" in saved  # rerunnable: names no run's paths
    fit("--model.lr=0.5")  # a worse model: it must not replace the first run's best.ckpt
    assert _digests(first) == before
    latest = tmp_path / "work" / "runs" / "shapes" / "latest"
    assert latest.is_symlink() and latest.resolve() == first.parent.resolve() / "version_1"
    assert (latest / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.slow
def test_resume_appends_to_the_newest_run_and_test_to_the_run_of_its_checkpoint(fit, tmp_path, monkeypatch):
    fit()
    fit()
    runs = tmp_path / "work" / "runs" / "shapes"
    older = _digests(runs / "version_0")
    first_part = torch.load(runs / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    fit("--trainer.max_epochs=2", "--ckpt_path=last")
    assert sorted(p.name for p in runs.iterdir()) == ["latest", "version_0", "version_1"]  # no new version
    resumed = torch.load(runs / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (first_part["epoch"], resumed["epoch"]) == (0, 1)
    assert resumed["global_step"] == 2 * first_part["global_step"]
    metrics = read_metrics(runs / "version_1" / "csv" / "metrics.csv")
    assert [epoch for _, epoch, _ in metrics["val/bleu4"]] == [0, 1]  # both parts in one log

    test = ["--trainer.limit_test_batches=1", f"--ckpt_path={runs / 'version_0' / 'checkpoints' / 'best.ckpt'}"]
    fit(*test, subcommand="test")
    fit(*test[1:], "--trainer.limit_val_batches=1", subcommand="validate")
    assert sorted(p.name for p in runs.iterdir()) == ["latest", "version_0", "version_1"]
    older_now = _digests(runs / "version_0")
    changed = {name for name in older_now if older.get(name) != older_now[name]}
    assert changed and all(n == "csv/metrics.csv" or n.startswith(("config.", "wandb/")) for n in changed)
    assert older["config.yaml"] == older_now["config.yaml"]
    assert older["samples/epoch_000.jsonl"] == older_now["samples/epoch_000.jsonl"]  # validate has no epoch to write
    metrics = read_metrics(runs / "version_0" / "csv" / "metrics.csv")
    assert len(metrics["test/bleu4"]) == 1 and len(metrics["val/bleu4"]) == 2


@pytest.mark.slow
def test_default_root_dir_moves_everything(fit, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    fit(f"--trainer.default_root_dir={elsewhere}")
    assert list((tmp_path / "work").iterdir()) == []
    run = elsewhere / "shapes" / "version_0"
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "csv" / "metrics.csv").is_file()
    assert list(run.glob("wandb/offline-run-*"))


@pytest.mark.slow
def test_logger_false_trains_and_checkpoints(fit, tmp_path, capsys):
    fit("--trainer.logger=false")
    run = tmp_path / "work" / "runs" / "shapes" / "version_0"
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    printed = capsys.readouterr().out
    assert "--trainer.logger false: LearningRateMonitor is not used" in printed
    assert "no report" in printed and not (run / "report.html").exists()


@pytest.mark.slow
def test_runs_in_the_old_layout_are_left_as_they_are(fit, tmp_path, tiny_checkpoint, shapes_root):
    old = tmp_path / "work" / "runs" / "shapes"
    (old / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, old / "checkpoints" / "best.ckpt")
    (old / "csv").mkdir()
    (old / "csv" / "metrics.csv").write_text("epoch,step,val/bleu4\n0,10,0.5\n")
    before = _digests(old)
    fit()
    assert {k: v for k, v in _digests(old).items() if not k.startswith("version_")} == before
    output = tmp_path / "captions.jsonl"
    main(["caption", "--checkpoint", str(old / "checkpoints" / "best.ckpt"), "--input", str(shapes_root / "novel"),
          "--output", str(output), "--progress=false"])  # fmt: skip
    assert len(output.read_text().splitlines()) == len(list((shapes_root / "novel").glob("*.png")))


@pytest.mark.slow
def test_a_mistyped_checkpoint_creates_no_run(fit, tmp_path):
    with pytest.raises(SystemExit, match="no such checkpoint file"):
        fit("--ckpt_path=runs/shapes/version_0/checkpoints/lst.ckpt")
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.slow
def test_a_disk_too_small_for_one_checkpoint_is_refused_before_training(fit, tmp_path, monkeypatch):
    import captioning.project_cli

    monkeypatch.setattr(captioning.project_cli.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 1024))
    with pytest.raises(
        SystemExit, match=r"MiB free, a checkpoint of this model needs about .* --trainer.default_root_dir"
    ):
        fit()
    assert not list((tmp_path / "work").glob("runs/shapes/version_0/checkpoints/*"))


def test_a_failed_checkpoint_write_leaves_the_previous_one(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise OSError(28, "No space left on device")

    path = tmp_path / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"epoch": 1, "weights": torch.ones(1000)}, path)
    before = path.read_bytes()
    with pytest.raises(OSError, match="No space left"):
        writer.save_checkpoint({"epoch": 2, "weights": torch.zeros(1000), "x": Unpicklable()}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_versions_resume_and_latest(tmp_path):
    first, second = create_run(tmp_path, "x"), create_run(tmp_path, "x")
    assert (first.path.name, second.path.name) == ("version_0", "version_1")
    assert newest_resumable(tmp_path, "x") is None  # neither has a last.ckpt
    first.checkpoints.mkdir()
    first.last_checkpoint.write_bytes(b"")
    assert newest_resumable(tmp_path, "x") is None  # the newest was interrupted before its first checkpoint
    second.checkpoints.mkdir()
    second.last_checkpoint.write_bytes(b"")
    assert newest_resumable(tmp_path, "x") == second
    assert run_of_checkpoint(first.last_checkpoint) == first and run_of_checkpoint(tmp_path / "a" / "b.ckpt") is None
    link = point_latest(second)
    assert link.resolve() == second.path.resolve() and os.readlink(link) == "version_1"  # relative: runs/ can move
    assert newest_resumable(tmp_path, "x") == second  # the link is not a run of its own
    (tmp_path / "y" / "latest").mkdir(parents=True)  # the user's own folder of that name
    assert point_latest(create_run(tmp_path, "y")) is None and (tmp_path / "y" / "latest").is_dir()


def test_a_config_of_the_other_family_names_the_right_command():
    with pytest.raises(SystemExit, match=r"lm\.yaml is a config for `captioning lm fit`"):
        main(["fit", "--config", str(CONFIGS / "lm.yaml")])
    with pytest.raises(SystemExit, match=r"shapes\.yaml is a config for `captioning fit`"):
        main(["lm", "fit", "--config", str(CONFIGS / "shapes.yaml")])


def test_ctrl_c_in_a_fit_says_how_to_go_on(tmp_path, tiny_data_kwargs, tiny_model_kwargs, capsys):
    import lightning as L
    from quiet_trainer import quiet_trainer

    from captioning.data.captions import CaptionDataModule
    from captioning.lit.captioner import CaptioningModule
    from captioning.project_cli import RunFolderCallback

    class CtrlC(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            raise KeyboardInterrupt

    run = create_run(tmp_path, "x")
    data = CaptionDataModule(**tiny_data_kwargs)
    model = CaptioningModule(vocab_tokens=data.vocab_tokens, **tiny_model_kwargs)
    trainer = quiet_trainer(run.path, max_epochs=1, callbacks=[RunFolderCallback(run), CtrlC()])
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown
        trainer.fit(model, data)
    assert f"interrupted: {run.path} has no checkpoint yet" in capsys.readouterr().out
    assert os.readlink(tmp_path / "x" / "latest") == "version_0"  # it had started training


def test_processes_of_an_external_launcher_share_their_jobs_folder(tmp_path, monkeypatch):
    from captioning.project_cli import _external_job_id

    for var in ("GROUP_RANK", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_STEP_ID", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    assert _external_job_id() is None
    monkeypatch.setenv("GROUP_RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default --rdzv-id: every job has it
    assert _external_job_id() is None
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    assert _external_job_id() == "abc"
    run, existed = job_run(tmp_path, "x", "abc")
    assert not existed and job_run(tmp_path, "x", "abc") == (run, True)  # the other processes, a requeue: the same run
