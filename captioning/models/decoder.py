"""Recurrent caption decoder: Embedding -> multilayer RNN -> Linear over the vocabulary.

Dimension letters: B batch, T time steps, E embedding, H hidden, V vocabulary, L layers.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from captioning.models.token_rnn import State, TokenRNN


class Decoder(TokenRNN):
    """A conditional language model: the image enters only through the initial state.

    Args:
        vocab_size: Number of tokens, specials included (``<pad>`` is id 0).
        embed_dim: Word embedding size.
        hidden_dim: Recurrent state size per layer.
        num_layers: Stacked recurrent layers.
        dropout: Dropout on embeddings, between layers and before the output layer.
        cell: ``lstm`` (default), ``gru``, ``rnn_fused`` (nn.RNN) or ``rnn`` (from scratch).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 256,
        hidden_dim: int = 512,
        num_layers: int = 2,
        dropout: float = 0.3,
        cell: str = "lstm",
    ) -> None:
        super().__init__(vocab_size, embed_dim, hidden_dim, num_layers, dropout, cell)

    def forward(self, tokens: Tensor, lengths: Tensor, state: State) -> Tensor:
        """Teacher forcing: logits for every position of right-padded ``tokens``.

        Args:
            tokens: (B, T) input ids, ``<bos> w1 .. wn`` then padding.
            lengths: (B,) true lengths; padding positions cost no compute for the fused cells.
            state: initial state from ``InitialState``.

        Returns:
            (B, T, V) logits; those past a row's length are meaningless (the output bias, for the
            fused cells) and ignored by the loss.
        """
        x = self.dropout(self.embed(tokens))  # (B, T, E)
        if isinstance(self.rnn, nn.RNNBase):
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            output, _ = self.rnn(packed, state)
            hidden, _ = pad_packed_sequence(output, batch_first=True, total_length=tokens.size(1))  # (B, T, H)
        else:
            hidden, _ = self.rnn(x, state)  # (B, T, H)
        return self.out(self.dropout(hidden))  # (B, T, V)
