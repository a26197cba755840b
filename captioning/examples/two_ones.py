r"""The textbook hand-built RNN: output 1 exactly when the last two input bits were both 1.

No training: every weight is set by hand, which shows what a hidden state is for (memory
of the past) before any optimiser is involved. The network is a one-layer
:class:`~captioning.models.rnn.VanillaRNN` with 2 hidden units plus one output unit::

    h_t = tanh(W_hh h_{t-1} + W_xh x_t + b)        x_t in {0, 1}, h_0 = 0
    y_t = step(W_hy h_t + b_y)                     step(z) = 1 if z > 0 else 0

Weights, with a gain ``a = 10`` large enough to saturate tanh (tanh(10) rounds to 1.0 in
float32, so the hidden units are exactly +-1)::

    W_xh = [[2a],      b = [-a,      W_hh = [[0, 0],      W_hy = [1, 1],  b_y = -1.5
            [ 0]]           0]               [a, 0]]

- Unit 1 holds the *current* input: its pre-activation is ``2a x_t - a = +-a``, so
  ``h1_t = +1`` when ``x_t = 1`` and ``-1`` when ``x_t = 0``.
- Unit 2 holds the *previous* input: it only reads unit 1 one step back,
  ``h2_t = tanh(a h1_{t-1}) = +1 / -1`` for ``x_{t-1} = 1 / 0``, and ``0`` at ``t = 1``
  (there is no previous bit, ``h_0 = 0``).
- The output unit is an AND: ``h1 + h2 - 1.5`` is ``+0.5`` only when both are ``+1``;
  every other case (``1 + 0``, ``1 - 1``, ``-1 + 1``, ...) is ``<= -0.5``. The margin of
  0.5 means the answer stays right even if saturation were off by up to 0.25 per unit.

A sigmoid output ``sigmoid(k z)`` would only approach 0/1 as ``k`` grows; the step makes
the answer exact, and ``z`` is what a trained network's logit would be.

Run ``python -m captioning.examples.two_ones`` for a step-by-step table.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from captioning.models.rnn import VanillaRNN

GAIN = 10.0
"""Pre-activation size of the hidden units: large, so tanh saturates to exactly +-1."""


class TwoOnesRNN(nn.Module):
    """Hand-weighted RNN + output unit; ``forward`` maps bits ``(B, T)`` to 0/1 outputs ``(B, T)``."""

    def __init__(self, gain: float = GAIN) -> None:
        super().__init__()
        self.rnn = VanillaRNN(input_size=1, hidden_size=2, num_layers=1)
        self.readout = nn.Linear(2, 1)  # y_t = W_hy h_t + b_y, outside the cell as in the decoder
        w_xh, w_hh, b = self.rnn.layer_parameters(0)
        with torch.no_grad():
            w_xh.copy_(torch.tensor([[2 * gain], [0.0]]))
            b.copy_(torch.tensor([-gain, 0.0]))
            w_hh.copy_(torch.tensor([[0.0, 0.0], [gain, 0.0]]))
            self.readout.weight.copy_(torch.tensor([[1.0, 1.0]]))
            self.readout.bias.fill_(-1.5)

    def trace(self, bits: Tensor) -> tuple[Tensor, Tensor]:
        """Hidden states ``(B, T, 2)`` and output pre-activations ``z`` ``(B, T)`` for bits ``(B, T)``."""
        x = bits.to(self.readout.weight.dtype).unsqueeze(-1)  # (B, T, 1)
        hidden, _ = self.rnn(x)  # (B, T, 2)
        return hidden, self.readout(hidden).squeeze(-1)  # (B, T, 2), (B, T)

    def forward(self, bits: Tensor) -> Tensor:
        """``y_t = step(z_t)`` as 0.0/1.0, ``(B, T)``; 1 exactly where ``x_{t-1} = x_t = 1``."""
        _, z = self.trace(bits)
        return (z > 0).to(z.dtype)


def build_two_ones_rnn() -> nn.Module:
    """The hand-built two-ones detector (a :class:`TwoOnesRNN`), in eval mode."""
    return TwoOnesRNN().eval()


@torch.no_grad()
def detect_two_ones(bits: list[int]) -> list[int]:
    """Run the hand-built RNN over one bit sequence; ``out[t] = 1`` iff ``bits[t-1] == bits[t] == 1``.

    Raises:
        ValueError: a value is not 0 or 1.
    """
    if any(b not in (0, 1) for b in bits):
        raise ValueError(f"bits must all be 0 or 1, got {bits}")
    if not bits:
        return []
    y = build_two_ones_rnn()(torch.tensor([bits]))  # (1, T)
    return [int(v) for v in y[0].tolist()]


@torch.no_grad()
def main() -> None:
    """Print the hidden units and output for a short demo sequence."""
    bits = [0, 1, 1, 1, 0, 1, 0, 1, 1, 0]
    model = build_two_ones_rnn()
    hidden, z = model.trace(torch.tensor([bits]))
    y = (z > 0).int()
    print("two-ones detector: y_t = 1 iff x_{t-1} = x_t = 1")
    print(f"{'t':>2} {'x_t':>3} {'h1 (now)':>9} {'h2 (prev)':>9} {'z':>6} {'y_t':>3}")
    for t, x in enumerate(bits):
        h1, h2 = hidden[0, t].tolist()
        print(f"{t + 1:>2} {x:>3} {h1:>+9.3f} {h2:>+9.3f} {z[0, t].item():>+6.2f} {y[0, t].item():>3}")


if __name__ == "__main__":
    main()
