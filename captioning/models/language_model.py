"""Recurrent language model: Embedding -> multilayer cell -> Linear over the vocabulary.

The same stack as the caption :class:`~captioning.models.decoder.Decoder`, without the image:
the parameters have the decoder's names (``embed``, ``rnn``, ``out``), so a language model
trained on caption text can initialise a caption decoder (see
:func:`captioning.lit.language_model.decoder_state_from_checkpoint`).

Dimension letters: B batch (streams), T time steps, E embedding, H hidden, V vocabulary, L layers.
"""

from __future__ import annotations

from torch import Tensor, nn

from captioning.models.rnn import build_rnn, state_size

State = Tensor | tuple[Tensor, ...]
"""Recurrent state: ``(L, B, H)``, or ``(h, c)`` of those for the LSTM."""


def detach_state(state: State | None) -> State | None:
    """The same values cut from the autograd graph: what truncated BPTT carries between chunks."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return tuple(s.detach() for s in state)


class RNNLanguageModel(nn.Module):
    """Predicts token ``t + 1`` from tokens ``..t``; the state carries the past between calls.

    Args:
        vocab_size: Number of tokens, specials included (``<pad>`` is id 0).
        embed_dim: Token embedding size.
        hidden_dim: Recurrent state size per layer.
        num_layers: Stacked recurrent layers.
        dropout: Dropout on embeddings, between layers and before the output layer.
        cell: ``lstm``, ``gru``, ``rnn_fused`` (nn.RNN) or ``rnn`` (from scratch).
        tie_weights: Share the embedding matrix with the output layer (Press & Wolf 2017):
            fewer parameters and usually a lower perplexity at word level. Needs
            ``embed_dim == hidden_dim``.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_dim: int = 512,
        num_layers: int = 2,
        dropout: float = 0.1,
        cell: str = "lstm",
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        if tie_weights and embed_dim != hidden_dim:
            raise ValueError(
                f"tie_weights needs embed_dim == hidden_dim, got embed_dim={embed_dim}, hidden_dim={hidden_dim}"
            )
        self.cell = cell
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.state_tensors = state_size(cell)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.rnn = build_rnn(cell, embed_dim, hidden_dim, num_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)
        if tie_weights:
            self.out.weight = self.embed.weight

    def init_state(self, batch_size: int) -> State:
        """Zeros; ``new_zeros`` so that device and dtype follow the parameters."""
        zeros = self.out.weight.new_zeros(self.num_layers, batch_size, self.hidden_dim)  # (L, B, H)
        return zeros if self.state_tensors == 1 else (zeros, zeros.clone())

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Logits for every position of ``tokens`` (B, T) and the state after the last one.

        ``state=None`` starts from zeros. The returned state is still attached to the graph:
        detach it (:func:`detach_state`) before feeding it to the next chunk to truncate BPTT.
        """
        if state is None:
            state = self.init_state(tokens.size(0))
        x = self.dropout(self.embed(tokens))  # (B, T, E)
        hidden, state = self.rnn(x, state)  # (B, T, H)
        return self.out(self.dropout(hidden)), state  # (B, T, V)

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """One decoding step for :mod:`captioning.decoding`: (B,) tokens -> (B, V) logits, new state."""
        logits, state = self(tokens.unsqueeze(1), state)  # (B, 1, V)
        return logits.squeeze(1), state
