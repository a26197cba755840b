"""Batched decoding versus the per-image loop of the well-known tutorials, in captions per second.

    .venv/bin/python scripts/bench_decode.py                      # random decoder, vocab 10k, hidden 512, 2 layers
    .venv/bin/python scripts/bench_decode.py --checkpoint runs/shapes/latest/checkpoints/best.ckpt

The baseline captions one image at a time (batch 1 at every step, ``.item()`` to test for <eos>),
the way most tutorials write ``sample()``. The batched engine (``captioning.decoding``) runs the
same steps for a whole batch at once. Both are timed in the same run, on the same decoder and
initial states; speed does not depend on training, so a randomly initialised decoder of realistic
size is the default (it never emits <eos>, so every caption is ``--max_length`` tokens long; with
a checkpoint, captions stop at <eos> in both).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import Tensor

from captioning import decoding
from captioning.models.decoder import Decoder

BOS, EOS, PAD = 1, 2, 0


def per_image_loop(decoder: Decoder, state: tuple[Tensor, ...], max_length: int) -> list[list[int]]:
    """The tutorial way: one image at a time, one token at a time."""
    captions = []
    for i in range(state[0].size(1)):
        h = tuple(s[:, i : i + 1].contiguous() for s in state)  # (L, 1, H) this image's state
        token = torch.tensor([BOS])
        words = []
        for _ in range(max_length):
            logits, h = decoder.step(token, h)
            token = logits.argmax(dim=-1)
            words.append(token.item())
            if words[-1] == EOS:
                break
        captions.append(words)
    return captions


def rate(run: Callable[[], object], images: int, min_seconds: float) -> float:
    """Captions per second of ``run`` (which captions ``images``), repeated for at least ``min_seconds``."""
    run()  # warm-up: allocator, kernels
    count, start = 0, time.perf_counter()
    while True:
        run()
        count += images
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return count / elapsed


def build(args: argparse.Namespace) -> tuple[Decoder, Callable[[int], tuple[Tensor, ...]], str]:
    """The decoder and a function giving initial states for n images."""
    torch.manual_seed(0)
    if args.checkpoint:
        from captioning.lit.captioner import load_captioner

        model = load_captioner(args.checkpoint)
        h = model.hparams
        features = torch.randn(1, model.encoder.feature_dim).abs()  # post-ReLU-like features

        def states(n: int) -> tuple[Tensor, ...]:
            with torch.inference_mode():
                return model.init_state(features.expand(n, -1) + 0.1 * torch.rand(n, features.size(1)))

        name = f"checkpoint {args.checkpoint}: vocab {len(model.vocab)}, hidden {h.hidden_dim}, {h.num_layers} layers, {h.cell}"
        return model.decoder, states, name
    decoder = Decoder(args.vocab_size, args.embed_dim, args.hidden_dim, args.num_layers, dropout=0.0).eval()

    def states(n: int) -> tuple[Tensor, ...]:
        return tuple(torch.randn(args.num_layers, n, args.hidden_dim).tanh() for _ in range(2))  # (L, n, H)

    name = f"random LSTM decoder: vocab {args.vocab_size}, embed {args.embed_dim}, hidden {args.hidden_dim}, {args.num_layers} layers"
    return decoder, states, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="decode with this trained model instead of a random one")
    parser.add_argument("--vocab_size", type=int, default=10_000)
    parser.add_argument("--embed_dim", type=int, default=256)
    parser.add_argument("--hidden_dim", type=int, default=512)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--max_length", type=int, default=20, help="tokens per caption")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--beam_sizes", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--beam_batch", type=int, default=64, help="images per batch for beam search")
    parser.add_argument("--loop_images", type=int, default=64, help="images captioned by the per-image loop")
    parser.add_argument("--min_seconds", type=float, default=3.0, help="time each measurement at least this long")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    decoder, states, name = build(args)
    print(f"{name}; max_length {args.max_length}; {torch.get_num_threads()} torch threads")

    rows: list[tuple[str, int, float]] = []
    with torch.inference_mode():
        loop_states = states(args.loop_images)
        baseline = rate(
            lambda: per_image_loop(decoder, loop_states, args.max_length),
            args.loop_images,
            args.min_seconds,
        )
        rows.append(("per-image loop (tutorial)", 1, baseline))
        options = {"eos_id": EOS, "pad_id": PAD, "max_length": args.max_length}
        greedy_at = {}
        for batch in args.batch_sizes:
            state, start = states(batch), torch.full((batch,), BOS)
            greedy_at[batch] = rate(
                lambda s=state, b=start: decoding.greedy(decoder.step, s, b, **options),
                batch,
                args.min_seconds,
            )
            rows.append(("batched greedy", batch, greedy_at[batch]))
        state, start = states(args.beam_batch), torch.full((args.beam_batch,), BOS)
        for k in args.beam_sizes:
            speed = rate(
                lambda k=k: decoding.beam_search(decoder.step, state, start, beam_size=k, **options),
                args.beam_batch,
                args.min_seconds,
            )
            rows.append((f"batched beam {k}", args.beam_batch, speed))

    print(f"\n| {'method':<26} | {'batch':>5} | {'captions/s':>10} | {'vs per-image loop':>17} |")
    print(f"|{'-' * 28}|{'-' * 6}:|{'-' * 11}:|{'-' * 18}:|")
    for method, batch, speed in rows:
        print(f"| {method:<26} | {batch:>5} | {speed:>10.1f} | {speed / baseline:>16.1f}x |")
    if 64 in greedy_at:
        ratio = greedy_at[64] / baseline
        verdict = "meets" if ratio >= 20 else "MISSES"
        print(f"\nbatched greedy @64 = {ratio:.1f}x the per-image loop ({verdict} the 20x target)")
        for method, batch, speed in rows:
            if method.startswith("batched beam") and batch == 64:
                print(f"{method} @64 costs {greedy_at[64] / speed:.1f}x greedy's time per caption")


if __name__ == "__main__":
    main()
