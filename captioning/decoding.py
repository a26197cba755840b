"""Batched decoding: greedy, temperature / top-k / top-p sampling, and beam search.

Every strategy drives the model through one ``step`` function, so the caption decoder, the
language model and a hand-made table in a test are all decoded by the same code::

    step(tokens, state) -> (logits, new_state)
    tokens (B,) long; logits (B, V) float; every state tensor has the batch on dim 1,
    the nn.RNN / nn.LSTM / nn.GRU convention (num_layers, B, H).

Dimension letters: B images (rows) in the batch, K beams per image, N = B*K decoder rows in
beam search, V vocabulary size, T generated tokens, C candidates kept per image and step.

What every strategy guarantees:

- The start token is fed to the first step and is not part of the output.
- A row stops at <eos>, which is kept in the output; everything after it is ``pad_id``.
- At most ``max_length`` tokens are generated; the loop ends as soon as every row is done.
- ``min_length`` forbids <eos> while fewer than ``min_length`` tokens were generated, so a
  finished row holds at least ``min_length`` tokens before its <eos>.
- ``log_probs`` is the model's own log-probability of the emitted tokens (log_softmax of the
  raw logits). Temperature, top-k/top-p, ``min_length`` and n-gram blocking change which
  tokens are chosen, never how they are scored, so strategies can be compared on it.

All public functions run under ``torch.inference_mode()``: the returned tensors are inference
tensors and carry no autograd history.
"""

import hashlib
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

State = Tensor | tuple[Tensor, ...]
"""Recurrent state: a tensor or a (nested) tuple of tensors, each with the batch on dim 1."""
StepFn = Callable[[Tensor, State], tuple[Tensor, State]]
"""``step(tokens (B,) long, state) -> (logits (B, V) float, new state)``."""

_NEG_INF = float("-inf")


@dataclass
class Decoded:
    """Decoded token ids for a batch of B rows."""

    tokens: Tensor
    """(B, T) long: generated tokens, start token excluded; <eos> kept when produced, then pad_id.
    T is the longest row's length."""
    lengths: Tensor
    """(B,) long: tokens per row, <eos> included, padding excluded."""
    log_probs: Tensor
    """(B,) float: the model's summed log-probability of each row's tokens (untempered and,
    for beam search, without the length penalty)."""


# --- small helpers ------------------------------------------------------------------------


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    # Written so that NaN fails too.
    "max_length": (lambda v: v >= 1, ">= 1"),
    "min_length": (lambda v: v >= 0, ">= 0"),
    "temperature": (lambda v: v > 0, "> 0"),
    "top_k": (lambda v: v is None or v >= 1, ">= 1 or None"),
    "top_p": (lambda v: v is None or 0 < v <= 1, "in (0, 1] or None"),
    "beam_size": (lambda v: v >= 1, ">= 1"),
    "length_penalty": (math.isfinite, "finite"),
    "no_repeat_ngram_size": (lambda v: v >= 0, ">= 0"),
}


def check_options(**options: Any) -> None:
    """Raise ``ValueError`` naming the first decoding option out of its range.

    The strategies call it on their own arguments; command lines call it before loading a
    model, so a bad flag fails at once. Names it does not know are left to the strategy.
    """
    for name, value in options.items():
        if name in _RULES and not _RULES[name][0](value):
            raise ValueError(f"{name} must be {_RULES[name][1]}, got {value!r}")
    if options.get("min_length", 0) > options.get("max_length", math.inf):
        raise ValueError(f"min_length must be <= max_length={options['max_length']}, got {options['min_length']}")


def _check_common(start_tokens: Tensor, max_length: int, min_length: int) -> None:
    if start_tokens.dim() != 1:
        raise ValueError(f"start_tokens must have shape (B,), got {tuple(start_tokens.shape)}")
    check_options(max_length=max_length, min_length=min_length)


def _map_state(state: State, fn: Callable[[Tensor], Tensor]) -> State:
    """Apply ``fn`` to every tensor of a state, keeping its (nested) tuple structure."""
    if isinstance(state, Tensor):
        return fn(state)
    return tuple(_map_state(s, fn) for s in state)


def _expand_state(state: State, k: int) -> State:
    """(L, B, H) -> (L, B*K, H): K consecutive copies of each image's state, one per beam."""
    return _map_state(state, lambda s: s.repeat_interleave(k, dim=1))


def _reorder_state(state: State, rows: Tensor) -> State:
    """(L, N, H) -> (L, N, H): each beam takes over the state of the row it extends."""
    return _map_state(state, lambda s: s.index_select(1, rows))


def _log_softmax(logits: Tensor) -> Tensor:
    """Log-probabilities in at least float32: half-precision sums of log-probs drift."""
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


def _forbid_eos(logp: Tensor, eos_id: int, generated: int, min_length: int) -> Tensor:
    """-inf on <eos> while fewer than ``min_length`` tokens exist; a copy, as the caller
    still scores with the unmasked ``logp``."""
    if generated >= min_length:
        return logp
    logp = logp.clone()
    logp[:, eos_id] = _NEG_INF
    return logp


def _filter_top_k(scores: Tensor, k: int) -> Tensor:
    """Keep the k highest scores per row (ties with the k-th are kept), -inf elsewhere."""
    kth = scores.topk(min(k, scores.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
    return scores.masked_fill(scores < kth, _NEG_INF)


def _filter_top_p(scores: Tensor, p: float) -> Tensor:
    """Keep the nucleus: the fewest most-probable tokens whose probability reaches ``p``."""
    sorted_scores, order = scores.sort(dim=-1, descending=True)  # (B, V)
    probs = sorted_scores.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # (B, V) mass of the more probable tokens
    drop_sorted = mass_before >= p  # the most probable token always stays (mass_before = 0)
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return scores.masked_fill(drop, _NEG_INF)


def _repeated_ngram_mask(hyps: Tensor, n: int, vocab_size: int) -> Tensor:
    """(N, t) tokens so far -> (N, V) bool, True where a token would repeat an n-gram."""
    ngrams = hyps.unfold(1, n, 1)  # (N, t-n+1, n) every n-gram so far
    prefix = hyps[:, hyps.size(1) - n + 1 :]  # (N, n-1) the n-1 latest tokens
    continues = (ngrams[:, :, :-1] == prefix[:, None, :]).all(dim=-1)  # (N, t-n+1)
    # Counted with scatter_add: a plain scatter of bools would let a False clobber a True
    # when two n-grams end in the same token.
    counts = hyps.new_zeros((hyps.size(0), vocab_size))  # (N, V)
    counts.scatter_add_(1, ngrams[:, :, -1], continues.long())
    return counts > 0


def _run(
    step: StepFn,
    state: State,
    start_tokens: Tensor,
    pick: Callable[[Tensor], Tensor],
    *,
    eos_id: int,
    pad_id: int,
    max_length: int,
    min_length: int,
) -> Decoded:
    """The token-by-token loop of greedy and sampling; ``pick`` maps (B, V) log-probs to (B,) ids."""
    batch = start_tokens.size(0)
    tokens = start_tokens
    out = start_tokens.new_full((batch, max_length), pad_id)  # (B, T)
    lengths = start_tokens.new_zeros(batch, dtype=torch.long)
    log_probs = start_tokens.new_zeros(batch, dtype=torch.float32)
    done = torch.zeros(batch, dtype=torch.bool, device=start_tokens.device)
    for t in range(max_length):
        logits, state = step(tokens, state)
        logp = _log_softmax(logits)  # (B, V)
        picked = pick(_forbid_eos(logp, eos_id, t, min_length))  # (B,)
        gained = logp.gather(1, picked[:, None]).squeeze(1)  # (B,)
        log_probs = log_probs + gained.masked_fill(done, 0.0)
        out[:, t] = picked.masked_fill(done, pad_id)
        lengths += (~done).long()
        done = done | (picked == eos_id)
        if done.all():
            break
        # Finished rows keep being fed real ids (pad_id need not be embeddable); their
        # outputs are discarded above.
        tokens = picked
    return Decoded(out[:, : int(lengths.max()) if batch else 0], lengths, log_probs)


# --- strategies -----------------------------------------------------------------------------


@torch.inference_mode()
def greedy(
    step: StepFn,
    state: State,
    start_tokens: Tensor,
    *,
    eos_id: int,
    pad_id: int,
    max_length: int,
    min_length: int = 0,
) -> Decoded:
    """The most probable next token at every step: fast, deterministic, often bland.

    Args:
        step: the model, see the module docstring.
        state: initial state for the B rows (e.g. the image's (h0, c0)).
        start_tokens: (B,) long, the first input of each row (usually <bos>).
        eos_id: the token that ends a row.
        pad_id: written after a row's <eos>.
        max_length: most tokens generated per row, <eos> included.
        min_length: <eos> is forbidden until this many tokens were generated.
    """
    _check_common(start_tokens, max_length, min_length)
    return _run(
        step,
        state,
        start_tokens,
        lambda logp: logp.argmax(dim=-1),
        eos_id=eos_id,
        pad_id=pad_id,
        max_length=max_length,
        min_length=min_length,
    )


def inverse_cdf(probs: Tensor, uniforms: Tensor) -> Tensor:
    """The token of each row (B, V) whose cumulative probability first exceeds its uniform in [0, 1).

    ``u * total`` can round up to the total itself: then the pick is the last token that has mass,
    never one that top-k, top-p or a ban removed.
    """
    cdf = probs.cumsum(dim=-1)  # (B, V)
    picked = torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
    last_allowed = (probs > 0).long().cumsum(dim=-1).argmax(dim=-1)  # argmax: the first of the equal maxima
    return torch.minimum(picked, last_allowed)


@torch.inference_mode()
def sample(
    step: StepFn,
    state: State,
    start_tokens: Tensor,
    *,
    eos_id: int,
    pad_id: int,
    max_length: int,
    min_length: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> Decoded:
    """Draw each token at random, for diverse captions and text.

    The distribution is ``softmax(logits / temperature)``, then cut to the ``top_k`` most
    probable tokens, then to the nucleus of mass ``top_p`` (in that order, as in Hugging Face
    ``generate``). ``temperature`` 1 samples the model's own distribution, below 1 sharpens it
    (towards greedy), above 1 flattens it. Pass a seeded ``generator`` (on the logits' device)
    to reproduce a draw; ``None`` uses the global RNG. A sequence of B generators gives each row
    its own random stream: a row's tokens then depend on its own seed only, not on which other
    rows share its batch, so captions are the same whatever the batch size, the number of
    processes or devices, or where an interrupted run resumed.

    Args are those of :func:`greedy`, plus:
        temperature: > 0; divides the logits before the softmax.
        top_k: >= 1, or None for no cut; sample only among the k most probable tokens.
        top_p: in (0, 1], or None for no cut; sample only from the smallest set of most
            probable tokens whose probability reaches top_p.
        generator: random source for ``torch.multinomial``, or one per row.
    """
    _check_common(start_tokens, max_length, min_length)
    check_options(temperature=temperature, top_k=top_k, top_p=top_p)
    per_row = generator is not None and not isinstance(generator, torch.Generator)
    if per_row and len(generator) != start_tokens.size(0):
        raise ValueError(f"generator: one per row was given, {len(generator)} for {start_tokens.size(0)} rows")

    def pick(logp: Tensor) -> Tensor:
        # log_softmax only shifts each row, so logp / temperature has the same softmax as
        # logits / temperature; -inf (forbidden <eos>) stays -inf.
        scores = logp / temperature  # (B, V)
        if top_k is not None:
            scores = _filter_top_k(scores, top_k)
        if top_p is not None and top_p < 1:
            scores = _filter_top_p(scores, top_p)
        probs = scores.softmax(dim=-1)  # (B, V)
        if per_row:
            # Inverse CDF with one uniform per row from its own CPU stream (every row draws once per
            # step, finished or not): the same numbers on any device, unlike device generators.
            uniforms = torch.stack([torch.rand((), generator=g) for g in generator]).to(probs.device)  # (B,)
            return inverse_cdf(probs, uniforms)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _run(
        step,
        state,
        start_tokens,
        pick,
        eos_id=eos_id,
        pad_id=pad_id,
        max_length=max_length,
        min_length=min_length,
    )


@torch.inference_mode()
def beam_search(
    step: StepFn,
    state: State,
    start_tokens: Tensor,
    *,
    eos_id: int,
    pad_id: int,
    max_length: int,
    min_length: int = 0,
    beam_size: int = 3,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> Decoded:
    """Keep the ``beam_size`` best partial captions per image; return the best complete one.

    All images and beams run as one batch of N = B*K rows. Each step, every live beam is
    extended by every token and the 2K best extensions per image are kept: those ending in
    <eos> that rank among the K best become complete hypotheses (the K best are kept per
    image), the K best others stay live. This keeps K live beams even when some finish.

    Complete hypotheses are ranked by ``sum log-prob / length ** length_penalty`` (plain
    length normalisation, length counting <eos>; not GNMT's ``((5 + length) / 6) ** alpha``):
    0 ranks by total log-prob, which favours short captions; 1 by mean log-prob per token.
    An image is done once it has K complete hypotheses and its best live beam, scored at its
    current length, cannot beat the worst of them (the usual heuristic; exact for
    ``length_penalty`` 0, where scores only fall). With ``beam_size`` 1 this is greedy search.

    Complete captions are preferred: an image's best live beam is returned (max_length tokens,
    no <eos>) only if none of its beams produced <eos> within ``max_length``.

    Args are those of :func:`greedy`, plus:
        beam_size: >= 1, beams per image (K).
        length_penalty: exponent of the length in the ranking score, see above.
        no_repeat_ngram_size: n > 0 forbids any n-gram from occurring twice in a hypothesis
            (n = 1: no token twice); 0 allows repeats.
    """
    _check_common(start_tokens, max_length, min_length)
    check_options(beam_size=beam_size, length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)

    batch, k = start_tokens.size(0), beam_size
    n = batch * k
    device = start_tokens.device
    first_row = torch.arange(batch, device=device) * k  # (B,) row of each image's beam 0
    state = _expand_state(state, k)
    tokens = start_tokens.repeat_interleave(k)  # (N,)
    hyps = start_tokens.new_full((n, max_length), pad_id)  # (N, T) live beams, never with <eos>
    # Only beam 0 is live at first, so that the K beams do not start as K copies of one.
    alive = torch.full((batch, k), _NEG_INF, device=device)  # (B, K) sum log-prob, best first
    alive[:, 0] = 0.0
    fin_tokens = start_tokens.new_full((batch, k, max_length), pad_id)  # (B, K, T)
    fin_scores = torch.full((batch, k), _NEG_INF, device=device)  # (B, K) penalised, best first
    fin_logp = torch.full((batch, k), _NEG_INF, device=device)  # (B, K) unpenalised
    fin_len = start_tokens.new_zeros((batch, k), dtype=torch.long)
    done = torch.zeros(batch, dtype=torch.bool, device=device)

    for t in range(max_length):
        logits, state = step(tokens, state)
        logp = _forbid_eos(_log_softmax(logits), eos_id, t, min_length)  # (N, V)
        vocab = logp.size(1)
        if no_repeat_ngram_size and t >= no_repeat_ngram_size:
            banned = _repeated_ngram_mask(hyps[:, :t], no_repeat_ngram_size, vocab)
            logp = logp.masked_fill(banned, _NEG_INF)
        scores = (alive.view(n, 1) + logp).view(batch, k * vocab)  # (B, K*V)
        # Each beam has one <eos> extension, so the C = 2K best always hold K others.
        top, index = scores.topk(min(2 * k, k * vocab), dim=1)  # (B, C), best first
        src = first_row[:, None] + index // vocab  # (B, C) row each candidate extends
        token = index % vocab  # (B, C)
        is_eos = token == eos_id

        ends = is_eos[:, :k] & top[:, :k].isfinite() & ~done[:, None]  # (B, K)
        if ends.any():
            penalised = top[:, :k] / (t + 1) ** length_penalty
            cand_scores = penalised.masked_fill(~ends, _NEG_INF)  # (B, K)
            cand_tokens = hyps.index_select(0, src[:, :k].reshape(-1)).view(batch, k, max_length)
            cand_tokens[:, :, t] = eos_id
            fin_scores, keep = torch.cat([fin_scores, cand_scores], dim=1).topk(k, dim=1)
            both = torch.cat([fin_tokens, cand_tokens], dim=1)  # (B, 2K, T)
            fin_tokens = both.gather(1, keep[:, :, None].expand(-1, -1, max_length))  # (B, K, T)
            fin_logp = torch.cat([fin_logp, top[:, :k]], dim=1).gather(1, keep)
            fin_len = torch.cat([fin_len, torch.full_like(fin_len, t + 1)], dim=1).gather(1, keep)

        alive, chosen = top.masked_fill(is_eos, _NEG_INF).topk(k, dim=1)  # (B, K)
        rows = src.gather(1, chosen).view(n)  # (N,)
        tokens = token.gather(1, chosen).view(n)  # (N,)
        hyps = hyps.index_select(0, rows)
        hyps[:, t] = tokens
        state = _reorder_state(state, rows)

        best_alive = alive[:, 0] / (t + 1) ** length_penalty  # (B,)
        done = done | (best_alive <= fin_scores[:, -1])
        if done.all():
            break

    complete = fin_scores[:, 0] > _NEG_INF  # (B,)
    live_tokens = hyps.view(batch, k, max_length)[:, 0]  # (B, T) best live beam
    out = torch.where(complete[:, None], fin_tokens[:, 0], live_tokens)
    lengths = torch.where(complete, fin_len[:, 0], t + 1)
    log_probs = torch.where(complete, fin_logp[:, 0], alive[:, 0])
    return Decoded(out[:, : int(lengths.max()) if batch else 0], lengths, log_probs)


STRATEGIES: dict[str, Callable[..., Decoded]] = {
    "greedy": greedy,
    "sample": sample,
    "beam": beam_search,
}
"""Names accepted by :func:`decode`."""


def row_generators(seed: int, keys: Sequence[str]) -> list[torch.Generator]:
    """One seeded random stream per row for :func:`sample`, from the run's ``seed`` and a key that
    names the row's input (an image's path): the same key and seed always draw the same numbers.
    CPU generators, whatever the model's device: :func:`sample` moves their draws."""
    generators = []
    for key in keys:
        digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
        generators.append(torch.Generator().manual_seed(int.from_bytes(digest[:8], "little")))
    return generators


def decoding_options(
    strategy: str,
    *,
    beam_size: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    length_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    max_length: int | None = None,
    min_length: int = 0,
) -> dict:
    """The options of ``strategy`` only, from the flat set a command line offers.

    ``None`` is "not given": the strategy's own default (beam 3, temperature 1, length penalty 1,
    no n-gram ban). An option given for another strategy is refused, naming the one that uses it
    (``--temperature`` without ``--strategy sample`` would otherwise run greedy silently). Values
    are checked before any model is loaded.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    given = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "beam_size": beam_size,
             "length_penalty": length_penalty, "no_repeat_ngram_size": no_repeat_ngram_size}  # fmt: skip
    for name, value in given.items():
        owner = "sample" if name in ("temperature", "top_k", "top_p") else "beam"
        if value is not None and owner != strategy:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} applies to --strategy {owner}, not {strategy}: add --strategy {owner}")
    options: dict[str, Any] = {"min_length": min_length}
    if max_length is not None:
        options["max_length"] = max_length
    if strategy == "sample":
        options.update(temperature=1.0 if temperature is None else temperature, top_k=top_k, top_p=top_p)
    elif strategy == "beam":
        options.update(
            beam_size=3 if beam_size is None else beam_size,
            length_penalty=1.0 if length_penalty is None else length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size or 0,
        )
    check_options(**options)
    return options


def decode(step: StepFn, state: State, start_tokens: Tensor, *, strategy: str, **options: Any) -> Decoded:
    """Run the strategy named ``strategy`` ("greedy", "sample" or "beam") with ``options``.

    An option the strategy does not take (``temperature`` for "greedy", say) is refused with the
    strategy that uses it, rather than silently ignored.
    """
    if strategy not in STRATEGIES:
        valid = ", ".join(repr(s) for s in STRATEGIES)
        raise ValueError(f"strategy must be one of {valid}, got {strategy!r}")
    taken = inspect.signature(STRATEGIES[strategy]).parameters
    for name in options:
        if name not in taken:
            users = [s for s, fn in STRATEGIES.items() if name in inspect.signature(fn).parameters]
            raise ValueError(
                f"{name} is an option of the {' / '.join(users) or 'no'} strategy, not of {strategy!r}: "
                f"pass strategy={users[0]!r} to use it"
                if users
                else f"{name} is not a decoding option"
            )
    return STRATEGIES[strategy](step, state, start_tokens, **options)
