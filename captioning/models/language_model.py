"""Recurrent language model: Embedding -> multilayer cell -> Linear over the vocabulary.

The caption decoder's stack (:class:`~captioning.models.token_rnn.TokenRNN`) without the image,
run over long text in chunks whose state carries over: truncated backprop through time.

Dimension letters: B batch (streams), T time steps, E embedding, H hidden, V vocabulary, L layers.
"""

from __future__ import annotations

from torch import Tensor

from captioning.models.token_rnn import State, TokenRNN


def detach_state(state: State | None) -> State | None:
    """The same values cut from the autograd graph: what truncated BPTT carries between chunks."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return tuple(s.detach() for s in state)


class RNNLanguageModel(TokenRNN):
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
        if tie_weights and embed_dim != hidden_dim:
            raise ValueError(
                f"tie_weights needs embed_dim == hidden_dim, got embed_dim={embed_dim}, hidden_dim={hidden_dim}"
            )
        super().__init__(vocab_size, embed_dim, hidden_dim, num_layers, dropout, cell)
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
