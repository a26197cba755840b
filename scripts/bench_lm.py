"""Language model benchmarks: training speed of each cell, and quality in a wall-clock budget.

1. Speed: training tokens per second (forward + backward + AdamW step on one chunk) for the
   from-scratch VanillaRNN (``rnn``), ``nn.RNN`` (``rnn_fused``), ``nn.LSTM`` and ``nn.GRU``
   at the same size, measured round-robin in this run (so background load hits every cell
   alike), with each cell's ratio to a baseline cell.
2. Quality: ``captioning lm fit`` with a config (default ``configs/lm_shakespeare.yaml``) on
   the text file given, cut at ``--budget`` seconds of training (``trainer.max_time``), then
   the validation loss over the whole validation span.

    python scripts/bench_lm.py --text path/to/tinyshakespeare.txt            # both parts, ~6 min
    python scripts/bench_lm.py --skip-quality                                 # speed only, ~1 min
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from captioning.models.language_model import RNNLanguageModel

CELLS = ("rnn", "rnn_fused", "lstm", "gru")


def tokens_per_second(
    models: dict, batch: int, bptt: int, vocab: int, repeats: int, precision: str
) -> dict[str, float]:
    """Median training tokens/s per model over ``repeats`` rounds, each round visiting every model once."""
    tokens = torch.randint(4, vocab, (batch, bptt + 1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-3) for name, model in models.items()}

    def step(name: str) -> float:
        model, optimizer = models[name], optimizers[name]
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            logits, _ = model(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return batch * bptt / (time.perf_counter() - start)

    for name in models:  # warm-up: kernel selection, allocator
        step(name)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name in models:
            rates[name].append(step(name))
    return {name: statistics.median(r) for name, r in rates.items()}


def speed_table(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    models = {
        cell: RNNLanguageModel(args.vocab, args.embed, args.hidden, args.layers, dropout=0.0, cell=cell).train()
        for cell in args.cells
    }
    rates = tokens_per_second(models, args.batch, args.bptt, args.vocab, args.repeats, args.precision)
    base = rates[args.baseline]
    print(
        f"\ntraining speed: {args.layers} layer(s) x {args.hidden} hidden, embedding {args.embed}, vocabulary {args.vocab}, "
        f"batch {args.batch} x bptt {args.bptt}, {args.precision}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} rounds\n"
    )
    print(f"| cell | module | parameters | tokens/s | vs {args.baseline} |")
    print("|---|---|---:|---:|---:|")
    for cell, rate in rates.items():
        module = type(models[cell].rnn).__name__
        params = sum(p.numel() for p in models[cell].parameters())
        print(f"| {cell} | {module} | {params / 1e6:.2f} M | {rate:,.0f} | {rate / base:.2f}x |")


def quality(args: argparse.Namespace) -> None:
    from lightning.pytorch.callbacks import Timer

    from captioning.lm_cli import lm_main

    budget = time.strftime("%H:%M:%S", time.gmtime(args.budget))
    argv = [
        "fit",
        "--config",
        args.config,
        "--data.files",
        f"[{args.text}]",
        "--trainer.max_time",
        f"00:{budget}",
    ]
    argv += args.overrides
    print(f"\nquality: captioning lm {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    cli = lm_main(argv)
    wall = time.perf_counter() - start
    trainer = cli.trainer
    timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    print(
        f"\nafter {timer.time_elapsed('train'):.0f} s of training ({trainer.global_step} steps, epoch {trainer.current_epoch}; "
        f"{wall:.0f} s wall in all): val/loss {metrics['val/loss']:.4f} nats/token, val/bpc {metrics['val/bpc']:.4f}, "
        f"val/ppl {metrics['val/ppl']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", help="text file for the quality run (e.g. Tiny Shakespeare)")
    parser.add_argument("--config", default="configs/lm_shakespeare.yaml")
    parser.add_argument("--budget", type=int, default=270, help="training seconds of the quality run")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--baseline", default="rnn_fused", choices=CELLS)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument(
        "--vocab",
        type=int,
        default=69,
        help="vocabulary size of the speed test (Tiny Shakespeare: 65 + 4 specials)",
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="32", choices=["32", "bf16-mixed"])
    parser.add_argument("overrides", nargs="*", help="extra `captioning lm fit` flags for the quality run, after --")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: robust on cores shared with other work)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.baseline not in args.cells:
        parser.error(f"--baseline {args.baseline} must be one of --cells")
    if not args.skip_quality and not args.text:
        parser.error("the quality run needs --text FILE (or pass --skip-quality)")
    if not args.skip_speed:
        speed_table(args)
    if not args.skip_quality:
        quality(args)


if __name__ == "__main__":
    main()
