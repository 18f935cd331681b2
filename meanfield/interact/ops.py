"""Elementwise math namespaces through which the kernel formulas in ``models.kernels`` are
evaluated: the same formula text serves numpy arrays, torch tensors and KeOps LazyTensors."""
import numpy as np
import torch


class NumpyOps:
    sqrt = staticmethod(np.sqrt)
    acos = staticmethod(np.arccos)
    asin = staticmethod(np.arcsin)

    @staticmethod
    def clamp(x, lo, hi):
        return np.clip(x, lo, hi)


class TorchOps:
    sqrt = staticmethod(torch.sqrt)
    acos = staticmethod(torch.acos)
    asin = staticmethod(torch.asin)

    @staticmethod
    def clamp(x, lo, hi):
        return torch.clamp(x, lo, hi)


class KeOpsOps:
    """For pykeops LazyTensors (methods, since LazyTensors are not torch tensors)."""

    @staticmethod
    def sqrt(x):
        return x.sqrt()

    @staticmethod
    def acos(x):
        return x.acos()

    @staticmethod
    def asin(x):
        return x.asin()

    @staticmethod
    def clamp(x, lo, hi):
        return x.clamp(lo, hi)
