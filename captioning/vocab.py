"""Tokenizer and vocabulary.

The tokenizer is nltk's regular-expression tokenizer: it needs no downloaded data (``word_tokenize``
needs ``punkt`` and fails offline). The vocabulary is a plain list of strings, so it can live inside
a checkpoint's hyperparameters and a JSON file alike, and never drifts from the weights it was
trained with.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from nltk.tokenize import RegexpTokenizer

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)

# Words (with inner apostrophes and hyphens: "don't", "t-shirt"), numbers, or single punctuation marks.
_TOKENIZER = RegexpTokenizer(r"\w+(?:['\-]\w+)*|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-case and split a sentence into word and punctuation tokens."""
    return _TOKENIZER.tokenize(text.lower())


class Vocabulary:
    """Bidirectional token <-> id map with the four specials at ids 0..3."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with the specials {SPECIALS}, got {list(tokens[:4])}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary must not contain duplicate tokens")
        self.tokens: list[str] = list(tokens)
        self._index = {token: i for i, token in enumerate(self.tokens)}

    pad_id, bos_id, eos_id, unk_id = range(4)

    @classmethod
    def build(cls, sentences: Iterable[str], min_freq: int = 1) -> Vocabulary:
        """Count tokens over ``sentences`` and keep those seen at least ``min_freq`` times.

        Tokens are ordered by descending frequency, then alphabetically, so the same corpus
        always gives the same ids.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        counts = Counter(token for sentence in sentences for token in tokenize(sentence))
        kept = sorted(
            (t for t, n in counts.items() if n >= min_freq and t not in SPECIALS), key=lambda t: (-counts[t], t)
        )
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def require_same(self, saved: Sequence[str] | None, fix: str) -> None:
        """Refuse a checkpoint saved with another vocabulary: its ids would mean other words."""
        if saved is not None and list(saved) != self.tokens:
            raise ValueError(
                f"the checkpoint's vocabulary ({len(saved)} tokens) differs from this model's ({len(self)}): {fix}"
            )

    def encode(self, text: str) -> list[int]:
        """``<bos> w1 .. wn <eos>`` as ids; unknown words map to ``<unk>``."""
        ids = [self._index.get(token, self.unk_id) for token in tokenize(text)]
        return [self.bos_id, *ids, self.eos_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Join the tokens up to the first ``<eos>``, dropping the other specials."""
        words = []
        for i in ids:
            if i == self.eos_id:
                break
            if i >= len(SPECIALS):
                words.append(self.tokens[i])
        return " ".join(words)

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokens as a JSON list (atomically: a crash never leaves half a file)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.tokens, ensure_ascii=False, indent=0))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        return cls(json.loads(Path(path).read_text()))
