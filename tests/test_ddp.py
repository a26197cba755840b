"""Real Lightning DDP on 2 CPU processes (gloo), run as a user runs it: the ``captioning`` command."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from captioning.data.captions import CaptionDataModule

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.slow


def _run(cwd: Path, *args: str, env: dict) -> None:
    command = [sys.executable, "-m", "captioning.cli", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _metrics(run: Path, prefix: str) -> list[dict[str, float]]:
    """Each logged row of ``prefix/*`` scores in the run's CSV log, in order."""
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(f"{prefix}/bleu4")]
    return [{k: float(v) for k, v in row.items() if k.startswith(prefix) and v} for row in rows]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, tiny_data_kwargs, tiny_model_kwargs):
    """fit + test on 2 processes, then test and resume on 1 process, from the same checkpoints."""
    base = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT / "tests"), "SHARD_DIR": str(base)}
    common = ["--config", str(ROOT / "configs" / "shapes.yaml"), "--config", str(ROOT / "configs" / "ddp.yaml")]
    common += [f"--data.{k}={v}" for k, v in tiny_data_kwargs.items() if k not in ("image_size", "spatial_grid")]
    common += [f"--model.{k}={v}" for k, v in tiny_model_kwargs.items()]
    common += ["--data.test_split=novel", "--trainer.accelerator=cpu", "--trainer.precision=32-true",
               "--trainer.enable_progress_bar=false", "--trainer.callbacks+=ddp_probe.RecordShards"]  # fmt: skip
    two, one = base / "two", base / "one"
    two.mkdir()
    one.mkdir()
    _run(two, "fit", *common, "--trainer.devices=2", "--trainer.max_epochs=2", env=env)
    run = two / "runs" / "shapes" / "version_0"
    checkpoints = run / "checkpoints"
    _run(two, "test", *common, "--trainer.devices=2", f"--ckpt_path={checkpoints / 'best.ckpt'}", env=env)
    _run(one, "test", *common, "--trainer.devices=1", f"--ckpt_path={checkpoints / 'best.ckpt'}", env=env)
    return {"base": base, "two": two, "one": one, "run": run, "checkpoints": checkpoints, "common": common, "env": env}


def test_every_process_works_in_the_run_folder_of_the_first(ddp_runs):
    assert sorted(p.name for p in (ddp_runs["two"] / "runs" / "shapes").iterdir()) == ["latest", "version_0"]
    assert not (ddp_runs["one"] / "runs").exists()  # the tests of its checkpoint went to the run it came from


def test_test_bleu_from_two_processes_equals_one_process(ddp_runs, shapes_root):
    two, one = _metrics(ddp_runs["run"], "test")  # both tests appended to the run of the checkpoint
    novel = len((shapes_root / "novel" / "metadata.jsonl").read_text().splitlines())
    assert two["test/count"] == one["test/count"] == novel  # every image once, padding duplicates dropped
    for order in range(1, 5):
        assert two[f"test/bleu{order}"] == one[f"test/bleu{order}"]


def test_training_shards_are_disjoint_cover_the_epoch_and_reshuffle(ddp_runs, tiny_data_kwargs):
    data = CaptionDataModule(**tiny_data_kwargs)
    data.setup("fit")
    pairs = data.train_dataloader().dataset
    expected = Counter((image, tuple(pairs.captions[image][caption])) for image, caption in pairs.pairs)
    shards = {}
    for rank in (0, 1):
        rows = [json.loads(line) for line in (ddp_runs["base"] / f"rank{rank}.jsonl").read_text().splitlines()]
        shards[rank] = {epoch: [(i, tuple(t)) for e, i, t in rows if e == epoch] for epoch in (0, 1)}
    for epoch in (0, 1):
        a, b = Counter(shards[0][epoch]), Counter(shards[1][epoch])
        assert not set(a) & set(b)  # disjoint
        assert a + b == expected  # together: every pair of the epoch, once
    assert shards[0][0] != shards[0][1]  # a new order (and shard) every epoch


def test_feature_cache_was_built_once(ddp_runs, cache_dir):
    files = [p.name for p in Path(cache_dir).glob("*.pt")]
    assert not [p for p in Path(cache_dir).glob("*.partial")]
    assert len([f for f in files if "-train-" in f and "g2" in f]) == 1


def test_checkpoint_from_two_processes_resumes_on_one(ddp_runs):
    checkpoints = ddp_runs["checkpoints"]
    import torch

    before = torch.load(checkpoints / "last.ckpt", weights_only=True)
    _run(ddp_runs["two"], "fit", *ddp_runs["common"], "--trainer.devices=1", "--trainer.max_epochs=3",
         "--ckpt_path=last", env=ddp_runs["env"])  # fmt: skip
    after = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert (before["epoch"], after["epoch"]) == (1, 2)
    pairs, batch = 96 * 4, 32  # the tiny training split, data.batch_size
    assert before["global_step"] == 2 * pairs // (2 * batch)  # two epochs, each process half the pairs
    assert after["global_step"] == before["global_step"] + pairs // batch  # one more epoch, one process


def test_language_model_fit_starts_its_second_process_through_the_command(tmp_path):
    """``captioning lm fit`` on 2 processes, through the installed console script the way a user types it."""
    script = Path(sys.executable).parent / "captioning"
    command = [str(script), "lm", "fit", "--config", str(ROOT / "configs" / "lm.yaml"), "--trainer.accelerator=cpu",
               "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_epochs=1",
               "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
               "--data.max_chars=20000", "--model.embed_dim=8", "--model.hidden_dim=16", "--model.sample_tokens=5"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = tmp_path / "runs" / "lm"
    assert sorted(p.name for p in runs.iterdir()) == ["latest", "version_0"]  # one run for both processes
    import torch

    last = torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2
