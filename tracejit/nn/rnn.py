"""Recurrent cells RNNCell, LSTMCell, GRUCell (one time step each) and the sequence modules
RNN, LSTM, GRU: PyTorch's gate order (LSTM i,f,g,o; GRU r,z,n), parameter names and
initialisation U(-1/sqrt(hidden), 1/sqrt(hidden))."""

from __future__ import annotations

import math
import warnings
from typing import Any

from .. import functional as _F  # noqa: N812
from ..creation import empty, zeros
from ..errors import located
from ..tensor import Tensor
from . import functional as F  # noqa: N812 - PyTorch's idiom
from . import init
from .module import Module
from .parameter import Parameter


class RNNCellBase(Module):
    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_chunks: int,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = Parameter(empty(num_chunks * hidden_size, input_size, dtype=dtype))
        self.weight_hh = Parameter(empty(num_chunks * hidden_size, hidden_size, dtype=dtype))
        if bias:
            self.bias_ih = Parameter(empty(num_chunks * hidden_size, dtype=dtype))
            self.bias_hh = Parameter(empty(num_chunks * hidden_size, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for w in self.parameters():
            init.uniform_(w, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        nl = getattr(self, "nonlinearity", "tanh")
        if nl != "tanh":
            s += f", nonlinearity={nl!r}"
        return s

    def _prepare(self, input: Tensor, hx: Any) -> tuple[Tensor, bool]:
        if input.ndim not in (1, 2):
            raise ValueError(f"{type(self).__name__}: Expected input to be 1D or 2D, got "
                             f"{input.ndim}D instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"{type(self).__name__}: input has inconsistent input_size: got "
                               f"{input.shape[-1]} expected {self.input_size}")
        batched = input.ndim == 2
        return (input if batched else input.unsqueeze(0)), batched

    def _zeros(self, input: Tensor) -> Tensor:
        return zeros(input.shape[0], self.hidden_size, dtype=input.dtype)

    def _gates(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return (F.linear(x, self.weight_ih, self.bias_ih),
                F.linear(h, self.weight_hh, self.bias_hh))


class RNNCell(RNNCellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device: Any = None, dtype: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, batched = self._prepare(input, hx)
        h = self._zeros(x) if hx is None else (hx if batched else hx.unsqueeze(0))
        gi, gh = self._gates(x, h)
        pre = gi + gh
        out = pre.tanh() if self.nonlinearity == "tanh" else pre.relu()
        return out if batched else out.squeeze(0)


class LSTMCell(RNNCellBase):
    """(h', c') from gates i, f, g, o: c' = f c + i g, h' = o tanh(c')."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor]:
        x, batched = self._prepare(input, hx)
        if hx is None:
            h, c = self._zeros(x), self._zeros(x)
        else:
            h, c = hx if batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        gi, gh = self._gates(x, h)
        i, f, g, o = (gi + gh).chunk(4, 1)
        c2 = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h2 = o.sigmoid() * c2.tanh()
        return (h2, c2) if batched else (h2.squeeze(0), c2.squeeze(0))


class GRUCell(RNNCellBase):
    """h' = (1 - z) n + z h with n = tanh(W_in x + b_in + r (W_hn h + b_hn))."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, batched = self._prepare(input, hx)
        h = self._zeros(x) if hx is None else (hx if batched else hx.unsqueeze(0))
        gi, gh = self._gates(x, h)
        i_r, i_z, i_n = gi.chunk(3, 1)
        h_r, h_z, h_n = gh.chunk(3, 1)
        r = (i_r + h_r).sigmoid()
        z = (i_z + h_z).sigmoid()
        n = (i_n + r * h_n).tanh()
        out = (1 - z) * n + z * h
        return out if batched else out.squeeze(0)


# ---- multi-layer recurrent modules over whole sequences ------------------------------------------


def _warn(msg: str) -> None:
    warnings.warn(msg, UserWarning, stacklevel=4)


class RNNBase(Module):
    """The layers and directions of RNN, LSTM and GRU with torch's parameter names
    (`weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`, `_reverse` for the
    backward direction). The input projection of every time step is one matmul; the loop
    over time is Python, so under @jit it unrolls into one graph."""

    _gates = 1

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) \
                or not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if proj_size:
            raise NotImplementedError(f"{name}: proj_size={proj_size} (LSTM with projections) "
                                      "is not supported; use proj_size=0")
        if dropout > 0 and num_layers == 1:
            _warn(f"dropout option adds dropout after all but last recurrent layer, so "
                  f"non-zero dropout expects num_layers greater than 1, but got "
                  f"dropout={dropout} and num_layers={num_layers}")
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        g = self._gates * hidden_size
        dirs = 2 if bidirectional else 1
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * dirs
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                self.register_parameter(f"weight_ih{sfx}",
                                        Parameter(empty(g, in_size, dtype=dtype)))
                self.register_parameter(f"weight_hh{sfx}",
                                        Parameter(empty(g, hidden_size, dtype=dtype)))
                if bias:
                    self.register_parameter(f"bias_ih{sfx}", Parameter(empty(g, dtype=dtype)))
                    self.register_parameter(f"bias_hh{sfx}", Parameter(empty(g, dtype=dtype)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            init.uniform_(w, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s

    def _weights(self, layer: int, d: int) -> tuple[Tensor, Tensor, Any, Any]:
        sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
        return (getattr(self, f"weight_ih{sfx}"), getattr(self, f"weight_hh{sfx}"),
                getattr(self, f"bias_ih{sfx}") if self.bias else None,
                getattr(self, f"bias_hh{sfx}") if self.bias else None)

    def _cell(self, gi: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor,
              b_hh: Tensor | None) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def _check_state(self, t: Tensor, expected: tuple[int, ...], what: str) -> None:
        if tuple(t.shape) != expected:
            raise RuntimeError(located(f"{type(self).__name__}: expected {what} size "
                                       f"{expected}, got {tuple(t.shape)}"))

    def _run(self, input: Tensor, hx: Tensor | None, cx: Tensor | None
             ) -> tuple[Tensor, Tensor, Tensor | None]:
        name = type(self).__name__
        if input.ndim not in (2, 3):
            raise ValueError(located(f"{name}: Expected input to be 2D or 3D, got "
                                     f"{input.ndim}D tensor instead"))
        if input.shape[-1] != self.input_size:
            raise RuntimeError(located(f"{name}: input.size(-1) must be equal to input_size. "
                                       f"Expected {self.input_size}, got {input.shape[-1]}"))
        batched = input.ndim == 3
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        seq, n = x.shape[0], x.shape[1]
        dirs = 2 if self.bidirectional else 1
        state = (self.num_layers * dirs, n, self.hidden_size)
        states = []
        for t, what in ((hx, "hidden"), (cx, "cell")):
            if t is not None:
                if not batched:
                    if t.ndim != 2:
                        raise RuntimeError(located(
                            f"{name}: for unbatched 2-D input, {what} state should also be "
                            f"2-D but got {t.ndim}-D tensor"))
                    t = t.unsqueeze(1)
                self._check_state(t, state, what)
            states.append(t)
        h0, c0 = states
        lstm = self.mode == "LSTM"
        zero = zeros(n, self.hidden_size, dtype=x.dtype)
        h_n: list[Tensor] = []
        c_n: list[Tensor] = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, d)
                gi_all = F.linear(x, w_ih, b_ih)  # (seq, N, gates * H) in one matmul
                h = zero if h0 is None else h0[k]
                c = (zero if c0 is None else c0[k]) if lstm else None
                ys: list[Tensor] = []
                for step in (range(seq - 1, -1, -1) if d == 1 else range(seq)):
                    h, c = self._cell(gi_all[step], h, c, w_hh, b_hh)
                    ys.append(h)
                if d == 1:
                    ys.reverse()
                outs.append(_F.stack(ys, 0) if ys else
                            zeros(0, n, self.hidden_size, dtype=x.dtype))
                h_n.append(h)
                if c is not None:
                    c_n.append(c)
            x = outs[0] if dirs == 1 else _F.cat(outs, -1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        out = x
        if batched and self.batch_first:
            out = out.transpose(0, 1)
        hn = _F.stack(h_n, 0)
        cn = _F.stack(c_n, 0) if lstm else None
        if not batched:
            out, hn = out.squeeze(1), hn.squeeze(1)
            cn = cn.squeeze(1) if cn is not None else None
        return out, hn, cn


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device: Any = None,
                 dtype: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or "
                             "'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)

    def _cell(self, gi: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor,
              b_hh: Tensor | None) -> tuple[Tensor, Tensor | None]:
        pre = gi + F.linear(h, w_hh, b_hh)
        return (pre.tanh() if self.nonlinearity == "tanh" else pre.relu()), None

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out, hn, _ = self._run(input, hx, None)
        return out, hn


class LSTM(RNNBase):
    """LSTM with torch's gate order i, f, g, o: c_t = f c_{t-1} + i g, h_t = o tanh(c_t);
    forward returns (output, (h_n, c_n))."""

    _gates = 4

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, device=device, dtype=dtype)

    def _cell(self, gi: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor,
              b_hh: Tensor | None) -> tuple[Tensor, Tensor | None]:
        assert c is not None
        i, f, g, o = (gi + F.linear(h, w_hh, b_hh)).chunk(4, 1)
        c2 = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c2.tanh(), c2

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise RuntimeError(located("LSTM: hx must be a tuple (h_0, c_0) of two tensors"))
        out, hn, cn = self._run(input, None if hx is None else hx[0],
                                None if hx is None else hx[1])
        assert cn is not None
        return out, (hn, cn)


class GRU(RNNBase):
    """GRU with torch's gate order r, z, n: n = tanh(W_in x + b_in + r (W_hn h + b_hn)),
    h_t = (1 - z) n + z h_{t-1}; forward returns (output, h_n)."""

    _gates = 3

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device: Any = None, dtype: Any = None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, device=device, dtype=dtype)

    def _cell(self, gi: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor,
              b_hh: Tensor | None) -> tuple[Tensor, Tensor | None]:
        i_r, i_z, i_n = gi.chunk(3, 1)
        h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, 1)
        r = (i_r + h_r).sigmoid()
        z = (i_z + h_z).sigmoid()
        n = (i_n + r * h_n).tanh()
        return (1 - z) * n + z * h, None

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out, hn, _ = self._run(input, hx, None)
        return out, hn
