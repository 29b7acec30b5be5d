"""Recurrent cells written out as equations, the way char-RNN tutorials teach them.

`ScratchRecurrent` is a drop-in for `nn.RNN` / `nn.LSTM` / `nn.GRU` (batch_first): same
parameter names and shapes, same state layout, same outputs for the same weights, so one
state dict loads into either implementation. It loops over time in Python, so it is for
reading and experimenting, not for speed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def rnn_cell(x: torch.Tensor, h: torch.Tensor, w_ih, w_hh, b_ih, b_hh) -> torch.Tensor:
    return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh) -> tuple[torch.Tensor, torch.Tensor]:
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh) -> torch.Tensor:
    x_r, x_z, x_n = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)  # reset gate
    z = torch.sigmoid(x_z + h_z)  # update gate
    n = torch.tanh(x_n + r * h_n)  # candidate
    return (1 - z) * n + z * h


class ScratchRecurrent(nn.Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int, dropout: float = 0.0):
        super().__init__()
        self.mode, self.hidden_size, self.num_layers = mode, hidden_size, num_layers
        self.dropout = nn.Dropout(dropout)
        rows = GATES[mode] * hidden_size
        bound = 1 / math.sqrt(hidden_size)  # torch's initialisation for its recurrent modules
        for layer in range(num_layers):
            fan_in = input_size if layer == 0 else hidden_size
            for name, shape in (
                ("weight_ih", (rows, fan_in)),
                ("weight_hh", (rows, hidden_size)),
                ("bias_ih", (rows,)),
                ("bias_hh", (rows,)),
            ):
                self.register_parameter(f"{name}_l{layer}", nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))

    def _weights(self, layer: int) -> list[torch.Tensor]:
        return [getattr(self, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def forward(self, x: torch.Tensor, state=None):
        B, T, _ = x.shape  # (B, T, input)
        zeros = x.new_zeros(self.num_layers, B, self.hidden_size)
        if self.mode == "lstm":
            h0, c0 = state if state is not None else (zeros, zeros)
        else:
            h0, c0 = (state if state is not None else zeros), None
        h_last, c_last = [], []
        for layer in range(self.num_layers):
            w = self._weights(layer)
            h, c = h0[layer], (c0[layer] if c0 is not None else None)
            outs = []
            for t in range(T):
                if self.mode == "lstm":
                    h, c = lstm_cell(x[:, t], h, c, *w)
                elif self.mode == "gru":
                    h = gru_cell(x[:, t], h, *w)
                else:
                    h = rnn_cell(x[:, t], h, *w)
                outs.append(h)
            x = torch.stack(outs, dim=1)  # (B, T, H)
            if layer < self.num_layers - 1:
                x = self.dropout(x)  # between layers, as torch does
            h_last.append(h)
            c_last.append(c)
        h_n = torch.stack(h_last)  # (L, B, H)
        return x, ((h_n, torch.stack(c_last)) if self.mode == "lstm" else h_n)


def layer_weights(rnn: nn.Module, layer: int) -> list[torch.Tensor]:
    """One layer's weights by their shared names: works on `nn.RNN`/`nn.LSTM`/`nn.GRU` and `ScratchRecurrent`."""
    return [getattr(rnn, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


@torch.no_grad()
def trace(
    rnn: nn.Module, mode: str, x: torch.Tensor, state=None
) -> tuple[list[torch.Tensor], list[torch.Tensor | None], object]:
    """Every layer's hidden state (and an LSTM's cell state) after every step, which a stacked module keeps to
    itself: it returns only the top layer's outputs and the last step's states.

    x: (B, T, input). Returns per layer (B, T, H) hidden and cell sequences (cell None unless LSTM), and the
    final state in the module's own layout, so a long text can be traced in pieces. Each layer runs as a
    one-layer torch module over the layer's own weights (torch and scratch share parameter names), in eval
    semantics (no dropout between layers); an LSTM's cell sequence then follows from its gates, which the
    hidden sequence fixes, by the one elementwise recurrence c_t = f_t * c_{t-1} + i_t * g_t.
    """
    B, T, _ = x.shape
    H, layers = rnn.hidden_size, rnn.num_layers
    zeros = x.new_zeros(layers, B, H)
    if mode == "lstm":
        h0, c0 = state if state is not None else (zeros, zeros)
    else:
        h0, c0 = (state if state is not None else zeros), None
    hiddens: list[torch.Tensor] = []
    cells: list[torch.Tensor | None] = []
    for layer in range(layers):
        weights = layer_weights(rnn, layer)
        one = ONE_LAYER[mode](x.size(-1), H, 1, batch_first=True).to(x.device)
        names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
        start = (h0[layer : layer + 1], c0[layer : layer + 1]) if mode == "lstm" else h0[layer : layer + 1]
        out, _ = torch.func.functional_call(one, dict(zip(names, weights, strict=True)), (x, start))  # (B, T, H)
        hiddens.append(out)
        cells.append(cell_sequence(x, out, h0[layer], c0[layer], weights) if mode == "lstm" else None)
        x = out  # the next layer's input
    h_n = torch.stack([seq[:, -1] for seq in hiddens])  # (L, B, H)
    final = (h_n, torch.stack([seq[:, -1] for seq in cells])) if mode == "lstm" else h_n
    return hiddens, cells, final


ONE_LAYER = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def cell_sequence(x: torch.Tensor, h: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, weights) -> torch.Tensor:
    """An LSTM layer's cell states (B, T, H) from its inputs x (B, T, E) and hidden states h (B, T, H)."""
    w_ih, w_hh, b_ih, b_hh = weights
    h_prev = torch.cat([h0[:, None], h[:, :-1]], dim=1)  # (B, T, H): the state each step starts from
    i, f, g, _ = (x @ w_ih.T + b_ih + h_prev @ w_hh.T + b_hh).chunk(4, dim=-1)  # every step's gates at once
    forget = torch.sigmoid(f).double().cpu().numpy()  # (B, T, H); numpy: a tenth of torch's per-op overhead
    write = (torch.sigmoid(i) * torch.tanh(g)).double().cpu().numpy()
    cs = np.empty_like(write)
    c = c0.double().cpu().numpy()  # (B, H)
    for t in range(cs.shape[1]):
        c = forget[:, t] * c + write[:, t]
        cs[:, t] = c
    return torch.from_numpy(cs).to(device=h.device, dtype=h.dtype)
