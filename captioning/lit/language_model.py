"""LanguageModule: a recurrent language model trained with truncated backprop through time.

Lightning 2 has no built-in truncated BPTT; this is the stateful pattern of its LSTM demo:

- The data module serves each batch row as a contiguous stream, chunk after chunk
  (:mod:`captioning.data.text`), so the state left by chunk k is the context of chunk k + 1.
- ``training_step`` starts from the state the previous step left, *detached*: values flow
  across the chunk boundary, gradients stop there (they reach back at most ``bptt`` steps).
  One optimizer step per chunk.
- The state is reset to zeros at the start of every training epoch and of every evaluation
  (which keeps its own state, so a validation run in mid-epoch does not disturb training).
- Gradient clipping is Lightning's: set ``trainer.gradient_clip_val``.

Metrics: ``train/loss`` (nats per token), and over the whole evaluation span ``val/loss``,
``val/ppl`` (perplexity per token) and ``val/bpc`` (bits per character: the summed loss
divided by ln 2 and by the number of characters the predicted tokens stand for; at char
level simply loss / ln 2). The sums are reduced over processes before dividing, so the
numbers are exact under DDP.

The checkpoint is self-contained (vocabulary as plain strings in the hyperparameters) and
loads with ``torch.load(weights_only=True)``: see :func:`load_language_model`.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer
from torch import Tensor, nn

from captioning import decoding
from captioning.checkpoints import read_checkpoint
from captioning.data.text import IGNORE_INDEX, LEVELS, detokenize, word_tokens
from captioning.lit.schedule import SCHEDULE_KEY, schedule_segment, schedule_state, warmup_cosine
from captioning.lit.tracking import log_grad_norm
from captioning.models.language_model import RNNLanguageModel, State, detach_state
from captioning.vocab import SPECIALS, Vocabulary

SCHEDULES = ("constant", "cosine")


class LanguageModule(L.LightningModule):
    """Embedding -> multilayer recurrent cell -> linear, trained chunk by chunk with TBPTT.

    Args:
        vocab_tokens: The vocabulary as plain strings (the CLI links it from the data module).
        level: ``char`` or ``word``: how prompts are tokenised and text is joined (linked from the data).
        cell: ``lstm``, ``gru``, ``rnn_fused`` (nn.RNN) or ``rnn`` (from scratch, slow).
        embed_dim: Token embedding size.
        hidden_dim: Recurrent state size per layer.
        num_layers: Stacked recurrent layers.
        dropout: Dropout on embeddings, between layers and before the output layer.
        tie_weights: Share the embedding with the output layer (needs ``embed_dim == hidden_dim``).
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay, on weight matrices only (not biases, not embeddings).
        warmup_steps: Linear warm-up from 0 over this many optimizer steps.
        schedule: ``cosine``: decay to ``min_lr_ratio * lr`` over the run, whose end is
            whichever comes first of the step budget (``max_steps`` / ``max_epochs``) and the
            time budget (``max_time``), so a run cut by the clock still ends with a low rate;
            ``constant``: keep ``lr`` after warm-up.
        min_lr_ratio: Final learning rate of the cosine schedule, relative to ``lr``.
        sample_prompt: Text the printed samples continue after each validation.
        sample_tokens: Tokens per printed sample (0: no sample).
        sample_temperature: Sampling temperature of the printed samples.
    """

    def __init__(
        self,
        vocab_tokens: list[str] | None = None,
        level: str = "char",
        cell: str = "lstm",
        embed_dim: int = 128,
        hidden_dim: int = 512,
        num_layers: int = 2,
        dropout: float = 0.1,
        tie_weights: bool = False,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 50,
        schedule: str = "cosine",
        min_lr_ratio: float = 0.1,
        sample_prompt: str = "",
        sample_tokens: int = 200,
        sample_temperature: float = 0.8,
    ) -> None:
        super().__init__()
        if not vocab_tokens:
            raise ValueError("model.vocab_tokens is required: the CLI links it from the data module's training span")
        if level not in LEVELS:
            raise ValueError(f"model.level must be one of {LEVELS}, got {level!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"model.schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"model.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        if warmup_steps < 0:
            raise ValueError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
        self.save_hyperparameters()
        self.vocab = Vocabulary(vocab_tokens)
        self.model = RNNLanguageModel(len(self.vocab), embed_dim, hidden_dim, num_layers, dropout, cell, tie_weights)
        self._train_state: State | None = None  # carried from chunk to chunk, detached
        self._eval_state: State | None = None
        self._sums: Tensor | None = None  # summed nats, predicted tokens, characters of one evaluation

    # -- model -------------------------------------------------------------------------------

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """(B, T) ids -> (B, T, V) logits and the state after the last step."""
        return self.model(tokens, state)

    def chunk_loss(self, batch: dict, state: State | None) -> tuple[Tensor, Tensor, State]:
        """Summed nats and number of predicted tokens over one chunk, and the state it leaves."""
        logits, state = self.model(batch["inputs"], state)  # (B, T, V)
        targets = batch["targets"]  # (B, T), IGNORE_INDEX where nothing is predicted
        nats = F.cross_entropy(
            logits.flatten(0, 1).float(),
            targets.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        return nats, (targets != IGNORE_INDEX).sum(), state

    # -- training: truncated BPTT --------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self._train_state = None  # each epoch reads the streams from their start again

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        nats, count, state = self.chunk_loss(batch, self._train_state)
        # The next chunk starts from these values, but its gradients stop here: truncated BPTT.
        self._train_state = detach_state(state)
        loss = nats / count.clamp(min=1)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["inputs"].size(0))
        return loss

    # -- evaluation over the whole span --------------------------------------------------------

    def _start_evaluation(self) -> None:
        self._eval_state = None
        self._sums = torch.zeros(3, dtype=torch.float64, device=self.device)

    def _evaluate(self, batch: dict) -> None:
        nats, count, self._eval_state = self.chunk_loss(batch, self._eval_state)
        self._sums += torch.stack([nats.double(), count.double(), batch["chars"].double()])

    def _finish_evaluation(self, split: str) -> dict[str, float]:
        nats, count, chars = self.trainer.strategy.reduce(self._sums, reduce_op="sum").tolist()
        loss = nats / max(count, 1.0)
        metrics = {
            f"{split}/loss": loss,
            f"{split}/ppl": math.exp(min(loss, 80.0)),
            f"{split}/bpc": nats / math.log(2) / max(chars, 1.0),
        }
        # Already summed over processes: every rank logs the same numbers, nothing to sync.
        self.log_dict(metrics, rank_zero_only=False)
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch)

    def on_validation_epoch_end(self) -> None:
        metrics = self._finish_evaluation("val")
        if not self.trainer.sanity_checking:
            self._report(metrics, "val")

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch)

    def on_test_epoch_end(self) -> None:
        self._report(self._finish_evaluation("test"), "test")

    def _report(self, metrics: dict[str, float], split: str) -> None:
        line = (
            f"epoch {self.current_epoch} step {self.global_step}: {split} loss {metrics[f'{split}/loss']:.4f} nats/token, "
            f"{metrics[f'{split}/bpc']:.4f} bits/char, perplexity {metrics[f'{split}/ppl']:.2f}"
        )
        if self.hparams.sample_tokens > 0 and self.trainer.is_global_zero:
            text = self.generate(
                self.hparams.sample_prompt,
                "sample",
                self.hparams.sample_tokens,
                temperature=self.hparams.sample_temperature,
            )
            line += f"\n--- sample (temperature {self.hparams.sample_temperature}) ---\n{text}\n---"
        self.print(line)

    # -- optimisation --------------------------------------------------------------------------

    def configure_optimizers(self) -> torch.optim.Optimizer:
        decayed, plain = [], []
        for name, p in self.model.named_parameters():
            (decayed if p.dim() >= 2 and not name.startswith("embed") else plain).append(p)
        groups = [
            {"params": decayed, "weight_decay": self.hparams.weight_decay},
            {"params": plain, "weight_decay": 0.0},
        ]
        if math.isfinite(self.trainer.estimated_stepping_batches):  # else only the time budget ends the run
            self.schedule = schedule_segment(self.trainer, self.__dict__.pop("_resumed_schedule", None))
        return torch.optim.AdamW(groups, lr=self.hparams.lr)

    def _progress(self) -> float:
        """Fraction of the run done: the larger of steps / step budget and time / time budget."""
        fractions = []
        if hasattr(self, "schedule"):
            fractions.append(self.schedule.progress(self.global_step))
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
        if timer is not None and timer.time_remaining() is not None:
            elapsed = timer.time_elapsed()
            fractions.append(elapsed / max(elapsed + timer.time_remaining(), 1e-9))
        return min(1.0, max(fractions, default=0.0))

    def lr_factor(self) -> float:
        """Multiplier of ``lr`` for the coming optimizer step."""
        h = self.hparams
        floor = 1.0 if h.schedule == "constant" else h.min_lr_ratio  # a cosine from 1 to 1 is constant
        return warmup_cosine(self.global_step, h.warmup_steps, self._progress(), floor=floor)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        lr = self.hparams.lr * self.lr_factor()
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = lr

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        log_grad_norm(self)
        self.log("train/lr", optimizer.param_groups[0]["lr"], batch_size=1)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if hasattr(self, "schedule"):
            checkpoint[SCHEDULE_KEY] = schedule_state(self.trainer, self.schedule)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.vocab.require_same(
            checkpoint["hyper_parameters"].get("vocab_tokens"),
            "load it with load_language_model, or train on the corpus it was trained on",
        )
        if self._trainer is not None and self.trainer.state.fn == "fit":  # a resumed fit, not a model loaded to use
            self._resumed_schedule = checkpoint.get(SCHEDULE_KEY)  # read by configure_optimizers, which comes next

    # -- generation ----------------------------------------------------------------------------

    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt as ids, with the line-start context a training stream would have had."""
        if self.hparams.level == "char":
            start = ["\n"] if "\n" in self.vocab.tokens else []
            tokens = start + list(prompt)
        else:
            tokens, _ = word_tokens(prompt or "\n")
            if not prompt:
                tokens = tokens[:1]  # just <bos>
            elif not prompt.endswith("\n"):
                tokens = tokens[:-1]  # the last line goes on: no <eos>
        index = {t: i for i, t in enumerate(self.vocab.tokens)}
        return [index.get(t, self.vocab.unk_id) for t in tokens] or [self.vocab.pad_id]  # <pad> embeds to zeros

    def _step_fn(self) -> decoding.StepFn:
        """The model's step for :mod:`captioning.decoding`: never a token the model is not trained to
        predict (<pad>, <bos>; at char level no special at all), so no row ever ends and text runs to
        ``max_tokens``; at word level, after <eos> the <bos> a new line starts with is fed too."""
        pad_id, bos_id, eos_id = self.vocab.pad_id, self.vocab.bos_id, self.vocab.eos_id
        step = self.model.step
        # Char level never trains on a special; word level predicts <eos> (a line end) and <unk>.
        banned = [pad_id, bos_id] if self.hparams.level == "word" else list(range(len(SPECIALS)))

        def run(tokens: Tensor, state: State) -> tuple[Tensor, State]:
            logits, state = step(tokens, state)  # (B, V)
            new_line = tokens == eos_id  # (B,)
            if self.hparams.level == "word" and new_line.any():
                bos_logits, bos_state = step(torch.full_like(tokens, bos_id), state)
                logits = torch.where(new_line[:, None], bos_logits, logits)
                state = _where_state(new_line, bos_state, state)
            logits = logits.clone()
            logits[:, banned] = float("-inf")
            return logits, state

        return run

    @torch.inference_mode()
    def generate(
        self,
        prompt: str = "",
        strategy: str = "sample",
        max_tokens: int = 200,
        *,
        seed: int | None = 0,
        **options,
    ) -> str:
        """Continue ``prompt`` by ``max_tokens`` tokens; returns prompt + continuation.

        ``options`` go to the decoding strategy (``temperature``, ``top_k``, ``top_p`` for
        ``sample``; ``beam_size``, ``length_penalty`` for ``beam``). ``seed`` makes sampling
        reproducible (``None``: the global random state).
        """
        was_training = self.training
        self.eval()
        ids = torch.tensor([self.prompt_ids(prompt)], device=self.device)  # (1, P)
        state = self.model.init_state(1)
        if ids.size(1) > 1:
            _, state = self.model(ids[:, :-1], state)
        if strategy == "sample":
            options["generator"] = None if seed is None else torch.Generator(self.device).manual_seed(seed)
        # pad_id doubles as the end token: it is never chosen, so no row stops before max_tokens.
        pad = self.vocab.pad_id
        decoded = decoding.decode(
            self._step_fn(),
            state,
            ids[:, -1],
            strategy=strategy,
            eos_id=pad,
            pad_id=pad,
            max_length=max_tokens,
            **options,
        )
        self.train(was_training)
        tokens = [self.vocab.tokens[i] for i in decoded.tokens[0].tolist()]
        return _join(prompt, detokenize(tokens, self.hparams.level), self.hparams.level)


def _where_state(rows: Tensor, chosen: State, other: State) -> State:
    """Per batch row (dim 1 of every state tensor): ``chosen`` where ``rows`` is True, else ``other``."""
    if isinstance(chosen, Tensor):
        return torch.where(rows[None, :, None], chosen, other)
    return tuple(_where_state(rows, c, o) for c, o in zip(chosen, other, strict=True))


def _join(prompt: str, continuation: str, level: str) -> str:
    if level == "char" or not prompt or prompt[-1].isspace() or continuation[:1].isspace():
        return prompt + continuation
    return prompt + " " + continuation


# --- checkpoints --------------------------------------------------------------------------------


def load_language_model(path: str | Path, map_location: str | torch.device = "cpu") -> LanguageModule:
    """Rebuild a :class:`LanguageModule` from a checkpoint with ``torch.load(weights_only=True)``:
    only tensors and plain values are unpickled, and nothing but the file is needed."""
    checkpoint = read_checkpoint(path, "language model")
    saved = checkpoint["hyper_parameters"]
    accepted = inspect.signature(LanguageModule.__init__).parameters
    module = LanguageModule(**{k: v for k, v in saved.items() if k in accepted})
    module.load_state_dict(checkpoint["state_dict"])
    return module.to(map_location).eval()


def decoder_state_from_checkpoint(path: str | Path, vocab_tokens: list[str], decoder: nn.Module) -> dict[str, Tensor]:
    """The ``embed``, ``rnn`` and ``out`` weights of a language model checkpoint, ready for
    ``decoder.load_state_dict`` of a caption :class:`~captioning.models.decoder.Decoder`.

    Raises:
        ValueError: the vocabularies differ (train the language model on the caption data set's
            training captions at word level, with the same ``min_freq``), or the shapes differ
            (same ``cell``, ``embed_dim``, ``hidden_dim``, ``num_layers`` are needed).
    """
    checkpoint = read_checkpoint(path, "language model")
    saved = checkpoint["hyper_parameters"]
    if list(saved.get("vocab_tokens") or []) != list(vocab_tokens):
        raise ValueError(
            f"{path}: the language model's vocabulary ({len(saved.get('vocab_tokens') or [])} tokens, level "
            f"{saved.get('level')!r}) differs from the captioner's ({len(vocab_tokens)} tokens): train it with "
            "--data.caption_root on the same data set, --data.level word and the same min_freq"
        )
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    wanted = decoder.state_dict()
    mismatched = sorted(k for k in wanted if k not in state or state[k].shape != wanted[k].shape)
    if mismatched:
        raise ValueError(
            f"{path}: the language model's weights do not fit the decoder ({', '.join(mismatched[:4])}...): "
            f"use the same cell, embed_dim, hidden_dim and num_layers (the LM has cell={saved.get('cell')!r}, "
            f"embed_dim={saved.get('embed_dim')}, hidden_dim={saved.get('hidden_dim')}, num_layers={saved.get('num_layers')})"
        )
    return {k: state[k] for k in wanted}


def init_decoder_from_language_model(decoder: nn.Module, path: str | Path, vocab_tokens: list[str]) -> None:
    """Load a language model's weights into a caption decoder, in place (see :func:`decoder_state_from_checkpoint`)."""
    decoder.load_state_dict(decoder_state_from_checkpoint(path, vocab_tokens, decoder))
