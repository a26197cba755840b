"""Shared fixtures: a tiny shapes data set made once per session, offline settings for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

TINY = {"train": 96, "validation": 24, "test": 24, "novel": 16}


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
