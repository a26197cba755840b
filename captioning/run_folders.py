"""One folder per training run: ``<root>/<name>/version_<N>/``, and a ``latest`` link to the newest.

A run folder holds everything its run writes (checkpoints, CSV log, W&B files, saved config,
report, caption samples), so a new ``fit`` never touches a file of an earlier run. The layout
follows Lightning's own ``version_<N>`` convention; ``run.json`` in each folder marks it as one
this project made, which is what lets a later command append to it (``--ckpt_path last``,
``validate`` / ``test`` of its checkpoint) and lets ``latest`` be moved without guessing.

No Lightning here: the CLIs decide which folder a command uses, the loggers and callbacks are
then pointed at it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from captioning.files import write_text_atomic

MARKER = "run.json"
LATEST = "latest"
_VERSION = re.compile(r"version_(\d+)")


@dataclass(frozen=True)
class RunFolder:
    """A run's folder and the paths inside it that every part of the pipeline agrees on."""

    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def metrics(self) -> Path:
        """The CSV log the HTML report is drawn from."""
        return self.path / "csv" / "metrics.csv"


def create_run(root: str | os.PathLike, name: str) -> RunFolder:
    """Make the next ``version_<N>`` under ``root/name``; two runs started at once get two folders."""
    parent = Path(root, name)
    parent.mkdir(parents=True, exist_ok=True)
    number = max(_versions(parent), default=-1) + 1
    while True:
        path = parent / f"version_{number}"
        try:
            path.mkdir()  # exclusive: whoever creates it owns it
            break
        except FileExistsError:
            number += 1
    _write_marker(path, name)
    return RunFolder(path)


def job_run(root: str | os.PathLike, name: str, job_id: str) -> tuple[RunFolder, bool]:
    """The run folder ``job_<id>`` of a job whose processes an external launcher started (torchrun,
    SLURM): every process derives the same folder from the job's id, none has to tell the others.
    Also says whether the folder was there already (a requeued job goes on with its own run)."""
    path = Path(root, name, f"job_{job_id}")
    existed = (path / MARKER).is_file()
    path.mkdir(parents=True, exist_ok=True)
    if not existed:
        _write_marker(path, name)
    return RunFolder(path), existed


def newest_resumable(root: str | os.PathLike, name: str) -> RunFolder | None:
    """The newest run of ``root/name``, when it has a ``last.ckpt`` to go on from (``--ckpt_path last``).

    Only the newest: a run interrupted before its first checkpoint must not send ``last`` back to
    an earlier, finished run, whose checkpoints a longer schedule would then replace.
    """
    parent = Path(root, name)
    runs = (
        [RunFolder(p) for p in parent.iterdir() if not p.is_symlink() and (p / MARKER).is_file()]
        if parent.is_dir()
        else []
    )
    newest = max(runs, key=lambda run: (run.path / MARKER).stat().st_mtime_ns, default=None)
    return newest if newest is not None and newest.last_checkpoint.is_file() else None


def discard_if_unused(run: RunFolder) -> None:
    """Remove a run folder that holds nothing but its marker: a command that failed before writing anything."""
    if run.path.is_dir() and [p.name for p in run.path.iterdir()] == [MARKER]:
        (run.path / MARKER).unlink()
        run.path.rmdir()


def run_of_checkpoint(checkpoint: str | os.PathLike) -> RunFolder | None:
    """The run folder a checkpoint was written into (``<run>/checkpoints/x.ckpt``), if it is one of ours."""
    run = Path(checkpoint).resolve().parent.parent
    return RunFolder(run) if (run / MARKER).is_file() else None


def point_latest(run: RunFolder) -> Path | None:
    """Move ``<root>/<name>/latest`` to ``run`` (a relative link, replaced atomically).

    Only a link is ever replaced: a file or folder the user put there under that name is left
    as it is, and ``None`` says the link was not made.
    """
    link = run.path.parent / LATEST
    if link.exists() and not link.is_symlink():
        return None
    staging = link.with_name(f".{LATEST}.{os.getpid()}")
    staging.unlink(missing_ok=True)
    try:
        staging.symlink_to(run.path.name, target_is_directory=True)
    except OSError:  # a file system without links: the printed run path is the handle
        return None
    os.replace(staging, link)
    return link


def _write_marker(path: Path, name: str) -> None:
    marker = {"name": name, "version": path.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv}
    write_text_atomic(path / MARKER, json.dumps(marker, indent=1) + "\n")


def _versions(parent: Path) -> list[int]:
    if not parent.is_dir():
        return []
    return [int(m.group(1)) for p in parent.iterdir() if (m := _VERSION.fullmatch(p.name)) and p.is_dir()]
