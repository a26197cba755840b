"""Loading the wrong file as a checkpoint says what the file is and which command takes it."""

from __future__ import annotations

import pytest
import torch

from captioning.checkpoints import read_checkpoint
from captioning.lit.captioner import load_captioner
from captioning.lit.language_model import load_language_model


def test_each_family_refuses_the_other_and_names_the_right_command(tiny_checkpoint, tmp_path):
    with pytest.raises(
        ValueError, match="is not a language model checkpoint: it is a captioner checkpoint, for `captioning caption"
    ):
        load_language_model(tiny_checkpoint)
    language_model = tmp_path / "lm.ckpt"
    torch.save({"hyper_parameters": {"level": "char", "vocab_tokens": ["<pad>"]}, "state_dict": {}}, language_model)
    with pytest.raises(
        ValueError, match="is not a captioner checkpoint: it is a language model checkpoint, for `captioning generate`"
    ):
        load_captioner(language_model)
    assert read_checkpoint(tiny_checkpoint, "captioner", mmap=True)["hyper_parameters"]["backbone"] == "mobilenet_v2"


def test_missing_folder_and_garbage_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.ckpt not found: train a captioner with `captioning fit"):
        load_captioner(tmp_path / "nowhere.ckpt")
    with pytest.raises(FileNotFoundError, match="is a folder, not a .ckpt file"):
        load_captioner(tmp_path)
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.ckpt is not a readable checkpoint"):
        load_language_model(tmp_path / "notes.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="plain.pt holds no model hyperparameters"):
        load_captioner(tmp_path / "plain.pt")
