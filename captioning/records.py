"""Caption record files: append-only, crash-safe, resumable, mergeable across processes.

A record is ``{"image": absolute path, "caption": text, "log_prob": float}``, a failure
``{"image": path, "error": reason}``. Files grow by whole batches (one write, then fsync), so a
killed run leaves whole lines, and a torn last line after a crash is cut off before appending.
Several processes each write a part file; :func:`merge_parts` moves them into the output with
each image once.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from captioning.files import write_text_atomic

FIELDS = ("image", "caption", "log_prob")
_SHOWN_ERRORS = 20  # failures printed in the summary; all of them are in the errors file


def image_key(path: str) -> str:
    """What makes two records the same image: the absolute, normalised path."""
    return os.path.normpath(os.path.abspath(path))


def _append(fd: int, data: bytes) -> None:
    """Append ``data`` with as few writes as the OS allows (one, for a file), then fsync."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def repair_tail(path: str | os.PathLike) -> int:
    """Cut off a partial last line (a write torn by a crash); returns the bytes removed."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:  # scan back in chunks for the last newline
            start = max(0, end - 65536)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
        return size - end


class CaptionFile:
    """An append-only JSONL or CSV file of caption records (the format follows the suffix)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise ValueError(f"--output must end in .jsonl or .csv, got {self.path.name}")
        self.format = suffix[1:]
        self._fd: int | None = None

    def records(self) -> Iterator[dict]:
        """The records already in the file (none if it does not exist)."""
        if not self.path.is_file():
            return
        with self.path.open(encoding="utf-8", newline="") as f:
            if self.format == "csv":
                reader = csv.DictReader(f)
                if reader.fieldnames is not None and "image" not in reader.fieldnames:
                    raise ValueError(f"{self.path} has no 'image' column: not an output of captioning caption")
                yield from reader
                return
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"line {number} of {self.path} is not JSON ({error}): fix or delete it") from error
                if not isinstance(record, dict) or "image" not in record:
                    raise ValueError(
                        f'line {number} of {self.path} has no "image": not an output of captioning caption; '
                        "choose another --output"
                    )
                yield record

    def keys(self) -> set[str]:
        return {image_key(record["image"]) for record in self.records()}

    def encode(self, records: list[dict], header: bool) -> bytes:
        if self.format == "jsonl":
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n", extrasaction="ignore")
        if header:
            writer.writeheader()
        writer.writerows(records)
        return buffer.getvalue().encode()

    def append(self, records: list[dict]) -> None:
        """Append a whole batch: one write, flush and fsync (a kill never leaves half a batch line)."""
        if not records:
            return
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _append(self._fd, self.encode(records, header=os.fstat(self._fd).st_size == 0))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ErrorLog:
    """``{"image", "error"}`` JSON lines, created at the first failure."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.file = CaptionFile(Path(path).with_suffix(".jsonl"))
        self.count = 0
        self.shown: list[tuple[str, str]] = []

    @property
    def path(self) -> Path:
        return self.file.path

    def append(self, errors: list[tuple[str, str]]) -> None:
        self.file.append([{"image": path, "error": reason} for path, reason in errors])
        self.count += len(errors)
        self.shown += errors[: _SHOWN_ERRORS - len(self.shown)]

    def close(self) -> None:
        self.file.close()


def errors_path(output: str | os.PathLike) -> Path:
    """``captions.jsonl`` -> ``captions.jsonl.errors.jsonl``: named after the whole output name, so a
    ``captions.csv`` beside it keeps its own."""
    output = Path(output)
    return output.with_name(f"{output.name}.errors.jsonl")


def part_path(output: str | os.PathLike, rank: int, errors: bool = False) -> Path:
    """The file process ``rank`` writes under ``devices > 1``, merged into ``output`` at the end."""
    target = errors_path(output) if errors else Path(output)
    return target.with_name(f"{target.stem}.part{rank}{target.suffix}")


def make_records(paths: list[str], captions: list[str], log_probs: torch.Tensor) -> list[dict]:
    scores = log_probs.float().cpu().tolist()
    return [
        {"image": p, "caption": c, "log_prob": round(s, 4)} for p, c, s in zip(paths, captions, scores, strict=True)
    ]


def merge_parts(output: str | os.PathLike, errors: ErrorLog | None, done: set[str]) -> int:
    """Move the records of every part file into ``output`` (each image once), then delete the parts.

    The failures in the error parts go to ``errors`` unless the image was captioned after all
    (``None``: drop them, for leftovers of a killed run, whose failures are retried anyway).
    Returns the number of records added; ``done`` gains their keys.
    """
    output = Path(output)
    parts = sorted(output.parent.glob(f"{output.stem}.part[0-9]*{output.suffix}"))
    sink, added = CaptionFile(output), 0
    try:
        for part in parts:
            repair_tail(part)
            new = []
            for record in CaptionFile(part).records():
                key = image_key(record["image"])
                if key not in done:  # drop duplicates (already merged, or written twice)
                    done.add(key)
                    new.append(record)
            sink.append(new)
            added += len(new)
    finally:
        sink.close()
    failed: dict[str, tuple[str, str]] = {}
    failures = errors_path(output)
    error_parts = sorted(failures.parent.glob(f"{failures.stem}.part[0-9]*.jsonl"))
    for part in error_parts if errors is not None else []:
        repair_tail(part)
        for record in CaptionFile(part).records():
            if image_key(record["image"]) not in done:
                failed.setdefault(image_key(record["image"]), (record["image"], record["error"]))
    if errors is not None:
        errors.append(list(failed.values()))
    for part in [*parts, *error_parts]:
        part.unlink()
    return added


def settings_path(output: str | os.PathLike) -> Path:
    """``captions.jsonl`` -> ``captions.jsonl.run.json``: what made the captions in the output."""
    output = Path(output)
    return output.with_name(f"{output.name}.run.json")


def claim_output(output: str | os.PathLike, settings: dict) -> None:
    """Tie ``output`` to the ``settings`` its captions are made with (checkpoint, decoding).

    Resuming skips the images already in the output, so a rerun with another checkpoint or
    strategy would silently keep the old captions next to new ones. It is refused instead,
    naming what changed; so is an output holding captions but no settings file, since nothing
    says what made them.
    """
    output, path = Path(output), settings_path(output)
    if output.is_file() and output.stat().st_size > 0:
        start_over = f"choose another --output, or delete {output} and {path.name} to start over"
        if not path.is_file():
            raise ValueError(f"{output} holds captions but no {path.name} saying what made them: {start_over}")
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not JSON ({error}): {start_over}") from error
        keys = sorted(settings.keys() | saved.keys())
        changed = [
            f"{key} {saved.get(key)!r} -> {settings.get(key)!r}" for key in keys if saved.get(key) != settings.get(key)
        ]
        if changed:
            raise ValueError(f"{output} holds captions made with other settings ({'; '.join(changed)}): {start_over}")
    write_text_atomic(path, json.dumps(settings, indent=1) + "\n")
