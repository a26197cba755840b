"""Corpus BLEU-1..4 over all references, correct when evaluation is spread over processes.

Per image, nltk gives the clipped n-gram matches, the n-gram count and the closest reference
length; the corpus score is computed from their sums, exactly as ``nltk.translate.bleu_score.
corpus_bleu`` does (no smoothing). Keeping the statistics per image index lets the processes of a
distributed run pool them and drop the duplicates a distributed sampler pads its shards with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import torch.distributed as dist
from nltk.translate.bleu_score import closest_ref_length, modified_precision

MAX_ORDER = 4
T = TypeVar("T")


def sentence_statistics(hypothesis: Sequence[str], references: Sequence[Sequence[str]]) -> list[int]:
    """[matches_1..4, totals_1..4, hypothesis length, closest reference length]."""
    precisions = [modified_precision(references, hypothesis, n) for n in range(1, MAX_ORDER + 1)]
    matches = [p.numerator for p in precisions]
    totals = [p.denominator for p in precisions]
    return [*matches, *totals, len(hypothesis), closest_ref_length(references, len(hypothesis))]


def bleu_from_statistics(stats: Sequence[Sequence[int]]) -> dict[str, float]:
    """BLEU-1..4 from summed per-sentence statistics."""
    sums = [sum(column) for column in zip(*stats, strict=True)] if stats else [0] * (2 * MAX_ORDER + 2)
    matches, totals = sums[:MAX_ORDER], sums[MAX_ORDER : 2 * MAX_ORDER]
    hyp_len, ref_len = sums[-2], sums[-1]
    brevity = 1.0 if hyp_len > ref_len else (math.exp(1 - ref_len / hyp_len) if hyp_len > 0 else 0.0)
    scores = {}
    for order in range(1, MAX_ORDER + 1):
        if any(m == 0 for m in matches[:order]):
            scores[f"bleu{order}"] = 0.0
            continue
        log_precision = sum(math.log(m / t) for m, t in zip(matches[:order], totals[:order], strict=True)) / order
        scores[f"bleu{order}"] = brevity * math.exp(log_precision)
    return scores


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def pool_by_index(local: dict[int, T]) -> dict[int, T]:
    """Every process's entries, on every process; an index seen twice (sampler padding) counts once."""
    if not distributed():
        return dict(local)
    gathered: list[dict[int, T] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return {index: value for part in gathered for index, value in (part or {}).items()}


class CorpusBLEU:
    """Accumulates per-image statistics keyed by image index; ``compute`` pools all processes."""

    def __init__(self) -> None:
        self.stats: dict[int, list[int]] = {}

    def reset(self) -> None:
        self.stats = {}

    def update(
        self, indices: Sequence[int], hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]
    ) -> None:
        for index, hypothesis, refs in zip(indices, hypotheses, references, strict=True):
            self.stats[int(index)] = sentence_statistics(hypothesis, refs)

    def compute(self) -> dict[str, float]:
        """BLEU-1..4 and ``count``, the number of distinct images scored (over all processes)."""
        pooled = pool_by_index(self.stats)
        scores = bleu_from_statistics(list(pooled.values()))
        scores["count"] = float(len(pooled))
        return scores
