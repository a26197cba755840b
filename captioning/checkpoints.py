"""Reading checkpoints safely, with errors that say which file is wrong and what to use instead.

Every checkpoint is read with ``torch.load(weights_only=True)``: only tensors and plain values
are unpickled, so a checkpoint from elsewhere cannot run code. The two model families are told
apart by a hyperparameter only one of them has.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Literal

import torch

Kind = Literal["captioner", "language model"]

_KINDS: dict[str, tuple[str, str, str]] = {
    # kind: (hyperparameter only it has, command that trains one, command that uses one)
    "captioner": ("backbone", "captioning fit --config configs/shapes.yaml", "captioning caption / evaluate"),
    "language model": ("level", "captioning lm fit --config configs/lm.yaml", "captioning generate"),
}


def read_checkpoint(path: str | Path, kind: Kind, mmap: bool = False) -> dict:
    """The checkpoint at ``path`` as a dict on the CPU, after checking that it is a ``kind`` checkpoint.

    Always read to the CPU (the caller moves the model), so a failure here is about the file, never
    about a device. ``mmap=True`` maps the tensors instead of reading them: cheap when only the
    hyperparameters are wanted.

    Raises:
        FileNotFoundError: nothing (or a folder) at ``path``; says how to train one.
        ValueError: not a checkpoint, or one of the other model family; says which command takes it.
    """
    path = Path(path)
    key, train, _ = _KINDS[kind]
    if not path.is_file():
        what = "is a folder, not a .ckpt file" if path.is_dir() else "not found"
        raise FileNotFoundError(f"checkpoint {path} {what}: train a {kind} with `{train}`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise ValueError(f"{path} is not a readable checkpoint ({type(error).__name__}: {str(error)[:200]})") from error
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} holds no model hyperparameters and weights: use a .ckpt written by `{train}`")
    if key not in hparams:
        others = [other for other, (other_key, _, _) in _KINDS.items() if other_key in hparams]
        use = (
            f"it is a {others[0]} checkpoint, for `{_KINDS[others[0]][2]}`"
            if others
            else "it was not written by this project"
        )
        raise ValueError(f"{path} is not a {kind} checkpoint: {use}")
    return checkpoint
