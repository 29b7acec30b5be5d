"""Recurrent cells written out as equations, the way char-RNN tutorials teach them.

`ScratchRecurrent` is a drop-in for `nn.RNN` / `nn.LSTM` / `nn.GRU` (batch_first): same
parameter names and shapes, same state layout, same outputs for the same weights, so one
state dict loads into either implementation. It loops over time in Python, so it is for
reading and experimenting, not for speed.
"""

from __future__ import annotations

import math

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
