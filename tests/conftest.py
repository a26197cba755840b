"""Shared fixtures: a tiny shapes data set made once per session, offline settings for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

TINY = {"train": 96, "validation": 24, "test": 24, "novel": 15}  # odd: a 2-process sampler must pad


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from captioning.data.shapes import make_shapes

    return make_shapes(str(tmp_path_factory.mktemp("data") / "shapes"), seed=0, image_size=64, **TINY)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_data_kwargs(shapes_root: Path, cache_dir: Path) -> dict:
    """CaptionDataModule options for the tiny set: small images, single-process loading."""
    return {
        "root": str(shapes_root), "cache_dir": str(cache_dir), "image_size": 64, "spatial_grid": 2,
        "batch_size": 32, "eval_batch_size": 32, "num_workers": 0,
    }  # fmt: skip


@pytest.fixture(scope="session")
def tiny_model_kwargs() -> dict:
    """CaptioningModule options matching ``tiny_data_kwargs``, with a small decoder."""
    return {"image_size": 64, "spatial_grid": 2, "embed_dim": 32, "hidden_dim": 64, "num_layers": 2, "dropout": 0.0}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_data_kwargs: dict, tiny_model_kwargs: dict) -> Path:
    """A tiny captioner trained for a few seconds on the tiny shapes set, saved as a checkpoint."""
    import lightning as L
    from quiet_trainer import quiet_trainer

    from captioning.data.captions import CaptionDataModule
    from captioning.lit.captioner import CaptioningModule

    L.seed_everything(0)
    data = CaptionDataModule(**tiny_data_kwargs)
    model = CaptioningModule(vocab_tokens=data.vocab_tokens, **tiny_model_kwargs)
    folder = tmp_path_factory.mktemp("checkpoint")
    trainer = quiet_trainer(folder, max_epochs=6, limit_val_batches=0)
    trainer.fit(model, data)
    trainer.save_checkpoint(folder / "tiny.ckpt")
    return folder / "tiny.ckpt"


@pytest.fixture()
def one_thread():
    """Tiny recurrent nets run hundreds of short parallel regions; on shared cores two threads
    make each wait for the other (200x slower measured here), one thread does not."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _finish_wandb_runs():
    """A command run in-process leaves its W&B run open (a process exit closes it): close it so the
    next test's logger starts its own run instead of reusing this one."""
    yield
    import wandb

    if wandb.run is not None:
        wandb.finish()
