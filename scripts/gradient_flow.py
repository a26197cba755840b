"""Vanilla RNN against LSTM: how far back does the gradient of a prediction reach?

Trains each cell briefly at the same size on the same text (through the product's own
LanguageModule and Lightning Trainer, truncated BPTT), then plots ||dL_T / dh_t|| for every
step t of one chunk, both curves in one PNG, and prints a few values. With ``--train-steps 0``
the networks are left at initialisation.

    python scripts/gradient_flow.py                                  # embedded corpus, ~1 min on 2 cores
    python scripts/gradient_flow.py --text input.txt --hidden 256 --bptt 200 --out runs/gf.png
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch

from captioning.data.text import LanguageModelDataModule
from captioning.lit.gradient_flow import hidden_gradient_norms, plot_gradient_flow
from captioning.lit.language_model import LanguageModule

MODULES = {
    "rnn": "VanillaRNN (from scratch)",
    "rnn_fused": "nn.RNN",
    "lstm": "nn.LSTM",
    "gru": "nn.GRU",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", nargs="*", default=None, help="text files (default: the embedded corpus)")
    parser.add_argument(
        "--cells",
        nargs="+",
        default=["rnn", "lstm"],
        help="cells to compare (rnn = the from-scratch VanillaRNN)",
    )
    parser.add_argument("--hidden", type=int, default=128, help="hidden size, the same for every cell")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--embed", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=100, help="chunk length: the steps plotted")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--train-steps",
        type=int,
        default=150,
        help="optimizer steps before measuring (0: at initialisation)",
    )
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--rows", type=int, default=16, help="chunk rows averaged in the plot")
    parser.add_argument("--out", default="runs/gradient_flow.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: robust on cores shared with other work)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = LanguageModelDataModule(files=args.text, level="char", batch_size=args.batch, bptt=args.bptt, max_chars=None)
    data.setup("fit")
    chunk = next(iter(data.val_dataloader()))  # held-out text, the same for every cell
    inputs, target = chunk["inputs"][: args.rows], chunk["targets"][: args.rows, -1]

    curves = {}
    for cell in args.cells:
        L.seed_everything(args.seed, verbose=False)
        module = LanguageModule(
            data.vocab_tokens, cell=cell, embed_dim=args.embed, hidden_dim=args.hidden, num_layers=args.layers,
            dropout=0.0, lr=args.lr, warmup_steps=10, sample_tokens=0,
        )  # fmt: skip
        start = time.perf_counter()
        if args.train_steps > 0:
            trainer = L.Trainer(
                accelerator="cpu", max_steps=args.train_steps, gradient_clip_val=1.0, limit_val_batches=0,
                logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            )  # fmt: skip
            trainer.fit(module, data)
        norms = hidden_gradient_norms(module.model, inputs, target)
        name = f"{MODULES[cell]}, {args.layers}x{args.hidden}"
        curves[name] = norms
        picks = [0, len(norms) // 2, len(norms) - 11, len(norms) - 1]
        shown = ", ".join(f"t={t}: {norms[t]:.2e}" for t in picks)
        print(f"{name}: {args.train_steps} steps in {time.perf_counter() - start:.0f} s; ||dL_T/dh_t|| {shown}")
        print(f"  ||dL_T/dh_0|| / ||dL_T/dh_T|| = {norms[0] / norms[-1]:.2e} (1: no decay over {len(norms) - 1} steps)")

    state = "at initialisation" if args.train_steps == 0 else f"after {args.train_steps} training steps"
    title = f"||dL_T/dh_t||, char LM {state}, loss at step T = {args.bptt}"
    print(f"plot: {plot_gradient_flow(curves, args.out, title)}")


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    main()
