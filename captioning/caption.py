"""``captioning caption``: caption a folder (or glob, or list) of images into a JSONL or CSV file.

Built for long runs over many photos:

- Images are read in DataLoader workers; a file that cannot be read (empty, truncated, not an
  image, too many pixels, unreadable) is skipped and listed with its reason in
  ``<output>.errors.jsonl`` and in the summary. The run fails only if nothing was captioned.
- Each batch is appended to the output with one write, then flushed and fsync'ed, so a killed
  run leaves whole lines only (a torn last line, after a crash, is cut off on the next run).
- A rerun with the same output captions only the images it does not hold yet (failed ones are
  retried). Records are streamed, not kept: besides the model, memory holds only the list of
  paths.
- ``devices > 1`` runs Lightning's predict loop over N processes (DDP; gloo on CPU), each writing
  its own part file, merged at the end so that every image appears exactly once.

Output records: ``{"image": absolute path, "caption": text, "log_prob": model log-probability}``
(CSV columns ``image,caption,log_prob``). Resuming matches images by that path, so a rerun from
another working directory, or with the input written differently, still skips what is done.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioning.checkpoints import read_checkpoint
from captioning.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageFolder,
    collate_images,
    list_images,
    pixel_limit,
)
from captioning.decoding import decoding_options, row_generators
from captioning.files import sha256_file
from captioning.inference import Captioner
from captioning.records import (
    CaptionFile,
    ErrorLog,
    claim_output,
    errors_path,
    image_key,
    make_records,
    merge_parts,
    repair_tail,
)


def _is_launched_child() -> bool:
    """True in the processes Lightning's DDP launcher starts (ranks > 0): they only read the output."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


def caption_batch(model, images: torch.Tensor, paths: list[str], run: dict) -> list[dict]:
    """Records for a batch of (B, 3, H, W) normalised images of ``model`` (a ``CaptioningModule``).

    ``sample`` draws each image's caption from a stream seeded by the run's seed and the image's
    path, so it is the same in any batch, on any process, before or after a resume.
    """
    options = run["options"]
    if run["strategy"] == "sample":
        options = dict(options, generator=row_generators(run["seed"], paths))
    decoded = model.generate(images, strategy=run["strategy"], **options)
    return make_records(paths, model.captions(decoded), decoded.log_probs)


def _check_options(
    strategy: str, batch_size: int, num_workers: int, beam_size: int | None, temperature: float | None, top_k: int | None,
    top_p: float | None, max_length: int | None, devices: int, accelerator: str, gallery_limit: int,
    max_pixels: int | None, limit: int | None, **run,
) -> dict:  # fmt: skip
    """Refuse bad options before any model is loaded, naming the flag."""
    checks = [
        (batch_size >= 1, f"--batch_size must be >= 1, got {batch_size}"),
        (num_workers >= 0, f"--num_workers must be >= 0, got {num_workers}"),
        (devices >= 1, f"--devices must be >= 1, got {devices}"),
        (accelerator in ("auto", "cpu", "gpu"), f"--accelerator must be auto, cpu or gpu, got {accelerator!r}"),
        (gallery_limit >= 0, f"--gallery_limit must be >= 0, got {gallery_limit}"),
        (max_pixels is None or max_pixels >= 1, f"--max_pixels must be >= 1 or null, got {max_pixels}"),
        (limit is None or limit >= 0, f"--limit must be >= 0 or null, got {limit}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    options = decoding_options(
        strategy, beam_size=beam_size, temperature=temperature, top_k=top_k, top_p=top_p, max_length=max_length,
        length_penalty=run["length_penalty"], no_repeat_ngram_size=run["no_repeat_ngram_size"],
    )  # fmt: skip
    return {
        "strategy": strategy, "options": options, "batch_size": batch_size, "num_workers": num_workers,
        "accelerator": accelerator, "max_pixels": max_pixels, "checkpoint": run["checkpoint"],
        "seed": run["seed"], "progress": run["progress"],
    }  # fmt: skip


def _local_device(accelerator: str) -> torch.device:
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError("--accelerator gpu was asked for, but torch sees no GPU")
    return torch.device("cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu")


def image_loader(paths: list[str], transform, image_size: int, run: dict, pin_memory: bool = False) -> DataLoader:
    """Batches of ``collate_images`` over ``paths``, read by ``num_workers`` processes."""
    dataset = ImageFolder(paths, transform, image_size, run["max_pixels"])
    workers = run["num_workers"]
    return DataLoader(
        dataset, batch_size=run["batch_size"], num_workers=workers, collate_fn=collate_images,
        worker_init_fn=dataset.worker_init if workers else None, pin_memory=pin_memory,
    )  # fmt: skip


class PredictCaptions(L.LightningModule):
    """The predict step of ``devices > 1``: a batch of ``collate_images`` -> records and failures."""

    def __init__(self, model: L.LightningModule, run: dict) -> None:
        super().__init__()
        self.model = model.eval()
        self.run = run

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        records = (
            [] if batch["images"] is None else caption_batch(self.model, batch["images"], batch["paths"], self.run)
        )
        return {"records": records, "errors": batch["errors"]}


def _caption_local(pending: list[str], sink: CaptionFile, errors: ErrorLog, run: dict) -> tuple[int, float]:
    """One process: read in workers, caption batch by batch, append as each batch finishes.

    Returns the images captioned and the seconds spent captioning (model loading excluded).
    """
    if not pending:
        return 0, 0.0
    device = _local_device(run["accelerator"])
    captioner = Captioner.from_checkpoint(run["checkpoint"], device=device, max_pixels=run["max_pixels"])
    loader = image_loader(pending, captioner.transform, captioner.image_size, run, pin_memory=device.type == "cuda")
    captioned, start = 0, time.perf_counter()
    with tqdm(total=len(pending), desc="caption", unit="img", disable=not run["progress"], dynamic_ncols=True) as bar:
        for batch in loader:
            errors.append(batch["errors"])
            if batch["images"] is not None:
                images = batch["images"].to(device, non_blocking=True)
                records = caption_batch(captioner.model, images, batch["paths"], run)
                sink.append(records)
                captioned += len(records)
            bar.update(len(batch["paths"]) + len(batch["errors"]))
            if errors.count:
                bar.set_postfix(failed=errors.count, refresh=False)
    return captioned, time.perf_counter() - start


def caption_distributed(
    pending: list[str], sink: CaptionFile, errors: ErrorLog, done: set[str], run: dict, devices: int
) -> tuple[int, float, bool]:
    """``devices`` processes through Lightning's predict loop; ``done``: the images already in the output.

    Returns the images captioned, the seconds spent in the predict loop, and whether this is
    the main process (the only one that reports).

    Lightning's DDP launcher starts the other processes by running this same command again; each
    writes its part files (``CaptionWriter``) and the first one merges them once all are done.
    """
    from captioning.lit.callbacks import CaptionWriter

    captioner = Captioner.from_checkpoint(run["checkpoint"], max_pixels=run["max_pixels"])
    loader = image_loader(pending, captioner.transform, captioner.image_size, run)
    writer = CaptionWriter(sink.path, errors, done, progress=run["progress"], total=len(pending))
    accelerator = "cpu" if run["accelerator"] == "cpu" or not torch.cuda.is_available() else "gpu"
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, strategy="ddp", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[writer],
    )  # fmt: skip
    start = time.perf_counter()
    trainer.predict(PredictCaptions(captioner.model, run), dataloaders=loader, return_predictions=False)
    return writer.merged, time.perf_counter() - start, trainer.is_global_zero


def _read_errors(path: Path) -> list[tuple[str, str]]:
    return [(r["image"], r["error"]) for r in CaptionFile(path).records()] if path.is_file() else []


def _settings(run: dict) -> dict:
    """What decides the captions of a run: a resumed output must be made with the same."""
    return {
        "checkpoint_sha256": sha256_file(run["checkpoint"]),
        "strategy": run["strategy"],
        "options": run["options"],
        "seed": run["seed"] if run["strategy"] == "sample" else None,
    }


def _images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def _print_summary(summary: dict, shown: list[tuple[str, str]]) -> None:
    rate = (
        f" ({summary['images_per_second']:.1f} images/s after loading the model)"
        if summary["images_per_second"]
        else ""
    )
    lines = [
        f"captioned {_images(summary['captioned'])} in {summary['seconds']:.1f} s{rate}; "
        f"skipped {summary['skipped']} already in {summary['output']}; failed {summary['failed']}"
    ]
    if summary["not_attempted"]:
        lines.append(f"{summary['not_attempted']} images left for a rerun (--limit)")
    if summary["failed"]:
        lines.append(f"failed files (all of them, with reasons, in {summary['errors_file']}):")
        lines += [f"  {path}: {reason}" for path, reason in shown]
        if summary["failed"] > len(shown):
            lines.append(f"  ... and {summary['failed'] - len(shown)} more")
    if summary.get("gallery"):
        lines.append(f"gallery: {summary['gallery']}")
    print("\n".join(lines), flush=True)


def caption(
    checkpoint: str,
    input: str,
    output: str,
    recursive: bool = False,
    batch_size: int = 64,
    num_workers: int = 2,
    strategy: Literal["greedy", "sample", "beam"] = "greedy",
    beam_size: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    length_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    max_length: int | None = None,
    seed: int = 0,
    devices: int = 1,
    accelerator: Literal["auto", "cpu", "gpu"] = "auto",
    gallery: str | None = None,
    gallery_limit: int = 1000,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Caption every image of a folder, glob or list into a JSONL or CSV file; rerun to resume.

    Args:
        checkpoint: A ``.ckpt`` written by ``captioning fit`` (self-contained).
        input: A folder, a glob pattern (quote it) or a ``.txt`` file with one image path per line.
        output: ``captions.jsonl`` or ``captions.csv``. An existing file is resumed: images it
            holds are skipped. Unreadable files are listed in ``<output>.errors.jsonl`` beside it.
        recursive: Include the subfolders of a folder ``--input``: ``--recursive`` (a glob's ``**``
            spans folders without it).
        batch_size: Images encoded and decoded at once.
        num_workers: Processes reading and decoding image files (0: in the main process).
        strategy: ``greedy``, ``sample`` or ``beam``.
        beam_size: Beams per image (beam; default 3).
        temperature: Divides the logits before the softmax (sample; default 1, pure sampling); below 1 is closer to greedy.
        top_k: Sample among the k most probable tokens only (sample).
        top_p: Sample from the smallest set of tokens holding this much probability (sample).
        length_penalty: Beam score = log-prob / length ** length_penalty (beam; default 1).
        no_repeat_ngram_size: Forbid repeating any n-gram of this size (beam; default 0: allowed).
        max_length: Longest caption in tokens (default: the checkpoint's).
        seed: Random seed of ``sample``.
        devices: Processes (GPUs, or CPU processes) captioning in parallel through Lightning.
        accelerator: ``auto`` (a GPU if there is one), ``cpu`` or ``gpu``.
        gallery: Also write a self-contained HTML page of thumbnails and captions here.
        gallery_limit: Most images shown in the gallery.
        max_pixels: Refuse images with more pixels (decompression-bomb guard); null: no limit.
        limit: Caption at most this many of the missing images, then stop (a rerun goes on).
        progress: Show a progress bar.

    Returns:
        The summary: images listed, captioned now, skipped (already in the output), failed,
        not attempted (``limit``), wall time and the files written.
    """
    run = _check_options(**locals())
    # A wrong path fails now, not after listing the images; the default caption length is the checkpoint's.
    saved = read_checkpoint(checkpoint, "captioner", mmap=True)["hyper_parameters"]
    run["options"].setdefault("max_length", saved["max_caption_length"])
    start = time.perf_counter()
    sink = CaptionFile(output)
    errors = ErrorLog(errors_path(output))
    paths = list_images(input, recursive=recursive)
    if not paths:
        hint = " in it; its subfolders have some: add --recursive" if not recursive and list_images(input, True) else ""
        raise SystemExit(
            f"error: no images found at --input {input}{hint} (extensions: jpg jpeg png webp bmp gif tif tiff)"
        )
    if _is_launched_child():  # the first process has tidied the output; this one only reads it
        done = sink.keys()
    else:
        repair_tail(sink.path)
        done = sink.keys()  # also refuses a file that is not an output of this command, before writing beside it
        claim_output(output, _settings(run))
        errors.path.unlink(missing_ok=True)  # failures are retried; this run lists its own
        merge_parts(output, None, done)  # parts of a killed multi-process run; `done` gains their images
    images = list(dict.fromkeys(image_key(path) for path in paths))  # a file listed twice (a.png, ./a.png) counts once
    pending = [image for image in images if image not in done]
    skipped = len(images) - len(pending)
    attempted = pending[:limit] if limit is not None else pending

    with pixel_limit(max_pixels):
        if min(devices, len(attempted)) > 1:
            captioned, seconds, is_main = caption_distributed(
                attempted, sink, errors, done, run, min(devices, len(attempted))
            )
            if not is_main:
                return {}
        else:
            captioned, seconds = _caption_local(attempted, sink, errors, run)
    sink.close()
    errors.close()
    summary = {
        "output": str(sink.path), "images": len(images), "captioned": captioned, "skipped": skipped,
        "failed": errors.count, "not_attempted": len(pending) - len(attempted),
        "errors_file": str(errors.path) if errors.count else None, "seconds": round(time.perf_counter() - start, 2),
        "images_per_second": round((captioned + errors.count) / seconds, 2) if seconds else None,
    }  # fmt: skip
    if gallery:
        from captioning.gallery import write_gallery

        summary["gallery"] = str(
            write_gallery(sink.records(), gallery, errors=_read_errors(errors.path), limit=gallery_limit)
        )
    _print_summary(summary, errors.shown)
    if captioned + skipped == 0 and errors.count:
        raise SystemExit(
            f"error: no image could be read ({_images(errors.count)} failed); the reasons are in {errors.path}"
        )
    return summary
