"""End-to-end folder captioning versus the encoder's forward pass alone, and memory versus folder size.

    .venv/bin/python scripts/bench_caption.py                     # random mobilenet_v2 @128 + 10k-word decoder
    .venv/bin/python scripts/bench_caption.py --image_size 224    # the photo setting (about 3x slower)
    .venv/bin/python scripts/bench_caption.py --checkpoint runs/shapes/latest/checkpoints/best.ckpt

1. Writes photo-like 640x480 JPEGs (noise, gradients and shapes; ``--pool`` distinct pictures,
   each file a real copy on disk) into a temporary folder.
2. Ceiling: the encoder's forward pass alone over already-decoded, already-transformed tensors of
   the same images, in batches of ``--batch_size``, in this process; measured before and after
   every end-to-end run (the machine may be shared), each run compared with the two around it.
   For the breakdown, also the encoder + greedy decoder on the same tensors (the model's compute).
3. End to end: ``captioning caption`` (the library call, in a fresh subprocess per folder size) on
   the first N files, N in ``--sizes``: reading in ``--num_workers`` DataLoader workers, encoder,
   greedy decoder, JSONL output. Its rate counts from the first batch requested to the last line
   written (model loading excluded, worker start-up included). Peak resident memory of the main
   process and of the largest worker comes from ``resource.getrusage`` in that subprocess.

Without ``--checkpoint`` the model is randomly initialised at a realistic size (mobilenet_v2 at
128 px as in configs/shapes.yaml, or ``--image_size 224``; LSTM 2 x 512, vocabulary 10,000):
speed does not depend on training. Its decoder never
emits <eos>, so every caption is ``--max_length`` tokens long (a trained one stops earlier).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from captioning.data.images import load_rgb
from captioning.lit.captioner import load_captioner
from captioning.models.encoder import build_transform

_CHILD = """
import json, resource, sys
from captioning.caption import caption
options = json.loads(sys.argv[1])
summary = caption(**options)
summary["rss_main_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
summary["rss_worker_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print("SUMMARY " + json.dumps(summary))
"""


def photo_like(rng: random.Random, width: int, height: int) -> Image.Image:
    """A gradient sky, a few blurred shapes and sensor-like noise: compresses and decodes like a photo."""
    y = np.linspace(0, 1, height)[:, None, None]
    top, bottom = (
        np.array([rng.randint(0, 255) for _ in range(3)]),
        np.array([rng.randint(0, 255) for _ in range(3)]),
    )
    pixels = np.broadcast_to(top * (1 - y) + bottom * y, (height, width, 3))
    image = Image.fromarray(pixels.astype(np.uint8))
    pen = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 8)):
        x0, y0 = rng.randint(0, width), rng.randint(0, height)
        box = (x0, y0, x0 + rng.randint(40, width // 2), y0 + rng.randint(40, height // 2))
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        (pen.ellipse if rng.random() < 0.5 else pen.rectangle)(box, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def make_images(folder: Path, count: int, pool: int, width: int, height: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    encoded = []
    for _ in range(pool):
        path = folder / "pool.jpg"
        photo_like(rng, width, height).save(path, quality=90)
        encoded.append(path.read_bytes())
    path.unlink()
    paths = [folder / f"{i:05d}.jpg" for i in range(count)]
    for i, p in enumerate(paths):
        p.write_bytes(encoded[i % pool])
    return paths


def random_checkpoint(path: Path, image_size: int, vocab_size: int, hidden_dim: int) -> Path:
    """A randomly initialised captioner saved the way Lightning saves one (loadable by ``load_captioner``)."""
    import lightning as L

    from captioning.lit.captioner import CaptioningModule
    from captioning.vocab import SPECIALS

    torch.manual_seed(0)
    tokens = [*SPECIALS, *(f"word{i}" for i in range(vocab_size - len(SPECIALS)))]
    model = CaptioningModule(vocab_tokens=tokens, pretrained=False, image_size=image_size, hidden_dim=hidden_dim)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    return path


class EncoderCeiling:
    """The encoder's forward pass alone on already-decoded, already-transformed tensors."""

    def __init__(self, checkpoint: Path, paths: list[Path], batch_size: int) -> None:
        self.model = load_captioner(checkpoint)
        size = self.model.hparams.image_size
        transform = build_transform(self.model.hparams.backbone, size)
        start = time.perf_counter()
        tensors = torch.stack([transform(load_rgb(p.read_bytes(), size)) for p in paths])  # (N, 3, S, S)
        self.read_rate = len(paths) / (time.perf_counter() - start)  # decode + transform, one process
        self.batches = list(tensors.split(batch_size))

    @torch.inference_mode()
    def rate(self, min_seconds: float, max_length: int | None = None) -> float:
        """Images per second of the encoder (or, with ``max_length``, encoder + greedy decoder),
        timed over whole passes for at least ``min_seconds``."""

        def run(batch: torch.Tensor) -> None:
            if max_length is None:
                self.model.features(batch)
            else:
                self.model.generate(batch, max_length=max_length)

        run(self.batches[0])  # warm-up
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            for batch in self.batches:
                run(batch)
                count += len(batch)
        return count / (time.perf_counter() - start)


def end_to_end(checkpoint: Path, listing: Path, output: Path, args: argparse.Namespace) -> dict:
    output.unlink(missing_ok=True)
    options = {
        "checkpoint": str(checkpoint), "input": str(listing), "output": str(output), "batch_size": args.batch_size,
        "num_workers": args.num_workers, "max_length": args.max_length, "progress": False,
    }  # fmt: skip
    result = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(options)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"caption failed:\n{result.stderr[-3000:]}")
    line = next(line for line in result.stdout.splitlines() if line.startswith("SUMMARY "))
    return json.loads(line.removeprefix("SUMMARY "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a trained captioner (default: a random one of realistic size)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5000], help="folder sizes to caption")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--max_length", type=int, default=20, help="caption length cap (tokens)")
    parser.add_argument(
        "--image_size", type=int, default=128, help="encoder input side of the random model (shapes.yaml's)"
    )
    parser.add_argument("--vocab_size", type=int, default=10_000, help="vocabulary of the random model")
    parser.add_argument("--hidden_dim", type=int, default=512, help="decoder state size of the random model")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--pool", type=int, default=64, help="distinct pictures among the files")
    parser.add_argument("--ceiling_images", type=int, default=256, help="images the ceiling is measured on")
    parser.add_argument(
        "--min_seconds", type=float, default=5.0, help="time each ceiling measurement at least this long"
    )
    parser.add_argument("--workdir", help="keep the images and outputs here (default: a temporary folder, removed)")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_caption_"))
    try:
        start = time.perf_counter()
        paths = make_images(work / "images", max(args.sizes), args.pool, args.width, args.height)
        print(f"wrote {len(paths)} {args.width}x{args.height} JPEGs in {time.perf_counter() - start:.0f} s "
              f"({sum(p.stat().st_size for p in paths[: args.pool]) / args.pool / 1024:.0f} KiB each)")  # fmt: skip
        if args.checkpoint:
            checkpoint = Path(args.checkpoint)
        else:
            checkpoint = random_checkpoint(work / "random.ckpt", args.image_size, args.vocab_size, args.hidden_dim)
        h = load_captioner(checkpoint).hparams
        print(f"load average {os.getloadavg()[0]:.2f}; model: {h.backbone} @{h.image_size}px, {h.cell} {h.num_layers}x{h.hidden_dim}, vocabulary {len(h.vocab_tokens)}"
              f"{'' if args.checkpoint else ' (random weights)'}; batch {args.batch_size}, {args.num_workers} workers, "
              f"{torch.get_num_threads()} torch threads")  # fmt: skip

        # The machine may be shared: the ceiling is measured before and after every end-to-end run
        # and each run is compared with the mean of the two around it.
        ceiling = EncoderCeiling(checkpoint, paths[: args.ceiling_images], args.batch_size)
        ceilings = [ceiling.rate(args.min_seconds)]
        model_rate = ceiling.rate(args.min_seconds, max_length=args.max_length)  # what the model alone allows
        runs = []
        for size in args.sizes:
            listing = work / f"list{size}.txt"
            listing.write_text("\n".join(str(p) for p in paths[:size]) + "\n")
            summary = end_to_end(checkpoint, listing, work / f"captions{size}.jsonl", args)
            assert summary["captioned"] == size, summary
            ceilings.append(ceiling.rate(args.min_seconds))
            runs.append((size, summary, (ceilings[-2] + ceilings[-1]) / 2))

        print(
            f"\n| {'measurement':<38} | {'images':>6} | {'images/s':>8} | {'vs ceiling':>10} | {'peak RSS main':>13} | {'peak RSS worker':>15} |"
        )
        print(f"|{'-' * 40}|{'-' * 7}:|{'-' * 9}:|{'-' * 11}:|{'-' * 14}:|{'-' * 16}:|")
        for i, rate in enumerate(ceilings):
            label = "encoder forward alone (ceiling)" if i == 0 else f"  ceiling again, after run {i}"
            print(f"| {label:<38} | {args.ceiling_images:>6} | {rate:>8.1f} | {'100 %':>10} | {'':>13} | {'':>15} |")
        print(
            f"| {'encoder + greedy decoder on tensors':<38} | {args.ceiling_images:>6} | {model_rate:>8.1f} | {100 * model_rate / ceilings[0]:>8.0f} % | {'':>13} | {'':>15} |"
        )
        print(
            f"| {'read + transform, 1 process (info)':<38} | {args.ceiling_images:>6} | {ceiling.read_rate:>8.1f} | {'':>10} | {'':>13} | {'':>15} |"
        )
        for i, (size, s, around) in enumerate(runs, 1):
            rate = s["images_per_second"]
            print(f"| {f'run {i}: captioning caption, end to end':<38} | {size:>6} | {rate:>8.1f} | {100 * rate / around:>8.0f} % "
                  f"| {s['rss_main_mb']:>10.0f} MB | {s['rss_worker_mb']:>12.0f} MB |")  # fmt: skip
        worst = min(s["images_per_second"] / around for _, s, around in runs)
        print(f"\nend to end reaches at least {100 * worst:.0f} % of the encoder-only ceiling measured around it "
              f"({'meets' if worst >= 0.8 else 'MISSES'} the 80 % target); load average {os.getloadavg()[0]:.2f}")  # fmt: skip
        print(f"the model's own compute (encoder + decoder, no file reading) is {100 * model_rate / ceilings[0]:.0f} % of the "
              f"encoder-only ceiling; end to end reaches {100 * min(s['images_per_second'] for _, s, _ in runs) / model_rate:.0f} % of it")  # fmt: skip
        if len(runs) >= 2:
            (small, a, _), (large, b, _) = runs[0], runs[-1]
            growth = b["rss_main_mb"] / a["rss_main_mb"] - 1
            print(f"peak memory of the main process, {large} vs {small} images: {100 * growth:+.1f} % "
                  f"({'meets' if abs(growth) <= 0.10 else 'MISSES'} the 10 % target)")  # fmt: skip
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
