"""Tests for captioning.decoding, on hand-made step functions whose answers are known.

Vocabulary used throughout: 0 <pad>, 1 <bos>, 2 <eos>, 3.. words.
"""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captioning.decoding import (
    Decoded,
    beam_search,
    decode,
    decoding_options,
    greedy,
    inverse_cdf,
    row_generators,
    sample,
)

PAD, BOS, EOS = 0, 1, 2


# --- hand-made models ---------------------------------------------------------------------


class TableModel:
    """Logits depend only on the previous token: ``logits = table[token]``.

    The state is a dummy (1, B, 1) tensor that counts steps; ``calls`` counts model calls.
    """

    def __init__(self, table: Tensor) -> None:
        self.table = table
        self.calls = 0

    def __call__(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        assert tokens.dim() == 1 and state.shape == (1, tokens.size(0), 1)
        self.calls += 1
        return self.table[tokens], state + 1

    def state(self, batch: int) -> Tensor:
        return torch.zeros(1, batch, 1)


def table_from_probs(vocab: int, rows: dict[int, dict[int, float]], default_eos: float = 0.9):
    """(V, V) log-probability table; unlisted mass is spread evenly, unlisted rows favour <eos>."""
    table = torch.empty(vocab, vocab, dtype=torch.float64)
    for prev in range(vocab):
        probs = rows.get(prev, {EOS: default_eos})
        rest = (1.0 - sum(probs.values())) / (vocab - len(probs))
        table[prev] = torch.tensor([probs.get(v, rest) for v in range(vocab)]).log()
    return table.float()


class TinyLSTM(nn.Module):
    """A seeded one-layer LSTM language model; its state (h, c) stands in for image features."""

    def __init__(self, vocab: int = 7, hidden: int = 8, seed: int = 0, eos_bias: float = 0.0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, hidden)
        self.lstm = nn.LSTM(hidden, hidden)
        self.out = nn.Linear(hidden, vocab)
        with torch.no_grad():  # sharper distributions, so captions end and paths differ
            self.out.weight.mul_(3.0)
            self.out.bias[EOS] += eos_bias
        self.hidden = hidden

    def forward(self, tokens: Tensor, state: tuple[Tensor, Tensor]):
        y, state = self.lstm(self.embed(tokens)[None], state)  # (1, B, H)
        return self.out(y[0]), state  # (B, V)

    def state(self, batch: int, seed: int = 1) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(1, batch, self.hidden, generator=g) for _ in range(2))


@torch.inference_mode()
def sequence_log_prob(step, state, start: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
    """Teacher-force ``tokens`` through ``step`` and sum the log-probs of the first ``lengths``."""
    total = torch.zeros(start.size(0), dtype=torch.float64)
    inputs = start
    for t in range(tokens.size(1)):
        logits, state = step(inputs, state)
        lp = F.log_softmax(logits.double(), dim=-1).gather(1, tokens[:, t : t + 1]).squeeze(1)
        total += torch.where(t < lengths, lp, torch.zeros_like(lp))
        inputs = tokens[:, t]
    return total


def assert_well_formed(out: Decoded, max_length: int) -> None:
    """<eos> only as a row's last token, pad after it, lengths consistent, T <= max_length."""
    batch, width = out.tokens.shape
    assert width <= max_length and out.lengths.shape == (batch,) and out.log_probs.shape == (batch,)
    assert width == int(out.lengths.max())
    for row, length in zip(out.tokens.tolist(), out.lengths.tolist(), strict=True):
        body = row[:length]
        assert EOS not in body[:-1]
        assert body[-1] == EOS or length == max_length
        assert all(tok == PAD for tok in row[length:])


# A table whose argmax path from each start token is known: 1->3->4->eos, 5->eos, 6->7->3->4->eos.
NEXT = {1: 3, 3: 4, 4: EOS, 5: EOS, 6: 7, 7: 3}


def chain_table(vocab: int = 8) -> Tensor:
    table = torch.zeros(vocab, vocab)
    for prev in range(vocab):
        table[prev, NEXT.get(prev, EOS)] = 3.0
    return table


STEP_LOGP = 3.0 - math.log(math.exp(3.0) + 7)  # log-prob of the favoured token, V = 8


# --- greedy and the common rules ----------------------------------------------------------


def test_greedy_follows_the_argmax_path_and_rows_stop_independently():
    model = TableModel(chain_table())
    start = torch.tensor([1, 5, 6])
    out = greedy(model, model.state(3), start, eos_id=EOS, pad_id=PAD, max_length=10)
    assert out.tokens.tolist() == [[3, 4, EOS, PAD], [EOS, PAD, PAD, PAD], [7, 3, 4, EOS]]
    assert out.lengths.tolist() == [3, 1, 4]
    torch.testing.assert_close(out.log_probs, torch.tensor([3, 1, 4]) * STEP_LOGP)
    assert model.calls == 4  # stopped as soon as the last row ended, not at max_length
    assert_well_formed(out, 10)


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_max_length_truncates_every_row(strategy):
    model = TableModel(chain_table())
    start = torch.tensor([1, 5, 6])
    options = {"temperature": 1e-4} if strategy == "sample" else {}
    out = decode(
        model,
        model.state(3),
        start,
        strategy=strategy,
        eos_id=EOS,
        pad_id=PAD,
        max_length=2,
        **options,
    )
    assert out.tokens.tolist() == [[3, 4], [EOS, PAD], [7, 3]]
    assert out.lengths.tolist() == [2, 1, 2]
    assert model.calls <= 2
    assert_well_formed(out, 2)


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_min_length_holds_back_eos_but_scores_with_the_raw_model(strategy):
    # The model wants <eos> at once (p=0.9 everywhere); word 3 is second best.
    table = table_from_probs(6, {v: {EOS: 0.9, 3: 0.06} for v in range(6)})
    model = TableModel(table)
    options = {"temperature": 1e-4} if strategy == "sample" else {}
    out = decode(
        model,
        model.state(2),
        torch.tensor([BOS, BOS]),
        strategy=strategy,
        eos_id=EOS,
        pad_id=PAD,
        max_length=6,
        min_length=3,
        **options,
    )
    assert out.tokens.tolist() == [[3, 3, 3, EOS]] * 2
    assert out.lengths.tolist() == [4, 4]
    expected = 3 * math.log(0.06) + math.log(0.9)  # unmasked log-probs, not renormalised
    torch.testing.assert_close(out.log_probs, torch.full((2,), expected), rtol=0, atol=1e-5)


def test_model_that_never_ends_fills_max_length():
    table = chain_table()
    table[:, EOS] = -20.0
    model = TableModel(table)
    out = greedy(model, model.state(2), torch.tensor([1, 6]), eos_id=EOS, pad_id=PAD, max_length=5)
    assert out.tokens.shape == (2, 5) and out.lengths.tolist() == [5, 5]
    assert not (out.tokens == EOS).any()


def test_low_precision_logits_are_scored_in_float32():
    model = TableModel(chain_table().half())
    out = greedy(model, model.state(1), torch.tensor([1]), eos_id=EOS, pad_id=PAD, max_length=5)
    assert out.log_probs.dtype == torch.float32
    assert out.tokens.tolist() == [[3, 4, EOS]]


# --- sampling -----------------------------------------------------------------------------

LOGITS = torch.tensor([0.0, 1.0, 2.0, 0.5, -1.0])


def one_step_sample(n: int, seed: int = 0, per_row: bool = False, **options) -> Decoded:
    """n rows, one step each, from the fixed distribution ``LOGITS`` (no <eos> in play); one
    random stream for the batch, or one per row (the inverse-CDF path)."""

    def step(tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        return LOGITS.expand(tokens.size(0), -1), state

    return sample(
        step,
        torch.zeros(1, n, 1),
        torch.full((n,), BOS),
        eos_id=99,
        pad_id=PAD,
        max_length=1,
        generator=row_generators(seed, [str(i) for i in range(n)]) if per_row else torch.Generator().manual_seed(seed),
        **options,
    )


@pytest.mark.parametrize("per_row", [False, True], ids=["one-stream", "per-row"])
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_temperature_divides_the_logits(tau, per_row):
    out = one_step_sample(20_000, temperature=tau, per_row=per_row)
    freq = torch.bincount(out.tokens[:, 0], minlength=5).float() / 20_000
    # Binomial s.d. is at most 0.0036 here; the three temperatures differ by > 0.1 somewhere.
    torch.testing.assert_close(freq, torch.softmax(LOGITS / tau, 0), rtol=0, atol=0.015)
    # Scored with the untempered model.
    torch.testing.assert_close(out.log_probs, torch.log_softmax(LOGITS, 0)[out.tokens[:, 0]])


@pytest.mark.parametrize("per_row", [False, True], ids=["one-stream", "per-row"])
def test_top_k_never_leaves_the_k_most_probable(per_row):
    out = one_step_sample(5_000, temperature=3.0, top_k=2, per_row=per_row)  # flat, so the cut is what holds it
    assert set(out.tokens[:, 0].tolist()) == {2, 1}


@pytest.mark.parametrize("per_row", [False, True], ids=["one-stream", "per-row"])
def test_top_p_keeps_only_the_nucleus(per_row):
    probs = torch.softmax(LOGITS, 0)  # sorted: 2 (.53), 1 (.19), 3 (.12), 0 (.07), 4 (.03)
    out = one_step_sample(20_000, top_p=0.8, per_row=per_row)  # .53 + .19 < .8, so the nucleus is {2, 1, 3}
    assert set(out.tokens[:, 0].tolist()) == {2, 1, 3}
    freq = torch.bincount(out.tokens[:, 0], minlength=5).float() / 20_000
    nucleus = torch.zeros(5)
    nucleus[[2, 1, 3]] = probs[[2, 1, 3]] / probs[[2, 1, 3]].sum()
    torch.testing.assert_close(freq, nucleus, rtol=0, atol=0.015)
    assert set(one_step_sample(2_000, top_p=0.5).tokens[:, 0].tolist()) == {2}


def test_top_k_and_top_p_compose():
    out = one_step_sample(5_000, temperature=5.0, top_k=3, top_p=0.5)
    # After the top-3 cut at tau=5 the masses are about .38/.31/.30: the nucleus is {2, 1}.
    assert set(out.tokens[:, 0].tolist()) == {2, 1}


def test_same_seed_same_samples_other_seed_differs():
    lstm = TinyLSTM()
    start = torch.full((16,), BOS)

    def run(seed: int) -> Decoded:
        g = torch.Generator().manual_seed(seed)
        return sample(lstm, lstm.state(16), start, eos_id=EOS, pad_id=PAD, max_length=8, generator=g)

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.log_probs, b.log_probs)
    assert not torch.equal(a.tokens, c.tokens)
    assert_well_formed(a, 8)
    torch.testing.assert_close(
        a.log_probs.double(), sequence_log_prob(lstm, lstm.state(16), start, a.tokens, a.lengths)
    )


def test_per_row_generators_make_each_row_independent_of_its_batch():
    lstm = TinyLSTM()
    state = lstm.state(16)

    def run(rows: list[int]) -> Decoded:
        h, c = (s[:, rows] for s in state)
        generators = row_generators(7, [f"image-{r}" for r in rows])
        return sample(
            lstm, (h, c), torch.full((len(rows),), BOS), eos_id=EOS, pad_id=PAD, max_length=8, generator=generators
        )

    whole = run(list(range(16)))
    halves = [run(list(range(0, 8))), run(list(range(8, 16)))]
    backwards = run(list(range(15, -1, -1)))
    for r in range(16):
        n = whole.lengths[r]
        assert torch.equal(halves[r // 8].tokens[r % 8, :n], whole.tokens[r, :n])
        assert torch.equal(backwards.tokens[15 - r, :n], whole.tokens[r, :n])
    assert len({tuple(t.tolist()) for t in whole.tokens}) > 4  # and rows do differ from each other
    with pytest.raises(ValueError, match="one per row"):
        sample(
            lstm,
            lstm.state(2),
            torch.full((2,), BOS),
            eos_id=EOS,
            pad_id=PAD,
            max_length=3,
            generator=row_generators(0, ["a"]),
        )


def test_very_low_temperature_is_greedy():
    lstm = TinyLSTM()
    start = torch.full((8,), BOS)
    g = torch.Generator().manual_seed(0)
    cold = sample(
        lstm,
        lstm.state(8),
        start,
        eos_id=EOS,
        pad_id=PAD,
        max_length=10,
        temperature=1e-4,
        generator=g,
    )
    hot = greedy(lstm, lstm.state(8), start, eos_id=EOS, pad_id=PAD, max_length=10)
    assert torch.equal(cold.tokens, hot.tokens)
    torch.testing.assert_close(cold.log_probs, hot.log_probs)


# --- beam search --------------------------------------------------------------------------


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_of_one_is_greedy(length_penalty):
    lstm = TinyLSTM()
    start = torch.full((8,), BOS)
    beam = beam_search(
        lstm,
        lstm.state(8),
        start,
        eos_id=EOS,
        pad_id=PAD,
        max_length=10,
        beam_size=1,
        length_penalty=length_penalty,
    )
    best = greedy(lstm, lstm.state(8), start, eos_id=EOS, pad_id=PAD, max_length=10)
    assert torch.equal(beam.tokens, best.tokens) and torch.equal(beam.lengths, best.lengths)
    torch.testing.assert_close(beam.log_probs, best.log_probs)


@pytest.mark.parametrize("min_length", [0, 2])
def test_beam_is_at_least_as_probable_as_greedy_and_scores_its_own_tokens(min_length):
    lstm = TinyLSTM(seed=2, eos_bias=0.5)
    start = torch.full((8,), BOS)
    kwargs = {"eos_id": EOS, "pad_id": PAD, "max_length": 12, "min_length": min_length}
    best = greedy(lstm, lstm.state(8), start, **kwargs)
    beam = beam_search(lstm, lstm.state(8), start, beam_size=4, length_penalty=0.0, **kwargs)
    # Complete captions on both sides, so that comparing their probabilities is fair.
    assert (best.tokens == EOS).any(dim=1).all() and (beam.tokens == EOS).any(dim=1).all()
    assert_well_formed(beam, 12)
    assert (beam.log_probs >= best.log_probs - 1e-5).all()
    assert (beam.log_probs > best.log_probs + 1e-3).any()  # and the search does find better
    # Reported log-probs are the model's for the returned tokens: this fails if beam states
    # were not reordered along with their hypotheses.
    rescored = sequence_log_prob(lstm, lstm.state(8), start, beam.tokens, beam.lengths)
    torch.testing.assert_close(beam.log_probs.double(), rescored, rtol=0, atol=1e-5)


# Greedy is misled: from <bos>, word 3 (p=.5) beats word 4 (p=.4), but after 3 nothing is
# likely, while 4 is almost surely followed by <eos>.
MISLEADING = table_from_probs(
    8,
    {
        BOS: {3: 0.5, 4: 0.4},
        3: {5: 0.3, 6: 0.25, 7: 0.25, EOS: 0.1},
        4: {EOS: 0.95},
    },
)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_beats_greedy_when_greedy_is_misled(length_penalty):
    model = TableModel(MISLEADING)
    start = torch.tensor([BOS, BOS])
    best = greedy(model, model.state(2), start, eos_id=EOS, pad_id=PAD, max_length=6)
    assert best.tokens.tolist() == [[3, 5, EOS]] * 2  # .5 * .3 * .9 = .135
    beam = beam_search(
        model,
        model.state(2),
        start,
        eos_id=EOS,
        pad_id=PAD,
        max_length=6,
        beam_size=2,
        length_penalty=length_penalty,
    )
    assert beam.tokens.tolist() == [[4, EOS]] * 2  # .4 * .95 = .38
    torch.testing.assert_close(beam.log_probs, torch.full((2,), math.log(0.38)))
    assert (beam.log_probs > best.log_probs).all()


def test_length_penalty_trades_probability_for_length():
    # <eos> at once has p=.5; "3 <eos>" has p=.45*.98=.441 but a better mean per token.
    model = TableModel(table_from_probs(6, {BOS: {EOS: 0.5, 3: 0.45}, 3: {EOS: 0.98}}))
    start = torch.tensor([BOS])
    kwargs = {"eos_id": EOS, "pad_id": PAD, "max_length": 5, "beam_size": 2}
    total = beam_search(model, model.state(1), start, length_penalty=0.0, **kwargs)
    mean = beam_search(model, model.state(1), start, length_penalty=1.0, **kwargs)
    assert total.tokens.tolist() == [[EOS]]
    assert mean.tokens.tolist() == [[3, EOS]]
    torch.testing.assert_close(mean.log_probs, torch.tensor([math.log(0.441)]))  # unpenalised


def test_wide_beam_finds_the_most_probable_caption():
    # V=5 and max_length=3: with K=16 no prefix is ever pruned, so (length_penalty 0) the
    # beam must return the most probable complete caption, found here by enumeration.
    lstm = TinyLSTM(vocab=5, seed=2, eos_bias=-1.0)
    start = torch.full((4,), BOS)
    beam = beam_search(
        lstm,
        lstm.state(4),
        start,
        eos_id=EOS,
        pad_id=PAD,
        max_length=3,
        beam_size=16,
        length_penalty=0.0,
    )
    words = [0, 1, 3, 4]
    captions = [list(p) + [EOS] for n in range(3) for p in itertools.product(words, repeat=n)]
    scores = torch.stack(
        [
            sequence_log_prob(
                lstm,
                lstm.state(4),
                start,
                torch.tensor([c + [PAD] * (3 - len(c))] * 4),
                torch.full((4,), len(c)),
            )
            for c in captions
        ]
    )  # (captions, B)
    best_score, best_index = scores.max(dim=0)
    for row in range(4):
        caption = captions[int(best_index[row])]
        assert beam.tokens[row, : len(caption)].tolist() == caption
    torch.testing.assert_close(beam.log_probs.double(), best_score, rtol=0, atol=1e-5)


def test_beam_without_eos_returns_the_best_unfinished_beam():
    table = chain_table()
    table[:, EOS] = float("-inf")  # <eos> is impossible
    model = TableModel(table)
    start = torch.tensor([1, 6, 5])
    out = beam_search(model, model.state(3), start, eos_id=EOS, pad_id=PAD, max_length=5, beam_size=3)
    assert out.tokens.shape == (3, 5) and out.lengths.tolist() == [5, 5, 5]
    assert not (out.tokens == EOS).any()
    assert out.log_probs.isfinite().all()
    rescored = sequence_log_prob(model, model.state(3), start, out.tokens, out.lengths)
    torch.testing.assert_close(out.log_probs.double(), rescored, rtol=0, atol=1e-5)
    # Each step's favourite continues the path: 1 -> 3 4 eos(forbidden) -> ...
    assert out.tokens[0, :2].tolist() == [3, 4]


def test_no_repeat_ngram_size_blocks_repeats():
    # A model stuck in the loop 3 -> 4 -> 3 -> ... that never says <eos>.
    table = torch.zeros(8, 8)
    table[3, 4] = table[4, 3] = table[BOS, 3] = 4.0
    table[:, EOS] = -30.0
    model = TableModel(table)
    start = torch.tensor([BOS, BOS])
    kwargs = {"eos_id": EOS, "pad_id": PAD, "max_length": 6, "beam_size": 2}
    loop = beam_search(model, model.state(2), start, **kwargs)
    assert loop.tokens[0].tolist() == [3, 4, 3, 4, 3, 4]
    for n in (1, 2, 3):
        out = beam_search(model, model.state(2), start, no_repeat_ngram_size=n, **kwargs)
        assert out.lengths.tolist() == [6, 6]
        for row in out.tokens.tolist():
            grams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
            assert len(grams) == len(set(grams)), (n, row)
    two = beam_search(model, model.state(2), start, no_repeat_ngram_size=2, **kwargs)
    assert two.tokens[0, :3].tolist() == [3, 4, 3]  # the repeat is blocked only at (3, 4)


def test_no_repeat_ngram_blocks_a_bigram_whose_last_token_also_ends_others():
    # Favourites 3->4, 4->5, 5->4, seconds 3->6, 4->3, then 6->3; no <eos>. By hand, n=2:
    # 3 4 5 4 | 4->5 would repeat (4,5): 3 | 3->4 would repeat (3,4): 6 | 3.
    # At the 6, token 4 ends both (3,4), which is banned, and (5,4), which is not.
    table = torch.zeros(8, 8)
    table[BOS, 3] = table[3, 4] = table[4, 5] = table[5, 4] = table[6, 3] = 4.0
    table[3, 6] = table[4, 3] = 2.0
    table[:, EOS] = -30.0
    model = TableModel(table)
    out = beam_search(
        model,
        model.state(1),
        torch.tensor([BOS]),
        eos_id=EOS,
        pad_id=PAD,
        max_length=7,
        beam_size=1,
        no_repeat_ngram_size=2,
    )
    assert out.tokens.tolist() == [[3, 4, 5, 4, 3, 6, 3]]


def test_beam_rows_are_independent():
    # Decoding images together gives what decoding each alone gives.
    lstm = TinyLSTM(seed=4, eos_bias=1.0)
    h, c = lstm.state(3)
    start = torch.full((3,), BOS)
    kwargs = {"eos_id": EOS, "pad_id": PAD, "max_length": 8, "beam_size": 3}
    together = beam_search(lstm, (h, c), start, **kwargs)
    for row in range(3):
        alone = beam_search(lstm, (h[:, row : row + 1], c[:, row : row + 1]), start[:1], **kwargs)
        length = int(alone.lengths[0])
        assert together.tokens[row, :length].tolist() == alone.tokens[0].tolist()
        torch.testing.assert_close(together.log_probs[row], alone.log_probs[0])


# --- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "options", "name"),
    [
        ("sample", {"temperature": 0.0}, "temperature"),
        ("sample", {"temperature": -1.0}, "temperature"),
        ("sample", {"temperature": float("nan")}, "temperature"),
        ("sample", {"top_p": 0.0}, "top_p"),
        ("sample", {"top_p": 1.5}, "top_p"),
        ("sample", {"top_k": 0}, "top_k"),
        ("beam", {"beam_size": 0}, "beam_size"),
        ("beam", {"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ("greedy", {"max_length": 0}, "max_length"),
        ("greedy", {"min_length": 9}, "min_length"),
        ("bogus", {}, "strategy"),
    ],
)
def test_bad_options_raise_value_error_naming_the_option(strategy, options, name):
    model = TableModel(chain_table())
    kwargs = {"eos_id": EOS, "pad_id": PAD, "max_length": 5, **options}
    with pytest.raises(ValueError, match=name):
        decode(model, model.state(1), torch.tensor([BOS]), strategy=strategy, **kwargs)


def test_unknown_strategy_lists_the_valid_ones():
    model = TableModel(chain_table())
    with pytest.raises(ValueError, match="'greedy', 'sample', 'beam'"):
        decode(
            model,
            model.state(1),
            torch.tensor([BOS]),
            strategy="nucleus",
            eos_id=EOS,
            pad_id=PAD,
            max_length=3,
        )


def test_decoding_options_keeps_only_those_of_the_strategy():
    assert decoding_options("greedy", max_length=7) == {"min_length": 0, "max_length": 7}
    assert decoding_options("beam", beam_size=5, max_length=9) == {
        "min_length": 0, "max_length": 9, "beam_size": 5, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
    }  # fmt: skip
    assert decoding_options("sample", top_k=4)["top_k"] == 4
    with pytest.raises(ValueError, match="strategy"):
        decoding_options("nucleus")
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        decoding_options("sample", temperature=0)
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        decoding_options("beam", beam_size=0)


def test_inverse_cdf_at_the_top_of_the_range_keeps_to_allowed_tokens():
    probs = torch.tensor([[0.2, 0.3, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0, 0.5]])
    # u * total == total: what float rounding makes of u = 1 - 2**-24 for some totals
    assert inverse_cdf(probs, torch.ones(3)).tolist() == [2, 1, 4]
    assert inverse_cdf(probs, torch.zeros(3)).tolist() == [0, 1, 0]
    assert inverse_cdf(probs, torch.tensor([0.3, 0.5, 0.5])).tolist() == [1, 1, 4]


def test_command_line_options_of_another_strategy_are_refused():
    from captioning.decoding import decoding_options

    with pytest.raises(ValueError, match="--temperature applies to --strategy sample, not greedy"):
        decoding_options("greedy", temperature=0.7)
    with pytest.raises(ValueError, match="--beam-size applies to --strategy beam, not sample"):
        decoding_options("sample", beam_size=5)
    assert decoding_options("sample", temperature=0.7)["temperature"] == 0.7
