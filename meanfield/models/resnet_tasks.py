"""Data of the ResNet experiments: the maps resnet-limit learns and resnet-rkhs's separated pairs.

:func:`make_task` draws training and test inputs x ~ N(0, I_d) and their images under ``neg``
(y = −x, orientation-reversing for odd d: no flow of R^d represents it, a lifted ResNet
does) or ``smooth`` (a random smooth map); :func:`separated_pairs` draws pairs of points δ
apart with the targets ``neg`` and ``split``.  Everything in float64, from explicit seeds or
generators.
"""
from __future__ import annotations

import math

import torch

TASKS = ("neg", "smooth")
PAIR_TARGETS = ("neg", "split")


def make_task(name: str, d: int, n_train: int, n_test: int, seed: int):
    """Inputs X [n_train, d] and X_test [n_test, d] ~ N(0, I_d) and their images: for
    ``name == "neg"`` y = −x; otherwise (``"smooth"``) y = x + Σ_{k≤8} C_k sin(⟨W_k, x⟩ + c_k)/√8
    with W_k ~ N(0, I_d), C_k ~ N(0, I_d), c_k ~ U[0, 2π).  All drawn in this order from
    ``torch.Generator().manual_seed(seed)``, in float64.  Returns (X, Y, X_test, Y_test)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n_train, d, generator=g, dtype=torch.float64)
    Xt = torch.randn(n_test, d, generator=g, dtype=torch.float64)
    if name == "neg":
        f = lambda x: -x                                   # noqa: E731
    else:
        K = 8
        W = torch.randn(K, d, generator=g, dtype=torch.float64)
        c = 2 * math.pi * torch.rand(K, generator=g, dtype=torch.float64)
        C = torch.randn(d, K, generator=g, dtype=torch.float64)
        f = lambda x: x + torch.sin(x @ W.T + c) @ C.T / math.sqrt(K)    # noqa: E731
    return X, f(X), Xt, f(Xt)


def separated_pairs(n_pairs: int, d: int, delta: float, *, generator: torch.Generator, split: float):
    """n_pairs centres c_k ~ N(0, I_d) and unit directions e_k (normalised N(0, I_d) draws),
    giving X [2·n_pairs, d] = (c_k + (δ/2) e_k)_k then (c_k − (δ/2) e_k)_k, so the closest
    points are δ apart; targets {"neg": −X, "split": −X ± split·e_k} (+ for the first member
    of pair k, − for the second).  float64.  Returns (X, targets)."""
    c = torch.randn(n_pairs, d, generator=generator, dtype=torch.float64)
    e = torch.randn(n_pairs, d, generator=generator, dtype=torch.float64)
    e = e / e.norm(dim=-1, keepdim=True)
    X = torch.cat([c + 0.5 * delta * e, c - 0.5 * delta * e])
    off = torch.cat([split * e, -split * e])
    return X, {"neg": -X, "split": -X + off}


__all__ = ["PAIR_TARGETS", "TASKS", "make_task", "separated_pairs"]
