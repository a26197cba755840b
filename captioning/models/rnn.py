r"""Recurrent cells chosen by name, so that configs can switch the stack under the decoder.

Every cell built here follows the ``nn.RNN`` calling convention with ``batch_first=True``:
``output, state = cell(inputs, state)`` where ``inputs`` is ``(B, T, input_size)`` and
``state`` is ``(num_layers, B, hidden_size)``, or a pair of those for the LSTM. The fused
cells (``"rnn_fused"``, ``"lstm"``, ``"gru"``) also accept a ``PackedSequence``; the
from-scratch ``"rnn"`` does not, so callers run it on padded input.

The from-scratch cell, :class:`VanillaRNN`, is the Elman network written out. For layer
``l = 1..L`` and time ``t = 1..T``::

    h_t^(l) = tanh(W_hh^(l) h_{t-1}^(l) + W_xh^(l) x_t^(l) + b^(l))
    x_t^(1) = x_t                        (the input)
    x_t^(l+1) = dropout(h_t^(l))         (between layers only, training mode only)
    h_0^(l) = given, or zeros

with the same weights at every step. ``output`` is ``h_t^(L)`` for every ``t`` and
``h_n`` is ``h_T^(l)`` for every layer. The output layer of the textbook network,

    y_t = W_hy h_t^(L) + b_y,

is deliberately *not* part of the cell: it is the model's ``nn.Linear`` on top (the
decoder's vocabulary projection), so all cells here are interchangeable.

Dimension letters: B batch, T time steps, L layers, H hidden size, I input size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

CELLS = ("rnn", "rnn_fused", "lstm", "gru")
"""Valid ``cell`` names: ``"rnn"`` is :class:`VanillaRNN`, the others are PyTorch's fused modules."""


class VanillaRNN(nn.Module):
    """Multilayer Elman RNN with tanh, batch-first, written from the equations (see module docstring).

    It exists so that the seed equations are visible and testable in plain PyTorch; for speed
    use ``"rnn_fused"`` (``nn.RNN``), which computes the same function with cuDNN/MKL kernels.
    Parameters are named like ``nn.RNN``'s, except that the two biases of ``nn.RNN``
    (``bias_ih_l{k}``, ``bias_hh_l{k}``) are one ``bias_l{k}`` here, because the equation has a
    single ``b``; :meth:`from_torch` / :meth:`load_from_torch_rnn` copy ``nn.RNN`` weights over.

    Not accepted: ``PackedSequence`` input (pass padded ``(B, T, I)``; outputs past a
    sequence's end are then computed but meaningless, and ``h_n`` is the state after step
    ``T``, not after each sequence's own last step), unbatched input, bidirectional layers.

    Args:
        input_size: features per time step of the input, ``I``.
        hidden_size: hidden units per layer, ``H``.
        num_layers: stacked layers ``L``; layer ``l + 1`` reads layer ``l``'s outputs.
        dropout: probability of zeroing a layer's outputs before the next layer reads them,
            in training mode only, never after the last layer (as in ``nn.RNN``).
    """

    batch_first = True  # fixed: the whole project is batch-first; kept for duck-typing with nn.RNN

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {input_size}")
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = float(dropout)
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size
            # W_xh: (H, I) for layer 0, (H, H) above; W_hh: (H, H); b: (H,)
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(hidden_size, in_size)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(hidden_size, hidden_size)))
            self.register_parameter(f"bias_l{layer}", nn.Parameter(torch.empty(hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, as ``nn.RNN`` does."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def layer_parameters(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(W_xh, W_hh, b)`` of one layer (0-based), the names the equations use."""
        return (
            getattr(self, f"weight_ih_l{layer}"),
            getattr(self, f"weight_hh_l{layer}"),
            getattr(self, f"bias_l{layer}"),
        )

    def flatten_parameters(self) -> None:
        """No-op, so code written for ``nn.RNN`` (which compacts cuDNN weights) runs unchanged."""

    @torch.no_grad()
    def load_from_torch_rnn(self, rnn: nn.RNN) -> VanillaRNN:
        """Copy an ``nn.RNN``'s weights into this module (in place; returns ``self``).

        Mapping per layer ``k``: ``weight_ih_l{k}`` -> ``weight_ih_l{k}`` (W_xh),
        ``weight_hh_l{k}`` -> ``weight_hh_l{k}`` (W_hh), and ``bias_ih_l{k} + bias_hh_l{k}``
        -> ``bias_l{k}`` (b; the two biases only ever appear summed). Values are cast to this
        module's device and dtype. ``batch_first`` is irrelevant to the weights.

        Raises:
            ValueError: ``rnn`` is not a tanh, unidirectional ``nn.RNN`` of the same sizes.
        """
        if not isinstance(rnn, nn.RNN):
            raise ValueError(f"expected an nn.RNN, got {type(rnn).__name__}")
        if rnn.nonlinearity != "tanh":
            raise ValueError(f"only nonlinearity='tanh' matches VanillaRNN, got {rnn.nonlinearity!r}")
        if rnn.bidirectional:
            raise ValueError("bidirectional nn.RNN has no VanillaRNN equivalent")
        mine = (self.input_size, self.hidden_size, self.num_layers)
        theirs = (rnn.input_size, rnn.hidden_size, rnn.num_layers)
        if mine != theirs:
            raise ValueError(f"(input_size, hidden_size, num_layers) differ: {mine} here, {theirs} in nn.RNN")
        for layer in range(self.num_layers):
            w_ih, w_hh, b = self.layer_parameters(layer)
            w_ih.copy_(getattr(rnn, f"weight_ih_l{layer}"))
            w_hh.copy_(getattr(rnn, f"weight_hh_l{layer}"))
            if rnn.bias:
                b.copy_(getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}"))
            else:
                b.zero_()
        return self

    @classmethod
    def from_torch(cls, rnn: nn.RNN) -> VanillaRNN:
        """A new ``VanillaRNN`` computing the same function as ``rnn`` (same sizes, dropout,
        device and dtype); see :meth:`load_from_torch_rnn` for the weight mapping."""
        ref = rnn.weight_ih_l0
        model = cls(rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.dropout)
        return model.to(device=ref.device, dtype=ref.dtype).load_from_torch_rnn(rnn)

    def forward(self, inputs: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run all layers over all time steps.

        Args:
            inputs: ``(B, T, I)`` padded batch (no ``PackedSequence``).
            h0: ``(L, B, H)`` initial hidden state, or ``None`` for zeros.

        Returns:
            ``(output, h_n)``: ``output`` ``(B, T, H)`` is the last layer's ``h_t`` at every
            step; ``h_n`` ``(L, B, H)`` is every layer's state after step ``T``.
        """
        if isinstance(inputs, PackedSequence):
            raise TypeError(
                "VanillaRNN does not accept PackedSequence; pass the padded (B, T, input_size) "
                "tensor, or use cell='rnn_fused' (nn.RNN) for packed input"
            )
        if inputs.dim() != 3 or inputs.size(-1) != self.input_size:
            raise ValueError(f"inputs must be (B, T, {self.input_size}), got {tuple(inputs.shape)}")
        B, T, _ = inputs.shape
        shape = (self.num_layers, B, self.hidden_size)
        if h0 is None:
            # new_zeros: h0 follows the parameters' device and dtype
            h0 = self.weight_ih_l0.new_zeros(shape)
        elif tuple(h0.shape) != shape:
            raise ValueError(f"h0 must be (num_layers, B, hidden_size) = {shape}, got {tuple(h0.shape)}")

        layer_input = inputs  # (B, T, I) for layer 0, (B, T, H) above
        last_states = []
        for layer in range(self.num_layers):
            w_xh, w_hh, b = self.layer_parameters(layer)
            if layer > 0:
                layer_input = F.dropout(layer_input, self.dropout, self.training)
            # W_xh x_t + b does not depend on h, so do it for all t in one matmul
            xw = F.linear(layer_input, w_xh, b)  # (B, T, H)
            h = h0[layer]  # (B, H)
            steps = []
            for t in range(T):
                h = torch.tanh(xw[:, t] + F.linear(h, w_hh))  # (B, H)
                steps.append(h)
            layer_input = torch.stack(steps, dim=1) if steps else xw  # (B, T, H)
            last_states.append(h)
        return layer_input, torch.stack(last_states)  # (B, T, H), (L, B, H)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"dropout={self.dropout}, batch_first=True"
        )


def build_rnn(cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float) -> nn.Module:
    """Return a multilayer, batch-first recurrent module of the named kind.

    ``"rnn"`` is the from-scratch :class:`VanillaRNN` (readable, padded input only);
    ``"rnn_fused"`` is ``nn.RNN`` (same function, fast, accepts ``PackedSequence``);
    ``"lstm"`` and ``"gru"`` are ``nn.LSTM`` and ``nn.GRU``. ``dropout`` applies between
    layers (never after the last one), as in ``nn.LSTM``; with one layer it is ignored.

    Raises:
        ValueError: ``cell`` is not one of :data:`CELLS`.
    """
    dropout = dropout if num_layers > 1 else 0.0  # one layer: nothing to drop between
    if cell == "rnn":
        return VanillaRNN(input_size, hidden_size, num_layers=num_layers, dropout=dropout)
    fused = {"rnn_fused": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
    if cell not in fused:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    return fused[cell](input_size, hidden_size, num_layers=num_layers, dropout=dropout, batch_first=True)


def state_size(cell: str) -> int:
    """How many ``(num_layers, B, H)`` tensors make up the cell's hidden state (2 for the LSTM).

    Raises:
        ValueError: ``cell`` is not one of :data:`CELLS`.
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    return 2 if cell == "lstm" else 1
