"""Float64 numpy reference: the ground truth every other backend is tested against.

Plain row-by-row evaluation of the closed-form pair formulas (tiles of rows only bound
the memory); no tricks.  Inputs of any dtype are converted to float64 and the results
returned as float64 torch tensors.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Backend, check_shapes, split_aw
from .ops import NumpyOps


class NumpyBackend(Backend):
    """The reference backend: float64 numpy, ``tile`` rows of x at a time (O(tile · M)
    memory); returns float64 torch tensors on the CPU, detached (no autograd)."""

    name = "numpy"

    def __init__(self, tile: int = 256):
        self.tile = tile

    def kernel_sum(self, kernel, unit, x, y, c, *, grad=True):
        check_shapes(unit, x, y, c)
        ax, wx = (t.detach().cpu().double().numpy() for t in split_aw(unit, x))
        ay, wy = (t.detach().cpu().double().numpy() for t in split_aw(unit, y))
        c = c.detach().cpu().double().numpy()
        B, N, d = wx.shape
        S = np.zeros((B, N))
        G = np.zeros((B, N, unit.D)) if grad else None
        for b in range(B):
            bb = b if wy.shape[0] > 1 else 0
            Y, cy = wy[bb], c[b if c.shape[0] > 1 else 0] * ay[bb]                     # (M, d), (M,)
            ny = np.sqrt((Y ** 2).sum(-1))                      # (M,)
            for i0 in range(0, N, self.tile):
                X = wx[b, i0:i0 + self.tile]                    # (T, d)
                nx = np.sqrt((X ** 2).sum(-1))[:, None]         # (T, 1)
                P = np.einsum("td,md->tm", X, Y)                # (T, M)
                K, A, Bt = kernel.coeffs(NumpyOps, P, nx, ny[None, :])
                K = np.broadcast_to(K, P.shape)
                a_i = ax[b, i0:i0 + self.tile]
                ksum = (K * cy).sum(-1)                          # (T,)
                S[b, i0:i0 + self.tile] = a_i * ksum
                if grad:
                    # Σ_j c'_j ∇_w κ(x_i, y_j) = Σ_j c'_j (α_ij y_j + β_ij x_i), pair by pair
                    A = np.broadcast_to(A, P.shape)
                    Bt = np.broadcast_to(Bt, P.shape)
                    gw = np.einsum("tm,md->td", A * cy, Y) + (Bt * cy).sum(-1)[:, None] * X
                    gw = a_i[:, None] * gw
                    if unit.output_weight:
                        G[b, i0:i0 + self.tile, 0] = ksum
                        G[b, i0:i0 + self.tile, 1:] = gw
                    else:
                        G[b, i0:i0 + self.tile] = gw
        return torch.from_numpy(S), (None if G is None else torch.from_numpy(G))
