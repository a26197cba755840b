"""The recurrent stack under both the caption decoder and the language model.

Embedding -> multilayer recurrent cell -> Linear over the vocabulary. One class, so the two
models cannot drift apart: their parameters have the same names (``embed``, ``rnn``, ``out``)
and shapes, which is what lets a language model trained on caption text initialise a caption
decoder (:func:`captioning.lit.language_model.decoder_state_from_checkpoint`).

Dimension letters: B batch, T time steps, E embedding, H hidden, V vocabulary, L layers.
"""

from __future__ import annotations

from torch import Tensor, nn

from captioning.models.rnn import build_rnn, state_size

State = Tensor | tuple[Tensor, ...]
"""Recurrent state: ``(L, B, H)``, or ``(h, c)`` of those for the LSTM."""


class TokenRNN(nn.Module):
    """Embedding, recurrent cell and output layer, with the one-step interface of decoding.

    Subclasses add the ``forward`` their training needs (packed teacher forcing for captions,
    stateful chunks for truncated BPTT).

    Args:
        vocab_size: Number of tokens, specials included (``<pad>`` is id 0).
        embed_dim: Token embedding size.
        hidden_dim: Recurrent state size per layer.
        num_layers: Stacked recurrent layers.
        dropout: Dropout on embeddings, between layers and before the output layer.
        cell: ``lstm``, ``gru``, ``rnn_fused`` (nn.RNN) or ``rnn`` (from scratch).
    """

    def __init__(
        self, vocab_size: int, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float, cell: str
    ) -> None:
        super().__init__()
        self.cell = cell
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.state_tensors = state_size(cell)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.rnn = build_rnn(cell, embed_dim, hidden_dim, num_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """One decoding step for :mod:`captioning.decoding`: (B,) tokens -> (B, V) logits, new state."""
        hidden, state = self.rnn(self.embed(tokens).unsqueeze(1), state)  # (B, 1, H)
        return self.out(hidden.squeeze(1)), state
