"""Tiled torch backend: rows of x in tiles, so memory is O(tile · M), never N × M.

Per tile: one matmul for the dot products ⟨w_i, w_j⟩, the elementwise kernel formulas,
and two matmuls for the sums (Σ_j c'_j κ_ij, Σ_j c'_j α_ij w_j).  Runs on any torch device.
"""
from __future__ import annotations

import torch

from .base import Backend, assemble_grad, check_shapes, split_aw
from .ops import TorchOps


class TiledTorchBackend(Backend):
    name = "torch"

    def __init__(self, tile_bytes: int = 64 * 2 ** 20):
        self.tile_bytes = tile_bytes

    def tile_rows(self, B, M, itemsize):
        # about 8 live [B, T, M] temporaries per tile
        return max(1, int(self.tile_bytes // max(1, 8 * B * M * itemsize)))

    def kernel_sum(self, kernel, unit, x, y, c, *, grad=True):
        check_shapes(unit, x, y, c)
        ax, wx = split_aw(unit, x)
        ay, wy = split_aw(unit, y)
        cy = (c * ay).unsqueeze(-1)                                  # (B', M, 1)
        nx = wx.norm(dim=-1)                                         # (B, N)
        ny = wy.norm(dim=-1).unsqueeze(-2)                           # (B', 1, M)
        wyT = wy.transpose(-1, -2)                                   # (B', d, M)
        B, N, _ = wx.shape
        T = self.tile_rows(B, wy.shape[-2], wx.element_size())
        S_parts, G_parts = [], []
        for i0 in range(0, N, T):
            sl = slice(i0, i0 + T)
            X = wx[:, sl]                                            # (B, T, d)
            P = X @ wyT                                              # (B, T, M)
            nxt = nx[:, sl].unsqueeze(-1)                            # (B, T, 1)
            if grad:
                K, A, Bt = kernel.coeffs(TorchOps, P, nxt, ny)
                ksum = (K @ cy).squeeze(-1)                          # (B, T)
                alpha_w = (A * cy.transpose(-1, -2)) @ wy            # (B, T, d)
                beta_sum = (Bt @ cy).squeeze(-1)                     # (B, T)
                G_parts.append(assemble_grad(unit, ax[:, sl], X, ksum, alpha_w, beta_sum))
            else:
                ksum = (kernel.value(TorchOps, P, nxt, ny) @ cy).squeeze(-1)
            S_parts.append(ax[:, sl] * ksum)
        S = torch.cat(S_parts, dim=1)
        return S, (torch.cat(G_parts, dim=1) if grad else None)
