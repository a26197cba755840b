"""LanguageModelDataModule: any text corpus -> contiguous streams for truncated BPTT.

Where the text comes from (at most one of ``files``, ``hf_dataset``, ``caption_root``):

- ``files``: text files or glob patterns, read as UTF-8 in the order given (each pattern's
  matches sorted) and concatenated.
- ``hf_dataset``: a Hugging Face data set (hub name or local folder), one text column, rows
  joined by newlines. Needs a network for hub names.
- ``caption_root``: the captions of a caption data set (any format of
  :func:`captioning.data.captions.load_split`), one caption per line. Its own
  train/validation/test splits are used, so a language model trained here never sees the
  caption model's evaluation text.
- none of them: the embedded default, the English documentation every Python installation
  ships (``pydoc_data.topics``, about 465k characters), so everything runs offline.

Except for captions, the corpus is split into contiguous spans: the first
``1 - val_fraction - test_fraction`` of the tokens train, then validation, then test. The
vocabulary is built from the training span only.

Streams. A span of N tokens gives N - 1 (input, target) pairs; they are cut into S streams,
each a contiguous piece of the text, and every stream is read in chunks of ``bptt`` steps,
in order::

    span:     t0 t1 t2 ... t_{N-1}
    stream s: inputs  t[s*L]   .. t[s*L + L - 1]         L = ceil((N - 1) / S)
              targets t[s*L+1] .. t[s*L + L]
    batch k:  inputs[:, k*bptt : (k+1)*bptt]  (S, bptt)   the next piece of every stream

so the state a model leaves after batch k is the right context for batch k + 1, row by row.
Every target of the span occurs exactly once (the tail of the last stream is padded with
ignored targets). Evaluation spans start one token early (the last token of the previous
span, as context only), so validation predicts *every* token of its span.

Under DDP the S streams are divided among the processes: rank r reads streams
``r*S/W .. (r+1)*S/W - 1`` and nothing else, so W processes compute the same gradients as
one process with S streams.

Dimension letters: S streams, L stream length, T chunk length (``bptt``).
"""

from __future__ import annotations

import glob
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from captioning.vocab import BOS, EOS, SPECIALS, Vocabulary, tokenize

LEVELS = ("char", "word")
IGNORE_INDEX = -100
"""Target id of padding and of tokens that are given rather than predicted (``F.cross_entropy``'s default)."""
SPLITS = ("train", "validation", "test")


# --- corpus sources ------------------------------------------------------------------------


def default_corpus() -> str:
    """The embedded default: every topic of Python's own help text, in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name].strip("\n") for name in sorted(topics)) + "\n"


def read_files(patterns: list[str]) -> str:
    """Concatenate the files matched by ``patterns`` (paths or globs), in the order given."""
    parts = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches or not all(Path(m).is_file() for m in matches):
            raise FileNotFoundError(f"data.files: {pattern!r} matches no file")
        for match in matches:
            try:
                text = Path(match).read_text(encoding="utf-8-sig")
            except UnicodeDecodeError as error:  # training on U+FFFD for every accent would be silent damage
                raise ValueError(
                    f"data.files: {match} is not UTF-8 (byte {error.start}: {error.object[error.start : error.start + 1]!r}); "
                    f"convert it, e.g. `iconv -f latin1 -t utf-8 {match} > {Path(match).stem}.utf8.txt`"
                ) from error
            parts.append(text if text.endswith("\n") else text + "\n")
    return "".join(parts)


def read_hf(name: str, config: str | None, split: str, column: str) -> str:
    """One split of a Hugging Face data set, its ``column`` rows joined by newlines."""
    import datasets

    table = datasets.load_dataset(name, config, split=split)
    if column not in table.column_names:
        raise ValueError(f"data.text_column {column!r} is not a column of {name} (columns: {table.column_names})")
    return "\n".join(row.rstrip("\n") for row in table[column]) + "\n"


def caption_lines(root: str, split: str, format: str = "auto") -> list[str]:
    """Every caption of one split of a caption data set, in data set order."""
    from captioning.data.captions import load_split

    table = load_split(root, split, format)
    return [caption.replace("\n", " ") for captions in table["captions"] for caption in captions]


# --- tokens ----------------------------------------------------------------------------------


def word_tokens(text: str) -> tuple[list[str], list[float]]:
    """Each line as ``<bos> words <eos>``: the caption tokenizer (lower-cased words and
    punctuation), framed the way the caption decoder reads a caption.

    Also returns how many characters of ``text`` each token stands for: a word its length,
    ``<eos>`` the rest of its line (spaces and the newline), ``<bos>`` none (it is given, never
    predicted). The weights sum to ``len(text)``, so a loss per token converts to bits per character.
    """
    tokens: list[str] = []
    chars: list[float] = []
    for line in text.splitlines(keepends=True):
        words = tokenize(line)
        tokens += [BOS, *words, EOS]
        chars += [
            0.0,
            *(float(len(w)) for w in words),
            float(max(0, len(line) - sum(len(w) for w in words))),
        ]
    return tokens, chars


def build_vocabulary(tokens: list[str] | str, min_freq: int = 1) -> Vocabulary:
    """Specials, then the tokens seen at least ``min_freq`` times, most frequent first (ties in
    alphabetical order), as :meth:`Vocabulary.build` orders them."""
    if min_freq < 1:
        raise ValueError(f"data.min_freq must be >= 1, got {min_freq}")
    counts = Counter(tokens)
    kept = sorted(
        (t for t, n in counts.items() if n >= min_freq and t not in SPECIALS),
        key=lambda t: (-counts[t], t),
    )
    return Vocabulary([*SPECIALS, *kept])


def encode(tokens: list[str] | str, vocab: Vocabulary) -> Tensor:
    """Token strings (or the characters of a string) -> (N,) ids, ``<unk>`` for unknown ones."""
    index, unk = {t: i for i, t in enumerate(vocab.tokens)}, vocab.unk_id
    return torch.tensor([index.get(t, unk) for t in tokens], dtype=torch.long)


def detokenize(tokens: list[str], level: str) -> str:
    """Inverse of the tokenizers, as far as it goes: word level joins with spaces, ``<eos>`` is a newline."""
    if level == "char":
        return "".join(tokens)
    pieces: list[str] = []
    for token in tokens:
        if token == EOS:
            pieces.append("\n")
        elif token != BOS:
            pieces.append(token if not pieces or pieces[-1] == "\n" else " " + token)
    return "".join(pieces)


# --- streams ---------------------------------------------------------------------------------


def stream_layout(ids: Tensor, targets: Tensor, chars: Tensor, num_streams: int) -> tuple[Tensor, Tensor, Tensor]:
    """Lay one span out as ``num_streams`` contiguous streams (see the module docstring).

    Args:
        ids: (N,) token ids of the span.
        targets: (N,) the same ids, with ``IGNORE_INDEX`` where a token is not to be predicted.
        chars: (N,) characters each token stands for.
        num_streams: S.

    Returns:
        ``inputs`` (S, L), ``targets`` (S, L) and ``chars`` (S, L) of each target; the padding
        after the last pair has input ``<pad>``, target ``IGNORE_INDEX`` and 0 characters.
    """
    pairs = max(0, ids.numel() - 1)
    length = max(1, math.ceil(pairs / num_streams))
    pad = num_streams * length - pairs

    def lay(x: Tensor, fill: float) -> Tensor:
        return torch.cat([x, x.new_full((pad,), fill)]).view(num_streams, length)  # (S, L)

    target_chars = chars[1:].masked_fill(targets[1:] == IGNORE_INDEX, 0.0)
    return lay(ids[:-1], Vocabulary.pad_id), lay(targets[1:], IGNORE_INDEX), lay(target_chars, 0.0)


class Chunks(IterableDataset):
    """The chunks ``[:, k*bptt : (k+1)*bptt]`` of a stream layout, in order, one batch each.

    Iterable so that Lightning never inserts a ``DistributedSampler``, which would deal whole
    chunks to different processes and break every stream; the rank's streams are chosen by
    the data module instead.
    """

    def __init__(self, inputs: Tensor, targets: Tensor, chars: Tensor, bptt: int) -> None:
        self.inputs, self.targets, self.chars, self.bptt = inputs, targets, chars, bptt

    def __len__(self) -> int:
        return math.ceil(self.inputs.size(1) / self.bptt)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for start in range(0, self.inputs.size(1), self.bptt):
            cut = slice(start, start + self.bptt)
            yield {
                "inputs": self.inputs[:, cut],  # (S, T)
                "targets": self.targets[:, cut],  # (S, T)
                "chars": self.chars[:, cut].sum(),  # characters the targets stand for
            }


class LanguageModelDataModule(L.LightningDataModule):
    """Text for a language model, as contiguous streams read in ``bptt`` chunks.

    Args:
        files: Text files or glob patterns (see the module docstring for the sources).
        hf_dataset: Hugging Face data set name or local folder.
        hf_config: Its configuration name, if it has several (e.g. ``wikitext-2-raw-v1``).
        hf_split: Which of its splits to read; it is then cut into spans like any text.
        text_column: The column holding the text.
        caption_root: A caption data set whose captions are the corpus (its own splits are kept).
        caption_format: Format of ``caption_root`` (``auto``, ``imagefolder``, ``karpathy``, ``flickr8k``).
        level: ``char`` (every character a token) or ``word`` (words and punctuation, lower-cased,
            each line ``<bos> words <eos>`` as the caption decoder reads a caption; ``<bos>`` is
            given, never predicted).
        val_fraction: Share of the tokens, after the training span, used for validation.
        test_fraction: Share of the tokens, at the end, used for testing.
        max_chars: Keep only the first N characters of the text (quick runs); not with ``caption_root``.
        min_freq: Word level: words seen fewer times in the training span become ``<unk>``.
        batch_size: Training streams S, in total over all processes (divided among them under DDP).
        eval_batch_size: Evaluation streams, in total over all processes.
        bptt: Time steps per chunk: how far back gradients reach (values reach further).
    """

    def __init__(
        self,
        files: list[str] | None = None,
        hf_dataset: str | None = None,
        hf_config: str | None = None,
        hf_split: str = "train",
        text_column: str = "text",
        caption_root: str | None = None,
        caption_format: str = "auto",
        level: str = "char",
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        max_chars: int | None = None,
        min_freq: int = 1,
        batch_size: int = 32,
        eval_batch_size: int = 16,
        bptt: int = 128,
    ) -> None:
        super().__init__()
        if isinstance(files, str):
            files = [files]
        given = [
            name
            for name, value in (
                ("files", files),
                ("hf_dataset", hf_dataset),
                ("caption_root", caption_root),
            )
            if value
        ]
        if len(given) > 1:
            raise ValueError(f"give at most one text source, got data.{' and data.'.join(given)}")
        if level not in LEVELS:
            raise ValueError(f"data.level must be one of {LEVELS}, got {level!r}")
        if not (val_fraction >= 0 and test_fraction >= 0 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"data.val_fraction and data.test_fraction must be >= 0 with a sum < 1, got {val_fraction} and {test_fraction}"
            )
        for option, value in (
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
            ("bptt", bptt),
        ):
            if value < 1:
                raise ValueError(f"data.{option} must be >= 1, got {value}")
        if max_chars is not None and (max_chars < 1 or caption_root):
            raise ValueError(f"data.max_chars must be >= 1 and cannot cut caption splits, got {max_chars}")
        self.save_hyperparameters()
        self.hparams.files = files
        self._spans: dict[str, tuple[list[str] | str, list[float] | None]] | None = None
        self._vocabulary: Vocabulary | None = None
        self._datasets: dict[str, Chunks] = {}

    # -- corpus -----------------------------------------------------------------------------

    @property
    def source(self) -> str:
        """Where the text comes from: ``files``, ``hf_dataset``, ``caption_root`` or ``default``."""
        h = self.hparams
        given = {"files": h.files, "hf_dataset": h.hf_dataset, "caption_root": h.caption_root}
        return next((name for name, value in given.items() if value), "default")

    def _tokens(self, text: str) -> tuple[list[str] | str, list[float] | None]:
        """Char level keeps the string itself (a sequence of 1-character tokens, 1 char each)."""
        return (text, None) if self.hparams.level == "char" else word_tokens(text)

    def spans(self) -> dict[str, tuple[list[str] | str, list[float] | None]]:
        """Tokens (strings) and characters per token (``None``: 1 each) of each split, read once.

        Evaluation spans of a cut corpus start with one token of context (see the module docstring).
        """
        if self._spans is not None:
            return self._spans
        h = self.hparams
        if self.source == "caption_root":
            texts = {
                split: "\n".join(caption_lines(h.caption_root, split, h.caption_format)) + "\n" for split in SPLITS[:2]
            }
            try:
                texts["test"] = "\n".join(caption_lines(h.caption_root, "test", h.caption_format)) + "\n"
            except (FileNotFoundError, ValueError):
                texts["test"] = ""  # no test split: an error only if the test loop asks for it
            self._spans = {split: self._tokens(text) for split, text in texts.items()}
            return self._spans
        if self.source == "files":
            text = read_files(h.files)
        elif self.source == "hf_dataset":
            text = read_hf(h.hf_dataset, h.hf_config, h.hf_split, h.text_column)
        else:
            text = default_corpus()
        if h.max_chars is not None:
            text = text[: h.max_chars]
        tokens, chars = self._tokens(text)
        n = len(tokens)
        n_val, n_test = round(n * h.val_fraction), round(n * h.test_fraction)
        n_train = n - n_val - n_test
        if n_train < 2:
            raise ValueError(f"the training span has {n_train} tokens: the corpus ({n} tokens) is too small")
        bounds = {
            "train": (0, n_train),
            "validation": (n_train - 1, n_train + n_val),
            "test": (n_train + n_val - 1, n),
        }
        self._spans = {split: (tokens[a:b], None if chars is None else chars[a:b]) for split, (a, b) in bounds.items()}
        return self._spans

    @property
    def vocabulary(self) -> Vocabulary:
        """Built from the training span only: no peeking at evaluation text."""
        if self._vocabulary is None:
            self._vocabulary = build_vocabulary(self.spans()["train"][0], self.hparams.min_freq)
        return self._vocabulary

    @property
    def vocab_tokens(self) -> list[str]:
        """The vocabulary as plain strings (what the CLI hands to the model)."""
        return self.vocabulary.tokens

    @property
    def level(self) -> str:
        return self.hparams.level

    # -- streams ----------------------------------------------------------------------------

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def streams(self, split: str, rank: int = 0, world_size: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        """``inputs``, ``targets`` and ``chars`` (S / world_size, L) of one split, for one process."""
        h = self.hparams
        total = h.batch_size if split == "train" else h.eval_batch_size
        if total % world_size:
            option = "batch_size" if split == "train" else "eval_batch_size"
            raise ValueError(f"data.{option} ({total}) must be divisible by the number of processes ({world_size})")
        tokens, chars = self.spans()[split]
        if len(tokens) < 2:
            fixes = {
                "train": "lower data.val_fraction and data.test_fraction, or give more text",
                "validation": "raise data.val_fraction, or turn validation off with --trainer.limit_val_batches 0",
                "test": "raise data.test_fraction",
            }
            fix = f"give {h.caption_root} captions in that split" if h.caption_root else fixes[split]
            raise ValueError(f"the {split} span of the corpus is empty: {fix}")
        ids = encode(tokens, self.vocabulary)  # (N,)
        # <bos> is given, never predicted
        targets = ids.masked_fill(ids == Vocabulary.bos_id, IGNORE_INDEX)
        weights = torch.ones(len(ids)) if chars is None else torch.tensor(chars, dtype=torch.float32)
        layout = stream_layout(ids, targets, weights, total)
        per_rank = total // world_size
        return tuple(x[rank * per_rank : (rank + 1) * per_rank] for x in layout)

    def setup(self, stage: str | None = None) -> None:
        rank, world_size = self._rank()
        wanted = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}
        for split in wanted.get(stage, SPLITS):
            # An empty span (val_fraction 0, say) is an error only when its loader is asked for.
            if split not in self._datasets and len(self.spans()[split][0]) >= 2:
                self._datasets[split] = Chunks(*self.streams(split, rank, world_size), self.hparams.bptt)

    def _loader(self, split: str) -> DataLoader:
        if split not in self._datasets:
            self._datasets[split] = Chunks(*self.streams(split, *self._rank()), self.hparams.bptt)
        # batch_size=None: each item already is a (S, T) batch; one process keeps the chunks in order.
        return DataLoader(self._datasets[split], batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
