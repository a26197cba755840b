"""``captioning generate``: continue a prompt with a trained language model."""

from __future__ import annotations

from captioning.decoding import decoding_options
from captioning.lit.language_model import load_language_model


def generate(
    checkpoint: str,
    prompt: str = "",
    strategy: str = "sample",
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    beam_size: int | None = None,
    no_repeat_ngram_size: int | None = None,
    max_tokens: int = 200,
    seed: int = 0,
    device: str = "cpu",
) -> str:
    """Print (and return) ``prompt`` followed by ``max_tokens`` generated tokens.

    Args:
        checkpoint: A language model checkpoint (``captioning lm fit`` writes them); loaded with
            ``torch.load(weights_only=True)``, nothing else is needed.
        prompt: Text to continue; empty starts at the beginning of a line.
        strategy: ``greedy``, ``sample`` or ``beam`` (the shared decoding engine).
        temperature: Sampling temperature (``sample``; default 0.8): below 1 safer, above 1 wilder.
        top_k: Sample among the k most probable tokens only (``sample``).
        top_p: Sample from the smallest set of tokens holding this probability (``sample``).
        beam_size: Beams (``beam``; default 3).
        no_repeat_ngram_size: Forbid repeating any n-gram of this size (``beam``; 0: allowed). (Beam
            search here has no length penalty: every beam runs ``max_tokens`` tokens.)
        max_tokens: Tokens to generate (characters at char level, words and punctuation at word level).
        seed: Random seed: the same checkpoint, prompt, options and seed give the same text.
        device: Where to run (``cpu``, ``cuda``, ...).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if strategy == "sample" and temperature is None:
        temperature = 0.8  # a language model's text reads better a little below pure sampling
    options = decoding_options(
        strategy, beam_size=beam_size, temperature=temperature, top_k=top_k, top_p=top_p,
        no_repeat_ngram_size=no_repeat_ngram_size,
    )  # fmt: skip
    module = load_language_model(checkpoint, map_location=device)
    text = module.generate(prompt, strategy, max_tokens, seed=seed, **options)
    print(text)
    return text
