"""VanillaRNN against its equations and nn.RNN; the hand-built two-ones RNN; the cell factory."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from captioning.examples.two_ones import build_two_ones_rnn, detect_two_ones, main
from captioning.models.rnn import CELLS, VanillaRNN, build_rnn, state_size


def two_ones_reference(bits: tuple[int, ...]) -> list[int]:
    return [int(t > 0 and bits[t - 1] == 1 and bits[t] == 1) for t in range(len(bits))]


# --- the hand-built RNN -------------------------------------------------------------------


def test_two_ones_every_binary_sequence_up_to_length_10() -> None:
    model = build_two_ones_rnn()
    with torch.no_grad():
        for length in range(1, 11):
            seqs = list(itertools.product((0, 1), repeat=length))  # all 2^length sequences
            got = model(torch.tensor(seqs)).int().tolist()  # (2^length, length) in one batch
            want = [two_ones_reference(s) for s in seqs]
            assert got == want, f"length {length}"


def test_detect_two_ones_list_api() -> None:
    assert detect_two_ones([1, 1, 1, 0, 1, 1]) == [0, 1, 1, 0, 0, 1]
    assert detect_two_ones([1]) == [0]
    assert detect_two_ones([]) == []
    with pytest.raises(ValueError, match="0 or 1"):
        detect_two_ones([0, 2])


def test_two_ones_demo_prints_table(capsys: pytest.CaptureFixture[str]) -> None:
    main()
    out = capsys.readouterr().out
    assert "x_t" in out and len(out.strip().splitlines()) == 12


# --- VanillaRNN against the equations ------------------------------------------------------


def test_one_unit_against_scalar_hand_computation() -> None:
    rnn = VanillaRNN(1, 1)
    with torch.no_grad():
        rnn.weight_ih_l0.fill_(0.5)  # W_xh
        rnn.weight_hh_l0.fill_(-0.8)  # W_hh
        rnn.bias_l0.fill_(0.1)  # b
    x = [1.0, -2.0, 0.5]
    h = 0.3
    want = []
    for x_t in x:
        h = math.tanh(-0.8 * h + 0.5 * x_t + 0.1)
        want.append(h)
    out, h_n = rnn(torch.tensor(x).view(1, 3, 1), torch.tensor([[[0.3]]]))
    assert out.view(-1).tolist() == pytest.approx(want, abs=1e-6)
    assert h_n.item() == pytest.approx(want[-1], abs=1e-6)


@pytest.mark.parametrize("with_h0", [True, False])
def test_two_layers_against_explicit_matrix_loop(with_h0: bool) -> None:
    torch.manual_seed(0)
    B, T, H, L = 2, 4, 2, 2
    I_ = 3  # input size (I is ambiguous to linters)
    rnn = VanillaRNN(I_, H, num_layers=L).double()
    x = torch.randn(B, T, I_, dtype=torch.float64)
    h0 = torch.randn(L, B, H, dtype=torch.float64) if with_h0 else None
    out, h_n = rnn(x, h0)
    assert out.shape == (B, T, H) and h_n.shape == (L, B, H)

    # per sample, per layer, per step: h = tanh(W_hh @ h + W_xh @ x + b)
    for n in range(B):
        layer_in = [x[n, t] for t in range(T)]
        for layer in range(L):
            w_xh, w_hh, b = (p.detach() for p in rnn.layer_parameters(layer))
            h = h0[layer, n] if with_h0 else torch.zeros(H, dtype=torch.float64)
            outs = []
            for t in range(T):
                h = torch.tanh(w_hh @ h + w_xh @ layer_in[t] + b)
                outs.append(h)
            torch.testing.assert_close(h_n[layer, n], h)
            layer_in = outs
        torch.testing.assert_close(out[n], torch.stack(layer_in))


def test_matches_nn_rnn_with_same_weights() -> None:
    torch.manual_seed(1)
    ref = nn.RNN(3, 5, num_layers=2, nonlinearity="tanh", batch_first=True, dropout=0.3).eval()
    mine = VanillaRNN.from_torch(ref).eval()
    assert mine.dropout == 0.3
    x, h0 = torch.randn(4, 6, 3), torch.randn(2, 4, 5)
    with torch.no_grad():
        for state in (h0, None):
            want_out, want_h = ref(x, state)
            got_out, got_h = mine(x, state)
            torch.testing.assert_close(got_out, want_out, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got_h, want_h, atol=1e-5, rtol=1e-5)

    # load_from_torch_rnn into an existing module, and the bias=False case
    ref_nb = nn.RNN(3, 5, num_layers=2, bias=False, batch_first=True)
    mine_nb = VanillaRNN(3, 5, num_layers=2).load_from_torch_rnn(ref_nb)
    with torch.no_grad():
        torch.testing.assert_close(mine_nb(x)[0], ref_nb(x)[0], atol=1e-5, rtol=1e-5)


def test_load_from_torch_rejects_mismatches() -> None:
    with pytest.raises(ValueError, match="differ"):
        VanillaRNN(3, 5).load_from_torch_rnn(nn.RNN(3, 4))
    with pytest.raises(ValueError, match="tanh"):
        VanillaRNN(3, 5).load_from_torch_rnn(nn.RNN(3, 5, nonlinearity="relu"))


def test_gradients_flow_through_time() -> None:
    torch.manual_seed(2)
    rnn = VanillaRNN(2, 3, num_layers=2)
    x = torch.randn(2, 5, 2, requires_grad=True)
    out, _ = rnn(x)
    out[:, -1].sum().backward()  # loss sees only the last step
    assert x.grad is not None and x.grad[:, 0].abs().sum() > 0  # ... yet reaches the first input
    for name, p in rnn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dropout_between_layers_only_in_training() -> None:
    torch.manual_seed(3)
    rnn = VanillaRNN(2, 8, num_layers=2, dropout=0.5)
    x = torch.randn(2, 3, 2)
    with torch.no_grad():
        train_out = rnn.train()(x)[0]
        eval_a, eval_b = rnn.eval()(x)[0], rnn(x)[0]
    torch.testing.assert_close(eval_a, eval_b)
    assert not torch.allclose(train_out, eval_a)
    # one layer: nothing is between layers, so neither the input nor the output is dropped
    single = VanillaRNN(2, 8, num_layers=1, dropout=0.5).train()
    with torch.no_grad():
        torch.testing.assert_close(single(x)[0], single.eval()(x)[0])


def test_dtype_follows_parameters_and_bad_inputs_rejected() -> None:
    rnn = VanillaRNN(2, 3).double()
    out, h_n = rnn(torch.zeros(1, 2, 2, dtype=torch.float64))
    assert out.dtype == h_n.dtype == torch.float64
    packed = pack_padded_sequence(torch.zeros(1, 2, 2), torch.tensor([2]), batch_first=True)
    with pytest.raises(TypeError, match="PackedSequence"):
        rnn(packed)
    with pytest.raises(ValueError, match="h0"):
        rnn(torch.zeros(1, 2, 2, dtype=torch.float64), torch.zeros(2, 1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="dropout"):
        VanillaRNN(2, 3, dropout=1.0)


# --- factory --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "kind"),
    [("rnn", VanillaRNN), ("rnn_fused", nn.RNN), ("lstm", nn.LSTM), ("gru", nn.GRU)],
)
def test_build_rnn_kinds(cell: str, kind: type[nn.Module]) -> None:
    rnn = build_rnn(cell, 3, 4, 2, 0.1)
    assert type(rnn) is kind
    assert rnn.batch_first and rnn.num_layers == 2 and rnn.dropout == 0.1
    out, state = rnn(torch.zeros(2, 5, 3))
    assert out.shape == (2, 5, 4)
    states = state if isinstance(state, tuple) else (state,)
    assert len(states) == state_size(cell) and all(s.shape == (2, 2, 4) for s in states)
    assert build_rnn(cell, 3, 4, 1, 0.1).dropout == 0.0  # nothing between layers to drop


def test_build_rnn_unknown_name() -> None:
    assert set(CELLS) == {"rnn", "rnn_fused", "lstm", "gru"}
    with pytest.raises(ValueError, match="cell must be one of") as err:
        build_rnn("transformer", 3, 4, 1, 0.0)
    assert all(name in str(err.value) for name in CELLS)
    with pytest.raises(ValueError):
        state_size("transformer")
    assert [state_size(c) for c in ("rnn", "rnn_fused", "lstm", "gru")] == [1, 1, 2, 1]
